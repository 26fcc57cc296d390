"""``@task`` and what it returns: a callable :class:`Task` with Celery's enqueue methods and
their ``a``-prefixed async twins, and :class:`Signature` for a call prepared in advance."""

from __future__ import annotations

import datetime as dt
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, ParamSpec, TypeVar, overload

from ..conf import get_settings
from ..db import enqueue as db_enqueue
from .enqueue import Expires, aenqueue_many, build_row, enqueue_many, validate_queue
from .registry import register
from .result import AsyncResult

__all__ = ["Signature", "Task", "shared_task", "task"]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """Enqueue options; ``None`` means "the task's default"."""

    countdown: float | None = None
    eta: dt.datetime | None = None
    expires: Expires = None
    queue: str | None = None
    priority: int | None = None


class Task(Generic[P, R]):
    """A registered task. Calling it calls the function; ``delay`` and friends enqueue it.

    Sync methods (``delay``, ``apply_async``) write through Django's connection and so join
    the caller's ``transaction.atomic()``. Async ones (``adelay``, ``aapply_async``) write in
    their own autocommit statement on a psycopg pool, without a thread hop.
    """

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int = 0,
        expires: Expires = None,
    ) -> None:
        self.fn = fn
        self.name: str = name or f"{fn.__module__}.{fn.__qualname__}"
        if queue is not None:
            validate_queue(queue)
        self._queue = queue
        self.priority = priority
        self.expires = expires
        self.is_async: bool = inspect.iscoroutinefunction(fn)
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", self.name)
        self.__qualname__ = getattr(fn, "__qualname__", self.name)
        self.__module__ = fn.__module__
        self.__wrapped__ = fn
        register(self)

    @property
    def queue(self) -> str:
        """The task's queue: its own, else ``AIOTASKQ["DEFAULT_QUEUE"]``."""
        return self._queue or get_settings().DEFAULT_QUEUE

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.queue!r}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def s(self, *args: P.args, **kwargs: P.kwargs) -> Signature[P, R]:
        """A signature: this call, to be enqueued later (``.delay()``, ``.apply_async(...)``)."""
        return Signature(task=self, args=tuple(args), kwargs=dict(kwargs))

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult:
        """Enqueue ``self(*args, **kwargs)`` with the task's defaults (joins ``atomic()``)."""
        return self.s(*args, **kwargs).apply_async()

    async def adelay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult:
        """The async twin of :meth:`delay`: committed when it returns."""
        return await self.s(*args, **kwargs).aapply_async()

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: dt.datetime | None = None,
        expires: Expires = None,
        queue: str | None = None,
        priority: int | None = None,
    ) -> AsyncResult:
        """Enqueue with options, Celery-style.

        Args:
            countdown: seconds from now (by the database clock) before it may run.
            eta: the earliest time it may run (aware datetime when ``USE_TZ``).
            expires: a datetime, or seconds from now, after which it is dropped unrun.
            queue: overrides the task's queue. priority: higher runs first.

        Raises:
            EnqueueError: a subclass naming the bad input; nothing is written.
        """
        options = Options(
            countdown=countdown, eta=eta, expires=expires, queue=queue, priority=priority
        )
        return Signature(
            task=self, args=tuple(args or ()), kwargs=dict(kwargs or {}), options=options
        ).apply_async()

    async def aapply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: dt.datetime | None = None,
        expires: Expires = None,
        queue: str | None = None,
        priority: int | None = None,
    ) -> AsyncResult:
        """The async twin of :meth:`apply_async`."""
        options = Options(
            countdown=countdown, eta=eta, expires=expires, queue=queue, priority=priority
        )
        return await Signature(
            task=self, args=tuple(args or ()), kwargs=dict(kwargs or {}), options=options
        ).aapply_async()


@dataclass(frozen=True, slots=True, kw_only=True)
class Signature(Generic[P, R]):
    """A task with its arguments (and options), enqueued by ``apply_async`` and friends or
    together with others by :func:`aiotaskq.enqueue_many`."""

    task: Task[P, R]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: Options = field(default_factory=Options)

    def set(self, **options: Any) -> Signature[P, R]:
        """A copy with these enqueue options (``countdown``, ``eta``, ``expires``, ``queue``,
        ``priority``)."""
        return replace(self, options=replace(self.options, **options))

    def build_row(self) -> db_enqueue.TaskRow:
        """Validate and encode this call (no I/O)."""
        o, t = self.options, self.task
        return build_row(
            t.name,
            self.args,
            self.kwargs,
            queue=o.queue if o.queue is not None else t.queue,
            priority=o.priority if o.priority is not None else t.priority,
            countdown=o.countdown,
            eta=o.eta,
            expires=o.expires if o.expires is not None else t.expires,
        )

    def apply_async(self, **options: Any) -> AsyncResult:
        """Enqueue this call, with ``options`` over the signature's (joins ``atomic()``)."""
        sig = self.set(**options) if options else self
        return enqueue_many([sig])[0]

    async def aapply_async(self, **options: Any) -> AsyncResult:
        """The async twin of :meth:`apply_async`."""
        sig = self.set(**options) if options else self
        return (await aenqueue_many([sig]))[0]

    def delay(self) -> AsyncResult:
        """Enqueue this call as it is."""
        return self.apply_async()

    async def adelay(self) -> AsyncResult:
        """The async twin of :meth:`delay`."""
        return await self.aapply_async()


@overload
def task(fn: Callable[P, R], /) -> Task[P, R]: ...


@overload
def task(
    *,
    name: str | None = None,
    queue: str | None = None,
    priority: int = 0,
    expires: Expires = None,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    queue: str | None = None,
    priority: int = 0,
    expires: Expires = None,
) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
    """Register ``fn`` (an ``async def`` or a plain ``def``) as a task.

    Use bare (``@task``) or with options (``@task(queue="webhooks", priority=5)``). A plain
    function runs in the worker's bounded thread pool; a coroutine function on its loop.

    Raises:
        InvalidQueueName: the queue name is not valid.
        ConfigurationError: another function is registered under the same name.
    """

    def decorate(f: Callable[P, R]) -> Task[P, R]:
        return Task(f, name=name, queue=queue, priority=priority, expires=expires)

    return decorate(fn) if fn is not None else decorate


#: Celery's name for :func:`task`; the same object.
shared_task = task
