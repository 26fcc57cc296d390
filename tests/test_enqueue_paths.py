"""The write paths of enqueue: one row, many rows (COPY), and concurrent async calls that
share a statement. Each must write exactly what the single-row statement writes."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.db import transaction

import aiotaskq
from aiotaskq.db import enqueue as db_enqueue
from aiotaskq.db.listen import channel_for
from aiotaskq.errors import DatabaseError
from tests.app import tasks
from tests.conftest import task_db_conninfo, wait_for

BULK = db_enqueue.COPY_MIN_ROWS * 3
COLUMNS = "name, queue, priority, args, kwargs, time_limit, state, attempt, errors"


@pytest.fixture
def listener() -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(task_db_conninfo(), autocommit=True) as conn:
        for queue in ("default", "a", "b"):
            conn.execute(f'LISTEN "{channel_for(queue)}"')
        yield conn


def _channels(conn: psycopg.Connection[Any], wait: float) -> list[str]:
    return sorted(n.channel for n in conn.notifies(timeout=wait))


def _row(db: psycopg.Connection[Any], task_id: uuid.UUID) -> tuple[Any, ...]:
    row = db.execute(f"SELECT {COLUMNS} FROM aiotaskq_task WHERE id = %s", (task_id,)).fetchone()
    assert row is not None, f"task {task_id} was not written"
    return tuple(row)


def test_bulk_rows_equal_single_rows(db: psycopg.Connection[Any]) -> None:
    when = dt.datetime(2026, 11, 22, 18, 46, 1, 123456, tzinfo=dt.UTC)
    args = ("bulk", {"at": when, "amount": decimal.Decimal("1.10"), "$x": "é"})
    sig = tasks.record.s(*args).set(queue="a", priority=7, time_limit=2.5)
    (single,) = aiotaskq.enqueue_many([sig])
    bulk = aiotaskq.enqueue_many([sig] * BULK)
    assert len({r.id for r in bulk}) == BULK
    assert all(r.id.version == 4 for r in bulk)
    expected = _row(db, single.id)
    for result in bulk:
        assert _row(db, result.id) == expected
    created, due = db.execute(
        "SELECT created_at, execute_at FROM aiotaskq_task WHERE id = %s", (bulk[0].id,)
    ).fetchone() or (None, None)
    assert created is not None
    assert created == due
    assert db.execute("SELECT count(*) FROM aiotaskq_task WHERE execute_at > now()").fetchone() == (
        0,
    ), "a task without a schedule is due at once"


def test_bulk_with_schedules_keeps_each_schedule(db: psycopg.Connection[Any]) -> None:
    eta = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    sigs = [tasks.record.s(f"plain-{i}") for i in range(BULK)]
    sigs += [tasks.record.s("countdown").set(countdown=600)]
    sigs += [tasks.record.s("eta").set(eta=eta)]
    sigs += [tasks.record.s("expires").set(expires=30)]
    aiotaskq.enqueue_many(sigs)
    rows = {
        label: (delay, lifetime)
        for label, delay, lifetime in db.execute(
            "SELECT args->>0, execute_at - created_at, expires_at - created_at"
            " FROM aiotaskq_task WHERE args->>0 NOT LIKE 'plain-%%'"
        ).fetchall()
    }
    assert rows["countdown"] == (dt.timedelta(seconds=600), None)
    assert rows["expires"] == (dt.timedelta(0), dt.timedelta(seconds=30))
    (eta_at,) = db.execute(
        "SELECT execute_at FROM aiotaskq_task WHERE args->>0 = 'eta'"
    ).fetchone() or (None,)
    assert eta_at == eta
    assert db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (BULK + 3,)


def test_bulk_joins_the_callers_transaction(
    db: psycopg.Connection[Any], listener: psycopg.Connection[Any]
) -> None:
    def enqueue_then_fail() -> None:
        with transaction.atomic():
            aiotaskq.enqueue_many(tasks.record_a.s(f"r{i}") for i in range(BULK))
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        enqueue_then_fail()
    assert db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (0,)
    assert _channels(listener, 0.3) == [], "a rolled-back enqueue wakes nobody"

    with transaction.atomic():
        aiotaskq.enqueue_many(
            [tasks.record_a.s(f"a{i}") for i in range(BULK)]
            + [tasks.record_b.s(f"b{i}") for i in range(BULK)]
        )
        assert db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (0,)
        assert _channels(listener, 0.3) == []
    assert db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (2 * BULK,)
    # One notification per queue, at commit.
    assert _channels(listener, 2.0) == [channel_for("a"), channel_for("b")]


def test_bulk_with_a_bad_signature_writes_nothing(db: psycopg.Connection[Any]) -> None:
    sigs = [tasks.record.s(f"ok-{i}") for i in range(BULK)] + [tasks.record.s(object())]  # type: ignore[arg-type]
    with pytest.raises(aiotaskq.AiotaskqError, match="positional argument 0"):
        aiotaskq.enqueue_many(sigs)
    assert db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (0,)


def test_bulk_with_a_bad_signature_keeps_the_callers_transaction(
    db: psycopg.Connection[Any],
) -> None:
    sigs = [tasks.record.s(f"ok-{i}") for i in range(BULK)] + [tasks.record.s(object())]  # type: ignore[arg-type]
    with transaction.atomic():
        tasks.record.delay("before")
        with pytest.raises(aiotaskq.AiotaskqError, match="positional argument 0"):
            aiotaskq.enqueue_many(sigs)
        tasks.record.delay("after")  # the caller's transaction is still usable
    labels = sorted(r[0] for r in db.execute("SELECT args->>0 FROM aiotaskq_task").fetchall())
    assert labels == ["after", "before"]


@pytest.mark.usefixtures("_close_enqueue_pool")
async def test_async_bulk_with_a_bad_signature_writes_nothing(db: psycopg.Connection[Any]) -> None:
    sigs = [tasks.record.s(f"ok-{i}") for i in range(BULK)] + [tasks.record.s(object())]  # type: ignore[arg-type]
    with pytest.raises(aiotaskq.AiotaskqError, match="positional argument 0"):
        await aiotaskq.aenqueue_many(sigs)
    assert db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (0,)
    # The pooled connection went back clean: the next enqueue works.
    await aiotaskq.aenqueue_many(tasks.record.s(f"next-{i}") for i in range(BULK))
    assert db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (BULK,)


@pytest.mark.usefixtures("_close_enqueue_pool")
async def test_async_bulk_and_concurrent_single_enqueues(db: psycopg.Connection[Any]) -> None:
    bulk = await aiotaskq.aenqueue_many(tasks.record.s(f"bulk-{i}") for i in range(BULK))

    async def producer(n: int) -> list[uuid.UUID]:
        return [(await tasks.record_a.adelay(f"p{n}-{i}")).id for i in range(25)]

    ids = [i for batch in await asyncio.gather(*(producer(n) for n in range(40))) for i in batch]
    assert len(set(ids)) == 1000

    def written() -> list[Any]:
        return db.execute("SELECT id, queue, args->>0 FROM aiotaskq_task").fetchall()

    rows = {row[0]: row for row in await sync_to_async(written)()}
    assert set(rows) == {r.id for r in bulk} | set(ids)
    assert {rows[i][1] for i in ids} == {"a"}


@pytest.mark.usefixtures("_close_enqueue_pool")
async def test_calls_waiting_in_line_survive_a_failed_write(db: psycopg.Connection[Any]) -> None:
    """While the table is locked, the first calls hold every write slot and the next ones
    wait in line. One waiter is cancelled; the writers' backends are then terminated. The
    writers raise DatabaseError, the cancelled call writes nothing, and the others are
    written on a fresh connection once the lock is gone."""
    from aiotaskq.db.enqueue import _writer

    locker = await psycopg.AsyncConnection.connect(task_db_conninfo())
    await locker.execute("LOCK TABLE aiotaskq_task IN SHARE MODE")
    writers = [asyncio.create_task(tasks.record.adelay(f"writer-{i}")) for i in range(2)]

    def blocked() -> int:
        (n,) = db.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND query LIKE '%%INSERT INTO aiotaskq_task%%'"
        ).fetchone() or (0,)
        return int(n) >= 2

    await sync_to_async(wait_for)(blocked, what="both writers blocked by the lock")
    waiters = [asyncio.create_task(tasks.record.adelay(f"waiter-{i}")) for i in range(3)]
    await asyncio.sleep(0)  # let them join the line
    assert len(_writer().waiting) == 3
    waiters[1].cancel()
    db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND query LIKE '%%INSERT INTO aiotaskq_task%%'"
    )
    await locker.rollback()
    await locker.close()

    for writer in writers:
        with pytest.raises(DatabaseError, match="Enqueueing failed"):
            await writer
    with pytest.raises(asyncio.CancelledError):
        await waiters[1]
    await waiters[0]
    await waiters[2]

    def labels() -> list[str]:
        return sorted(r[0] for r in db.execute("SELECT args->>0 FROM aiotaskq_task").fetchall())

    assert await sync_to_async(labels)() == ["waiter-0", "waiter-2"]
