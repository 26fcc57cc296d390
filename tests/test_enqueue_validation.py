"""Bad input fails at enqueue time with a clear error, and writes nothing."""

from __future__ import annotations

import datetime as dt
from typing import Any

import django
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


# --- Text PostgreSQL cannot store: NUL characters and lone surrogates -------------------

NUL = "NUL characters cannot be stored in PostgreSQL's jsonb; encode binary data, e.g. base64"
SURROGATE = "lone surrogate"


@pytest.mark.parametrize(
    ("args", "kwargs", "where", "problem"),
    [
        (("a\x00b",), {}, "positional argument 0 (builtins.str)", NUL),
        (("x",), {"value": {"deep": [{"k\x00": 1}]}}, "keyword argument 'value'", NUL),
        (("x",), {"value": ["ok", "\x00"]}, "keyword argument 'value' (builtins.list)", NUL),
        (("\ud800",), {}, "positional argument 0 (builtins.str)", SURROGATE),
        (("x",), {"value": {"\udfff": "k"}}, "keyword argument 'value' (builtins.dict)", SURROGATE),
        (("x",), {"value": {"k": "value \ud83d"}}, "keyword argument 'value'", SURROGATE),
    ],
)
def test_text_postgresql_cannot_store_is_refused(
    db: Any, args: tuple[Any, ...], kwargs: dict[str, Any], where: str, problem: str
) -> None:
    with pytest.raises(errors.ArgumentsNotSerializable) as info:
        tasks.record.apply_async(args, kwargs)
    message = str(info.value)
    assert where in message
    assert problem in message
    assert "tests.app.tasks.record" in message
    # As json's own errors and UnicodeEncodeError are: code that caught those keeps working.
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, ValueError)
    assert _count(db) == 0


def test_a_nul_in_a_keyword_name_is_refused(db: Any) -> None:
    with pytest.raises(errors.ArgumentsNotSerializable, match="the name of keyword argument"):
        tasks.types.delay("x", **{"a\x00": 1})
    assert _count(db) == 0


def test_a_backslash_before_u0000_is_text_not_a_nul(db: Any) -> None:
    # Written by the encoder as \\u0000 (an escaped backslash, then "u0000"): storable.
    values = ["\\u0000", "\\\\u0000", "a\\u0000b", {"\\u0000": "\\\\\\u0000"}]
    result = tasks.types.delay("x", *values)
    (args,) = db.execute("SELECT args FROM aiotaskq_task WHERE id = %s", (result.id,)).fetchone()
    assert args == ["x", *values]
    # and the exact check still finds a NUL after an escaped backslash
    with pytest.raises(errors.ArgumentsNotSerializable, match="NUL"):
        tasks.types.delay("x", "\\\x00")


def test_a_nul_inside_atomic_keeps_the_callers_transaction(db: Any) -> None:
    from django.db import transaction

    with transaction.atomic():
        tasks.record.delay("before")
        with pytest.raises(errors.ArgumentsNotSerializable):
            tasks.record.delay("bad\x00")
        with pytest.raises(errors.ArgumentsNotSerializable):
            aiotaskq.enqueue_many([tasks.record.s("ok"), tasks.record.s("\ud800")])
        # A batch written with COPY while it is built: the bad row is the last.
        with pytest.raises(errors.ArgumentsNotSerializable):
            aiotaskq.enqueue_many(
                [tasks.record.s(f"ok-{i}") for i in range(200)] + [tasks.record.s("bad\x00")]
            )
        tasks.record.delay("after")  # the caller's transaction is still usable
    labels = sorted(r[0] for r in db.execute("SELECT args->>0 FROM aiotaskq_task").fetchall())
    assert labels == ["after", "before"]


@pytest.mark.parametrize("size", [2, 200])
def test_bad_text_in_a_batch_writes_nothing_of_it(db: Any, size: int) -> None:
    sigs = [tasks.record.s(f"ok-{i}") for i in range(size)]
    sigs.insert(size // 2, tasks.record.s("x", value={"k": "\x00"}))
    with pytest.raises(errors.ArgumentsNotSerializable, match="keyword argument 'value'"):
        aiotaskq.enqueue_many(sigs)
    sigs[size // 2] = tasks.record.s("x", value={"\ud800": 1})
    with pytest.raises(errors.ArgumentsNotSerializable, match=SURROGATE):
        aiotaskq.enqueue_many(sigs)
    assert _count(db) == 0


@pytest.mark.parametrize("size", [1, 2, 200])
async def test_async_paths_refuse_bad_text(db: Any, size: int) -> None:
    sigs = [tasks.record.s(f"ok-{i}") for i in range(size - 1)] + [tasks.record.s("a\x00")]
    with pytest.raises(errors.ArgumentsNotSerializable, match="NUL"):
        await aiotaskq.aenqueue_many(sigs)
    with pytest.raises(errors.ArgumentsNotSerializable, match=SURROGATE):
        await tasks.record.adelay("\ud800")
    with pytest.raises(errors.ArgumentsNotSerializable, match=SURROGATE):
        await tasks.record.aapply_async(("x",), {"value": "\udc80"}, transaction=True)
    assert _count(db) == 0


async def test_eager_mode_refuses_bad_text(db: Any) -> None:
    with override_settings(AIOTASKQ={"ALWAYS_EAGER": True}):
        with pytest.raises(errors.ArgumentsNotSerializable, match="NUL"):
            await tasks.aadd.adelay("\x00", 1)  # type: ignore[arg-type]
        with pytest.raises(errors.ArgumentsNotSerializable, match=SURROGATE):
            await tasks.aadd.aapply_async(({"\ud800": 1}, 2))
        with pytest.raises(errors.ArgumentsDoNotFit, match="missing a required argument"):
            await tasks.aadd.adelay(1)  # type: ignore[call-arg]
        assert (await tasks.aadd.adelay(1, 2)).result == 3


def test_eager_mode_refuses_bad_text_sync(db: Any) -> None:
    with override_settings(AIOTASKQ={"ALWAYS_EAGER": True}):
        with pytest.raises(errors.ArgumentsNotSerializable, match="NUL"):
            tasks.add.delay("\x00", 1)  # type: ignore[arg-type]
        with pytest.raises(errors.ArgumentsDoNotFit, match="too many positional"):
            tasks.add.delay(1, 2, 3)  # type: ignore[call-arg]
        with pytest.raises(errors.ArgumentsDoNotFit, match="too many positional"):
            aiotaskq.enqueue_many([tasks.add.s(1, 2), tasks.add.s(1, 2, 3)])  # type: ignore[call-arg]
        assert tasks.add.delay(1, 2).result == 3


# --- Arguments that do not fit the task's function ----------------------------------------


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: tasks.record.delay("x", 2, 3), "too many positional arguments"),
        (lambda: tasks.record.delay("x", nope=1), "unexpected keyword argument 'nope'"),
        (lambda: tasks.record.delay(), "missing a required argument: 'label'"),
        (lambda: tasks.record.delay("x", label="y"), "multiple values for argument 'label'"),
        (lambda: tasks.record.s("x", 2, 3).delay(), "too many positional arguments"),
        (lambda: tasks.record.apply_async(("x", 2, 3)), "too many positional arguments"),
        (lambda: tasks.noop.delay(1), "too many positional arguments"),
    ],
)
def test_arguments_that_do_not_fit_are_refused(db: Any, call: Any, words: str) -> None:
    with pytest.raises(errors.ArgumentsDoNotFit) as info:
        call()
    assert isinstance(info.value, aiotaskq.AiotaskqError)
    assert isinstance(info.value, TypeError)
    message = str(info.value)
    assert words in message
    assert "tests.app.tasks." in message
    assert "nothing was written" in message
    assert _count(db) == 0


def test_the_message_shows_the_parameters(db: Any) -> None:
    with pytest.raises(errors.ArgumentsDoNotFit, match=r"parameters are \(label, value=None\)"):
        tasks.record.delay("x", 2, 3)


def test_a_shape_that_fits_once_fits_again_and_one_that_did_not_still_fails(db: Any) -> None:
    for _ in range(3):
        tasks.record.delay("x", value=1)
        with pytest.raises(errors.ArgumentsDoNotFit):
            tasks.record.delay("x", valeu=1)  # a typo of the same shape's size
    assert _count(db) == 3


def test_star_args_and_kwargs_take_anything(db: Any) -> None:
    tasks.types.delay("x", 1, 2, 3, a=1, b=2)
    tasks.types.apply_async(("x",), {"anything": [1]})
    with pytest.raises(errors.ArgumentsDoNotFit, match="missing a required argument"):
        tasks.types.delay()
    assert _count(db) == 2


def test_a_task_that_wants_its_attempt_is_checked_without_it(db: Any) -> None:
    from aiotaskq.tasks.task import Attempt, Task

    def with_attempt(attempt: Attempt, x: int, *, y: int = 0) -> None: ...

    t = Task(with_attempt, name="tests.with_attempt", wants_attempt=True)
    t.s(1).build_row()
    t.s(1, y=2).build_row()
    with pytest.raises(errors.ArgumentsDoNotFit, match=r"too many positional.*\(x, \*, y=0\)"):
        t.s(1, 2).build_row()
    with pytest.raises(errors.ArgumentsDoNotFit, match="missing a required argument: 'x'"):
        t.s().build_row()


def test_a_batch_with_one_call_that_does_not_fit_writes_nothing(db: Any) -> None:
    for size in (3, 200):
        sigs = [tasks.record.s(f"ok-{i}") for i in range(size)]
        sigs.insert(1, tasks.record.s("x", 1, 2))  # type: ignore[call-arg]
        with pytest.raises(errors.ArgumentsDoNotFit):
            aiotaskq.enqueue_many(sigs)
    assert _count(db) == 0


async def test_async_calls_that_do_not_fit_are_refused(db: Any) -> None:
    with pytest.raises(errors.ArgumentsDoNotFit, match="too many positional"):
        await tasks.record.adelay("x", 2, 3)  # type: ignore[call-arg]
    with pytest.raises(errors.ArgumentsDoNotFit, match="unexpected keyword"):
        await tasks.record.aapply_async(("x",), {"nope": 1})
    with pytest.raises(errors.ArgumentsDoNotFit, match="missing a required"):
        await aiotaskq.aenqueue_many([tasks.record.s("ok")] * 100 + [tasks.record.s()])  # type: ignore[call-arg]
    assert _count(db) == 0


# --- args, kwargs and enqueue_many's items of the wrong kind ------------------------------


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: tasks.record.apply_async("abc"), "args must be a list or tuple"),
        (lambda: tasks.record.apply_async(args="abc"), "got str 'abc'"),
        (lambda: tasks.record.apply_async({"label": "x"}), "args must be a list or tuple"),
        (lambda: tasks.record.apply_async(("x",), ["value", 1]), "kwargs must be a mapping"),
        (lambda: aiotaskq.enqueue_many([tasks.record]), "write record.s(...)"),
        (
            lambda: aiotaskq.enqueue_many([tasks.record.s("a"), tasks.record, tasks.record.s("b")]),
            "got the task 'tests.app.tasks.record' itself",
        ),
        (
            lambda: aiotaskq.enqueue_many([tasks.record.s(f"{i}") for i in range(100)] + ["x"]),
            "enqueue_many takes signatures (my_task.s(...)), got str 'x'",
        ),
    ],
)
def test_wrong_kinds_of_arguments_are_refused(db: Any, call: Any, words: str) -> None:
    with pytest.raises(errors.InvalidArguments) as info:
        call()
    assert isinstance(info.value, aiotaskq.AiotaskqError)
    assert isinstance(info.value, TypeError)
    assert words in str(info.value)
    assert _count(db) == 0


def test_non_string_keyword_names_are_refused(db: Any) -> None:
    with pytest.raises(errors.ArgumentsNotSerializable, match="names must be strings"):
        tasks.types.apply_async(("x",), {1: "one"})
    assert _count(db) == 0


async def test_async_wrong_kinds_are_refused(db: Any) -> None:
    with pytest.raises(errors.InvalidArguments, match="args must be a list or tuple"):
        await tasks.record.aapply_async("abc")
    with pytest.raises(errors.InvalidArguments, match="takes signatures"):
        await aiotaskq.aenqueue_many([tasks.record])  # type: ignore[list-item]
    with pytest.raises(errors.InvalidArguments, match="takes signatures"):
        await aiotaskq.aenqueue_many([tasks.record.s("x")] * 100 + [tasks.record])  # type: ignore[list-item]
    assert _count(db) == 0


# --- Django's tasks framework, through the aiotaskq backend -------------------------------


@pytest.mark.skipif(django.VERSION < (6, 0), reason="Django's tasks framework needs 6.0")
@pytest.mark.parametrize("eager", [False, True])
def test_the_backend_refuses_the_same_input(db: Any, eager: bool) -> None:
    from tests.app import django_tasks as dj

    settings = {"ALWAYS_EAGER": eager, "IMPORTS": ["tests.app.django_tasks"]}
    with override_settings(AIOTASKQ=settings):
        with pytest.raises(errors.ArgumentsDoNotFit, match="too many positional"):
            dj.dj_add.enqueue(1, 2, 3)
        with pytest.raises(errors.ArgumentsDoNotFit, match="unexpected keyword argument 'z'"):
            dj.dj_add.enqueue(1, 2, z=3)
        # takes_context: the context comes first and is not the caller's to pass
        with pytest.raises(errors.ArgumentsDoNotFit, match=r"'label'.*parameters are \(label\)"):
            dj.dj_flaky.enqueue()
        with pytest.raises(errors.ArgumentsNotSerializable, match="NUL characters"):
            dj.dj_async_echo.enqueue({"k": "\x00"})
        with pytest.raises(errors.ArgumentsNotSerializable, match=SURROGATE):
            dj.dj_async_echo.enqueue({"\ud800": 1})
        result = dj.dj_add.enqueue(1, 2)
    assert _count(db) == (0 if eager else 1)
    if eager:
        assert result.return_value == 3


@pytest.mark.skipif(django.VERSION < (6, 0), reason="Django's tasks framework needs 6.0")
async def test_the_backend_refuses_the_same_input_async(db: Any) -> None:
    from tests.app import django_tasks as dj

    with pytest.raises(errors.ArgumentsDoNotFit, match="missing a required argument: 'y'"):
        await dj.dj_add.aenqueue(1)
    with pytest.raises(errors.ArgumentsNotSerializable, match="NUL characters"):
        await dj.dj_async_echo.aenqueue("\x00")
    assert _count(db) == 0
