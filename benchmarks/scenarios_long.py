"""The long-job scenarios of ``benchmarks/run.py``: what waiting for a result costs and how
soon it returns, and what ``set_progress`` costs per call.

- ``waiting``: on an idle, running worker, one task at a time: ``await (await
  stamp_end.adelay(i)).aget()``. The task returns the moment it ended (``time.time()``; its
  result is kept); the figures are from its end, and from before its enqueue, to ``aget``'s
  return. Then the cost of being waited for: the same drain of no-op tasks with and without a
  waiter for every one of them (one process awaiting them all), rounds alternated.
- ``progress``: ``TaskContext.set_progress`` called in a loop, in this process (it does no
  I/O: the worker's heartbeat writes the latest one), nanoseconds a call.
"""

from __future__ import annotations

import statistics
import time
import timeit
import uuid
from typing import Any

from benchmarks import dbenv, harness
from benchmarks.scenarios_load import Kit, burst_drain

DRAIN_CONCURRENCY = 100


def bench_waiting(kit: Kit, samples: int, drain: int, rounds: int) -> dict[str, Any]:
    from benchmarks import bench_tasks

    kit.truncate()
    proc = kit.start_worker("waiting", kit.log_dir, harness.subprocess_env())
    try:
        proc.wait_line("worker.started", timeout=60)

        async def sample() -> tuple[list[float], list[float]]:
            from_end: list[float] = []
            from_enqueue: list[float] = []
            for i in range(samples + 20):
                before = time.time()
                result = await bench_tasks.stamp_end.adelay(i)
                ended = await result.aget(timeout=30)
                now = time.time()
                if i >= 20:  # warm-up: connections, prepared statements, the waiting thread
                    from_end.append(now - ended)
                    from_enqueue.append(now - before)
            return from_end, from_enqueue

        from_end, from_enqueue = kit.run_async(sample())
    finally:
        proc.stop()
    out: dict[str, Any] = {
        "samples": len(from_end),
        "end_to_return_s": harness.summarize(from_end),
        "enqueue_to_return_s": harness.summarize(from_enqueue),
    }
    plain: list[float] = []
    waited: list[float] = []
    for k in range(rounds):
        plain.append(_drain(kit, drain, False, f"waiting-drain-plain-{k + 1}"))
        waited.append(_drain(kit, drain, True, f"waiting-drain-waited-{k + 1}"))
    out["drain"] = {
        "tasks": drain,
        "plain_per_s": statistics.median(plain),
        "waited_per_s": statistics.median(waited),
        "plain_rounds": plain,
        "waited_rounds": waited,
    }
    return out


def _drain(kit: Kit, n: int, wait: bool, name: str) -> float:
    """``n`` no-op tasks drained by a ``--burst`` worker; with ``wait``, this process awaits
    every one of them (registered before the worker starts). Tasks/s from the worker's
    start line to the table found empty."""
    import aiotaskq
    from benchmarks import bench_tasks

    kit.truncate()
    ids: list[uuid.UUID] = []
    for chunk in range(0, n, 5000):
        results = aiotaskq.enqueue_many(
            [bench_tasks.noop.s(i) for i in range(chunk, min(n, chunk + 5000))]
        )
        ids += [r.id for r in results]
    waiter = None
    if wait:
        from aiotaskq.tasks import waiting

        futures = []
        for task_id in ids:
            w = waiting.Wait(task_id)
            waiting.hub().add(w)
            futures.append(w.future)
        waiter = futures
        with harness.connect(dbenv.database_name()) as conn:
            deadline = time.monotonic() + 60
            while conn.execute("SELECT count(*) FROM aiotaskq_waiter").fetchone()[0] < n:
                if time.monotonic() > deadline:
                    raise RuntimeError("the waits did not register")
                time.sleep(0.05)
    t = burst_drain(kit, n, name, "--concurrency", str(DRAIN_CONCURRENCY))
    if waiter is not None:
        for future in waiter:
            future.result(30)  # every wait ended
    return n / (t["empty"] - t["ready"])


def bench_progress(calls: int) -> dict[str, Any]:
    """``set_progress`` per call, in nanoseconds (the median of 5 timings of ``calls``)."""
    from aiotaskq.tasks.context import TaskContext

    ctx = TaskContext(
        id=uuid.uuid4(),
        name="bench",
        queue="default",
        attempt=1,
        retries=0,
        checkpoint=None,
        writer=None,
        loop=None,
    )
    counter = iter(range(10**12))

    def call() -> None:
        i = next(counter)
        ctx.set_progress(i, 1_000_000, "rows exported")

    timings = timeit.repeat(call, number=calls, repeat=5)
    return {"calls": calls, "ns_per_call": statistics.median(timings) / calls * 1e9}


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The table's rows of these scenarios, as keyword arguments of run.py's ``Row``."""
    out: list[dict[str, Any]] = []

    def row(label: str, unit: str, higher: bool, value: Any, target: Any = None) -> None:
        out.append(harness.table_row(label, unit, higher, value, target))

    if r := results.get("waiting"):
        for key, words in (("end_to_return_s", "task's end"), ("enqueue_to_return_s", "enqueue")):
            for p in ("p50", "p99"):
                value = r[key][p]
                row(
                    f"aget(): from the {words} to its return, {p}",
                    "ms",
                    False,
                    None if value is None else value * 1000,
                )
        d = r["drain"]
        row(f"drain {d['tasks']:,} no-op, nobody waiting", "tasks/s", True, d["plain_per_s"])
        row(f"drain {d['tasks']:,} no-op, each waited for", "tasks/s", True, d["waited_per_s"])
    if r := results.get("progress"):
        row("set_progress() per call", "ns", False, r["ns_per_call"])
    return out
