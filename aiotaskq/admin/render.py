"""How the admin shows a task's values: durations, JSON, and the error of every attempt."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django.template.loader import render_to_string
from django.utils.html import format_html
from django.utils.safestring import SafeString

__all__ = ["duration", "errors_html", "json_html"]


def duration(value: dt.timedelta | None) -> str:
    """``4.2 s``, ``3 min 20 s``, ``2 h 5 min``, ``3 d 4 h``; a negative one as its size."""
    if value is None:
        return "-"
    seconds = abs(value.total_seconds())
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def json_html(value: Any) -> SafeString:
    """``value`` as indented JSON in a ``<pre>`` (escaped)."""
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)
    return format_html('<pre class="aiotaskq-json">{}</pre>', text)


def errors_html(errors: Any) -> SafeString:
    """Every attempt's error (type, message, outcome, worker, time, traceback), oldest first."""
    entries = [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []
    return render_to_string("admin/aiotaskq/errors.html", {"errors": entries})
