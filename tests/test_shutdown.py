"""Stopping a worker: SIGTERM drains within the grace period or gives tasks back; SIGKILL
leaves Dirty tasks; a terminated listener connection comes back by itself."""

from __future__ import annotations

import signal
import time
from typing import Any

from tests.app import tasks
from tests.conftest import executions, wait_for
from tests.test_worker import _status_json


def _rows(db: Any) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT state, attempt, worker_id, jsonb_array_length(errors) FROM aiotaskq_task"
    ).fetchall()


def test_sigterm_lets_in_flight_tasks_finish(worker: Any, db: Any) -> None:
    proc = worker("--grace", "20")
    for i in range(5):
        tasks.sleep_then_record.delay(f"graceful-{i}", 1.0)
    tasks.sleep_sync_then_record.delay("graceful-sync", 1.0)
    wait_for(
        lambda: (
            len([i for i in range(5) if executions(f"graceful-{i}:start")]) == 5
            and executions("graceful-sync:start")
        )
    )
    proc.signal(signal.SIGTERM)
    tasks.record.delay("enqueued-after-sigterm")
    assert proc.wait(30) == 0, proc.log()
    for i in range(5):
        assert len(executions(f"graceful-{i}")) == 1
    assert len(executions("graceful-sync")) == 1
    # Claiming stopped at SIGTERM: the late task waits, queued, for another worker.
    assert executions("enqueued-after-sigterm") == []
    assert _rows(db) == [("queued", 0, None, 0)]


def test_sigterm_past_grace_puts_tasks_back(worker: Any, db: Any) -> None:
    proc = worker("--grace", "1")
    for i in range(3):
        tasks.sleep_then_record.delay(f"too-long-{i}", 60)
    wait_for(lambda: all(executions(f"too-long-{i}:start") for i in range(3)))
    proc.signal(signal.SIGTERM)
    assert proc.wait(30) == 0, proc.log()
    assert "worker.released: 3 unfinished tasks put back to queued" in proc.log()
    # Queued again at once, the attempt counted, no error recorded: nothing stays running.
    assert sorted(_rows(db)) == [("queued", 1, None, 0)] * 3
    # ... and another worker runs them.
    tasks_left = db.execute("SELECT count(*) FROM aiotaskq_task").fetchone()[0]
    assert tasks_left == 3


def test_sync_task_past_grace_is_given_back_too(worker: Any, db: Any) -> None:
    proc = worker("--grace", "0.5")
    tasks.sleep_sync_then_record.delay("sync-too-long", 30)
    wait_for(lambda: executions("sync-too-long:start"))
    started = time.monotonic()
    proc.signal(signal.SIGTERM)
    assert proc.wait(30) == 0, proc.log()
    assert time.monotonic() - started < 15, "the process does not wait for the thread"
    assert _rows(db) == [("queued", 1, None, 0)]
    assert "abandoned" in proc.log()


def test_second_sigterm_skips_the_grace_period(worker: Any, db: Any) -> None:
    proc = worker("--grace", "120")
    tasks.sleep_then_record.delay("second-signal", 120)
    wait_for(lambda: executions("second-signal:start"))
    started = time.monotonic()
    proc.signal(signal.SIGTERM)
    wait_for(lambda: "worker.draining" in proc.log())
    proc.signal(signal.SIGINT)
    assert proc.wait(30) == 0, proc.log()
    assert time.monotonic() - started < 20
    assert _rows(db) == [("queued", 1, None, 0)]


def test_sigkill_leaves_a_dirty_task_in_status(worker: Any, db: Any) -> None:
    proc = worker()
    tasks.sleep_then_record.delay("killed", 60)
    wait_for(lambda: executions("killed:start"))
    assert _status_json()["queues"]["default"]["active"] == 1
    proc.signal(signal.SIGKILL)
    proc.wait(10)
    # DIRTY_AFTER is 3 s in the test settings.
    wait_for(lambda: _status_json()["queues"]["default"]["dirty"] == 1, timeout=20)
    (state, attempt, worker_id, errors) = _rows(db)[0]
    assert (state, attempt, errors) == ("running", 1, 0)
    assert str(proc.pid) in worker_id
    # Dirty tasks are kept for inspection, not run again by another worker.
    worker("--burst", wait=False).wait(30)
    assert len(executions("killed:start")) == 1


def test_listener_terminated_reconnects_and_misses_nothing(worker: Any, db: Any) -> None:
    proc = worker(poll=60)  # only a notification (or the reconnect) can wake it in time

    def listener_pid() -> int | None:
        row = db.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'aiotaskq-listener' "
            "AND datname = current_database()"
        ).fetchone()
        return row[0] if row else None

    for round_ in range(2):
        pid = wait_for(listener_pid)
        db.execute("SELECT pg_terminate_backend(%s)", (pid,))
        # Enqueued while the listener is away: its notification is lost.
        tasks.record.delay(f"while-away-{round_}")
        wait_for(lambda pid=pid: listener_pid() not in (None, pid), timeout=15)
        wait_for(lambda round_=round_: executions(f"while-away-{round_}"), timeout=15)
    assert proc.log().count("listener.reconnected") == 2
    assert "listener.lost" in proc.log()
    tasks.record.delay("after-reconnect")
    wait_for(lambda: executions("after-reconnect"), timeout=10)
