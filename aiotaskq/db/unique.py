"""The unique keys' table (migration 0012, docs/unique.md): rows of holders that have ended,
pruned in bounded batches, and the table vacuumed where autovacuum does not run; and the rate
buckets of limit keys (migration 0013, docs/limits.md), pruned once full again."""

from __future__ import annotations

from typing import Any

import psycopg

from .connect import translate_errors
from .sql import text

__all__ = ["VACUUM_DEAD_ROWS", "prune", "prune_buckets", "vacuum_if_needed"]

#: Dead rows of the key table that warrant a VACUUM where autovacuum does not run.
VACUUM_DEAD_ROWS = 1000


async def prune(conn: psycopg.AsyncConnection[Any], limit: int = 500) -> int:
    """Delete up to ``limit`` key rows whose holders have ended (never waits for a row an
    enqueue holds). Returns how many."""
    with translate_errors("Pruning unique keys"):
        cur = await conn.execute(text("unique_prune"), {"limit": limit})
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def prune_buckets(conn: psycopg.AsyncConnection[Any], limit: int = 500) -> int:
    """Delete up to ``limit`` rate buckets of limit keys that are full again (docs/limits.md)."""
    with translate_errors("Pruning rate buckets"):
        cur = await conn.execute(text("limit_prune"), {"limit": limit})
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def vacuum_if_needed(conn: psycopg.AsyncConnection[Any]) -> bool:
    """VACUUM the key table if autovacuum does not run and it has many dead rows; ``conn``
    must be in autocommit. Returns whether it did."""
    with translate_errors("Vacuuming unique keys"):
        cur = await conn.execute(text("unique_health"))
        row = await cur.fetchone()
        if row is None or row[1] or row[0] < VACUUM_DEAD_ROWS:
            return False
        await conn.execute(text("unique_vacuum"))
    return True
