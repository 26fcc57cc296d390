"""Helpers for your own test suite: drain the queue with a real worker, in-process, or keep
one running in the background.

The worker uses its own connections, so it sees only committed tasks: use them from tests
that commit (Django's ``TransactionTestCase``, or pytest-django's ``transaction=True``), not
from inside ``TestCase``'s wrapping transaction. For tests that need no worker at all,
``AIOTASKQ = {"ALWAYS_EAGER": True}`` runs tasks in the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence

from .worker import Worker, WorkerConfig

__all__ = ["abackground_worker", "arun_until_empty", "background_worker", "run_until_empty"]


def _config(
    queues: Sequence[str] | None, concurrency: int, threads: int, burst: bool
) -> WorkerConfig:
    return WorkerConfig(
        queues=tuple(queues or ()),
        concurrency=concurrency,
        threads=threads,
        burst=burst,
        grace=5.0,
    )


async def arun_until_empty(
    queues: Sequence[str] | None = None, *, concurrency: int = 100, threads: int = 4
) -> None:
    """Run every due task of ``queues`` (and what they enqueue, while due) and return once
    none is due and none is running. Tasks scheduled for later stay queued."""
    await Worker(_config(queues, concurrency, threads, burst=True)).run()


def run_until_empty(
    queues: Sequence[str] | None = None, *, concurrency: int = 100, threads: int = 4
) -> None:
    """The sync twin of :func:`arun_until_empty` (not from inside a running event loop)."""
    asyncio.run(arun_until_empty(queues, concurrency=concurrency, threads=threads))


@contextlib.asynccontextmanager
async def abackground_worker(
    queues: Sequence[str] | None = None, *, concurrency: int = 100, threads: int = 4
) -> AsyncIterator[Worker]:
    """A worker on the running loop for the duration of the block; stopped (gracefully) at
    its end. Raises what the worker raised if it could not start."""
    worker = Worker(_config(queues, concurrency, threads, burst=False))
    run = asyncio.create_task(worker.run())
    while worker.ready is None or not worker.ready.is_set():
        if run.done():
            run.result()  # raises the reason it stopped
            raise RuntimeError("the worker stopped before it was ready")
        await asyncio.sleep(0.01)
    try:
        yield worker
    finally:
        worker.stop()
        await run


@contextlib.contextmanager
def background_worker(
    queues: Sequence[str] | None = None,
    *,
    concurrency: int = 100,
    threads: int = 4,
    start_timeout: float = 30.0,
) -> Iterator[Worker]:
    """A worker in a thread with its own event loop for the duration of the block."""
    worker = Worker(_config(queues, concurrency, threads, burst=False))
    loop = asyncio.new_event_loop()
    failure: list[BaseException] = []

    def target() -> None:
        try:
            loop.run_until_complete(worker.run())
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=target, name="aiotaskq-test-worker", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while worker.ready is None or not worker.ready.is_set():
        if failure:
            raise failure[0]
        if time.monotonic() > deadline:
            raise TimeoutError(f"the background worker did not start in {start_timeout} s")
        time.sleep(0.01)
    try:
        yield worker
    finally:
        loop.call_soon_threadsafe(worker.stop)
        thread.join(timeout=30)
        if failure:
            raise failure[0]
