"""Faults 9 and 10: retries and backoff, Retry, Snooze, time limits, revoke, bad rows."""

from __future__ import annotations

import itertools
import random
import uuid
from typing import Any

import pytest

from aiotaskq import AsyncResult
from aiotaskq.retry import Retry, RetryPolicy
from tests.app import tasks
from tests.conftest import executions, wait_for


def _row(db: Any, task_id: uuid.UUID) -> tuple[Any, ...] | None:
    return db.execute(  # type: ignore[no-any-return]
        "SELECT state, attempt, errors FROM aiotaskq_task WHERE id = %s", (task_id,)
    ).fetchone()


def _gone(db: Any, task_id: uuid.UUID) -> bool:
    return _row(db, task_id) is None


def test_backoff_schedule_is_celerys() -> None:
    policy = RetryPolicy.build(retry_backoff=True, retry_jitter=False, retry_backoff_max=10)
    assert [policy.delay(n) for n in range(6)] == [1, 2, 4, 8, 10, 10]
    base = RetryPolicy.build(retry_backoff=3, retry_jitter=False)
    assert [base.delay(n) for n in range(3)] == [3, 6, 12]
    jittered = RetryPolicy.build(retry_backoff=True, retry_backoff_max=600)
    rng = random.Random(7)
    draws = [jittered.delay(5, rng) for _ in range(200)]
    assert all(0 <= d <= 32 for d in draws)
    assert max(draws) > 16, "jitter draws from [0, delay]"
    fixed = RetryPolicy.build(retry_kwargs={"countdown": 5, "max_retries": 10})
    assert (fixed.delay(3), fixed.max_retries) == (5, 10)
    assert RetryPolicy.build().delay(0) == 180, "Celery's default_retry_delay"
    assert RetryPolicy.build().max_retries == 3, "Celery's default max_retries"
    with pytest.raises(ValueError, match="retry_kwargs takes"):
        RetryPolicy.build(retry_kwargs={"countdwn": 1})
    with pytest.raises(TypeError, match="autoretry_for"):
        RetryPolicy.build(autoretry_for=ValueError)  # type: ignore[arg-type]


def test_decisions() -> None:
    policy = RetryPolicy.build(
        autoretry_for=(OSError,),
        dont_autoretry_for=(TimeoutError,),
        max_retries=2,
        retry_kwargs={"countdown": 1},
    )
    assert policy.decide(OSError(), 0).action == "retry"
    assert policy.decide(OSError(), 2).action == "fail"
    assert policy.decide(TimeoutError(), 0).action == "fail"
    assert policy.decide(ValueError(), 0).action == "fail"
    assert policy.decide(Retry(countdown=7), 0).countdown == 7
    assert policy.decide(Retry(max_retries=5), 4).action == "retry"
    assert policy.decide(Retry(), 2).action == "fail"


def test_autoretry_until_success(worker: Any, db: Any) -> None:
    worker()
    result = tasks.flaky.delay("flaky", 2)
    wait_for(lambda: len(executions("flaky")) == 3 and _gone(db, result.id))


def test_retries_exhausted_fail_with_every_error_kept(worker: Any, db: Any) -> None:
    worker()
    result = tasks.flaky.delay("hopeless", 99)
    wait_for(lambda: (_row(db, result.id) or ("",))[0] == "failed", timeout=20)
    _, attempt, errors = _row(db, result.id)  # type: ignore[misc]
    assert attempt == 4
    assert len(executions("hopeless")) == 4
    assert [e["attempt"] for e in errors] == [1, 2, 3, 4]
    assert all("RuntimeError" in e["type"] for e in errors)
    assert errors[0]["outcome"].startswith("retry 1 in 0.1 s")
    assert errors[-1]["outcome"] == "failed: no retries left (3 of max_retries=3)"
    assert "failure 4 of 99" in errors[-1]["traceback"]


def test_backoff_and_dont_autoretry_for(worker: Any, db: Any) -> None:
    worker()
    retried = tasks.backoff.delay("lookup", "lookup")
    excluded = tasks.backoff.delay("key", "key")
    wait_for(lambda: (_row(db, retried.id) or ("",))[0] == "failed", timeout=20)
    rows = executions("lookup")
    gaps = [(b.at - a.at).total_seconds() for a, b in itertools.pairwise(rows)]
    assert len(gaps) == 2
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4, gaps  # noqa: PT018 - one schedule
    (_, _, errors) = _row(db, excluded.id)  # type: ignore[misc]
    assert len(executions("key")) == 1
    assert errors[0]["outcome"] == "failed: KeyError is not retried (not in autoretry_for)"


def test_explicit_retry_records_the_given_exception(worker: Any, db: Any) -> None:
    worker()
    result = tasks.explicit_retry.delay("explicit", 2)
    wait_for(lambda: len(executions("explicit")) == 3 and _gone(db, result.id))


def test_snooze_costs_no_attempt_and_records_no_error(worker: Any, db: Any) -> None:
    worker()
    result = tasks.snooze_once.delay("snoozy")  # max_retries=0: a retry would fail it
    wait_for(lambda: len(executions("snoozy")) == 1)

    # The snooze is written within milliseconds: queued again, no error recorded (or, on a
    # slow machine, already run again and gone).
    def settled() -> tuple[Any, ...] | None:
        row = _row(db, result.id)
        if row is None:
            return ("gone", None, [])
        return row if row[0] != "running" else None

    row = wait_for(settled)
    assert row[0] in ("queued", "gone")
    assert row[2] == []
    wait_for(lambda: len(executions("snoozy")) == 2 and _gone(db, result.id))


def test_time_limit_cancels_a_coroutine(worker: Any, db: Any) -> None:
    worker()
    result = tasks.too_slow.delay("slow", 30)
    override = tasks.too_slow.apply_async(("fast-enough",), {"seconds": 0.8}, time_limit=5)
    wait_for(lambda: (_row(db, result.id) or ("",))[0] == "failed", timeout=10)
    (_, _, errors) = _row(db, result.id)  # type: ignore[misc]
    assert errors[0]["type"] == "aiotaskq.errors.TimeLimitExceeded"
    assert "time limit of 0.5 s" in errors[0]["message"]
    assert executions("slow") == []
    wait_for(lambda: executions("fast-enough") and _gone(db, override.id))


def test_time_limit_of_a_sync_task_is_reported(worker: Any) -> None:
    proc = worker()
    tasks.too_slow_sync.delay("slow-sync", 1.0)
    wait_for(lambda: executions("slow-sync"))
    assert "task.time_limit_exceeded: tests.app.tasks.too_slow_sync" in proc.log()


def test_revoke_a_queued_task(worker: Any, db: Any) -> None:
    result = tasks.record.apply_async(("revoked",), countdown=1)
    assert result.revoke() is True
    assert _gone(db, result.id)
    assert AsyncResult(uuid.uuid4()).revoke() is False, "an unknown id is not an error"
    assert result.revoke() is False
    worker()
    tasks.record.delay("sentinel")
    wait_for(lambda: executions("sentinel"))
    assert executions("revoked") == []


async def test_arevoke_a_running_coroutine(worker: Any, db: Any) -> None:
    from asgiref.sync import sync_to_async

    proc = await sync_to_async(worker)()
    result = await tasks.sleep_then_record.adelay("cancel-me", 60)
    await sync_to_async(wait_for)(lambda: executions("cancel-me:start"))
    assert await AsyncResult(str(result.id)).arevoke() is True
    await sync_to_async(wait_for)(lambda: (_row(db, result.id) or ("",))[0] == "failed", timeout=5)
    (_, _, errors) = _row(db, result.id)  # type: ignore[misc]
    assert errors[0]["type"] == "aiotaskq.errors.Revoked"
    assert errors[0]["outcome"] == "failed: revoked"
    assert "task.revoked" in proc.log()
    assert await sync_to_async(executions)("cancel-me") == []


def test_revoke_a_running_sync_task_is_too_late(worker: Any, db: Any) -> None:
    proc = worker()
    result = tasks.sleep_sync_then_record.delay("sync-revoke", 1.0)
    wait_for(lambda: executions("sync-revoke:start"))
    assert result.revoke() is True
    wait_for(lambda: executions("sync-revoke") and _gone(db, result.id))
    assert "task.revoke_too_late" in proc.log()


def test_corrupt_arguments_fail_with_the_reason(worker: Any, db: Any) -> None:
    worker()
    task_id = uuid.uuid4()
    db.execute(
        "INSERT INTO aiotaskq_task (id, name, args) VALUES "
        "(%s, 'tests.app.tasks.record', '[{\"$datetime\": \"not a date\"}]')",
        (task_id,),
    )
    db.execute('NOTIFY "aiotaskq:default"')
    wait_for(lambda: (_row(db, task_id) or ("",))[0] == "failed")
    (_, _, errors) = _row(db, task_id)  # type: ignore[misc]
    assert "not a date" in errors[0]["message"]
    tasks.record.delay("still-going")
    wait_for(lambda: executions("still-going"))
