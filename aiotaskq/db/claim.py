"""Taking due tasks (``claim``) and learning when the next one is due (``next_eta``)."""

from __future__ import annotations

import uuid
from typing import Any, NamedTuple

import psycopg

from .connect import translate_errors
from .sql import text

__all__ = ["Claimed", "claim", "next_eta"]


class Claimed(NamedTuple):
    """A claimed row. ``expired`` rows were deleted instead and carry no arguments."""

    id: uuid.UUID
    name: str
    queue: str
    args: str | None
    kwargs: str | None
    attempt: int | None
    #: Failed attempts so far (the retries already spent).
    retries: int | None
    time_limit: float | None
    expired: bool


async def claim(
    conn: psycopg.AsyncConnection[Any],
    queues: list[str],
    lanes: list[int],
    demands: list[int],
    worker_id: str,
) -> list[Claimed]:
    """Claim due tasks for ``worker_id`` in one statement (autocommit): ``queues[i]`` is in
    lane ``lanes[i]``, and each lane takes at most ``demands[i]`` (its demand, repeated for
    each of its queues) in all."""
    with translate_errors("Claiming tasks"):
        cur = await conn.execute(
            text("claim"),
            {"queues": queues, "lanes": lanes, "demands": demands, "worker_id": worker_id},
            prepare=True,
        )
        return [Claimed(*row) for row in await cur.fetchall()]


async def next_eta(conn: psycopg.AsyncConnection[Any], queues: list[str]) -> float | None:
    """Seconds until the next future task of ``queues`` is due, or ``None`` if there is none."""
    with translate_errors("Looking up the next ETA"):
        cur = await conn.execute(text("next_eta"), {"queues": queues}, prepare=True)
        row = await cur.fetchone()
    return row[0] if row else None
