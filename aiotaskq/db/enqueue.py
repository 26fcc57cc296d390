"""Writing tasks: one statement (``enqueue``) for one row or many, on the caller's Django
connection (sync) or on the loop's psycopg pool (async)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connections

from .connect import connection, translate_errors
from .listen import channels_for
from .sql import text

__all__ = ["TaskRow", "insert", "insert_sync"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskRow:
    """One task ready to be written; arguments already JSON."""

    id: uuid.UUID
    name: str
    queue: str
    priority: int
    args: str
    kwargs: str
    eta: dt.datetime | None = None
    countdown: float | None = None
    expires_at: dt.datetime | None = None
    expires_in: float | None = None
    time_limit: float | None = None


def _params(rows: Sequence[TaskRow]) -> dict[str, Any]:
    return {
        "ids": [r.id for r in rows],
        "names": [r.name for r in rows],
        "queues": [r.queue for r in rows],
        "priorities": [r.priority for r in rows],
        "args": [r.args for r in rows],
        "kwargs": [r.kwargs for r in rows],
        "etas": [r.eta for r in rows],
        "countdowns": [r.countdown for r in rows],
        "expires_ats": [r.expires_at for r in rows],
        "expires_ins": [r.expires_in for r in rows],
        "time_limits": [r.time_limit for r in rows],
        "channels": channels_for(r.queue for r in rows),
    }


def insert_sync(rows: Sequence[TaskRow], alias: str) -> None:
    """Write ``rows`` through Django's connection ``alias``: inside the caller's
    ``transaction.atomic()`` if there is one (visible and notified at its commit, gone with
    its rollback), else committed at once.

    Raises:
        DatabaseError: the statement failed.
    """
    with translate_errors("Enqueueing"), connections[alias].cursor() as cursor:
        cursor.execute(text("enqueue"), _params(rows))


async def insert(rows: Sequence[TaskRow]) -> None:
    """Write ``rows`` in one autocommit statement on the running loop's pool.

    Cancellation: if the caller is cancelled while the statement is in flight, the task may
    or may not have been written; the pool discards the connection either way.

    Raises:
        DatabaseError: the statement failed.
    """
    with translate_errors("Enqueueing"):
        async with connection() as conn:
            await conn.execute(text("enqueue"), _params(rows))
