"""The registry of workers: each worker's row, written by its heartbeat (``worker_beat``),
deleted when it stops cleanly, read by ``aiotaskq workers``, ``aiotaskq health`` and the
admin's Workers view."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

from .connect import new_connection, translate_errors
from .sql import text

__all__ = ["WorkerRecord", "WorkerRow", "beat", "leave", "listed", "prune"]


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerRecord:
    """What a worker writes of itself: who it is, what it takes, and when it started."""

    id: str
    host: str
    pid: int
    #: Each queue with its cap (None: the queue shares the slots no cap reserves), in the
    #: worker's order.
    queues: Mapping[str, int | None]
    concurrency: int
    started_at: dt.datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerRow:
    """A row of the registry, as read back, with ``alive`` by the database's clock."""

    id: str
    host: str
    pid: int
    queues: dict[str, int | None]  # in the worker's order
    concurrency: int
    in_flight: int
    started_at: dt.datetime
    alive_at: dt.datetime
    alive: bool
    silent_s: float

    def as_json(self) -> dict[str, Any]:
        """The row as ``aiotaskq workers --json`` prints it."""
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "queues": [{"name": q, "cap": cap} for q, cap in self.queues.items()],
            "concurrency": self.concurrency,
            "in_flight": self.in_flight,
            "started_at": self.started_at.isoformat(),
            "alive_at": self.alive_at.isoformat(),
        }


async def beat(conn: psycopg.AsyncConnection[Any], worker: WorkerRecord, in_flight: int) -> None:
    """Write the worker's row (insert or refresh ``alive_at`` and ``in_flight``)."""
    with translate_errors("Writing the worker's row"):
        await conn.execute(
            text("worker_beat"),
            {
                "id": worker.id,
                "host": worker.host,
                "pid": worker.pid,
                # A list, not an object: jsonb keeps no order of keys.
                "queues": json.dumps([{"name": q, "cap": c} for q, c in worker.queues.items()]),
                "concurrency": worker.concurrency,
                "in_flight": in_flight,
                "started_at": worker.started_at,
            },
        )


async def leave(conn: psycopg.AsyncConnection[Any], worker_id: str) -> None:
    """Delete the worker's row: it stopped cleanly."""
    with translate_errors("Deleting the worker's row"):
        await conn.execute(text("worker_leave"), {"id": worker_id})


async def prune(conn: psycopg.AsyncConnection[Any]) -> int:
    """Delete the rows of workers lost for over a day; the number deleted."""
    with translate_errors("Pruning lost workers"):
        cur = await conn.execute(text("worker_prune"))
        return cur.rowcount


def _rows(rows: list[Any]) -> list[WorkerRow]:
    return [
        WorkerRow(
            id=r[0],
            host=r[1],
            pid=r[2],
            queues={q["name"]: q["cap"] for q in json.loads(r[3])},
            concurrency=r[4],
            in_flight=r[5],
            started_at=r[6],
            alive_at=r[7],
            alive=r[8],
            silent_s=r[9],
        )
        for r in rows
    ]


async def listed(dirty_after: float) -> list[WorkerRow]:
    """Every row of the registry, live and lost, by host and start."""
    with translate_errors("Reading the workers"):
        async with await new_connection(autocommit=True) as conn:
            cur = await conn.execute(text("workers"), {"dirty_after": dirty_after})
            return _rows(await cur.fetchall())
