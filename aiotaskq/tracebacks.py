"""Text of a failed attempt that is safe to keep: the exception's message and its traceback,
never raising whatever the exception does, and capped in size."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

__all__ = ["MESSAGE_CAP", "TRACEBACK_CAP", "format_task_traceback", "safe_str"]

#: The most characters of an exception's message that are kept.
MESSAGE_CAP = 4096
#: The most characters of a traceback that are kept (its head and its tail).
TRACEBACK_CAP = 16384


def _cut(text: str, cap: int) -> str:
    if len(text) <= cap:
        return text
    half = cap // 2
    return f"{text[:half]}\n... {len(text) - 2 * half:,} characters cut ...\n{text[-half:]}"


def safe_str(exc: BaseException) -> str:
    """``str(exc)``, or a description of why it could not be had; capped."""
    try:
        text = str(exc)
    except BaseException as failure:
        text = f"<unprintable {type(exc).__name__}: __str__ raised {type(failure).__name__}>"
    if not isinstance(text, str):
        text = f"<unprintable {type(exc).__name__}>"
    return _cut(text, MESSAGE_CAP)


def format_task_traceback(exc: BaseException, fn: Callable[..., Any] | None = None) -> str:
    """The traceback of ``exc``, capped; never raises."""
    try:
        text = "".join(traceback.format_exception(exc))
    except BaseException as failure:
        text = f"<the traceback could not be formatted: {type(failure).__name__}>"
    return _cut(text, TRACEBACK_CAP)
