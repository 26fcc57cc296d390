"""Tasks the test suite runs in real worker processes. Each writes the ledger
(:class:`tests.app.models.Execution`), so a test can see what ran, where, and how often."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any

from django.db import DatabaseError

from aiotaskq import Retry, Snooze, task

from .models import Execution


@task
async def record(label: str, value: Any = None) -> None:
    await Execution.objects.acreate(label=label, pid=os.getpid(), value=value)


@task
def record_sync(label: str, value: Any = None) -> None:
    Execution.objects.create(label=label, pid=os.getpid(), value=value)


@task(queue="a")
async def record_a(label: str) -> None:
    await Execution.objects.acreate(label=label, pid=os.getpid())


@task(queue="b")
async def record_b(label: str) -> None:
    await Execution.objects.acreate(label=label, pid=os.getpid())


@task
async def sleep_then_record(label: str, seconds: float) -> None:
    await Execution.objects.acreate(label=f"{label}:start", pid=os.getpid())
    await asyncio.sleep(seconds)
    await Execution.objects.acreate(label=label, pid=os.getpid())


@task
def sleep_sync_then_record(label: str, seconds: float) -> None:
    Execution.objects.create(label=f"{label}:start", pid=os.getpid())
    time.sleep(seconds)
    Execution.objects.create(label=label, pid=os.getpid())


@task
async def fail(label: str) -> None:
    await Execution.objects.acreate(label=label, pid=os.getpid())
    raise RuntimeError(f"failing on purpose: {label}")


@task
async def types(label: str, *args: Any, **kwargs: Any) -> None:
    """Record the Python type and repr of every argument, as the task received it."""
    seen = [[type(v).__name__, repr(v)] for v in args]
    seen += [[k, type(v).__name__, repr(v)] for k, v in sorted(kwargs.items())]
    await Execution.objects.acreate(label=label, pid=os.getpid(), value=seen)


@task
async def noop() -> None:
    return None


# --- Fault tests. These append to a file ledger (AIOTASKQ_TEST_LEDGER) rather than a table,
# so that terminating database connections cannot blur what ran: one line per execution,
# written with O_APPEND after the task's last step that can fail.


def _ledger(label: str, event: str = "ran") -> None:
    line = f"{label} {event} {os.getpid()}\n".encode()
    fd = os.open(os.environ["AIOTASKQ_TEST_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@task(
    autoretry_for=(DatabaseError,),
    retry_kwargs={"countdown": 0.05, "max_retries": 50},
    on_dirty="retry",
)
async def ledger_async(label: str) -> None:
    """Reads through the ORM (a Django connection a fault may cut), then records."""
    await Execution.objects.filter(label=label).aexists()
    _ledger(label)


@task(
    autoretry_for=(DatabaseError,),
    retry_kwargs={"countdown": 0.05, "max_retries": 50},
    on_dirty="retry",
)
def ledger_sync(label: str) -> None:
    Execution.objects.filter(label=label).exists()
    _ledger(label)


@task(on_dirty="retry", max_retries=3)
async def slow_idempotent(label: str, seconds: float) -> None:
    """Sleeps on its first run only, so a rescued rerun finishes at once."""
    first = not await Execution.objects.filter(label=f"{label}:start").aexists()
    await Execution.objects.acreate(label=f"{label}:start", pid=os.getpid())
    if first:
        await asyncio.sleep(seconds)
    await Execution.objects.acreate(label=label, pid=os.getpid())


@task(on_dirty="retry", max_retries=3)
async def succeed_first_fail_rerun(label: str, seconds: float) -> None:
    """The first run sleeps and succeeds; any later run fails at once."""
    runs = await Execution.objects.filter(label=f"{label}:start").acount()
    await Execution.objects.acreate(label=f"{label}:start", pid=os.getpid())
    if runs:
        raise RuntimeError("a rerun fails on purpose")
    await asyncio.sleep(seconds)
    await Execution.objects.acreate(label=label, pid=os.getpid())


@task
async def block_loop(label: str, seconds: float) -> None:
    time.sleep(seconds)  # noqa: ASYNC251 - a blocking call that stalls the loop on purpose
    await Execution.objects.acreate(label=label, pid=os.getpid())


@task(autoretry_for=(RuntimeError,), retry_kwargs={"countdown": 0.1}, max_retries=3)
async def flaky(label: str, failures: int) -> None:
    """Fails its first ``failures`` runs, then succeeds."""
    runs = await Execution.objects.filter(label=label).acount()
    await Execution.objects.acreate(label=label, pid=os.getpid())
    if runs < failures:
        raise RuntimeError(f"failure {runs + 1} of {failures}")


@task(
    autoretry_for=(LookupError,),
    dont_autoretry_for=(KeyError,),
    retry_backoff=0.2,
    retry_jitter=False,
    max_retries=2,
)
async def backoff(label: str, exc: str) -> None:
    await Execution.objects.acreate(label=label, pid=os.getpid())
    raise {"lookup": LookupError, "key": KeyError}[exc](label)


@task(max_retries=5)
async def explicit_retry(label: str, times: int) -> None:
    runs = await Execution.objects.filter(label=label).acount()
    await Execution.objects.acreate(label=label, pid=os.getpid())
    if runs < times:
        raise Retry(countdown=0.1, exc=ValueError(f"not yet ({runs})"))


@task(max_retries=0)
async def snooze_once(label: str) -> None:
    runs = await Execution.objects.filter(label=label).acount()
    await Execution.objects.acreate(label=label, pid=os.getpid())
    if runs == 0:
        raise Snooze(0.3)


@task(time_limit=0.5, max_retries=0)
async def too_slow(label: str, seconds: float) -> None:
    await Execution.objects.acreate(label=f"{label}:start", pid=os.getpid())
    await asyncio.sleep(seconds)
    await Execution.objects.acreate(label=label, pid=os.getpid())


@task(time_limit=0.3)
def too_slow_sync(label: str, seconds: float) -> None:
    time.sleep(seconds)
    Execution.objects.create(label=label, pid=os.getpid())


@task
def add(x: int, y: int) -> int:
    return x + y


@task
async def aadd(x: int, y: int) -> int:
    return x + y


@task
def explode() -> None:
    raise ValueError("eager failure")


@task
async def orm_read_write(label: str) -> None:
    """Reads and writes through the async ORM, with a pause between, like real work."""
    row = await Execution.objects.acreate(label=label, pid=os.getpid())
    await asyncio.sleep(0.02)
    await Execution.objects.filter(pk=row.pk).aupdate(value="written")


# --- Hardening: every way an attempt can end, mixed in one worker (tests/test_hardening.py).


class HostileError(Exception):
    """An exception that cannot be printed."""

    def __str__(self) -> str:
        raise RuntimeError("__str__ refuses")

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ refuses")


class CustomBaseError(BaseException):
    """Not an Exception: a bare ``except Exception`` does not catch it."""


def _end(label: str, how: str) -> Any:
    if how == "ok":
        return None
    if how == "retry":
        raise Retry(countdown=1, max_retries=1)
    if how == "snooze":
        if not Execution.objects.filter(label=label).exists():
            Execution.objects.create(label=label, pid=os.getpid())
            raise Snooze(0.5)
        return None
    if how == "nul":
        raise ValueError(f"binary data: b'\x00\x01' in {label}")
    if how == "surrogate":
        raise ValueError(f"half a pair: \ud800 in {label}")
    if how == "hostile":
        raise HostileError()
    if how == "base":
        raise CustomBaseError(label)
    if how == "cancelled":
        raise asyncio.CancelledError(label)
    if how == "exit":
        raise SystemExit(3)
    if how == "huge":
        raise ValueError("x" * 1_000_000)
    raise AssertionError(how)


@task
async def ends(label: str, how: str) -> Any:
    """End the attempt as ``how`` says (see ``_end``), as a coroutine."""
    if how == "snooze":
        exists = await Execution.objects.filter(label=label).aexists()
        if not exists:
            await Execution.objects.acreate(label=label, pid=os.getpid())
            raise Snooze(0.5)
        return None
    return _end(label, how)


@task
def ends_sync(label: str, how: str) -> Any:
    """The same as a plain function."""
    return _end(label, how)


@task(time_limit=0.5)
async def stubborn(label: str) -> None:
    """Swallows every cancellation: past its time limit it is ended without it."""
    await Execution.objects.acreate(label=f"{label}:start", pid=os.getpid())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(BaseException):
            await asyncio.sleep(0.05)


@task(on_dirty="retry", max_retries=3)
async def nap_then_ledger(label: str, seconds: float) -> None:
    """Needs no database: records its start and its end in the file ledger only."""
    _ledger(label, "start")
    await asyncio.sleep(seconds)
    _ledger(label)


@task(time_limit=1, max_retries=0)
def overrun_sync(label: str, seconds: float) -> None:
    """A plain function that runs past its time limit of 1 s."""
    Execution.objects.create(label=f"{label}:start", pid=os.getpid())
    time.sleep(seconds)
    Execution.objects.create(label=label, pid=os.getpid())


# --- Lanes (tests/test_lanes.py, benchmarks/scenarios_lanes.py): the 3 AM story.


@task(queue="exports")
def export_csv(label: str, seconds: float) -> None:
    """A slow plain-function export: records its start and its end (the ledger of how many
    ran at once) and the thread it ran in."""
    import threading

    thread = threading.current_thread().name
    Execution.objects.create(label=f"{label}:start", pid=os.getpid(), value=thread)
    time.sleep(seconds)
    Execution.objects.create(label=f"{label}:end", pid=os.getpid(), value=thread)


@task(queue="critical")
def send_password_reset(label: str) -> None:
    """A fast plain-function task that must never wait behind an export."""
    import threading

    Execution.objects.create(label=label, pid=os.getpid(), value=threading.current_thread().name)


@task(queue="limited")
async def sleep_in_limited_queue(label: str, seconds: float) -> None:
    """No time limit of its own: the queue's applies."""
    await Execution.objects.acreate(label=f"{label}:start", pid=os.getpid())
    await asyncio.sleep(seconds)
    await Execution.objects.acreate(label=label, pid=os.getpid())


@task(queue="limited", time_limit=30, max_retries=0)
async def sleep_with_own_limit(label: str, seconds: float) -> None:
    """Its own time limit wins over the queue's."""
    await asyncio.sleep(seconds)
    await Execution.objects.acreate(label=label, pid=os.getpid())


# --- long jobs: the task's context, checkpoints, progress, kept results --------------------


def _until(label: str, timeout: float = 60.0) -> None:
    """Block until the test writes the ledger row ``label`` (its go-ahead)."""
    deadline = time.monotonic() + timeout
    while not Execution.objects.filter(label=label).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {label!r} within {timeout} s")
        time.sleep(0.02)


async def _auntil(label: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await Execution.objects.filter(label=label).aexists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {label!r} within {timeout} s")
        await asyncio.sleep(0.02)


def _seen(ctx: Any) -> dict[str, Any]:
    return {
        "id": str(ctx.id),
        "name": ctx.name,
        "queue": ctx.queue,
        "attempt": ctx.attempt,
        "retries": ctx.retries,
        "checkpoint": ctx.checkpoint,
        "scheduled_for": ctx.scheduled_for,
    }


@task(keep_result=600)
async def whoami() -> dict[str, Any]:
    from aiotaskq import current_task

    return _seen(current_task())


@task(keep_result=600)
def whoami_sync() -> dict[str, Any]:
    from aiotaskq import current_task

    return _seen(current_task())


@task(keep_result=600, autoretry_for=(ValueError,), retry_kwargs={"countdown": 0})
def resumes_after_retry(label: str) -> dict[str, Any]:
    """The first attempt saves a checkpoint and fails; the second returns what it reads."""
    from aiotaskq import current_task

    ctx = current_task()
    if ctx.attempt == 1:
        ctx.save_checkpoint({"rows": 2000, "label": label})
        raise ValueError("the first attempt fails after its checkpoint")
    return _seen(ctx)


@task(keep_result=600, on_dirty="retry")
async def resumes_after_kill(label: str) -> dict[str, Any]:
    """The first attempt saves a checkpoint and then hangs until its worker is killed."""
    from aiotaskq import current_task

    ctx = current_task()
    if ctx.checkpoint is None:
        await ctx.asave_checkpoint({"done": 3, "label": label})
        await Execution.objects.acreate(label=f"{label}:saved", pid=os.getpid())
        await asyncio.sleep(3600)
    return _seen(ctx)


@task
def late_checkpoint(label: str) -> None:
    """Saves a checkpoint once told to (after the test took its lease); records the error."""
    from aiotaskq import current_task

    Execution.objects.create(label=f"{label}:start", pid=os.getpid())
    _until(f"{label}:go")
    try:
        current_task().save_checkpoint(1)
    except Exception as exc:
        Execution.objects.create(label=f"{label}:error", pid=os.getpid(), value=type(exc).__name__)
    else:
        Execution.objects.create(label=f"{label}:error", pid=os.getpid(), value=None)


@task
async def reports_progress(label: str, calls: int) -> None:
    """Sets its progress ``calls`` times, then waits for the test's go-ahead."""
    from aiotaskq import current_task

    ctx = current_task()
    for i in range(calls):
        await ctx.aset_progress(i + 1, calls, f"{i + 1} of {calls} rows")
    await Execution.objects.acreate(label=f"{label}:set", pid=os.getpid())
    await _auntil(f"{label}:go")


@task
def reports_progress_sync(label: str) -> None:
    from aiotaskq import current_task

    current_task().set_progress(7, None, "no total \x00 here")
    Execution.objects.create(label=f"{label}:set", pid=os.getpid())
    _until(f"{label}:go")


@task(keep_result=600)
async def returns(value: Any) -> Any:
    return value


@task(max_retries=0)
async def fails_for_good(message: str) -> None:
    raise RuntimeError(message)


@task
async def waits_for(task_id: str, timeout: float) -> None:
    """Inside a task: waits for another task (the deadlock warning's case)."""
    from aiotaskq import AsyncResult

    await AsyncResult(task_id).aget(timeout=timeout)
    await Execution.objects.acreate(label="waited", pid=os.getpid())


@task(keep_result=600, max_retries=0)
async def checkpoint_then(label: str, how: str) -> dict[str, Any]:
    """The first attempt saves a checkpoint, then snoozes, fails for good, or hangs (until
    its worker stops); a later attempt returns what it sees."""
    from aiotaskq import current_task

    ctx = current_task()
    if ctx.checkpoint is None:
        await ctx.asave_checkpoint({"label": label, "saved_by": ctx.attempt})
        if how == "snooze":
            raise Snooze(0)
        if how == "fail":
            raise RuntimeError("fails after its checkpoint")
        await Execution.objects.acreate(label=f"{label}:saved", pid=os.getpid())
        await asyncio.sleep(3600)
    return _seen(ctx)


# --- Unique tasks (tests/test_unique.py).


@task(unique=True)
async def rebuild(label: str, report: int, full: bool = False) -> None:
    """At most one queued or running rebuild of a report (its key: the arguments)."""
    await Execution.objects.acreate(label=label, pid=os.getpid(), value=[report, full])


@task
async def digest(label: str, value: Any = None) -> None:
    """Called with unique_key and on_conflict="replace": the debounced one."""
    await Execution.objects.acreate(label=label, pid=os.getpid(), value=value)


@task(on_dirty="retry", max_retries=3)
async def unique_slow(label: str, seconds: float) -> None:
    """A keyed task that sleeps on its first run only (rescued after a SIGKILL)."""
    first = not await Execution.objects.filter(label=f"{label}:start").aexists()
    await Execution.objects.acreate(label=f"{label}:start", pid=os.getpid())
    if first:
        await asyncio.sleep(seconds)
    await Execution.objects.acreate(label=label, pid=os.getpid())


@task
async def unique_slow_keep(label: str, seconds: float) -> None:
    """The same, of an on_dirty="keep" name: a Dirty one waits for a person."""
    await Execution.objects.acreate(label=f"{label}:start", pid=os.getpid())
    await asyncio.sleep(seconds)
    await Execution.objects.acreate(label=label, pid=os.getpid())


@task(autoretry_for=(RuntimeError,), retry_kwargs={"countdown": 0.2}, max_retries=2)
async def unique_flaky(label: str, failures: int) -> None:
    """Fails its first ``failures`` attempts, then records."""
    runs = await Execution.objects.filter(label=f"{label}:try").acount()
    await Execution.objects.acreate(label=f"{label}:try", pid=os.getpid())
    if runs < failures:
        raise RuntimeError(f"attempt {runs + 1} fails on purpose")
    await Execution.objects.acreate(label=label, pid=os.getpid())


# --- Limits per key (tests/test_limits.py). Each run records when it started and ended.


async def _timed(label: str, key: str, seconds: float) -> None:
    started = time.time()
    await asyncio.sleep(seconds)
    await Execution.objects.acreate(
        label=label, pid=os.getpid(), value={"key": key, "start": started, "end": time.time()}
    )


@task(limit_key=lambda label, host, seconds: host, max_concurrent=3)
async def per_host(label: str, host: str, seconds: float) -> None:
    """At most three at once per host, across every worker."""
    await _timed(label, host, seconds)


@task(limit_key=lambda label, key: key, rate_limit="10/s")
async def rated(label: str, key: str) -> None:
    """Ten a second per key (a bucket of ten)."""
    await _timed(label, key, 0.0)


@task(
    limit_key=lambda label, key, failures: key,
    max_concurrent=1,
    autoretry_for=(RuntimeError,),
    retry_kwargs={"countdown": 0.3},
)
async def limited_flaky(label: str, key: str, failures: int) -> None:
    """One at a time per key; fails its first ``failures`` attempts (retried)."""
    started = time.time()
    runs = await Execution.objects.filter(label=f"{label}:try").acount()
    await Execution.objects.acreate(label=f"{label}:try", pid=os.getpid())
    await asyncio.sleep(0.2)
    if runs < failures:
        raise RuntimeError(f"attempt {runs + 1} fails on purpose")
    await Execution.objects.acreate(
        label=label, pid=os.getpid(), value={"key": key, "start": started, "end": time.time()}
    )


@task(max_concurrent=1)
async def one_at_a_time(label: str, seconds: float) -> None:
    """One at a time for the task as a whole (no key function: every call shares one)."""
    await _timed(label, "*", seconds)


@task(limit_key=lambda label, key, seconds: key, max_concurrent=2)
def per_key_sync(label: str, key: str, seconds: float) -> None:
    """A plain function with a limit: two at once per key."""
    started = time.time()
    time.sleep(seconds)
    Execution.objects.create(
        label=label, pid=os.getpid(), value={"key": key, "start": started, "end": time.time()}
    )


# --- Traces (tests/test_traces.py).


@task
async def traced_inner(label: str) -> None:
    """Makes a span of its own: a child of the attempt's span."""
    from opentelemetry import trace

    with trace.get_tracer("tests").start_as_current_span("inner work"):
        await Execution.objects.acreate(label=label, pid=os.getpid())
