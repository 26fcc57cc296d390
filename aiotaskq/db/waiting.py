"""The statements of waiting for tasks: register and unregister a process's interest, and
look at the tasks' rows. The process's waiting itself is :mod:`aiotaskq.tasks.waiting`."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from django.db import connections
from psycopg import sql

from .connect import connection, new_connection, translate_errors
from .sql import query, text

__all__ = [
    "DONE_CHANNEL",
    "Look",
    "connect",
    "look",
    "look_one",
    "look_sync",
    "prune",
    "register",
    "unregister",
]

#: Where aiotaskq_announce (migration 0010) tells that a waited-for task ended; the payload
#: is its id. "/" is not allowed in queue names, so no queue's channel can be this one.
DONE_CHANNEL = "aiotaskq/done"


@dataclass(frozen=True, slots=True)
class Look:
    """What a task's row says to those who wait for it."""

    id: uuid.UUID
    state: str
    queue: str
    progress: str | None
    value: str | None
    last_error: str | None

    @property
    def ended(self) -> bool:
        return self.state in ("failed", "succeeded")


def _looks(rows: Sequence[Sequence[Any]]) -> dict[uuid.UUID, Look]:
    return {row[0]: Look(*row) for row in rows}


async def connect(listen: bool) -> psycopg.AsyncConnection[Any]:
    """A session connection of the waiting thread: its listening one (``listen``), or the
    one its statements run on.

    Raises:
        DatabaseError: the connection or the LISTEN failed.
    """
    name = "aiotaskq-waiter-listener" if listen else "aiotaskq-waiter"
    with translate_errors("Connecting to wait for tasks"):
        conn = await new_connection(autocommit=True, application_name=name)
        if listen:
            try:
                await conn.execute(query("listen").format(channel=sql.Identifier(DONE_CHANNEL)))
            except BaseException:
                await conn.close()
                raise
    return conn


async def register(
    conn: psycopg.AsyncConnection[Any], ids: Sequence[uuid.UUID], waiter: str
) -> None:
    with translate_errors("Registering a wait"):
        await conn.execute(text("wait_register"), {"ids": list(ids), "waiter": waiter})


async def unregister(
    conn: psycopg.AsyncConnection[Any], ids: Sequence[uuid.UUID] | None, waiter: str
) -> None:
    with translate_errors("Ending a wait"):
        await conn.execute(
            text("wait_unregister"),
            {"ids": None if ids is None else list(ids), "waiter": waiter},
        )


async def look(
    conn: psycopg.AsyncConnection[Any], ids: Sequence[uuid.UUID], *, locked: bool = False
) -> dict[uuid.UUID, Look]:
    """The rows of ``ids`` that exist; ``locked`` reads only those not queued, after any
    statement ending them has committed (``look_locked``)."""
    with translate_errors("Reading tasks"):
        cur = await conn.execute(text("look_locked" if locked else "look"), {"ids": list(ids)})
        return _looks(await cur.fetchall())


def look_sync(task_id: uuid.UUID, alias: str) -> Look | None:
    """One task's row on Django's connection, or ``None``."""
    with translate_errors("Reading a task"), connections[alias].cursor() as cursor:
        cursor.execute(text("look"), {"ids": [task_id]})
        return _looks(cursor.fetchall()).get(task_id)


async def look_one(task_id: uuid.UUID) -> Look | None:
    """The async twin of :func:`look_sync`, in its own autocommit statement."""
    async with connection() as conn:
        return (await look(conn, [task_id])).get(task_id)


async def prune(conn: psycopg.AsyncConnection[Any], limit: int = 1000) -> int:
    """Forget up to ``limit`` waiters of processes that went away."""
    with translate_errors("Pruning waiters"):
        cur = await conn.execute(text("wait_prune"), {"limit": limit})
        return cur.rowcount
