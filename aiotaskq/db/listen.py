"""The worker's listening connection and the channel name of each queue."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import sql

from .connect import new_connection, translate_errors
from .sql import query

__all__ = [
    "CONTROL_CHANNEL",
    "LIMITS_PAYLOAD",
    "SEATS_PAYLOAD",
    "channel_for",
    "channels_for",
    "connect_listener",
    "seats_payload",
]

_PREFIX = "aiotaskq:"
#: Revoke requests for running tasks. "/" is not allowed in queue names, so no queue's
#: channel can be this one.
CONTROL_CHANNEL = "aiotaskq/control"
_MAX_IDENTIFIER_BYTES = 63
#: The payload of a queue's notification when a task with a limit key became ready: the
#: workers' limited claim runs only then (and after a seat is freed, and once a poll).
LIMITS_PAYLOAD = "limits"
#: The start of the payload a worker sends when outcomes it wrote freed seats of limited
#: tasks: the other workers run their limited claim, not the ordinary one (no ordinary task
#: became ready). The rest of the payload is the sender's worker id: its own listener
#: ignores it, as the worker has woken itself.
SEATS_PAYLOAD = "seats "


def seats_payload(worker_id: str) -> str:
    """The payload of ``worker_id``'s notification of freed seats."""
    return SEATS_PAYLOAD + worker_id


def channel_for(queue: str) -> str:
    """The NOTIFY channel of ``queue``: ``aiotaskq:<queue>`` while that fits PostgreSQL's
    63-byte identifiers, else a readable prefix and a hash, so two queues never share one."""
    channel = _PREFIX + queue
    if len(channel.encode()) <= _MAX_IDENTIFIER_BYTES:
        return channel
    digest = hashlib.sha256(queue.encode()).hexdigest()[:16]
    return f"{_PREFIX}{queue[:30]}:{digest}"


def channels_for(queues: Iterable[str]) -> list[str]:
    """The distinct channels of ``queues``, sorted (one NOTIFY each)."""
    return sorted({channel_for(queue) for queue in set(queues)})


async def connect_listener(queues: list[str], dsn: str | None) -> psycopg.AsyncConnection[Any]:
    """Open a session connection (never from a pool) and LISTEN on every queue's channel and
    on the control channel (revoke requests).

    Raises:
        DatabaseError: the connection or a LISTEN failed.
    """
    with translate_errors("Opening the listening connection"):
        conn = await new_connection(dsn, autocommit=True, application_name="aiotaskq-listener")
        try:
            for channel in [CONTROL_CHANNEL, *(channel_for(q) for q in queues)]:
                await conn.execute(query("listen").format(channel=sql.Identifier(channel)))
        except BaseException:
            await conn.close()
            raise
    return conn
