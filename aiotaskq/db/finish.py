"""The outcomes of attempts, as values, and the statements that write them many at once:
success (with or without a kept result), failure, retry or snooze, and release; the
``heartbeat`` of everything still in flight; the rescue of Dirty tasks. Each is lease-checked."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from .connect import translate_errors
from .listen import channels_for
from .sql import text

__all__ = [
    "Ack",
    "Failed",
    "KeptResult",
    "Outcome",
    "Released",
    "Retried",
    "heartbeat",
    "prune",
    "release",
    "rescue",
    "save_checkpoint",
    "write",
]

Lease = tuple[uuid.UUID, int]


@dataclass(frozen=True, slots=True)
class Ack:
    """A successful attempt whose result is not kept: its row is deleted."""

    lease: Lease


@dataclass(frozen=True, slots=True)
class KeptResult:
    """A successful attempt whose result (JSON text) is kept for ``retention`` seconds."""

    lease: Lease
    value: str
    retention: float


@dataclass(frozen=True, slots=True)
class Failed:
    """A failed attempt that is not retried; ``error`` is the JSON object kept in the row."""

    lease: Lease
    error: str


@dataclass(frozen=True, slots=True)
class Retried:
    """An attempt to run again after ``countdown`` seconds or at ``eta`` (ISO 8601): a retry
    (``error`` is its JSON object) or a snooze (``error`` is None, no attempt is spent)."""

    lease: Lease
    queue: str
    error: str | None
    countdown: float | None = None
    eta: str | None = None


@dataclass(frozen=True, slots=True)
class Released:
    """An unfinished attempt given back at shutdown: queued again, no error recorded."""

    lease: Lease
    queue: str


Outcome = Ack | KeptResult | Failed | Retried | Released


def _lease_params(leases: Sequence[Lease], worker_id: str) -> dict[str, Any]:
    # Array literals in text (see queries.sql): a UUID's and an int's text never need quoting.
    return {
        "ids": "{" + ",".join([str(lease[0]) for lease in leases]) + "}",
        "attempts": "{" + ",".join([str(lease[1]) for lease in leases]) + "}",
        "worker_id": worker_id,
    }


def _record(outcome: Failed | Retried | KeptResult) -> str:
    # One JSON object per outcome, joined into one document: a single text parameter, so no
    # mix of value types in a batch can trip the driver. The error and the value are JSON
    # already (built by the worker) and go in as they are.
    task_id, attempt = outcome.lease
    head = f'{{"id":"{task_id}","attempt":{attempt}'
    if isinstance(outcome, KeptResult):
        return f'{head},"value":{outcome.value},"retention":{outcome.retention!r}}}'
    if isinstance(outcome, Failed):
        return f'{head},"error":{outcome.error}}}'
    parts = [head]
    if outcome.error is not None:
        parts.append(f',"error":{outcome.error}')
    if outcome.eta is not None:
        parts.append(f',"eta":"{outcome.eta}"')
    elif outcome.countdown is not None:
        parts.append(f',"countdown":{outcome.countdown!r}')
    parts.append("}")
    return "".join(parts)


def _document(outcomes: Sequence[Failed | Retried | KeptResult]) -> str:
    return "[" + ",".join([_record(outcome) for outcome in outcomes]) + "]"


async def write(
    conn: psycopg.AsyncConnection[Any], outcomes: Sequence[Outcome], worker_id: str
) -> int:
    """Write outcomes that are all of one type in one statement; return how many rows were
    still held by this worker (the lease check leaves the others alone).

    Raises:
        DatabaseError: the statement failed (its ``__cause__`` says whether the connection
            or one of the outcomes is to blame: see :func:`.connect.is_connection_error`).
    """
    first = outcomes[0]
    if isinstance(first, Ack):
        with translate_errors("Acknowledging tasks"):
            params = _lease_params([o.lease for o in outcomes], worker_id)
            cur = await conn.execute(text("ack"), params, prepare=True)
            row = await cur.fetchone()
            return int(row[0]) if row else 0
    if isinstance(first, Released):
        released = [o for o in outcomes if isinstance(o, Released)]
        return await release(
            conn, [o.lease for o in released], [o.queue for o in released], worker_id
        )
    items: list[Any] = list(outcomes)
    params = {"items": _document(items), "worker_id": worker_id}
    if isinstance(first, Retried):
        params["channels"] = channels_for(o.queue for o in items)
        with translate_errors("Rescheduling tasks"):
            cur = await conn.execute(text("retry"), params, prepare=True)
            row = await cur.fetchone()
        return int(row[0]) if row else 0
    statement, action = ("fail", "Recording failed tasks")
    if isinstance(first, KeptResult):
        statement, action = ("succeed", "Keeping results")
    with translate_errors(action):
        cur = await conn.execute(text(statement), params, prepare=True)
        row = await cur.fetchone()
        return int(row[0]) if row else 0


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
    conn: psycopg.AsyncConnection[Any],
    leases: Sequence[Lease],
    worker_id: str,
    progress: dict[uuid.UUID, str] | None = None,
) -> set[uuid.UUID]:
    """Refresh ``alive_at`` of the held tasks, and write the ``progress`` (JSON text by id)
    set since the last beat; return the ids still held by this worker."""
    params = _lease_params(leases, worker_id)
    # One JSON object, built from JSON texts that progress_json made.
    params["progress"] = (
        "{" + ",".join([f'"{task_id}":{doc}' for task_id, doc in progress.items()]) + "}"
        if progress
        else "{}"
    )
    with translate_errors("Writing the heartbeat"):
        cur = await conn.execute(text("heartbeat"), params, prepare=True)
        return {row[0] for row in await cur.fetchall()}


async def save_checkpoint(
    conn: psycopg.AsyncConnection[Any], lease: Lease, worker_id: str, value: str
) -> bool:
    """Write an attempt's checkpoint (JSON text); False when the attempt no longer holds
    its lease (nothing was written)."""
    with translate_errors("Saving a checkpoint"):
        cur = await conn.execute(
            text("checkpoint"),
            {"id": lease[0], "attempt": lease[1], "worker_id": worker_id, "value": value},
        )
        return cur.rowcount == 1


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


async def prune(conn: psycopg.AsyncConnection[Any], limit: int = 1000) -> int:
    """Delete up to ``limit`` kept results past their retention."""
    with translate_errors("Pruning kept results"):
        cur = await conn.execute(text("prune"), {"limit": limit})
        return cur.rowcount
