"""Taking ready tasks (``claim``), making due future tasks ready (``promote``), learning when
the next one is due (``next_eta``), and what the worker's marks read (``positions``,
``ready_between``)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, NamedTuple

import psycopg

from .connect import translate_errors
from .listen import channels_for
from .sql import text

__all__ = [
    "Claimed",
    "Left",
    "LimitTable",
    "Limited",
    "Range",
    "claim",
    "claim_limited",
    "next_eta",
    "position_writers",
    "positions_taken",
    "promote",
    "ready_between",
    "traces_of",
]

#: Past every position a sequence can hand out.
END = 2**63 - 1


class Range(NamedTuple):
    """One (queue, priority) range of a claim: read from position ``start`` on, for ``lane``,
    at most ``demand`` rows."""

    queue: str
    priority: int
    start: int
    lane: int
    demand: int


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
    priority: int
    pos: int
    #: What the task's last attempt saved (JSON text), or None.
    checkpoint: str | None = None
    #: The tick of the periodic schedule this run is for, or None.
    scheduled_for: dt.datetime | None = None
    #: The key of the task's limits, or None (claimed by ``claim_limited`` alone).
    limit_key: str | None = None
    #: Seconds from its due time to this claim (None: not measured, as for tasks with limit
    #: keys, whose wait for a seat or a token is the limit's doing).
    pickup_s: float | None = None
    #: The enqueuing span's trace context (JSON text), or None.
    trace: str | None = None


class Left(NamedTuple):
    """The lowest position a claim locked in a range but did not keep (its lane had enough)."""

    queue: str
    priority: int
    pos: int


async def claim(
    conn: psycopg.AsyncConnection[Any], ranges: list[Range], worker_id: str
) -> tuple[list[Claimed], list[Left]]:
    """Claim ready tasks for ``worker_id`` in one statement (autocommit), each lane taking at
    most its demand in all. Returns the rows taken (claimed or expired) and, per range, the
    lowest position locked but left."""
    with translate_errors("Claiming tasks"):
        cur = await conn.execute(
            text("claim"),
            {
                "queues": [r.queue for r in ranges],
                "priorities": [r.priority for r in ranges],
                "starts": [r.start for r in ranges],
                "lanes": [r.lane for r in ranges],
                "demands": [r.demand for r in ranges],
                "worker_id": worker_id,
            },
            prepare=True,
        )
        taken: list[Claimed] = []
        left: list[Left] = []
        for row in await cur.fetchall():
            if row[13]:
                taken.append(
                    Claimed._make((*row[:13], None, row[14], row[15]))  # no limit key in this claim
                )
            else:
                left.append(Left(row[2], row[9], row[10]))
        return taken, left


class LimitTable(NamedTuple):
    """The limits a worker knows, per task name (its registry's): seats per key (or None),
    seconds per token (or None), tokens a full bucket holds."""

    names: list[str]
    max_running: list[int | None]
    intervals: list[float | None]
    bursts: list[int | None]


class Limited(NamedTuple):
    """What a limited claim took, where its turn ended, and when to claim again for keys
    that wait (seconds; None: no key waits)."""

    taken: list[Claimed]
    after: tuple[str, str, str] | None
    wait_s: float | None
    #: Whether it met keys with ready tasks (else nothing limited waits, for now).
    seen: bool = False


async def claim_limited(
    conn: psycopg.AsyncConnection[Any],
    lanes: dict[str, int],
    demands: list[int],
    limits: LimitTable,
    after: tuple[str, str, str] | None,
    worker_id: str,
    dirty_after: float,
) -> Limited:
    """Claim ready tasks that have limit keys, key by key from the one after ``after``, each
    lane taking at most its demand and each key what its limits allow now (migration 0013).
    A task whose name ``limits`` does not list is claimed as if it had no limits."""
    queues = list(lanes)
    with translate_errors("Claiming limited tasks"):
        cur = await conn.execute(
            text("claim_limited"),
            {
                "queues": queues,
                "lanes": [lanes[q] + 1 for q in queues],
                "demands": demands,
                "names": limits.names,
                "max_running": limits.max_running,
                "intervals": limits.intervals,
                "bursts": limits.bursts,
                "after_queue": after[0] if after else None,
                "after_name": after[1] if after else None,
                "after_key": after[2] if after else None,
                "worker_id": worker_id,
                "dirty_after": dirty_after,
            },
            prepare=True,
        )
        taken: list[Claimed] = []
        last: tuple[str, str, str] | None = after
        wait_s: float | None = None
        seen = False
        for row in await cur.fetchall():
            if row[0] is None:
                if row[2] is not None:
                    last = (row[2], row[1], row[13])
                    seen = True
                wait_s = row[14]
                continue
            taken.append(Claimed(*row[:14]))
        return Limited(taken, last, wait_s, seen or bool(taken))


async def traces_of(
    conn: psycopg.AsyncConnection[Any], ids: list[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """The trace contexts of the tasks ``ids`` that have one (for the limited claim's)."""
    cur = await conn.execute(text("traces_of"), {"ids": ids}, prepare=True)
    return {row[0]: row[1] for row in await cur.fetchall()}


async def next_eta(conn: psycopg.AsyncConnection[Any], queues: list[str]) -> float | None:
    """Seconds until the next future task of ``queues`` is due (zero or less: one is due and
    waits to be promoted), or ``None`` if there is none."""
    with translate_errors("Looking up the next ETA"):
        cur = await conn.execute(text("next_eta"), {"queues": queues}, prepare=True)
        row = await cur.fetchone()
    return row[0] if row else None


async def promote(conn: psycopg.AsyncConnection[Any], queues: list[str], limit: int) -> int:
    """Make future tasks of ``queues`` that have fallen due ready (at most ``limit`` per
    queue); returns how many."""
    with translate_errors("Promoting due tasks"):
        cur = await conn.execute(
            text("promote"),
            {"queues": queues, "limit": limit, "channels": channels_for(queues)},
            prepare=True,
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def positions_taken(conn: psycopg.AsyncConnection[Any]) -> int:
    """The last position handed out (0 before the first). Read it before
    ``position_writers``: a position taken before it and not yet visible belongs to one of
    the writers read after."""
    with translate_errors("Reading the ready positions"):
        cur = await conn.execute(text("positions_taken"), prepare=True)
        row = await cur.fetchone()
    return int(row[0]) if row and row[0] is not None else 0


async def position_writers(conn: psycopg.AsyncConnection[Any]) -> frozenset[str]:
    """The transactions that may still be writing the task table."""
    with translate_errors("Reading the ready positions"):
        cur = await conn.execute(text("position_writers"), prepare=True)
        row = await cur.fetchone()
    return frozenset(row[0] if row else ())


async def ready_between(
    conn: psycopg.AsyncConnection[Any], queues: list[str], after: int, upto: int
) -> list[tuple[str, int, int]]:
    """The lowest ready position per (queue, priority) of ``queues`` in ``(after, upto]``."""
    with translate_errors("Reading the ready positions"):
        cur = await conn.execute(
            text("ready_between"), {"queues": queues, "after": after, "upto": upto}
        )
        return [(q, int(p), int(pos)) for q, p, pos in await cur.fetchall()]
