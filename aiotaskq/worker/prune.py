"""Deleting kept results (Django's tasks framework) once their retention has passed, so no
cron job is needed."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from ..db import finish
from ..db.connect import recover
from ..errors import DatabaseError

__all__ = ["Pruner"]

logger = logging.getLogger(__name__)


class Pruner:
    """Every ``every`` seconds, deletes expired results in bounded batches."""

    def __init__(
        self,
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]],
        worker_id: str,
        every: float = 60.0,
    ) -> None:
        self._pool = pool
        self._worker_id = worker_id
        self._every = every

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            await self.prune_once()

    async def prune_once(self, batch: int = 1000) -> int:
        total = 0
        try:
            async with self._pool.connection() as conn:
                while (count := await finish.prune(conn, batch)) > 0:
                    total += count
                    if count < batch:
                        break
        except (DatabaseError, psycopg.Error, OSError) as exc:
            await recover(self._pool)
            logger.warning("prune.failed: %s", exc, extra={"worker_id": self._worker_id})
        if total:
            logger.info(
                "results.pruned: %d expired results deleted",
                total,
                extra={"worker_id": self._worker_id},
            )
        return total
