"""The Schedules view: every periodic schedule's row with its task, when it runs, its last
and next run, and the actions "Pause", "Resume" and "Run now".

Schedules are defined in code (``@periodic``); their rows are made by the workers that
import them. This view reads the definitions from the tasks modules a worker imports
(imported on the first request that needs them) to show when a schedule runs and to run it
now; a row whose schedule is no longer in the code says so, and may be deleted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from ..models import Schedule
from ..tasks.periodic import Schedule as Definition
from ..tasks.periodic import schedules
from .render import moment

__all__ = ["ScheduleAdmin"]

if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[Schedule]
else:  # ModelAdmin takes no type argument at run time
    _ModelAdmin = admin.ModelAdmin


def _definitions() -> dict[str, Definition]:
    from ..worker.lifecycle import import_task_modules

    import_task_modules()
    return {s.name: s for s in schedules()}


class ScheduleAdmin(_ModelAdmin):
    list_display = ("name", "task", "when", "last_run_at", "next_run_at", "paused")
    list_filter = ("paused",)
    search_fields = ("name", "task")
    ordering = ("name",)
    actions = ("pause", "resume", "run_now")
    readonly_fields = ("name", "task", "when", "last_run_at", "next_run_at", "paused", "last_tick")
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # schedules are defined in code

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the actions change them, not a form

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """Pause, resume and run now: the model's "change" permission."""
        return bool(request.user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}"))

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        self._known = _definitions()
        return super().changelist_view(request, extra_context)

    def change_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        self._known = _definitions()
        return super().change_view(request, *args, **kwargs)

    def _definition(self, obj: Schedule) -> Definition | None:
        known: dict[str, Definition] = getattr(self, "_known", None) or _definitions()
        return known.get(obj.name)

    @admin.display(description="runs")
    def when(self, obj: Schedule) -> str:
        definition = self._definition(obj)
        return definition.describe() if definition else "not in the code any more"

    @admin.display(description="last run", ordering="last_run")
    def last_run_at(self, obj: Schedule) -> str:
        return moment(obj.last_run)

    @admin.display(description="next run")
    def next_run_at(self, obj: Schedule) -> str:
        definition = self._definition(obj)
        if definition is None or obj.paused:
            return "-"
        now = timezone.now()
        after = max(now, obj.last_tick) if obj.last_tick else now
        return moment(definition.next_after(after))

    @admin.action(description="Pause the selected schedules", permissions=["operate"])
    def pause(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        count = queryset.update(paused=True, updated_at=timezone.now())
        self.message_user(request, f"{count} schedule(s) paused: no tick runs until resumed.")

    @admin.action(description="Resume the selected schedules", permissions=["operate"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        # From now on: the ticks that passed while paused are not caught up.
        count = queryset.filter(paused=True).update(
            paused=False, last_tick=timezone.now(), updated_at=timezone.now()
        )
        self.message_user(request, f"{count} schedule(s) resumed from their next tick.")

    @admin.action(
        description="Run the selected schedules now (a run outside their ticks)",
        permissions=["operate"],
    )
    def run_now(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        known = _definitions()
        ran, missing = [], []
        for row in queryset:
            definition = known.get(row.name)
            if definition is None:
                missing.append(row.name)
                continue
            definition.task.apply_async(definition.args, dict(definition.kwargs))
            ran.append(row.name)
        if ran:
            self.message_user(request, f"Enqueued now: {', '.join(ran)}.")
        if missing:
            self.message_user(
                request,
                f"Not in the code of this process, so not run: {', '.join(missing)}.",
                messages.WARNING,
            )
