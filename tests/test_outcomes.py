"""Outcomes of attempts, decided (``aiotaskq.worker.outcome``) and written (the reporter)
against the real table: whatever a task returns or raises, in any mix within one flush,
every attempt ends and nothing is held."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import json
import math
import uuid
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiotaskq import Retry, Snooze
from aiotaskq.db.connect import WorkerDatabase
from aiotaskq.db.finish import Ack, Failed, KeptResult, Outcome, Retried
from aiotaskq.retry import RetryPolicy
from aiotaskq.tasks.task import Task
from aiotaskq.worker import outcome
from aiotaskq.worker.reporter import Reporter

WORKER = "outcome-test-worker"


async def _plain() -> Any:
    return None


KEEPS = Task(_plain, name="tests.outcomes.keeps", result_retention=60.0)
RETRIES = Task(
    _plain,
    name="tests.outcomes.retries",
    policy=RetryPolicy.build(autoretry_for=(OSError,), max_retries=None, retry_backoff=True),
)


class _Hostile(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ refuses")


class _NotStr(Exception):
    def __str__(self) -> Any:
        return 42


class _CustomBase(BaseException):
    pass


class _BadSeconds(Snooze):
    def __init__(self) -> None:
        super().__init__(1)
        self.hostile = True

    def __getattribute__(self, name: str) -> Any:
        if name == "seconds" and object.__getattribute__(self, "__dict__").get("hostile"):
            raise RuntimeError("no seconds")
        return super().__getattribute__(name)


texts = st.text(max_size=50)  # includes NULs, lone surrogates and every plane
numbers = st.one_of(
    st.none(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=10,
)


@st.composite
def exceptions(draw: st.DrawFn) -> BaseException:
    message = draw(texts)
    kind = draw(
        st.sampled_from(
            ["value", "os", "hostile", "notstr", "base", "cancelled", "exit", "retry", "chained"]
        )
    )
    if kind == "value":
        return ValueError(message)
    if kind == "os":
        return OSError(message)
    if kind == "hostile":
        return _Hostile(message)
    if kind == "notstr":
        return _NotStr(message)
    if kind == "base":
        return _CustomBase(message)
    if kind == "cancelled":
        return asyncio.CancelledError(message)
    if kind == "exit":
        return SystemExit(message)
    if kind == "chained":
        try:
            try:
                raise KeyError(message)
            except KeyError as inner:
                raise _Hostile() from inner
        except _Hostile as outer:
            return outer
    countdown = draw(numbers)
    eta = draw(st.none() | st.datetimes(timezones=st.none() | st.just(dt.UTC)))
    return Retry(
        countdown=None if eta is not None else countdown,  # type: ignore[arg-type]
        eta=eta,
        exc=draw(st.none() | st.just(ValueError(message)) | st.just(_Hostile())),
        max_retries=draw(st.none() | st.integers(min_value=0, max_value=3)),
    )


@st.composite
def endings(draw: st.DrawFn) -> tuple[str, Any]:
    kind = draw(st.sampled_from(["ack", "kept", "fail", "snooze", "bad_snooze"]))
    if kind == "kept":
        return kind, draw(json_values)
    if kind == "fail":
        return kind, draw(exceptions())
    if kind == "snooze":
        return kind, Snooze(draw(st.floats(min_value=0, max_value=1e12)))
    if kind == "bad_snooze":
        return kind, _BadSeconds()
    return kind, None


def _decide(attempt: outcome.Attempt, ending: tuple[str, Any]) -> Outcome:
    kind, value = ending
    if kind == "ack":
        return outcome.success(attempt, RETRIES, None)
    if kind == "kept":
        return outcome.success(attempt, KEEPS, value)
    if kind in ("snooze", "bad_snooze"):
        return outcome.snooze(attempt, value)
    result, words = outcome.failure(attempt, RETRIES, value, "[]", "{}")
    assert isinstance(words, str)
    return result


def _insert_running(conn: psycopg.Connection[Any], count: int) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(count)]
    conn.execute(
        "INSERT INTO aiotaskq_task (id, name, queue, state, attempt, worker_id, started_at,"
        " alive_at) SELECT id, 'tests.outcomes.retries', 'default', 'running', 1, %s, now(),"
        " now() FROM unnest(%s::uuid[]) AS id",
        (WORKER, ids),
    )
    return ids


async def _write_all(outcomes: list[Outcome]) -> Reporter:
    database = WorkerDatabase("aiotaskq-outcome-test", 2)
    await database.open(wait=False)
    try:
        reporter = Reporter(database, WORKER)
        for item in outcomes:
            reporter.add(item)
        await reporter.flush()
        assert reporter.backlog == 0
        assert reporter.unwritten() == []
        return reporter
    finally:
        await database.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(endings(), min_size=1, max_size=12))
def test_every_mix_of_outcomes_in_one_flush_is_written(
    db: psycopg.Connection[Any], mix: list[tuple[str, Any]]
) -> None:
    ids = _insert_running(db, len(mix))
    decided = [
        _decide(outcome.Attempt((task_id, 1), RETRIES.name, "default", 0, WORKER), ending)
        for task_id, ending in zip(ids, mix, strict=True)
    ]
    asyncio.run(_write_all(decided))
    rows = dict(
        db.execute(
            "SELECT id, state FROM aiotaskq_task WHERE id = ANY(%s::uuid[])", (ids,)
        ).fetchall()
    )
    for task_id, item in zip(ids, decided, strict=True):
        state = rows.get(task_id)
        if isinstance(item, Ack):
            assert state is None
        elif isinstance(item, KeptResult):
            assert state == "succeeded"
        elif isinstance(item, Failed):
            assert state == "failed"
        else:
            assert isinstance(item, Retried)
            assert state == "queued"
    assert "running" not in rows.values()
    db.execute("DELETE FROM aiotaskq_task WHERE id = ANY(%s::uuid[])", (ids,))


def test_stored_errors_are_the_text_made_storable(db: psycopg.Connection[Any]) -> None:
    (task_id,) = _insert_running(db, 1)
    attempt = outcome.Attempt((task_id, 1), RETRIES.name, "default", 0, WORKER)
    failed, _ = outcome.failure(attempt, None, ValueError("a\x00b \ud800 c"), "[]", "{}")
    asyncio.run(_write_all([failed]))
    (errors,) = db.execute("SELECT errors FROM aiotaskq_task WHERE id = %s", (task_id,)).fetchone()
    assert errors[0]["message"] == "a\\x00b \\ud800 c"
    assert errors[0]["type"] == "builtins.ValueError"


def test_hostile_exceptions_and_huge_messages_are_kept_in_short(
    db: psycopg.Connection[Any],
) -> None:
    ids = _insert_running(db, 2)
    attempts = [outcome.Attempt((i, 1), RETRIES.name, "default", 0, WORKER) for i in ids]
    hostile, _ = outcome.failure(attempts[0], RETRIES, _Hostile(), "[]", "{}")
    huge, _ = outcome.failure(attempts[1], RETRIES, ValueError("x" * 1_000_000), "[]", "{}")
    asyncio.run(_write_all([hostile, huge]))
    stored = dict(
        db.execute(
            "SELECT id, errors->0 FROM aiotaskq_task WHERE id = ANY(%s::uuid[])", (ids,)
        ).fetchall()
    )
    assert stored[ids[0]]["message"].startswith("<unprintable _Hostile")
    assert len(stored[ids[1]]["message"]) < 5000
    assert "characters cut" in stored[ids[1]]["message"]


def test_a_refused_outcome_is_written_as_a_minimal_error_and_the_rest_go_through(
    db: psycopg.Connection[Any],
) -> None:
    """An outcome PostgreSQL refuses (built by hand here, past the worker's own cleaning)
    does not hold the batch: the others are written, it is written as a minimal error."""
    ids = _insert_running(db, 3)
    bad = Failed((ids[0], 1), json.dumps({"message": "\x00"}))  # "\u0000": jsonb refuses it
    good = Failed((ids[1], 1), json.dumps({"message": "fine"}))
    kept_bad = KeptResult((ids[2], 1), '"\\u0000"', 60.0)
    asyncio.run(_write_all([bad, good, kept_bad]))
    rows = dict(
        db.execute(
            "SELECT id, errors->0->>'type' FROM aiotaskq_task WHERE id = ANY(%s::uuid[])"
            " AND state = 'failed'",
            (ids,),
        ).fetchall()
    )
    assert rows == {
        ids[0]: "aiotaskq.errors.OutcomeNotStorable",
        ids[1]: None,
        ids[2]: "aiotaskq.errors.OutcomeNotStorable",
    }


def test_mixed_number_types_in_one_retry_batch(db: psycopg.Connection[Any]) -> None:
    """Retry(countdown=1) beside Snooze(0.5), Decimal and huge countdowns: one statement."""
    ids = _insert_running(db, 4)
    attempts = [outcome.Attempt((i, 1), RETRIES.name, "default", 0, WORKER) for i in ids]

    decided = [
        outcome.failure(attempts[0], RETRIES, Retry(countdown=1), "[]", "{}")[0],
        outcome.snooze(attempts[1], Snooze(0.5)),
        outcome.failure(
            attempts[2],
            RETRIES,
            Retry(countdown=decimal.Decimal("2.5")),  # type: ignore[arg-type]
            "[]",
            "{}",
        )[0],
        outcome.failure(attempts[3], RETRIES, Retry(countdown=10**400), "[]", "{}")[0],
    ]
    asyncio.run(_write_all(decided))
    rows = db.execute(
        "SELECT state, retries, extract(epoch FROM execute_at - now()) FROM aiotaskq_task"
        " WHERE id = ANY(%s::uuid[]) ORDER BY execute_at",
        (ids,),
    ).fetchall()
    assert [r[0] for r in rows] == ["queued"] * 4
    assert sorted(r[1] for r in rows) == [0, 1, 1, 1]  # the snooze spends no attempt
    assert rows[-1][2] > 30 * 365 * 86400 * 0.9  # cut to the longest delay, not an error
    assert not any(math.isnan(r[2]) for r in rows)


def test_errors_keep_the_first_and_last_ten_and_count_them_all(
    db: psycopg.Connection[Any],
) -> None:
    (task_id,) = _insert_running(db, 1)
    for attempt_number in range(1, 31):
        db.execute(
            "UPDATE aiotaskq_task SET state = 'running', attempt = %s, worker_id = %s"
            " WHERE id = %s",
            (attempt_number, WORKER, task_id),
        )
        attempt = outcome.Attempt(
            (task_id, attempt_number), RETRIES.name, "default", attempt_number - 1, WORKER
        )
        retried, _ = outcome.failure(attempt, RETRIES, OSError("down"), "[]", "{}")
        assert isinstance(retried, Retried)
        asyncio.run(_write_all([retried]))
    retries, errors = db.execute(
        "SELECT retries, errors FROM aiotaskq_task WHERE id = %s", (task_id,)
    ).fetchone()
    assert retries == 30
    assert [e["attempt"] for e in errors] == [*range(1, 11), *range(21, 31)]


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), {"k": "\x00"}, ["\udfff"], object(), {1: 2}],
    ids=["nan", "inf", "nul", "surrogate", "object", "int-key"],
)
def test_a_return_value_that_cannot_be_kept_fails_the_attempt(value: Any) -> None:
    attempt = outcome.Attempt((uuid.uuid4(), 1), KEEPS.name, "default", 0, WORKER)
    result = outcome.success(attempt, KEEPS, value)
    if isinstance(value, dict) and 1 in value:
        assert isinstance(result, KeptResult)  # JSON makes the key a string, as Django does
        return
    assert isinstance(result, Failed)
    assert "cannot be kept" in json.loads(result.error)["message"]


def test_a_literal_backslash_u0000_is_kept_as_text() -> None:
    attempt = outcome.Attempt((uuid.uuid4(), 1), KEEPS.name, "default", 0, WORKER)
    result = outcome.success(attempt, KEEPS, "\\u0000")
    assert isinstance(result, KeptResult)
