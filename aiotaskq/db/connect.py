"""Connections: the connection string taken from Django's settings, the pools, and the one
place where driver errors become :class:`aiotaskq.errors.DatabaseError`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import psycopg
from django import db as django_db
from django.db import connections
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ..conf import get_settings
from ..errors import ConfigurationError, DatabaseError, DatabaseUnreachable
from .prepare import REMEDY, prepared_lost, prepares, unprepared

__all__ = [
    "WorkerDatabase",
    "close_enqueue_pools",
    "conninfo",
    "enqueue_pool",
    "is_connection_error",
    "new_connection",
    "translate_errors",
]

logger = logging.getLogger(__name__)


class _DiscardedConnections(logging.Filter):
    """psycopg_pool warns of each dead connection handed back to it, and of each connection
    it failed to open in the moments before the worker closes it for an outage. The worker
    tells of an outage itself, once (``database.unreachable``), and replaces dead
    connections: those warnings would only repeat it, one per connection."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not message.startswith(("discarding closed connection", "error connecting in"))


logging.getLogger("psycopg.pool").addFilter(_DiscardedConnections())

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


async def new_connection(dsn: str | None = None, **kwargs: Any) -> psycopg.AsyncConnection[Any]:
    """A new session connection (never from a pool) to the task database, or to ``dsn``,
    that prepares its statements as :func:`prepares` says. ``kwargs`` go to psycopg.

    Raises:
        psycopg.Error: as ``psycopg.AsyncConnection.connect``.
    """
    return await psycopg.AsyncConnection.connect(dsn or conninfo(), **kwargs, **unprepared())


@contextlib.contextmanager
def translate_errors(action: str) -> Iterator[None]:
    """Re-raise driver errors as :class:`DatabaseError` naming ``action``: psycopg's own, and
    Django's (its cursor wraps psycopg's errors in ``django.db.Error``). A prepared statement
    lost behind a pooler gets the remedy in the message."""
    try:
        yield
    except (psycopg.Error, django_db.Error) as exc:
        remedy = REMEDY if prepared_lost(exc) else ""
        raise DatabaseError(f"{action} failed: {exc}".rstrip() + remedy) from exc


async def _configure_worker_connection(conn: psycopg.AsyncConnection[Any]) -> None:
    if conn.prepare_threshold is None:
        # Nothing is prepared (AIOTASKQ["PREPARE"]): most likely a pooler in transaction mode
        # stands in between, where a SET would change whichever server connection ran it,
        # other clients' too, and not this connection's next statement. The last two
        # settings matter mostly for prepared plans anyway.
        return
    # None of these is prepared: each runs once per connection (and behind a pooler that
    # loses prepared statements, the first real statement tells, in connection()).
    # Claims, heartbeats and acks need not wait for the WAL flush: under at-least-once a lost
    # claim only puts the task back, and a lost ack leaves a running row that turns Dirty.
    # Only a crash of PostgreSQL itself (not of the worker) can lose such a commit.
    await conn.execute("SET synchronous_commit = off", prepare=False)
    # Every statement of the worker finds its rows through an index. Its statements are
    # prepared, and a plan PostgreSQL caches while the table is empty (a worker started
    # before the first enqueue) or its statistics are stale (autovacuum off or behind)
    # would scan the whole table on every ack once the table has grown: this keeps every
    # plan, cached or not, on the indexes.
    await conn.execute("SET enable_seqscan = off", prepare=False)
    # ... and each execution is planned for the table as it is then. Every ten seconds one
    # of the ring's segments is emptied by TRUNCATE (aiotaskq/db/rotate.py); a plan cached
    # just after, while the segment holds nothing, reads its whole id index for every id
    # once it has filled again, and under a held xmin horizon, where the dead entries stay,
    # that took the ack and the heartbeat seconds for a whole turn of the ring. Parsing stays
    # prepared; planning one of these statements costs a fraction of a millisecond.
    await conn.execute("SET plan_cache_mode = force_custom_plan", prepare=False)


def is_connection_error(exc: BaseException) -> bool:
    """Whether a failure is the connection's (the server is gone or restarting, the
    connection was cut, none could be had in time) rather than the statement's own (a value
    PostgreSQL refused): the first kind is worth trying again as it is, the second is not.
    A prepared statement lost behind a pooler is of the first kind: the worker then stops
    preparing (:meth:`WorkerDatabase.connection`), and the same statement goes through."""
    if isinstance(exc, DatabaseUnreachable) or prepared_lost(exc):
        return True
    cause = exc.__cause__ if isinstance(exc, DatabaseError) else exc
    if isinstance(cause, django_db.Error) and cause.__cause__ is not None:
        cause = cause.__cause__
    return isinstance(cause, psycopg.OperationalError | psycopg.InterfaceError | OSError)


# Failures to connect that waiting will not mend: the configuration is wrong.
_MISCONFIGURED = (
    "password authentication failed",
    "no password supplied",
    "does not exist",
    "no pg_hba.conf entry",
    "invalid connection option",
    "invalid dsn",
)

#: Seconds between two attempts to reach the database while it does not answer.
PROBE_INTERVAL = 0.5
#: Seconds one attempt to connect may take.
CONNECT_TIMEOUT = 3.0
#: Seconds a statement of the worker waits for a connection of its pool.
CHECKOUT_TIMEOUT = 10.0


class WorkerDatabase:
    """One worker's connections for claims, acks and heartbeats, and its knowledge of whether
    the database answers.

    When a statement fails for want of a connection and a fresh connection cannot be had
    either, the database is *unreachable*: the pool is closed (no reconnection storm, no
    pile of waiters), every statement fails at once with :class:`DatabaseUnreachable`
    instead of waiting, one ``database.unreachable`` line says why, and the database is
    tried every ``PROBE_INTERVAL`` seconds. As soon as it answers, a new pool is opened,
    :attr:`available` is set (whoever waits on it goes on at once) and ``on_back`` is
    called with the outage's length. The delay to recover is at most ``PROBE_INTERVAL``
    plus one connection, however long the outage was. The constructor does no I/O.
    """

    def __init__(self, name: str, pool_size: int) -> None:
        self._name = name
        self._pool_size = pool_size
        #: Whether the pool's connections prepare their statements (:func:`prepares`, until
        #: a pooler loses one: :meth:`_stop_preparing`).
        self._prepare = True
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._conninfo = ""
        #: Set while the database answers.
        self.available = asyncio.Event()
        #: ``time.monotonic()`` when the database last became reachable (at open, or at the
        #: end of an outage): the rescuer gives other workers' heartbeats time from then.
        self.reachable_since = 0.0
        self._down_since: float | None = None
        self._probe: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._closing = False
        #: Awaited with the outage's length (seconds) once the database is back.
        self.on_back: Callable[[float], Awaitable[None]] | None = None

    def _new_pool(self) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
        return AsyncConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=self._pool_size,
            kwargs={
                "autocommit": True,
                # Every statement prepared from its first run: the worker runs a few
                # statements very often. None with AIOTASKQ["PREPARE"] off.
                "prepare_threshold": 0 if self._prepare else None,
                "connect_timeout": int(CONNECT_TIMEOUT),
            },
            configure=self._configure,
            name=self._name,
            open=False,
            # Outages are this class's business (see above): the pool tries a lost connection
            # again for a few seconds only, never with the long backoff it uses by itself.
            reconnect_timeout=5.0,
        )

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if not self._prepare:
            conn.prepare_threshold = None  # a pool opened before _stop_preparing()
        await _configure_worker_connection(conn)

    def stats(self) -> dict[str, int]:
        """The pool's connections now (for /metrics): ``size`` open, ``available`` idle,
        and ``waiting`` requests for one."""
        if self._pool is None:
            return {"size": 0, "available": 0, "waiting": 0}
        stats = self._pool.get_stats()
        return {
            "size": stats.get("pool_size", 0),
            "available": stats.get("pool_available", 0),
            "waiting": stats.get("requests_waiting", 0),
        }

    async def open(self, *, wait: bool, stopping: asyncio.Event | None = None) -> bool:
        """Connect. With ``wait``, a database that does not answer is waited for (one
        ``database.waiting`` line, then an attempt every ``PROBE_INTERVAL``); return False
        if ``stopping`` is set meanwhile.

        Raises:
            DatabaseError: the database refuses the configuration (wrong password, no such
                database), or it does not answer and ``wait`` is false.
        """
        self._conninfo = conninfo()
        self._prepare = prepares()
        told = False
        while True:
            error = await self._try_connect()
            if error is None:
                break
            failure = _describe(error)
            if not wait or _misconfigured(failure):
                raise DatabaseError(
                    f"Connecting the worker to the database failed: {failure}"
                ) from error
            if not told:
                told = True
                logger.warning(
                    "database.waiting: the database does not answer (%s); the worker starts "
                    "as soon as it does",
                    failure,
                )
            if stopping is None:
                await asyncio.sleep(PROBE_INTERVAL)
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PROBE_INTERVAL):
                    await stopping.wait()
            if stopping.is_set():
                return False
        pool = self._new_pool()
        with translate_errors("Connecting the worker to the database"):
            try:
                await pool.open(wait=True, timeout=CHECKOUT_TIMEOUT)
            except BaseException:
                await pool.close()
                raise
        self._pool = pool
        self.reachable_since = time.monotonic()
        self.available.set()
        if told:
            logger.warning("database.back: the database answers; the worker starts")
        return True

    async def close(self) -> None:
        """Close the pool and stop trying to reach the database."""
        self._closing = True
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        if self._pool is not None:
            await self._pool.close(timeout=5)

    @contextlib.asynccontextmanager
    async def connection(self, action: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection of the pool; driver errors become :class:`DatabaseError` naming
        ``action``.

        Raises:
            DatabaseUnreachable: the database is known to be unreachable (at once, without
                waiting).
            DatabaseError: anything else that failed; a failure of the connection also
                tells :meth:`failed`.
        """
        pool = self._pool
        if pool is None or not self.available.is_set():
            raise DatabaseUnreachable(f"{action} failed: the database is unreachable")
        try:
            async with pool.connection(timeout=CHECKOUT_TIMEOUT) as conn:
                if not self._prepare:
                    conn.prepare_threshold = None  # opened before _stop_preparing()
                with translate_errors(action):
                    yield conn
        except DatabaseError as exc:
            if prepared_lost(exc):
                self._stop_preparing(exc)
            elif is_connection_error(exc):
                await self.failed()
            raise
        except (psycopg.Error, OSError) as exc:
            # The pool's own failures: no connection in time, or the pool closed meanwhile.
            error = DatabaseError(f"{action} failed: {exc}".rstrip())
            await self.failed()
            raise error from exc

    def _stop_preparing(self, exc: DatabaseError) -> None:
        """A pooler lost a prepared statement: prepare nothing from now on, on every
        connection of the pool (each is told as it is handed out or opened, and the pools
        that replace it after an outage are opened so). Until then a statement may have
        found another client's statement under its name: this says so loudly, once."""
        if not self._prepare:
            return
        self._prepare = False
        logger.error(
            "database.prepared_lost: %s; the worker prepares no statement from now on. Set "
            'AIOTASKQ["PREPARE"] = False for a pooler in transaction mode (docs/operations.md, '
            "PgBouncer)",
            " ".join(str(exc.__cause__ or exc).split()),
        )

    async def wait_available(self, timeout: float | None = None) -> None:
        """Return when the database answers (at once if it does), or after ``timeout``."""
        if self.available.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.available.wait()

    async def failed(self) -> None:
        """Tell of a connection that failed: if a fresh connection cannot be had either, the
        database is unreachable (see the class docstring); if it can, the connection was
        cut alone, and the pool's idle connections are checked so that the next statement
        gets a live one."""
        if not self.available.is_set() or self._closing or self._pool is None:
            return
        error = await self._try_connect()
        if error is None:
            if self._pool is not None:
                await replace_dead_connections(self._pool)
            return
        if not self.available.is_set() or self._pool is None:
            return  # another failure got here first
        self.available.clear()
        self._down_since = time.monotonic()
        logger.warning(
            "database.unreachable: %s; outcomes are kept, tasks that do not need the "
            "database go on, and the database is tried every %.1f s",
            _describe(error),
            PROBE_INTERVAL,
        )
        old, self._pool = self._pool, None
        loop = asyncio.get_running_loop()
        self._closer = loop.create_task(old.close(timeout=1.0))
        self._probe = loop.create_task(self._wait_for_back(), name="aiotaskq-database-probe")

    async def _wait_for_back(self) -> None:
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            if await self._try_connect() is not None:
                continue
            pool = self._new_pool()
            try:
                await pool.open(wait=True, timeout=CHECKOUT_TIMEOUT)
            except (psycopg.Error, OSError):
                await pool.close()
                continue
            break
        outage = time.monotonic() - (self._down_since or time.monotonic())
        self._pool = pool
        self._down_since = None
        self.reachable_since = time.monotonic()
        self.available.set()
        if self.on_back is not None:
            await self.on_back(outage)
        else:
            logger.warning("database.back after %.1f s", outage)

    async def _try_connect(self) -> psycopg.Error | OSError | None:
        """None if a fresh connection can be had now, else the error that says why not."""
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._conninfo, connect_timeout=int(CONNECT_TIMEOUT), autocommit=True
            )
        except (psycopg.Error, OSError) as exc:
            return exc
        await conn.close()
        return None


async def replace_dead_connections(pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]]) -> None:
    """Test the pool's idle connections and replace the dead ones now: when the server cut
    them all at once, the next attempt then gets a live one instead of the next dead one."""
    try:
        await pool.check()
    except (psycopg.Error, OSError) as exc:
        logger.debug("pool check failed: %s", exc)


def _describe(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _misconfigured(failure: str) -> bool:
    lowered = failure.lower()
    return any(marker in lowered for marker in _MISCONFIGURED)


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
                    **unprepared(),
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
        await replace_dead_connections(pool)


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
