"""``aiotaskq run --processes``: a child killed under load, a stop with every child busy,
recycling under load, and a plain function past its hard time limit. Real processes and
real signals; the children's pids come from the supervisor's log."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import aiotaskq
from tests.app import tasks
from tests.app.models import Execution
from tests.conftest import executions, wait_for
from tests.supervision import child_pids, supervisor, wait_children_started
from tests.test_worker import _status_json

__all__ = ["supervisor"]  # the fixture


def _starts() -> list[Execution]:
    return list(Execution.objects.filter(label__endswith=":start"))


def _running(db: Any) -> int:
    return int(
        db.execute("SELECT count(*) FROM aiotaskq_task WHERE state = 'running'").fetchone()[0]
    )


def test_a_child_killed_under_load_is_replaced(supervisor: Any, db: Any) -> None:
    sup = supervisor("--processes", "2", "--concurrency", "5")
    wait_children_started(sup, 2)
    first = {pid for _, pid in child_pids(sup)}
    for i in range(10):
        tasks.sleep_then_record.delay(f"load-{i}", 60)
    wait_for(lambda: len(_starts()) == 10)
    # At --concurrency 5, each child holds five.
    holders = sorted({e.pid for e in _starts()})
    assert set(holders) == first
    victim, survivor = holders
    held = sum(1 for e in _starts() if e.pid == victim)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: f"pid {victim} killed by SIGKILL" in sup.log())
    wait_for(lambda: len(child_pids(sup)) == 3, what="a replacement")
    (_, replacement), *_ = [c for c in child_pids(sup) if c[1] not in first]
    assert f"pid {replacement} (replacing pid {victim})" in sup.log()
    wait_children_started(sup, 3)
    # The killed child's tasks turn Dirty as they would without a supervisor (DIRTY_AFTER
    # is 3 s in the test settings); the survivor's stay active, heartbeat fresh.
    wait_for(lambda: _status_json()["queues"]["default"]["dirty"] == held, timeout=15)
    assert _status_json()["queues"]["default"]["active"] == 10 - held
    # The others go on: the survivor is full, the replacement takes new work.
    tasks.record.delay("after-kill")
    wait_for(lambda: executions("after-kill"))
    assert executions("after-kill")[0].pid == replacement
    os.kill(survivor, 0)
    assert f"pid {survivor} " not in "".join(
        line
        for line in sup.log().splitlines(keepends=True)
        if "supervisor.child_" in line and "child_started" not in line
    )
    assert sup.proc.poll() is None


def test_sigterm_with_every_child_busy_drains_each_within_grace(supervisor: Any, db: Any) -> None:
    sup = supervisor("--processes", "2", "--concurrency", "3", "--grace", "20")
    wait_children_started(sup, 2)
    for i in range(4):
        tasks.sleep_then_record.delay(f"busy-{i}", 2.0)
    for i in range(2):
        tasks.sleep_sync_then_record.delay(f"busy-sync-{i}", 2.0)
    wait_for(lambda: len(_starts()) == 6)
    assert len({e.pid for e in _starts()}) == 2, "both children are busy"
    started = time.monotonic()
    sup.signal(signal.SIGTERM)
    assert sup.wait(40) == 0, sup.log()
    assert time.monotonic() - started < 20, "within --grace"
    for label in [f"busy-{i}" for i in range(4)] + [f"busy-sync-{i}" for i in range(2)]:
        assert len(executions(label)) == 1, label
    assert _running(db) == 0
    assert db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (0,)
    log = sup.log()
    assert log.count("supervisor.child_exited") == 2
    assert log.count("worker.draining") == 2
    assert "child_died" not in log
    assert "worker.released" not in log


def test_a_second_signal_is_forwarded_and_skips_the_grace(supervisor: Any, db: Any) -> None:
    sup = supervisor("--processes", "2", "--concurrency", "1", "--grace", "120")
    wait_children_started(sup, 2)
    for i in range(2):
        tasks.sleep_then_record.delay(f"long-{i}", 120)
    wait_for(lambda: len(_starts()) == 2)
    started = time.monotonic()
    sup.signal(signal.SIGTERM)
    wait_for(lambda: sup.log().count("worker.draining") == 2)
    sup.signal(signal.SIGINT)
    assert sup.wait(30) == 0, sup.log()
    assert time.monotonic() - started < 20
    assert sup.log().count("worker.stopping_now") == 2
    assert db.execute("SELECT state, attempt FROM aiotaskq_task").fetchall() == [
        ("queued", 1),
        ("queued", 1),
    ]


def test_recycling_under_load_runs_every_task_once(supervisor: Any, ledger: Any, db: Any) -> None:
    sup = supervisor(
        "--processes", "2", "--concurrency", "10", "--max-tasks-per-process", "50", env=ledger.env
    )
    wait_children_started(sup, 2)
    labels = [f"r{i}" for i in range(500)]
    aiotaskq.enqueue_many(tasks.ledger_async.s(label) for label in labels)
    wait_for(lambda: len(ledger.counts()) == 500, timeout=120, interval=0.2)
    wait_for(lambda: db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (0,))
    counts = ledger.counts()
    assert set(counts) == set(labels), "every task ran"
    assert max(counts.values()) == 1, "none twice"
    # 50 tasks a process: 10 lifetimes, each recycled once it has started its 50.
    wait_for(lambda: sup.log().count("worker.recycled: 50 tasks") >= 9, timeout=20)
    per_pid: dict[int, int] = {}
    for _, event, pid in ledger.lines():
        per_pid[pid] = per_pid.get(pid, 0) + (event == "ran")
    assert len(per_pid) >= 10
    assert max(per_pid.values()) <= 50
    wait_for(lambda: sup.log().count("supervisor.replacing") >= 9, timeout=30)
    assert "child_died" not in sup.log()
    assert sup.proc.poll() is None, "the supervisor still runs"


def test_a_plain_function_past_its_hard_limit_replaces_its_process(
    supervisor: Any, db: Any
) -> None:
    sup = supervisor("--processes", "2", "--concurrency", "2", "--grace", "20")
    wait_children_started(sup, 2)
    result = tasks.overrun_sync.delay("hog", 60)
    (hog,) = wait_for(lambda: executions("hog:start"))
    for i in range(3):
        tasks.sleep_then_record.delay(f"beside-{i}", 1.0)
    # time_limit 1 s + the 2 s margin: the attempt fails with TimeLimitExceeded
    # (max_retries=0), and the process exits with "replace me" without waiting for its thread.
    wait_for(
        lambda: (
            db.execute("SELECT state FROM aiotaskq_task WHERE id = %s", (result.id,)).fetchone()
            == ("failed",)
        ),
        timeout=20,
    )
    (errors,) = db.execute(
        "SELECT errors FROM aiotaskq_task WHERE id = %s", (result.id,)
    ).fetchone()
    assert [e["type"] for e in errors] == ["aiotaskq.errors.TimeLimitExceeded"]
    wait_for(lambda: f"pid {hog.pid} exited with status 75" in sup.log(), timeout=30)
    wait_for(lambda: len(child_pids(sup)) == 3, what="a replacement")
    assert "task.hard_time_limit" in sup.log()
    assert "worker.recycled: tests.app.tasks.overrun_sync" in sup.log()
    # Every other task, on either child, ran once to its end: none was given back.
    for i in range(3):
        wait_for(lambda i=i: executions(f"beside-{i}"), timeout=20)
        assert len(executions(f"beside-{i}:start")) == 1
    assert "worker.released" not in sup.log()
    (other,) = {pid for _, pid in child_pids(sup)[:2]} - {hog.pid}
    os.kill(other, 0)
    assert f"pid {other} exited" not in sup.log()
    assert executions("hog") == [], "the overrunning function never finished"
    tasks.record.delay("after-hog")
    wait_for(lambda: executions("after-hog"))


def _gone(pid: int) -> bool:
    """Exited (a zombie nobody has reaped yet counts as exited)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "\nState:\tZ" in status


def test_children_stop_by_themselves_when_the_supervisor_is_killed(
    supervisor: Any, db: Any
) -> None:
    sup = supervisor("--processes", "2", "--grace", "20")
    wait_children_started(sup, 2)
    tasks.sleep_then_record.delay("orphaned", 1.0)
    wait_for(lambda: executions("orphaned:start"))
    sup.signal(signal.SIGKILL)
    sup.wait(10)
    pids = [pid for _, pid in child_pids(sup)]
    wait_for(lambda: all(_gone(pid) for pid in pids), timeout=30, what="the children to stop")
    assert sup.log().count("worker.orphaned") == 2
    # The task in flight was let finish, as on SIGTERM.
    assert len(executions("orphaned")) == 1
    assert db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (0,)
