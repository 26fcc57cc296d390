"""Recycling a single worker (``--max-tasks-per-process``, ``--max-memory-per-process``),
the options of ``--processes``, the supervisor from ``manage.py``, and the supervisor's
restart policy with real children that exit at once."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from typing import Any

import pytest

from aiotaskq.worker.recycle import REPLACE_ME
from aiotaskq.worker.supervisor import Supervisor, child_command
from tests.app import tasks
from tests.app.models import Execution
from tests.conftest import ROOT, executions


def _states(db: Any) -> list[tuple[str, int]]:
    return db.execute("SELECT state, count(*) FROM aiotaskq_task GROUP BY state").fetchall()


def test_max_tasks_alone_drains_and_exits_0(worker: Any, db: Any) -> None:
    for i in range(30):
        tasks.record.delay(f"t{i}")
    proc = worker("--max-tasks-per-process", "20", "--concurrency", "5", wait=False)
    assert proc.wait(60) == 0, proc.log()
    assert "worker.recycled: 20 tasks" in proc.log()
    assert Execution.objects.count() == 20
    assert _states(db) == [("queued", 10)], "nothing left running, the rest untouched"
    # The next start runs the rest.
    again = worker("--max-tasks-per-process", "20", "--burst", wait=False)
    assert again.wait(60) == 0, again.log()
    for i in range(30):
        assert len(executions(f"t{i}")) == 1
    assert db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (0,)


def test_max_memory_alone_drains_and_exits_0(worker: Any, db: Any) -> None:
    tasks.sleep_then_record.delay("in-flight", 1.0)
    # Every Python process is past 1 MB: the first look (after a second) recycles it.
    proc = worker("--max-memory-per-process", "1", wait=False)
    assert proc.wait(60) == 0, proc.log()
    assert "worker.recycled: RSS " in proc.log()
    assert "(limit 1 MB)" in proc.log()
    assert ("running", 1) not in _states(db)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--processes", "0"),
        ("--processes", "two"),
        ("--max-tasks-per-process", "-1"),
        ("--max-memory-per-process", "1.5"),
    ],
)
def test_bad_process_options_are_one_line(option: str, value: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "aiotaskq.cli", "run", option, value, "--settings=tests.settings"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    (line,) = out.stderr.splitlines()
    assert line.startswith(f"aiotaskq run: error: argument {option}: must be a positive integer")


def test_manage_py_runs_a_supervisor(db: Any) -> None:
    for i in range(20):
        tasks.record.delay(f"m{i}")
    out = subprocess.run(
        [
            *(sys.executable, "-m", "django", "aiotaskq", "run"),
            *("--processes", "2", "--burst", "--settings", "tests.settings"),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert out.returncode == 0, out.stderr
    assert "aiotaskq supervisor" in out.stdout
    # Each child drained in burst mode and exited 0: done, not replaced.
    assert out.stderr.count("supervisor.child_done") == 2, out.stderr
    assert out.stderr.count("worker.started") == 2
    assert all(len(executions(f"m{i}")) == 1 for i in range(20))


def test_child_command_drops_processes_and_marks_the_child() -> None:
    cmd = ["py", "-m", "aiotaskq.cli", "run", "--processes", "4", "--grace=5", "--processes=2"]
    assert child_command(cmd) == ["py", "-m", "aiotaskq.cli", "run", "--grace=5", "--supervised"]


def _supervise(code: str, processes: int, until: Any) -> tuple[int, list[str]]:
    """Run a supervisor of ``python -c CODE`` children until ``until(messages)`` is true (then
    stop it) or it returns by itself; return its status and its log messages."""
    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Keep()
    log = logging.getLogger("aiotaskq.worker.supervisor")
    log.addHandler(handler)
    log.setLevel(logging.INFO)

    async def main() -> int:
        sup = Supervisor([sys.executable, "-c", code], processes, grace=1)
        run = asyncio.ensure_future(sup.run())
        deadline = asyncio.get_running_loop().time() + 30
        while not run.done() and not (until and until(messages)):
            assert asyncio.get_running_loop().time() < deadline, messages
            await asyncio.sleep(0.02)
        if not run.done():
            sup.stop()
        return await asyncio.wait_for(run, 30)

    # The supervisor ignores SIGTERM and SIGINT once it has stopped (as the CLI wants):
    # give this process its own handlers back.
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return asyncio.run(main()), messages
    finally:
        log.removeHandler(handler)
        for sig, handler_ in saved.items():
            signal.signal(sig, handler_)


def test_a_child_that_keeps_dying_backs_off_longer_each_time() -> None:
    status, messages = _supervise(
        "raise SystemExit(3)", 1, lambda m: any("restarting it in 2.0 s" in x for x in m)
    )
    assert status == 0
    died = [m for m in messages if "child_died" in m]
    assert "exited with status 3" in died[0]
    assert [m.split("restarting it in ")[1].split(" s")[0] for m in died[:3]] == [
        "0.5",
        "1.0",
        "2.0",
    ]


def test_a_recycled_child_is_replaced_at_once() -> None:
    status, messages = _supervise(
        f"raise SystemExit({REPLACE_ME})",
        1,
        lambda m: sum("supervisor.replacing" in x for x in m) >= 5,
    )
    assert status == 0
    assert not any("child_died" in m for m in messages)


def test_a_child_that_finds_a_mistake_stops_the_supervisor_with_2() -> None:
    status, messages = _supervise("raise SystemExit(2)", 2, None)
    assert status == 2
    assert any("supervisor.child_failed" in m for m in messages)


def test_children_that_finish_by_themselves_end_the_supervisor_with_0() -> None:
    status, messages = _supervise("pass", 3, None)
    assert status == 0
    assert sum("supervisor.child_done" in m for m in messages) == 3


def test_a_killed_child_is_logged_with_its_signal() -> None:
    status, messages = _supervise(
        "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
        1,
        lambda m: any("child_died" in x for x in m),
    )
    assert status == 0
    assert any("killed by SIGKILL" in m for m in messages if "child_died" in m)
