"""aiotaskq as a backend of Django's tasks framework, through real worker processes."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import django
import pytest
from django.conf import settings
from django.db import transaction
from django.test import override_settings

if django.VERSION < (6, 0):
    pytest.skip("Django's tasks framework needs Django 6.0", allow_module_level=True)

from django.tasks import TaskResultStatus, default_task_backend, task_backends
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued

from aiotaskq.backend import AiotaskqBackend
from tests.app import django_tasks as dj
from tests.app import tasks
from tests.app.models import Execution
from tests.conftest import executions, wait_for


def _finished(result: Any) -> bool:
    result.refresh()
    return bool(result.is_finished)


def test_capabilities() -> None:
    backend = task_backends["default"]
    assert isinstance(backend, AiotaskqBackend)
    assert backend.supports_defer
    assert backend.supports_async_task
    assert backend.supports_get_result
    assert backend.supports_priority


def test_enqueue_run_and_get_result(worker: Any) -> None:
    worker()
    result = dj.dj_add.enqueue(2, 3)
    assert result.status == TaskResultStatus.READY
    wait_for(lambda: _finished(result))
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 5
    assert result.attempts == 1
    assert len(result.worker_ids) == 1
    assert result.worker_ids[0]
    assert result.enqueued_at <= result.started_at <= result.finished_at
    fetched = dj.dj_add.get_result(result.id)
    assert (fetched.status, fetched.return_value, fetched.args) == (
        TaskResultStatus.SUCCESSFUL,
        5,
        [2, 3],
    )


async def test_aenqueue_and_aget_result(worker: Any) -> None:
    from asgiref.sync import sync_to_async

    await sync_to_async(worker)()
    result = await dj.dj_async_echo.aenqueue([1, "two"])

    async def finished() -> bool:
        await result.arefresh()
        return bool(result.is_finished)

    for _ in range(500):
        if await finished():
            break
        await __import__("asyncio").sleep(0.02)
    assert result.return_value == {"echo": [1, "two"]}
    assert (await default_task_backend.aget_result(result.id)).status == "SUCCESSFUL"


def test_failure_keeps_errors(worker: Any) -> None:
    worker()
    result = dj.dj_fail.enqueue("nope")
    wait_for(lambda: _finished(result))
    assert result.status == TaskResultStatus.FAILED
    (error,) = result.errors
    assert error.exception_class is ValueError
    assert "nope" in error.traceback
    with pytest.raises(ValueError, match="Task failed"):
        _ = result.return_value


def test_retries_and_the_context_attempt(worker: Any) -> None:
    worker()
    result = dj.dj_flaky.enqueue("ctx")
    wait_for(lambda: _finished(result), timeout=20)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 2
    assert [e.value for e in executions("ctx")] == [1, 2], "TaskContext.attempt per attempt"
    assert result.attempts == 2
    assert len(result.errors) == 1
    assert result.errors[0].exception_class is RuntimeError


def test_signals(worker: Any) -> None:
    seen: list[Any] = []

    def receiver(sender: Any, task_result: Any, **kwargs: Any) -> None:
        seen.append((sender, task_result.status))

    task_enqueued.connect(receiver)
    try:
        worker()
        result = dj.dj_add.enqueue(1, 1)
    finally:
        task_enqueued.disconnect(receiver)
    assert seen == [(AiotaskqBackend, TaskResultStatus.READY)]
    wait_for(lambda: executions(f"signal:finished:{result.id}"))
    (started,) = executions(f"signal:started:{result.id}")
    (finished,) = executions(f"signal:finished:{result.id}")
    assert started.value == "RUNNING"
    assert finished.value == "SUCCESSFUL"


def test_run_after_defers(worker: Any, db: Any) -> None:
    worker()
    later = dj.dj_add.using(run_after=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    result = later.enqueue(1, 2)
    soon = dj.dj_add.enqueue(3, 4)
    wait_for(lambda: _finished(soon))
    result.refresh()
    assert result.status == TaskResultStatus.READY


def test_one_worker_runs_both_kinds(worker: Any) -> None:
    worker()
    ours = tasks.record.delay("ours-beside-django")
    theirs = dj.dj_add.enqueue(20, 22)
    wait_for(lambda: executions("ours-beside-django") and _finished(theirs))
    assert theirs.return_value == 42
    assert ours.id


def test_enqueue_joins_the_transaction(db: Any) -> None:
    def enqueue_then_fail() -> None:
        with transaction.atomic():
            dj.dj_add.enqueue(1, 2)
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        enqueue_then_fail()
    assert db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (0,)


def test_unknown_and_pruned_results(worker: Any, db: Any) -> None:
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(str(uuid.uuid4()))
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result("not-an-id")
    worker()
    result = dj.dj_add.enqueue(1, 1)
    wait_for(lambda: _finished(result))
    (expires_at,) = db.execute(
        "SELECT expires_at - finished_at FROM aiotaskq_task WHERE id = %s", (result.id,)
    ).fetchone()
    assert expires_at == dt.timedelta(days=1), "kept a day by default"
    db.execute("UPDATE aiotaskq_task SET expires_at = now() - interval '1 s'")
    from aiotaskq.db.sql import text

    db.execute(text("prune"), {"limit": 100})
    with pytest.raises(TaskResultDoesNotExist):
        result.refresh()


def test_validation() -> None:
    with pytest.raises(InvalidTask, match="only letters"):
        dj.dj_add.using(queue_name="bad queue")
    with pytest.raises(InvalidTask, match="not valid for backend"):
        dj.dj_add.using(queue_name="unlisted")
    with pytest.raises(InvalidTask, match="priority"):
        dj.dj_add.using(priority=101)
    with pytest.raises(TypeError):
        dj.dj_add.enqueue(dt.datetime.now(dt.UTC), 1)
    assert task_backends["default"].check() == []


def test_ours_still_delete_on_success(worker: Any, db: Any) -> None:
    worker()
    tasks.record.delay("deleted")
    wait_for(lambda: executions("deleted"))
    wait_for(lambda: db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (0,))
    assert Execution.objects.filter(label="deleted").count() == 1


EAGER = {**settings.AIOTASKQ, "ALWAYS_EAGER": True}


def test_eager_mode_runs_in_the_caller_and_writes_nothing(db: Any) -> None:
    with override_settings(AIOTASKQ=EAGER):
        result = dj.dj_add.enqueue(2, 3)
        with pytest.raises(TaskResultDoesNotExist):
            result.refresh()
        failed = dj.dj_fail.enqueue("nope")
    assert (result.status, result.return_value, result.attempts) == (
        TaskResultStatus.SUCCESSFUL,
        5,
        1,
    )
    assert executions(f"signal:finished:{result.id}"), "the signals are sent in the caller"
    assert failed.status == TaskResultStatus.FAILED
    assert failed.errors[0].exception_class is ValueError
    assert db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (0,)


def test_eager_propagates() -> None:
    with (
        override_settings(AIOTASKQ={**EAGER, "EAGER_PROPAGATES": True}),
        pytest.raises(ValueError, match="nope"),
    ):
        dj.dj_fail.enqueue("nope")


async def test_eager_aenqueue(db: Any) -> None:
    with override_settings(AIOTASKQ=EAGER):
        result = await dj.dj_async_echo.aenqueue([1, "two"])
        sync_result = await dj.dj_add.aenqueue(1, 2)
    assert result.return_value == {"echo": [1, "two"]}
    assert sync_result.return_value == 3
    assert db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (0,)
