"""The five views, each with its columns and its order: Pending, Future, Active, Dirty and
Failed tasks (the groups of ``aiotaskq status``)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import DurationField, ExpressionWrapper, F
from django.db.models.fields.json import KT
from django.db.models.functions import Now

from ..models import Task
from .actions import ByHand, Revocable
from .render import duration

__all__ = ["ActiveAdmin", "DirtyAdmin", "FailedAdmin", "FutureAdmin", "PendingAdmin"]


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

    list_display = ("name", "queue", "priority", "waiting", "attempt", "created_at")
    ordering = ("queue", "-priority", "execute_at")

    def list_annotations(self) -> dict[str, Any]:
        return {"waiting_for": _since("execute_at")}

    @admin.display(description="waiting", ordering="-execute_at")
    def waiting(self, obj: Task) -> str:
        return _cell(duration(getattr(obj, "waiting_for", None)))


class FutureAdmin(Revocable):
    """Queued for later, per queue, the next first."""

    list_display = ("name", "queue", "priority", "execute_at", "due_in", "attempt")
    ordering = ("queue", "execute_at")

    def list_annotations(self) -> dict[str, Any]:
        return {"due_in_": _until("execute_at")}

    @admin.display(description="due in", ordering="execute_at")
    def due_in(self, obj: Task) -> str:
        return _cell(duration(getattr(obj, "due_in_", None)))


class ActiveAdmin(Revocable):
    """Running with a fresh heartbeat, the longest-running first."""

    list_display = ("name", "queue", "worker_id", "attempt", "running_for", "last_beat")
    ordering = ("started_at",)

    def list_annotations(self) -> dict[str, Any]:
        return {"running_for_": _since("started_at"), "last_beat_": _since("alive_at")}

    @admin.display(description="running for", ordering="started_at")
    def running_for(self, obj: Task) -> str:
        return _cell(duration(getattr(obj, "running_for_", None)))

    @admin.display(description="last heartbeat", ordering="-alive_at")
    def last_beat(self, obj: Task) -> str:
        return _cell(f"{duration(getattr(obj, 'last_beat_', None))} ago")


class DirtyAdmin(ByHand):
    """Running, but the worker's heartbeat stopped: the longest-silent first."""

    failed = False
    list_display = ("name", "queue", "worker_id", "attempt", "started_at", "silent_for")
    ordering = ("alive_at",)

    def list_annotations(self) -> dict[str, Any]:
        return {"silent_for_": _since("alive_at")}

    @admin.display(description="silent for", ordering="alive_at")
    def silent_for(self, obj: Task) -> str:
        return _cell(duration(getattr(obj, "silent_for_", None)))


class FailedAdmin(ByHand):
    """Failed for good, the newest first, with the last attempt's error."""

    failed = True
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
        text = f"{short}: {message}" if message else short
        return text if len(text) <= 120 else text[:119] + "…"
