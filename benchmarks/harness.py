"""Measuring tools shared by the aiotaskq driver (``run.py``) and the peer's driver
(``peers/taskq_bench.py``): the database, the probe's receiving end, worker processes, the
"table is empty" watch and the latency loop. Standard library and psycopg only.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from benchmarks import dbenv

ROOT = Path(__file__).resolve().parent.parent

#: How often the driver looks whether the task table is empty once the tasks have all run.
EMPTY_POLL = 0.001
#: How often it looks before that (only to notice a worker that died or a drain that hangs).
SLOW_POLL = 0.5


# The database ---------------------------------------------------------------------------


def recreate_database(name: str) -> None:
    """Drop database ``name`` if it exists (disconnecting its sessions) and create it anew."""
    with psycopg.connect(**dbenv.libpq_params("postgres"), autocommit=True) as conn:
        ident = sql.Identifier(name)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))


def connect(name: str) -> psycopg.Connection[Any]:
    """An autocommit connection to database ``name``, for the driver's own looks."""
    return psycopg.connect(**dbenv.libpq_params(name), autocommit=True)


def server_version(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def wait_table_empty(
    conn: psycopg.Connection[Any],
    table: str,
    *,
    probe: Probe,
    timeout: float,
    proc: WorkerProcess | None = None,
) -> float:
    """Return the time (``time.time()``) at which ``table`` was first seen empty.

    Looking at the table costs the server work, and a drain on two cores feels it (a look
    every 10 ms slowed the peer's drain by about a third), so the driver first waits, without
    looking, for the probe's "done" (the tasks have all run), then looks every
    :data:`EMPTY_POLL` until the last outcome is written. The time is taken just before the
    look that saw the table empty. Raises ``RuntimeError`` on timeout, or if ``proc`` exits
    before the table is empty (failed tasks, for instance).
    """
    query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(table))
    deadline = time.monotonic() + timeout

    def exited() -> bool:
        return proc is not None and proc.poll() is not None

    def give_up(reason: str) -> RuntimeError:
        tail = f":\n{proc.tail()}" if proc is not None else ""
        return RuntimeError(f"{reason}{tail}")

    while probe.done(SLOW_POLL) is None:
        if exited():
            raise give_up(f"the worker exited ({proc and proc.poll()}) before its tasks all ran")
        if time.monotonic() > deadline:
            raise give_up(f"the tasks had not all run after {timeout:.0f} s")
    while True:
        # Whether the worker had exited before the look: a burst worker exits right after
        # the table empties, which is no failure.
        gone = exited()
        t = time.time()
        row = conn.execute(query).fetchone()
        if row is not None and not row[0]:
            return t
        if gone:
            raise give_up(f"the worker exited ({proc and proc.poll()}) with rows left in {table}")
        if time.monotonic() > deadline:
            raise give_up(f"{table} not empty after {timeout:.0f} s")
        time.sleep(EMPTY_POLL)


# The probe --------------------------------------------------------------------------------


class Probe:
    """The receiving end of :mod:`benchmarks.probe`: a UDP socket on loopback and a thread
    that keeps every report."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._sock.settimeout(0.1)
        self.address = f"127.0.0.1:{self._sock.getsockname()[1]}"
        self._cond = threading.Condition()
        self._firsts: list[float] = []
        self._dones: list[float] = []
        self._starts: dict[int, float] = {}
        self._counts: dict[int, int] = {}  # the latest running count of each worker process
        self._pickups: list[tuple[float, float]] = []  # (enqueued, started)
        self._closed = False
        self._thread = threading.Thread(target=self._receive, name="probe", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed:
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            msg = json.loads(data)
            with self._cond:
                if msg["kind"] == "first":
                    self._firsts.append(float(msg["t"]))
                elif msg["kind"] == "done":
                    self._dones.append(float(msg["t"]))
                elif msg["kind"] == "count":
                    pid = int(msg["pid"])
                    self._counts[pid] = max(self._counts.get(pid, 0), int(msg["n"]))
                elif msg["kind"] == "pickup":
                    self._pickups.append((float(msg["enq"]), float(msg["t"])))
                else:
                    self._starts[int(msg["sample"])] = float(msg["t"])
                self._cond.notify_all()

    def first(self, timeout: float = 2.0) -> float | None:
        """The earliest first-task start reported, or ``None``."""
        with self._cond:
            self._cond.wait_for(lambda: self._firsts, timeout)
            return min(self._firsts) if self._firsts else None

    def done(self, timeout: float) -> float | None:
        """When a worker reported it had finished the expected number of tasks, or ``None``."""
        with self._cond:
            self._cond.wait_for(lambda: self._dones, timeout)
            return max(self._dones) if self._dones else None

    def start_of(self, sample: int, timeout: float) -> float | None:
        """When latency sample ``sample`` started, or ``None`` if not reported in time."""
        with self._cond:
            self._cond.wait_for(lambda: sample in self._starts, timeout)
            return self._starts.get(sample)

    def progress(self, at_least: int = 0, timeout: float = 0.0) -> int:
        """The tasks finished so far by every worker process together, as last counted
        (``AIOTASKQ_BENCH_EVERY``); waits up to ``timeout`` for it to reach ``at_least``."""
        with self._cond:
            self._cond.wait_for(lambda: sum(self._counts.values()) >= at_least, timeout)
            return sum(self._counts.values())

    def pickups(self) -> list[tuple[float, float]]:
        """``(enqueued, started)`` of every task that reported its pickup so far."""
        with self._cond:
            return list(self._pickups)

    def close(self) -> None:
        self._closed = True
        self._thread.join(1)
        self._sock.close()

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Worker processes -------------------------------------------------------------------------


class WorkerProcess:
    """A worker in a subprocess. Its output goes to ``log_path`` through a thread that also
    notes when each line arrived, so a line the worker prints at a known moment (aiotaskq's
    ``worker.started``, logged just before its first claim) marks that moment."""

    def __init__(self, argv: Sequence[str], *, env: dict[str, str], log_path: Path) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed by the reader
        self._cond = threading.Condition()
        self._lines: list[tuple[float, str]] = []
        self.proc = subprocess.Popen(
            list(argv),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._reader = threading.Thread(target=self._read, name="worker-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            for raw in self.proc.stdout:
                t = time.time()
                line = raw.decode(errors="replace")
                self._log.write(line)
                with self._cond:
                    self._lines.append((t, line))
                    self._cond.notify_all()
        finally:
            self._log.close()
            with self._cond:
                self._cond.notify_all()

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait_line(self, needle: str, timeout: float) -> float:
        """When the first line containing ``needle`` arrived. Raises ``RuntimeError`` if the
        process exits first or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for t, line in self._lines[seen:]:
                    if needle in line:
                        return t
                seen = len(self._lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise RuntimeError(f"no {needle!r} from the worker:\n{self.tail()}")
                self._cond.wait(min(left, 0.1))

    def wait(self, timeout: float) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(5)
        return rc

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL if it has not exited after ``timeout`` seconds."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.wait(10)

    def tail(self, lines: int = 20) -> str:
        with self._cond:
            return "".join(line for _, line in self._lines[-lines:])


def subprocess_env(**extra: str) -> dict[str, str]:
    """The driver's environment with the repository on ``PYTHONPATH`` and ``extra`` set."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), env.get("PYTHONPATH", "")] if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


# Latency ----------------------------------------------------------------------------------


def latency_samples(
    enqueue: Callable[[int], None],
    probe: Probe,
    *,
    samples: int,
    warmup: int,
    pause: tuple[float, float],
    timeout: float,
) -> dict[str, Any]:
    """Enqueue-to-start latency, one task at a time on an otherwise idle worker.

    For each sample: ``enqueue(i)`` writes and commits one task; the time right after it
    returns is the commit time as the producer sees it. The task reports its own start
    through the probe; the latency is start minus commit. The next sample is enqueued only
    after this one started, and after a random pause drawn from ``pause`` (seconds) so that
    samples fall at every phase of a polling worker's cycle. The first ``warmup`` samples
    (connections opening, statements being prepared) are not kept.
    """
    rng = random.Random(1)
    latencies: list[float] = []
    from_call: list[float] = []
    enqueue_calls: list[float] = []
    lost = 0
    for i in range(warmup + samples):
        before = time.time()
        enqueue(i)
        committed = time.time()
        started = probe.start_of(i, timeout)
        if i >= warmup:
            enqueue_calls.append(committed - before)
            if started is None:
                lost += 1
            else:
                latencies.append(started - committed)
                from_call.append(started - before)
        time.sleep(rng.uniform(*pause))
    return {
        "samples": len(latencies),
        "lost": lost,
        "latency_s": summarize(latencies),
        # From before the enqueue call instead: the commit's own wait (WAL flush) included.
        "from_call_start_s": summarize(from_call),
        "enqueue_call_s": summarize(enqueue_calls),
        "raw_latency_s": [round(x, 6) for x in latencies],
    }


def summarize(values: Sequence[float]) -> dict[str, float | None]:
    """min, p50, p95, p99, max and mean (percentiles interpolated between samples)."""
    if not values:
        return {k: None for k in ("min", "p50", "p95", "p99", "max", "mean")}
    ordered = sorted(values)
    if len(ordered) == 1:
        cuts = [ordered[0]] * 99
    else:
        cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "min": ordered[0],
        "p50": cuts[49],
        "p95": cuts[94],
        "p99": cuts[98],
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


def table_row(
    label: str, unit: str, higher: bool, value: Any, target: Any = None
) -> dict[str, Any]:
    """One row of run.py's table, as the keyword arguments of its ``Row`` (the scenario
    modules build theirs with it)."""
    return {
        "label": label,
        "unit": unit,
        "higher_is_better": higher,
        "aiotaskq": value,
        "target": target,
    }
