"""The task table where autovacuum does not run (off server-wide or for the table): a queue
table deletes every row it ever held, so without VACUUM it only grows, and without ANALYZE its
statistics stay those of whatever it held first. Where autovacuum runs, this does nothing."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from ..db import upkeep
from ..db.connect import recover
from ..errors import DatabaseError

__all__ = ["TableKeeper"]

logger = logging.getLogger(__name__)

#: Dead rows that warrant a VACUUM: this many, plus a fifth of the live rows (autovacuum's
#: own default fraction), so a large backlog is not vacuumed for a few dead rows.
VACUUM_DEAD_ROWS = 10_000
#: Changed rows that warrant an ANALYZE, likewise plus a tenth of the live rows.
ANALYZE_CHANGED_ROWS = 10_000


class TableKeeper:
    """Every ``every`` seconds, reads the table's counters; if autovacuum is off, vacuums or
    analyzes when they call for it (one worker at a time, through an advisory lock)."""

    def __init__(
        self,
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]],
        worker_id: str,
        every: float = 10.0,
    ) -> None:
        self._pool = pool
        self._worker_id = worker_id
        self._every = every
        self._told = False

    async def run(self) -> None:
        # A first look at start: statistics left stale by whatever ran before get renewed
        # before this worker's statements are planned on them for long.
        while True:
            await self.keep_once()
            await asyncio.sleep(self._every)

    async def keep_once(self) -> str | None:
        """Vacuum or analyze if needed; return what was done ("vacuum", "analyze") or None."""
        try:
            async with self._pool.connection() as conn:
                health = await upkeep.table_health(conn)
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
                return await self._do("vacuum", upkeep.vacuum, health)
            if health.changed_since_analyze > ANALYZE_CHANGED_ROWS + health.live_rows // 10:
                return await self._do("analyze", upkeep.analyze, health)
        except (DatabaseError, psycopg.Error, OSError) as exc:
            await recover(self._pool)
            logger.warning("upkeep.failed: %s", exc, extra={"worker_id": self._worker_id})
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
