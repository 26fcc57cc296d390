"""Faults 2, 7 and 8: a worker killed, frozen, or its loop blocked."""

from __future__ import annotations

import signal
from typing import Any

from tests.app import tasks
from tests.app.models import Execution
from tests.conftest import executions, wait_for
from tests.test_worker import _status_json


def test_sigkill_with_200_in_flight_then_rescued_once_each(worker: Any, db: Any) -> None:
    first = worker("--concurrency", "200")
    for i in range(200):
        tasks.slow_idempotent.delay(f"k{i}", 60)
    wait_for(lambda: Execution.objects.filter(label__endswith=":start").count() == 200)
    first.signal(signal.SIGKILL)
    first.wait(10)
    # All 200 turn Dirty within the threshold (3 s in the test settings).
    wait_for(lambda: _status_json()["queues"]["default"]["dirty"] == 200, timeout=15)
    # A second worker rescues them (on_dirty="retry") and each runs once more.
    second = worker("--concurrency", "200")
    wait_for(lambda: Execution.objects.exclude(label__endswith=":start").count() == 200, timeout=30)
    for i in range(200):
        starts = executions(f"k{i}:start")
        assert [e.pid for e in starts] == [first.pid, second.pid], f"k{i}"
        assert len(executions(f"k{i}")) == 1
    wait_for(lambda: db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (0,))
    assert "task.rescued" in second.log()


def test_frozen_worker_late_ack_changes_nothing(worker: Any, db: Any) -> None:
    frozen = worker()
    result = tasks.succeed_first_fail_rerun.delay("frozen", 1.0)
    wait_for(lambda: executions("frozen:start"))
    frozen.signal(signal.SIGSTOP)
    try:
        # Past the dirty threshold another worker rescues it; its rerun fails on purpose,
        # so the row stays (failed, attempt 2) for the late ack to find.
        rescuer = worker()
        wait_for(
            lambda: (
                db.execute("SELECT state FROM aiotaskq_task WHERE id = %s", (result.id,)).fetchone()
                == ("failed",)
            ),
            timeout=20,
        )
    finally:
        frozen.signal(signal.SIGCONT)
    # The frozen worker wakes, its first run finishes and it acks attempt 1: the lease
    # check makes that a no-op, and the worker says so.
    wait_for(lambda: executions("frozen"), timeout=10)
    wait_for(lambda: "outcome.discarded: 1 of 1" in frozen.log(), timeout=10)
    state, attempt, worker_id, errors = db.execute(
        "SELECT state, attempt, worker_id, errors FROM aiotaskq_task WHERE id = %s",
        (result.id,),
    ).fetchone()
    assert (state, attempt) == ("failed", 2)
    assert str(rescuer.pid) in worker_id
    assert [e["type"] for e in errors] == ["aiotaskq.errors.Dirty", "builtins.RuntimeError"]


def test_blocked_loop_is_logged_with_the_task_name(worker: Any, db: Any) -> None:
    proc = worker(env={"AIOTASKQ_TEST_DIRTY_AFTER": "30"})
    tasks.block_loop.delay("blocker", 5.0)
    wait_for(lambda: executions("blocker"), timeout=20)
    wait_for(lambda: "loop.stalled" in proc.log())
    stalled = [line for line in proc.log().splitlines() if "loop.stalled" in line]
    assert "tests.app.tasks.block_loop" in stalled[0]
    assert len(executions("blocker")) == 1
    wait_for(lambda: db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (0,))
