"""The Django admin of aiotaskq (with ``django.contrib.admin`` installed): Pending, Future,
Active, Dirty, Failed and Succeeded tasks (kept results), each its own view with its own
permissions, a summary by queue and task name, the periodic schedules, and the workers. See
docs/admin.md."""

from __future__ import annotations

from django.contrib import admin

from ..models import (
    ActiveTask,
    DirtyTask,
    FailedTask,
    FutureTask,
    PendingTask,
    Schedule,
    SucceededTask,
    TaskSummary,
    Worker,
)
from .groups import (
    ActiveAdmin,
    DirtyAdmin,
    FailedAdmin,
    FutureAdmin,
    PendingAdmin,
    SucceededAdmin,
)
from .schedules import ScheduleAdmin
from .summary import SummaryAdmin
from .workers import WorkerAdmin

__all__ = [
    "ActiveAdmin",
    "DirtyAdmin",
    "FailedAdmin",
    "FutureAdmin",
    "PendingAdmin",
    "ScheduleAdmin",
    "SucceededAdmin",
    "SummaryAdmin",
    "WorkerAdmin",
]

admin.site.register(PendingTask, PendingAdmin)
admin.site.register(FutureTask, FutureAdmin)
admin.site.register(ActiveTask, ActiveAdmin)
admin.site.register(DirtyTask, DirtyAdmin)
admin.site.register(FailedTask, FailedAdmin)
admin.site.register(SucceededTask, SucceededAdmin)
admin.site.register(TaskSummary, SummaryAdmin)
admin.site.register(Schedule, ScheduleAdmin)
admin.site.register(Worker, WorkerAdmin)
