"""The outcome of attempts, many at once: ``ack`` (success), ``fail``, ``release``, and the
``heartbeat`` of everything still in flight. Each is lease-checked."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from .connect import translate_errors
from .listen import channels_for
from .sql import text

__all__ = [
    "Kept",
    "Reschedule",
    "ack",
    "fail",
    "heartbeat",
    "prune",
    "release",
    "rescue",
    "retry",
    "succeed",
]

Lease = tuple[uuid.UUID, int]


@dataclass(frozen=True, slots=True)
class Reschedule:
    """An attempt to run again later: a retry (``error`` set) or a snooze (``error`` None)."""

    lease: Lease
    queue: str
    error: str | None
    countdown: float | None
    eta: dt.datetime | None


@dataclass(frozen=True, slots=True)
class Kept:
    """A successful attempt whose result is kept (JSON) for ``retention`` seconds."""

    lease: Lease
    value: str
    retention: float


def _lease_params(leases: Sequence[Lease], worker_id: str) -> dict[str, Any]:
    # Array literals in text (see queries.sql): a UUID's and an int's text never need quoting.
    return {
        "ids": "{" + ",".join([str(lease[0]) for lease in leases]) + "}",
        "attempts": "{" + ",".join([str(lease[1]) for lease in leases]) + "}",
        "worker_id": worker_id,
    }


async def ack(conn: psycopg.AsyncConnection[Any], leases: Sequence[Lease], worker_id: str) -> int:
    """Delete the rows of succeeded attempts; return how many were still held."""
    with translate_errors("Acknowledging tasks"):
        cur = await conn.execute(text("ack"), _lease_params(leases, worker_id), prepare=True)
        return cur.rowcount


async def fail(
    conn: psycopg.AsyncConnection[Any],
    leases: Sequence[Lease],
    errors: Sequence[str],
    worker_id: str,
) -> int:
    """Mark attempts failed, appending each one's error (a JSON object) to the row."""
    params = _lease_params(leases, worker_id)
    params["errors"] = list(errors)
    with translate_errors("Recording failed tasks"):
        cur = await conn.execute(text("fail"), params, prepare=True)
        return cur.rowcount


async def release(
    conn: psycopg.AsyncConnection[Any],
    leases: Sequence[Lease],
    queues: Sequence[str],
    worker_id: str,
) -> int:
    """Put unfinished attempts back to queued and wake the other workers of ``queues``."""
    params = _lease_params(leases, worker_id)
    params["channels"] = channels_for(queues)
    with translate_errors("Releasing tasks"):
        cur = await conn.execute(text("release"), params)
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def heartbeat(
    conn: psycopg.AsyncConnection[Any], leases: Sequence[Lease], worker_id: str
) -> set[uuid.UUID]:
    """Refresh ``alive_at`` of the held tasks; return the ids still held by this worker."""
    with translate_errors("Writing the heartbeat"):
        cur = await conn.execute(text("heartbeat"), _lease_params(leases, worker_id), prepare=True)
        return {row[0] for row in await cur.fetchall()}


async def retry(
    conn: psycopg.AsyncConnection[Any], items: Sequence[Reschedule], worker_id: str
) -> int:
    """Queue attempts again for later and wake their queues' workers."""
    params = _lease_params([item.lease for item in items], worker_id)
    params["errors"] = [item.error for item in items]
    params["countdowns"] = [item.countdown for item in items]
    params["etas"] = [item.eta for item in items]
    params["channels"] = channels_for(item.queue for item in items)
    with translate_errors("Rescheduling tasks"):
        cur = await conn.execute(text("retry"), params, prepare=True)
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def rescue(
    conn: psycopg.AsyncConnection[Any],
    policies: dict[str, int | None],
    queues: Sequence[str],
    dirty_after: float,
    worker_id: str,
) -> list[tuple[uuid.UUID, str, str, str]]:
    """Requeue (or fail, when out of retries) the Dirty tasks of the names in ``policies``
    (name -> max_retries), except ``worker_id``'s own. Returns (id, name, queue, new state)
    of each rescued task."""
    with translate_errors("Rescuing Dirty tasks"):
        cur = await conn.execute(
            text("rescue"),
            {
                "names": list(policies),
                "max_retries": list(policies.values()),
                "queues": list(queues),
                "dirty_after": dirty_after,
                "worker_id": worker_id,
            },
        )
        rows = [(r[0], r[1], r[2], r[3]) for r in await cur.fetchall()]
        requeued = channels_for(r[2] for r in rows if r[3] == "queued")
        if requeued:
            # Wake the queues' workers: a rescued task is due now.
            await conn.execute(text("notify"), {"channels": requeued})
        return rows


async def succeed(conn: psycopg.AsyncConnection[Any], items: Sequence[Kept], worker_id: str) -> int:
    """Keep the results of successful attempts."""
    params = _lease_params([item.lease for item in items], worker_id)
    params["values"] = [item.value for item in items]
    params["retentions"] = [item.retention for item in items]
    with translate_errors("Keeping results"):
        cur = await conn.execute(text("succeed"), params, prepare=True)
        return cur.rowcount


async def prune(conn: psycopg.AsyncConnection[Any], limit: int = 1000) -> int:
    """Delete up to ``limit`` kept results past their retention."""
    with translate_errors("Pruning kept results"):
        cur = await conn.execute(text("prune"), {"limit": limit})
        return cur.rowcount
