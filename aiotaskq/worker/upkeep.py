"""Keeping the task table tidy: kept results deleted once their retention has passed (so no
cron job is needed), and, where autovacuum does not run (off server-wide or for the table),
VACUUM and ANALYZE. A queue table deletes every row it ever held, so without VACUUM it only
grows, and without ANALYZE its statistics stay those of whatever it held first. Where
autovacuum runs, the second part does nothing."""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

from ..db import finish, rotate, unique, upkeep, waiting, workers
from ..db.connect import WorkerDatabase

__all__ = ["Pruner", "Rotator", "TableKeeper"]

logger = logging.getLogger(__name__)

#: Dead rows that warrant a VACUUM: this many, plus a fifth of the live rows (autovacuum's
#: own default fraction), so a large backlog is not vacuumed for a few dead rows.
VACUUM_DEAD_ROWS = 10_000
#: Changed rows that warrant an ANALYZE, likewise plus a tenth of the live rows.
ANALYZE_CHANGED_ROWS = 10_000
#: Batches of ended tasks' unique keys one pass of the pruner deletes at most.
_KEY_BATCHES = 20


class Pruner:
    """Deletes expired results, the waiters left by processes that went away, the unique
    keys of tasks that have ended, and the registry rows of workers lost for a day, in
    bounded batches (every minute, from the worker)."""

    interval = 60.0

    def __init__(self, db: WorkerDatabase, worker_id: str) -> None:
        self._db = db
        self._worker_id = worker_id

    async def prune_once(self, batch: int = 1000) -> int:
        total = 0
        async with self._db.connection("Pruning kept results") as conn:
            while (count := await finish.prune(conn, batch)) > 0:
                total += count
                if count < batch:
                    break
            # And the waiters of processes that went away without saying so (killed).
            await waiting.prune(conn, batch)
            # And the keys of unique tasks that have ended (an enqueue takes a key over
            # whether or not its row is still there: this only keeps the table small).
            keys = 0
            for _ in range(_KEY_BATCHES):
                count = await unique.prune(conn, batch)
                keys += count
                if count < batch:
                    break
            if keys:
                await unique.vacuum_if_needed(conn)
            # And the rate buckets of limit keys that have been full for an hour.
            await unique.prune_buckets(conn, batch)
            # And the rows of workers lost for over a day.
            await workers.prune(conn)
        if total:
            logger.info(
                "results.pruned: %d expired results deleted",
                total,
                extra={"worker_id": self._worker_id},
            )
        return total


class TableKeeper:
    """Reads the table's counters; if autovacuum is off, vacuums or analyzes when they call
    for it (one worker at a time, through an advisory lock). Every 10 s from the worker, and
    once at start: statistics left stale by whatever ran before get renewed before this
    worker's statements are planned on them for long."""

    interval = 10.0

    def __init__(self, db: WorkerDatabase, worker_id: str) -> None:
        self._db = db
        self._worker_id = worker_id
        self._told = False
        # The oldest snapshot of the database (its xmin, and the session) when the last
        # VACUUM started, and whether the keeper has said that it waits for it.
        self._vacuumed_under: tuple[str, int] | None = None
        self._told_held = False

    async def keep_once(self) -> str | None:
        """Vacuum or analyze if needed; return what was done ("vacuum", "analyze") or None."""
        async with self._db.connection("Reading the task table's statistics") as conn:
            health = await upkeep.table_health(conn)
            oldest = await upkeep.oldest_snapshot(conn)
        if health is None or health.autovacuum:
            return None
        if not self._told:
            self._told = True
            logger.info(
                "upkeep.autovacuum_off: the worker vacuums and analyzes the task table "
                "itself (turn autovacuum on to leave it to PostgreSQL)",
                extra={"worker_id": self._worker_id},
            )
        extra = health.live_rows // 5
        if health.dead_rows > VACUUM_DEAD_ROWS + extra:
            held = self._vacuumed_under
            if oldest is not None and held is not None and oldest[0] == held[0]:
                # The session that held the oldest snapshot at the last VACUUM still holds
                # it: nothing that died since can be removed, and a VACUUM would read the
                # whole table and every index for nothing (seconds, on a table that only
                # grows while it lasts).
                if not self._told_held:
                    self._told_held = True
                    logger.warning(
                        "upkeep.horizon_held: session %d holds a snapshot older than the task "
                        "table's dead rows; VACUUM waits until it ends (see docs/storage.md)",
                        oldest[1],
                        extra={"worker_id": self._worker_id},
                    )
                # The cold partition's statistics are still renewed (ANALYZE reads a sample,
                # not the table): the planner must not plan the worker's statements on a
                # table it believes a fraction of its size. The ring's segments are not: one
                # analyzed now is described by its few live rows among pages of dead ones,
                # and the plans made from that read its dead entries for the seconds that
                # follow (a spell at every turn of the ring: docs/storage.md). A segment
                # not analyzed since its TRUNCATE is planned from its actual size.
                changed, live = health.cold_changed_since_analyze, health.cold_live_rows
                if changed > ANALYZE_CHANGED_ROWS + live // 10:
                    return await self._do(
                        "analyze", functools.partial(upkeep.analyze, segments=False), health
                    )
                return None
            self._told_held = False
            done = await self._do("vacuum", upkeep.vacuum, health)
            if done:
                self._vacuumed_under = oldest
            return done
        if health.changed_since_analyze > ANALYZE_CHANGED_ROWS + health.live_rows // 10:
            return await self._do("analyze", upkeep.analyze, health)
        return None

    async def _do(self, what: str, action: Any, health: upkeep.Health) -> str | None:
        started = time.monotonic()
        if not await action():
            return None  # another worker is at it
        logger.info(
            "upkeep.%s: task table done in %.2f s (%d dead rows, %d live, %d changed)",
            what,
            time.monotonic() - started,
            health.dead_rows,
            health.live_rows,
            health.changed_since_analyze,
            extra={"worker_id": self._worker_id},
        )
        return what


class Rotator:
    """Empties the ring's next segment once a turn (``aiotaskq/db/rotate.py``): every
    second it asks whether one is due; one worker at a time rotates it. A rotation that did
    not get its lock in time is tried again a second later, within the same turn; one
    postponed for its live rows waits for the next turn."""

    interval = 1.0

    def __init__(self, db: WorkerDatabase, worker_id: str) -> None:
        self._db = db
        self._worker_id = worker_id
        self._postponed: rotate.Due | None = None
        self._told_busy: int | None = None

    async def rotate_once(self) -> rotate.Rotation | None:
        async with self._db.connection("Rotating the task table") as conn:
            due = await rotate.due(conn)
            if due is None or due == self._postponed:
                return None
            done = await rotate.rotate(conn, due.segment)
        extra = {"worker_id": self._worker_id}
        if done.outcome == "rotated":
            logger.debug(
                "rotation.done: segment %d emptied, %d rows moved to cold, lock held %.1f ms",
                done.segment,
                done.moved,
                done.held_s * 1000,
                extra=extra,
            )
        elif done.outcome == "postponed":
            self._postponed = due
            logger.info(
                "rotation.postponed: segment %d still holds over %d rows; it takes new tasks "
                "again and is emptied on a later turn",
                done.segment,
                rotate.MOVE_LIMIT,
                extra=extra,
            )
        elif done.outcome == "busy" and self._told_busy != due.period:
            # Once a turn: a transaction still writing the segment (a long atomic() that
            # enqueued) or a long statement on the table (a report, pg_dump) holds its lock.
            self._told_busy = due.period
            logger.debug(
                "rotation.busy: segment %d is in use; trying again in %.0f s",
                done.segment,
                self.interval,
                extra=extra,
            )
        return done
