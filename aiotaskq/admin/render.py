"""How the admin shows a task's values: durations, JSON, and the error of every attempt."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django.template.loader import render_to_string
from django.utils import dateformat, timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

__all__ = [
    "MOMENT_FORMAT",
    "duration",
    "errors_html",
    "json_html",
    "moment",
    "progress_html",
]

#: How every list, page and history of the admin shows a moment (Django's date format
#: characters): ISO-like and to the second, ``2026-12-01 20:19:09 UTC``, in the current time
#: zone. Not the project's DATETIME_FORMAT: its default drops the seconds, and a task's times
#: (a heartbeat every few seconds, Dirty after ten) need them; this one also sorts as text
#: and reads the same in every language. ``object_history.html`` uses it as well.
MOMENT_FORMAT = "Y-m-d H:i:s T"


def moment(value: dt.datetime | str | None) -> str:
    """``value`` in :data:`MOMENT_FORMAT`; an ISO 8601 string is read first (the ``at`` of
    an error), and one that cannot be read is shown as it is. ``-`` for None."""
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    else:
        when = value
    if timezone.is_aware(when):
        when = timezone.localtime(when)
    return dateformat.format(when, MOMENT_FORMAT).strip()


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


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def progress_html(progress: Any) -> SafeString | str:
    """A task's last ``set_progress()``: a bar when its total is known, how far it is, and its
    message (escaped); ``-`` for none."""
    if not isinstance(progress, dict):
        return "-"
    done, total = _number(progress.get("done")), _number(progress.get("total"))
    message = str(progress.get("message") or "")
    if done is None:
        return "-"
    shown = f"{done:g}" if total is None else f"{done:g} / {total:g}"
    if total:
        percent = max(0.0, min(100.0, 100.0 * done / total))
        return format_html(
            '<progress class="aiotaskq-progress" value="{}" max="100" title="{}"></progress> '
            "{}&nbsp;({}&nbsp;%) {}",
            f"{percent:.1f}",
            shown,
            shown,
            f"{percent:.0f}",
            message,
        )
    return format_html("{} {}", shown, message)


def errors_html(errors: Any) -> SafeString:
    """Every attempt's error (type, message, outcome, worker, time, traceback), oldest first."""
    entries = [
        {**e, "at": moment(e["at"]) if isinstance(e.get("at"), str) else e.get("at")}
        for e in (errors if isinstance(errors, list) else [])
        if isinstance(e, dict)
    ]
    return render_to_string("admin/aiotaskq/errors.html", {"errors": entries})
