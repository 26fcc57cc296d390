"""Limits per key across every worker: ``max_concurrent`` seats and ``rate_limit`` tokens per
key, enforced by the limited claim in PostgreSQL, with several real worker processes. A task
over its key's limit stays queued while other keys' tasks flow past it; seats come back with
the outcome (success, failure, retry) and from a killed worker once its heartbeat is stale."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiotaskq import ConfigurationError, InvalidLimitKey, task
from aiotaskq.db.listen import channel_for, seats_payload
from aiotaskq.tasks.limits import ALL, Limits
from aiotaskq.worker.events import Wake
from aiotaskq.worker.listener import Listener
from tests.app import tasks
from tests.conftest import executions, run_cli, task_db_conninfo, wait_for


def _runs(label: str) -> list[dict[str, Any]]:
    return [e.value for e in executions(label)]


def _peak(runs: list[dict[str, Any]], key: str | None = None) -> int:
    """The most runs (of ``key``) that overlapped in time."""
    edges = []
    for r in runs:
        if key is None or r["key"] == key:
            edges += [(r["start"], 1), (r["end"], -1)]
    now = peak = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):  # an end before a start
        now += step
        peak = max(peak, now)
    return peak


def _limit_key(db: Any, task_id: Any) -> Any:
    row = db.execute("SELECT limit_key FROM aiotaskq_task WHERE id = %s", (task_id,)).fetchone()
    assert row is not None
    return row[0]


# --- the key, computed at enqueue --------------------------------------------------------


def test_the_key_is_computed_once_at_enqueue_and_stored(db: Any) -> None:
    by_function = tasks.per_host.delay("k", "a.example", 0.0)
    by_call = tasks.per_host.apply_async(("k", "a.example", 0.0), limit_key="tenant-7")
    whole = tasks.one_at_a_time.delay("k", 0.0)
    plain = tasks.record.delay("k")
    assert _limit_key(db, by_function.id) == "a.example"
    assert _limit_key(db, by_call.id) == "tenant-7"
    assert _limit_key(db, whole.id) == ALL
    assert _limit_key(db, plain.id) is None
    # In bulk (COPY) too, and through a signature.
    import aiotaskq

    many = aiotaskq.enqueue_many(
        [tasks.per_host.s("k", f"h{n % 3}", 0.0) for n in range(100)]
        + [tasks.per_host.s("k", "x", 0.0).set(limit_key="given")]
    )
    keys = [_limit_key(db, r.id) for r in many]
    assert keys[:6] == ["h0", "h1", "h2", "h0", "h1", "h2"]
    assert keys[-1] == "given"


def test_a_key_function_that_returns_none_leaves_the_call_unlimited(db: Any) -> None:
    @task(name="tests.limits.maybe", limit_key=lambda host: host or None, max_concurrent=1)
    async def maybe(host: str) -> None: ...

    assert _limit_key(db, maybe.delay("").id) is None
    assert _limit_key(db, maybe.delay("h").id) == "h"


class _Weird:
    def __str__(self) -> str:
        raise RuntimeError("hostile __str__")

    def __repr__(self) -> str:
        raise RuntimeError("hostile __repr__")


def _raises(*args: Any) -> str:
    raise LookupError("no host in this url")


@pytest.mark.parametrize(
    ("function", "words"),
    [
        (_raises, "raised LookupError"),
        (lambda *a: 42, "returned int"),
        (lambda *a: _Weird(), "returned _Weird"),
        (lambda *a: "", "is empty"),
        (lambda *a: "a\x00b", "NUL"),
        (lambda *a: "\udc80", "lone surrogate"),
        (lambda *a: "k" * 300, "at most 255"),
    ],
)
def test_a_bad_key_fails_the_enqueue_naming_the_task(db: Any, function: Any, words: str) -> None:
    name = f"tests.limits.bad_{abs(hash(words))}"
    limited = task(name=name, limit_key=function, max_concurrent=2)(lambda url: None)
    with pytest.raises(InvalidLimitKey, match=words) as info:
        limited.delay("https://example.com/")
    assert name in str(info.value)
    if function is _raises:
        assert isinstance(info.value.__cause__, LookupError)
    assert db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (0,)


def test_a_key_for_a_task_without_limits_says_how_to_give_it_some() -> None:
    with pytest.raises(InvalidLimitKey, match="max_concurrent=N"):
        tasks.record.apply_async(("x",), limit_key="k")


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"max_concurrent": 0}, "positive int"),
        ({"max_concurrent": -1}, "positive int"),
        ({"max_concurrent": True}, "positive int"),
        ({"max_concurrent": "3"}, "positive int"),
        ({"rate_limit": "10"}, '"N/s"'),
        ({"rate_limit": "0/s"}, '"N/s"'),
        ({"rate_limit": "10/d"}, '"N/s"'),
        ({"rate_limit": 10}, '"N/s"'),
        ({"rate_limit": _Weird()}, '"N/s"'),  # its repr raises: the error still comes
        ({"max_concurrent": _Weird()}, "positive int"),
        ({"rate_limit": "10/s", "rate_burst": 0}, "at least 1"),
        ({"rate_burst": 5}, "goes with a rate_limit"),
        ({"limit_key": lambda: "k"}, "has none"),
        ({"limit_key": "host", "max_concurrent": 2}, "must be a function"),
    ],
)
def test_bad_limit_options_fail_at_declaration(options: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigurationError, match=words):
        task(name=f"tests.limits.opt_{abs(hash(words))}", **options)(lambda: None)


@settings(max_examples=200, deadline=None)
@given(count=st.integers(1, 10_000), unit=st.sampled_from("smh"))
def test_a_rate_is_an_interval_and_a_burst(count: int, unit: str) -> None:
    limits = Limits.build(
        "t", limit_key=None, max_concurrent=None, rate_limit=f"{count}/{unit}", rate_burst=None
    )
    assert limits is not None
    assert limits.interval is not None
    assert limits.burst is not None
    seconds = {"s": 1, "m": 60, "h": 3600}[unit]
    assert limits.interval == pytest.approx(seconds / count)
    assert limits.burst == max(1, count // seconds)


# --- seats across workers ----------------------------------------------------------------


def test_three_seats_per_host_across_three_workers_and_b_is_not_slowed_by_a(
    worker: Any,
) -> None:
    # Two slots each: six in all, the seats of a and b together, so every worker takes some.
    for _ in range(3):
        worker("--concurrency", "2")
    import aiotaskq

    aiotaskq.enqueue_many([tasks.per_host.s("seats", "a", 0.4) for _ in range(30)])
    aiotaskq.enqueue_many([tasks.per_host.s("seats", "b", 0.4) for _ in range(30)])
    runs = wait_for(lambda: len(_runs("seats")) == 60 and _runs("seats"), timeout=60)
    assert _peak(runs, "a") == 3
    assert _peak(runs, "b") == 3
    assert len({e.pid for e in executions("seats")}) == 3  # the seats were shared out
    # Ten rounds of 0.4 s per host, side by side: b finished about when a did.
    for key in ("a", "b"):
        mine = [r for r in runs if r["key"] == key]
        span = max(r["end"] for r in mine) - min(r["start"] for r in mine)
        assert 3.9 <= span <= 7.0, (key, span)


def test_a_sync_task_with_a_limit(worker: Any) -> None:
    worker("--concurrency", "10", "--threads", "8")
    import aiotaskq

    aiotaskq.enqueue_many([tasks.per_key_sync.s("sync", "k", 0.3) for _ in range(8)])
    runs = wait_for(lambda: len(_runs("sync")) == 8 and _runs("sync"), timeout=60)
    assert _peak(runs) == 2


def test_a_limited_backlog_does_not_hold_back_other_tasks_of_its_queue(worker: Any) -> None:
    worker("--concurrency", "10")
    for _ in range(6):
        tasks.one_at_a_time.delay("slow", 3.0)
    started = time.monotonic()
    for n in range(20):
        tasks.record.delay("free", n)
    wait_for(lambda: len(executions("free")) == 20, timeout=30)
    assert time.monotonic() - started < 2.5  # not behind the 3 s runs
    assert len(executions("slow")) == 0


def test_a_quiet_key_is_not_held_back_by_a_busy_one(worker: Any) -> None:
    """Keys take turns: the quiet key's task starts among the first, although 40 of the busy
    key's were enqueued before it and the busy key has seats to spare."""
    worker("--concurrency", "3")
    import aiotaskq

    aiotaskq.enqueue_many([tasks.per_host.s("turns", "busy", 0.3) for _ in range(40)])
    tasks.per_host.delay("turns", "quiet", 0.3)
    runs = wait_for(lambda: len(_runs("turns")) == 41 and _runs("turns"), timeout=60)
    order = [r["key"] for r in sorted(runs, key=lambda r: r["start"])]
    assert order.index("quiet") < 6, order


def test_seats_of_a_killed_worker_come_back_once_its_heartbeat_is_stale(
    worker: Any, db: Any
) -> None:
    first = worker("--concurrency", "10")
    held = [tasks.per_host.delay("killed", "k", 60.0) for _ in range(3)]
    wait_for(
        lambda: (
            db.execute("SELECT count(*) FROM aiotaskq_task WHERE state = 'running'").fetchone()
            == (3,)
        ),
        what="three seats taken",
    )
    for _ in range(3):
        tasks.per_host.delay("after", "k", 0.0)
    first.signal(signal.SIGKILL)
    first.wait(10)
    killed_at = time.monotonic()
    worker("--concurrency", "10")
    wait_for(lambda: len(executions("after")) == 3, timeout=30, what="the three after")
    # DIRTY_AFTER is 3 s in the tests: the seats came back after it, and were taken soon.
    assert 2.5 <= time.monotonic() - killed_at <= 10
    assert all(r.state == "running" for r in held)  # Dirty, kept for a person


def test_a_retried_limited_task_gives_its_seat_up_while_it_waits(worker: Any) -> None:
    worker("--concurrency", "10")
    tasks.limited_flaky.delay("flaky", "one", 1)
    tasks.limited_flaky.delay("other", "one", 0)
    wait_for(lambda: executions("flaky") and executions("other"), timeout=30)
    runs = _runs("flaky") + _runs("other")
    assert len(executions("flaky:try")) == 2
    assert _peak(runs) == 1


# --- rates -------------------------------------------------------------------------------


def test_forty_tasks_at_ten_a_second_spread_over_about_three_seconds(worker: Any) -> None:
    worker("--concurrency", "2")
    worker("--concurrency", "2")
    import aiotaskq

    aiotaskq.enqueue_many([tasks.rated.s("rate", "api") for _ in range(40)])
    runs = wait_for(lambda: len(_runs("rate")) == 40 and _runs("rate"), timeout=60)
    starts = sorted(r["start"] for r in runs)
    span = starts[-1] - starts[0]
    assert 2.6 <= span <= 4.5, span
    # A bucket of ten, refilled at ten a second: no second holds more than twenty starts.
    for i, first in enumerate(starts):
        within = [s for s in starts[i:] if s < first + 1.0]
        assert len(within) <= 20
    # (Both workers claim for the key; whichever comes first at a token's time takes it.)


def test_another_key_has_its_own_bucket(worker: Any) -> None:
    worker("--concurrency", "50")
    import aiotaskq

    aiotaskq.enqueue_many([tasks.rated.s("own", "x") for _ in range(30)])
    aiotaskq.enqueue_many([tasks.rated.s("own", "y") for _ in range(10)])
    runs = wait_for(lambda: len(_runs("own")) == 40 and _runs("own"), timeout=60)
    y = sorted(r["start"] for r in runs if r["key"] == "y")
    assert y[-1] - y[0] < 0.8  # a full bucket of its own: all ten at once


# --- rows the worker does not know as limited --------------------------------------------


def test_a_row_with_a_key_of_a_task_without_limits_still_runs(worker: Any, db: Any) -> None:
    """A task whose limits were removed while its rows waited: the worker claims them as
    unlimited, within a poll interval (the tests' is 1 s here)."""
    result = tasks.record.delay("unkeyed")
    db.execute("UPDATE aiotaskq_task SET limit_key = 'old' WHERE id = %s", (result.id,))
    worker("--concurrency", "5", poll=1)
    wait_for(lambda: executions("unkeyed"), timeout=20)


# --- what status shows -------------------------------------------------------------------


def test_status_shows_each_key_in_use_with_its_seats_and_waiting(db: Any) -> None:
    for _ in range(4):
        tasks.per_host.delay("st", "a.example", 0.0)
    running = tasks.per_host.delay("st", "a.example", 0.0).id
    db.execute(
        "UPDATE aiotaskq_task SET state = 'running', worker_id = 'w', started_at = now(),"
        " alive_at = now(), attempt = 1 WHERE id = %s",
        (running,),
    )
    tasks.rated.delay("st", "api")
    shown = json.loads(run_cli("status", "--json").stdout)
    assert shown["limits"] == [
        {
            "task": "tests.app.tasks.per_host",
            "key": "a.example",
            "running": 1,
            "max_concurrent": 3,
            "rate_limit": None,
            "waiting": 4,
        },
        {
            "task": "tests.app.tasks.rated",
            "key": "api",
            "running": 0,
            "max_concurrent": None,
            "rate_limit": "10/s",
            "waiting": 1,
        },
    ]
    text = run_cli("status").stdout
    assert "limit key" in text
    line = next(x for x in text.splitlines() if "a.example" in x)
    assert line.split()[-3:] == ["1/3", "-", "4"]


async def test_a_claim_with_nothing_waiting_asks_for_no_second_look(db: Any) -> None:
    """With no key waiting for a seat or a token, the limited claim names no time to claim
    again (a worker would otherwise claim in a loop)."""
    from aiotaskq.db.claim import LimitTable, claim_limited
    from aiotaskq.db.connect import WorkerDatabase

    database = WorkerDatabase("aiotaskq-limits-test", 2)
    await database.open(wait=False)
    try:
        async with database.connection("test") as conn:
            table = LimitTable(["t"], [1], [None], [None])
            got = await claim_limited(conn, {"default": 0}, [10], table, None, "w", 3.0)
            assert (got.taken, got.wait_s) == ([], None)
    finally:
        await database.close()


def test_a_limited_task_run_again_by_hand_runs_within_a_second_or_so(worker: Any) -> None:
    """Run again writes no "limits" notification: the worker's limited claim finds it on its
    once-a-second look, well before the poll interval (5 s here)."""
    worker("--concurrency", "5", poll=5)
    result = tasks.limited_flaky.delay("again", "k", 4)  # four attempts fail: Failed
    wait_for(lambda: result.state == "failed", timeout=30, what="the failure")
    started = time.monotonic()
    assert "1" in run_cli("retry", "--failed").stdout
    wait_for(lambda: executions("again"), timeout=30, what="the run again")
    assert time.monotonic() - started < 4.0


async def test_the_pruner_deletes_buckets_full_again_and_keeps_the_others(db: Any) -> None:
    from aiotaskq.db.connect import WorkerDatabase
    from aiotaskq.worker.upkeep import Pruner

    db.execute(
        "INSERT INTO aiotaskq_limit_rate (name, key, tat) VALUES"
        " ('t', 'old', now() - interval '2 hours'), ('t', 'busy', now() + interval '1 second')"
    )
    database = WorkerDatabase("aiotaskq-limits-prune", 2)
    await database.open(wait=False)
    try:
        await Pruner(database, "test").prune_once()
    finally:
        await database.close()
    rows = db.execute("SELECT key FROM aiotaskq_limit_rate").fetchall()
    assert rows == [("busy",)]


async def test_freed_seats_wake_the_other_workers_limited_claim_alone(db: Any) -> None:
    # A worker that wrote outcomes of limited tasks notifies the queue with "seats <its id>":
    # the other workers' listeners wake their limited claim (not their ordinary claim, since
    # no ordinary task became ready), and its own listener ignores it (it woke itself).
    # Notifications arrive in order: an ordinary one sent last shows the others were read.
    wake, limited = Wake(), asyncio.Event()
    listener = Listener(
        ["q"], None, wake, 60.0, lambda payload: None, limited=limited, worker_id="h:1:me"
    )
    running = asyncio.create_task(listener.run())
    sender = await psycopg.AsyncConnection.connect(task_db_conninfo(), autocommit=True)

    async def send(*payloads: str) -> None:
        for payload in payloads:
            await sender.execute("SELECT pg_notify(%s, %s)", (channel_for("q"), payload))

    async def settled() -> None:
        deadline = asyncio.get_running_loop().time() + 10
        while not wake.is_set():
            assert asyncio.get_running_loop().time() < deadline, "no wake-up came"
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(listener.connected.wait(), 10)
        await settled()  # the wake-up of the first connect
        wake.clear(), limited.clear(), wake.take_ordinary()

        await send(seats_payload("h:2:other"))
        await settled()
        assert limited.is_set(), "another worker's freed seats wake the limited claim"
        assert not wake.take_ordinary(), "... and not the ordinary claim"

        wake.clear(), limited.clear()
        await send(seats_payload("h:1:me"), "")
        await settled()
        assert wake.take_ordinary()
        assert not limited.is_set(), "the worker's own notification of freed seats is ignored"

        wake.clear()
        await send("limits")
        await settled()
        assert limited.is_set(), "an enqueue of a limited task wakes the limited claim"
        assert wake.take_ordinary(), "... and the ordinary one"
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await sender.close()
