"""Eager mode, and the helpers of aiotaskq.testing, as a user's test suite would use them."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from django.db import connections
from django.test import override_settings

import aiotaskq
from aiotaskq import EagerResult
from aiotaskq.testing import (
    abackground_worker,
    arun_until_empty,
    background_worker,
    run_until_empty,
)
from tests.app import tasks
from tests.conftest import ROOT, executions, wait_for

EAGER = {"ALWAYS_EAGER": True}


def test_eager_runs_sync_and_async_tasks_in_the_caller(db: Any) -> None:
    with override_settings(AIOTASKQ=EAGER):
        result = tasks.add.delay(2, 3)
        assert isinstance(result, EagerResult)
        assert result.get() == 5
        assert result.successful()
        assert tasks.aadd.apply_async((4, 5)).get() == 9  # a coroutine via async_to_sync
        assert [r.get() for r in aiotaskq.enqueue_many([tasks.add.s(1, 1), tasks.add.s(2, 2)])] == [
            2,
            4,
        ]
    assert db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (0,)


async def test_eager_from_async_code(db: Any) -> None:
    with override_settings(AIOTASKQ=EAGER):
        assert (await tasks.aadd.adelay(1, 2)).get() == 3
        assert (await tasks.add.aapply_async((3, 4))).get() == 7  # sync task via sync_to_async
    assert db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (0,)


def test_eager_keeps_or_propagates_the_exception() -> None:
    with override_settings(AIOTASKQ=EAGER):
        result = tasks.explode.delay()
        assert result.failed()
        assert isinstance(result.result, ValueError)
        assert "eager failure" in (result.traceback or "")
        with pytest.raises(ValueError, match="eager failure"):
            result.get()
    with (
        override_settings(AIOTASKQ={**EAGER, "EAGER_PROPAGATES": True}),
        pytest.raises(ValueError, match="eager failure"),
    ):
        tasks.explode.delay()


def test_celery_setting_names_turn_eager_on() -> None:
    with override_settings(CELERY_TASK_ALWAYS_EAGER=True, CELERY_TASK_EAGER_PROPAGATES=True):
        assert tasks.add.delay(1, 2).get() == 3
        with pytest.raises(ValueError, match="eager failure"):
            tasks.explode.delay()


def test_eager_arguments_still_go_through_json() -> None:
    with override_settings(AIOTASKQ=EAGER), pytest.raises(aiotaskq.ArgumentsNotSerializable):
        tasks.add.delay(object(), 1)  # type: ignore[arg-type]


def _in_a_fresh_process(code: str) -> None:
    """The testing helpers open their own loop, as a user's sync test would: run them where
    no event loop of pytest-asyncio is around."""
    subprocess.run(
        [sys.executable, "-c", "import django; django.setup()\n" + code],
        cwd=ROOT,
        check=True,
        timeout=60,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )


def test_run_until_empty_drains_due_tasks(db: Any) -> None:
    for i in range(20):
        tasks.record.delay(f"drain-{i}")
    tasks.record_sync.delay("drain-sync")
    tasks.record.apply_async(("later",), countdown=3600)
    _in_a_fresh_process("from aiotaskq.testing import run_until_empty; run_until_empty()")
    assert all(executions(f"drain-{i}") for i in range(20))
    assert executions("drain-sync")
    assert executions("later") == []
    assert db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (1,)


async def test_arun_until_empty(db: Any) -> None:
    await tasks.record.adelay("adrain")
    await arun_until_empty()
    from asgiref.sync import sync_to_async

    assert await sync_to_async(executions)("adrain")


def test_background_worker_runs_tasks_while_the_block_lasts() -> None:
    _in_a_fresh_process(
        "from aiotaskq.testing import background_worker\n"
        "from tests.app import tasks\n"
        "from tests.conftest import executions, wait_for\n"
        "with background_worker():\n"
        "    tasks.record.delay('bg')\n"
        "    wait_for(lambda: executions('bg'))\n"
    )
    assert executions("bg")


async def test_abackground_worker(db: Any) -> None:
    from asgiref.sync import sync_to_async

    async with abackground_worker(concurrency=10) as worker:
        assert worker.ready is not None
        await tasks.record.adelay("abg")

        def ran() -> None:
            try:
                wait_for(lambda: executions("abg"))
            finally:
                connections.close_all()  # this thread's, opened by executions()

        # Not thread-sensitive: the worker's own ORM calls need that thread meanwhile.
        await sync_to_async(ran, thread_sensitive=False)()
    assert db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (0,)


def test_helpers_are_importable_names() -> None:
    assert callable(run_until_empty)
    assert callable(background_worker)
