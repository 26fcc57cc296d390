"""The summary page: per queue and task name, how many tasks are in each group, and how long
the oldest pending one has waited (the admin's ``aiotaskq status``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Count, DurationField, ExpressionWrapper, Min
from django.db.models.functions import Now
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from ..conf import get_settings
from ..db.status import limits_status_sync
from ..models import (
    ActiveTask,
    DirtyTask,
    FailedTask,
    FutureTask,
    PendingTask,
    SucceededTask,
    Task,
)
from .render import duration

if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[Any]
else:  # ModelAdmin takes no type argument at run time
    _ModelAdmin = admin.ModelAdmin

__all__ = ["SummaryAdmin"]

#: The groups in the order of the columns.
GROUPS: tuple[tuple[str, type[Task]], ...] = (
    ("pending", PendingTask),
    ("future", FutureTask),
    ("active", ActiveTask),
    ("dirty", DirtyTask),
    ("failed", FailedTask),
    ("succeeded", SucceededTask),
)


@dataclass(slots=True)
class Cell:
    count: int
    url: str | None


@dataclass(slots=True)
class LaneLine:
    """A queue of ``AIOTASKQ["QUEUES"]``: what each worker applies, and the slots in use."""

    queue: str
    cap: int | None
    time_limit: float | None
    threads: int | None
    in_use: int = 0


@dataclass(slots=True)
class KeyLine:
    """A limit key in use: seats taken of the task's max_concurrent, its rate, and the tasks
    waiting for a seat or a token."""

    name: str
    key: str
    running: int
    max_concurrent: int | None
    rate_limit: str | None
    waiting: int


@dataclass(slots=True)
class Line:
    queue: str
    name: str
    cells: list[Cell] = field(default_factory=list)
    oldest_pending: str = ""


class SummaryAdmin(_ModelAdmin):
    """One page, no rows of its own: counts per queue and task name, each a link to the
    group's view filtered on them. It reads the whole table once (a GROUP BY), like
    ``aiotaskq status``."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        name = f"{self.opts.app_label}_{self.opts.model_name}_changelist"
        return [path("", self.admin_site.admin_view(self.changelist_view), name=name)]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        lines = self.lines(request)
        totals = [sum(line.cells[i].count for line in lines) for i in range(len(GROUPS))]
        lanes = self.lanes(lines)
        settings = get_settings()
        context = {
            **self.admin_site.each_context(request),
            **(extra_context or {}),
            "title": "Summary by queue and task",
            "opts": self.opts,
            "groups": [key for key, _ in GROUPS],
            "lines": lines,
            "totals": totals,
            "lanes": lanes,
            "keys": self.keys(settings.DIRTY_AFTER, settings.DATABASE),
            "dirty_after": f"{settings.DIRTY_AFTER:g}",
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/aiotaskq/summary.html", context)

    def lines(self, request: HttpRequest) -> list[Line]:
        pending = PendingTask.objects.condition()
        counts = {
            key: Count("pk", filter=model._default_manager.condition())  # type: ignore[attr-defined]
            for key, model in GROUPS
        }
        rows = (
            Task.objects.using(get_settings().DATABASE)
            .values("queue", "name")
            .annotate(
                **counts,
                oldest_pending=ExpressionWrapper(
                    Now() - Min("execute_at", filter=pending), output_field=DurationField()
                ),
            )
            .order_by("queue", "name")
        )
        bases = {key: self._changelist_url(request, model) for key, model in GROUPS}
        lines = []
        for values in rows:
            row: dict[str, Any] = dict(values)
            if not any(row[key] for key, _ in GROUPS):
                continue  # rows in no group (a running row without a heartbeat yet)
            line = Line(queue=row["queue"], name=row["name"])
            query = urlencode({"queue": row["queue"], "name": row["name"]})
            for key, _ in GROUPS:
                base = bases[key]
                url = f"{base}?{query}" if base and row[key] else None
                line.cells.append(Cell(count=row[key], url=url))
            if row["oldest_pending"] is not None:
                line.oldest_pending = duration(row["oldest_pending"])
            lines.append(line)
        return lines

    def lanes(self, lines: list[Line]) -> list[LaneLine]:
        """One line per queue of ``AIOTASKQ["QUEUES"]``; its slots in use are its Active
        tasks (over all workers)."""
        active = [key for key, _ in GROUPS].index("active")
        lanes = {
            queue: LaneLine(queue, options.concurrency, options.time_limit, options.threads)
            for queue, options in sorted(get_settings().QUEUES.items())
        }
        for line in lines:
            if line.queue in lanes:
                lanes[line.queue].in_use += line.cells[active].count
        return list(lanes.values())

    def keys(self, dirty_after: float, alias: str) -> list[KeyLine]:
        """The limit keys in use (docs/limits.md), with the limits of their tasks (read from
        the tasks modules a worker imports)."""
        from ..tasks.registry import registered
        from ..worker.lifecycle import import_task_modules

        rows = limits_status_sync(dirty_after, alias)
        if not rows:
            return []
        import_task_modules()
        known = registered()
        out = []
        for k in rows:
            limits = getattr(known.get(k.name), "limits", None)
            out.append(
                KeyLine(
                    k.name,
                    k.key,
                    k.running,
                    limits.max_concurrent if limits else None,
                    limits.rate_limit if limits else None,
                    k.waiting,
                )
            )
        return out

    def _changelist_url(self, request: HttpRequest, model: type[Task]) -> str | None:
        """The group's list, when it is registered here and the user may see it."""
        if not self.admin_site.is_registered(model):
            return None
        if not self.admin_site.get_model_admin(model).has_view_or_change_permission(request):
            return None
        opts = model._meta
        return reverse(f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_changelist")
