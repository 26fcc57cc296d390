"""Rotating the task table's segments (migration 0009, docs/storage.md).

New tasks go to one of a ring of two partitions, ten seconds each, by the database clock. The
segment that takes new tasks next is emptied while the other takes them: in one transaction,
under an ``ACCESS EXCLUSIVE`` lock on that segment alone, the rows that still live there move
to the cold partition and the segment is truncated. ``TRUNCATE`` gives the space back whatever
transaction holds the xmin horizon, where ``VACUUM`` can remove nothing younger than it.

The rotation either happens whole or not at all: it is one transaction, so a crash, a
terminated backend or a lost connection between the move and the truncate rolls both back.
While it holds the lock, every statement on the task table waits for it (each reads every
partition); it asks for the lock with a short ``lock_timeout`` and moves at most
:data:`MOVE_LIMIT` rows, so that wait stays that of a claim or two.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg import errors, sql

from .connect import translate_errors
from .sql import query, text

__all__ = [
    "LOCK_TIMEOUT",
    "MOVE_LIMIT",
    "ROTATE_LOCK",
    "SEGMENTS",
    "Due",
    "Rotation",
    "due",
    "rotate",
    "segment_table",
]

#: The advisory lock (a bigint, held for the rotation's transaction) that lets one worker
#: rotate at a time.
ROTATE_LOCK = 0x6169_6F74_6B71_0002
#: How long a rotation waits for the segment's lock before it gives up and tries again
#: later. Every statement on the table queues behind that wait.
LOCK_TIMEOUT = 0.05
#: A segment that still holds more rows than this is not rotated in this turn of the ring:
#: moving them would hold the lock for longer than a stall may last. It takes new tasks
#: again, and the next turn tries again (a backlog drains meanwhile).
MOVE_LIMIT = 10_000

#: The ring's segments (migration 0009's ``aiotaskq_segment``); the cold partition is -1.
SEGMENTS = (0, 1)

Outcome = Literal["rotated", "busy", "elsewhere", "postponed"]


@dataclass(frozen=True, slots=True)
class Due:
    segment: int
    #: The turn of the ring (the number of ten-second periods since the epoch).
    period: int


@dataclass(frozen=True, slots=True)
class Rotation:
    segment: int
    #: ``rotated``; ``busy`` (the segment's lock was not had in time: a transaction that
    #: still writes it, or a long statement on the table); ``elsewhere`` (another worker is
    #: rotating); ``postponed`` (more than :data:`MOVE_LIMIT` rows still live there).
    outcome: Outcome
    moved: int = 0
    #: Seconds from asking for the lock to the commit: how long statements on the table
    #: may have waited.
    held_s: float = 0.0


def segment_table(segment: int) -> str:
    """The partition of ``segment`` of the ring."""
    return f"aiotaskq_task_ring{int(segment)}"


async def due(conn: psycopg.AsyncConnection[Any]) -> Due | None:
    """The segment to empty now, or ``None`` (too early in this turn, or it is empty)."""
    with translate_errors("Reading the ring of the task table"):
        cur = await conn.execute(text("ring"))
        row = await cur.fetchone()
    return Due(int(row[0]), int(row[1])) if row else None


async def rotate(
    conn: psycopg.AsyncConnection[Any],
    segment: int,
    *,
    lock_timeout: float = LOCK_TIMEOUT,
    move_limit: int = MOVE_LIMIT,
    after_move: Callable[[], Awaitable[None]] | None = None,
) -> Rotation:
    """Move what still lives in ``segment`` to cold and truncate it, in one transaction.

    ``conn`` is in autocommit mode; ``after_move``, if given, is awaited between the move
    and the truncate (inside the transaction: the fault tests end the backend there).

    Raises:
        DatabaseError: the database failed (the transaction rolled back: nothing moved).
    """
    table = sql.Identifier(segment_table(segment))
    with translate_errors(f"Rotating segment {segment} of the task table"):
        started = time.monotonic()
        try:
            async with conn.transaction():
                cur = await conn.execute(
                    text("rotate_begin"),
                    {"key": ROTATE_LOCK, "lock_timeout": f"{max(1, round(lock_timeout * 1000))}ms"},
                )
                row = await cur.fetchone()
                if not (row and row[0]):
                    return Rotation(segment, "elsewhere")
                cur = await conn.execute(
                    text("segment_rows"), {"segment": segment, "limit": move_limit + 1}
                )
                row = await cur.fetchone()
                if row is not None and int(row[0]) > move_limit:
                    return Rotation(segment, "postponed")
                started = time.monotonic()
                await conn.execute(query("rotate_lock").format(segment=table))
                cur = await conn.execute(text("rotate_move"), {"segment": segment})
                moved = cur.rowcount
                if after_move is not None:
                    await after_move()
                await conn.execute(query("rotate_truncate").format(segment=table))
        except errors.LockNotAvailable:
            return Rotation(segment, "busy", held_s=time.monotonic() - started)
    return Rotation(segment, "rotated", moved=max(moved, 0), held_s=time.monotonic() - started)
