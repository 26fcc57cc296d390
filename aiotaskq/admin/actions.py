"""The actions, through the command line's SQL (``aiotaskq/db/queries.sql``): "Run again now"
(``requeue`` + ``notify``) and "Delete" for Failed and Dirty tasks, "Revoke" (``revoke``) for
Pending, Future and Active ones. Each statement checks the group again under the row lock;
a task that left the group since the page was shown is left alone, and the message says so.
Delete and Revoke ask first, as Django's own "delete selected" does."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth import get_permission_codename
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from ..conf import get_settings
from ..db import control
from .pages import TaskAdmin, group_word
from .pagination import EstimatedCountPaginator

__all__ = ["ByHand", "Revocable"]


def _confirm(
    model_admin: TaskAdmin,
    request: HttpRequest,
    queryset: QuerySet[Any],
    action: str,
    verb: str,
    note: str,
) -> TemplateResponse:
    """The "are you sure?" page of a destructive action; it posts back with post=yes."""
    shown = list(queryset[:50])
    counter = EstimatedCountPaginator(queryset, 50)
    total = len(shown) if len(shown) < 50 else counter.count
    context = {
        **model_admin.admin_site.each_context(request),
        "title": f"{verb} {model_admin.opts.verbose_name_plural}: are you sure?",
        "opts": model_admin.opts,
        "action": action,
        "verb": verb,
        "note": note,
        "tasks": shown,
        "more": total - len(shown),
        "more_estimated": counter.estimated,
        "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
        "select_across": request.POST.get("select_across") == "1",
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    }
    request.current_app = model_admin.admin_site.name
    return TemplateResponse(request, "admin/aiotaskq/confirm_action.html", context)


def _report(
    model_admin: TaskAdmin, request: HttpRequest, done: int, selected: int, what: str
) -> None:
    model_admin.message_user(request, f"{_tasks(done)} {what}.", messages.SUCCESS)
    left = selected - done
    if left:
        model_admin.message_user(
            request,
            f"{_tasks(left)} left alone: no longer {group_word(model_admin.opts)}, or being "
            "changed by someone else at the same moment.",
            messages.WARNING,
        )


def _its(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


def _tasks(n: int) -> str:
    return "1 task" if n == 1 else f"{n} tasks"


class ByHand(TaskAdmin):
    """Failed and Dirty tasks: run again, or delete (``aiotaskq retry`` / ``delete``)."""

    #: Which of the statements' groups this view is: Failed, or Dirty.
    failed: ClassVar[bool]
    actions = ("requeue", "delete_selected")
    detail_actions = (("requeue", "Run again now"), ("delete_selected", "Delete…"))

    def _ids(self, queryset: QuerySet[Any]) -> list[uuid.UUID]:
        return list(queryset.values_list("pk", flat=True))

    def _selection(self, ids: list[uuid.UUID]) -> control.Selection:
        return control.Selection(ids=ids, failed=self.failed, dirty=not self.failed)

    @admin.action(
        description="Run selected %(verbose_name_plural)s again now", permissions=["change"]
    )
    def requeue(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        """Queued again, due now, with the same arguments and their error history; their
        queues' workers are woken at commit. The SQL re-checks the group under a row lock."""
        ids = self._ids(queryset)
        settings = get_settings()
        done = control.requeue_sync(self._selection(ids), settings.DIRTY_AFTER, settings.DATABASE)
        _report(self, request, done, len(ids), "queued again, due now")

    # Named as Django's own action, which it replaces here.
    @admin.action(description="Delete selected %(verbose_name_plural)s", permissions=["delete"])
    def delete_selected(
        self, request: HttpRequest, queryset: QuerySet[Any]
    ) -> TemplateResponse | None:
        if request.POST.get("post") != "yes":
            return _confirm(
                self,
                request,
                queryset,
                "delete_selected",
                "Delete",
                "The tasks are removed with their arguments and errors; they will not run.",
            )
        ids = self._ids(queryset)
        settings = get_settings()
        done = control.delete_sync(self._selection(ids), settings.DIRTY_AFTER, settings.DATABASE)
        _report(self, request, done, len(ids), "deleted")
        return None


class Revocable(TaskAdmin):
    """Pending, Future and Active tasks: revoke."""

    actions = ("revoke",)
    detail_actions = (("revoke", "Revoke…"),)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Not even Django's "delete selected": a running row deleted under its worker would
        # go on running. Revoke instead (it takes this view's delete permission).
        return False

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        """Revoking destroys queued work: it takes the view's delete permission."""
        codename = get_permission_codename("delete", self.opts)
        return request.user.has_perm(f"{self.opts.app_label}.{codename}")

    @admin.action(description="Revoke selected %(verbose_name_plural)s", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[Any]) -> TemplateResponse | None:
        """A queued task is deleted and never runs; a running one is announced to its worker,
        which cancels it if it is a coroutine (``AsyncResult.revoke()``)."""
        if request.POST.get("post") != "yes":
            return _confirm(
                self,
                request,
                queryset,
                "revoke",
                "Revoke",
                "A queued task is deleted and never runs. A running coroutine task is "
                "cancelled by its worker and kept as failed; a running plain function "
                "cannot be interrupted and finishes.",
            )
        ids = list(queryset.values_list("pk", flat=True))
        alias = get_settings().DATABASE
        deleted = announced = 0
        # One transaction: the announcements to the workers go out at its commit.
        with transaction.atomic(using=alias):
            for task_id in ids:
                was_queued, was_running = control.revoke_sync(task_id, alias)
                deleted += was_queued
                announced += was_running
        if deleted:
            self.message_user(request, f"{_tasks(deleted)} revoked: deleted before running.")
        if announced:
            self.message_user(
                request,
                f"{_tasks(announced)} running: {_its(announced, 'worker was', 'workers were')}"
                " told to cancel them.",
            )
        gone = len(ids) - deleted - announced
        if gone:
            self.message_user(
                request,
                f"{_tasks(gone)} had finished already: nothing to revoke.",
                messages.WARNING,
            )
        return None
