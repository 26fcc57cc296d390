"""Counts per queue for ``aiotaskq status`` (the admin's groups; ``succeeded`` counts the
kept results of Django's tasks framework)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import psycopg

from .connect import new_connection, translate_errors
from .sql import text

__all__ = [
    "KeyStatus",
    "QueueStatus",
    "in_progress",
    "limits_status",
    "queue_status",
    "queue_status_on",
]


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
        async with await new_connection(autocommit=True) as conn:
            return await queue_status_on(conn, dirty_after)


async def queue_status_on(
    conn: psycopg.AsyncConnection[Any], dirty_after: float
) -> list[QueueStatus]:
    """:func:`queue_status` on a connection of the caller's (the worker's metrics: its
    connections plan without sequential scans, so the count gets them back first)."""
    with translate_errors("Reading the queue status"):
        async with conn.transaction():
            await conn.execute(text("status_plan"))
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


async def in_progress(limit: int = 100) -> list[dict[str, Any]]:
    """The running tasks that report progress (``set_progress``), the longest-running
    first: id, name, queue, worker, attempt, start, and the progress document."""
    with translate_errors("Reading the tasks in progress"):
        async with await new_connection(autocommit=True) as conn:
            cur = await conn.execute(text("in_progress"), {"limit": limit})
            rows = await cur.fetchall()
    return [
        {
            "id": str(r[0]),
            "name": r[1],
            "queue": r[2],
            "worker_id": r[3],
            "attempt": r[4],
            "started_at": r[5].isoformat() if r[5] is not None else None,
            "progress": json.loads(r[6]),
        }
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class KeyStatus:
    """A limit key in use: its seats taken and the tasks waiting for one."""

    name: str
    key: str
    running: int
    waiting: int


def _key_rows(rows: list[Any]) -> list[KeyStatus]:
    return [KeyStatus(r[0], r[1], int(r[2]), int(r[3])) for r in rows]


async def limits_status(dirty_after: float, limit: int = 200) -> list[KeyStatus]:
    """The limit keys in use (docs/limits.md), at most ``limit``."""
    with translate_errors("Reading the limits in use"):
        async with await new_connection(autocommit=True) as conn:
            cur = await conn.execute(
                text("limits_status"), {"dirty_after": dirty_after, "limit": limit}
            )
            return _key_rows(await cur.fetchall())


def limits_status_sync(dirty_after: float, alias: str, limit: int = 200) -> list[KeyStatus]:
    """:func:`limits_status` on Django's connection ``alias`` (the admin's)."""
    from django.db import connections

    with translate_errors("Reading the limits in use"), connections[alias].cursor() as cursor:
        cursor.execute(text("limits_status"), {"dirty_after": dirty_after, "limit": limit})
        return _key_rows(cursor.fetchall())
