"""The load scenarios of ``benchmarks/run.py``: many producers at once, a sustained paced
load with its pickup latency, depth and memory, several workers draining one queue, and a
worker's memory over a long drain.

They measure the way the other scenarios do: workers are real ``aiotaskq run`` processes,
tasks report through the probe (UDP on loopback), and the driver does not look at the task
table while it measures, except where a scenario says so (the sustained load's depth, once a
second). run.py hands its helpers over in a :class:`Kit`, so this module does not import it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from benchmarks import dbenv, harness

TABLE = "aiotaskq_task"
#: Producer coroutines of the ``producers`` scenario.
PRODUCERS = 20
#: The paced rate of the ``sustained`` scenario, tasks/s, and how often the producer enqueues.
SUSTAINED_RATE = 5000
SUSTAINED_TICK = 0.01
#: One task in this many reports its pickup in the ``sustained`` scenario.
SUSTAINED_SAMPLE = 10
#: Worker processes of the ``scaleout`` scenario, each at this concurrency.
SCALEOUT_WORKERS = 4
SCALEOUT_CONCURRENCY = 100
#: The ``memory`` scenario's worker, its idle time before the idle figure, and its fill.
MEMORY_CONCURRENCY = 200
MEMORY_IDLE_S = 5.0
MEMORY_CHUNK = 10_000
#: A worker process reports its running count every this many tasks (the probe's
#: ``AIOTASKQ_BENCH_EVERY``) in the scenarios where no single process knows the end.
COUNT_EVERY = 100


@dataclass(frozen=True)
class Kit:
    """What the scenarios need from run.py."""

    log_dir: Path
    #: ``start_worker(name, log_dir, env, *args)``: an ``aiotaskq run`` process.
    start_worker: Callable[..., harness.WorkerProcess]
    #: Empty the task table (Django's connection).
    truncate: Callable[[], None]
    #: Run a coroutine on a fresh loop and close that loop's enqueue pool afterwards.
    run_async: Callable[[Coroutine[Any, Any, Any]], Any]


# Sampling a worker -------------------------------------------------------------------------


def rss_mb(pid: int) -> float | None:
    """The resident set size of process ``pid`` in MB (``VmRSS`` of /proc/PID/status)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Sampler:
    """A thread that, once a second, notes a worker's RSS, the probe's running count and,
    with ``depth_conn``, the number of rows in the task table, and of those still queued
    (one ``SELECT count(*)`` from that separate connection: the one look at the table
    during a measurement). The rest are running or finished and not yet acknowledged."""

    def __init__(
        self,
        pid: int,
        probe: harness.Probe,
        depth_conn: psycopg.Connection[Any] | None = None,
        interval: float = 1.0,
    ) -> None:
        self._pid, self._probe, self._conn, self._interval = pid, probe, depth_conn, interval
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.is_set():
            sample: dict[str, Any] = {
                "t": round(time.monotonic() - t0, 3),
                "rss_mb": rss_mb(self._pid),
                "done": self._probe.progress(),
            }
            if self._conn is not None:
                row = self._conn.execute(
                    f"SELECT count(*), count(*) FILTER (WHERE state = 'queued') FROM {TABLE}"
                ).fetchone()
                sample["depth"], sample["queued"] = row if row else (None, None)
            with self._lock:
                self.samples.append(sample)
            self._stop.wait(self._interval - (time.monotonic() - t0) % self._interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.samples)


def _rss_summary(samples: list[dict[str, Any]]) -> dict[str, float | None]:
    rss = [s["rss_mb"] for s in samples if s["rss_mb"] is not None]
    if not rss:
        return {"start": None, "max": None, "end": None}
    return {"start": rss[0], "max": max(rss), "end": rss[-1]}


def wait_drained(
    conn: psycopg.Connection[Any],
    probe: harness.Probe,
    *,
    tasks: int,
    slack: int,
    procs: list[harness.WorkerProcess],
    timeout: float,
) -> float:
    """When (``time.time()``) the table was first seen empty after ``tasks`` tasks ran.

    Like :func:`harness.wait_table_empty`, without one process that knows the end: the
    driver waits, without looking at the table, until the workers' running counts (the
    probe's, every :data:`COUNT_EVERY` tasks per process) reach ``tasks - slack``, then looks
    every :data:`harness.EMPTY_POLL` until the table is empty.
    """
    deadline = time.monotonic() + timeout

    def check() -> None:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a worker exited ({proc.poll()}):\n{proc.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"not drained after {timeout:.0f} s ({probe.progress()} done): {_states(conn)}"
            )

    while probe.progress(tasks - slack, harness.SLOW_POLL) < tasks - slack:
        check()
    while True:
        t = time.time()
        row = conn.execute(f"SELECT EXISTS (SELECT 1 FROM {TABLE})").fetchone()
        if row is not None and not row[0]:
            return t
        check()
        time.sleep(harness.EMPTY_POLL)


def enqueue_chunks(make: Callable[[int], Any], n: int, chunk: int) -> None:
    """``enqueue_many`` of ``n`` signatures ``make(i)``, ``chunk`` at a time (one commit each)."""
    import aiotaskq

    for start in range(0, n, chunk):
        aiotaskq.enqueue_many([make(i) for i in range(start, min(n, start + chunk))])


def table_size(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """The task table's heap and total (with indexes and TOAST) bytes, and its live and dead
    tuples: counted by ``pgstattuple`` (a full read of the table, exact) when the extension
    can be had, else as the statistics have them (which lag the workers by up to seconds)."""
    row = conn.execute(
        # A partitioned table's bytes are its partitions' (pg_partition_tree lists a plain
        # table alone).
        "SELECT sum(pg_relation_size(relid))::bigint, sum(pg_total_relation_size(relid))::bigint "
        "FROM pg_partition_tree(%(t)s::regclass) WHERE isleaf",
        {"t": TABLE},
    ).fetchone()
    assert row is not None
    size: dict[str, Any] = {"heap_bytes": row[0], "total_bytes": row[1]}
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        row = conn.execute(
            "SELECT sum(t.tuple_count)::bigint, sum(t.dead_tuple_count)::bigint "
            "FROM pg_partition_tree(%s::regclass) AS p, pgstattuple(p.relid) AS t "
            "WHERE p.isleaf",
            (TABLE,),
        ).fetchone()
        size["counted_by"] = "pgstattuple"
    except psycopg.Error:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT sum(n_live_tup)::bigint, sum(n_dead_tup)::bigint FROM pg_stat_user_tables "
            "WHERE relid IN (SELECT relid FROM pg_partition_tree(%s::regclass) WHERE isleaf)",
            (TABLE,),
        ).fetchone()
        size["counted_by"] = "pg_stat_user_tables"
    assert row is not None
    size["live_tuples"], size["dead_tuples"] = row
    return size


# 1. Many producers ------------------------------------------------------------------------


def bench_producers(kit: Kit, per_producer: int) -> dict[str, Any]:
    """:data:`PRODUCERS` coroutines on one loop, each ``await noop.adelay(i)`` in a loop
    (default durability: a call returns once its row is committed), sharing the loop's
    enqueue pool. Tasks/s."""
    from benchmarks import bench_tasks

    async def produce() -> float:
        # Opens the pool's connections outside the timing.
        await asyncio.gather(*(bench_tasks.noop.adelay(-1) for _ in range(PRODUCERS)))

        async def producer() -> None:
            for i in range(per_producer):
                await bench_tasks.noop.adelay(i)

        started = time.perf_counter()
        await asyncio.gather(*(producer() for _ in range(PRODUCERS)))
        return time.perf_counter() - started

    kit.truncate()
    elapsed: float = kit.run_async(produce())
    kit.truncate()
    tasks = PRODUCERS * per_producer
    return {
        "producers": PRODUCERS,
        "tasks": tasks,
        "elapsed_s": elapsed,
        "tasks_per_s": tasks / elapsed,
    }


# 2. A sustained load ----------------------------------------------------------------------


async def paced(
    seconds: float, rate: float, sends: list[tuple[float, int]] | None = None
) -> dict[str, Any]:
    """Enqueue ``stamped`` tasks at ``rate`` per second for ``seconds``: every
    :data:`SUSTAINED_TICK` one ``aenqueue_many`` of the tasks due by then (so a slow call is
    made up by the next), each with the time just before the call as its argument. With
    ``sends``, each call appends ``(that time, tasks)`` to it: the offered rate over time."""
    import aiotaskq
    from benchmarks import bench_tasks

    await bench_tasks.noop.adelay(-1)  # opens the pool outside the timing
    sent = calls = 0
    slowest = 0.0
    t0 = time.monotonic()
    while (elapsed := time.monotonic() - t0) < seconds:
        due = int(rate * elapsed) - sent
        if due > 0:
            enqueued_at = time.time()
            await aiotaskq.aenqueue_many(
                [
                    bench_tasks.stamped.s(enqueued_at, (sent + k) % SUSTAINED_SAMPLE == 0)
                    for k in range(due)
                ]
            )
            slowest = max(slowest, time.time() - enqueued_at)
            if sends is not None:
                sends.append((enqueued_at, due))
            sent += due
            calls += 1
        await asyncio.sleep(SUSTAINED_TICK - (time.monotonic() - t0) % SUSTAINED_TICK)
    elapsed = time.monotonic() - t0
    return {
        "enqueued": sent,
        "calls": calls,
        "elapsed_s": elapsed,
        "enqueued_per_s": sent / elapsed,
        "slowest_call_s": slowest,
    }


def bench_sustained(kit: Kit, seconds: float) -> dict[str, Any]:
    """One worker (defaults) while the driver, on its own loop in its own process, enqueues
    :data:`SUSTAINED_RATE` tasks/s for ``seconds``.

    Reported: the rate achieved; pickup latency (task start minus the time just before its
    ``aenqueue_many`` call, from one task in :data:`SUSTAINED_SAMPLE`); the queue's depth and
    the worker's RSS, sampled once a second; and, once the worker has drained the queue and
    is idle, the table's size and dead tuples before and after a ``VACUUM``.
    """
    kit.truncate()
    database = dbenv.database_name()
    with (
        harness.Probe() as probe,
        harness.connect(database) as look,
        harness.connect(database) as depth_conn,
    ):
        env = harness.subprocess_env(AIOTASKQ_BENCH_PROBE=probe.address)
        # Whether dead rows are reclaimed during the run at all (the table's size says so).
        autovacuum = look.execute("SHOW autovacuum").fetchone()
        proc = kit.start_worker("sustained", kit.log_dir, env)
        try:
            proc.wait_line("worker.started", timeout=60)
            with Sampler(proc.proc.pid, probe, depth_conn) as sampler:
                t_start = time.time()
                produced = kit.run_async(paced(seconds, SUSTAINED_RATE))
                t_stop = time.time()
                # The measurement is over: from here the driver may look at the table.
                t_empty = _poll_empty(look, proc, timeout=60 + produced["enqueued"] / 5000)
                time.sleep(2.0)  # idle: the last acks and the statistics settle
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited ({proc.poll()}):\n{proc.tail()}")
            after_run = table_size(look)
            look.execute(f"VACUUM {TABLE}")
            after_vacuum = table_size(look)
        finally:
            rc = proc.stop()
        pickups = probe.pickups()
    samples = sampler.snapshot()
    depths = [s["depth"] for s in samples if s.get("depth") is not None]
    queued = [s["queued"] for s in samples if s.get("queued") is not None]
    return {
        "seconds": seconds,
        "rate": SUSTAINED_RATE,
        **produced,
        "backlog_drained_s": t_empty - t_stop,
        "pickup_samples": len(pickups),
        "pickup_s": harness.summarize([t - enq for enq, t in pickups]),
        "pickup_p99_by_10s": _by_window(pickups, t_start, 10.0),
        "depth": {"max": max(depths, default=None), "samples": depths},
        "queued": {"max": max(queued, default=None), "samples": queued},
        "rss_mb": _rss_summary(samples),
        "rss_samples_mb": [s["rss_mb"] for s in samples],
        "autovacuum": autovacuum[0] if autovacuum else None,
        "table_after_run": after_run,
        "table_after_vacuum": after_vacuum,
        "worker_exit": rc,
    }


def _by_window(pickups: list[tuple[float, float]], t0: float, width: float) -> list[float]:
    """The p99 pickup latency of each ``width`` seconds of the run (by enqueue time): a
    latency that grows over the run shows here, not in the overall percentiles."""
    windows: dict[int, list[float]] = {}
    for enq, t in pickups:
        windows.setdefault(int((enq - t0) // width), []).append(t - enq)
    return [harness.summarize(windows[k])["p99"] or 0.0 for k in sorted(windows)]


def _poll_empty(
    conn: psycopg.Connection[Any], proc: harness.WorkerProcess, timeout: float
) -> float:
    deadline = time.monotonic() + timeout
    while True:
        t = time.time()
        row = conn.execute(f"SELECT EXISTS (SELECT 1 FROM {TABLE})").fetchone()
        if row is not None and not row[0]:
            return t
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited ({proc.poll()}):\n{proc.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{TABLE} not empty after {timeout:.0f} s: {_states(conn)}")
        time.sleep(0.1)


def _states(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """What is left in the table, by state: for the message of a drain that did not end."""
    return conn.execute(
        f"SELECT state, count(*), min(execute_at), max(alive_at), count(DISTINCT worker_id) "
        f"FROM {TABLE} GROUP BY state"
    ).fetchall()


# 4. Several workers at once ---------------------------------------------------------------


def _drain_by(kit: Kit, n: int, workers: int, rounds: int) -> dict[str, Any]:
    """``n`` no-op async tasks drained by ``workers`` processes at once, ``rounds`` times.

    The workers start on an empty table. Each round, they are paused (SIGSTOP), the table is
    filled, and they are resumed (SIGCONT) together, so that no worker drains alone while
    the others are still starting. A round is timed from the resume to the table found
    empty (the same processes run every round, so the probe's "first task" is the first
    round's only); the median round is kept.
    """
    from benchmarks import bench_tasks

    kit.truncate()
    database = dbenv.database_name()
    runs: list[dict[str, float]] = []
    with harness.Probe() as probe, harness.connect(database) as conn:
        env = harness.subprocess_env(
            AIOTASKQ_BENCH_PROBE=probe.address, AIOTASKQ_BENCH_EVERY=str(COUNT_EVERY)
        )
        procs = [
            kit.start_worker(
                f"scaleout-{workers}x-{k + 1}",
                kit.log_dir,
                env,
                "--concurrency",
                str(SCALEOUT_CONCURRENCY),
            )
            for k in range(workers)
        ]
        try:
            for proc in procs:
                proc.wait_line("worker.started", timeout=60)
            for _ in range(rounds):
                kit.truncate()
                done_before = probe.progress()
                for proc in procs:
                    os.kill(proc.proc.pid, signal.SIGSTOP)
                enqueue_chunks(bench_tasks.noop.s, n, 5000)
                conn.execute(f"ANALYZE {TABLE}")
                t_resume = time.time()
                for proc in procs:
                    os.kill(proc.proc.pid, signal.SIGCONT)
                t_empty = wait_drained(
                    conn,
                    probe,
                    tasks=done_before + n,
                    slack=COUNT_EVERY * workers,
                    procs=procs,
                    timeout=60 + n / 100,
                )
                runs.append(
                    {
                        "resume_to_empty_s": t_empty - t_resume,
                        "tasks_per_s": n / (t_empty - t_resume),
                    }
                )
        finally:
            for proc in procs:
                if proc.poll() is None:
                    os.kill(proc.proc.pid, signal.SIGCONT)  # a stopped process ignores SIGTERM
            for proc in procs:
                proc.stop()
    ordered = sorted(runs, key=lambda r: r["tasks_per_s"])
    return {
        "workers": workers,
        "tasks": n,
        **ordered[(len(ordered) - 1) // 2],
        "rounds": [r["tasks_per_s"] for r in runs],
    }


def bench_scaleout(kit: Kit, n: int, rounds: int) -> dict[str, Any]:
    """The same drain by one worker process, then by :data:`SCALEOUT_WORKERS` at once, each
    at ``--concurrency`` :data:`SCALEOUT_CONCURRENCY`: more processes must not drain slower
    (``FOR UPDATE SKIP LOCKED`` keeps their claims apart)."""
    one = _drain_by(kit, n, 1, rounds)
    many = _drain_by(kit, n, SCALEOUT_WORKERS, rounds)
    return {
        "tasks": n,
        "concurrency": SCALEOUT_CONCURRENCY,
        "one": one,
        "many": many,
        "speedup": many["tasks_per_s"] / one["tasks_per_s"],
    }


# 5. Memory --------------------------------------------------------------------------------


def bench_memory(kit: Kit, n: int) -> dict[str, Any]:
    """One worker at ``--concurrency`` :data:`MEMORY_CONCURRENCY`: its RSS once started and
    idle for :data:`MEMORY_IDLE_S`; then ``n`` no-op tasks enqueued in chunks of
    :data:`MEMORY_CHUNK` while it runs, its RSS sampled every second: the figure once a
    tenth of them has run, the largest, and the one after the queue is drained."""
    from benchmarks import bench_tasks

    kit.truncate()
    database = dbenv.database_name()
    every = max(COUNT_EVERY, n // 1000)
    with harness.Probe() as probe, harness.connect(database) as conn:
        env = harness.subprocess_env(
            AIOTASKQ_BENCH_PROBE=probe.address, AIOTASKQ_BENCH_EVERY=str(every)
        )
        proc = kit.start_worker(
            "memory", kit.log_dir, env, "--concurrency", str(MEMORY_CONCURRENCY)
        )
        try:
            proc.wait_line("worker.started", timeout=60)
            rss_started = rss_mb(proc.proc.pid)
            time.sleep(MEMORY_IDLE_S)
            rss_idle = rss_mb(proc.proc.pid)
            with Sampler(proc.proc.pid, probe) as sampler:
                t_fill = time.time()
                enqueue_chunks(bench_tasks.noop.s, n, MEMORY_CHUNK)
                fill_s = time.time() - t_fill
                t_empty = wait_drained(
                    conn, probe, tasks=n, slack=every, procs=[proc], timeout=120 + n / 500
                )
            rss_end = rss_mb(proc.proc.pid)
        finally:
            rc = proc.stop()
        t_first = probe.first()
    samples = sampler.snapshot()
    tenth = next((s for s in samples if s["done"] >= n // 10), None)
    rss = [s["rss_mb"] for s in samples if s["rss_mb"] is not None]
    return {
        "tasks": n,
        "concurrency": MEMORY_CONCURRENCY,
        "rss_started_mb": rss_started,
        "rss_idle_mb": rss_idle,
        "fill_s": fill_s,
        "drain_s": t_empty - (t_first or t_fill),
        "tasks_per_s": n / (t_empty - (t_first or t_fill)),
        "rss_at_tenth_mb": tenth["rss_mb"] if tenth else None,
        "rss_max_mb": max(rss, default=None),
        "rss_end_mb": rss_end,
        "samples": samples,
        "worker_exit": rc,
    }


def burst_drain(kit: Kit, n: int, name: str, *args: str) -> dict[str, float]:
    """Time one ``--burst`` worker (``args`` its options) draining the ``n`` tasks already in
    the table: the moments of its ``worker.started`` line, of the first task's start and of
    the table found empty (this machine's clock)."""
    with harness.Probe() as probe, harness.connect(dbenv.database_name()) as conn:
        conn.execute(f"ANALYZE {TABLE}")
        env = harness.subprocess_env(
            AIOTASKQ_BENCH_PROBE=probe.address, AIOTASKQ_BENCH_EXPECT=str(n)
        )
        proc = kit.start_worker(name, kit.log_dir, env, "--burst", *args)
        try:
            t_ready = proc.wait_line("worker.started", timeout=60)
            t_empty = harness.wait_table_empty(
                conn, TABLE, probe=probe, timeout=60 + n / 100, proc=proc
            )
            proc.wait(60)
        finally:
            proc.stop()
        t_first = probe.first()
    if t_first is None:
        raise RuntimeError("no task reported its start")
    return {"ready": t_ready, "first": t_first, "empty": t_empty}


# The table --------------------------------------------------------------------------------


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The table's rows of these scenarios, as keyword arguments of run.py's ``Row``."""
    out: list[dict[str, Any]] = []

    def row(label: str, unit: str, higher: bool, value: Any, target: Any = None) -> None:
        out.append(harness.table_row(label, unit, higher, value, target))

    if r := results.get("producers"):
        label = f"producers: {r['producers']} x await adelay(), {r['tasks']:,} in all"
        row(label, "tasks/s", True, r["tasks_per_s"], 8000)
    if r := results.get("sustained"):
        head = f"sustained: {r['rate']:,}/s for {r['seconds']:.0f} s"
        row(f"{head}, enqueued", "tasks/s", True, r["enqueued_per_s"])
        for p, target in (("p50", None), ("p95", None), ("p99", 50.0)):
            value = r["pickup_s"][p]
            label = f"{head}, pickup {p} ({r['pickup_samples']:,} samples)"
            row(label, "ms", False, None if value is None else value * 1000, target)
        label = f"{head}, max queue depth (of which queued: {r['queued']['max']:,})"
        row(label, "tasks", False, r["depth"]["max"], r["rate"])
        rss = r["rss_mb"]
        if rss["start"] is not None:
            label = (
                f"{head}, worker RSS at the end (start {rss['start']:.0f}, max {rss['max']:.0f})"
            )
            row(label, "MB", False, rss["end"], rss["start"] * 1.1)
        for key, when in (("table_after_run", "once idle"), ("table_after_vacuum", "after VACUUM")):
            size = r[key]
            heap_kb = size["heap_bytes"] // 1024
            label = f"{head}, table {when} ({size['dead_tuples']:,} dead, heap {heap_kb:,} kB)"
            if r.get("autovacuum") == "off" and key == "table_after_run":
                label += ", autovacuum off"
            row(label, "kB", False, size["total_bytes"] / 1024)
    if r := results.get("scaleout"):
        one, many = r["one"], r["many"]
        head = f"scale-out: {r['tasks']:,} async no-op, c={r['concurrency']}"
        row(f"{head}, 1 worker", "tasks/s", True, one["tasks_per_s"])
        label = f"{head}, {many['workers']} workers"
        row(label, "tasks/s", True, many["tasks_per_s"], one["tasks_per_s"])
    if r := results.get("memory"):
        head = f"memory: c={r['concurrency']}"
        row(f"{head}, idle worker RSS", "MB", False, r["rss_idle_mb"], 60)
        tenth = r["rss_at_tenth_mb"]
        label = f"{head}, RSS after {r['tasks']:,} tasks"
        if tenth is not None:
            label += f" (at 10 %: {tenth:.0f}, max {r['rss_max_mb']:.0f})"
        row(label, "MB", False, r["rss_end_mb"], None if tenth is None else tenth * 1.1)
    return out
