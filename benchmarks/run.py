"""Benchmarks of aiotaskq on a local PostgreSQL, side by side with django-taskq.

Run from the repository root::

    python benchmarks/run.py            # the full run, about ten minutes
    python benchmarks/run.py --quick    # smaller sizes, about a minute
    python benchmarks/run.py --json out.json --only drain,latency --no-peer

It drops and recreates its own database (see ``benchmarks/dbenv.py``), migrates it, runs the
scenarios below, prints a table and writes JSON (default ``benchmarks/results/latest.json``).
Workers are real processes (``python -m aiotaskq.cli run --settings benchmarks.settings``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import (  # noqa: E402
    dbenv,
    harness,
    scenarios_horizon,
    scenarios_lanes,
    scenarios_limits,
    scenarios_load,
    scenarios_long,
    scenarios_procs,
    scenarios_unique,
)

RESULTS = ROOT / "benchmarks" / "results"
PEER_VENV = ROOT / "benchmarks" / ".venv-peers"
TABLE = "aiotaskq_task"
SCENARIOS = (
    "enqueue",
    "enqueue_many",
    "producers",
    "drain",
    "drain_sync",
    "fanout",
    "fanout_large",
    "latency",
    "sustained",
    "scaleout",
    "memory",
    "processes",
    "horizon",
    "lanes_story",
    "lanes_drain",
    "waiting",
    "progress",
    "unique",
    "limits_fanout",
)
# Scenarios left out of a run unless --only names them: `horizon` takes 17 minutes in full.
ON_REQUEST = ("horizon",)


@dataclass(frozen=True)
class Sizes:
    enqueue: int  # single delay()/adelay() calls, each
    enqueue_many: int  # signatures per enqueue_many call
    enqueue_many_rounds: int  # the median of this many calls is kept
    drain: int  # async no-op tasks drained
    rounds: int  # drains and fan-outs: the median of this many runs is kept
    drain_sync: int  # sync no-op tasks drained
    fanout: int  # sleeping tasks
    latency: int  # latency samples kept
    producers: int  # adelay() calls per producer coroutine (20 of them)
    sustained_s: float  # seconds of the paced load
    fanout_large: int  # sleeping tasks at --concurrency 500
    scaleout: int  # async no-op tasks drained by 1, then 4 worker processes
    memory: int  # async no-op tasks of the long drain
    processes: int  # CPU-bound sync tasks drained by 1 process, then by --processes 2
    horizon_s: float  # seconds of each paced load of the horizon scenario (4 runs)
    peer_drain: int
    peer_latency: int


FULL = Sizes(
    enqueue=2000,
    enqueue_many=10_000,
    enqueue_many_rounds=3,
    drain=10_000,
    rounds=3,
    drain_sync=5000,
    fanout=2000,
    latency=300,
    producers=500,
    sustained_s=60,
    fanout_large=10_000,
    scaleout=20_000,
    memory=1_000_000,
    processes=400,
    horizon_s=240,
    peer_drain=2000,
    peer_latency=30,
)
QUICK = Sizes(
    enqueue=300,
    enqueue_many=2000,
    enqueue_many_rounds=1,
    drain=2000,
    rounds=1,
    drain_sync=1000,
    fanout=2000,
    latency=60,
    producers=100,
    sustained_s=10,
    fanout_large=10_000,
    scaleout=5000,
    memory=100_000,
    processes=200,
    horizon_s=30,
    peer_drain=300,
    peer_latency=8,
)
DRAIN_CONCURRENCY = 100
FANOUT_CONCURRENCY = 200
FANOUT_LARGE_CONCURRENCY = 500
FANOUT_SLEEP = 0.2


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_async[T](coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a fresh loop (uvloop when installed, as ``aiotaskq run`` does) and
    close that loop's enqueue pool afterwards."""
    from aiotaskq.db.connect import close_enqueue_pools

    async def wrapper() -> T:
        try:
            return await coro
        finally:
            await close_enqueue_pools()

    try:
        import uvloop
    except ImportError:
        return asyncio.run(wrapper())
    return uvloop.run(wrapper())


def truncate() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {TABLE}")


async def atruncate() -> None:
    import psycopg

    conn = await psycopg.AsyncConnection.connect(
        **dbenv.libpq_params(dbenv.database_name()), autocommit=True
    )
    async with conn:
        await conn.execute(f"TRUNCATE {TABLE}")


def analyze() -> None:
    # A freshly filled table has no statistics until autovacuum gets to it (up to a minute);
    # both queues' tables are analyzed after the fill so both planners start informed.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {TABLE}")


# 1. Single enqueue ------------------------------------------------------------------------


def bench_enqueue(n: int, rounds: int) -> dict[str, Any]:
    """``delay()`` in a loop (sync, autocommit, Django's connection: one commit per call) and
    ``await adelay()`` in a loop from one coroutine (the loop's psycopg pool), ``rounds``
    times each, alternating; the medians are kept (one commit each makes these the figures
    that move most with the disk's moment)."""
    from benchmarks import bench_tasks

    def delay_loop() -> float:
        started = time.perf_counter()
        for i in range(n):
            bench_tasks.noop.delay(i)
        return time.perf_counter() - started

    async def adelay_loop() -> float:
        await bench_tasks.noop.adelay(-1)  # opens the pool outside the timing
        started = time.perf_counter()
        for i in range(n):
            await bench_tasks.noop.adelay(i)
        return time.perf_counter() - started

    bench_tasks.noop.delay(-1)  # the connection is opened outside the timing
    sync_times: list[float] = []
    async_times: list[float] = []
    for _ in range(rounds):
        truncate()
        sync_times.append(delay_loop())
        truncate()
        async_times.append(run_async(adelay_loop()))
    truncate()
    sync_s, async_s = statistics.median(sync_times), statistics.median(async_times)
    return {
        "tasks": n,
        "rounds": rounds,
        "sync": {"elapsed_s": sync_s, "tasks_per_s": n / sync_s},
        "async": {"elapsed_s": async_s, "tasks_per_s": n / async_s},
    }


# 2. Many at once --------------------------------------------------------------------------


def bench_enqueue_many(n: int, rounds: int) -> dict[str, Any]:
    """``enqueue_many`` (sync) and ``aenqueue_many`` of ``n`` signatures in one call; the
    signatures are built before the clock starts. The median of ``rounds`` calls is kept.
    ``build_rows_s`` is the part of a call spent validating and encoding (no I/O)."""
    import aiotaskq
    from benchmarks import bench_tasks

    sigs = [bench_tasks.noop.s(i) for i in range(n)]

    build: list[float] = []
    for _ in range(rounds):
        started = time.perf_counter()
        [sig.build_row() for sig in sigs]
        build.append(time.perf_counter() - started)

    sync_times: list[float] = []
    for _ in range(rounds):
        truncate()
        started = time.perf_counter()
        aiotaskq.enqueue_many(sigs)
        sync_times.append(time.perf_counter() - started)

    async def many() -> list[float]:
        await bench_tasks.noop.adelay(-1)  # opens the pool outside the timing
        times = []
        for _ in range(rounds):
            await atruncate()
            started = time.perf_counter()
            await aiotaskq.aenqueue_many(sigs)
            times.append(time.perf_counter() - started)
        return times

    async_times = run_async(many())
    truncate()
    sync_s, async_s = statistics.median(sync_times), statistics.median(async_times)
    return {
        "tasks": n,
        "rounds": rounds,
        "build_rows_s": statistics.median(build),
        "sync": {"elapsed_s": sync_s, "tasks_per_s": n / sync_s},
        "async": {"elapsed_s": async_s, "tasks_per_s": n / async_s},
    }


# 3., 4. Workers draining a filled queue ---------------------------------------------------


def fill(make: Callable[[int], Any], n: int) -> None:
    import aiotaskq

    truncate()
    for chunk in range(0, n, 5000):
        aiotaskq.enqueue_many([make(i) for i in range(chunk, min(n, chunk + 5000))])
    analyze()


def start_worker(name: str, log_dir: Path, env: dict[str, str], *args: str) -> Any:
    """``python -m aiotaskq.cli run --settings benchmarks.settings ARGS`` with its output in
    ``log_dir/aiotaskq-NAME.log``."""
    argv = [sys.executable, "-m", "aiotaskq.cli", "run", "--settings", "benchmarks.settings"]
    return harness.WorkerProcess(
        [*argv, "--log-level", "INFO", *args], env=env, log_path=log_dir / f"aiotaskq-{name}.log"
    )


def burst(name: str, n: int, concurrency: int, log_dir: Path) -> dict[str, float]:
    """Start one ``aiotaskq run --burst`` worker on the filled table and time it.

    Three moments are taken, all by the same clock (``time.time()`` on this machine):
    ``ready``, when the worker's ``worker.started`` line arrives (it is logged right before
    the first claim, after imports, Django's setup and the pool's connections, which are a
    fixed cost of starting a process, not of draining); ``first``, when the first task
    started, as the task itself reports it; and ``empty``, when this process first sees the
    table empty, that is when the last outcome has been written, not merely when the last
    task returned. The end is known to within ``harness.EMPTY_POLL``.
    """
    with harness.Probe() as probe, harness.connect(dbenv.database_name()) as conn:
        env = harness.subprocess_env(
            AIOTASKQ_BENCH_PROBE=probe.address, AIOTASKQ_BENCH_EXPECT=str(n)
        )
        proc = start_worker(name, log_dir, env, "--burst", "--concurrency", str(concurrency))
        try:
            t_ready = proc.wait_line("worker.started", timeout=60)
            t_empty = harness.wait_table_empty(
                conn, TABLE, probe=probe, timeout=60 + n / 100, proc=proc
            )
            rc = proc.wait(60)
            t_exit = time.time()
        finally:
            proc.stop()
        t_first = probe.first()
        t_done = probe.done(0)
    if rc != 0:
        raise RuntimeError(f"the worker exited with {rc}:\n{proc.tail()}")
    if t_first is None:
        raise RuntimeError("no task reported its start")
    return {
        "tasks": n,
        "concurrency": concurrency,
        "first_claim_s": t_first - t_ready,
        "ready_to_empty_s": t_empty - t_ready,
        "first_to_empty_s": t_empty - t_first,
        "last_done_to_empty_s": t_empty - (t_done or t_empty),
        "empty_to_exit_s": t_exit - t_empty,
    }


def median_round(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The run whose ``key`` is the median (the lower middle one for an even count), with
    every run's ``key`` beside it."""
    ordered = sorted(runs, key=lambda r: r[key])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["rounds"] = [r[key] for r in runs]
    return chosen


def bench_drain(n: int, sync: bool, rounds: int, log_dir: Path) -> dict[str, Any]:
    """``n`` no-op tasks drained by one worker at ``--concurrency 100``.

    The rate is taken from the first task's start to the table found empty. The first
    task's start is the one moment both aiotaskq and the peer report the same way (the peer
    prints no "ready" line); the empty table, rather than the last task's return, includes
    the writes of the outcomes, which are part of the work.
    """
    from benchmarks import bench_tasks

    task = bench_tasks.noop_sync if sync else bench_tasks.noop
    runs = []
    for k in range(rounds):
        fill(task.s, n)
        name = f"drain-sync-{k + 1}" if sync else f"drain-{k + 1}"
        timing = burst(name, n, DRAIN_CONCURRENCY, log_dir)
        timing["tasks_per_s"] = n / timing["first_to_empty_s"]
        runs.append(timing)
    return median_round(runs, "tasks_per_s")


def bench_fanout(
    n: int, rounds: int, log_dir: Path, concurrency: int = FANOUT_CONCURRENCY
) -> dict[str, Any]:
    """``n`` tasks that each ``await asyncio.sleep(0.2)`` at ``--concurrency 200`` (or
    ``concurrency``): ideally n / concurrency * 0.2 s. Timed from the worker's start of
    claiming (its ``worker.started`` line) to the table found empty."""
    from benchmarks import bench_tasks

    runs = []
    for k in range(rounds):
        fill(lambda i: bench_tasks.sleep_for.s(FANOUT_SLEEP), n)
        name = "fanout" if concurrency == FANOUT_CONCURRENCY else f"fanout-c{concurrency}"
        timing = burst(f"{name}-{k + 1}", n, concurrency, log_dir)
        timing["ideal_s"] = n / concurrency * FANOUT_SLEEP
        timing["wall_s"] = timing["ready_to_empty_s"]
        runs.append(timing)
    return median_round(runs, "wall_s")


# 5. Latency -------------------------------------------------------------------------------


def bench_latency(samples: int, log_dir: Path) -> dict[str, Any]:
    """Enqueue-to-start latency on an idle, running worker (LISTEN/NOTIFY on, defaults
    otherwise); the producer is ``ping.delay(i)`` in autocommit (see harness.latency_samples).
    """
    from benchmarks import bench_tasks

    truncate()
    with harness.Probe() as probe:
        env = harness.subprocess_env(AIOTASKQ_BENCH_PROBE=probe.address)
        proc = start_worker("latency", log_dir, env)
        try:
            proc.wait_line("worker.started", timeout=60)
            result = harness.latency_samples(
                bench_tasks.ping.delay,
                probe,
                samples=samples,
                warmup=20,
                pause=(0.002, 0.008),
                timeout=5.0,
            )
        finally:
            rc = proc.stop()
    result["worker_exit"] = rc
    return result


# The peer ---------------------------------------------------------------------------------


def peer_python() -> tuple[Path | None, str]:
    """The peer's virtualenv interpreter, created and installed on first use (the same
    Django as this run's, so only the queue differs), or ``(None, reason)``."""
    import django

    from benchmarks import compare

    requirements = (
        "django-taskq==1.0.23",
        f"Django=={django.get_version()}",
        "psycopg[binary]>=3.2",
    )
    return compare.ensure_venv(PEER_VENV, requirements)


def bench_peer(sizes: Sizes, log_dir: Path) -> dict[str, Any]:
    python, reason = peer_python()
    if python is None:
        return {"skipped": reason}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "peer.json"
        proc = subprocess.run(
            [
                str(python),
                "-m",
                "benchmarks.peers.taskq_bench",
                "--drain",
                str(sizes.peer_drain),
                "--latency",
                str(sizes.peer_latency),
                "--json",
                str(out),
                "--log-dir",
                str(log_dir),
            ],
            cwd=ROOT,
            env=harness.subprocess_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines()
            return {
                "skipped": f"the peer's run failed: {lines[-1] if lines else proc.returncode}",
                "stderr": proc.stderr[-4000:],
            }
        return dict(json.loads(out.read_text()))


# The table --------------------------------------------------------------------------------


@dataclass
class Row:
    label: str
    unit: str
    higher_is_better: bool
    aiotaskq: float | None
    peer: float | None = None
    target: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """How many times better aiotaskq is than the peer."""
        if not self.aiotaskq or not self.peer:
            return None
        return self.aiotaskq / self.peer if self.higher_is_better else self.peer / self.aiotaskq

    @property
    def meets_target(self) -> bool | None:
        if self.target is None or self.aiotaskq is None:
            return None
        if self.higher_is_better:
            return self.aiotaskq >= self.target
        return self.aiotaskq <= self.target


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value:,.2f} ms" if value < 100 else f"{value:,.0f} ms"
    if unit == "s":
        return f"{value:,.2f} s"
    return f"{value:,.0f} {unit}"


def build_rows(results: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    peer = results.get("peer", {})
    peer_drain = peer.get("drain", {}).get("tasks_per_s")
    peer_lat = peer.get("latency", {}).get("latency_s", {})
    if r := results.get("enqueue"):
        n = f"x{r['tasks']:,}"
        rows.append(Row(f"enqueue: delay() {n} (sync)", "tasks/s", True, r["sync"]["tasks_per_s"]))
        label = f"enqueue: await adelay() {n}"
        rows.append(Row(label, "tasks/s", True, r["async"]["tasks_per_s"], target=3000))
    if r := results.get("enqueue_many"):
        n = f"{r['tasks']:,}"
        label = f"enqueue_many({n} signatures)"
        rows.append(Row(label, "tasks/s", True, r["sync"]["tasks_per_s"], target=150_000))
        label = f"await aenqueue_many({n} signatures)"
        rows.append(Row(label, "tasks/s", True, r["async"]["tasks_per_s"], target=150_000))
    if r := results.get("drain"):
        label = f"drain: {r['tasks']:,} async no-op, c={r['concurrency']}"
        note = "peer: plain functions, one at a time"
        rows.append(Row(label, "tasks/s", True, r["tasks_per_s"], peer_drain, 3000, note))
    if r := results.get("drain_sync"):
        label = f"drain: {r['tasks']:,} sync no-op, c={r['concurrency']}"
        rows.append(Row(label, "tasks/s", True, r["tasks_per_s"], peer_drain))
    for key, fanout_target in (("fanout", 2.1), ("fanout_large", 4.3)):
        if r := results.get(key):
            label = (
                f"fan-out: {r['tasks']:,} x sleep({FANOUT_SLEEP}), c={r['concurrency']} "
                f"(ideal {r['ideal_s']:.1f} s)"
            )
            rows.append(Row(label, "s", False, r["wall_s"], target=fanout_target))
    if r := results.get("latency"):
        n_peer = peer.get("latency", {}).get("samples")
        for p, target in (("p50", 5.0), ("p95", None), ("p99", 25.0)):
            label = f"latency {p}, enqueue -> start ({r['samples']} samples)"
            note = f"peer: {n_peer} samples" if n_peer and p == "p50" else ""
            aiotaskq_ms, peer_ms = _ms(r["latency_s"][p]), _ms(peer_lat.get(p))
            rows.append(Row(label, "ms", False, aiotaskq_ms, peer_ms, target, note))
    rows += [Row(**row) for row in scenarios_load.rows(results)]
    rows += [Row(**row) for row in scenarios_procs.rows(results)]
    rows += [Row(**row) for row in scenarios_horizon.rows(results)]
    rows += [Row(**row) for row in scenarios_lanes.rows(results)]
    rows += [Row(**row) for row in scenarios_long.rows(results)]
    rows += [Row(**row) for row in scenarios_unique.rows(results)]
    rows += [Row(**row) for row in scenarios_limits.rows(results)]
    return rows


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def render(rows: list[Row], peer: dict[str, Any]) -> str:
    peer_name = "django-taskq"
    if peer.get("version"):
        peer_name += f" {peer['version']}"
    header = ["scenario", "aiotaskq", peer_name, "ratio", "target", ""]
    table = [header]
    for row in rows:
        if row.target is None:
            target = "-"
        else:
            target = ("≥ " if row.higher_is_better else "≤ ") + _fmt(row.target, row.unit)
        verdict = {True: "ok", False: "MISSED", None: ""}[row.meets_target]
        if "skipped" in peer and row.peer is None and row.label.startswith(("drain", "latency")):
            peer_cell = "skipped"
        else:
            peer_cell = _fmt(row.peer, row.unit)
        table.append(
            [
                row.label,
                _fmt(row.aiotaskq, row.unit),
                peer_cell,
                "-" if row.ratio is None else f"{row.ratio:,.1f}x",
                target,
                verdict,
            ]
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = []
    for n, cells in enumerate(table):
        lines.append(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = ["ratio: how many times better aiotaskq is (higher throughput, or lower time)."]
    notes += [f"{row.label.split(':')[0]}: {row.note}" for row in rows if row.note]
    if "skipped" in peer:
        notes.append(f"django-taskq skipped: {peer['skipped']}")
    return "\n".join([*lines, "", *notes])


def _cpu_busy(seconds: float = 1.0) -> float | None:
    """The share of all cores busy over ``seconds`` (from /proc/stat), or ``None``."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    total = total1 - total0
    return round(1 - (idle1 - idle0) / total, 3) if total else None


# Main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (about a minute)")
    parser.add_argument(
        "--json",
        type=Path,
        default=RESULTS / "latest.json",
        help="where to write the results (default benchmarks/results/latest.json)",
    )
    parser.add_argument(
        "--only",
        default=",".join(s for s in SCENARIOS if s not in ON_REQUEST),
        help=f"comma-separated scenarios of: {', '.join(SCENARIOS)} "
        f"(default: all but {', '.join(ON_REQUEST)})",
    )
    parser.add_argument(
        "--horizon-rates",
        default=",".join(str(r) for r in scenarios_horizon.RATES),
        help="the horizon scenario's paced rates, tasks/s (default %(default)s)",
    )
    parser.add_argument(
        "--horizon-seconds",
        type=float,
        help="seconds of each of the horizon scenario's loads (default 240, quick: 30)",
    )
    parser.add_argument("--no-peer", action="store_true", help="do not run django-taskq")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="then run django-taskq, procrastinate, Celery and pgqueuer side by side "
        "(benchmarks/compare.py): benchmarks/results/compare.md and compare.png",
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help="copy to docs/ the comparison's table and chart (with --compare), the horizon "
        "chart (docs/horizon.png, when the horizon scenario ran) and the lanes chart "
        "(docs/lanes.png, when lanes_story ran)",
    )
    options = parser.parse_args(argv)
    only = [s.strip() for s in options.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(unknown)}")
    sizes = QUICK if options.quick else FULL
    if options.horizon_seconds:
        sizes = dataclasses.replace(sizes, horizon_s=options.horizon_seconds)
    horizon_rates = [int(r) for r in options.horizon_rates.split(",") if r.strip()]
    log_dir = RESULTS / "logs"
    shutil.rmtree(log_dir, ignore_errors=True)

    busy_before = _cpu_busy()
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.settings"
    database = dbenv.database_name()
    log(f"recreating database {database}")
    harness.recreate_database(database)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    # Creating the database leaves a checkpoint's writes behind; the first scenarios (one
    # commit per task) must not be measured while they are flushed.
    with harness.connect(database) as conn:
        try:
            conn.execute("CHECKPOINT")
        except Exception as exc:  # not a superuser: measured as it is
            log(f"CHECKPOINT not run: {exc}")

    import aiotaskq

    with harness.connect(database) as conn:
        pg_version = harness.server_version(conn)
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    meta = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": options.quick,
        "sizes": asdict(sizes),
        "aiotaskq": aiotaskq.__version__,
        "django": django.get_version(),
        "python": platform.python_version(),
        "postgresql": pg_version,
        "event_loop": loop,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "cpu_busy_before": busy_before,
    }
    results: dict[str, Any] = {}
    started = time.monotonic()
    kit = scenarios_load.Kit(
        log_dir=log_dir, start_worker=start_worker, truncate=truncate, run_async=run_async
    )
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("enqueue", lambda: bench_enqueue(sizes.enqueue, sizes.rounds)),
        ("enqueue_many", lambda: bench_enqueue_many(sizes.enqueue_many, sizes.enqueue_many_rounds)),
        ("producers", lambda: scenarios_load.bench_producers(kit, sizes.producers)),
        ("drain", lambda: bench_drain(sizes.drain, False, sizes.rounds, log_dir)),
        ("drain_sync", lambda: bench_drain(sizes.drain_sync, True, sizes.rounds, log_dir)),
        ("fanout", lambda: bench_fanout(sizes.fanout, sizes.rounds, log_dir)),
        (
            "fanout_large",
            lambda: bench_fanout(
                sizes.fanout_large, sizes.rounds, log_dir, FANOUT_LARGE_CONCURRENCY
            ),
        ),
        ("latency", lambda: bench_latency(sizes.latency, log_dir)),
        ("sustained", lambda: scenarios_load.bench_sustained(kit, sizes.sustained_s)),
        ("scaleout", lambda: scenarios_load.bench_scaleout(kit, sizes.scaleout, sizes.rounds)),
        ("memory", lambda: scenarios_load.bench_memory(kit, sizes.memory)),
        (
            "processes",
            lambda: scenarios_procs.bench_processes(kit, sizes.processes, sizes.rounds),
        ),
        (
            "horizon",
            lambda: scenarios_horizon.bench_horizon(kit, sizes.horizon_s, horizon_rates),
        ),
        ("lanes_story", lambda: scenarios_lanes.bench_lanes_story(kit, max(3, sizes.rounds))),
        (
            "lanes_drain",
            lambda: scenarios_lanes.bench_lanes_drain(kit, sizes.drain, max(5, sizes.rounds)),
        ),
        (
            "waiting",
            lambda: scenarios_long.bench_waiting(kit, sizes.latency, sizes.drain, sizes.rounds),
        ),
        ("progress", lambda: scenarios_long.bench_progress(100_000)),
        (
            "limits_fanout",
            lambda: scenarios_limits.bench_limits_fanout(kit, 10_000, max(3, sizes.rounds)),
        ),
        (
            "unique",
            lambda: scenarios_unique.bench_unique(
                kit, sizes.enqueue_many, sizes.enqueue, max(3, sizes.rounds)
            ),
        ),
    ]
    for name, step in steps:
        if name in only:
            log(f"aiotaskq: {name}")
            results[name] = step()
    from django.db import connections

    connections.close_all()
    if options.no_peer:
        results["peer"] = {"skipped": "--no-peer"}
    else:
        log("django-taskq: drain and latency")
        results["peer"] = bench_peer(sizes, log_dir)
    meta["seconds"] = round(time.monotonic() - started, 1)

    rows = build_rows(results)
    print(render(rows, results["peer"]))
    busy = meta["cpu_busy_before"]
    if busy is not None and busy > 0.2:
        print(
            f"note: {busy:.0%} of the CPU was busy with other work just before the run; "
            "other processes' load lowers these figures."
        )
    options.json.parent.mkdir(parents=True, exist_ok=True)
    options.json.write_text(
        json.dumps(
            {
                "meta": meta,
                "table": [
                    {**asdict(r), "ratio": r.ratio, "meets_target": r.meets_target} for r in rows
                ],
                "results": results,
            },
            indent=2,
        )
    )
    log(f"wrote {options.json} ({meta['seconds']} s)")
    if "horizon" in results:
        png, why_not = scenarios_horizon.draw(results, meta, RESULTS)
        if why_not:
            print(f"horizon chart not drawn: {why_not}")
        else:
            log(f"wrote {png}")
            if options.publish:
                shutil.copyfile(png, ROOT / "docs" / "horizon.png")
                log("published docs/horizon.png")
    if "lanes_story" in results:
        png, why_not = scenarios_lanes.draw(results, meta, RESULTS)
        if why_not:
            print(f"lanes chart not drawn: {why_not}")
        else:
            log(f"wrote {png}")
            if options.publish:
                shutil.copyfile(png, ROOT / "docs" / "lanes.png")
                log("published docs/lanes.png")
    if options.compare:
        from benchmarks import compare

        compare.run(
            results, meta, log_dir=log_dir, taskq_python=peer_python, publish=options.publish
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
