"""Property-based tests of what a caller can pass as arguments: every value either comes
back from the row exactly as it was given, or is refused as ArgumentsNotSerializable before
any statement; never a DatabaseError, never a bare UnicodeEncodeError."""

from __future__ import annotations

import math
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiotaskq
from aiotaskq import errors
from aiotaskq.serialization import decode_arguments, encode_arguments
from tests.app import tasks

# Text of every kind: st.text() draws NULs and lone surrogates too.
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
KWARGS = st.dictionaries(st.text(max_size=8), VALUES, max_size=3)


def _storable(value: Any) -> bool:
    """What PostgreSQL can store: no NUL, no lone surrogate, in any string or key."""
    if isinstance(value, str):
        return "\x00" not in value and not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, list):
        return all(_storable(v) for v in value)
    if isinstance(value, dict):
        return all(_storable(k) and _storable(v) for k, v in value.items())
    return True


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the same JSON types all the way down (1.0 is not 1; -0.0 is 0.0: jsonb
    has no negative zero)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, float) or isinstance(b, float):
        return type(a) is type(b) and (a == b or (math.isnan(a) and math.isnan(b)))
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@settings(max_examples=300, deadline=None)
@given(st.lists(VALUES, max_size=3), KWARGS)
def test_encoding_refuses_exactly_what_postgresql_cannot_store(
    args: list[Any], kwargs: dict[str, Any]
) -> None:
    if not (_storable(args) and _storable(kwargs)):
        with pytest.raises(errors.ArgumentsNotSerializable, match=r"NUL|surrogate"):
            encode_arguments("t", args, kwargs, max_bytes=1 << 20)
        return
    args_json, kwargs_json = encode_arguments("t", args, kwargs, max_bytes=1 << 20)
    assert _same(list(decode_arguments(args_json, kwargs_json)), [args, kwargs])


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(st.tuples(VALUES, KWARGS), min_size=1, max_size=70))
def test_every_call_round_trips_through_the_row_or_is_refused(
    db: psycopg.Connection[Any], calls: list[tuple[Any, dict[str, Any]]]
) -> None:
    """A whole batch (written with COPY from 64 calls on): all of it is stored and read back
    exactly, or it is refused before anything is written."""
    db.execute("TRUNCATE aiotaskq_task")
    sigs = [tasks.types.s("p", value, **kwargs) for value, kwargs in calls]
    storable = all(_storable(value) and _storable(kwargs) for value, kwargs in calls)
    try:
        results = aiotaskq.enqueue_many(sigs)
    except errors.ArgumentsNotSerializable:
        assert not storable
        assert db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (0,)
        return
    assert storable
    rows = {
        id: (args_json, kwargs_json)
        for id, args_json, kwargs_json in db.execute(
            "SELECT id, args::text, kwargs::text FROM aiotaskq_task"
        )
    }
    assert len(rows) == len(calls)
    for result, (value, kwargs) in zip(results, calls, strict=True):
        args, stored_kwargs = decode_arguments(*rows[result.id])
        assert _same(args, ["p", value]), (args, value)
        assert _same(stored_kwargs, kwargs), (stored_kwargs, kwargs)


@settings(max_examples=25, deadline=None)
@given(st.text(max_size=30))
def test_any_text_is_stored_or_refused_on_the_async_path(text: str) -> None:
    from asgiref.sync import async_to_sync

    async def enqueue() -> None:
        from aiotaskq.db.connect import close_enqueue_pools

        try:
            await tasks.types.adelay("a", text)
        finally:
            await close_enqueue_pools()

    try:
        async_to_sync(enqueue)()
    except errors.ArgumentsNotSerializable:
        assert not _storable(text)
    else:
        assert _storable(text)
