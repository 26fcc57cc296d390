"""The six views, each with its columns and its order: Pending, Future, Active, Dirty, Failed
and Succeeded tasks (the groups of ``aiotaskq status``)."""

from __future__ import annotations

import datetime as dt
from contextvars import ContextVar
from typing import Any

from django.contrib import admin
from django.db.models import DurationField, ExpressionWrapper, F, TextField
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Left, Now
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.safestring import SafeString

from ..conf import get_settings
from ..db import control
from ..models import Task
from .actions import ByHand, Kept, Revocable
from .render import duration, json_html, progress_html
from .workers import describe_worker, silences

__all__ = [
    "ActiveAdmin",
    "DirtyAdmin",
    "FailedAdmin",
    "FutureAdmin",
    "PendingAdmin",
    "SucceededAdmin",
]


#: How long ago each registered worker last beat, for the Dirty list being rendered.
_worker_silence: ContextVar[dict[str, dt.timedelta]] = ContextVar("worker_silence", default={})  # noqa: B039 - never mutated


def _since(field: str) -> ExpressionWrapper[Any]:
    """How long ago ``field`` was, by the database's clock."""
    return ExpressionWrapper(Now() - F(field), output_field=DurationField())


def _until(field: str) -> ExpressionWrapper[Any]:
    return ExpressionWrapper(F(field) - Now(), output_field=DurationField())


def _cell(text: str) -> str:
    """A short value that does not wrap in a list column."""
    return text.replace(" ", "\u00a0")


class PendingAdmin(Revocable):
    """Queued and due, in the order workers take them: per queue, by priority, oldest first."""

    list_display = ("name", "queue", "priority", "waiting", "attempt", "created")
    ordering = ("queue", "-priority", "execute_at")

    def list_annotations(self) -> dict[str, Any]:
        return {"waiting_for": _since("execute_at")}

    @admin.display(description="waiting", ordering="-execute_at")
    def waiting(self, obj: Task) -> str:
        return _cell(duration(getattr(obj, "waiting_for", None)))


class FutureAdmin(Revocable):
    """Queued for later, the next first (over every queue: the index
    aiotaskq_task_queued_eta reads them in this order; filter on a queue for one)."""

    list_display = ("name", "queue", "priority", "execute", "due_in", "attempt")
    ordering = ("execute_at",)

    def list_annotations(self) -> dict[str, Any]:
        return {"due_in_": _until("execute_at")}

    @admin.display(description="due in", ordering="execute_at")
    def due_in(self, obj: Task) -> str:
        return _cell(duration(getattr(obj, "due_in_", None)))


class ActiveAdmin(Revocable):
    """Running with a fresh heartbeat, the longest-running first."""

    list_display = (
        "name",
        "queue",
        "worker_id",
        "attempt",
        "running_for",
        "last_beat",
        "progress_bar",
    )
    ordering = ("started_at",)

    def list_annotations(self) -> dict[str, Any]:
        return {"running_for_": _since("started_at"), "last_beat_": _since("alive_at")}

    @admin.display(description="progress")
    def progress_bar(self, obj: Task) -> SafeString | str:
        return progress_html(obj.progress)

    @admin.display(description="running for", ordering="started_at")
    def running_for(self, obj: Task) -> str:
        return _cell(duration(getattr(obj, "running_for_", None)))

    @admin.display(description="last heartbeat", ordering="-alive_at")
    def last_beat(self, obj: Task) -> str:
        return _cell(f"{duration(getattr(obj, 'last_beat_', None))} ago")


class DirtyAdmin(ByHand):
    """Running, but the worker's heartbeat stopped: the longest-silent first."""

    selection = control.Selection(failed=False, dirty=True)
    list_display = ("name", "queue", "worker", "attempt", "started", "silent_for")
    ordering = ("alive_at",)

    def list_annotations(self) -> dict[str, Any]:
        return {"silent_for_": _since("alive_at")}

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        # The registry once for the page, not a lookup per row: a sort of the whole group
        # would run a per-row lookup for every Dirty row before the LIMIT.
        token = _worker_silence.set(silences())
        try:
            response = super().changelist_view(request, extra_context)
            if isinstance(response, TemplateResponse):
                response.render()  # here, while the registry read is set
            return response
        finally:
            _worker_silence.reset(token)

    @admin.display(description="worker", ordering="worker_id")
    def worker(self, obj: Task) -> str:
        """The worker the task was on, and whether the registry has it lost or alive."""
        if not obj.worker_id:
            return "-"
        silent = _worker_silence.get().get(obj.worker_id)
        if silent is None:
            state = "not registered"
        elif silent.total_seconds() > get_settings().DIRTY_AFTER:
            state = f"lost {duration(silent)} ago"
        else:
            state = "alive"
        return f"{obj.worker_id} ({_cell(state)})"

    @admin.display(description="heartbeat stopped", ordering="alive_at")
    def silent_for(self, obj: Task) -> str:
        return _cell(f"{duration(getattr(obj, 'silent_for_', None))} ago")

    def page_note(self, obj: Task) -> str | None:
        """Why the task is Dirty, by the database's clock (read with the row)."""
        db_now: dt.datetime | None = getattr(obj, "db_now", None)
        silent = db_now - obj.alive_at if db_now is not None and obj.alive_at else None
        return (
            f"Dirty: its heartbeat stopped {duration(silent)} ago, more than DIRTY_AFTER "
            f"({get_settings().DIRTY_AFTER:g} s) ago, on {describe_worker(obj.worker_id)}. "
            "That worker was stopped, froze or lost the database while the task ran; whether "
            "the task finished is not known. Run it again (an outcome the old attempt "
            "reports late is discarded) or delete it."
        )


class FailedAdmin(ByHand):
    """Failed for good, the newest first, with the last attempt's error."""

    selection = control.Selection(failed=True, dirty=False)
    list_display = ("name", "queue", "attempt", "failed_ago", "last_error")
    ordering = ("-finished_at",)

    def list_annotations(self) -> dict[str, Any]:
        # From the last entry of errors, without reading the tracebacks into Python.
        return {
            "failed_for": _since("finished_at"),
            "last_error_type": KT("errors__-1__type"),
            "last_error_message": KT("errors__-1__message"),
        }

    @admin.display(description="failed", ordering="-finished_at")
    def failed_ago(self, obj: Task) -> str:
        return _cell(f"{duration(getattr(obj, 'failed_for', None))} ago")

    @admin.display(description="last error")
    def last_error(self, obj: Task) -> str:
        kind: str | None = getattr(obj, "last_error_type", None)
        message: str | None = getattr(obj, "last_error_message", None)
        if not kind:
            return "-"
        short = kind.rsplit(".", 1)[-1]
        return _short(f"{short}: {message}" if message else short)


def _short(text: str, size: int = 120) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"


class SucceededAdmin(Kept):
    """Succeeded tasks that keep their result (Django's tasks framework), until their
    retention ends: the newest first, with the start of the return value.

    The order is by ``expires_at`` (finished_at plus the backend's RESULT_RETENTION), which
    the index of the pruning (aiotaskq_task_result_expiry) reads backwards without sorting
    the group; with one retention it is the order of finishing. The result's page shows
    the whole value and every time."""

    list_display = ("name", "queue", "attempt", "finished_ago", "kept_for", "result")
    ordering = ("-expires_at",)

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        return (
            (None, {"fields": ("name", "id", "queue", "priority", "state")}),
            ("Result", {"fields": ("return_value_json",)}),
            ("Arguments", {"fields": ("args_json", "kwargs_json")}),
            ("Times", {"fields": ("created", "execute", "started", "finished", "kept_until")}),
            ("Attempts", {"fields": ("worker_id", "attempt", "time_limit")}),
            ("Errors of earlier attempts", {"fields": ("error_history",)}),
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return (*super().get_readonly_fields(request, obj), "return_value_json", "kept_until")

    def list_annotations(self) -> dict[str, Any]:
        # The start of the value only: a large result is not read whole into the list.
        return {
            "finished_for": _since("finished_at"),
            "kept_for_": _until("expires_at"),
            "result_start": Left(Cast("return_value", output_field=TextField()), 121),
        }

    @admin.display(description="succeeded", ordering="-finished_at")
    def finished_ago(self, obj: Task) -> str:
        return _cell(f"{duration(getattr(obj, 'finished_for', None))} ago")

    @admin.display(description="kept for", ordering="-expires_at")
    def kept_for(self, obj: Task) -> str:
        return _cell(duration(getattr(obj, "kept_for_", None)))

    @admin.display(description="result")
    def result(self, obj: Task) -> str:
        start: str | None = getattr(obj, "result_start", None)
        return "-" if start is None else _short(start)

    @admin.display(description="return value")
    def return_value_json(self, obj: Task) -> SafeString:
        return json_html(obj.return_value)

    @admin.display(description="kept until")
    def kept_until(self, obj: Task) -> str:
        return self.expires(obj)
