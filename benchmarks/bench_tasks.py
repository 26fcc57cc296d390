"""The tasks the benchmark's aiotaskq workers run. They report to the benchmark through
:mod:`benchmarks.probe` (UDP on loopback), never through the database."""

from __future__ import annotations

import asyncio
import time

from aiotaskq import task
from benchmarks import probe


@task
async def noop(i: int = 0) -> None:
    probe.task_started()
    probe.task_finished()


@task
def noop_sync(i: int = 0) -> None:
    probe.task_started()
    probe.task_finished()


@task
async def sleep_for(seconds: float) -> None:
    probe.task_started()
    await asyncio.sleep(seconds)
    probe.task_finished()


@task
async def ping(sample: int) -> None:
    probe.started(sample)


@task
async def stamped(enqueued_at: float, report: bool) -> None:
    # Only some tasks report (``report``): at thousands a second, one datagram each would
    # add to the load being measured.
    if report:
        probe.picked_up(enqueued_at)
    # A running count every AIOTASKQ_BENCH_EVERY tasks (off when unset): the completions
    # over time of the ``horizon`` scenario.
    probe.task_finished()


@task
def spin_sync(ms: float) -> None:
    """``ms`` milliseconds of pure Python, by this thread's CPU clock: the same work however
    many threads share the GIL (a wall-clock deadline would let eight threads each take an
    eighth of the core and still finish "on time")."""
    probe.task_started()
    deadline = time.thread_time() + ms / 1000
    n = 0
    while time.thread_time() < deadline:
        n += 1
    probe.task_finished()


@task(queue="exports")
def export_sync(seconds: float) -> None:
    """The 3 AM story's export: a plain function that holds its thread for ``seconds``."""
    import time

    time.sleep(seconds)


@task(queue="critical")
def critical_sync(i: int = 0) -> None:
    """The 3 AM story's password-reset email: a plain function that returns at once."""


@task(keep_result=600)
async def stamp_end(i: int) -> float:
    """Returns the moment it ended (this machine's clock): the waiting scenario times the
    wait from there to its return."""
    return time.time()


@task(limit_key=lambda host, seconds: host, max_concurrent=4)
async def sleep_per_host(host: str, seconds: float) -> None:
    """A delivery to ``host``: at most four at once per host, over every worker."""
    probe.task_started()
    await asyncio.sleep(seconds)
    probe.task_finished()
