"""Claiming: wake on a notification, the next ETA or the safety poll; claim as many ready
tasks as each lane has free slots, for all lanes in one statement, each range from the
worker's mark (``marks.py``); make future tasks ready once they fall due. Tasks with limit
keys are claimed first, by a statement of their own that takes turns between keys
(``claim_limited``, docs/limits.md): in a worker that knows limited tasks, when one may be
ready and once a second; in any other, once a poll interval (rows of a task whose limits
were removed since they were enqueued)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from ..db.claim import Claimed, LimitTable, claim, claim_limited, next_eta, promote, traces_of
from ..db.connect import WorkerDatabase
from ..errors import DatabaseError, DatabaseUnreachable
from ..tasks import tracing
from .events import Wake, first_of
from .executor import Executor
from .marks import Marks

__all__ = ["Fetcher"]

logger = logging.getLogger(__name__)

_BACKOFF_MAX = 2.0
#: At most this many future tasks of a queue made ready at a time.
_PROMOTE_LIMIT = 1000


class Fetcher:
    def __init__(
        self,
        db: WorkerDatabase,
        executor: Executor,
        marks: Marks,
        *,
        queues: list[str],
        worker_id: str,
        wake: Wake,
        stopping: asyncio.Event,
        poll_interval: float,
        batch: int,
        burst: bool,
        limits: LimitTable | None = None,
        dirty_after: float = 10.0,
        limited: asyncio.Event | None = None,
    ) -> None:
        self._db = db
        self.marks = marks
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
        self._limits = limits
        # How often the limited claim runs when nothing says limited tasks wait: every second
        # in a worker that knows limited tasks (a limited task run again by hand, or rescued,
        # comes without a "limits" notification), else once a poll interval.
        self._sweep_every = min(1.0, poll_interval) if limits is not None else poll_interval
        self._no_limits = LimitTable([], [], [], [])
        self._dirty_after = dirty_after
        self._limited_lanes = {q: self._lane_of[q] for q in self._claim_queues}
        #: Where the limited claim's turn ended (the next starts after it).
        self._after: tuple[str, str, str] | None = None
        #: When (loop time) keys that wait for a token or a seat may take one, if any do.
        self._limit_at: float | None = None
        #: When the limited claim runs next if nothing says that limited tasks wait.
        self._sweep_at = 0.0
        #: Set when limited tasks may be ready: a "limits" notification, a freed seat, a
        #: promotion, and after a limited claim that found keys with ready tasks.
        self._limited = limited if limited is not None else asyncio.Event()
        self._limited.set()

    async def run(self) -> None:
        """Claim until ``stopping`` is set (or, in burst mode, until nothing is due and
        nothing runs). A claim that fails is tried again after a short capped backoff (2 s
        at most), or, while the database is unreachable, the moment it answers again.

        Each lane is either *behind* (its last claim filled all it asked for, or it had no
        free slot to ask with, so more of its tasks may be due) or not. A lane behind is
        claimed for again as soon as it has a few free slots; the others on a notification,
        the next ETA or the safety poll. One claim asks every lane with free slots at once.

        The ordinary claim runs only when ordinary tasks may be ready: a wake other than freed
        seats, a lane whose last ordinary claim got all it asked for, the next ETA, or the
        safety poll. A wake for freed seats alone runs the limited claim only (with keys
        waiting on seats, that is every few tasks, and the ordinary claim would find nothing).
        """
        behind = set(self._all)  # Claim at once on start: tasks may be waiting.
        backoff = 0.1
        # When the next future task falls due (loop time), and when that was last asked.
        loop = asyncio.get_running_loop()
        due_at: float | None = loop.time()
        asked_at = loop.time()
        # Whether the ordinary claim may find rows, and when it last ran.
        ordinary = True
        ordinary_at = loop.time()
        executor = self._executor
        marks = self.marks
        # The first claim waits for the marks' first look, which learns the priorities of
        # the rows waiting (else it would take the default priority's first).
        await self._wait(marks.known.wait(), None)
        while not self._stopping.is_set():
            if not (behind and executor.claimable(behind, self._batch)):
                if self._burst and not behind and self._limit_at is None:
                    if not executor.jobs:
                        return
                    await self._wait(executor.wait_empty(), None)
                    behind = set(self._all)
                    ordinary = True
                    continue
                waiters: list[Awaitable[Any]] = [self._wake.wait()]
                if behind:
                    waiters.append(executor.wait_for_slots(behind, self._batch))
                if self._burst or (due_at is None and behind == self._all):
                    timeout = None
                elif due_at is None:
                    timeout = self._poll
                else:
                    timeout = max(0.0, min(self._poll, due_at - loop.time()))
                limit_at = self._limit_at
                if self._limits is not None and not self._burst:
                    # The limited claim's look once a second (docs/limits.md).
                    limit_at = min(limit_at or self._sweep_at, self._sweep_at)
                if limit_at is not None:
                    until = max(0.0, limit_at - loop.time())
                    timeout = until if timeout is None else min(timeout, until)
                await first_of(*waiters, self._stopping.wait(), timeout=timeout)
            if self._stopping.is_set():
                return
            # Cleared before the claim: a notification that arrives during it triggers
            # another claim instead of being lost.
            self._wake.clear()
            now = loop.time()
            if (
                self._wake.take_ordinary()
                or now - ordinary_at >= self._poll
                or (due_at is not None and now >= due_at)
            ):
                ordinary = True
            demands = executor.demands(self._batch)
            if not any(demands):
                behind = set(self._all)
                continue
            try:
                async with self._db.connection("Claiming tasks") as conn:
                    if due_at is not None and loop.time() >= due_at:
                        if await promote(conn, self._queues, _PROMOTE_LIMIT):
                            self._limited.set()  # a retried limited task, say
                        due_at = None
                    limited = await self._claim_limited(conn, demands)
                    rest = list(demands)
                    for row in limited:
                        rest[self._lane_of[row.queue]] -= 1
                    rows: list[Claimed] = []
                    asked = ordinary and any(d > 0 for d in rest)
                    if asked:
                        started = marks.ranges(self._claim_queues, self._lane_of, rest)
                        try:
                            rows, left = await claim(conn, started.ranges, self._worker_id)
                        except BaseException:
                            marks.abandoned(started)
                            raise
                        marks.claimed(started, rows, left)
                        # Start the claimed jobs before anything else is awaited: they run
                        # while the next ETA is looked up.
                        executor.start(rows)
                        ordinary_at = loop.time()
                        # A lane that got all it asked for may have more ready.
                        ordinary = any(
                            got >= rest[lane] > 0
                            for lane, got in enumerate(self._counts(rows, len(rest)))
                        )
                    rows = limited + rows
                    behind = self._behind(demands, rows)
                    # A lane behind claims again at once; the next ETA is still asked for
                    # at least every poll interval, so that future tasks are made ready
                    # under a backlog too.
                    stale = loop.time() - asked_at >= self._poll
                    if (asked and behind != self._all) or stale:
                        due_in = await next_eta(conn, self._queues)
                        asked_at = loop.time()
                        due_at = None if due_in is None else asked_at + max(0.0, due_in)
                        if due_in is not None and due_in <= 0:
                            behind = set(self._all)  # Promote and claim at once.
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

    async def _claim_limited(self, conn: Any, demands: list[int]) -> list[Claimed]:
        """The limited claim, if it is its time: when the worker knows limited tasks and
        something says they may be ready (or keys wait for a seat or a token), and once a
        second; in a worker that knows none, once a poll interval (for rows of tasks whose
        limits were removed). A worker whose limited tasks are all done pays one look a
        second for them. Its jobs are started at once."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        hinted = self._limits is not None and (
            self._limited.is_set() or (self._limit_at is not None and now >= self._limit_at)
        )
        if not hinted and now < self._sweep_at:
            return []
        self._sweep_at = now + self._sweep_every
        self._limited.clear()
        got = await claim_limited(
            conn,
            self._limited_lanes,
            demands,
            self._limits or self._no_limits,
            self._after,
            self._worker_id,
            self._dirty_after,
        )
        if got.seen:
            self._limited.set()  # keys with ready tasks: claim for them again
        self._after = got.after
        self._limit_at = None if got.wait_s is None else loop.time() + got.wait_s
        taken = got.taken
        if taken and tracing.active():
            # The limited claim's function returns no trace context: read it by id.
            traces = await traces_of(conn, [row.id for row in taken])
            taken = [row._replace(trace=traces.get(row.id)) for row in taken]
        self._executor.start(taken)
        return taken

    def _behind(self, demands: list[int], rows: list[Claimed]) -> set[int]:
        """The lanes that may have more due tasks after a claim: those that got all they
        asked for, and those that asked for nothing (full: their next free slot tells)."""
        got = self._counts(rows, len(demands))
        return {i for i, demand in enumerate(demands) if got[i] >= demand}

    def _counts(self, rows: list[Claimed], lanes: int) -> list[int]:
        """How many of ``rows`` each lane got."""
        got = [0] * lanes
        for row in rows:
            got[self._lane_of[row.queue]] += 1
        return got

    async def _wait(self, waiter: Awaitable[Any], timeout: float | None) -> None:
        """Wait for ``waiter``, the timeout, or ``stopping``, whichever is first."""
        await first_of(waiter, self._stopping.wait(), timeout=timeout)
