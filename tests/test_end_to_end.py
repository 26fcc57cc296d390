"""Enqueue from sync and async code, tasks that are sync and async, through a real worker."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from tests.app import tasks
from tests.conftest import executions, wait_for


def test_sync_enqueue_async_task(worker: Any) -> None:
    worker()
    result = tasks.record.delay("sync->async", value={"n": 1})
    assert isinstance(result.id, uuid.UUID)
    rows = wait_for(lambda: executions("sync->async"), what="the task to run")
    assert rows[0].value == {"n": 1}


def test_sync_enqueue_sync_task(worker: Any) -> None:
    worker()
    tasks.record_sync.apply_async(args=("sync->sync",), kwargs={"value": [1, 2]})
    rows = wait_for(lambda: executions("sync->sync"))
    assert rows[0].value == [1, 2]


async def test_async_enqueue_async_task(worker: Any) -> None:
    worker()
    await tasks.record.adelay("async->async")
    await sync_to_async(wait_for)(lambda: executions("async->async"))


async def test_async_enqueue_sync_task(worker: Any) -> None:
    worker()
    await tasks.record_sync.aapply_async(("async->sync",))
    await sync_to_async(wait_for)(lambda: executions("async->sync"))


async def test_signatures_and_enqueue_many(worker: Any) -> None:
    import aiotaskq

    worker()
    sigs = [tasks.record.s(f"many-{i}") for i in range(50)]
    results = await aiotaskq.aenqueue_many(sigs)
    assert len({r.id for r in results}) == 50
    await sync_to_async(aiotaskq.enqueue_many)([tasks.record_sync.s("many-sync")])
    await tasks.record.s("sig-adelay").adelay()
    await sync_to_async(tasks.record.s("sig-apply").apply_async)(countdown=0)

    def all_ran() -> bool:
        from tests.app.models import Execution

        return Execution.objects.count() == 53

    await sync_to_async(wait_for)(all_ran)


def test_arguments_round_trip_types(worker: Any) -> None:
    worker()
    when = dt.datetime(2026, 11, 22, 18, 46, 1, 123456, tzinfo=dt.UTC)
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    tasks.types.delay(
        "types",
        when,
        dt.date(2026, 1, 2),
        dt.time(3, 4, 5, 6),
        dt.timedelta(seconds=1.5),
        ident,
        decimal.Decimal("1.10"),
        (1, 2),
        {"$uuid": "not a uuid"},
        nested={"at": when, "amounts": [decimal.Decimal("0.1")]},
    )
    (row,) = wait_for(lambda: executions("types"))
    assert row.value == [
        ["datetime", repr(when)],
        ["date", repr(dt.date(2026, 1, 2))],
        ["time", repr(dt.time(3, 4, 5, 6))],
        ["timedelta", repr(dt.timedelta(seconds=1.5))],
        ["UUID", repr(ident)],
        ["Decimal", "Decimal('1.10')"],
        ["list", "[1, 2]"],
        ["dict", "{'$uuid': 'not a uuid'}"],
        ["nested", "dict", repr({"at": when, "amounts": [decimal.Decimal("0.1")]})],
    ]


async def test_plain_call_calls_the_function(db: Any) -> None:
    assert await tasks.noop() is None
    assert tasks.record_sync.fn.__name__ == "record_sync"  # the function stays reachable
    assert db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (0,)


@pytest.mark.parametrize("sync_task", [True, False])
def test_failure_keeps_the_row_with_its_traceback(worker: Any, db: Any, sync_task: bool) -> None:
    worker()
    result = tasks.fail.delay("boom")
    wait_for(
        lambda: db.execute(
            "SELECT 1 FROM aiotaskq_task WHERE id = %s AND state = 'failed'", (result.id,)
        ).fetchone()
    )
    (errors, attempt) = db.execute(
        "SELECT errors, attempt FROM aiotaskq_task WHERE id = %s", (result.id,)
    ).fetchone()
    assert attempt == 1
    assert errors[0]["type"] == "builtins.RuntimeError"
    assert "failing on purpose: boom" in errors[0]["message"]
    assert "Traceback" in errors[0]["traceback"]
    # The worker keeps going.
    tasks.record.delay("after-failure")
    wait_for(lambda: executions("after-failure"))


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_worker_on_each_event_loop(worker: Any, loop: str) -> None:
    proc = worker("--loop", loop)
    assert f"loop:        {loop}" in proc.log()
    tasks.record.delay(f"on-{loop}")
    tasks.record_sync.delay(f"sync-on-{loop}")
    wait_for(lambda: executions(f"on-{loop}") and executions(f"sync-on-{loop}"))
