"""Ready positions and the worker's marks against the real PostgreSQL and real workers: a
task whose transaction commits after the worker's mark passed its position still runs, and
promptly (a short transaction, one past LONG_WRITER); a new priority is learned while the
worker runs; a row locked by another transaction while claims pass it runs once that one
lets go (within the full look, RESYNC_EVERY); retries, snoozes and released tasks take a new
place; and, the point of it all, under a held xmin horizon a claim from the worker's start
reads a few buffers where a claim from the start of the queue walks the dead entries of
every task taken before.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import transaction
from psycopg import sql

import aiotaskq
from aiotaskq.db import sql as queries
from aiotaskq.db.listen import channel_for
from aiotaskq.worker.marks import LONG_WRITER, RESYNC_EVERY
from tests.app import tasks
from tests.app.models import Execution
from tests.conftest import executions, task_db_conninfo, wait_for

#: How long a task that can run may take to run, on a loaded CI machine.
PROMPT = 10.0


@pytest.fixture
def other() -> Iterator[psycopg.Connection[Any]]:
    """A second connection, in a transaction (not autocommit); whatever it holds is rolled
    back at the end of the test, failed or not."""
    conn = psycopg.connect(task_db_conninfo())
    try:
        yield conn
    finally:
        conn.rollback()
        conn.close()


def _insert(conn: psycopg.Connection[Any], label: str, priority: int = 0) -> uuid.UUID:
    task_id = uuid.uuid4()
    conn.execute(
        "INSERT INTO aiotaskq_task (id, name, priority, args) VALUES (%s, %s, %s, %s)",
        (task_id, tasks.record.name, priority, json.dumps([label])),
    )
    return task_id


def _pos(conn: psycopg.Connection[Any], task_id: uuid.UUID) -> int:
    row = conn.execute("SELECT pos FROM aiotaskq_task WHERE id = %s", (task_id,)).fetchone()
    assert row is not None
    assert row[0] is not None
    return int(row[0])


def _run_others(count: int, prefix: str) -> None:
    """Enqueue ``count`` tasks after the open one and wait until they all ran: the worker's
    mark is past their positions, so past the open row's."""
    for i in range(count):
        tasks.record.delay(f"{prefix}-{i}")
    wait_for(
        lambda: Execution.objects.filter(label__startswith=f"{prefix}-").count() == count,
        timeout=30,
        what=f"the {count} tasks enqueued after the open one",
    )


def _ran_once(label: str) -> None:
    """Exactly once: a sentinel enqueued after it has run too, so a second run had time."""
    tasks.record.delay(f"{label}:sentinel")
    wait_for(lambda: executions(f"{label}:sentinel"), timeout=30)
    assert len(executions(label)) == 1


def _open_for(conn: psycopg.Connection[Any], seconds: float) -> None:
    """Wait until the transaction of ``conn`` has been open for ``seconds`` (its own clock)."""

    def open_long_enough() -> bool:
        row = conn.execute("SELECT extract(epoch FROM clock_timestamp() - now())").fetchone()
        assert row is not None
        return float(row[0]) >= seconds

    wait_for(open_long_enough, timeout=seconds + 30, interval=0.05)


@pytest.mark.parametrize("held", [0.0, 3 * LONG_WRITER], ids=["short", "long"])
def test_a_late_commit_below_the_mark_runs_promptly(
    worker: Any, db: Any, other: psycopg.Connection[Any], held: float
) -> None:
    worker("--concurrency", "5", poll=60)  # the safety poll cannot be what runs it
    _run_others(3, "before")
    late = _insert(other, "late")
    late_pos = _pos(other, late)
    _run_others(20, "after")
    (after_pos,) = db.execute("SELECT pg_sequence_last_value('aiotaskq_task_pos')").fetchone()
    assert after_pos > late_pos + 10, "the others took places after the open row"
    _open_for(other, held)
    other.commit()
    committed = time.monotonic()
    wait_for(lambda: executions("late"), timeout=PROMPT, what="the late task to run")
    assert time.monotonic() - committed < PROMPT
    _ran_once("late")


def test_a_late_commit_through_djangos_atomic_in_a_thread(worker: Any) -> None:
    """The public API in a transaction.atomic() of another thread, held past LONG_WRITER
    while the worker runs tasks enqueued after it."""
    worker("--concurrency", "5", poll=60)
    enqueued = threading.Event()
    release = threading.Event()
    failed: list[BaseException] = []

    def producer() -> None:
        from django.db import connections

        try:
            with transaction.atomic():
                tasks.record.delay("late-atomic")
                enqueued.set()
                if not release.wait(60):
                    raise AssertionError("never released")
        except BaseException as exc:
            failed.append(exc)
            enqueued.set()
        finally:
            connections.close_all()

    thread = threading.Thread(target=producer)
    thread.start()
    try:
        assert enqueued.wait(30)
        _run_others(20, "after-atomic")
        held_since = time.monotonic()
        wait_for(lambda: time.monotonic() - held_since > 2 * LONG_WRITER, interval=0.05)
        assert executions("late-atomic") == []
    finally:
        release.set()
        thread.join(60)
    assert not failed, failed
    wait_for(lambda: executions("late-atomic"), timeout=PROMPT, what="the late task to run")
    _ran_once("late-atomic")


def test_a_new_priority_is_learned_while_the_worker_runs(worker: Any, db: Any) -> None:
    worker("--concurrency", "1", poll=60)
    _run_others(3, "default-only")
    # The worker is busy while the next ones are queued, all in one transaction: when its
    # slot frees, the priority 7 it has never seen must come first.
    tasks.sleep_then_record.delay("busy", 1.0)
    wait_for(lambda: executions("busy:start"))
    with transaction.atomic():
        for i in range(5):
            tasks.record.apply_async((f"p0-{i}",), priority=0)
        tasks.record.apply_async(("p7",), priority=7)
        for i in range(5, 10):
            tasks.record.apply_async((f"p0-{i}",), priority=0)
    wait_for(
        lambda: Execution.objects.filter(label__startswith="p").count() == 11,
        timeout=30,
        what="the eleven tasks",
    )
    order = [e.label for e in Execution.objects.filter(label__startswith="p").order_by("id")]
    assert order == ["p7", *(f"p0-{i}" for i in range(10))]
    # And one enqueued alone while the worker idles runs too.
    tasks.record.apply_async(("p3-alone",), priority=3)
    wait_for(lambda: executions("p3-alone"), timeout=PROMPT)


@pytest.mark.parametrize("how", ["for-update", "revoke"])
def test_a_row_locked_while_claims_pass_it_runs_once_let_go(
    worker: Any, db: Any, other: psycopg.Connection[Any], how: str
) -> None:
    held = tasks.record.delay("held")
    if how == "for-update":
        other.execute("SELECT 1 FROM aiotaskq_task WHERE id = %s FOR UPDATE", (held.id,))
    else:
        # A revoke in a transaction that is then rolled back: its DELETE holds the row.
        rows = other.execute(
            queries.text("revoke"), {"ids": [held.id], "channel": "aiotaskq/control"}
        ).fetchall()
        assert rows == [(held.id, True)]
    worker("--concurrency", "5", poll=60)
    _run_others(20, f"past-{how}")
    assert executions("held") == []
    other.rollback()
    wait_for(
        lambda: executions("held"),
        timeout=RESYNC_EVERY + 25,
        what="the task let go to run (at the full look at the latest)",
    )
    _ran_once("held")


def test_retries_snoozes_and_countdown_retries_run_again(worker: Any, db: Any) -> None:
    worker("--concurrency", "5", poll=60)
    _run_others(5, "warm")
    tasks.flaky.delay("flaky", 2)  # retried twice, 0.1 s later each: through "promote"
    tasks.snooze_once.delay("snoozed")  # snoozed 0.3 s once
    wait_for(lambda: len(executions("flaky")) == 3, timeout=PROMPT, what="three runs")
    wait_for(lambda: len(executions("snoozed")) == 2, timeout=PROMPT, what="two runs")
    # A retry due at once takes a new place at the end of its queue, past the worker's
    # mark; written here by the "retry" statement for a task another worker ("ghost") held.
    ghost = uuid.uuid4()
    db.execute(
        "INSERT INTO aiotaskq_task (id, name, args, state, attempt, worker_id, started_at, "
        "alive_at) VALUES (%s, %s, %s, 'running', 1, 'ghost', now(), now())",
        (ghost, tasks.record.name, json.dumps(["ghost-retried"])),
    )
    _run_others(5, "past-ghost")
    (retried, _) = db.execute(
        queries.text("retry"),
        {
            "items": json.dumps([{"id": str(ghost), "attempt": 1, "countdown": 0}]),
            "worker_id": "ghost",
            # As the worker sends it. (Without it the task waits for the poll: the marks
            # wake the fetcher only for a mark lowered or a priority learned.)
            "channels": [channel_for("default")],
        },
    ).fetchone()
    assert retried == 1
    assert _pos(db, ghost) > 0
    wait_for(lambda: executions("ghost-retried"), timeout=PROMPT)
    _ran_once("ghost-retried")
    wait_for(lambda: len(executions("flaky")) == 3)
    assert len(executions("snoozed")) == 2


def test_a_released_task_runs_on_a_worker_whose_mark_is_past_it(worker: Any, db: Any) -> None:
    """Released by a graceful stop, a task takes a new place: a worker already running,
    whose mark is far past the task's first place, runs it."""
    first = worker("--concurrency", "1", "--grace", "0.5", "--queues", "default")
    tasks.sleep_then_record.delay("released", 2.0)
    wait_for(lambda: executions("released:start"))
    (first_pos,) = db.execute("SELECT pos FROM aiotaskq_task").fetchone()
    second = worker("--concurrency", "5", poll=60)
    _run_others(10, "past-released")
    first.signal(signal.SIGTERM)
    assert first.wait(30) == 0, first.log()
    assert "worker.released" in first.log()
    wait_for(lambda: executions("released"), timeout=PROMPT + 2, what="the released task")
    assert len(executions("released:start")) == 2
    _ran_once("released")
    assert second.proc.poll() is None
    assert first_pos > 0


def test_tasks_run_promptly_after_the_positions_restart(worker: Any, db: Any) -> None:
    worker("--concurrency", "5", poll=60)
    _run_others(50, "before-restart")
    # What `manage.py flush` does (Django resets the sequences its tables own).
    db.execute("TRUNCATE aiotaskq_task RESTART IDENTITY")
    wait_for(lambda: db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (0,))
    for i in range(3):
        label = f"after-restart-{i}"
        tasks.record.delay(label)
        wait_for(lambda: executions(label), timeout=5, what=label)  # noqa: B023 - waited at once


# --- The goal: under a held horizon, a claim no longer walks the tasks taken before.

BATCHES = 5
BATCH = 2000
#: A claim from the worker's start finds its few index pages and nothing else: a bound that
#: does not grow with the tasks taken (measured: 14 after 10,000 tasks, against some 270
#: from position 0).
NEAR_BUFFERS = 40


def _claim_buffers(db: psycopg.Connection[Any], start: int) -> int:
    params = {
        "queues": ["default"],
        "priorities": [0],
        "starts": [start],
        "lanes": [0],
        "demands": [50],
        "worker_id": "explain",
    }
    with db.transaction(force_rollback=True):
        ((explained,),) = db.execute(
            sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ") + sql.SQL(queries.text("claim")),
            params,
        ).fetchall()
    top = explained[0]["Plan"]
    return int(top["Shared Hit Blocks"]) + int(top["Shared Read Blocks"])


def test_under_a_held_horizon_claims_do_not_walk_the_tasks_taken(
    worker: Any, db: Any, other: psycopg.Connection[Any]
) -> None:
    # BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT txid_current(); and nothing else.
    other.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    other.execute("SELECT txid_current()")
    (held,) = db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND backend_xmin IS NOT NULL",
        (other.info.backend_pid,),
    ).fetchone()
    assert held == 1, "the holder holds the horizon"
    worker("--concurrency", "50", poll=60)
    measured: list[tuple[int, int]] = []
    for n in range(BATCHES):
        aiotaskq.enqueue_many(tasks.noop.s() for _ in range(BATCH))
        wait_for(
            lambda: db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (0,),
            timeout=120,
            what=f"batch {n} to be taken",
        )
        (last,) = db.execute("SELECT pg_sequence_last_value('aiotaskq_task_pos')").fetchone()
        assert last >= (n + 1) * BATCH
        # Where the worker's next claim starts: just past the last task taken (a little
        # below, as after a late commit), and where a claim without marks starts.
        measured.append((_claim_buffers(db, last + 1 - 10), _claim_buffers(db, 0)))
    (first_near, first_all), (near, graveyard) = measured[0], measured[-1]
    # From the worker's start: a few index pages, however many tasks were taken before.
    assert near <= NEAR_BUFFERS, measured
    assert near <= first_near + 5, f"grows with the tasks taken: {measured}"
    # From the start of the queue: every dead entry of every task taken, and their heap
    # pages (consecutive entries on one heap page count once), growing with them.
    assert graveyard >= 3 * first_all, f"the dead entries were not walked: {measured}"
    assert graveyard > 10 * near, measured
    (still,) = db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND backend_xmin IS NOT NULL",
        (other.info.backend_pid,),
    ).fetchone()
    assert still == 1, "the horizon was held throughout"
