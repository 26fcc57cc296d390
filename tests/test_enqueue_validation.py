"""Bad input fails at enqueue time with a clear error, and writes nothing."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.test import override_settings

import aiotaskq
from aiotaskq import errors
from tests.app import tasks


def _count(db: Any) -> int:
    return int(db.execute("SELECT count(*) FROM aiotaskq_task").fetchone()[0])


@pytest.mark.parametrize(
    ("call", "exc", "builtin", "words"),
    [
        (
            lambda: tasks.record.delay("x", value=object()),
            errors.ArgumentsNotSerializable,
            TypeError,
            "keyword argument 'value' (builtins.object)",
        ),
        (
            lambda: tasks.record.delay({1, 2}),
            errors.ArgumentsNotSerializable,
            TypeError,
            "positional argument 0 (builtins.set)",
        ),
        (
            lambda: tasks.record.delay("x", value=float("nan")),
            errors.ArgumentsNotSerializable,
            TypeError,
            "cannot be encoded as JSON",
        ),
        (
            lambda: tasks.record.apply_async(("x",), countdown=5, eta=dt.datetime.now(dt.UTC)),
            errors.InvalidSchedule,
            ValueError,
            "countdown and eta were both given",
        ),
        (
            lambda: tasks.record.apply_async(("x",), eta=dt.datetime(2030, 1, 1)),
            errors.InvalidSchedule,
            ValueError,
            "naive datetime while USE_TZ is on",
        ),
        (
            lambda: tasks.record.apply_async(("x",), expires=dt.datetime(2030, 1, 1)),
            errors.InvalidSchedule,
            ValueError,
            "naive datetime",
        ),
        (
            lambda: tasks.record.apply_async(("x",), eta="tomorrow"),  # type: ignore[arg-type]
            errors.InvalidSchedule,
            ValueError,
            "eta must be a datetime",
        ),
        (
            lambda: tasks.record.apply_async(("x",), countdown="5"),  # type: ignore[arg-type]
            errors.InvalidSchedule,
            ValueError,
            "countdown must be a finite number",
        ),
        (
            lambda: tasks.record.apply_async(("x",), queue=""),
            errors.InvalidQueueName,
            ValueError,
            "non-empty",
        ),
        (
            lambda: tasks.record.apply_async(("x",), queue="q" * 64),
            errors.InvalidQueueName,
            ValueError,
            "64 bytes; the limit is 63",
        ),
        (
            lambda: tasks.record.apply_async(("x",), queue="é" * 32),
            errors.InvalidQueueName,
            ValueError,
            "bytes; the limit is 63",
        ),
        (
            lambda: tasks.record.apply_async(("x",), queue="a b"),
            errors.InvalidQueueName,
            ValueError,
            "only letters, digits",
        ),
        (
            lambda: tasks.record.apply_async(("x",), queue="a;drop"),
            errors.InvalidQueueName,
            ValueError,
            "only letters, digits",
        ),
        (
            lambda: tasks.record.apply_async(("x",), priority="high"),  # type: ignore[arg-type]
            errors.InvalidPriority,
            TypeError,
            "priority must be an int",
        ),
        (
            lambda: tasks.record.apply_async(("x",), priority=1.5),  # type: ignore[arg-type]
            errors.InvalidPriority,
            TypeError,
            "priority must be an int",
        ),
        (
            lambda: tasks.record.apply_async(("x",), priority=True),
            errors.InvalidPriority,
            TypeError,
            "priority must be an int",
        ),
        (
            lambda: tasks.record.apply_async(("x",), priority=2**40),
            errors.InvalidPriority,
            ValueError,
            "32-bit",
        ),
    ],
)
def test_bad_input_is_refused(
    db: Any, call: Any, exc: type[Exception], builtin: type[Exception], words: str
) -> None:
    with pytest.raises(exc) as info:
        call()
    assert isinstance(info.value, aiotaskq.AiotaskqError)
    assert isinstance(info.value, builtin)
    assert words in str(info.value)
    assert _count(db) == 0


def test_arguments_larger_than_the_cap(db: Any) -> None:
    with override_settings(AIOTASKQ={"MAX_ARGUMENTS_BYTES": 1000}):
        with pytest.raises(errors.ArgumentsTooLarge, match="MAX_ARGUMENTS_BYTES") as info:
            tasks.record.delay("x" * 2000)
        assert isinstance(info.value, ValueError)
        tasks.record.delay("x" * 900)
    # The default cap is 1 MiB of JSON.
    with pytest.raises(errors.ArgumentsTooLarge, match="1048576"):
        tasks.record.delay("x" * (1024 * 1024))
    assert _count(db) == 1


async def test_async_enqueue_refuses_the_same_input(db: Any) -> None:
    with pytest.raises(errors.ArgumentsNotSerializable):
        await tasks.record.adelay("x", value=object())
    with pytest.raises(errors.InvalidQueueName):
        await tasks.record.aapply_async(("x",), queue="no spaces")
    assert _count(db) == 0


def test_one_bad_signature_writes_none_of_the_batch(db: Any) -> None:
    sigs = [tasks.record.s("ok"), tasks.record.s("bad", value=object()), tasks.record.s("ok")]
    with pytest.raises(errors.ArgumentsNotSerializable):
        aiotaskq.enqueue_many(sigs)
    assert _count(db) == 0


def test_bad_queue_in_the_decorator() -> None:
    with pytest.raises(errors.InvalidQueueName):

        @aiotaskq.task(queue="has space")
        def nope() -> None: ...


def test_same_name_for_two_functions_is_refused() -> None:
    @aiotaskq.task(name="tests.duplicate")
    def one() -> None: ...

    with pytest.raises(errors.ConfigurationError, match="Two tasks are named"):

        @aiotaskq.task(name="tests.duplicate")
        def two() -> None: ...


def test_unknown_setting_names_the_nearest_key() -> None:
    from aiotaskq.conf import get_settings

    with (
        override_settings(AIOTASKQ={"POLL_INTERVALL": 1}),
        pytest.raises(errors.ConfigurationError, match='Did you mean "POLL_INTERVAL"'),
    ):
        get_settings()
    with (
        override_settings(AIOTASKQ={"DIRTY_AFTER": -1}),
        pytest.raises(errors.ConfigurationError, match="positive number"),
    ):
        get_settings()


def test_options_are_stored(db: Any) -> None:
    eta = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    result = tasks.record.apply_async(
        ("x",), eta=eta, expires=eta + dt.timedelta(hours=1), queue="other", priority=7
    )
    row = db.execute(
        "SELECT name, queue, priority, execute_at, expires_at, args, kwargs, state "
        "FROM aiotaskq_task WHERE id = %s",
        (result.id,),
    ).fetchone()
    assert row == (
        "tests.app.tasks.record",
        "other",
        7,
        eta,
        eta + dt.timedelta(hours=1),
        ["x"],
        {},
        "queued",
    )
    # countdown and relative expiry use the database clock
    result = tasks.record.apply_async(("y",), countdown=60, expires=120)
    delay, expiry = db.execute(
        "SELECT extract(epoch FROM execute_at - created_at), "
        "extract(epoch FROM expires_at - created_at) FROM aiotaskq_task WHERE id = %s",
        (result.id,),
    ).fetchone()
    assert (float(delay), float(expiry)) == (60.0, 120.0)


def test_naive_eta_without_use_tz_is_local_time(db: Any) -> None:
    with override_settings(USE_TZ=False, TIME_ZONE="Europe/Riga"):
        result = tasks.record.apply_async(("x",), eta=dt.datetime(2030, 6, 1, 12, 0))
    (execute_at,) = db.execute(
        "SELECT execute_at FROM aiotaskq_task WHERE id = %s", (result.id,)
    ).fetchone()
    assert execute_at == dt.datetime(2030, 6, 1, 9, 0, tzinfo=dt.UTC)
