"""Connections: the connection string taken from Django's settings, the pools, and the one
place where driver errors become :class:`aiotaskq.errors.DatabaseError`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
from django import db as django_db
from django.db import connections
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ..conf import get_settings
from ..errors import ConfigurationError, DatabaseError, DatabaseUnreachable

__all__ = [
    "close_enqueue_pools",
    "conninfo",
    "enqueue_pool",
    "recover",
    "translate_errors",
    "worker_pool",
]

logger = logging.getLogger(__name__)

# Keys of Django's connection parameters that are Python objects, not libpq settings.
_NOT_LIBPQ = {"cursor_factory", "context", "prepare_threshold", "pool", "server_side_binding"}


def conninfo(alias: str | None = None) -> str:
    """The libpq connection string of the Django database ``alias`` (default: the task table's).

    Raises:
        ConfigurationError: the alias is unknown or is not PostgreSQL.
    """
    alias = alias or get_settings().DATABASE
    if alias not in connections.settings:
        raise ConfigurationError(
            f'AIOTASKQ["DATABASE"] is {alias!r}, which is not in settings.DATABASES.'
        )
    wrapper = connections[alias]
    if wrapper.vendor != "postgresql":
        raise ConfigurationError(
            f"The database {alias!r} uses the {wrapper.vendor!r} backend; aiotaskq needs "
            "PostgreSQL (django.db.backends.postgresql with psycopg 3)."
        )
    params: dict[str, Any] = {
        k: v for k, v in wrapper.get_connection_params().items() if k not in _NOT_LIBPQ
    }
    params.setdefault("application_name", "aiotaskq")
    return make_conninfo(**params)


@contextlib.contextmanager
def translate_errors(action: str) -> Iterator[None]:
    """Re-raise driver errors as :class:`DatabaseError` naming ``action``: psycopg's own, and
    Django's (its cursor wraps psycopg's errors in ``django.db.Error``)."""
    try:
        yield
    except (psycopg.Error, django_db.Error) as exc:
        raise DatabaseError(f"{action} failed: {exc}".rstrip()) from exc


async def _configure_worker_connection(conn: psycopg.AsyncConnection[Any]) -> None:
    # Claims, heartbeats and acks need not wait for the WAL flush: under at-least-once a lost
    # claim only puts the task back, and a lost ack leaves a running row that turns Dirty.
    # Only a crash of PostgreSQL itself (not of the worker) can lose such a commit.
    await conn.execute("SET synchronous_commit = off")
    # Every statement of the worker finds its rows through an index. Its statements are
    # prepared, and a plan PostgreSQL caches while the table is empty (a worker started
    # before the first enqueue) or its statistics are stale (autovacuum off or behind)
    # would scan the whole table on every ack once the table has grown: this keeps every
    # plan, cached or not, on the indexes.
    await conn.execute("SET enable_seqscan = off")


def worker_pool(name: str) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
    """A closed pool for one worker's claims, acks and heartbeats; the caller opens it."""
    return AsyncConnectionPool(
        conninfo(),
        min_size=1,
        max_size=get_settings().WORKER_POOL_SIZE,
        kwargs={"autocommit": True, "prepare_threshold": 0},
        configure=_configure_worker_connection,
        name=name,
        open=False,
        # A dead connection is found when a statement fails; the worker then retries with a
        # fresh one from the pool. Checking each one on the way out would cost a round trip.
        reconnect_timeout=float("inf"),
    )


async def recover(pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]]) -> None:
    """After a connection failed, test the pool's idle connections and replace the dead ones
    now: when the server cut them all at once, the next attempt then gets a live one instead
    of the next dead one."""
    try:
        await pool.check()
    except (psycopg.Error, OSError) as exc:
        logger.debug("pool check failed: %s", exc)


# One pool per event loop: a pool's connections and locks belong to the loop that opened them.
_enqueue_pools: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, AsyncConnectionPool[psycopg.AsyncConnection[Any]]
] = weakref.WeakKeyDictionary()
_opening: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)

#: How long the enqueue pool keeps trying to add a connection in the background before it
#: gives up, and the longest a caller waits before it asks for a connection again. psycopg_pool
#: doubles the delay between attempts without a ceiling; giving up soon and asking again is
#: what keeps the delay short: a caller's request starts a fresh attempt at once when no
#: attempt is pending, so the first call after the database is back is served promptly.
_RETRY_SLICE = 1.0


async def enqueue_pool() -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
    """The running loop's pool for async enqueue, opened on first use (without waiting for
    its first connection: :func:`connection` bounds that wait)."""
    loop = asyncio.get_running_loop()
    pool = _enqueue_pools.get(loop)
    if pool is not None:
        return pool
    lock = _opening.setdefault(loop, asyncio.Lock())
    async with lock:
        pool = _enqueue_pools.get(loop)
        if pool is None:
            settings = get_settings()
            pool = AsyncConnectionPool(
                conninfo(),
                min_size=1,
                max_size=settings.ENQUEUE_POOL_SIZE,
                # libpq's connect_timeout is whole seconds, and at least 2.
                kwargs={
                    "autocommit": True,
                    "connect_timeout": max(2, math.ceil(settings.ENQUEUE_TIMEOUT)),
                },
                name="aiotaskq-enqueue",
                open=False,
                reconnect_timeout=_RETRY_SLICE,
            )
            with translate_errors("Opening the enqueue connection pool"):
                await pool.open(wait=False)
            _enqueue_pools[loop] = pool
    return pool


async def close_enqueue_pools() -> None:
    """Close the running loop's enqueue pool (for example at ASGI shutdown or test teardown)."""
    pool = _enqueue_pools.pop(asyncio.get_running_loop(), None)
    if pool is not None:
        await pool.close()


def _closed_by_server(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether the server (or the network) closed this idle connection, found without a
    round trip: reading what arrived while it was idle sees the end of the stream."""
    if conn.closed:
        return True
    try:
        conn.pgconn.consume_input()
    except psycopg.OperationalError:
        return True
    return conn.pgconn.status != psycopg.pq.ConnStatus.OK


async def _getconn(
    pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]], timeout: float
) -> psycopg.AsyncConnection[Any]:
    """A live connection of ``pool`` within ``timeout`` seconds.

    Raises:
        DatabaseUnreachable: none within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise DatabaseUnreachable(
                f"The database could not be reached within {timeout:g} s "
                '(AIOTASKQ["ENQUEUE_TIMEOUT"]); nothing was written.'
            )
        try:
            conn = await pool.getconn(timeout=min(left, _RETRY_SLICE))
        except PoolTimeout:
            continue  # ask again: that starts a new connection attempt if none is pending
        if not _closed_by_server(conn):
            return conn
        # The connections cut during an outage are all dead: test the idle ones now (one
        # round trip each) and replace the dead, instead of finding them one call at a time.
        await pool.putconn(conn)
        await recover(pool)


@contextlib.asynccontextmanager
async def connection() -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A connection of the running loop's enqueue pool, within ``AIOTASKQ["ENQUEUE_TIMEOUT"]``
    seconds; as ``pool.connection()``: the transaction, if any, commits or rolls back on exit.

    Raises:
        DatabaseUnreachable: no connection within the timeout.
    """
    pool = await enqueue_pool()
    conn = await _getconn(pool, get_settings().ENQUEUE_TIMEOUT)
    try:
        async with conn:
            yield conn
    finally:
        await pool.putconn(conn)
