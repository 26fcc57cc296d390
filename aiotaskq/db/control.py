"""Acting on tasks from outside a worker: revoke, and (by hand) requeue or delete Failed and
Dirty tasks."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from django.db import connections, transaction

from .connect import connection, conninfo, translate_errors
from .listen import CONTROL_CHANNEL, channels_for
from .sql import text

__all__ = [
    "Selection",
    "delete",
    "delete_sync",
    "fetch_row",
    "fetch_row_sync",
    "requeue",
    "requeue_sync",
    "revoke",
    "revoke_sync",
]


def _revoke_params(task_id: uuid.UUID) -> dict[str, Any]:
    return {"id": task_id, "channel": CONTROL_CHANNEL}


def revoke_sync(task_id: uuid.UUID, alias: str) -> tuple[bool, bool]:
    """Revoke on Django's connection (inside the caller's transaction, if any).
    Returns (deleted while queued, running and announced)."""
    with translate_errors("Revoking"), connections[alias].cursor() as cursor:
        cursor.execute(text("revoke"), _revoke_params(task_id))
        deleted, running = cursor.fetchone()
    return bool(deleted), bool(running)


async def revoke(task_id: uuid.UUID) -> tuple[bool, bool]:
    """The async twin of :func:`revoke_sync`, in its own autocommit statement."""
    with translate_errors("Revoking"):
        async with connection() as conn:
            cur = await conn.execute(text("revoke"), _revoke_params(task_id))
            row = await cur.fetchone()
    assert row is not None
    return bool(row[0]), bool(row[1])


@dataclass(frozen=True, slots=True, kw_only=True)
class Selection:
    """Which Failed and/or Dirty tasks a by-hand operation applies to."""

    ids: Sequence[uuid.UUID] | None = None
    queue: str | None = None
    failed: bool = True
    dirty: bool = True

    def params(self, dirty_after: float) -> dict[str, Any]:
        return {
            "ids": None if self.ids is None else list(self.ids),
            "queue": self.queue,
            "failed": self.failed,
            "dirty": self.dirty,
            "dirty_after": dirty_after,
        }


async def requeue(selection: Selection, dirty_after: float) -> int:
    """Queue the selected Failed/Dirty tasks again, due now; wake their queues at commit."""
    with translate_errors("Requeueing tasks"):
        async with await psycopg.AsyncConnection.connect(conninfo()) as conn:
            async with conn.transaction():
                cur = await conn.execute(text("requeue"), selection.params(dirty_after))
                queues = {row[0] for row in await cur.fetchall()}
                await conn.execute(text("notify"), _wake(queues))
            return cur.rowcount


def requeue_sync(selection: Selection, dirty_after: float, alias: str) -> int:
    """The sync twin of :func:`requeue`, on Django's connection (the admin's): inside the
    caller's transaction if there is one, so the queues are woken when that commits."""
    with (
        translate_errors("Requeueing tasks"),
        transaction.atomic(using=alias),
        connections[alias].cursor() as cursor,
    ):
        cursor.execute(text("requeue"), selection.params(dirty_after))
        queues = [row[0] for row in cursor.fetchall()]
        cursor.execute(text("notify"), _wake(queues))
    return len(queues)


def _wake(queues: Iterable[str]) -> dict[str, Any]:
    return {"channels": channels_for(queues)}


async def delete(selection: Selection, dirty_after: float) -> int:
    """Delete the selected Failed/Dirty tasks."""
    with translate_errors("Deleting tasks"):
        async with await psycopg.AsyncConnection.connect(conninfo(), autocommit=True) as conn:
            cur = await conn.execute(text("delete"), selection.params(dirty_after))
            return cur.rowcount


def delete_sync(selection: Selection, dirty_after: float, alias: str) -> int:
    """The sync twin of :func:`delete`, on Django's connection (inside the caller's
    transaction, if any)."""
    with translate_errors("Deleting tasks"), connections[alias].cursor() as cursor:
        cursor.execute(text("delete"), selection.params(dirty_after))
        return int(cursor.rowcount)


def fetch_row_sync(task_id: uuid.UUID, alias: str, dirty_after: float) -> tuple[Any, ...] | None:
    """One task's row (the ``result`` statement) on Django's connection, or ``None``."""
    with translate_errors("Reading a task"), connections[alias].cursor() as cursor:
        cursor.execute(text("result"), {"id": task_id, "dirty_after": dirty_after})
        row = cursor.fetchone()
    return tuple(row) if row is not None else None


async def fetch_row(task_id: uuid.UUID, dirty_after: float) -> tuple[Any, ...] | None:
    """The async twin of :func:`fetch_row_sync`."""
    with translate_errors("Reading a task"):
        async with connection() as conn:
            cur = await conn.execute(text("result"), {"id": task_id, "dirty_after": dirty_after})
            return await cur.fetchone()
