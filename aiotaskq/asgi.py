"""A worker inside the ASGI server's process, on its event loop: no second process to run.

::

    # mysite/asgi.py
    from django.core.asgi import get_asgi_application

    import aiotaskq.asgi

    application = aiotaskq.asgi.with_worker(get_asgi_application(), concurrency=50)

The server must speak the ASGI lifespan protocol (uvicorn, hypercorn and granian do; with
uvicorn keep the default ``--lifespan auto`` or say ``--lifespan on``). At
``lifespan.startup`` a :class:`~aiotaskq.worker.Worker` starts on the server's loop; the
server starts serving once it is claiming. At ``lifespan.shutdown`` (sent by the server after
SIGTERM or Ctrl-C, once its HTTP connections are done) the worker stops the way ``aiotaskq
run`` does on SIGTERM: no more claims, the tasks in flight get ``grace`` seconds to finish,
then coroutines still running are cancelled and every unfinished row is put back to queued
(the attempt stays counted). Nothing is left ``running``. The server owns the signals: no
handler is installed here.

**Where it does not apply.** A server that never sends ``lifespan.shutdown`` gives the
worker no chance to drain: uvicorn skips it after a second Ctrl-C (``force quit``) that
comes before the shutdown began, and a SIGKILL skips everything. The loop's tasks are then
cancelled or simply gone, and the tasks in flight turn Dirty after ``DIRTY_AFTER``, as with
a killed ``aiotaskq run``. A second signal while the worker drains does not shorten
``grace`` (the server does not tell the application), so keep ``grace`` below the time your
process manager waits before it kills (gunicorn's ``--graceful-timeout``, Kubernetes'
``terminationGracePeriodSeconds``).

**One loop for both.** The worker's coroutine tasks run on the loop that serves requests: a
task that blocks the loop (CPU work, a blocking call) stalls the requests too, and the
worker logs ``loop.stalled`` naming it. Plain ``def`` tasks run in the worker's own thread
pool (``threads``). Worker startup imports every app's ``tasks`` module synchronously;
that happens before the server accepts connections.

**Connections, per server process.** Each process that runs the app runs a worker:
``1`` listening connection + ``WORKER_POOL_SIZE`` (3) + ``threads`` (8) for plain-function
tasks, plus this loop's async enqueue pool (``ENQUEUE_POOL_SIZE``, 10, used by ``adelay``
in views) and Django's own connections for requests; one more for a moment at startup. With
``uvicorn --workers 4`` (or four gunicorn workers) every figure is counted four times. Pass
``enabled=False`` where a process should not run a worker (``--reload`` during
development, or all but some processes) and run ``aiotaskq run`` elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    MutableMapping,
)
from dataclasses import dataclass
from typing import Any

from .conf import get_settings
from .db.connect import close_enqueue_pools, new_connection, translate_errors
from .errors import ConfigurationError
from .worker import Worker, WorkerConfig
from .worker.lanes import plan_lanes

__all__ = ["lifespan", "with_worker"]

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# How long the check at startup waits for the database to answer.
_CONNECT_TIMEOUT = 10


@dataclass(frozen=True, slots=True, kw_only=True)
class _Options:
    """What the caller asked for, checked at once. Each start makes its own
    :class:`WorkerConfig`: its ``worker_id`` names the process, which is not yet the one
    that serves when the app is built before a fork (``gunicorn --preload``)."""

    queues: tuple[str, ...]
    caps: Mapping[str, int]
    concurrency: int
    threads: int
    grace: float
    db_threads: int = 4

    @classmethod
    def of(
        cls,
        *,
        queues: Iterable[str],
        caps: Mapping[str, int] | None,
        concurrency: int,
        threads: int,
        grace: float,
        db_threads: int = 4,
    ) -> _Options:
        if isinstance(queues, str):
            raise ConfigurationError(
                f"queues must be a list of queue names, got the string {queues!r}."
            )
        if caps is not None and not isinstance(caps, Mapping):
            raise ConfigurationError(
                "caps must map queue names to how many of their tasks may run at once, "
                f'for example {{"exports": 2}}; got {type(caps).__name__}.'
            )
        options = cls(
            queues=tuple(queues),
            caps=dict(caps or {}),
            concurrency=concurrency,
            threads=threads,
            grace=grace,
            db_threads=db_threads,
        )
        # Raise ConfigurationError / InvalidQueueName / InvalidWorkerOptions now, not at
        # startup: the options themselves, then how the caps divide the concurrency.
        config = options.config()
        plan_lanes(config.queues or (get_settings().DEFAULT_QUEUE,), config.caps, concurrency)
        return options

    def config(self) -> WorkerConfig:
        return WorkerConfig(
            queues=self.queues,
            caps=self.caps,
            concurrency=self.concurrency,
            threads=self.threads,
            db_threads=self.db_threads,
            grace=self.grace,
        )


def lifespan(
    *,
    concurrency: int = 100,
    queues: Iterable[str] = (),
    caps: Mapping[str, int] | None = None,
    threads: int = 8,
    grace: float = 30.0,
    enabled: bool = True,
    db_threads: int = 4,
) -> contextlib.AbstractAsyncContextManager[Worker | None]:
    """Run a worker on the running loop for the duration of an ``async with`` block.

    For a lifespan of your own (Starlette, or Django Ninja mounted beside Django)::

        @contextlib.asynccontextmanager
        async def app_lifespan(app):
            async with aiotaskq.asgi.lifespan(concurrency=50):
                yield

    Entering checks that the database answers, starts the worker and returns it once it is
    claiming (``None`` with ``enabled=False``). Leaving stops it: in-flight tasks get
    ``grace`` seconds, then the rest is given back (see the module docstring); then the
    loop's async enqueue pool is closed (also with ``enabled=False``). The options mean what
    ``aiotaskq run`` options of the same names mean; ``caps`` are the numbers of ``--queues
    critical:10,exports:2,default`` (``queues=["critical", "exports", "default"],
    caps={"critical": 10, "exports": 2}``), over ``AIOTASKQ["QUEUES"]``.

    Raises (on entering):
        ConfigurationError, InvalidQueueName: a bad option (also raised by the call itself);
            ``InvalidWorkerOptions`` for caps that do not fit the concurrency or name a
            queue the worker does not serve.
        DatabaseError: the database cannot be reached; libpq's reason is in the message.
        Exception: whatever the worker's start raised, for example the ``ImportError`` of
            a ``tasks`` module.

    Cancellation: cancelling the block's task while the worker drains gives the tasks in
    flight back at once (as a second SIGTERM would) and waits for that before the
    cancellation goes on. If the worker's own task is cancelled too (the loop is being torn
    down), the tasks in flight stay ``running`` and turn Dirty.
    """
    options = _Options.of(
        queues=queues,
        caps=caps,
        concurrency=concurrency,
        threads=threads,
        grace=grace,
        db_threads=db_threads,
    )
    return _lifespan(options, enabled)


@contextlib.asynccontextmanager
async def _lifespan(options: _Options, enabled: bool) -> AsyncIterator[Worker | None]:
    try:
        if not enabled:
            yield None
            return
        await _check_database()
        running = await _Running.start(Worker(options.config()))
        try:
            yield running.worker
        finally:
            await running.stop()
    finally:
        await close_enqueue_pools()


async def _check_database() -> None:
    # Without this, a worker that cannot connect retries for 30 s and then reports only a
    # timeout; here the start fails at once, with libpq's reason (refused, bad password...).
    with translate_errors("Connecting to the database"):
        conn = await new_connection(connect_timeout=_CONNECT_TIMEOUT)
        await conn.close()


class _Running:
    """A worker's ``run()`` as a task of the current loop."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        # Started eagerly: run() creates ``worker.ready`` in its first step, before it first
        # waits, so ``ready`` exists once this returns (unless run() already failed).
        self.task: asyncio.Task[None] = asyncio.eager_task_factory(
            asyncio.get_running_loop(), worker.run(), name="aiotaskq-asgi-worker"
        )
        self.stopping = False
        self.task.add_done_callback(self._exited)

    @classmethod
    async def start(cls, worker: Worker) -> _Running:
        """Start ``worker`` and return once it claims; raise what its start raised."""
        running = cls(worker)
        try:
            await running._until_ready()
        except BaseException:
            # Cancelled while starting, or failed: nothing may keep running.
            running.stopping = True
            if running._ready():
                worker.stop()
                worker.stop()  # claimed tasks, if any, are given back at once
            else:
                running.task.cancel()
            await asyncio.gather(running.task, return_exceptions=True)
            raise
        return running

    def _ready(self) -> bool:
        return self.worker.ready is not None and self.worker.ready.is_set()

    async def _until_ready(self) -> None:
        if not self.task.done():
            if self.worker.ready is None:
                raise RuntimeError("Worker.run() did not create Worker.ready in its first step.")
            ready = asyncio.ensure_future(self.worker.ready.wait())
            try:
                await asyncio.wait({self.task, ready}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                ready.cancel()
        if self._ready():
            return
        if self.task.cancelled():
            raise asyncio.CancelledError("the worker's task was cancelled while it started")
        if (exc := self.task.exception()) is not None:
            raise exc
        raise ConfigurationError("The worker returned before it started.")

    def _exited(self, task: asyncio.Task[None]) -> None:
        if self.stopping or task.cancelled() or task.exception() is None:
            return
        logger.error(
            "asgi.worker_failed: the worker stopped by itself; the web app goes on without it",
            exc_info=task.exception(),
            extra={"worker_id": self.worker.id},
        )

    async def stop(self) -> None:
        """Stop the worker (drain within grace, then give back); raise what ``run()`` raised."""
        self.stopping = True
        self.worker.stop()
        try:
            await asyncio.shield(self.task)
        except asyncio.CancelledError:
            if self.task.done():
                raise
            # Cancelled while draining: skip the rest of the grace period so that the tasks
            # in flight are put back, and wait for that (the worker bounds it) before going on.
            self.worker.stop()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(self.task)
            raise


def with_worker(
    # Any ASGI callable: Django's handler, typed with plain dicts, included.
    app: Callable[[Any, Any, Any], Awaitable[None]],
    *,
    concurrency: int = 100,
    queues: Iterable[str] = (),
    caps: Mapping[str, int] | None = None,
    threads: int = 8,
    grace: float = 30.0,
    enabled: bool = True,
    db_threads: int = 4,
) -> ASGIApp:
    """Wrap the ASGI ``app`` (usually ``get_asgi_application()``) so that the server's
    lifespan runs a worker; see :func:`lifespan` and the module docstring.

    ``http`` and ``websocket`` scopes go to ``app`` untouched. ``lifespan`` is answered
    here and never reaches ``app`` (Django's handler refuses it); an app with a lifespan of
    its own should use :func:`lifespan` inside it instead. A worker that cannot start
    answers ``lifespan.startup.failed`` with the reason, and the server exits. With
    ``enabled=False`` the lifespan completes without a worker. Lanes as with ``aiotaskq
    run --queues critical:10,exports:2,default``::

        application = aiotaskq.asgi.with_worker(
            get_asgi_application(),
            concurrency=50,
            queues=["critical", "exports", "default"],
            caps={"critical": 10, "exports": 2},
        )

    Raises:
        ConfigurationError, InvalidQueueName: a bad option, at once (``InvalidWorkerOptions``
            for caps that do not fit the concurrency or name a queue not served).
    """
    options = _Options.of(
        queues=queues,
        caps=caps,
        concurrency=concurrency,
        threads=threads,
        grace=grace,
        db_threads=db_threads,
    )

    async def application(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _serve_lifespan(options, enabled, receive, send)
        else:
            await app(scope, receive, send)

    return application


async def _serve_lifespan(options: _Options, enabled: bool, receive: Receive, send: Send) -> None:
    message = await receive()
    if message["type"] != "lifespan.startup":
        raise RuntimeError(f"Expected lifespan.startup, got {message['type']!r}.")
    async with contextlib.AsyncExitStack() as stack:
        try:
            await stack.enter_async_context(_lifespan(options, enabled))
        except Exception as exc:
            reason = f"aiotaskq: the worker did not start: {type(exc).__name__}: {exc}"
            logger.exception("asgi.startup_failed: %s", reason)
            await send({"type": "lifespan.startup.failed", "message": reason})
            return
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        if message["type"] != "lifespan.shutdown":
            raise RuntimeError(f"Expected lifespan.shutdown, got {message['type']!r}.")
        try:
            await stack.aclose()
        except Exception as exc:
            reason = f"aiotaskq: the worker stopped with an error: {type(exc).__name__}: {exc}"
            logger.exception("asgi.shutdown_failed: %s", reason)
            await send({"type": "lifespan.shutdown.failed", "message": reason})
            return
    await send({"type": "lifespan.shutdown.complete"})
