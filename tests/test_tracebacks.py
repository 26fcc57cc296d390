"""What a failed attempt keeps of its exception (``aiotaskq.tracebacks``): the traceback
starts at the task's own frame whatever ran it (a coroutine on the loop, a plain function in a
thread pool through asgiref), chains stay readable, the size is capped, and no exception can
make either function raise."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import traceback
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiotaskq
from aiotaskq import task
from aiotaskq.testing import run_until_empty
from aiotaskq.tracebacks import (
    MAX_MESSAGE_CHARS,
    MAX_TRACEBACK_CHARS,
    cut_middle,
    format_task_traceback,
    safe_str,
)

# -- real call chains -----------------------------------------------------------------------


def _parse_key(data: dict[str, Any]) -> Any:
    return data["key"]


def _parse(data: dict[str, Any]) -> Any:
    try:
        return _parse_key(data)
    except KeyError as exc:
        raise ValueError("the payload has no key") from exc


async def _fetch(data: dict[str, Any]) -> Any:
    await asyncio.sleep(0)
    return _parse(data)


async def deliver(data: dict[str, Any]) -> Any:
    """A coroutine task that fails two helpers down."""
    return await _fetch(data)


def rebuild(data: dict[str, Any]) -> Any:
    """A plain function task that fails two helpers down."""
    return _parse(data)


async def _runner_step(fn: Callable[..., Any], *args: Any) -> Any:
    # As the worker runs a coroutine: in its own asyncio task, under a time limit, inside a
    # few frames of the runner's own.
    async with asyncio.timeout(30):
        return await fn(*args)


async def _run_like_a_worker(fn: Callable[..., Any], *args: Any) -> BaseException:
    try:
        if asyncio.iscoroutinefunction(fn):
            await asyncio.get_running_loop().create_task(_runner_step(fn, *args))
        else:
            with ThreadPoolExecutor(max_workers=1) as pool:
                await sync_to_async(fn, thread_sensitive=False, executor=pool)(*args)
    except Exception as exc:
        return exc
    raise AssertionError(f"{fn.__name__} did not fail")


def _blocks(text: str) -> list[str]:
    """The tracebacks of a chain, in the order printed (the one raised last, last)."""
    parts = text.split("Traceback (most recent call last):\n")
    return parts[1:] if len(parts) > 1 else [text]


def _frames(block: str) -> list[str]:
    return re.findall(r'^  File "[^"]*", line \d+, in (\S+)$', block, re.MULTILINE)


@pytest.mark.parametrize("fn", [deliver, rebuild], ids=["coroutine", "thread"])
async def test_the_traceback_starts_at_the_task_frame(fn: Callable[..., Any]) -> None:
    exc = await _run_like_a_worker(fn, {})
    full = "".join(traceback.format_exception(exc))
    assert _frames(_blocks(full)[-1])[0] != fn.__name__  # the runner's frames come first

    text = format_task_traceback(exc, fn)

    *causes, last = _blocks(text)
    assert _frames(last)[0] == fn.__name__
    assert _frames(last)[1:3] in (["_fetch", "_parse"], ["_parse"])
    assert last.rstrip().endswith("ValueError: the payload has no key")
    # The chain is kept, readable: the cause first, with Python's sentence between.
    assert "The above exception was the direct cause of the following exception" in text
    assert _frames(causes[0]) == ["_parse", "_parse_key"]
    assert "KeyError: 'key'" in causes[0]
    for runner in ("asyncio", "asgiref", "concurrent", "_run_like_a_worker", "_runner_step"):
        assert runner not in text


async def test_without_the_task_frame_it_starts_outside_the_runner() -> None:
    # A call that fails before the task's first line (a wrong argument) has no task frame:
    # the first frame outside asyncio, asgiref and the thread pool is kept, here this test's.
    exc = await _run_like_a_worker(rebuild, {}, "one too many")
    assert isinstance(exc, TypeError)
    text = format_task_traceback(exc, rebuild)
    assert _frames(text)[0] == "_run_like_a_worker"  # the frames after it stay
    # With no function given, the same rule.
    exc = await _run_like_a_worker(deliver, {})
    assert _frames(_blocks(format_task_traceback(exc, None))[-1])[0] == "_run_like_a_worker"


def test_a_callable_without_code_keeps_from_the_first_frame_outside_the_runner() -> None:
    async def main() -> None:
        await asyncio.sleep(0)
        raise ValueError("x")

    try:
        asyncio.run(asyncio.wait_for(main(), 10))
    except ValueError as exc:
        text = format_task_traceback(exc, len)  # a builtin: no code object
    assert "ValueError: x" in text
    frames = _frames(text)
    assert frames[0] == "test_a_callable_without_code_keeps_from_the_first_frame_outside_the_runner"
    assert frames[-1] == "main"


def test_every_frame_is_kept_when_all_are_the_runner_s() -> None:
    # Code that says it is aiotaskq's own, raising and catching: no frame is the task's.
    source = "try:\n    raise ValueError('inside')\nexcept ValueError as e:\n    caught = e\n"
    namespace: dict[str, Any] = {}
    exec(compile(source, str(Path(aiotaskq.__file__).with_name("runner.py")), "exec"), namespace)
    text = format_task_traceback(namespace["caught"], deliver)
    assert text.startswith("Traceback (most recent call last):\n")
    assert len(_frames(text)) == 1


# -- through the real worker ----------------------------------------------------------------


@task(name="tests.tracebacks.deliver")
async def failing_coroutine(data: dict[str, Any]) -> Any:
    return await _fetch(data)


@task(name="tests.tracebacks.rebuild")
def failing_function(data: dict[str, Any]) -> Any:
    return _parse(data)


class _Recorded(logging.Handler):
    """The exceptions the worker logs with its task.failed events."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.exceptions: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        exc = getattr(record, "exception", None)
        if isinstance(exc, BaseException):
            self.exceptions.append(exc)


@pytest.fixture
def recorded() -> Iterator[_Recorded]:
    handler = _Recorded()
    logger = logging.getLogger("aiotaskq.worker")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def _in_thread(fn: Callable[[], None]) -> None:
    # run_until_empty opens its own loop: not on pytest-asyncio's.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(fn).result(timeout=60)


@pytest.mark.parametrize("fn", [failing_coroutine, failing_function], ids=["coroutine", "thread"])
def test_the_exception_a_worker_records_starts_at_the_task(
    fn: Any, recorded: _Recorded, db: Any
) -> None:
    fn.delay({})
    _in_thread(run_until_empty)
    (exc,) = recorded.exceptions
    full = "".join(traceback.format_exception(exc))
    assert len(_frames(_blocks(full)[-1])) > 3  # the worker's frames first, today

    last = _blocks(format_task_traceback(exc, fn.fn))[-1]

    assert _frames(last)[0] == fn.fn.__name__
    assert "aiotaskq/worker" not in last


def test_the_stored_traceback_starts_at_the_task(db: Any) -> None:
    failing_coroutine.delay({})
    _in_thread(run_until_empty)
    ((errors,),) = db.execute("SELECT errors FROM aiotaskq_task").fetchall()
    assert _frames(_blocks(errors[-1]["traceback"])[-1])[0] == "failing_coroutine"


# -- sizes ------------------------------------------------------------------------------------


def test_a_long_traceback_is_cut_in_the_middle_keeping_head_and_tail() -> None:
    def down(n: int) -> None:
        if n == 0:
            raise ValueError("bottom " + "x" * 20_000 + " END")
        down(n - 1)

    try:
        down(3)
    except ValueError as exc:
        text = format_task_traceback(exc, down)
    assert MAX_TRACEBACK_CHARS - 10 < len(text) <= MAX_TRACEBACK_CHARS
    assert _frames(text)[0] == "down"  # the head: where the task starts
    assert text.endswith(" END\n")  # the tail: the end of the message
    assert re.search(r"\n\.\.\. [\d,]+ characters cut \.\.\.\n", text)


@given(st.text(max_size=300), st.integers(min_value=0, max_value=200))
def test_cut_middle_keeps_to_its_limit_and_says_how_much_it_cut(text: str, limit: int) -> None:
    cut = cut_middle(text, limit)
    assert len(cut) <= limit
    if len(text) <= limit:
        assert cut == text
    elif match := re.search(r"\.\.\. ([\d,]+) characters cut \.\.\.", cut):
        kept = len(cut) - len(match.group(0)) - 2
        assert int(match.group(1).replace(",", "")) == len(text) - kept
        head, _, tail = cut.partition(f"\n{match.group(0)}\n")
        assert text.startswith(head)
        assert text.endswith(tail)


def test_a_long_message_is_cut_with_a_marker() -> None:
    message = safe_str(ValueError("a" * 10_000 + "END"))
    assert len(message) <= MAX_MESSAGE_CHARS
    assert message.startswith("aaa")
    assert message.endswith("END")
    assert "characters cut" in message


# -- hostile exceptions -------------------------------------------------------------------------


class _Boom(Exception):
    pass


class _Custom(BaseException):
    """Not an Exception: what `except Exception` in a task does not catch."""


def _raiser(kind: type[BaseException]) -> Callable[..., Any]:
    def method(self: Any, *args: Any) -> Any:
        raise kind("hostile")

    return method


_bases = st.sampled_from(
    [
        Exception,
        ValueError,
        KeyError,
        OSError,
        _Custom,
        asyncio.CancelledError,
        SyntaxError,
        AttributeError,
        NameError,
        ImportError,
        UnicodeDecodeError,
    ]
)
_failures = st.sampled_from([RuntimeError, _Boom, _Custom, RecursionError, KeyboardInterrupt])


@st.composite
def hostile_exceptions(draw: st.DrawFn) -> BaseException:
    base = draw(_bases)
    namespace: dict[str, Any] = {}
    for dunder in ("__str__", "__repr__", "__getattr__"):
        if draw(st.booleans()):
            namespace[dunder] = _raiser(draw(_failures))
    if draw(st.booleans()):
        namespace["__notes__"] = property(_raiser(draw(_failures)))
    kind = type("Hostile" + base.__name__, (base,), namespace)
    try:
        exc = kind(*(("utf-8", b"\xff", 0, 1, "bad") if base is UnicodeDecodeError else ()))
    except BaseException:  # a constructor reading an attribute that __getattr__ spoils
        exc = kind.__new__(kind)
    message = draw(st.text(max_size=50))
    if draw(st.booleans()):
        with contextlib.suppress(BaseException):  # a subclass with hostile attributes may refuse
            exc.args = (message,)
    if draw(st.booleans()):  # raised, so that it has a traceback; else __traceback__ is None
        with contextlib.suppress(BaseException):
            raise exc
    chain = draw(st.sampled_from(["none", "cause", "context", "cycle", "self"]))
    other = ValueError(message)
    if chain == "cause":
        exc.__cause__ = other
    elif chain == "context":
        exc.__context__ = other
    elif chain == "cycle":
        exc.__context__ = other
        other.__context__ = exc
    elif chain == "self":
        exc.__cause__ = exc
    if draw(st.booleans()):
        exc.__suppress_context__ = True
    return exc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_exceptions(), st.sampled_from([None, deliver, rebuild, len, object()]))
def test_no_exception_makes_them_raise(exc: BaseException, fn: Any) -> None:
    text = format_task_traceback(exc, fn)
    message = safe_str(exc)
    assert isinstance(text, str)
    assert 0 < len(text) <= MAX_TRACEBACK_CHARS
    assert isinstance(message, str)
    assert len(message) <= MAX_MESSAGE_CHARS
    assert "Hostile" in text


def test_an_unprintable_exception_says_what_it_is() -> None:
    class Unprintable(ValueError):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert safe_str(Unprintable()) == "<unprintable Unprintable: __str__ raised RuntimeError>"
    text = format_task_traceback(Unprintable())
    assert "Unprintable" in text


def test_an_exception_that_was_never_raised_has_its_line_only() -> None:
    assert format_task_traceback(ValueError("never raised"), deliver) == (
        "ValueError: never raised\n"
    )


def test_a_unique_marker_is_not_mistaken_for_a_cut() -> None:
    # Text that already holds the marker's words is only cut by its own length.
    text = "... 3 characters cut ..." + str(uuid.uuid4())
    assert cut_middle(text, len(text)) == text
