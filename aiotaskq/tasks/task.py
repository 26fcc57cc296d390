"""``@task`` and what it returns: a callable :class:`Task` with Celery's enqueue methods and
their ``a``-prefixed async twins, and :class:`Signature` for a call prepared in advance."""

from __future__ import annotations

import datetime as dt
import inspect
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Literal, ParamSpec, TypeVar, overload

from asgiref.sync import sync_to_async

from ..conf import get_settings
from ..db import enqueue as db_enqueue
from ..errors import ConfigurationError, InvalidLimitKey
from ..retry import DEFAULT_MAX_RETRIES, RetryPolicy
from .enqueue import Expires, aenqueue_many, build_row, enqueue_many, validate_queue
from .fit import Fit, check_containers
from .limits import KeyFunction, Limits, call_key
from .registry import register
from .result import AsyncResult
from .unique import ON_CONFLICT, OnConflict
from .unique import key as unique_key_of

__all__ = ["Attempt", "Signature", "Task", "shared_task", "task"]

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
    time_limit: float | None = None
    unique_key: str | None = None
    on_conflict: OnConflict | None = None
    limit_key: str | None = None


OnDirty = Literal["keep", "retry"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """The attempt being run, handed as the first argument to a task that asks for it
    (``wants_attempt``; Django's tasks framework builds its ``TaskContext`` from it)."""

    task_id: uuid.UUID
    number: int
    worker_id: str


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
        time_limit: float | None = None,
        on_dirty: OnDirty = "keep",
        policy: RetryPolicy | None = None,
        result_retention: float | None = None,
        wants_attempt: bool = False,
        unique: bool = False,
        on_conflict: OnConflict = "ignore",
        limit_key: KeyFunction | None = None,
        max_concurrent: int | None = None,
        rate_limit: str | None = None,
        rate_burst: int | None = None,
    ) -> None:
        self.fn = fn
        self.name: str = name or f"{fn.__module__}.{fn.__qualname__}"
        if queue is not None:
            validate_queue(queue)
        if on_dirty not in ("keep", "retry"):
            raise ConfigurationError(
                f'on_dirty must be "keep" (leave Dirty tasks for a person) or "retry" (rerun '
                f"them: only for idempotent tasks), got {on_dirty!r}."
            )
        if time_limit is not None and (
            not isinstance(time_limit, int | float)
            or isinstance(time_limit, bool)
            or time_limit <= 0
        ):
            raise ConfigurationError(
                f"time_limit must be a positive number of seconds, got {time_limit!r}."
            )
        if not isinstance(unique, bool):
            raise ConfigurationError(
                f"unique must be True (a key made of the task's name and its arguments) or "
                f"False, got {unique!r}; a key of your own goes to apply_async(unique_key=...)."
            )
        self._queue = queue
        #: Calls take a key made of their arguments (``@task(unique=True)``).
        self.unique = unique
        #: What a call with a key does when a live task holds it: "ignore" or "replace".
        if on_conflict not in ON_CONFLICT or not isinstance(on_conflict, str):
            raise ConfigurationError(
                f'on_conflict must be "ignore" (a call whose key a live task holds writes '
                f'nothing) or "replace" (the queued holder takes the call\'s arguments and run '
                f"time), got {on_conflict!r}."
            )
        self.on_conflict: OnConflict = on_conflict
        #: Limits per key across every worker (docs/limits.md), or None.
        self.limits = Limits.build(
            self.name,
            limit_key=limit_key,
            max_concurrent=max_concurrent,
            rate_limit=rate_limit,
            rate_burst=rate_burst,
        )
        #: The function of a call's arguments that gives its limit key.
        self.limit_key_of = limit_key
        self.priority = priority
        self.expires = expires
        #: Seconds an attempt of a coroutine task may run before it is cancelled.
        self.time_limit = time_limit
        #: What becomes of a Dirty task of this name: kept for a person, or rerun.
        self.on_dirty: OnDirty = on_dirty
        self.policy: RetryPolicy = policy or RetryPolicy()
        #: Seconds a successful result is kept (``None``: the row is deleted on success).
        self.result_retention = result_retention
        #: The function takes an :class:`Attempt` before its own arguments.
        self.wants_attempt = wants_attempt
        #: The function's parameters, to check a call's arguments against at enqueue.
        self.fit = Fit(fn, lead=1 if wants_attempt else 0)
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
        time_limit: float | None = None,
        unique_key: str | None = None,
        on_conflict: OnConflict | None = None,
        limit_key: str | None = None,
    ) -> AsyncResult:
        """Enqueue with options, Celery-style.

        Args:
            countdown: seconds from now (by the database clock) before it may run.
            eta: the earliest time it may run (aware datetime when ``USE_TZ``).
            expires: a datetime, or seconds from now, after which it is dropped unrun.
            queue: overrides the task's queue. priority: higher runs first.
            time_limit: overrides the task's time limit for this call (seconds).
            unique_key: while a task of this name holds this key (queued, or running), write
                nothing and return that task's result (docs/unique.md).
            on_conflict: with a key: "ignore" (the default, or the task's), or "replace":
                the queued holder takes this call's arguments and run time (debounce).
            limit_key: this call's key for the task's limits, over the task's ``limit_key``
                function (docs/limits.md).

        Raises:
            EnqueueError: a subclass naming the bad input; nothing is written.
        """
        options = Options(
            countdown=countdown,
            eta=eta,
            expires=expires,
            queue=queue,
            priority=priority,
            time_limit=time_limit,
            unique_key=unique_key,
            on_conflict=on_conflict,
            limit_key=limit_key,
        )
        args, kwargs = check_containers(self.name, args, kwargs)
        return Signature(task=self, args=args, kwargs=kwargs, options=options).apply_async()

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
        time_limit: float | None = None,
        unique_key: str | None = None,
        on_conflict: OnConflict | None = None,
        limit_key: str | None = None,
        transaction: bool = False,
    ) -> AsyncResult:
        """The async twin of :meth:`apply_async`.

        By default the task is written in its own autocommit statement: committed when this
        returns. With ``transaction=True`` it is written on Django's connection instead (in
        asgiref's thread-sensitive thread, where ``sync_to_async`` code runs), so it commits
        or rolls back with an ``atomic()`` block that code holds.
        """
        options = Options(
            countdown=countdown,
            eta=eta,
            expires=expires,
            queue=queue,
            priority=priority,
            time_limit=time_limit,
            unique_key=unique_key,
            on_conflict=on_conflict,
            limit_key=limit_key,
        )
        args, kwargs = check_containers(self.name, args, kwargs)
        signature = Signature(task=self, args=args, kwargs=kwargs, options=options)
        if transaction:
            return await sync_to_async(signature.apply_async, thread_sensitive=True)()
        return await signature.aapply_async()


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
        ``priority``, ``time_limit``, ``unique_key``, ``on_conflict``, ``limit_key``)."""
        return replace(self, options=replace(self.options, **options))

    def build_row(
        self, *, id: uuid.UUID | None = None, max_bytes: int | None = None
    ) -> db_enqueue.TaskRow:
        """Validate and encode this call (no I/O); see :func:`~.enqueue.build_row`.

        Raises:
            EnqueueError: a subclass naming the bad input, among them
                :class:`~aiotaskq.errors.ArgumentsDoNotFit` when the task's function cannot
                take these arguments.
        """
        o, t, args, kwargs = self.options, self.task, self.args, self.kwargs
        if type(args) is not tuple or type(kwargs) is not dict:
            args, kwargs = check_containers(t.name, args, kwargs)
        t.fit.check(t.name, args, kwargs)
        row = build_row(
            t.name,
            args,
            kwargs,
            queue=o.queue if o.queue is not None else t.queue,
            priority=o.priority if o.priority is not None else t.priority,
            countdown=o.countdown,
            eta=o.eta,
            expires=o.expires if o.expires is not None else t.expires,
            time_limit=o.time_limit,
            id=id,
            max_bytes=max_bytes,
        )
        if t.limits is not None:
            row.limit_key = call_key(t.name, t.limit_key_of, o.limit_key, args, kwargs)
        elif o.limit_key is not None:
            raise InvalidLimitKey(
                f"Task {t.name!r}: limit_key={o.limit_key!r} names the key of the task's "
                "limits, but it has none: declare @task(max_concurrent=N) and/or "
                "@task(rate_limit='N/s'). Nothing was written."
            )
        if o.unique_key is not None or o.on_conflict is not None or t.unique:
            unique_key_of(
                row,
                fit=t.fit,
                given=o.unique_key,
                unique=t.unique,
                on_conflict=o.on_conflict,
                default_on_conflict=t.on_conflict,
                dirty_keeps=t.on_dirty == "keep",
            )
        return row

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
    time_limit: float | None = None,
    autoretry_for: tuple[type[BaseException], ...] = (),
    dont_autoretry_for: tuple[type[BaseException], ...] = (),
    max_retries: int | None = DEFAULT_MAX_RETRIES,
    retry_kwargs: dict[str, Any] | None = None,
    retry_backoff: bool | float = False,
    retry_backoff_max: float = 600.0,
    retry_jitter: bool = True,
    on_dirty: OnDirty = "keep",
    keep_result: float | None = None,
    unique: bool = False,
    on_conflict: OnConflict = "ignore",
    limit_key: KeyFunction | None = None,
    max_concurrent: int | None = None,
    rate_limit: str | None = None,
    rate_burst: int | None = None,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    queue: str | None = None,
    priority: int = 0,
    expires: Expires = None,
    time_limit: float | None = None,
    autoretry_for: tuple[type[BaseException], ...] = (),
    dont_autoretry_for: tuple[type[BaseException], ...] = (),
    max_retries: int | None = DEFAULT_MAX_RETRIES,
    retry_kwargs: dict[str, Any] | None = None,
    retry_backoff: bool | float = False,
    retry_backoff_max: float = 600.0,
    retry_jitter: bool = True,
    on_dirty: OnDirty = "keep",
    keep_result: float | None = None,
    unique: bool = False,
    on_conflict: OnConflict = "ignore",
    limit_key: KeyFunction | None = None,
    max_concurrent: int | None = None,
    rate_limit: str | None = None,
    rate_burst: int | None = None,
) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
    """Register ``fn`` (an ``async def`` or a plain ``def``) as a task.

    Use bare (``@task``) or with options (``@task(queue="webhooks", priority=5)``). A plain
    function runs in the worker's bounded thread pool; a coroutine function on its loop.

    Retries follow Celery: ``autoretry_for`` / ``dont_autoretry_for`` exception types,
    ``max_retries`` (3; ``None`` for no limit), ``retry_kwargs`` (``max_retries``,
    ``countdown``; the default delay is 180 s), ``retry_backoff`` (``True`` or a base in
    seconds, doubled at each retry, capped by ``retry_backoff_max``), ``retry_jitter``
    (a delay drawn from [0, delay]). ``time_limit`` cancels a coroutine attempt after that
    many seconds (a plain function cannot be interrupted: it is reported instead).
    ``on_dirty="retry"`` reruns Dirty tasks of this name (only for idempotent tasks).
    ``keep_result=SECONDS`` keeps a successful attempt's return value (JSON) that long, as
    ``succeeded``, for ``AsyncResult.get()`` and the admin; by default the row is deleted.
    ``unique=True`` gives every call a key made of its arguments: while a task of this name
    and these arguments is queued or running, another call writes nothing and returns it
    (``on_conflict="replace"``: the queued one takes the call's run time instead); see
    docs/unique.md. ``max_concurrent=N`` and ``rate_limit="N/s"`` (or ``/m``, ``/h``; a
    bucket of ``rate_burst`` tokens, by default the per-second rate) limit the tasks of one
    key across every worker; ``limit_key`` is a function of the call's arguments that gives
    the key (``None`` from it: no limit for that call), else every call shares one; see
    docs/limits.md.

    Raises:
        InvalidQueueName: the queue name is not valid.
        ConfigurationError: another function is registered under the same name, or an
            option is invalid (``TypeError``/``ValueError`` for the retry options).
    """
    policy = RetryPolicy.build(
        autoretry_for=autoretry_for,
        dont_autoretry_for=dont_autoretry_for,
        max_retries=max_retries,
        retry_kwargs=retry_kwargs,
        retry_backoff=retry_backoff,
        retry_backoff_max=retry_backoff_max,
        retry_jitter=retry_jitter,
    )

    if keep_result is not None and (
        isinstance(keep_result, bool)
        or not isinstance(keep_result, int | float)
        or not 0 < keep_result < float("inf")
    ):
        raise ConfigurationError(
            f"keep_result must be a positive number of seconds to keep the result, got "
            f"{keep_result!r}."
        )

    def decorate(f: Callable[P, R]) -> Task[P, R]:
        return Task(
            f,
            name=name,
            queue=queue,
            priority=priority,
            expires=expires,
            time_limit=time_limit,
            on_dirty=on_dirty,
            policy=policy,
            result_retention=None if keep_result is None else float(keep_result),
            unique=unique,
            on_conflict=on_conflict,
            limit_key=limit_key,
            max_concurrent=max_concurrent,
            rate_limit=rate_limit,
            rate_burst=rate_burst,
        )

    return decorate(fn) if fn is not None else decorate


#: Celery's name for :func:`task`; the same object.
shared_task = task
