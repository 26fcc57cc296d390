"""Waiting for tasks to end, without polling: one thread per process serves every waiter.

The thread runs an event loop of its own with two connections: one that LISTENs on
``aiotaskq/done`` and one for its statements. A waiter for a task:

1. is registered in ``aiotaskq_waiter`` (one row per task and process), so that the
   statement that ends the task (ack, succeed, fail) notifies ``aiotaskq/done`` with its id;
   tasks nobody waits for are never announced;
2. then has the task's row read, so that a task that ended before it registered is not
   missed: a row that is gone, failed or succeeded ends the wait at once; a row seen running
   is read once more ``FOR SHARE``, which waits for a statement that is ending it right then
   (its announcement may have looked at the waiters just before this one registered);
3. then waits for the notification, after which the row is read again (a retried task is
   queued again, not ended).

Every :data:`LOOK_EVERY` seconds the rows of all waited-for tasks are read once more, in one
statement: that ends the waits for tasks that ended without an announcement (deleted by hand,
revoked, expired, rescued into Failed) and covers a listening connection that was lost (the
thread reconnects, with a backoff, and registers its waiters again).

The thread starts with the first wait of a process, and again in a forked child.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import secrets
import socket
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg

from ..db import waiting
from ..db.waiting import Look
from ..errors import DatabaseError

__all__ = ["LOOK_EVERY", "Wait", "close", "hub"]

logger = logging.getLogger(__name__)

#: How often the rows of every waited-for task are read again, announcement or not.
LOOK_EVERY = 1.0
#: The longest pause between two tries to reconnect.
_BACKOFF_MAX = 5.0


@dataclass(eq=False, slots=True)
class Wait:
    """One waiter: resolved with the task's last :class:`Look`, or ``None`` when it has no
    row. ``on_queue`` is told the task's queue at the first look that finds it."""

    task_id: uuid.UUID
    future: concurrent.futures.Future[Look | None] = field(
        default_factory=concurrent.futures.Future
    )
    on_queue: Any = None


class _Hub:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.name = f"{socket.gethostname()}:{self.pid}:{secrets.token_hex(4)}"
        self._loop = asyncio.new_event_loop()
        self._waits: dict[uuid.UUID, list[Wait]] = {}
        self._new: set[uuid.UUID] = set()
        self._notified: set[uuid.UUID] = set()
        self._dropped: set[uuid.UUID] = set()
        self._kick = asyncio.Event()
        self._main: asyncio.Task[None]
        self._thread = threading.Thread(target=self._serve, name="aiotaskq-waiter", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._main = self._loop.create_task(self._run())
        with contextlib.suppress(asyncio.CancelledError):
            self._loop.run_until_complete(self._main)
        left = asyncio.all_tasks(self._loop)
        for task in left:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        for waits in self._waits.values():
            for wait in waits:
                wait.future.cancel()
        self._loop.close()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and close its connections; waits still open are cancelled."""
        self._call(lambda: self._main.cancel())
        self._thread.join(timeout)

    # --- the callers' side (any thread) --------------------------------------------------

    def add(self, wait: Wait) -> None:
        wait.future.add_done_callback(lambda _: self._call(self._cancelled, wait))
        self._call(self._add, wait)

    def _call(self, fn: Any, *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: the process exits
            self._loop.call_soon_threadsafe(fn, *args)

    # --- the hub's loop ----------------------------------------------------------------

    def _add(self, wait: Wait) -> None:
        if wait.future.done():
            return
        self._waits.setdefault(wait.task_id, []).append(wait)
        self._new.add(wait.task_id)
        self._kick.set()

    def _cancelled(self, wait: Wait) -> None:
        waits = self._waits.get(wait.task_id)
        if waits is None or wait not in waits:
            return
        waits.remove(wait)
        if not waits:
            del self._waits[wait.task_id]
            self._new.discard(wait.task_id)
            self._dropped.add(wait.task_id)
            self._kick.set()

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            try:
                await self._session()
            except (DatabaseError, psycopg.Error, OSError) as exc:
                logger.warning(
                    "waiter.reconnecting: waiting for tasks lost its connection (%s); "
                    "reconnecting in %.1f s",
                    exc,
                    backoff,
                )
            except Exception:
                # A defect: the waits must not hang on it; start again, as after an outage.
                logger.exception("waiter.failed: waiting for tasks starts again in %.1f s", backoff)
            else:
                backoff = 0.2
                continue
            await asyncio.sleep(backoff)
            backoff = min(_BACKOFF_MAX, backoff * 2)

    async def _session(self) -> None:
        listener = await waiting.connect(listen=True)
        try:
            conn = await waiting.connect(listen=False)
            try:
                # A new session: what an earlier one registered may be half gone.
                await waiting.unregister(conn, None, self.name)
                self._new |= set(self._waits)
                listening = asyncio.create_task(self._listen(listener))
                try:
                    await self._serve_waits(conn, listening)
                finally:
                    listening.cancel()
                    with contextlib.suppress(BaseException):
                        await listening
            finally:
                await conn.close()
        finally:
            await listener.close()

    async def _listen(self, listener: psycopg.AsyncConnection[Any]) -> None:
        async for notify in listener.notifies():
            with contextlib.suppress(ValueError):
                task_id = uuid.UUID(notify.payload)
                if task_id in self._waits:
                    self._notified.add(task_id)
                    self._kick.set()

    async def _serve_waits(
        self, conn: psycopg.AsyncConnection[Any], listening: asyncio.Task[None]
    ) -> None:
        loop = asyncio.get_running_loop()
        next_look = loop.time() + LOOK_EVERY
        while True:
            timeout = max(0.0, next_look - loop.time()) if self._waits else None
            kicked = asyncio.ensure_future(self._kick.wait())
            try:
                await asyncio.wait(
                    {kicked, listening}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                kicked.cancel()
            if listening.done():
                listening.result()  # raises what ended it
                raise DatabaseError("the listening connection closed")
            self._kick.clear()
            if self._dropped:
                dropped, self._dropped = list(self._dropped - set(self._waits)), set()
                if dropped:
                    await waiting.unregister(conn, dropped, self.name)
            if self._new:
                new, self._new = sorted(self._new), set()
                try:
                    await waiting.register(conn, new, self.name)
                except BaseException:
                    self._new |= set(new)
                    raise
                await self._look(conn, new, fresh=True)
            if self._notified:
                notified, self._notified = sorted(self._notified), set()
                await self._look(conn, notified)
            if self._waits and loop.time() >= next_look:
                await self._look(conn, sorted(self._waits))
            if loop.time() >= next_look:
                next_look = loop.time() + LOOK_EVERY

    async def _look(
        self, conn: psycopg.AsyncConnection[Any], ids: list[uuid.UUID], fresh: bool = False
    ) -> None:
        ids = [task_id for task_id in ids if task_id in self._waits]
        if not ids:
            return
        looks = await waiting.look(conn, ids)
        if fresh:
            running = [i for i in ids if i in looks and looks[i].state == "running"]
            if running:
                again = await waiting.look(conn, running, locked=True)
                for task_id in running:
                    if task_id in again:
                        looks[task_id] = again[task_id]
                    else:  # ended, or queued again, meanwhile: read once more
                        looks.pop(task_id, None)
                        extra = await waiting.look(conn, [task_id])
                        if task_id in extra:
                            looks[task_id] = extra[task_id]
        ended: list[uuid.UUID] = []
        for task_id in ids:
            seen = looks.get(task_id)
            waits = self._waits.get(task_id, [])
            if seen is not None and not seen.ended:
                for wait in waits:
                    if wait.on_queue is not None:
                        on_queue, wait.on_queue = wait.on_queue, None
                        with contextlib.suppress(Exception):
                            on_queue(seen.queue)
                continue
            ended.append(task_id)
            for wait in self._waits.pop(task_id, []):
                if not wait.future.done():
                    with contextlib.suppress(concurrent.futures.InvalidStateError):
                        wait.future.set_result(seen)
        if ended:
            await waiting.unregister(conn, ended, self.name)


_hub: _Hub | None = None
_hub_lock = threading.Lock()


def close() -> None:
    """Stop this process's waiting thread, if it runs (it starts again on the next wait)."""
    global _hub
    with _hub_lock:
        current, _hub = _hub, None
    if current is not None and current.pid == os.getpid():
        current.close()


def hub() -> _Hub:
    """This process's waiting thread, started on first use (and again after a fork)."""
    global _hub
    current = _hub
    if current is not None and current.pid == os.getpid():
        return current
    with _hub_lock:
        if _hub is None or _hub.pid != os.getpid():
            _hub = _Hub()
        return _hub
