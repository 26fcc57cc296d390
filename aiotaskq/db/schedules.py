"""The statements of periodic schedules: the rows of the schedules a worker knows, one tick
enqueued at most once (``schedule_fire``), and the list for the CLI and the admin."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from .connect import new_connection, translate_errors
from .listen import channel_for
from .sql import text

__all__ = ["Fire", "ScheduleRow", "fire", "list_rows", "sync"]


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    name: str
    last_tick: dt.datetime | None
    paused: bool
    #: The database's now, when the row was read.
    now: dt.datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Fire:
    """One tick to enqueue: the schedule, the last tick it was read with, and the task."""

    schedule: str
    expected: dt.datetime | None
    tick: dt.datetime
    name: str
    queue: str
    priority: int
    args: str
    kwargs: str
    time_limit: float | None
    skip_overlap: bool


async def sync(
    conn: psycopg.AsyncConnection[Any], names: Sequence[str], tasks: Sequence[str]
) -> list[ScheduleRow]:
    """The rows of the schedules ``names`` (of tasks ``tasks``), made for those seen first."""
    with translate_errors("Reading the schedules"):
        cur = await conn.execute(
            text("schedule_sync"), {"names": list(names), "tasks": list(tasks)}
        )
        return [ScheduleRow(*row) for row in await cur.fetchall()]


async def fire(conn: psycopg.AsyncConnection[Any], tick: Fire) -> tuple[bool, bool]:
    """Enqueue one tick unless another worker did; returns (moved, inserted): ``moved``
    False when another worker had moved the schedule on (or it is paused), ``inserted``
    False when it moved but the previous run still goes (``skip_overlap``)."""
    with translate_errors("Enqueueing a periodic task"):
        cur = await conn.execute(
            text("schedule_fire"),
            {
                "schedule": tick.schedule,
                "expected": tick.expected,
                "tick": tick.tick,
                "id": uuid.uuid4(),
                "name": tick.name,
                "queue": tick.queue,
                "priority": tick.priority,
                "args": tick.args,
                "kwargs": tick.kwargs,
                "time_limit": tick.time_limit,
                "skip_overlap": tick.skip_overlap,
                "channel": channel_for(tick.queue),
            },
        )
        row = await cur.fetchone()
    return (bool(row[0]), bool(row[1])) if row else (False, False)


async def list_rows() -> dict[str, dict[str, Any]]:
    """Every schedule's row by name: task, last_tick, last_run, paused, and the database's
    now."""
    with translate_errors("Reading the schedules"):
        async with await new_connection(autocommit=True) as conn:
            cur = await conn.execute(text("schedule_list"))
            keys = ("task", "last_tick", "last_run", "paused", "now")
            return {r[0]: dict(zip(keys, r[1:], strict=True)) for r in await cur.fetchall()}
