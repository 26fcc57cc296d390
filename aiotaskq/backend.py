"""aiotaskq as a backend of Django's tasks framework (Django >= 6.0).

.. code-block:: python

    TASKS = {"default": {"BACKEND": "aiotaskq.backend.AiotaskqBackend",
                         "QUEUES": ["default", "emails"],
                         "OPTIONS": {"RESULT_RETENTION": 86400}}}

``@django.tasks.task`` functions then run on aiotaskq workers, from the same table as
``@aiotaskq.task`` ones. When Django validates a task (at decoration), the backend registers
it with aiotaskq, so a worker that imported the module runs it by name and never imports a
name read from a row. Unlike aiotaskq's own tasks, these keep their result after success
(``get_result``) for ``RESULT_RETENTION`` seconds (a day by default); workers prune them.
Failed results stay, like every failed task, for inspection.

In eager mode (``AIOTASKQ["ALWAYS_EAGER"]``, for tests) ``enqueue`` runs the task in the
caller, as Django's ``ImmediateBackend`` does, and returns its finished result: the arguments
still go through JSON, the signals are sent, ``run_after`` is not waited for, and nothing is
written, so ``get_result`` does not find it. ``EAGER_PROPAGATES`` raises the task's exception
in the caller once the result has recorded it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from inspect import iscoroutinefunction
from typing import TYPE_CHECKING, Any, ClassVar

from asgiref.sync import async_to_sync, sync_to_async
from django.apps import apps
from django.core import checks
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import Task as DjangoTask
from django.tasks.base import TaskContext, TaskError, TaskResult, TaskResultStatus
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued, task_finished, task_started
from django.utils import timezone
from django.utils.json import normalize_json
from django.utils.module_loading import import_string

from .conf import get_settings
from .db import control
from .db import enqueue as db_enqueue
from .errors import InvalidQueueName
from .retry import RetryPolicy
from .serialization import decode
from .tasks.enqueue import build_row, validate_queue
from .tasks.fit import Fit
from .tasks.task import Attempt, OnDirty, Task

__all__ = ["DEFAULT_RESULT_RETENTION", "AiotaskqBackend", "AiotaskqTask", "task"]

if TYPE_CHECKING:
    # django-stubs makes these generic over the function's parameters and result.
    type AnyTask = DjangoTask[Any, Any]
    type AnyResult = TaskResult[Any, Any]

_STATUS = {
    "queued": TaskResultStatus.READY,
    "running": TaskResultStatus.RUNNING,
    "failed": TaskResultStatus.FAILED,
    "succeeded": TaskResultStatus.SUCCESSFUL,
}
DEFAULT_RESULT_RETENTION = 24 * 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class AiotaskqTask(DjangoTask):  # type: ignore[type-arg]
    """Django's ``Task`` with aiotaskq's options. It is the backend's ``task_class``, so on
    Django 6.1 ``@django.tasks.task(max_retries=3, retry_backoff=True, time_limit=30)``
    builds one; :func:`task` does the same on any version.

    A failed attempt is retried (any ``Exception``) while ``max_retries`` allow, after
    ``retry_delay`` seconds or, with ``retry_backoff``, a doubling delay (Celery's rules).
    """

    max_retries: int = 0
    retry_delay: float = 180.0
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600.0
    retry_jitter: bool = True
    time_limit: float | None = None
    on_dirty: OnDirty = "keep"

    def policy(self) -> RetryPolicy:
        return RetryPolicy.build(
            autoretry_for=(Exception,) if self.max_retries else (),
            max_retries=self.max_retries,
            retry_kwargs={"countdown": self.retry_delay},
            retry_backoff=self.retry_backoff,
            retry_backoff_max=self.retry_backoff_max,
            retry_jitter=self.retry_jitter,
        )


def task(
    function: Callable[..., Any] | None = None,
    *,
    priority: int = 0,
    queue_name: str = "default",
    backend: str = "default",
    takes_context: bool = False,
    **options: Any,
) -> Any:
    """``django.tasks.task`` that builds an :class:`AiotaskqTask` on every Django version."""

    def wrapper(f: Callable[..., Any]) -> AiotaskqTask:
        return AiotaskqTask(
            func=f,
            priority=priority,
            queue_name=queue_name,
            backend=backend,
            takes_context=takes_context,
            **options,
        )

    return wrapper(function) if function is not None else wrapper


class AiotaskqBackend(BaseTaskBackend):
    """Django's tasks run by aiotaskq workers. ``enqueue`` joins the caller's transaction
    (Django's connection); ``aenqueue`` writes in its own statement without a thread hop."""

    task_class = AiotaskqTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    #: Django tasks by name, as registered in this process (for ``get_result``).
    _tasks: ClassVar[dict[str, AnyTask]] = {}

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.result_retention = float(
            self.options.get("RESULT_RETENTION", DEFAULT_RESULT_RETENTION)
        )
        self.database: str = self.options.get("DATABASE", get_settings().DATABASE)

    # --- validation and registration ---------------------------------------------------

    def validate_task(self, task: AnyTask) -> None:
        try:
            validate_queue(task.queue_name)
        except InvalidQueueName as exc:
            raise InvalidTask(str(exc)) from exc
        super().validate_task(task)
        self._register(task)

    def _register(self, task: AnyTask) -> None:
        policy = (
            task.policy() if isinstance(task, AiotaskqTask) else RetryPolicy.build(max_retries=0)
        )
        Task(
            _runner(task, self),
            name=task.module_path,
            queue=task.queue_name,
            priority=task.priority,
            time_limit=getattr(task, "time_limit", None),
            on_dirty=getattr(task, "on_dirty", "keep"),
            policy=policy,
            result_retention=self.result_retention,
            wants_attempt=True,
        )
        self._tasks[task.module_path] = task

    # --- enqueue ---------------------------------------------------------------------

    def _row(self, task: AnyTask, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        self.validate_task(task)
        # Django's rule: arguments must be JSON as they are (normalize_json raises TypeError).
        normalize_json(list(args))
        normalize_json(dict(kwargs))
        _fit(task).check(task.module_path, args, kwargs)
        return build_row(
            task.module_path,
            list(args),
            kwargs,
            queue=task.queue_name,
            priority=task.priority,
            eta=task.run_after,
        )

    def _ready(
        self, task: AnyTask, row: Any, args: Any, kwargs: Any, enqueued_at: dt.datetime
    ) -> AnyResult:
        return _new_result(
            task,
            str(row.id),
            TaskResultStatus.READY,
            self.alias,
            args,
            kwargs,
            enqueued_at=enqueued_at,
        )

    def enqueue(self, task: AnyTask, args: Sequence[Any], kwargs: dict[str, Any]) -> AnyResult:
        """Write the task (joining the caller's transaction) and return its READY result; in
        eager mode (``AIOTASKQ["ALWAYS_EAGER"]``) run it at once instead, as Django's
        ``ImmediateBackend`` does, and return its finished result."""
        row = self._row(task, args, kwargs)
        if get_settings().ALWAYS_EAGER:
            return self._run_eagerly(task, row)
        enqueued_at = db_enqueue.insert_one_sync(row, self.database)
        result = self._ready(task, row, args, kwargs, enqueued_at)
        task_enqueued.send(type(self), task_result=result)
        return result

    async def aenqueue(
        self, task: AnyTask, args: Sequence[Any], kwargs: dict[str, Any]
    ) -> AnyResult:
        """The async twin of :meth:`enqueue`: its own autocommit statement, no thread hop."""
        row = self._row(task, args, kwargs)
        if get_settings().ALWAYS_EAGER:
            return await self._arun_eagerly(task, row)
        enqueued_at = await db_enqueue.insert_one(row)
        result = self._ready(task, row, args, kwargs, enqueued_at)
        await task_enqueued.asend(type(self), task_result=result)
        return result

    # --- eager mode ----------------------------------------------------------------------

    def _eager_result(self, task: AnyTask, row: Any) -> AnyResult:
        """The READY result of a task about to run in the caller. Its arguments are read back
        from the row's JSON, as a worker would read them."""
        return self._ready(task, row, decode(row.args), decode(row.kwargs), timezone.now())

    def _run_eagerly(self, task: AnyTask, row: Any) -> AnyResult:
        result = self._eager_result(task, row)
        task_enqueued.send(type(self), task_result=result)
        _start(result, _eager_worker_id())
        try:
            _call(task, result, type(self))
        except (Exception, SystemExit):
            # Recorded in the result (and logged by Django's task_finished receiver).
            if get_settings().EAGER_PROPAGATES:
                raise
        return result

    async def _arun_eagerly(self, task: AnyTask, row: Any) -> AnyResult:
        result = self._eager_result(task, row)
        await task_enqueued.asend(type(self), task_result=result)
        _start(result, _eager_worker_id())
        try:
            await _acall(task, result, type(self))
        except (Exception, SystemExit):
            if get_settings().EAGER_PROPAGATES:
                raise
        return result

    # --- results -----------------------------------------------------------------------

    def get_result(self, result_id: str) -> AnyResult:
        task_id = _parse_id(result_id)
        row = control.fetch_row_sync(task_id, self.database, get_settings().DIRTY_AFTER)
        return self._result(result_id, row)

    async def aget_result(self, result_id: str) -> AnyResult:
        task_id = _parse_id(result_id)
        row = await control.fetch_row(task_id, get_settings().DIRTY_AFTER)
        return self._result(result_id, row)

    def _result(self, result_id: str, row: tuple[Any, ...] | None) -> AnyResult:
        if row is None:
            raise TaskResultDoesNotExist(result_id)
        (
            _,
            name,
            _,
            _,
            state,
            args,
            kwargs,
            created_at,
            started_at,
            finished_at,
            attempt,
            worker_id,
            errors,
            return_value,
            _,
            _,
        ) = row
        task = self._tasks.get(name)
        if task is None:
            try:
                task = import_string(name)
            except ImportError as exc:
                raise TaskResultDoesNotExist(result_id) from exc
        errors = json.loads(errors)
        by_attempt = {e.get("attempt"): e.get("worker_id", "") for e in errors}
        worker_ids = [
            worker_id if n == attempt and state != "queued" else by_attempt.get(n, "")
            for n in range(1, attempt + 1)
        ]
        result: AnyResult = TaskResult(
            task=task,
            id=result_id,
            status=_STATUS[state],
            enqueued_at=created_at,
            started_at=started_at,
            finished_at=finished_at,
            last_attempted_at=started_at or finished_at,
            args=decode(args),
            kwargs=decode(kwargs),
            backend=self.alias,
            errors=[
                TaskError(exception_class_path=e["type"], traceback=e["traceback"])
                for e in errors
                if e.get("type")
            ],
            worker_ids=worker_ids,
        )
        if state == "succeeded" and return_value is not None:
            object.__setattr__(result, "_return_value", json.loads(return_value))
        return result

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        messages = list(super().check(**kwargs))
        if not apps.is_installed("aiotaskq"):
            messages.append(
                checks.Error(
                    "The aiotaskq backend needs 'aiotaskq' in INSTALLED_APPS (its table, its "
                    "migrations and its worker command).",
                    id="aiotaskq.E010",
                )
            )
        if self.database != get_settings().DATABASE:
            messages.append(
                checks.Error(
                    f"The backend {self.alias!r} uses the database {self.database!r} but "
                    f'AIOTASKQ["DATABASE"] is {get_settings().DATABASE!r}: workers and the backend '
                    "must share the task table.",
                    id="aiotaskq.E011",
                    hint='Set AIOTASKQ["DATABASE"] and the backend\'s OPTIONS["DATABASE"] alike.',
                )
            )
        return messages


_fits: dict[tuple[Callable[..., Any], bool], Fit] = {}


def _fit(task: AnyTask) -> Fit:
    """The parameters of a Django task's function (after its context, when it takes one)."""
    key = (task.func, bool(task.takes_context))
    fit = _fits.get(key)
    if fit is None:
        fit = _fits[key] = Fit(task.func, lead=1 if task.takes_context else 0)
    return fit


def _parse_id(result_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(result_id))
    except ValueError:
        raise TaskResultDoesNotExist(result_id) from None


def _new_result(
    task: AnyTask,
    result_id: str,
    status: TaskResultStatus,
    alias: str,
    args: Any,
    kwargs: Any,
    *,
    enqueued_at: dt.datetime | None = None,
) -> AnyResult:
    """A result not read from the table: at enqueue, or for the attempt being run."""
    return TaskResult(
        task=task,
        id=result_id,
        status=status,
        enqueued_at=enqueued_at,
        started_at=None,
        finished_at=None,
        last_attempted_at=None,
        args=list(args),
        kwargs=dict(kwargs),
        backend=alias,
        errors=[],
        worker_ids=[],
    )


def _eager_worker_id() -> str:
    """The worker id of a task run in the caller (eager mode)."""
    return f"{socket.gethostname()}:{os.getpid()}:eager"


def _running(
    task: AnyTask, backend: AiotaskqBackend, attempt: Attempt, args: Any, kwargs: Any
) -> AnyResult:
    result = _new_result(
        task, str(attempt.task_id), TaskResultStatus.READY, backend.alias, args, kwargs
    )
    # The ids of earlier attempts are not at hand here (get_result has them); the length,
    # which TaskContext.attempt reads, is right.
    result.worker_ids.extend([""] * (attempt.number - 1))
    _start(result, attempt.worker_id)
    return result


def _start(result: AnyResult, worker_id: str) -> None:
    now = timezone.now()
    object.__setattr__(result, "status", TaskResultStatus.RUNNING)
    object.__setattr__(result, "started_at", now)
    object.__setattr__(result, "last_attempted_at", now)
    result.worker_ids.append(worker_id)


def _finished(result: AnyResult, exc: BaseException | None, value: Any = None) -> None:
    object.__setattr__(result, "finished_at", timezone.now())
    if exc is None:
        object.__setattr__(result, "status", TaskResultStatus.SUCCESSFUL)
        object.__setattr__(result, "_return_value", value)
    else:
        object.__setattr__(result, "status", TaskResultStatus.FAILED)
        result.errors.append(
            TaskError(
                exception_class_path=f"{type(exc).__module__}.{type(exc).__qualname__}",
                traceback="".join(traceback.format_exception(exc)),
            )
        )


def _call_args(task: AnyTask, result: AnyResult, args: Sequence[Any]) -> tuple[Any, ...]:
    return (TaskContext(task_result=result), *args) if task.takes_context else tuple(args)


# Both run a RUNNING result's task with Django's signals around it, record the outcome in the
# result and return the JSON-normalised value, or raise what the task raised. SystemExit is a
# failure like any exception (Django's ImmediateBackend's rule, and the worker's);
# KeyboardInterrupt and cancellation pass through untouched. task_finished is sent inside the
# except block, so that Django's receiver logs the traceback.


def _call(task: AnyTask, result: AnyResult, sender: type[AiotaskqBackend]) -> Any:
    """From sync code: a coroutine function runs through ``async_to_sync``."""
    task_started.send(sender, task_result=result)
    func = async_to_sync(task.func) if iscoroutinefunction(task.func) else task.func
    try:
        value = normalize_json(func(*_call_args(task, result, result.args), **result.kwargs))
    except (Exception, SystemExit) as exc:
        _finished(result, exc)
        task_finished.send(sender, task_result=result)
        raise
    _finished(result, None, value)
    task_finished.send(sender, task_result=result)
    return value


async def _acall(task: AnyTask, result: AnyResult, sender: type[AiotaskqBackend]) -> Any:
    """From async code: a plain function runs through ``sync_to_async``."""
    await task_started.asend(sender, task_result=result)
    func = task.func if iscoroutinefunction(task.func) else sync_to_async(task.func)
    try:
        value = normalize_json(await func(*_call_args(task, result, result.args), **result.kwargs))
    except (Exception, SystemExit) as exc:
        _finished(result, exc)
        await task_finished.asend(sender, task_result=result)
        raise
    _finished(result, None, value)
    await task_finished.asend(sender, task_result=result)
    return value


def _runner(task: AnyTask, backend: AiotaskqBackend) -> Callable[..., Any]:
    """The function the worker runs for a Django task: the task's function with its context
    (``takes_context``), Django's signals around it, and the JSON-normalised return value.
    A coroutine function stays a coroutine function (the worker runs it on its loop); a
    plain one stays plain (the worker runs it in a thread)."""
    sender = type(backend)

    if iscoroutinefunction(task.func):

        async def run_async(attempt: Attempt, *args: Any, **kwargs: Any) -> Any:
            return await _acall(task, _running(task, backend, attempt, args, kwargs), sender)

        return run_async

    def run_sync(attempt: Attempt, *args: Any, **kwargs: Any) -> Any:
        return _call(task, _running(task, backend, attempt, args, kwargs), sender)

    return run_sync
