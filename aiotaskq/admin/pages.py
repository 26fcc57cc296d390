"""What every group's view shares: the rows, the permissions and a task's page.

Each group is a proxy of :class:`~aiotaskq.models.Task` (``aiotaskq/models.py``) whose
manager holds only that group's rows, compared with the database's clock at query time; so
every view, and its permissions, is the standard admin's. A task's page is read-only: tasks
change through the actions (``actions.py``), never through a model save.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any, ClassVar

from django.contrib import admin, messages
from django.db.models import BooleanField, ExpressionWrapper, Q, QuerySet
from django.db.models.functions import Now
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from ..conf import get_settings
from ..models import (
    ActiveTask,
    DirtyTask,
    FailedTask,
    FutureTask,
    PendingTask,
    State,
    SucceededTask,
    Task,
    dirty_before,
)
from .filters import NameFilter, QueueFilter
from .pagination import EstimatedCountPaginator
from .render import duration, errors_html, json_html, moment, progress_html

if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[Any]
else:  # ModelAdmin takes no type argument at run time
    _ModelAdmin = admin.ModelAdmin

__all__ = ["TaskAdmin", "group_word"]


class TaskAdmin(_ModelAdmin):
    """What every group's view shares: read-only pages, filters on queue and name, a search
    by task id or name, and counts that stay cheap on a large table."""

    list_filter = (QueueFilter, NameFilter)
    search_fields = ("name",)
    search_help_text = "A task id, part of a task name, or a unique key."
    list_per_page = 100
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = EstimatedCountPaginator
    fieldsets = (
        (None, {"fields": ("name", "id", "queue", "priority", "state", "unique_key")}),
        ("Arguments", {"fields": ("args_json", "kwargs_json")}),
        ("Schedule", {"fields": ("created", "execute", "expires", "time_limit")}),
        ("Lease", {"fields": ("worker_id", "attempt", "started", "heartbeat", "finished")}),
        ("Errors", {"fields": ("error_history",)}),
        ("Long jobs", {"fields": ("progress_now", "checkpoint_json")}),
    )
    readonly_fields = (
        *("name", "id", "queue", "priority", "state", "unique_key", "args_json", "kwargs_json"),
        *("created", "execute", "expires", "time_limit"),
        *("worker_id", "attempt", "started", "heartbeat", "finished", "error_history"),
        *("progress_now", "checkpoint_json"),
    )
    #: Buttons on a task's page for the actions the user may take: (action, label).
    detail_actions: ClassVar[tuple[tuple[str, str], ...]] = ()

    # -- rows ------------------------------------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        # The list never shows arguments or tracebacks: leave them in the table.
        queryset: QuerySet[Any] = super().get_queryset(request)
        annotations: dict[str, Any] = self.list_annotations()
        listed: QuerySet[Any] = (
            queryset.using(get_settings().DATABASE)
            .defer("args", "kwargs", "errors", "checkpoint")
            .annotate(**annotations)
        )
        return listed

    def list_annotations(self) -> dict[str, Any]:
        """Columns computed by the database for the list (durations by its clock)."""
        return {}

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> Any:
        try:
            pk = uuid.UUID(object_id)
        except ValueError:
            return None
        queryset = self.get_queryset(request).defer(None).annotate(db_now=Now())
        return queryset.filter(pk=pk).first()

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(pk=uuid.UUID(term)), False
        except ValueError:
            return queryset.filter(Q(name__icontains=term) | Q(unique_key=term)), False

    # -- permissions -----------------------------------------------------------------------

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A task's page is read-only for everyone; "change" is the right to run the
        # actions that change tasks (run again).
        return obj is None and super().has_change_permission(request)

    def get_model_perms(self, request: HttpRequest) -> dict[str, bool]:
        # The index and the sidebar link each group as "View", not "Change": its rows are
        # never edited, whoever looks ("change" is the right to run them again).
        return {**super().get_model_perms(request), "change": False}

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Deleting goes through the "delete" action (its SQL re-checks the group), never
        # through Django's delete view.
        return obj is None and super().has_delete_permission(request)

    # -- a task's page ---------------------------------------------------------------------

    @admin.display(description="args")
    def args_json(self, obj: Task) -> SafeString:
        return json_html(obj.args)

    @admin.display(description="kwargs")
    def kwargs_json(self, obj: Task) -> SafeString:
        return json_html(obj.kwargs)

    # Pages and lists both show times through these (in lists, without "ago": the rows are
    # not read with the database's now), so that the admin has one date format.

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Task) -> str:
        return _moment(obj, obj.created_at)

    @admin.display(description="not before", ordering="execute_at")
    def execute(self, obj: Task) -> str:
        return _moment(obj, obj.execute_at)

    @admin.display(description="expires", ordering="expires_at")
    def expires(self, obj: Task) -> str:
        return _moment(obj, obj.expires_at)

    @admin.display(description="started", ordering="started_at")
    def started(self, obj: Task) -> str:
        return _moment(obj, obj.started_at)

    @admin.display(description="last heartbeat")
    def heartbeat(self, obj: Task) -> str:
        return _moment(obj, obj.alive_at)

    @admin.display(description="finished")
    def finished(self, obj: Task) -> str:
        return _moment(obj, obj.finished_at)

    @admin.display(description="errors")
    def error_history(self, obj: Task) -> SafeString:
        return errors_html(obj.errors)

    @admin.display(description="progress")
    def progress_now(self, obj: Task) -> SafeString | str:
        progress = obj.progress
        shown = progress_html(progress)
        if isinstance(progress, dict) and progress.get("at"):
            return format_html(
                '{} <span class="quiet">(set {})</span>', shown, moment(progress["at"])
            )
        return shown

    @admin.display(description="checkpoint")
    def checkpoint_json(self, obj: Task) -> SafeString | str:
        return "-" if obj.checkpoint is None else json_html(obj.checkpoint)

    def page_note(self, obj: Task) -> str | None:
        """A line at the top of a task's page that says what its group means for it."""
        return None

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> HttpResponse:
        if obj is not None:
            context = {**context, "task_note": self.page_note(obj)}
        return super().render_change_form(request, context, add, change, form_url, obj)

    def history_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # Django's title is "Change history: ..."; nothing here is changed by hand.
        obj = self.get_object(request, object_id)
        context = {"title": f"History: {obj}"} if obj is not None else {}
        return super().history_view(request, object_id, {**context, **(extra_context or {})})

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        moved = self._moved_to(request, object_id)
        if moved is not None:
            return moved
        actions = self.get_actions(request)
        context = {
            **(extra_context or {}),
            "task_actions": [
                (name, label) for name, label in self.detail_actions if name in actions
            ],
        }
        return super().change_view(request, object_id, form_url, context)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # The rows are not edited here ("Select failed task to change"): the list is the group.
        title = str(self.opts.verbose_name_plural).capitalize()
        return super().changelist_view(request, {"title": title, **(extra_context or {})})

    def _moved_to(self, request: HttpRequest, object_id: str) -> HttpResponse | None:
        """When the task is no longer in this group (it was claimed, it failed, its worker
        died...), send the user to its page in the group it is in now."""
        try:
            pk = uuid.UUID(object_id)
        except ValueError:
            return None
        if self.get_queryset(request).filter(pk=pk).exists():
            return None
        model = _group_of(pk)
        if model is None or model is self.model or not self.admin_site.is_registered(model):
            return None
        target = self.admin_site.get_model_admin(model)
        if not target.has_view_or_change_permission(request):
            return None
        try:
            url = reverse(
                f"{self.admin_site.name}:{model._meta.app_label}_{model._meta.model_name}_change",
                args=[str(pk)],
            )
        except NoReverseMatch:
            return None
        self.message_user(
            request,
            f"This task is no longer {group_word(self.opts)}: it is {group_word(model._meta)} now.",
            messages.INFO,
        )
        return HttpResponseRedirect(url)


def _moment(obj: Task, value: dt.datetime | None) -> str:
    """A time (the admin's one format, ``render.MOMENT_FORMAT``), and how far it is from the
    database's now when that was read with the row (a task's page)."""
    if value is None:
        return "-"
    shown = moment(value)
    db_now: dt.datetime | None = getattr(obj, "db_now", None)
    if db_now is None:
        return shown
    if value <= db_now:
        return f"{shown} ({duration(db_now - value)} ago)"
    return f"{shown} (in {duration(value - db_now)})"


def group_word(opts: Any) -> str:
    """The group's word: "failed" for the Failed tasks' view."""
    return str(opts.verbose_name).removesuffix(" task")


def _group_of(pk: uuid.UUID) -> type[Task] | None:
    """The group a task is in now, by the database's clock; None when it is gone."""
    row = (
        Task.objects.using(get_settings().DATABASE)
        .filter(pk=pk)
        .annotate(
            due=ExpressionWrapper(Q(execute_at__lte=Now()), output_field=BooleanField()),
            beating=ExpressionWrapper(Q(alive_at__gte=dirty_before()), output_field=BooleanField()),
        )
        .values_list("state", "due", "beating")
        .first()
    )
    if row is None:
        return None
    state, due, beating = row
    if state == State.QUEUED:
        return PendingTask if due else FutureTask
    if state == State.RUNNING:
        return ActiveTask if beating else DirtyTask
    if state == State.FAILED:
        return FailedTask
    if state == State.SUCCEEDED:
        return SucceededTask
    return None
