"""Writing tasks: one statement (``enqueue``) for one row or many, on the caller's Django
connection (sync) or on the loop's psycopg pool (async)."""

from __future__ import annotations

import asyncio
import datetime as dt
import types
import uuid
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from django.db import connections, transaction

from ..errors import DatabaseUnreachable
from .connect import connection, translate_errors
from .listen import LIMITS_PAYLOAD, channel_for, channels_for
from .sql import text

__all__ = [
    "Holders",
    "TaskRow",
    "insert",
    "insert_one",
    "insert_one_sync",
    "insert_sync",
    "stream",
    "stream_sync",
]


@dataclass(slots=True, kw_only=True)
class TaskRow:
    """One task ready to be written; arguments already JSON. (Not frozen: a frozen
    dataclass's ``__init__`` costs twice as much, and a batch builds thousands.)"""

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
    #: The task's unique key, if it has one (docs/unique.md).
    unique_key: str | None = None
    #: With a key: a queued holder takes this row's arguments and run time (debounce).
    replace: bool = False
    #: With a key: seconds a running holder's heartbeat may be silent before it holds
    #: nothing (``DIRTY_AFTER``), or ``None``: a running holder always holds it.
    dirty_after: float | None = None
    #: The key of the task's limits (max_concurrent, rate_limit), if it has any.
    limit_key: str | None = None
    #: The enqueuing span's trace context (JSON text), if one was recording.
    trace: str | None = None


#: Of the rows of one write that have a unique key, those that did not become a task of their
#: own: their id, and the id of the task that holds the key (kept, or replaced).
Holders = Mapping[uuid.UUID, uuid.UUID]
_NO_HOLDERS: Holders = types.MappingProxyType({})

#: From this many rows on, a batch is written with COPY (its rows without a schedule).
COPY_MIN_ROWS = 64
_COPY_TYPES = ["uuid", "text", "text", "int4", "bytea", "bytea", "float8", "text", "bytea"]
# jsonb's binary form is a version byte (1) and the text; the two arguments are sent as
# bytes already in that form (bytea's binary form is the bytes themselves).
_JSONB_V1 = b"\x01"


def _is_plain(r: TaskRow) -> bool:
    return (
        r.eta is None
        and r.countdown is None
        and r.expires_at is None
        and r.expires_in is None
        and r.unique_key is None
    )


@dataclass(slots=True)
class _Keyed:
    """The rows of a write that have a unique key, as sent to ``enqueue_unique``: in key order
    (so that two writes lock the keys they share in the same order), and, for one key, in the
    order they were given: the database takes them one after another, so that several calls
    of one key in a write answer as they would have one by one."""

    sent: list[TaskRow]

    @classmethod
    def of(cls, rows: Iterable[TaskRow]) -> _Keyed:
        return cls(sorted(rows, key=_key_order))  # sorted() is stable

    def params(self) -> dict[str, Any]:
        rows = self.sent
        return {
            **_params(rows),
            "keys": [r.unique_key for r in rows],
            "replaces": [r.replace for r in rows],
            "dirty_afters": [r.dirty_after for r in rows],
        }

    @staticmethod
    def holders(result: Iterable[Sequence[Any]]) -> dict[uuid.UUID, uuid.UUID]:
        return {asked: holder for asked, holder, *_ in result if holder != asked}

    def traces(self, result: Iterable[Sequence[Any]]) -> dict[str, Any] | None:
        """The parameters of ``trace_keyed``: the trace of each call that wrote a task or
        changed a queued holder; None when no call had one (the common case)."""
        traced = {r.id: r.trace for r in self.sent if r.trace is not None}
        if not traced:
            return None
        ids, traces = [], []
        for asked, holder, outcome, *_ in result:
            if outcome in ("new", "replaced") and asked in traced:
                ids.append(holder)
                traces.append(traced[asked])
        return {"ids": ids, "traces": traces} if ids else None


def _key_order(row: TaskRow) -> tuple[str, str]:
    return (row.name, row.unique_key or "")


def _split(rows: Iterable[TaskRow]) -> tuple[list[TaskRow], list[TaskRow]]:
    """(rows without a unique key, rows with one)."""
    plain: list[TaskRow] = []
    keyed: list[TaskRow] = []
    for row in rows:
        (plain if row.unique_key is None else keyed).append(row)
    return plain, keyed


def _copy_record(r: TaskRow) -> tuple[Any, ...]:
    return (
        r.id,
        r.name,
        r.queue,
        r.priority,
        _JSONB_V1 + r.args.encode(),
        _JSONB_V1 + r.kwargs.encode(),
        r.time_limit,
        r.limit_key,
        None if r.trace is None else _JSONB_V1 + r.trace.encode(),
    )


def stream_sync(rows: Iterable[TaskRow], alias: str) -> Holders:
    """Write ``rows`` (many; an iterator that may build them as it goes) through Django's
    connection ``alias`` with COPY, so that the database stores each chunk while the next is
    built. All or none: in a transaction of its own, or a savepoint of the caller's
    ``atomic()``; if building a row raises, nothing is written and the caller's transaction
    is intact. Rows with a schedule follow in one ``enqueue`` statement, rows with a unique
    key in one ``enqueue_unique``; one NOTIFY per queue. Returns the keyed rows' holders.

    Raises:
        DatabaseError: a statement failed (errors of building a row propagate as they are).
    """
    rest: list[TaskRow] = []
    queues: set[str] = set()
    limited: set[str] = set()
    with (
        translate_errors("Enqueueing"),
        transaction.atomic(using=alias),
        connections[alias].cursor() as cursor,
    ):
        raw = cursor.cursor  # psycopg's own cursor, under Django's wrapper
        with raw.copy(text("enqueue_copy")) as copy:
            copy.set_types(_COPY_TYPES)
            for row in rows:
                queues.add(row.queue)
                if row.limit_key is not None:
                    limited.add(row.queue)
                if _is_plain(row):
                    copy.write_row(_copy_record(row))
                else:
                    rest.append(row)
        channels = channels_for(queues)
        scheduled, keyed = _split(rest)
        if scheduled:
            cursor.execute(
                text("enqueue"),
                {**_params(scheduled), "channels": channels, "payloads": [""] * len(channels)},
            )
        elif channels:
            cursor.execute(text("notify"), {"channels": channels})
        if limited:
            cursor.execute(
                text("notify_limited"),
                {"channels": channels_for(limited), "payload": LIMITS_PAYLOAD},
            )
        return _write_keyed_sync(cursor, keyed) if keyed else _NO_HOLDERS


def _write_keyed_sync(cursor: Any, rows: Sequence[TaskRow]) -> Holders:
    keyed = _Keyed.of(rows)
    cursor.execute(text("enqueue_unique"), keyed.params())
    result = cursor.fetchall()
    if (traces := keyed.traces(result)) is not None:
        cursor.execute(text("trace_keyed"), traces)
    return keyed.holders(result)


async def stream(rows: Iterable[TaskRow]) -> Holders:
    """The async twin of :func:`stream_sync`, on the loop's pool, in a transaction of its
    own (committed at once)."""
    with translate_errors("Enqueueing"):
        async with connection() as conn:
            return (await _copy(conn, rows)).holders


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
        "limit_keys": [r.limit_key for r in rows],
        "traces": [r.trace for r in rows],
        **_wake(rows),
    }


def _wake(rows: Sequence[TaskRow]) -> dict[str, list[str]]:
    """The channels of the rows' queues, and the payload of each notification: "limits"
    where a row has a limit key (the workers then run their limited claim), else empty."""
    limited = {r.queue for r in rows if r.limit_key is not None}
    channels = channels_for(r.queue for r in rows)
    if not limited:
        return {"channels": channels, "payloads": [""] * len(channels)}
    marked = set(channels_for(limited))
    return {
        "channels": channels,
        "payloads": [LIMITS_PAYLOAD if c in marked else "" for c in channels],
    }


def _one_params(row: TaskRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "queue": row.queue,
        "priority": row.priority,
        "args": row.args,
        "kwargs": row.kwargs,
        "eta": row.eta,
        "countdown": row.countdown,
        "expires_at": row.expires_at,
        "expires_in": row.expires_in,
        "time_limit": row.time_limit,
        "limit_key": row.limit_key,
        "trace": row.trace,
        "channel": channel_for(row.queue),
        "payload": "" if row.limit_key is None else LIMITS_PAYLOAD,
    }


def insert_sync(rows: Sequence[TaskRow], alias: str) -> Holders:
    """Write ``rows`` through Django's connection ``alias``: inside the caller's
    ``transaction.atomic()`` if there is one (visible and notified at its commit, gone with
    its rollback), else committed at once, all or none. Returns the holders of the rows with
    a unique key that did not become tasks of their own.

    Raises:
        DatabaseError: the statement failed.
    """
    if len(rows) == 1 and rows[0].unique_key is None:
        insert_one_sync(rows[0], alias)
        return _NO_HOLDERS
    if len(rows) >= COPY_MIN_ROWS:
        return stream_sync(rows, alias)
    plain, keyed = _split(rows)
    if not keyed or not plain:  # one statement: atomic as it is
        with translate_errors("Enqueueing"), connections[alias].cursor() as cursor:
            if not keyed:
                cursor.execute(text("enqueue"), _params(rows))
                return _NO_HOLDERS
            return _write_keyed_sync(cursor, keyed)
    with (
        translate_errors("Enqueueing"),
        transaction.atomic(using=alias),
        connections[alias].cursor() as cursor,
    ):
        cursor.execute(text("enqueue"), _params(plain))
        return _write_keyed_sync(cursor, keyed)


def insert_one_sync(row: TaskRow, alias: str) -> dt.datetime:
    """:func:`insert_sync` for one row; returns its ``created_at`` (the database's clock),
    which django.tasks reports as ``enqueued_at``.

    Raises:
        DatabaseError: the statement failed.
    """
    with translate_errors("Enqueueing"), connections[alias].cursor() as cursor:
        cursor.execute(text("enqueue_one"), _one_params(row))
        return _created_at(cursor.fetchone())


@dataclass(frozen=True, slots=True)
class _Written:
    """When the rows of one write were created: the rows written with COPY take the
    transaction's start, the others the statement's time."""

    copied: frozenset[uuid.UUID]
    copy_time: dt.datetime | None
    time: dt.datetime | None
    holders: Holders = _NO_HOLDERS

    def created_at(self, row: TaskRow) -> dt.datetime:
        created_at = self.copy_time if row.id in self.copied else self.time
        assert created_at is not None, "every row written has a time"
        return created_at


async def _write(conn: psycopg.AsyncConnection[Any], rows: Sequence[TaskRow]) -> _Written:
    """Write ``rows`` on ``conn`` (autocommit) in one transaction."""
    if len(rows) >= COPY_MIN_ROWS:
        return await _copy(conn, rows)
    if len(rows) == 1 and rows[0].unique_key is None:
        cur = await conn.execute(text("enqueue_one"), _one_params(rows[0]), prepare=True)
        return _Written(frozenset(), None, _created_at(await cur.fetchone()))
    plain, keyed = _split(rows)
    if not keyed:
        cur = await conn.execute(text("enqueue"), _params(rows))
        return _Written(frozenset(), None, _created_at(await cur.fetchone()))
    if not plain:  # one statement, atomic as it is, prepared (one adelay(unique_key=...))
        async with conn.cursor() as cursor:
            holders, time = await _write_keyed(cursor, keyed)
        return _Written(frozenset(), None, time, holders)
    async with conn.transaction(), conn.cursor() as cursor:
        await cursor.execute(text("enqueue"), _params(plain))
        holders, time = await _write_keyed(cursor, keyed)
    return _Written(frozenset(), None, time, holders)


async def _write_keyed(
    cursor: psycopg.AsyncCursor[Any], rows: Sequence[TaskRow]
) -> tuple[Holders, dt.datetime]:
    keyed = _Keyed.of(rows)
    await cursor.execute(text("enqueue_unique"), keyed.params(), prepare=True)
    result = await cursor.fetchall()
    if (traces := keyed.traces(result)) is not None:
        await cursor.execute(text("trace_keyed"), traces)
    return keyed.holders(result), result[0][3]


async def _copy(conn: psycopg.AsyncConnection[Any], rows: Iterable[TaskRow]) -> _Written:
    """Write ``rows`` (many; an iterator that may build them as it goes) on ``conn`` in one
    transaction: COPY for those without a schedule, while they come; one ``enqueue``
    statement for the rest; one NOTIFY per queue."""
    rest: list[TaskRow] = []
    queues: set[str] = set()
    limited: set[str] = set()
    copied: set[uuid.UUID] = set()
    time = None
    async with conn.transaction(), conn.cursor() as cursor:
        async with cursor.copy(text("enqueue_copy")) as copy:
            copy.set_types(_COPY_TYPES)
            for row in rows:
                queues.add(row.queue)
                if row.limit_key is not None:
                    limited.add(row.queue)
                if _is_plain(row):
                    copied.add(row.id)
                    await copy.write_row(_copy_record(row))
                else:
                    rest.append(row)
        scheduled, keyed = _split(rest)
        if scheduled:
            await cursor.execute(
                text("enqueue"), {**_params(scheduled), "channels": [], "payloads": []}
            )
            time = _created_at(await cursor.fetchone())
        holders = _NO_HOLDERS
        if keyed:
            holders, time = await _write_keyed(cursor, keyed)
        await cursor.execute(text("notify"), {"channels": channels_for(queues)})
        copy_time = _transaction_time(await cursor.fetchone())
        if limited:
            await cursor.execute(
                text("notify_limited"),
                {"channels": channels_for(limited), "payload": LIMITS_PAYLOAD},
            )
    return _Written(frozenset(copied), copy_time, time, holders)


class _Writer:
    """The async enqueues of one event loop, coalesced when they come faster than the
    database commits them.

    Up to ``_DIRECT`` writes are in flight at once, each on its own pooled connection and
    each its own commit: a producer that awaits one ``adelay()`` after another always writes
    at once. A call that finds them all busy waits in line; when a write finishes, a
    background task writes whoever waits together in one statement (one commit for all)
    until nobody waits, so many concurrent producers cost few commits instead of one each. A
    waiter's outcome is its batch's: if the statement fails, every call in it raises the
    error, and nothing of the batch is written.
    """

    __slots__ = ("busy", "tasks", "waiting")

    def __init__(self) -> None:
        self.busy = 0
        self.waiting: list[tuple[Sequence[TaskRow], asyncio.Future[_Written]]] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def write(self, rows: Sequence[TaskRow]) -> _Written:
        if self.busy >= _DIRECT:
            future: asyncio.Future[_Written] = asyncio.get_running_loop().create_future()
            self.waiting.append((rows, future))
            return await future
        self.busy += 1
        try:
            async with connection() as conn:
                return await _write(conn, rows)
        except DatabaseUnreachable as exc:
            # Whoever waits behind this write would wait as long again, for the same answer.
            for _, future in self.waiting:
                _fail(future, DatabaseUnreachable(str(exc)))
            self.waiting.clear()
            raise
        finally:
            self._release()

    def _release(self) -> None:
        """Give up a slot, or hand it to a task that writes what waits."""
        if not self.waiting:
            self.busy -= 1
            return
        task = asyncio.get_running_loop().create_task(self._drain(), name="aiotaskq-enqueue")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _drain(self) -> None:
        try:
            async with connection() as conn:
                while self.waiting:
                    batch = self._take()
                    if batch:
                        await self._write_batch(conn, batch)
        except BaseException as exc:
            # No connection, or a failed write left it suspect: whoever still waits gets the
            # error rather than waiting for a write that will not come.
            for _, future in self.waiting:
                _fail(future, exc)
            self.waiting.clear()
            if not isinstance(exc, Exception):
                raise
        finally:
            self._release()  # waiters that came meanwhile get a drain of their own

    def _take(self) -> list[tuple[Sequence[TaskRow], asyncio.Future[_Written]]]:
        """The next calls to write together: in order, up to ``_BATCH_ROWS`` rows (at
        least one call), leaving out calls cancelled while they waited."""
        taken, rows = 0, 0
        for waiting_rows, _ in self.waiting:
            if taken and rows + len(waiting_rows) > _BATCH_ROWS:
                break
            taken += 1
            rows += len(waiting_rows)
        batch = [(r, f) for r, f in self.waiting[:taken] if not f.cancelled()]
        del self.waiting[:taken]
        return batch

    @staticmethod
    async def _write_batch(
        conn: psycopg.AsyncConnection[Any],
        batch: list[tuple[Sequence[TaskRow], asyncio.Future[_Written]]],
    ) -> None:
        rows = [row for waiting_rows, _ in batch for row in waiting_rows]
        try:
            written = await _write(conn, rows)
        except BaseException as exc:
            for _, future in batch:
                _fail(future, exc)
            raise
        for _, future in batch:
            if not future.done():
                future.set_result(written)


def _fail(future: asyncio.Future[_Written], exc: BaseException) -> None:
    if future.done():
        return
    if isinstance(exc, Exception):
        future.set_exception(exc)
    else:  # cancelled (the loop is closing): so are the calls that waited
        future.cancel()


#: Writes in flight at once before calls wait in line and are batched.
_DIRECT = 2
#: Rows of waiting calls written in one statement at most (a call is never split).
_BATCH_ROWS = 5000
_writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Writer] = (
    weakref.WeakKeyDictionary()
)


def _writer() -> _Writer:
    loop = asyncio.get_running_loop()
    writer = _writers.get(loop)
    if writer is None:
        writer = _writers[loop] = _Writer()
    return writer


async def insert(rows: Sequence[TaskRow]) -> Holders:
    """Write ``rows`` on the running loop's pool, committed at once, all or none (several
    concurrent calls may share one statement; see :class:`_Writer`). Returns the holders of
    the rows with a unique key that did not become tasks of their own.

    Cancellation: if the caller is cancelled while the statement is in flight, the task may
    or may not have been written; the pool discards the connection either way.

    Raises:
        DatabaseError: the statement failed.
    """
    with translate_errors("Enqueueing"):
        written = await _writer().write(rows)
    return written.holders


async def insert_one(row: TaskRow) -> dt.datetime:
    """The async twin of :func:`insert_one_sync`."""
    with translate_errors("Enqueueing"):
        written = await _writer().write([row])
    return written.created_at(row)


def _created_at(result: Sequence[Any] | None) -> dt.datetime:
    assert result is not None, "the enqueue statements return one row"
    created_at: dt.datetime = result[2]
    return created_at


def _transaction_time(result: Sequence[Any] | None) -> dt.datetime:
    assert result is not None, "the notify statement returns one row"
    transaction_time: dt.datetime = result[1]
    return transaction_time
