"""The threads that run the ORM calls of coroutine tasks.

Django's async ORM (``await Model.objects.aget(...)``) runs each call in a thread through
``sync_to_async(thread_sensitive=True)``. Left alone, every task of the worker would share
asgiref's one thread: one connection, one query at a time. Instead the worker keeps a fixed
number (``--db-threads``) of single-thread executors, and each coroutine task enters a
``ThreadSensitiveContext`` bound to the least loaded one for its whole run. So:

- at most ``--db-threads`` Django connections serve any number of coroutine tasks;
- all the ORM calls of one task go to one thread, hence one connection (a
  ``transaction.atomic()`` inside a ``sync_to_async`` block behaves);
- tasks that share a thread take turns for their ORM calls (never for anything else).

More threads mean more concurrent queries and more connections; fewer, the reverse. The
default, 4, suits tasks that mostly wait on the network and touch the database briefly.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import SyncToAsync, ThreadSensitiveContext
from django.db import close_old_connections, connections

__all__ = ["DatabaseThreads"]

logger = logging.getLogger(__name__)


class DatabaseThreads:
    """A fixed set of ORM threads handed out to running coroutine tasks."""

    def __init__(self, size: int) -> None:
        self._executors = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"aiotaskq-db-{i}")
            for i in range(size)
        ]
        self._load = [0] * size
        self._repairs: set[asyncio.Future[None]] = set()
        # One long-lived context per thread, its executor registered once. Binding a task is
        # then one ContextVar.set in the task's own context (asyncio gives every task a
        # copy), about 0.2 us, where entering a ThreadSensitiveContext costs about 10 us.
        self._contexts: list[ThreadSensitiveContext] | None = None
        if _FAST_BINDING:
            self._contexts = [ThreadSensitiveContext() for _ in range(size)]
            for ctx, executor in zip(self._contexts, self._executors, strict=True):
                SyncToAsync.context_to_thread_executor[ctx] = executor

    @property
    def size(self) -> int:
        return len(self._executors)

    def acquire(self) -> int:
        """The slot of the least loaded thread, for one task's whole run."""
        slot = min(range(len(self._load)), key=self._load.__getitem__)
        self._load[slot] += 1
        return slot

    def release(self, slot: int) -> None:
        self._load[slot] -= 1

    def bind(self, slot: int) -> ThreadSensitiveContext | None:
        """Send the current task's thread-sensitive calls (the async ORM's) to ``slot``.

        Only for the body of an asyncio task that ends with the job (the worker's job): the
        fast path sets the task's own context variable, returns ``None`` and leaves it set.
        The fallback returns a context for the caller to enter around the job.
        """
        if self._contexts is None:
            return ThreadSensitiveContext(executor=self._executors[slot])
        SyncToAsync.thread_sensitive_context.set(self._contexts[slot])
        return None

    def repair(self, slot: int) -> None:
        """After a database error in ``slot``'s thread, do there what Django does at the end
        of a request, so a connection the server cut is replaced before the next task uses
        it. Fire and forget: queued behind that thread's current call."""
        future = asyncio.get_running_loop().run_in_executor(
            self._executors[slot], close_old_connections
        )
        self._repairs.add(future)
        future.add_done_callback(self._repairs.discard)

    async def tidy(self) -> None:
        """Django's connection hygiene in every thread (``CONN_MAX_AGE``, broken
        connections), between two ORM calls: called periodically by the worker."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(ex, close_old_connections) for ex in self._executors)
        )

    async def close(self) -> None:
        """Close each thread's Django connections and stop the threads."""
        loop = asyncio.get_running_loop()
        for executor in self._executors:
            try:
                await asyncio.wait_for(
                    loop.run_in_executor(executor, connections.close_all), timeout=5
                )
            except TimeoutError:
                logger.warning("worker.db_thread_busy: an ORM call is still running at exit")
            executor.shutdown(wait=False, cancel_futures=True)
        if self._contexts is not None:
            for ctx in self._contexts:
                SyncToAsync.context_to_thread_executor.pop(ctx, None)


# asgiref keeps the per-context executors in these two class attributes (since 3.3); the
# public ThreadSensitiveContext(executor=...) path is the fallback should they ever change.
_FAST_BINDING = hasattr(SyncToAsync, "thread_sensitive_context") and hasattr(
    SyncToAsync, "context_to_thread_executor"
)
