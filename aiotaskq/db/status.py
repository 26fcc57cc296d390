"""Counts per queue for ``aiotaskq status`` (the admin's groups; ``succeeded`` counts the
kept results of Django's tasks framework)."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from .connect import conninfo, translate_errors
from .sql import text

__all__ = ["QueueStatus", "queue_status"]


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueStatus:
    queue: str
    pending: int
    future: int
    active: int
    dirty: int
    failed: int
    succeeded: int
    oldest_pending_age_s: float | None

    @classmethod
    def empty(cls, queue: str) -> QueueStatus:
        """A queue with no task at all."""
        return cls(
            queue=queue,
            pending=0,
            future=0,
            active=0,
            dirty=0,
            failed=0,
            succeeded=0,
            oldest_pending_age_s=None,
        )


async def queue_status(dirty_after: float) -> list[QueueStatus]:
    """One :class:`QueueStatus` per queue that has any row."""
    with translate_errors("Reading the queue status"):
        async with await psycopg.AsyncConnection.connect(conninfo(), autocommit=True) as conn:
            cur = await conn.execute(text("status"), {"dirty_after": dirty_after})
            rows = await cur.fetchall()
    return [
        QueueStatus(
            queue=r[0],
            pending=r[1],
            future=r[2],
            active=r[3],
            dirty=r[4],
            failed=r[5],
            succeeded=r[6],
            oldest_pending_age_s=r[7],
        )
        for r in rows
    ]
