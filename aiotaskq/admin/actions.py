"""The actions, through the command line's SQL (``aiotaskq/db/queries.sql``), each one
statement for the whole selection however many rows it holds ("select all" over a backlog
included): "Run again now" (``requeue`` + ``notify``) and "Delete" for Failed and Dirty
tasks; "Run again now" (a new task, through ``enqueue``) and "Delete" for Succeeded ones;
"Revoke" (``revoke``) for Pending, Future and Active ones. Each statement checks the group
again under the row lock; a task that left the group since the page was shown is left alone,
and the message says so. Delete and Revoke ask first, as Django's own "delete selected" does.

Every action writes the admin's history (``LogEntry``) for the tasks it changed, in bulk, in
the same transaction as the change when the history lives in the same database."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.auth import get_permission_codename
from django.db import router, transaction
from django.db.models import QuerySet, TextField
from django.db.models.functions import Cast
from django.http import HttpRequest
from django.template.response import TemplateResponse

from ..conf import get_settings
from ..db import control
from ..db import enqueue as db_enqueue
from ..models import PendingTask, Task
from .pages import TaskAdmin, group_word
from .pagination import EstimatedCountPaginator

__all__ = ["ByHand", "Kept", "Revocable"]

#: What the history says of each action (``LogEntry.change_message``).
REQUEUED = "Run again now: queued again, due now."
RERUN = "Run again now as a new task with the same arguments."
RERUN_FROM = "Run again now: a new task with the arguments of a succeeded one."
REVOKED_QUEUED = "Revoked before running."
REVOKED_RUNNING = "Revoked while running: its worker was told to cancel it."


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
    model_admin: TaskAdmin,
    request: HttpRequest,
    done: int,
    selected: int,
    what: str,
    *,
    or_else: str = "",
) -> None:
    model_admin.message_user(request, f"{_tasks(done)} {what}.", messages.SUCCESS)
    left = selected - done
    if left:
        model_admin.message_user(
            request,
            f"{_tasks(left)} left alone: no longer {group_word(model_admin.opts)}, "
            f"{or_else}or being changed by someone else at the same moment.",
            messages.WARNING,
        )


def _its(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


def _tasks(n: int) -> str:
    return "1 task" if n == 1 else f"{n} tasks"


# -- the selection and its history --------------------------------------------------------


def _picked(queryset: QuerySet[Any]) -> dict[uuid.UUID, tuple[str, str]]:
    """The selected tasks' ids, with what the history shows of them (name and queue), in
    one query whatever the selection's size; none of the list's computed columns."""
    rows = queryset.order_by().values_list("pk", "name", "queue")
    return {task_id: (name, queue) for task_id, name, queue in rows}


@contextmanager
def _one_transaction(alias: str) -> Iterator[None]:
    """The task table's transaction, and the history's too when ``LogEntry`` is written to
    another database: the change and its history commit together, or one right after the
    other across two databases."""
    history = router.db_for_write(LogEntry)
    with transaction.atomic(using=alias):
        if history == alias:
            yield
        else:
            with transaction.atomic(using=history):
                yield


def _log(
    request: HttpRequest,
    model: type[Task],
    picked: dict[uuid.UUID, tuple[str, str]],
    done: Iterable[uuid.UUID],
    flag: int,
    message: str = "",
) -> None:
    """One history entry per task in ``done``, written in bulk (``log_actions``, as Django's
    ``log_deletions`` does): a few statements for any number of tasks."""
    tasks = [
        model(pk=task_id, name=picked[task_id][0], queue=picked[task_id][1])
        for task_id in done
        if task_id in picked
    ]
    if tasks:
        user_id = request.user.pk
        assert user_id is not None, "the admin's views need a logged-in user"
        LogEntry.objects.log_actions(
            user_id=user_id, queryset=tasks, action_flag=flag, change_message=message
        )


# -- the views' actions -------------------------------------------------------------------


class _Deletable(TaskAdmin):
    """Tasks that stay until someone acts on them: Failed, Dirty and Succeeded."""

    #: Which of the ``delete`` statement's groups this view is.
    selection: ClassVar[control.Selection]
    #: What "Delete" says of the tasks before it asks.
    delete_note: ClassVar[str]

    def _selection(self, ids: Iterable[uuid.UUID]) -> control.Selection:
        s = self.selection
        return control.Selection(
            ids=list(ids), failed=s.failed, dirty=s.dirty, succeeded=s.succeeded
        )

    # Named as Django's own action, which it replaces here.
    @admin.action(description="Delete selected %(verbose_name_plural)s", permissions=["delete"])
    def delete_selected(
        self, request: HttpRequest, queryset: QuerySet[Any]
    ) -> TemplateResponse | None:
        if request.POST.get("post") != "yes":
            return _confirm(self, request, queryset, "delete_selected", "Delete", self.delete_note)
        settings = get_settings()
        with _one_transaction(settings.DATABASE):
            picked = _picked(queryset)
            done = control.delete_sync(
                self._selection(picked), settings.DIRTY_AFTER, settings.DATABASE
            )
            _log(request, self.model, picked, done, DELETION)
        _report(self, request, len(done), len(picked), "deleted")
        return None


class ByHand(_Deletable):
    """Failed and Dirty tasks: run again, or delete (``aiotaskq retry`` / ``delete``)."""

    actions = ("requeue", "delete_selected")
    detail_actions = (("requeue", "Run again now"), ("delete_selected", "Delete…"))
    delete_note = "The tasks are removed with their arguments and errors; they will not run."

    @admin.action(
        description="Run selected %(verbose_name_plural)s again now", permissions=["change"]
    )
    def requeue(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        """Queued again, due now, with the same arguments and their error history; their
        queues' workers are woken at commit. The SQL re-checks the group under a row lock."""
        settings = get_settings()
        with _one_transaction(settings.DATABASE):
            picked = _picked(queryset)
            done = control.requeue_sync(
                self._selection(picked), settings.DIRTY_AFTER, settings.DATABASE
            )
            _log(request, self.model, picked, done, CHANGE, REQUEUED)
            left = picked.keys() - set(done)
            keyed = bool(left) and queryset.filter(pk__in=left, unique_key__isnull=False).exists()
        _report(
            self,
            request,
            len(done),
            len(picked),
            "queued again, due now",
            # A task whose key another task holds now is not run again (migration 0012).
            or_else="holding a unique key that another queued or running task holds now, "
            if keyed
            else "",
        )


class Kept(_Deletable):
    """Succeeded tasks (kept results): run again as new tasks, or delete."""

    selection = control.Selection(failed=False, dirty=False, succeeded=True)
    actions = ("requeue", "delete_selected")
    detail_actions = (("requeue", "Run again now"), ("delete_selected", "Delete…"))
    delete_note = (
        "The results are removed with the tasks' arguments; get_result() will no longer find them."
    )

    @admin.action(
        description="Run selected %(verbose_name_plural)s again now", permissions=["change"]
    )
    def requeue(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        """A new task for each, due now, with the same name, queue, priority, time limit and
        arguments, written as any enqueue is (one statement for them all; their queues'
        workers woken at commit). The kept results stay as they are: a finished result never
        changes (Django's ``TaskResult``), so running it again is a new task with its own id,
        as calling the task a second time would be."""
        settings = get_settings()
        sources = (
            queryset.order_by()
            .annotate(
                args_text=Cast("args", output_field=TextField()),
                kwargs_text=Cast("kwargs", output_field=TextField()),
            )
            .values_list(
                "pk",
                "name",
                "queue",
                "priority",
                "time_limit",
                "args_text",
                "kwargs_text",
                "unique_key",
                "limit_key",
            )
        )
        with _one_transaction(settings.DATABASE):
            picked: dict[uuid.UUID, tuple[str, str]] = {}
            rows = []
            for task_id, name, queue, priority, time_limit, args, kwargs, key, limit in sources:
                picked[task_id] = (name, queue)
                rows.append(
                    db_enqueue.TaskRow(
                        id=uuid.uuid4(),
                        name=name,
                        queue=queue,
                        priority=priority,
                        args=args,
                        kwargs=kwargs,
                        time_limit=time_limit,
                        # A unique task run again keeps its key: if another task holds it
                        # now, nothing is written for this one.
                        unique_key=key,
                        dirty_after=settings.DIRTY_AFTER,
                        limit_key=limit,  # and its limits' key
                    )
                )
            held = db_enqueue.insert_sync(rows, settings.DATABASE) if rows else {}
            added = {r.id: (r.name, r.queue) for r in rows if r.id not in held}
            # The history of both: the results that were run again, and the new tasks
            # (Pending: due now).
            _log(request, self.model, picked, picked.keys(), CHANGE, RERUN)
            _log(request, PendingTask, added, added.keys(), ADDITION, RERUN_FROM)
        self.message_user(
            request,
            f"{_tasks(len(added))} queued again as new {_its(len(added), 'task', 'tasks')}, "
            "due now; the kept results stay as they are.",
            messages.SUCCESS,
        )
        if held:
            self.message_user(
                request,
                f"{_tasks(len(held))} not run again: another task with the same unique key is "
                "queued or running.",
                messages.WARNING,
            )


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
        which cancels it if it is a coroutine (``AsyncResult.revoke()``). One statement for
        the whole selection; the announcements go out at commit."""
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
        with _one_transaction(get_settings().DATABASE):
            picked = _picked(queryset)
            done = control.revoke_many_sync(picked.keys(), get_settings().DATABASE)
            _log(request, self.model, picked, done.deleted, DELETION, REVOKED_QUEUED)
            _log(request, self.model, picked, done.announced, CHANGE, REVOKED_RUNNING)
        deleted, announced = len(done.deleted), len(done.announced)
        if deleted:
            self.message_user(request, f"{_tasks(deleted)} revoked: deleted before running.")
        if announced:
            self.message_user(
                request,
                f"{_tasks(announced)} running: {_its(announced, 'worker was', 'workers were')}"
                " told to cancel them.",
            )
        gone = len(picked) - deleted - announced
        if gone:
            self.message_user(
                request,
                f"{_tasks(gone)} had finished already: nothing to revoke.",
                messages.WARNING,
            )
        return None
