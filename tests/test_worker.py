"""The worker, end to end in real processes: transactions, scheduling, priorities, queues,
batch claims by two workers, and the status command."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest
from django.db import transaction

import aiotaskq
from aiotaskq.tasks.registry import registered
from tests.app import tasks
from tests.app.models import Execution
from tests.conftest import ROOT, executions, run_cli, wait_for


def _state(db: Any, task_id: uuid.UUID) -> str | None:
    row = db.execute("SELECT state FROM aiotaskq_task WHERE id = %s", (task_id,)).fetchone()
    return row[0] if row else None


def test_enqueue_in_a_rolled_back_atomic_never_runs(worker: Any, db: Any) -> None:
    worker()

    def enqueue_then_fail(label: str) -> None:
        with transaction.atomic():
            tasks.record.delay(label)
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        enqueue_then_fail("rolled-back")
    with transaction.atomic():
        tasks.record.delay("committed")
        with pytest.raises(RuntimeError):
            enqueue_then_fail("savepoint-rolled-back")  # a savepoint inside the outer atomic
    wait_for(lambda: executions("committed"))
    tasks.record.delay("sentinel")  # runs after the others had every chance to run
    wait_for(lambda: executions("sentinel"))
    assert executions("rolled-back") == []
    assert executions("savepoint-rolled-back") == []
    assert db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (0,)


def test_committed_enqueue_is_invisible_until_commit(worker: Any, db: Any) -> None:
    worker()
    with transaction.atomic():
        result = tasks.record.delay("late-commit")
        # Another session does not see it, and the worker cannot run it, until commit.
        assert _state(db, result.id) is None
    wait_for(lambda: executions("late-commit"))


def test_countdown_and_eta_wake_the_worker_at_the_eta(worker: Any, db: Any) -> None:
    worker(poll=60)  # the safety poll cannot be what runs it
    start = db.execute("SELECT clock_timestamp()").fetchone()[0]
    tasks.record.apply_async(("countdown",), countdown=1.5)
    tasks.record.apply_async(("eta",), eta=start + dt.timedelta(seconds=2.5))
    for label, due in (("countdown", 1.5), ("eta", 2.5)):
        (row,) = wait_for(lambda label=label: executions(label), timeout=15)
        late = (row.at - start).total_seconds()
        # Not before its time, and woken by the ETA, not by the 60 s poll.
        assert due <= late < due + 2.0, (label, late)


def test_expired_task_is_dropped_unrun(worker: Any, db: Any) -> None:
    now = db.execute("SELECT clock_timestamp()").fetchone()[0]
    expired = tasks.record.apply_async(("expired",), expires=now - dt.timedelta(seconds=1))
    later = tasks.record.apply_async(("expires-later",), expires=3600)
    proc = worker(poll=60)
    wait_for(lambda: executions("expires-later"))
    wait_for(lambda: _state(db, expired.id) is None and _state(db, later.id) is None)
    assert executions("expired") == []
    wait_for(lambda: "task.expired" in proc.log())


def test_priority_then_age_order(worker: Any) -> None:
    for i, priority in enumerate([0, 5, -1, 5, 10, 0]):
        tasks.record.apply_async((f"p{priority}-{i}",), priority=priority)
    proc = worker("--concurrency", "1", "--burst", wait=False)
    assert proc.wait(60) == 0, proc.log()
    order = [e.label for e in Execution.objects.order_by("id")]
    assert order == ["p10-4", "p5-1", "p5-3", "p0-0", "p0-5", "p-1-2"]


def test_a_worker_runs_only_its_queues(worker: Any, db: Any) -> None:
    proc = worker("--queues", "a")
    tasks.record_b.delay("in-b")
    tasks.record_a.delay("in-a")
    tasks.record.apply_async(("default-sent-to-a",), queue="a")
    wait_for(lambda: executions("in-a") and executions("default-sent-to-a"))
    proc.signal(15)
    assert proc.wait(30) == 0
    assert executions("in-b") == []
    assert db.execute("SELECT queue, state FROM aiotaskq_task").fetchall() == [("b", "queued")]


def test_two_workers_run_10k_tasks_each_once(worker: Any, db: Any) -> None:
    total = 10_000
    aiotaskq.enqueue_many(tasks.record_sync.s(f"n{i}") for i in range(total))
    first = worker("--concurrency", "50", "--threads", "8", "--burst", wait=False)
    second = worker("--concurrency", "50", "--threads", "8", "--burst", wait=False)
    assert first.wait(240) == 0, first.log()
    assert second.wait(240) == 0, second.log()
    counts = db.execute(
        "SELECT count(*), count(DISTINCT label), count(DISTINCT pid) FROM testapp_execution"
    ).fetchone()
    assert counts[0] == total, "every task ran, none twice"
    assert counts[1] == total
    assert counts[2] == 2, "both workers took part"
    assert db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (0,)


def test_unregistered_task_fails_with_the_reason(worker: Any, db: Any) -> None:
    @aiotaskq.task(name="tests.only_in_this_process")
    def only_here() -> None: ...

    worker()
    result = only_here.delay()
    wait_for(lambda: _state(db, result.id) == "failed")
    (errors,) = db.execute(
        "SELECT errors FROM aiotaskq_task WHERE id = %s", (result.id,)
    ).fetchone()
    assert "No task named 'tests.only_in_this_process' is registered" in errors[0]["message"]
    registered().pop("tests.only_in_this_process")
    tasks.record.delay("still-running")
    wait_for(lambda: executions("still-running"))


def test_arguments_that_no_longer_fit_fail_with_the_reason(worker: Any, db: Any) -> None:
    # Enqueue refuses such a call; a row written before the task's signature changed (here:
    # by hand) still reaches the worker.
    task_id = uuid.uuid4()
    db.execute(
        "INSERT INTO aiotaskq_task (id, name, kwargs) VALUES (%s, %s, %s)",
        (task_id, tasks.record.name, '{"label": "x", "renamed": 1}'),
    )
    worker()
    wait_for(lambda: _state(db, task_id) == "failed")
    (errors,) = db.execute("SELECT errors FROM aiotaskq_task WHERE id = %s", (task_id,)).fetchone()
    assert "no longer fit the task's signature" in errors[0]["message"]
    assert "renamed" in errors[0]["message"]


def _status_json() -> dict[str, Any]:
    return json.loads(run_cli("status", "--json").stdout)  # type: ignore[no-any-return]


def test_status_counts_every_group(db: Any) -> None:
    tasks.record.delay("pending")
    tasks.record.apply_async(("future",), countdown=3600)
    tasks.record_a.delay("other-queue")
    db.execute(
        "INSERT INTO aiotaskq_task (id, name, state, alive_at, attempt, worker_id) VALUES "
        # A heartbeat in the future stays fresh however slow the CLI is on a loaded machine.
        "(gen_random_uuid(), 'x', 'running', now() + interval '1 hour', 1, 'w'),"
        "(gen_random_uuid(), 'x', 'running', now() - interval '1 hour', 1, 'w'),"
        "(gen_random_uuid(), 'x', 'failed', now(), 1, 'w'),"
        # A result kept by Django's tasks framework.
        "(gen_random_uuid(), 'x', 'succeeded', now(), 1, 'w')"
    )
    status = _status_json()["queues"]
    default = status["default"]
    age = default.pop("oldest_pending_age_s")
    assert isinstance(age, float)
    assert age >= 0
    assert default == {
        "pending": 1,
        "future": 1,
        "active": 1,
        "dirty": 1,
        "failed": 1,
        "succeeded": 1,
        "cap_per_worker": None,
        "slots_in_use": 1,
    }
    assert status["a"]["pending"] == 1
    text = run_cli("status").stdout
    assert text.splitlines()[0].split() == [
        "queue",
        "pending",
        "future",
        "active",
        "dirty",
        "failed",
        "succeeded",
        "oldest",
        "pending",
        "cap/worker",
    ]


def test_manage_py_command_runs_a_worker(db: Any) -> None:
    tasks.record.delay("via-manage-py")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "django",
            "aiotaskq",
            "run",
            "--burst",
            "--concurrency",
            "5",
            "--settings",
            "tests.settings",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "connections: " in out.stdout
    assert "concurrency: 5" in out.stdout
    assert executions("via-manage-py")


def test_worker_prints_its_budget(worker: Any) -> None:
    proc = worker("--concurrency", "200", "--threads", "4", "--db-threads", "2", "--queues", "a,b")
    log = proc.log()
    assert "queues:      a, b" in log
    assert "concurrency: 200" in log
    assert (
        "10 connections at most (1 listener + 3 pool + 4 sync-task threads + 2 ORM threads "
        "of async tasks)"
    ) in log


def test_async_orm_tasks_stay_within_the_connection_budget(worker: Any, db: Any) -> None:
    from django.db import connections

    connections.close_all()
    total = 1000
    aiotaskq.enqueue_many(tasks.orm_read_write.s(f"o{i}") for i in range(total))
    proc = worker("--concurrency", "200", "--threads", "2", "--db-threads", "3", wait=False)
    budget = 1 + 3 + 2 + 3
    me = db.info.backend_pid
    seen = 0

    def others() -> int:
        return int(
            db.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend' AND pid <> %s",
                (me,),
            ).fetchone()[0]
        )

    def done() -> bool:
        nonlocal seen
        seen = max(seen, others())
        return Execution.objects.filter(value="written").count() == total

    wait_for(done, timeout=120, interval=0.01)
    connections.close_all()
    assert f"{budget} connections at most" in proc.log()
    assert 0 < seen <= budget, f"{seen} connections seen, budget {budget}"
    proc.signal(15)
    assert proc.wait(30) == 0
    wait_for(lambda: others() == 0, timeout=10, what="the worker's connections to close")
