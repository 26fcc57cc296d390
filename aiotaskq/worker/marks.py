"""Where each claim starts: the worker's marks in the ready positions of its queues.

A task that becomes ready (enqueued due, or fallen due, retried, released or requeued) takes
a position from one sequence, ``pos``. A claim reads each (queue, priority) of the worker in
position order from a *start*, so that it never walks the index entries of the tasks taken
before: under a transaction that holds the xmin horizon those entries cannot be removed, and
walking them is what slowed every claim (docs/storage.md). Two things decide the start:

- The **mark** of the range (``Marks``): past the tasks this worker has taken, and past what
  its last claim saw locked by others. It never passes a row the claim left: a row locked and
  not kept comes back from the claim, and the mark stays at it.
- The **settled position** (``Settler``): every position up to it is either visible or never
  will be. Positions are taken in one order and committed in another; a row whose
  transaction commits after the mark has passed its position is a *late* row. A late row's
  position is above the settled one, so a claim that starts at ``min(mark, settled + 1)``
  finds it. The settled position follows the transactions that write the task table (those
  that hold its ``RowExclusiveLock``): each look records the last position handed out, then
  the writers of that moment; once all of them have ended, every position up to it is
  settled. A session that holds a snapshot but writes no task (the long transaction of
  docs/storage.md) is not a writer and holds nothing back. A writer open for longer than
  ``LONG_WRITER`` (a long ``transaction.atomic()`` that enqueued) stops holding it back too;
  when it ends, the positions it may have taken are looked at once (``ready_between``).

Each newly settled range is looked at once as well: that is how a worker learns of a
priority it has not claimed before. A full look every ``RESYNC_EVERY`` seconds lowers a mark
below any row that a claim skipped while another transaction held it and then let go (a
worker killed in the middle of its claim, a revoke rolled back).

``Settler`` and ``Marks`` are plain state, with no I/O; ``MarksLoop`` feeds them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..db.claim import (
    END,
    Claimed,
    Left,
    Range,
    position_writers,
    positions_taken,
    ready_between,
)
from ..db.connect import WorkerDatabase
from .loops import every

__all__ = [
    "LONG_WRITER",
    "RESYNC_EVERY",
    "SETTLE_EVERY",
    "SETTLE_IDLE",
    "Marks",
    "MarksLoop",
    "Settler",
]

logger = logging.getLogger(__name__)

#: Seconds between two looks at the positions while tasks become ready...
SETTLE_EVERY = 0.025
#: ... and once none has for a second (a claim then finds a new task all the same: its
#: position is above the settled one).
SETTLE_IDLE = 0.25
#: Seconds a writer may hold the settled position back.
LONG_WRITER = 1.0
#: Seconds between two full looks.
RESYNC_EVERY = 15.0

Key = tuple[str, int]


@dataclass
class _Writer:
    seen_at: float
    #: Every position it took is above this one.
    floor: int
    long: bool = False


class Settler:
    """The settled position, from looks at (last position taken, writers at that moment)."""

    def __init__(self) -> None:
        #: Every position up to this one is visible or never will be.
        self.settled = 0
        self._pending: list[tuple[int, set[str]]] = []
        self._writers: dict[str, _Writer] = {}
        self._last = 0
        self._looked = False

    @property
    def idle(self) -> bool:
        """Nothing to follow: the writers need not be read until a new position is taken."""
        return self._looked and self.settled >= self._last and not self._writers

    @property
    def last(self) -> int:
        """The highest last position seen by a look."""
        return self._last

    def unchanged(self, last: int) -> bool:
        return self.idle and last == self._last

    def look(self, last: int, writers: Iterable[str], now: float) -> list[tuple[int, int]]:
        """Record one look: ``last`` read first, then ``writers``. Returns the position
        ranges ``(after, upto]`` to read for ready rows: what has just settled, and what a
        long writer that has ended may have written."""
        writers = set(writers)
        ranges: list[tuple[int, int]] = []
        floor = self._last if self._looked else 0
        for xact in writers:
            if xact not in self._writers:
                self._writers[xact] = _Writer(now, floor)
        for xact in [x for x in self._writers if x not in writers]:
            ended = self._writers.pop(xact)
            if ended.long:
                ranges.append((ended.floor, last))
        for writer in self._writers.values():
            if not writer.long and now - writer.seen_at >= LONG_WRITER:
                writer.long = True
        holding = {x for x, w in self._writers.items() if not w.long}
        if last > self.settled:
            self._pending.append((last, set(writers)))
        settled = self.settled
        for upto, waiting in self._pending:
            waiting &= holding
            if not waiting:
                settled = max(settled, upto)
        self._pending = [(upto, w) for upto, w in self._pending if upto > settled]
        if settled > self.settled:
            ranges.append((self.settled, settled))
            self.settled = settled
        self._last = max(self._last, last)
        self._looked = True
        return ranges


@dataclass
class _Claim:
    """What a claim started from: the marks' generation and the settled position."""

    generation: int
    settled: int
    epoch: int
    ranges: list[Range] = field(default_factory=list)


class Marks:
    """The start of each (queue, priority) range of the worker's queues."""

    def __init__(self, queues: Iterable[str]) -> None:
        self.settler = Settler()
        #: Set by the first full look: the priorities of the queues' ready rows are known.
        self.known = asyncio.Event()
        self._marks: dict[Key, int] = {}
        #: Lowered by a look while a claim was out: (position, generation).
        self._lowered: dict[Key, tuple[int, int]] = {}
        self._generation = 0
        # Claims made from these marks and not yet answered.
        self._out = 0
        # Bumped when the positions start again (the sequence was reset).
        self._epoch = 0
        for queue in queues:
            # The default priority is known from the start; any other is learned from the
            # looks (or from the full look at start). Position 0: the first claim reads it
            # whole.
            self._marks[(queue, 0)] = 0

    def priorities(self, queue: str) -> list[int]:
        """The priorities known for ``queue``, highest first."""
        return sorted((p for q, p in self._marks if q == queue), reverse=True)

    def start(self, key: Key) -> int:
        start = min(self._marks.get(key, 0), self.settler.settled + 1)
        lowered = self._lowered.get(key)
        return start if lowered is None else min(start, lowered[0])

    def ranges(self, queues: list[str], lane_of: dict[str, int], demands: list[int]) -> _Claim:
        """The claim's ranges: every known priority of each queue whose lane asks for rows."""
        claim = _Claim(self._generation, self.settler.settled, self._epoch)
        self._out += 1
        for queue in queues:
            lane = lane_of[queue]
            demand = demands[lane]
            if demand <= 0:
                continue
            for priority in self.priorities(queue):
                claim.ranges.append(
                    Range(queue, priority, self.start((queue, priority)), lane, demand)
                )
        return claim

    def claimed(self, claim: _Claim, taken: list[Claimed], left: list[Left]) -> None:
        """Move the marks of a claim's ranges past what it took, never past what it left."""
        self._out -= 1
        if claim.epoch != self._epoch:
            return  # Made before the positions started again: its positions mean nothing.
        top: dict[Key, int] = {}
        count: dict[Key, int] = {}
        for row in taken:
            key = (row.queue, row.priority)
            top[key] = max(top.get(key, -1), row.pos)
            count[key] = count.get(key, 0) + 1
        lowest_left = {(x.queue, x.priority): x.pos for x in left}
        for r in claim.ranges:
            key = (r.queue, r.priority)
            if key in lowest_left:
                # The lane had enough: the next claim starts at the first row it left.
                self._marks[key] = lowest_left[key]
            elif count.get(key, 0) >= r.demand:
                # Full: more rows may follow the last one taken (late ones too, below the
                # old mark).
                self._marks[key] = top[key] + 1
            else:
                # It took all it could see from its start: every position up to the settled
                # one was visible to it, so none of them holds a row it could take.
                mark = max(top.get(key, r.start - 1) + 1, claim.settled + 1)
                self._marks[key] = max(self._marks.get(key, 0), mark)
            lowered = self._lowered.get(key)
            if lowered is not None and lowered[1] <= claim.generation:
                del self._lowered[key]

    def abandoned(self, claim: _Claim) -> None:
        """A claim that got no answer (it failed): the marks stay where they were."""
        self._out -= 1

    def saw(self, found: Iterable[tuple[str, int, int]]) -> bool:
        """Ready rows found by a look (queue, priority, lowest position): lower the marks
        above them, learn new priorities. True if a claim should be made.

        While a claim is out, a row at or above a range's start is recorded as well: that
        claim's snapshot may predate the row's commit, and its answer would move the mark
        past the row."""
        moved = False
        for queue, priority, pos in found:
            key = (queue, priority)
            if key not in self._marks:
                self._marks[key] = pos
                moved = True
            elif pos < self.start(key) or self._out > 0:
                lowered = self._lowered.get(key)
                self._generation += 1
                self._lowered[key] = (
                    pos if lowered is None else min(pos, lowered[0]),
                    self._generation,
                )
                moved = True
        return moved

    def restart(self) -> None:
        """The positions started again from a lower one (the sequence was reset: ``manage.py
        flush``, ``TRUNCATE ... RESTART IDENTITY``): every mark back to the start."""
        self.settler = Settler()
        self._epoch += 1
        self._lowered.clear()
        for key in self._marks:
            self._marks[key] = 0


class MarksLoop:
    """Looks at the positions every ``SETTLE_EVERY`` seconds and feeds ``marks``; sets
    ``wake`` when a claim should be made."""

    def __init__(
        self,
        db: WorkerDatabase,
        marks: Marks,
        queues: list[str],
        wake: asyncio.Event,
        worker_id: str,
    ) -> None:
        self._db = db
        self._marks = marks
        self._queues = queues
        self._wake = wake
        self._worker_id = worker_id
        self._resync_at = 0.0  # A full look at once.
        # Where the next full look starts: below the lowest ready row the last one found
        # (and its settled position), no row can be let go any more (see _full_floor).
        self._floor = 0
        self._changed_at = 0.0
        # Ranges to read, kept until read (a look that fails reads them next time).
        self._unread: list[tuple[int, int]] = []

    async def run(self) -> None:
        """Look every ``SETTLE_EVERY`` seconds, or every ``SETTLE_IDLE`` once no position has
        been taken for a second."""
        await every(0.0, self._step, "marks", first=True, extra={"worker_id": self._worker_id})

    async def _step(self) -> None:
        failed = True
        try:
            await self.look_once()
            failed = False
        finally:
            # After a failure (logged by ``every``), a second before the next look.
            idle = time.monotonic() - self._changed_at > 1.0
            await asyncio.sleep(1.0 if failed else SETTLE_IDLE if idle else SETTLE_EVERY)

    async def look_once(self) -> None:
        marks = self._marks
        async with self._db.connection("Reading the ready positions") as conn:
            last = await positions_taken(conn)
            now = time.monotonic()
            if last < marks.settler.last:
                logger.info(
                    "marks.restarted: the ready positions started again (%d after %d)",
                    last,
                    marks.settler.last,
                    extra={"worker_id": self._worker_id},
                )
                marks.restart()
                self._floor = 0
                self._resync_at = now
                self._wake.set()  # A claim made meanwhile read from the old marks.
            settler = marks.settler
            if not settler.unchanged(last):
                self._changed_at = now
                writers = await position_writers(conn)
                self._unread += settler.look(last, writers, time.monotonic())
            full: tuple[int, int] | None = None
            if now >= self._resync_at:
                self._resync_at = now + RESYNC_EVERY
                full = (self._floor, END)
                settled_then = settler.settled
                self._unread = [full]
            while self._unread:
                after, upto = self._unread[0]
                if after < upto:
                    found = await ready_between(conn, self._queues, after, upto)
                    if (after, upto) == full:
                        self._floor = _full_floor(found, settled_then)
                        below = [f for f in found if f[2] < marks.start((f[0], f[1]))]
                        if below:
                            # Rows a claim skipped while another transaction held them.
                            logger.info(
                                "marks.recovered: ready rows below the marks of %s",
                                ", ".join(f"{q}/{p} at {pos}" for q, p, pos in below),
                                extra={"worker_id": self._worker_id},
                            )
                    if marks.saw(found):
                        self._wake.set()
                self._unread.pop(0)
        marks.known.set()


def _full_floor(found: list[tuple[str, int, int]], settled: int) -> int:
    """Where the next full look may start, after one that found ``found`` (the lowest ready
    position per range) when every position up to ``settled`` was settled.

    A row below the lowest ready one found was, in that look's snapshot, taken (committed) or
    gone; a row a claim held without having committed still looked ready to it, so it is
    not below. Such a row can be ready again only with a new position (release, retry,
    requeue, rescue and promote all take one). A row not yet visible then had a position
    above ``settled``, and the looks at settled ranges find it. So nothing below the lower of
    the two can be a row to claim again: the full look starts there, and walks only what is
    still ready (and what was taken after it), not everything taken since the horizon was
    held."""
    lowest = min((pos for _, _, pos in found), default=END)
    return max(0, min(lowest - 1, settled))
