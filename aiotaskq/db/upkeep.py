"""Keeping the task table healthy where autovacuum does not: its dead rows and its
statistics (``table_health``, ``vacuum``, ``analyze``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from .connect import conninfo, translate_errors
from .sql import text

__all__ = ["UPKEEP_LOCK", "Health", "analyze", "oldest_snapshot", "table_health", "vacuum"]

#: The advisory lock (a bigint) that one worker at a time holds while it keeps the table.
UPKEEP_LOCK = 0x6169_6F74_6B71_0001


@dataclass(frozen=True, slots=True)
class Health:
    dead_rows: int
    live_rows: int
    changed_since_analyze: int
    autovacuum: bool


async def table_health(conn: psycopg.AsyncConnection[Any]) -> Health | None:
    """The table's counters, or ``None`` if the statistics do not know the table yet."""
    with translate_errors("Reading the task table's statistics"):
        cur = await conn.execute(text("table_health"))
        row = await cur.fetchone()
    if row is None:
        return None
    dead, live, changed, autovacuum = row
    return Health(int(dead or 0), int(live or 0), int(changed or 0), bool(autovacuum))


async def oldest_snapshot(conn: psycopg.AsyncConnection[Any]) -> tuple[str, int] | None:
    """The oldest snapshot a session of the database holds: (its xmin, the session's pid)."""
    with translate_errors("Reading the oldest snapshot"):
        cur = await conn.execute(text("oldest_snapshot"))
        row = await cur.fetchone()
    return (str(row[0]), int(row[1])) if row else None


async def _maintain(statement: str) -> bool:
    """Run ``statement`` on a connection of its own (it may take seconds, and VACUUM cannot
    run in a transaction) if no other worker is keeping the table; return whether it ran."""
    with translate_errors("Keeping the task table"):
        conn = await psycopg.AsyncConnection.connect(
            conninfo(), autocommit=True, application_name="aiotaskq-upkeep"
        )
        async with conn:
            cur = await conn.execute(text("advisory_try"), {"key": UPKEEP_LOCK})
            row = await cur.fetchone()
            if not (row and row[0]):
                return False
            try:
                await conn.execute(text(statement))
            finally:
                await conn.execute(text("advisory_release"), {"key": UPKEEP_LOCK})
    return True


async def vacuum() -> bool:
    """``VACUUM (ANALYZE)`` the task table unless another worker is at it."""
    return await _maintain("vacuum")


async def analyze() -> bool:
    """``ANALYZE`` the task table unless another worker is keeping it."""
    return await _maintain("analyze")
