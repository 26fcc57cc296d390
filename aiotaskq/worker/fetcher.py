"""Claiming: wake on a notification, the next ETA or the safety poll; claim as many due tasks
as there are free slots, in one statement."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from ..db.claim import claim, next_eta
from ..db.connect import WorkerDatabase
from ..errors import DatabaseError, DatabaseUnreachable
from .events import first_of
from .executor import Executor

__all__ = ["Fetcher"]

logger = logging.getLogger(__name__)

_BACKOFF_MAX = 2.0


class Fetcher:
    def __init__(
        self,
        db: WorkerDatabase,
        executor: Executor,
        *,
        queues: list[str],
        worker_id: str,
        wake: asyncio.Event,
        stopping: asyncio.Event,
        poll_interval: float,
        batch: int,
        burst: bool,
    ) -> None:
        self._db = db
        self._executor = executor
        self._queues = queues
        self._worker_id = worker_id
        self._wake = wake
        self._stopping = stopping
        self._poll = poll_interval
        self._batch = batch
        self._burst = burst
        # With more due tasks waiting, claim again once this many slots are free: a few, so
        # a batch is worth a round trip, but not so many that slots sit idle.
        self._refill = max(1, min(10, executor.capacity // 20))

    async def run(self) -> None:
        """Claim until ``stopping`` is set (or, in burst mode, until nothing is due and
        nothing runs). A claim that fails is tried again after a short capped backoff (2 s
        at most), or, while the database is unreachable, the moment it answers again."""
        more = True  # Claim at once on start: tasks may be waiting.
        backoff = 0.1
        due_in: float | None = None
        while not self._stopping.is_set():
            if more:
                await self._wait(self._executor.wait_for_slots(self._refill), None)
            else:
                if self._burst:
                    if not self._executor.jobs:
                        return
                    await self._wait(self._executor.wait_empty(), None)
                    more = True
                    continue
                timeout = self._poll if due_in is None else max(0.0, min(self._poll, due_in))
                await self._wait(self._wake.wait(), timeout)
            if self._stopping.is_set():
                return
            # Cleared before the claim: a notification that arrives during it triggers
            # another claim instead of being lost.
            self._wake.clear()
            free = self._executor.free
            if free <= 0:
                more = True
                continue
            limit = min(free, self._batch)
            try:
                async with self._db.connection("Claiming tasks") as conn:
                    rows = await claim(conn, self._queues, limit, self._worker_id)
                    more = len(rows) >= limit
                    # Start the claimed jobs before anything else is awaited: they run while
                    # the next ETA is looked up.
                    self._executor.start(rows)
                    due_in = None if more else await next_eta(conn, self._queues)
            except DatabaseError as exc:
                if not isinstance(exc, DatabaseUnreachable):
                    logger.warning(
                        "fetcher.claim_failed: %s; retrying in %.1f s",
                        exc,
                        backoff,
                        extra={"worker_id": self._worker_id},
                    )
                if self._db.available.is_set():
                    # The database answers, the statement failed: try again shortly.
                    await self._wait(self._stopping.wait(), backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX)
                else:
                    # Claim the moment the database answers again.
                    await self._wait(self._db.wait_available(None), None)
                    backoff = 0.1
                more = True
                continue
            backoff = 0.1
            if rows:
                # Yield once so the new jobs start before the next claim is considered.
                await asyncio.sleep(0)

    async def _wait(self, waiter: Awaitable[Any], timeout: float | None) -> None:
        """Wait for ``waiter``, the timeout, or ``stopping``, whichever is first."""
        await first_of(waiter, self._stopping.wait(), timeout=timeout)
