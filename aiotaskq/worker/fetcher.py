"""Claiming: wake on a notification, the next ETA or the safety poll; claim as many due tasks
as each lane has free slots, for all lanes in one statement."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from ..db.claim import Claimed, claim, next_eta
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
        plan = executor.lanes
        # The claim's arrays: each queue with the index of its lane (demands are per lane).
        self._lane_of = plan.lane_of()
        self._claim_queues = [q for q in queues if q in self._lane_of]
        self._claim_lanes = [self._lane_of[q] for q in self._claim_queues]
        self._all = set(range(len(plan.lanes)))

    async def run(self) -> None:
        """Claim until ``stopping`` is set (or, in burst mode, until nothing is due and
        nothing runs). A claim that fails is tried again after a short capped backoff (2 s
        at most), or, while the database is unreachable, the moment it answers again.

        Each lane is either *behind* (its last claim filled all it asked for, or it had no
        free slot to ask with, so more of its tasks may be due) or not. A lane behind is
        claimed for again as soon as it has a few free slots; the others on a notification,
        the next ETA or the safety poll. One claim asks every lane with free slots at once.
        """
        behind = set(self._all)  # Claim at once on start: tasks may be waiting.
        backoff = 0.1
        due_in: float | None = None
        executor = self._executor
        while not self._stopping.is_set():
            if not (behind and executor.claimable(behind, self._batch)):
                if self._burst and not behind:
                    if not executor.jobs:
                        return
                    await self._wait(executor.wait_empty(), None)
                    behind = set(self._all)
                    continue
                waiters: list[Awaitable[Any]] = [self._wake.wait()]
                if behind:
                    waiters.append(executor.wait_for_slots(behind, self._batch))
                if self._burst or (due_in is None and behind == self._all):
                    timeout = None
                else:
                    timeout = self._poll if due_in is None else max(0.0, min(self._poll, due_in))
                await first_of(*waiters, self._stopping.wait(), timeout=timeout)
            if self._stopping.is_set():
                return
            # Cleared before the claim: a notification that arrives during it triggers
            # another claim instead of being lost.
            self._wake.clear()
            demands = executor.demands(self._batch)
            if not any(demands):
                behind = set(self._all)
                continue
            try:
                async with self._db.connection("Claiming tasks") as conn:
                    rows = await claim(
                        conn,
                        self._claim_queues,
                        self._claim_lanes,
                        [demands[lane] for lane in self._claim_lanes],
                        self._worker_id,
                    )
                    # Start the claimed jobs before anything else is awaited: they run while
                    # the next ETA is looked up.
                    executor.start(rows)
                    behind = self._behind(demands, rows)
                    due_in = None if behind == self._all else await next_eta(conn, self._queues)
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
                behind = set(self._all)
                continue
            backoff = 0.1
            if rows:
                # Yield once so the new jobs start before the next claim is considered.
                await asyncio.sleep(0)

    def _behind(self, demands: list[int], rows: list[Claimed]) -> set[int]:
        """The lanes that may have more due tasks after a claim: those that got all they
        asked for, and those that asked for nothing (full: their next free slot tells)."""
        got = [0] * len(demands)
        for row in rows:
            got[self._lane_of[row.queue]] += 1
        return {i for i, demand in enumerate(demands) if got[i] >= demand}

    async def _wait(self, waiter: Awaitable[Any], timeout: float | None) -> None:
        """Wait for ``waiter``, the timeout, or ``stopping``, whichever is first."""
        await first_of(waiter, self._stopping.wait(), timeout=timeout)
