"""What enqueueing returns: a handle on the task's id, and (in eager mode) its outcome."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, Literal

from django.db import connections

from ..conf import get_settings
from ..db import control, waiting
from ..db.waiting import Look
from ..errors import TaskFailed
from ..serialization import decode
from . import waiting as hub
from .context import _current

__all__ = ["AsyncResult", "EagerResult", "State"]

logger = logging.getLogger(__name__)

State = Literal["queued", "running", "failed", "succeeded", "unknown"]


def _state(seen: Look | None) -> State:
    if seen is None:
        return "unknown"
    return seen.state  # type: ignore[return-value]  # the table's check constraint


def _progress(seen: Look | None) -> dict[str, Any] | None:
    return None if seen is None or seen.progress is None else decode(seen.progress)


def _outcome(task_id: uuid.UUID, seen: Look | None) -> Any:
    """What ``get`` returns for a task that ended: its kept value, else ``None``; raises
    :class:`TaskFailed` for one that failed."""
    if seen is None or seen.state != "failed":
        return None if seen is None or seen.value is None else decode(seen.value)
    error = decode(seen.last_error) if seen.last_error else {}
    if not isinstance(error, dict):
        error = {}
    raise TaskFailed(
        task_id,
        str(error.get("type", "")),
        str(error.get("message", "")),
        str(error.get("traceback", "")),
    )


def _timed_out(task_id: uuid.UUID, timeout: float | None) -> TimeoutError:
    return TimeoutError(f"Task {task_id} did not finish within {timeout:g} s.")


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0
    ):
        raise ValueError(f"timeout must be a number of seconds >= 0 or None, got {timeout!r}.")


def _deadlock_check(task_id: uuid.UUID) -> Any:
    """Inside a task, a callback that warns when the awaited task is on the caller's own
    queue (every slot of the queue waiting so leaves nothing to run what they wait for)."""
    ctx = _current.get()
    if ctx is None:
        return None

    def check(queue: str) -> None:
        if queue == ctx.queue:
            logger.warning(
                "task.waits_on_own_queue: task %s [%s] waits for task %s of its own queue "
                "%r: when every slot of the queue waits like this, nothing is left to run "
                "the tasks waited for. Put the awaited task on another queue, or do not wait.",
                ctx.name,
                ctx.id,
                task_id,
                queue,
                extra={"task_id": str(ctx.id), "task_name": ctx.name, "queue": queue},
            )

    return check


class AsyncResult:
    """A handle on an enqueued task: its ``state`` and ``progress``, a wait for its end
    (``get`` / ``aget``), and ``revoke``. A task that succeeds is deleted unless it keeps
    its result, so a finished task's state is ``"unknown"``, as is an id never enqueued."""

    __slots__ = ("id",)

    def __init__(self, id: uuid.UUID | str) -> None:
        self.id: uuid.UUID = id if isinstance(id, uuid.UUID) else uuid.UUID(str(id))

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.id}>"

    def __str__(self) -> str:
        return str(self.id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    # --- what the row says ------------------------------------------------------------

    def _look(self) -> Look | None:
        return waiting.look_sync(self.id, get_settings().DATABASE)

    @property
    def state(self) -> State:
        """``"queued"`` (waiting, or scheduled for later), ``"running"`` (Dirty included),
        ``"failed"``, ``"succeeded"`` (a kept result), or ``"unknown"``: no row, that is a
        task that finished without keeping a result, an id never enqueued, or a task
        deleted. Read now, on Django's connection (``astate()`` in async code)."""
        return _state(self._look())

    async def astate(self) -> State:
        """The async twin of :attr:`state`."""
        return _state(await waiting.look_one(self.id))

    def ready(self) -> bool:
        """Whether the task has ended: failed, succeeded, or no row (``"unknown"``)."""
        return self.state in ("failed", "succeeded", "unknown")

    async def aready(self) -> bool:
        """The async twin of :meth:`ready`."""
        return await self.astate() in ("failed", "succeeded", "unknown")

    @property
    def progress(self) -> dict[str, Any] | None:
        """The task's last ``set_progress()`` as ``{"done", "total", "message", "at"}``
        (written with its worker's heartbeat, about a second behind), or ``None``."""
        return _progress(self._look())

    async def aprogress(self) -> dict[str, Any] | None:
        """The async twin of :attr:`progress`."""
        return _progress(await waiting.look_one(self.id))

    # --- waiting for the end -------------------------------------------------------------

    def get(self, timeout: float | None = None) -> Any:
        """Wait for the task to end and return its kept result (``@task(keep_result=...)``,
        Django's tasks framework), or ``None`` when it keeps none (or has no row).

        Waiting does not poll: one listening connection per process serves every waiter.
        Do not wait inside a task for a task of the same queue (it is logged): when every
        slot waits so, nothing runs what they wait for.

        Raises:
            TaskFailed: the task failed for good (its last error's type, message, traceback).
            TimeoutError: it had not ended after ``timeout`` seconds.
            ValueError: ``timeout`` is not a number >= 0 or None.
        """
        _check_timeout(timeout)
        wait = hub.Wait(self.id, on_queue=_deadlock_check(self.id))
        hub.hub().add(wait)
        try:
            seen = wait.future.result(timeout)
        except TimeoutError:
            wait.future.cancel()
            raise _timed_out(self.id, timeout) from None
        if seen is None and connections[get_settings().DATABASE].in_atomic_block:
            logger.warning(
                "task.get_in_transaction: AsyncResult(%s).get() found no row and returned None, "
                "inside transaction.atomic(): a task enqueued in this transaction is not "
                "committed yet, so no worker can run it and nothing can wait for it; wait "
                "after the commit (transaction.on_commit)",
                self.id,
                extra={"task_id": str(self.id)},
            )
        return _outcome(self.id, seen)

    async def aget(self, timeout: float | None = None) -> Any:
        """The async twin of :meth:`get` (same results and errors); cancelling it ends the
        wait."""
        _check_timeout(timeout)
        wait = hub.Wait(self.id, on_queue=_deadlock_check(self.id))
        hub.hub().add(wait)
        try:
            seen = await asyncio.wait_for(asyncio.wrap_future(wait.future), timeout)
        except TimeoutError:
            raise _timed_out(self.id, timeout) from None
        finally:
            wait.future.cancel()  # no-op once resolved
        return _outcome(self.id, seen)

    def revoke(self) -> bool:
        """Make sure the task does not run, or stops.

        A queued or future task is deleted: it never runs. A running coroutine task is
        cancelled by its worker within milliseconds (told through NOTIFY at commit) and kept
        as failed with a ``Revoked`` error. A running plain-function task cannot be
        interrupted: it finishes, and its worker logs the revoke as too late.

        Runs on Django's connection, so inside ``transaction.atomic()`` it takes effect at
        commit. Returns ``False`` for an id that is unknown or already finished (not an error).
        """
        deleted, running = control.revoke_sync(self.id, get_settings().DATABASE)
        return deleted or running

    async def arevoke(self) -> bool:
        """The async twin of :meth:`revoke` (its own autocommit statement)."""
        deleted, running = await control.revoke(self.id)
        return deleted or running


class EagerResult(AsyncResult):
    """The outcome of a task run at once in the caller (``ALWAYS_EAGER``)."""

    __slots__ = ("exception", "traceback", "value")

    def __init__(
        self,
        id: uuid.UUID | str,
        value: Any = None,
        exception: BaseException | None = None,
        traceback: str | None = None,
    ) -> None:
        super().__init__(id)
        self.value = value
        self.exception = exception
        self.traceback = traceback

    @property
    def result(self) -> Any:
        """The return value, or the exception the task raised (Celery's ``result``)."""
        return self.exception if self.exception is not None else self.value

    @property
    def status(self) -> str:
        return "FAILURE" if self.exception is not None else "SUCCESS"

    def successful(self) -> bool:
        return self.exception is None

    def failed(self) -> bool:
        return self.exception is not None

    def get(self, timeout: float | None = None, propagate: bool = True) -> Any:
        """The return value; the task's exception is raised if it failed and ``propagate``.
        The task has ended already: ``timeout`` is accepted and not needed."""
        if self.exception is not None and propagate:
            raise self.exception
        return self.result

    async def aget(self, timeout: float | None = None, propagate: bool = True) -> Any:
        """The same as :meth:`get`."""
        return self.get(timeout, propagate)

    @property
    def state(self) -> State:
        """``"failed"`` or ``"succeeded"``: the task ran in the caller."""
        return "failed" if self.exception is not None else "succeeded"

    async def astate(self) -> State:
        return self.state

    def ready(self) -> bool:
        return True

    async def aready(self) -> bool:
        return True

    @property
    def progress(self) -> dict[str, Any] | None:
        """``None``: a task run in the caller has no heartbeat to write its progress."""
        return None

    async def aprogress(self) -> dict[str, Any] | None:
        return None

    def revoke(self) -> bool:
        return False

    async def arevoke(self) -> bool:
        return False
