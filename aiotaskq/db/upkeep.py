"""Keeping the task table healthy where autovacuum does not: its dead rows and its
statistics (``table_health``, ``vacuum``, ``analyze``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from .connect import new_connection, translate_errors
from .rotate import SEGMENTS, segment_table
from .sql import query, text

__all__ = ["UPKEEP_LOCK", "Health", "analyze", "oldest_snapshot", "table_health", "vacuum"]

#: The advisory lock (a bigint) that one worker at a time holds while it keeps the table.
UPKEEP_LOCK = 0x6169_6F74_6B71_0001


@dataclass(frozen=True, slots=True)
class Health:
    dead_rows: int
    live_rows: int
    changed_since_analyze: int
    autovacuum: bool
    #: The cold partition's alone.
    cold_live_rows: int = 0
    cold_changed_since_analyze: int = 0


async def table_health(conn: psycopg.AsyncConnection[Any]) -> Health | None:
    """The table's counters, or ``None`` if the statistics do not know the table yet."""
    with translate_errors("Reading the task table's statistics"):
        cur = await conn.execute(text("table_health"))
        row = await cur.fetchone()
    if row is None:
        return None
    dead, live, changed, cold_live, cold_changed, autovacuum = row
    return Health(
        int(dead or 0),
        int(live or 0),
        int(changed or 0),
        bool(autovacuum),
        cold_live_rows=int(cold_live or 0),
        cold_changed_since_analyze=int(cold_changed or 0),
    )


async def oldest_snapshot(conn: psycopg.AsyncConnection[Any]) -> tuple[str, int] | None:
    """The oldest snapshot a session of the database holds: (its xmin, the session's pid)."""
    with translate_errors("Reading the oldest snapshot"):
        cur = await conn.execute(text("oldest_snapshot"))
        row = await cur.fetchone()
    return (str(row[0]), int(row[1])) if row else None


async def _maintain(statement: str, *, segments: bool = True) -> bool:
    """Run ``statement`` on a connection of its own (it may take seconds, and VACUUM cannot
    run in a transaction) if no other worker is keeping the table; return whether it ran.
    Without ``segments``, on the cold partition alone."""
    with translate_errors("Keeping the task table"):
        conn = await new_connection(autocommit=True, application_name="aiotaskq-upkeep")
        async with conn:
            cur = await conn.execute(text("advisory_try"), {"key": UPKEEP_LOCK})
            row = await cur.fetchone()
            if not (row and row[0]):
                return False
            try:
                cur = await conn.execute(text("kept_partitions"))
                row = await cur.fetchone()
                tables = list(row[0]) if row else []
                if not segments:
                    ring = {segment_table(n) for n in SEGMENTS}
                    tables = [t for t in tables if t not in ring]
                if tables:
                    names = sql.SQL(", ").join(sql.Identifier(t) for t in tables)
                    await conn.execute(query(statement).format(tables=names))
            finally:
                await conn.execute(text("advisory_release"), {"key": UPKEEP_LOCK})
    return True


async def vacuum() -> bool:
    """``VACUUM (ANALYZE)`` the task table's partitions that have pages, unless another
    worker is at it."""
    return await _maintain("vacuum")


async def analyze(*, segments: bool = True) -> bool:
    """``ANALYZE`` the task table's partitions that have pages (without ``segments``: the
    cold partition alone), unless another worker is keeping it."""
    return await _maintain("analyze", segments=segments)
