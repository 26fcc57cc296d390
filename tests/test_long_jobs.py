"""Long jobs: the task's context (``current_task()``), checkpoints that survive a retry, a
SIGKILL and a lost lease, progress written with the heartbeat, and results you can wait for
(``AsyncResult.get`` / ``aget``, ``state``, ``progress``), with real worker processes."""

from __future__ import annotations

import asyncio
import json
import math
import signal
import statistics
import threading
import time
import uuid
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import override_settings
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import aiotaskq
from aiotaskq import (
    AsyncResult,
    InvalidCheckpoint,
    InvalidProgress,
    NotInTask,
    TaskFailed,
    current_task,
)
from aiotaskq.serialization import decode
from aiotaskq.tasks import waiting
from aiotaskq.tasks.context import MAX_MESSAGE, check_progress, encode_checkpoint, progress_json
from tests.app import tasks
from tests.app.models import Execution
from tests.conftest import executions, migrate_back_and_forth, run_cli, wait_for


def _row(db: Any, task_id: Any, *columns: str) -> tuple[Any, ...] | None:
    return db.execute(
        f"SELECT {', '.join(columns)} FROM aiotaskq_task WHERE id = %s", (task_id,)
    ).fetchone()


def _waiters(db: Any) -> int:
    """This process's registered waits."""
    return int(
        db.execute(
            "SELECT count(*) FROM aiotaskq_waiter WHERE waiter = %s", (waiting.hub().name,)
        ).fetchone()[0]
    )


# --- the context ---------------------------------------------------------------------------


def test_current_task_outside_a_task_says_so() -> None:
    with pytest.raises(NotInTask, match="outside a task"):
        current_task()


@pytest.mark.parametrize("fn", [tasks.whoami, tasks.whoami_sync], ids=["async", "sync"])
def test_the_context_names_the_attempt(worker: Any, fn: Any) -> None:
    worker()
    result = fn.delay()
    seen = result.get(timeout=30)
    assert seen == {
        "id": str(result.id),
        "name": fn.name,
        "queue": "default",
        "attempt": 1,
        "retries": 0,
        "checkpoint": None,
        "scheduled_for": None,
    }


def test_eager_mode_has_a_context_too() -> None:
    with override_settings(AIOTASKQ={**django_settings.AIOTASKQ, "ALWAYS_EAGER": True}):
        result = tasks.whoami_sync.delay()
    assert result.get()["attempt"] == 1
    assert result.state == "succeeded"
    with pytest.raises(NotInTask):
        current_task()  # reset after the eager call


# --- checkpoints ---------------------------------------------------------------------------


def test_a_checkpoint_is_kept_across_a_retry(worker: Any) -> None:
    worker()
    seen = tasks.resumes_after_retry.delay("retry").get(timeout=30)
    assert seen["attempt"] == 2
    assert seen["retries"] == 1
    assert seen["checkpoint"] == {"rows": 2000, "label": "retry"}


def test_a_checkpoint_survives_a_sigkill_and_the_rescue_resumes_from_it(
    worker: Any, db: Any
) -> None:
    first = worker()
    result = tasks.resumes_after_kill.delay("killed")
    wait_for(lambda: executions("killed:saved"), what="the checkpoint")
    assert decode(_row(db, result.id, "checkpoint::text")[0]) == {"done": 3, "label": "killed"}
    first.signal(signal.SIGKILL)
    first.wait(10)
    worker()  # rescues the Dirty task (DIRTY_AFTER is 3 s in the tests) and runs it again
    seen = result.get(timeout=60)
    assert seen["checkpoint"] == {"done": 3, "label": "killed"}
    assert seen["attempt"] == 2
    assert seen["retries"] == 1  # the lost attempt counts
    # Removed with the task's success: the kept row has no checkpoint left.
    assert _row(db, result.id, "state", "checkpoint") == ("succeeded", None)


def test_a_checkpoint_is_kept_across_a_snooze(worker: Any) -> None:
    worker()
    seen = tasks.checkpoint_then.delay("snoozed", "snooze").get(timeout=30)
    assert seen["checkpoint"] == {"label": "snoozed", "saved_by": 1}
    assert seen["retries"] == 0  # a snooze spends no retry


def test_a_checkpoint_is_kept_across_run_again(worker: Any) -> None:
    worker()
    result = tasks.checkpoint_then.delay("again", "fail")
    with pytest.raises(TaskFailed, match="fails after its checkpoint"):
        result.get(timeout=30)
    # "Run again" (the admin's action, and `aiotaskq retry --failed`).
    assert "1" in run_cli("retry", "--failed").stdout
    seen = result.get(timeout=30)
    assert seen["checkpoint"] == {"label": "again", "saved_by": 1}
    assert seen["attempt"] == 2


def test_a_checkpoint_is_kept_when_a_stopping_worker_gives_the_task_back(worker: Any) -> None:
    first = worker("--grace", "0.2")
    result = tasks.checkpoint_then.delay("released", "hang")
    wait_for(lambda: executions("released:saved"), what="the checkpoint")
    first.signal(signal.SIGTERM)
    assert first.wait(30) == 0
    assert result.state == "queued"  # given back, not Dirty
    worker()
    seen = result.get(timeout=30)
    assert seen["checkpoint"] == {"label": "released", "saved_by": 1}
    assert seen["retries"] == 0


def test_a_writer_that_lost_its_lease_changes_nothing_and_is_told(worker: Any, db: Any) -> None:
    worker()
    result = tasks.late_checkpoint.delay("late")
    wait_for(lambda: executions("late:start"), what="the task to start")
    # Another worker takes the task over (as a rescue would, after a stall).
    db.execute(
        "UPDATE aiotaskq_task SET worker_id = 'thief', attempt = attempt + 1 WHERE id = %s",
        (result.id,),
    )
    Execution.objects.create(label="late:go", pid=0)
    (told,) = wait_for(lambda: executions("late:error"), what="the late write")
    assert told.value == "LeaseLost"
    assert _row(db, result.id, "checkpoint") == (None,)


_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
_NESTED = st.lists(_SCALARS, max_size=4) | st.dictionaries(st.text(), _SCALARS, max_size=4)


@given(value=_SCALARS | _NESTED | st.lists(_NESTED, max_size=3))
@example(value="a NUL \x00 inside")
@example(value={"lone": "\ud800"})
@example(value=float("inf"))
@settings(max_examples=200, deadline=None)
def test_a_checkpoint_is_storable_or_refused_with_the_reason(value: Any) -> None:
    try:
        text = encode_checkpoint("t", value)
    except InvalidCheckpoint as exc:
        message = str(exc)
    else:
        message = ""
    if message:
        assert "Task 't': the checkpoint" in message
        return
    assert "\\u0000" not in text or "\\\\u0000" in text
    text.encode("utf-8")  # no lone surrogate
    assert decode(text) == value or (isinstance(value, float) and math.isinf(value))


def test_a_checkpoint_too_large_or_not_json_is_refused() -> None:
    with pytest.raises(InvalidCheckpoint, match="MAX_ARGUMENTS_BYTES"):
        encode_checkpoint("t", "x" * (1024 * 1024 + 1))
    with pytest.raises(InvalidCheckpoint, match="cannot be encoded as JSON") as info:
        encode_checkpoint("t", object())
    assert isinstance(info.value, TypeError)


# --- progress ------------------------------------------------------------------------------


def test_progress_is_read_from_another_process_while_the_task_runs(worker: Any) -> None:
    worker()
    result = tasks.reports_progress.delay("prog", 10_000)
    wait_for(lambda: executions("prog:set"), what="the progress calls")
    progress = wait_for(lambda: result.progress, what="the heartbeat to write the progress")
    assert progress["done"] == 10_000
    assert progress["total"] == 10_000
    assert progress["message"] == "10000 of 10000 rows"
    assert progress["at"]
    assert result.state == "running"
    assert not result.ready()
    (shown,) = json.loads(run_cli("status", "--json").stdout)["in_progress"]
    assert shown["id"] == str(result.id)
    assert shown["name"] == tasks.reports_progress.name
    assert shown["progress"]["message"] == "10000 of 10000 rows"
    Execution.objects.create(label="prog:go", pid=0)
    assert result.get(timeout=30) is None
    assert result.state == "unknown"
    assert result.progress is None


def test_progress_of_a_plain_function_with_odd_text(worker: Any) -> None:
    worker()
    result = tasks.reports_progress_sync.delay("sprog")
    progress = wait_for(lambda: result.progress, what="the progress")
    assert progress["done"] == 7
    assert progress["total"] is None
    assert progress["message"] == "no total \ufffd here"
    Execution.objects.create(label="sprog:go", pid=0)
    result.get(timeout=30)


@given(
    done=st.integers(min_value=-5, max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
    | st.text(max_size=3),
    total=st.none() | st.integers(min_value=-5, max_value=10**9) | st.floats(),
    message=st.text(max_size=2000) | st.integers(),
)
@example(done=1, total=2, message="\x00\ud800\udfff end")
@example(done=10**400, total=float("nan"), message="")
@example(done=True, total=None, message="")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_progress_is_stored_as_given_or_refused(done: Any, total: Any, message: Any) -> None:
    def count(value: Any) -> bool:
        return (
            not isinstance(value, bool)
            and isinstance(value, int | float)
            and 0 <= value <= 10**18  # NaN and the infinities are not
        )

    good = count(done) and (total is None or count(total)) and isinstance(message, str)
    if not good:
        with pytest.raises(InvalidProgress, match=r"set_progress\(\)"):
            check_progress(done, total, message)
        return
    text = progress_json(check_progress(done, total, message))
    text.encode("utf-8")
    assert "\\u0000" not in text
    doc = decode(text)
    assert doc["done"] == done
    assert doc["total"] == total
    assert len(doc["message"]) == min(len(message), MAX_MESSAGE)


# --- waiting for a result ------------------------------------------------------------------


def test_get_returns_the_kept_value_and_raises_on_failure(worker: Any) -> None:
    worker()
    assert tasks.returns.delay({"n": [1, 2.5, "x"]}).get(timeout=30) == {"n": [1, 2.5, "x"]}
    failed = tasks.fails_for_good.delay("broken on purpose")
    with pytest.raises(TaskFailed) as info:
        failed.get(timeout=30)
    assert info.value.type == "builtins.RuntimeError"
    assert info.value.message == "broken on purpose"
    assert "RuntimeError: broken on purpose" in info.value.traceback
    assert failed.state == "failed"
    assert failed.ready()


def test_get_honours_its_timeout_and_the_task_goes_on(worker: Any) -> None:
    result = tasks.returns.delay("later")  # no worker yet
    assert result.state == "queued"
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"did not finish within 0\.3 s"):
        result.get(timeout=0.3)
    assert time.monotonic() - started < 5
    worker()
    assert result.get(timeout=30) == "later"


def test_get_does_not_miss_a_task_that_already_finished(worker: Any, db: Any) -> None:
    worker()
    result = tasks.record.delay("before-wait")
    wait_for(lambda: _row(db, result.id, "1") is None, what="the ack")
    started = time.monotonic()
    assert result.get(timeout=30) is None  # no row: ended, kept nothing
    assert time.monotonic() - started < 0.9  # not found by the once-a-second look


def test_get_inside_the_transaction_that_enqueued_says_why_it_returned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from django.db import transaction

    with transaction.atomic():
        result = tasks.returns.delay("uncommitted")
        assert result.get(timeout=5) is None
    assert "task.get_in_transaction" in caplog.text


def test_an_unknown_id_is_unknown_and_ready() -> None:
    result = AsyncResult(uuid.uuid4())
    assert result.state == "unknown"
    assert result.ready()
    assert result.progress is None
    assert result.get(timeout=5) is None


def test_bad_timeouts_are_refused() -> None:
    for bad in (-1, float("nan"), "5", True):
        with pytest.raises(ValueError, match="timeout must be"):
            AsyncResult(uuid.uuid4()).get(timeout=bad)  # type: ignore[arg-type]


def test_many_waiters_across_threads_all_wake(worker: Any) -> None:
    worker("--concurrency", "50")
    results = [tasks.returns.delay(i) for i in range(40)]
    got: dict[int, Any] = {}

    def wait(i: int) -> None:
        got[i] = results[i].get(timeout=60)

    threads = [threading.Thread(target=wait, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert got == {i: i for i in range(len(results))}


async def test_aget_returns_within_milliseconds_of_the_ack(worker: Any) -> None:
    """The wait ends on the announcement, not on a look: median well under the one-second
    look (a loose bound; benchmarks/ measures it)."""
    worker("--concurrency", "10")
    delays = []
    for i in range(15):
        result = await tasks.returns.adelay(i)
        started = time.monotonic()
        assert await result.aget(timeout=30) == i
        delays.append(time.monotonic() - started)
    assert statistics.median(delays) < 0.25, delays


async def test_aget_raises_on_failure_and_honours_timeouts(worker: Any) -> None:
    result = await tasks.fails_for_good.adelay("async failure")
    with pytest.raises(TimeoutError):
        await result.aget(timeout=0.2)
    assert await result.astate() == "queued"
    worker()
    with pytest.raises(TaskFailed, match="async failure"):
        await result.aget(timeout=30)
    assert await result.aready()


async def test_a_cancelled_aget_ends_its_wait(worker: Any, db: Any) -> None:
    result = await tasks.returns.adelay("never waited for")
    waiting = asyncio.create_task(result.aget())
    await asyncio.sleep(0)

    def registered() -> bool:
        return bool(_waiters(db))

    await asyncio.to_thread(wait_for, registered, 10)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting

    def unregistered() -> bool:
        return not registered()

    await asyncio.to_thread(wait_for, unregistered, 10)


def test_waiting_inside_a_task_for_its_own_queue_is_logged(worker: Any) -> None:
    proc = worker("--concurrency", "2")
    other = tasks.returns.apply_async(("x",), countdown=2)
    tasks.waits_for.delay(str(other.id), 30)
    wait_for(lambda: executions("waited"), what="the waiting task")
    assert "task.waits_on_own_queue" in proc.log()


def test_the_waiter_table_is_left_empty(worker: Any, db: Any) -> None:
    worker()
    for i in range(5):
        tasks.returns.delay(i).get(timeout=30)
    wait_for(lambda: _waiters(db) == 0, what="the waits to unregister")


def test_keep_result_must_be_positive_seconds() -> None:
    for bad in (0, -1, float("inf"), True, "60"):
        with pytest.raises(aiotaskq.ConfigurationError, match="keep_result"):
            aiotaskq.task(keep_result=bad)  # type: ignore[arg-type]


def test_progress_of_a_str_subclass_whose_str_raises_is_its_text() -> None:
    class Hostile(str):
        def __str__(self) -> str:
            raise RuntimeError("no")

        def __repr__(self) -> str:
            raise RuntimeError("no")

    doc = decode(progress_json(check_progress(1, 2, Hostile("rows \x00 done"))))
    assert doc["message"] == "rows \ufffd done"
    assert type(doc["message"]) is str


def test_progress_is_coalesced_until_the_beat_takes_it() -> None:
    """A call only remembers the document; the heartbeat takes the latest one."""
    from aiotaskq.tasks.context import TaskContext

    ctx = TaskContext(
        id=uuid.uuid4(),
        name="t",
        queue="q",
        attempt=1,
        retries=0,
        checkpoint=None,
        writer=None,
        loop=None,
    )
    for i in range(1000):
        ctx.set_progress(i, 1000, "row")
    doc = ctx.take_progress()
    assert doc is not None
    assert decode(doc)["done"] == 999
    assert ctx.take_progress() is None


def test_migration_0010_goes_back_and_forth() -> None:
    """0010 adds the columns, the waiters' table and aiotaskq_announce; going back to 0009
    removes them, and forward again restores them (on a database of its own)."""
    migrate_back_and_forth(
        "0009",
        "SELECT to_regclass('aiotaskq_waiter') IS NOT NULL,"
        " to_regproc('aiotaskq_announce') IS NOT NULL,"
        " EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name ="
        " 'aiotaskq_task_ring0' AND column_name = 'checkpoint')",
    )


def test_a_wait_survives_its_connections_being_terminated(worker: Any, db: Any) -> None:
    """The waiting thread's backends are killed while it waits: it reconnects, registers
    its waits again, and the wait ends when the task does."""
    result = tasks.returns.delay("after the outage")  # no worker yet: it stays queued
    done: list[Any] = []
    waiter = threading.Thread(target=lambda: done.append(result.get(timeout=60)))
    waiter.start()
    wait_for(lambda: _waiters(db) == 1, what="the wait to register")
    killed = db.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name LIKE 'aiotaskq-waiter%' AND datname = current_database()"
    ).fetchone()[0]
    assert killed == 2  # the listening connection and the one for statements
    wait_for(
        lambda: (
            db.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                "'aiotaskq-waiter-listener' AND datname = current_database()"
            ).fetchone()[0]
            == 1
        ),
        what="the waiting thread to reconnect",
    )
    worker()
    waiter.join(60)
    assert done == ["after the outage"]
