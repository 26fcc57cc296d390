"""Nothing a task does can wedge a worker: every mix of endings in one worker, coroutines
that ignore their cancellation, and a bug in any of the worker's side loops."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from aiotaskq.testing import abackground_worker
from aiotaskq.worker import lifecycle
from aiotaskq.worker.dbthreads import DatabaseThreads
from aiotaskq.worker.heartbeat import Heartbeat
from aiotaskq.worker.listener import Listener
from aiotaskq.worker.reporter import Reporter
from aiotaskq.worker.rescue import Rescuer
from aiotaskq.worker.upkeep import Pruner, TableKeeper
from tests.app import tasks

from .conftest import executions, wait_for

HOWS = ["ok", "retry", "snooze", "nul", "surrogate", "hostile", "base", "cancelled", "exit"]


def _states(db: Any) -> dict[str, int]:
    return dict(db.execute("SELECT state, count(*) FROM aiotaskq_task GROUP BY state").fetchall())


def test_four_hundred_mixed_endings_all_end_and_the_worker_goes_on(worker: Any, db: Any) -> None:
    proc = worker("--concurrency", "200")
    signatures = []
    for i in range(400):
        how = HOWS[i % len(HOWS)]
        fn = tasks.ends if i % 2 == 0 else tasks.ends_sync
        signatures.append(fn.s(f"mixed-{i}", how))
    signatures.append(tasks.ends.s("mixed-huge", "huge"))
    from aiotaskq import enqueue_many

    enqueue_many(signatures)

    def settled() -> bool:
        states = _states(db)
        return not states.get("running") and not states.get("queued")

    wait_for(settled, timeout=60, what="every mixed task to end")
    failed = dict(
        db.execute(
            "SELECT args->>0, errors->-1 FROM aiotaskq_task WHERE state = 'failed'"
        ).fetchall()
    )
    expected_failures = {
        f"mixed-{i}" for i in range(400) if HOWS[i % len(HOWS)] not in ("ok", "snooze")
    } | {"mixed-huge"}
    assert set(failed) == expected_failures
    for label, error in failed.items():
        number = label.removeprefix("mixed-")
        how = HOWS[int(number) % len(HOWS)] if number.isdigit() else "huge"
        if how == "nul":
            assert "b'\\x00\x01'" in error["message"]  # the NUL escaped, the rest kept
        elif how == "surrogate":
            assert "\\ud800" in error["message"]
        elif how == "hostile":
            assert error["message"].startswith("<unprintable HostileError")
        elif how == "base":
            assert error["type"] == "tests.app.tasks.CustomBaseError"
        elif how == "cancelled":
            assert error["type"] == "asyncio.exceptions.CancelledError"
        elif how == "retry":
            assert error["outcome"].startswith("failed: no retries left")
        elif how == "huge":
            assert len(error["message"]) < 5000
    log = proc.log()
    assert "flush_failed" not in log
    assert "not_storable" not in log
    # The worker still claims and runs new work.
    enqueue_many(tasks.record.s(f"after-{i}") for i in range(200))
    wait_for(
        lambda: (
            db.execute(
                "SELECT count(*) FROM testapp_execution WHERE label LIKE 'after-%%'"
            ).fetchone()[0]
            == 200
        ),
        timeout=30,
        what="200 new tasks to run",
    )
    assert proc.proc.poll() is None


def test_a_coroutine_that_ignores_its_time_limit_is_ended_without_it(worker: Any, db: Any) -> None:
    proc = worker()
    result = tasks.stubborn.delay("overrun")
    wait_for(lambda: executions("overrun:start"))
    wait_for(
        lambda: (
            db.execute("SELECT state FROM aiotaskq_task WHERE id = %s", (result.id,)).fetchone()
            == ("failed",)
        ),
        timeout=15,
        what="the stubborn task to be ended",
    )
    (error,) = db.execute(
        "SELECT errors->-1 FROM aiotaskq_task WHERE id = %s", (result.id,)
    ).fetchone()
    assert error["type"] == "aiotaskq.errors.TimeLimitExceeded"
    assert "task.stubborn: tests.app.tasks.stubborn" in proc.log()
    # Its slot is free again: the worker runs the next task at once.
    tasks.record.delay("after-stubborn")
    wait_for(lambda: executions("after-stubborn"), timeout=10)


def test_sigterm_ends_the_worker_within_the_grace_whatever_a_task_does(
    worker: Any, db: Any
) -> None:
    proc = worker("--grace", "1")
    result = tasks.stubborn.apply_async(["no-end"], time_limit=600)
    wait_for(lambda: executions("no-end:start"))
    started = time.monotonic()
    proc.signal(signal.SIGTERM)
    assert proc.wait(30) == 0, proc.log()
    # The grace (1 s), the margin given to cancelled coroutines (2 s), and the exit.
    assert time.monotonic() - started < 10, proc.log()
    assert "worker.stubborn: tests.app.tasks.stubborn" in proc.log()
    assert db.execute(
        "SELECT state, worker_id FROM aiotaskq_task WHERE id = %s", (result.id,)
    ).fetchone() == ("queued", None)


class _Once:
    """Wraps a method: the first call raises, the later ones call the method."""

    def __init__(self, original: Callable[..., Any]) -> None:
        self.original = original
        self.calls = 0

    def wrap(self) -> Callable[..., Any]:
        injected = self

        async def method(obj: Any, *args: Any, **kwargs: Any) -> Any:
            injected.calls += 1
            if injected.calls == 1:
                raise RuntimeError("injected fault")
            return await injected.original(obj, *args, **kwargs)

        return method


SIDE_LOOPS = [
    ("reporter", Reporter, "flush"),
    ("heartbeat", Heartbeat, "beat"),
    ("rescuer", Rescuer, "rescue_once"),
    ("pruner", Pruner, "prune_once"),
    ("upkeep", TableKeeper, "keep_once"),
    ("db-tidy", DatabaseThreads, "tidy"),
    ("listener", Listener, "_listen"),
]


@pytest.mark.parametrize(("name", "cls", "method"), SIDE_LOOPS, ids=[s[0] for s in SIDE_LOOPS])
async def test_a_side_loop_that_fails_is_logged_and_restarted(
    name: str,
    cls: type,
    method: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    once = _Once(getattr(cls, method))
    monkeypatch.setattr(cls, method, once.wrap())
    # Loops that run rarely run often here.
    monkeypatch.setattr(Pruner, "interval", 0.2)
    monkeypatch.setattr(TableKeeper, "interval", 0.2)
    monkeypatch.setattr(lifecycle, "_TIDY_EVERY", 0.2)
    caplog.set_level(logging.INFO, logger="aiotaskq")
    async with abackground_worker(concurrency=10):
        # Work that needs the reporter and the heartbeat, to give both something to do.
        await tasks.sleep_then_record.adelay(f"{name}-slow", 1.5)
        deadline = time.monotonic() + 20
        while once.calls < 2 or not await _ran(f"{name}-slow"):
            assert time.monotonic() < deadline, f"the {name} loop was not restarted"
            await asyncio.sleep(0.05)
    crashes = [r for r in caplog.records if r.getMessage().startswith("loop.crashed")]
    assert crashes, "the failure was not logged"
    assert f"the worker's {name} loop failed" in crashes[0].getMessage()
    assert crashes[0].exc_info is not None
    assert "injected fault" in str(crashes[0].exc_info[1])


async def _ran(label: str) -> bool:
    from tests.app.models import Execution

    return await Execution.objects.filter(label=label).aexists()
