"""Acting on tasks from outside a worker: revoke, and (by hand) requeue or delete Failed and
Dirty tasks (and delete kept results). Each is one statement for the whole selection."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connections, transaction

from .connect import connection, new_connection, translate_errors
from .listen import CONTROL_CHANNEL, channels_for
from .sql import text

__all__ = [
    "Revocation",
    "Selection",
    "delete",
    "delete_sync",
    "fetch_row",
    "fetch_row_sync",
    "requeue",
    "requeue_sync",
    "revoke",
    "revoke_many",
    "revoke_many_sync",
    "revoke_sync",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Revocation:
    """What a revoke did: the tasks deleted before running, and the running ones announced
    to their workers (on the control channel, at commit)."""

    deleted: tuple[uuid.UUID, ...] = ()
    announced: tuple[uuid.UUID, ...] = ()

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[Any]]) -> Revocation:
        deleted: list[uuid.UUID] = []
        announced: list[uuid.UUID] = []
        for task_id, was_deleted in rows:
            (deleted if was_deleted else announced).append(task_id)
        return cls(deleted=tuple(deleted), announced=tuple(announced))


def _revoke_params(ids: Iterable[uuid.UUID]) -> dict[str, Any]:
    return {"ids": list(ids), "channel": CONTROL_CHANNEL}


def revoke_many_sync(ids: Iterable[uuid.UUID], alias: str) -> Revocation:
    """Revoke every task of ``ids`` in one statement, on Django's connection (inside the
    caller's transaction, if any: the deletions and the announcements take effect at its
    commit). An id that is unknown or already finished is left out of the result."""
    with translate_errors("Revoking"), connections[alias].cursor() as cursor:
        cursor.execute(text("revoke"), _revoke_params(ids))
        return Revocation.from_rows(cursor.fetchall())


async def revoke_many(ids: Iterable[uuid.UUID]) -> Revocation:
    """The async twin of :func:`revoke_many_sync`, in its own autocommit statement."""
    with translate_errors("Revoking"):
        async with connection() as conn:
            cur = await conn.execute(text("revoke"), _revoke_params(ids))
            return Revocation.from_rows(await cur.fetchall())


def revoke_sync(task_id: uuid.UUID, alias: str) -> tuple[bool, bool]:
    """Revoke one task (:func:`revoke_many_sync`). Returns (deleted while queued, running
    and announced)."""
    done = revoke_many_sync([task_id], alias)
    return bool(done.deleted), bool(done.announced)


async def revoke(task_id: uuid.UUID) -> tuple[bool, bool]:
    """The async twin of :func:`revoke_sync`, in its own autocommit statement."""
    done = await revoke_many([task_id])
    return bool(done.deleted), bool(done.announced)


@dataclass(frozen=True, slots=True, kw_only=True)
class Selection:
    """Which Failed, Dirty and (for :func:`delete` only) succeeded tasks a by-hand
    operation applies to. A succeeded task keeps its result and is never requeued: running
    it again is a new task (the admin enqueues one)."""

    ids: Sequence[uuid.UUID] | None = None
    queue: str | None = None
    failed: bool = True
    dirty: bool = True
    succeeded: bool = False

    def params(self, dirty_after: float) -> dict[str, Any]:
        return {
            "ids": None if self.ids is None else list(self.ids),
            "queue": self.queue,
            "failed": self.failed,
            "dirty": self.dirty,
            "succeeded": self.succeeded,
            "dirty_after": dirty_after,
        }


async def requeue(selection: Selection, dirty_after: float) -> list[uuid.UUID]:
    """Queue the selected Failed/Dirty tasks again, due now, in one statement; wake their
    queues at commit. Returns the ids requeued."""
    with translate_errors("Requeueing tasks"):
        async with (
            await new_connection() as conn,
            conn.transaction(),
        ):
            cur = await conn.execute(text("requeue"), selection.params(dirty_after))
            rows = await cur.fetchall()
            await conn.execute(text("notify"), _wake(queue for _, queue in rows))
    return [task_id for task_id, _ in rows]


def requeue_sync(selection: Selection, dirty_after: float, alias: str) -> list[uuid.UUID]:
    """The sync twin of :func:`requeue`, on Django's connection (the admin's): inside the
    caller's transaction if there is one, so the queues are woken when that commits."""
    with (
        translate_errors("Requeueing tasks"),
        transaction.atomic(using=alias),
        connections[alias].cursor() as cursor,
    ):
        cursor.execute(text("requeue"), selection.params(dirty_after))
        rows = cursor.fetchall()
        cursor.execute(text("notify"), _wake(queue for _, queue in rows))
    return [task_id for task_id, _ in rows]


def _wake(queues: Iterable[str]) -> dict[str, Any]:
    return {"channels": channels_for(queues)}


async def delete(selection: Selection, dirty_after: float) -> list[uuid.UUID]:
    """Delete the selected Failed/Dirty/succeeded tasks in one statement. Returns the ids
    deleted."""
    with translate_errors("Deleting tasks"):
        async with await new_connection(autocommit=True) as conn:
            cur = await conn.execute(text("delete"), selection.params(dirty_after))
            return [row[0] for row in await cur.fetchall()]


def delete_sync(selection: Selection, dirty_after: float, alias: str) -> list[uuid.UUID]:
    """The sync twin of :func:`delete`, on Django's connection (inside the caller's
    transaction, if any)."""
    with translate_errors("Deleting tasks"), connections[alias].cursor() as cursor:
        cursor.execute(text("delete"), selection.params(dirty_after))
        return [row[0] for row in cursor.fetchall()]


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
