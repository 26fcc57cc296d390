"""The Workers view: each worker process in the registry, live or lost, with its queues and
caps, concurrency, tasks in flight, start and last heartbeat (as ``aiotaskq workers``). The
workers write the rows; the view only reads them. A lost worker (killed: its heartbeat
stopped over ``DIRTY_AFTER`` ago) stays for a day, so that the Dirty view can name it."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.db.models import DurationField, ExpressionWrapper, F, QuerySet
from django.db.models.functions import Now
from django.http import HttpRequest

from ..conf import get_settings
from ..models import Worker
from .render import duration

__all__ = ["WorkerAdmin", "describe_worker", "silences"]

if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[Worker]
else:  # ModelAdmin takes no type argument at run time
    _ModelAdmin = admin.ModelAdmin


def _lost(silent: dt.timedelta | None) -> bool:
    return silent is None or silent.total_seconds() > get_settings().DIRTY_AFTER


def describe_worker(worker_id: str | None) -> str:
    """One phrase on a task's worker, for the Dirty view: alive, lost since when (with its
    host and pid), or no longer in the registry."""
    if not worker_id:
        return "no worker"
    row = (
        Worker.objects.using(get_settings().DATABASE)
        .filter(id=worker_id)
        .annotate(silent_=ExpressionWrapper(Now() - F("alive_at"), output_field=DurationField()))
        .first()
    )
    if row is None:
        return (
            f"worker {worker_id}, no longer in the registry (it stopped cleanly, or was lost "
            "over a day ago)"
        )
    silent = getattr(row, "silent_", None)
    where = f"host {row.host}, pid {row.pid}"
    if _lost(silent):
        return f"worker {worker_id} ({where}), lost: its last heartbeat was {duration(silent)} ago"
    return f"worker {worker_id} ({where}), alive: it no longer holds this task"


def silences() -> dict[str, dt.timedelta]:
    """How long ago each registered worker last wrote its heartbeat, by the database's clock
    (the registry is a row per worker: read whole)."""
    rows = (
        Worker.objects.using(get_settings().DATABASE)
        .annotate(silent_=ExpressionWrapper(Now() - F("alive_at"), output_field=DurationField()))
        .values_list("id", "silent_")
    )
    return dict(rows)


class WorkerAdmin(_ModelAdmin):
    list_display = (
        "id",
        "host",
        "pid",
        "queue_caps",
        "concurrency",
        "in_flight",
        "started_at",
        "last_seen",
        "alive",
    )
    list_filter = ("host",)
    search_fields = ("id", "host")
    ordering = ("host", "started_at")
    readonly_fields = (
        "id",
        "host",
        "pid",
        "queue_caps",
        "concurrency",
        "in_flight",
        "started_at",
        "alive_at",
    )
    fields = readonly_fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Worker]:
        return (
            super()
            .get_queryset(request)
            .using(get_settings().DATABASE)
            .annotate(
                silent_=ExpressionWrapper(Now() - F("alive_at"), output_field=DurationField())
            )
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # the workers write their rows

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a live worker writes its row back at its next beat; the pruner deletes

    @admin.display(description="queues (caps)")
    def queue_caps(self, obj: Worker) -> str:
        queues: list[dict[str, Any]] = obj.queues or []
        return ", ".join(
            q["name"] if q["cap"] is None else f"{q['name']}:{q['cap']}" for q in queues
        )

    @admin.display(description="last heartbeat", ordering="-alive_at")
    def last_seen(self, obj: Worker) -> str:
        return f"{duration(getattr(obj, 'silent_', None))} ago".replace(" ", "\u00a0")

    @admin.display(description="alive", boolean=True, ordering="-alive_at")
    def alive(self, obj: Worker) -> bool:
        return not _lost(getattr(obj, "silent_", None))
