"""The running task's context: who it is, what its last attempt saved, and its progress.

::

    from aiotaskq import current_task

    @task(on_dirty="retry")
    def export_orders(export_id: int) -> None:
        ctx = current_task()
        start = ctx.checkpoint or 0
        ...
        ctx.save_checkpoint(i + 1)
        ctx.set_progress(i + 1, total, f"{i + 1} of {total} rows")

The worker makes one :class:`TaskContext` per attempt and sets it for the attempt's
coroutine (and, through the context copy of ``sync_to_async``, for a plain function's
thread). A checkpoint is written at once, in its own statement, and only while the attempt
holds its lease. Progress is only remembered here: the worker's heartbeat writes the latest of
every in-flight task in its one statement, so ``set_progress`` costs no round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import Any

from ..conf import get_settings
from ..errors import InvalidCheckpoint, InvalidProgress, LeaseLost, NotInTask
from ..serialization import decode, encode, unstorable

__all__ = [
    "TaskContext",
    "activate",
    "check_progress",
    "current_task",
    "eager_context",
    "encode_checkpoint",
    "progress_json",
    "running",
]

#: Writes a checkpoint (JSON text) for the attempt; True while the attempt held its lease.
CheckpointWriter = Callable[[uuid.UUID, int, str], Awaitable[bool]]

#: How long a plain function waits for its checkpoint's write before it is told it failed.
_WRITE_TIMEOUT = 60.0
#: A progress message is cut to this many characters (it is for a person to read).
MAX_MESSAGE = 1000

_current: ContextVar[TaskContext | None] = ContextVar("aiotaskq_current_task", default=None)


def current_task() -> TaskContext:
    """The context of the task attempt running in this coroutine or thread.

    Raises:
        NotInTask: called outside a task run by a worker (or by eager mode).
    """
    ctx = _current.get()
    if ctx is None:
        raise NotInTask(
            "current_task() was called outside a task: it works only inside a task's function "
            "while a worker (or eager mode) runs it."
        )
    return ctx


def activate(ctx: TaskContext | None) -> None:
    """Make ``ctx`` the current task of this context (the worker, in each attempt's own
    asyncio task)."""
    _current.set(ctx)


@contextlib.contextmanager
def running(ctx: TaskContext) -> Iterator[TaskContext]:
    """``ctx`` as the current task for the block, then the one before (eager mode)."""
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


def eager_context(task_id: uuid.UUID, name: str, queue: str) -> TaskContext:
    """The context of a task run by eager mode: its first attempt, with its checkpoint kept
    in memory (there is no later attempt to resume)."""
    return TaskContext(
        id=task_id,
        name=name,
        queue=queue,
        attempt=1,
        retries=0,
        checkpoint=None,
        writer=None,
        loop=None,
    )


def encode_checkpoint(task_name: str, value: Any) -> str:
    """A checkpoint as JSON text, under the rules of task arguments.

    Raises:
        InvalidCheckpoint: not JSON, text PostgreSQL cannot store (NUL, a lone surrogate),
            or larger than ``AIOTASKQ["MAX_ARGUMENTS_BYTES"]``.
    """
    try:
        text = encode(value)
    except (TypeError, ValueError) as exc:
        raise InvalidCheckpoint(
            f"Task {task_name!r}: the checkpoint cannot be encoded as JSON ({exc}). Save JSON "
            "types, datetimes, dates, times, timedeltas, UUIDs or Decimals: a row count, a "
            "last primary key, a cursor."
        ) from exc
    if (problem := unstorable(text)) is not None:
        raise InvalidCheckpoint(f"Task {task_name!r}: the checkpoint {problem}.")
    limit = get_settings().MAX_ARGUMENTS_BYTES
    if len(text) * 4 > limit and (size := len(text.encode())) > limit:
        raise InvalidCheckpoint(
            f"Task {task_name!r}: the checkpoint is {size} bytes of JSON, more than the limit "
            f'of {limit} (AIOTASKQ["MAX_ARGUMENTS_BYTES"]). Save where to resume (a count, a '
            "key), not the data itself."
        )
    return text


#: The largest ``done`` or ``total`` (a count of rows or bytes is far below it; a number past
#: it, such as 10**5000, would not even encode).
MAX_COUNT = 10**18


def _number(what: str, value: Any) -> float | int:
    kind = type(value)
    if kind is int or kind is float:  # the common case first
        if 0 <= value <= MAX_COUNT:  # NaN is not; an infinity is past MAX_COUNT
            return value  # type: ignore[no-any-return]
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidProgress(
            f"set_progress(): {what} must be a number (an int or a float), got "
            f"{type(value).__name__}."
        )
    else:  # a subclass of int or float: as the plain number
        plain = int(value) if isinstance(value, int) else float(value)
        if 0 <= plain <= MAX_COUNT:
            return plain
    shown = f"{value!r:.80}" if not isinstance(value, int) or value < MAX_COUNT**2 else "a huge int"
    raise InvalidProgress(
        f"set_progress(): {what} must be a finite number from 0 to 10**18, got {shown}."
    )


def _readable(message: str) -> str:
    """``message`` as text jsonb can store: NULs and lone surrogates become U+FFFD (it is for
    a person to read), cut to :data:`MAX_MESSAGE` characters."""
    text = message[:MAX_MESSAGE].replace("\x00", "\ufffd")
    if text.isascii():
        return text
    return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)


Progress = tuple[float | int, float | int | None, str, float]


def check_progress(done: Any, total: Any = None, message: Any = "") -> Progress:
    """A ``set_progress()`` call's values, checked, with the moment of the call.

    Raises:
        InvalidProgress: ``done`` or ``total`` not a finite number >= 0, ``message`` not text.
    """
    done = _number("done", done)
    if total is not None:
        total = _number("total", total)
    if type(message) is not str:
        if not isinstance(message, str):
            raise InvalidProgress(
                f"set_progress(): message must be a str, got {type(message).__name__}."
            )
        message = str.__str__(message)  # the text itself, not a subclass's __str__
    return done, total, message, time.time()


def progress_json(progress: Progress) -> str:
    """The progress document ``{"done", "total", "message", "at"}`` as JSON text."""
    done, total, message, at = progress
    when = dt.datetime.fromtimestamp(at, dt.UTC).isoformat()
    return encode({"done": done, "total": total, "message": _readable(message), "at": when})


class TaskContext:
    """One attempt of a task, as the task sees it (:func:`current_task`)."""

    __slots__ = (
        "_checkpoint",
        "_loop",
        "_progress",
        "_writer",
        "attempt",
        "id",
        "name",
        "queue",
        "retries",
        "scheduled_for",
    )

    def __init__(
        self,
        *,
        id: uuid.UUID,
        name: str,
        queue: str,
        attempt: int,
        retries: int,
        checkpoint: str | None,
        writer: CheckpointWriter | None,
        loop: asyncio.AbstractEventLoop | None,
        scheduled_for: dt.datetime | None = None,
    ) -> None:
        #: The task's id (the ``AsyncResult`` id).
        self.id = id
        self.name = name
        self.queue = queue
        #: This attempt's number: 1 for the first.
        self.attempt = attempt
        #: Failed attempts before this one (Celery's ``request.retries``).
        self.retries = retries
        #: The tick of a periodic run; ``None`` for a task enqueued by a call.
        self.scheduled_for = scheduled_for
        self._checkpoint: Any = None if checkpoint is None else decode(checkpoint)
        self._writer = writer
        self._loop = loop
        # The latest set_progress() until the heartbeat takes it (encoded only then), or
        # the JSON text of one that a beat could not write.
        self._progress: Progress | str | None = None

    def __repr__(self) -> str:
        return f"<TaskContext {self.name} [{self.id}] attempt {self.attempt}>"

    @property
    def checkpoint(self) -> Any:
        """What the last ``save_checkpoint`` of this task saved (in this attempt or an
        earlier one), or ``None``."""
        return self._checkpoint

    async def asave_checkpoint(self, value: Any) -> None:
        """Save ``value`` for the next attempt; durable when this returns.

        Raises:
            InvalidCheckpoint: ``value`` is not storable JSON or too large; nothing written.
            LeaseLost: this attempt no longer holds the task (rescued as Dirty, re-run
                elsewhere, deleted): nothing was written.
            DatabaseError: the write failed.
        """
        await self._store(encode_checkpoint(self.name, value))

    def save_checkpoint(self, value: Any) -> None:
        """The plain-function twin of :meth:`asave_checkpoint` (same errors); in a coroutine
        task use ``await ctx.asave_checkpoint(value)``."""
        text = encode_checkpoint(self.name, value)  # in the caller's thread, not the loop
        loop = self._loop
        if self._writer is None or loop is None:
            self._checkpoint = decode(text)
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise RuntimeError(
                "save_checkpoint() blocks, and was called on the worker's event loop: in a "
                "coroutine task use `await current_task().asave_checkpoint(value)`."
            )
        asyncio.run_coroutine_threadsafe(self._store(text), loop).result(_WRITE_TIMEOUT)

    async def _store(self, text: str) -> None:
        if self._writer is not None and not await self._writer(self.id, self.attempt, text):
            raise LeaseLost(
                f"Task {self.name!r} [{self.id}] attempt {self.attempt}: the checkpoint was not "
                "written, because this attempt no longer holds the task (it was rescued as "
                "Dirty, re-run elsewhere or deleted); its outcome will be discarded too."
            )
        self._checkpoint = decode(text)

    def set_progress(self, done: float, total: float | None = None, message: str = "") -> None:
        """Record how far the task is: ``done`` of ``total`` (``None``: unknown), with a
        ``message`` for a person. Costs no round trip: the worker's next heartbeat writes
        the latest one (a second or so later). Read it with ``AsyncResult(id).progress``,
        ``aiotaskq status --json`` or the admin's Active view.

        Raises:
            InvalidProgress: ``done`` or ``total`` not a finite number >= 0, or ``message``
                not a str.
        """
        self._progress = check_progress(done, total, message)

    async def aset_progress(
        self, done: float, total: float | None = None, message: str = ""
    ) -> None:
        """The coroutine twin of :meth:`set_progress` (it does no I/O either)."""
        self.set_progress(done, total, message)

    def take_progress(self) -> str | None:
        """The progress set since the last call (JSON text), for the heartbeat; ``None``
        when there is none new."""
        progress, self._progress = self._progress, None
        if progress is None or isinstance(progress, str):
            return progress
        return progress_json(progress)

    def put_back_progress(self, progress: str) -> None:
        """A progress the heartbeat could not write: kept unless a newer one was set."""
        if self._progress is None:
            self._progress = progress
