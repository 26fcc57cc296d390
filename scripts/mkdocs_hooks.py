"""MkDocs hooks of the documentation site (mkdocs.yml: ``hooks``).

The docstrings cross-reference in Sphinx's roles (``:class:`~aiotaskq.Task```), which
mkdocstrings renders as the role's name before the code. On the page the reference reads as
the name alone, as Sphinx shows it: ``~`` keeps the last dotted part, as in Sphinx.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:class|meth|func|data|attr|exc|mod|obj):<code>(~?)([^<]*)</code>")


def _shown(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"<code>{target.rsplit('.', 1)[-1] if tilde else target.lstrip('.')}</code>"


def on_page_content(html: str, **_: Any) -> str:
    return _ROLE.sub(_shown, html)
