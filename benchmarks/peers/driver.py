"""The common driver of the compared queues (``benchmarks/compare.py``).

Each peer's module (``procrastinate_bench``, ``pgqueuer_bench``, ``celery_bench``,
``taskq_compare``) describes its queue as a :class:`Peer`: how to fill its queue, start one
worker process, enqueue one task and many. This module measures every peer the same way,
with the same tools as aiotaskq's scenarios (:mod:`benchmarks.harness`, and the tasks report
through :mod:`benchmarks.probe`), and is run with the peer's own virtualenv, one scenario
(one round) per call::

    benchmarks/.venv-pgqueuer/bin/python -m benchmarks.peers.pgqueuer_bench drain \\
        --tasks 10000 --json out.json --log-dir benchmarks/results/logs

Scenarios: ``setup`` (recreate the peer's database or queue, install its schema; prints its
version and configuration), ``drain``, ``fanout``, ``latency``, ``enqueue`` and ``bulk``.
Standard library, psycopg and the peer's own packages only.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import harness

#: The latency task a worker is sent first: once it has started, the worker is up and idle.
READY_SAMPLE = 1_000_000
FANOUT_SLEEP = 0.2


class Skip(Exception):
    """A scenario the peer cannot run in the compared form; the message says why."""


class Peer:
    """What the driver needs to know about one queue. Subclasses fill in the blanks."""

    name = ""
    #: The PostgreSQL table that is empty once every task's outcome is written, or ``None``
    #: when the peer keeps nothing in PostgreSQL (the drain then ends at the last task's end).
    table: str | None = None
    database: str | None = None
    #: The latency scenario's pauses between samples (seconds) and its unkept first samples.
    latency_pause: tuple[float, float] = (0.002, 0.008)
    latency_warmup = 20

    def setup(self) -> dict[str, Any]:
        """Recreate the peer's storage; return its version and how it is run."""
        raise NotImplementedError

    def fill(self, n: int, kind: str) -> None:
        """Enqueue ``n`` tasks of ``kind`` (``noop`` or ``sleep``) with no worker running,
        by the peer's bulk API where it has one."""
        raise NotImplementedError

    def clear(self) -> None:
        """Remove whatever is left in the queue."""
        raise NotImplementedError

    def worker(self, scenario: str, probe: harness.Probe, expect: int, log: Path) -> Any:
        """Start one worker process for ``scenario`` (a :class:`harness.WorkerProcess`)."""
        raise NotImplementedError

    def ping(self) -> Callable[[int], None]:
        """A plain function that enqueues latency task ``i`` and returns once it is committed."""
        raise NotImplementedError

    def enqueue_one(self, n: int) -> float:
        """Seconds for ``n`` single enqueues in a loop from one producer."""
        raise NotImplementedError

    def enqueue_bulk(self, n: int) -> float:
        """Seconds for one bulk enqueue of ``n`` tasks; raises :class:`Skip` without one."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the driver's own connections."""


def timed_run(peer: Peer, scenario: str, n: int, log_dir: Path, timeout: float) -> dict[str, Any]:
    """Fill the queue with ``n`` tasks, start one worker and time it: from the first task's
    start (reported by the task) to the peer's table found empty (so the outcomes' writes
    count, as for aiotaskq), or to the last task's end when the peer has no table."""
    peer.clear()
    peer.fill(n, "sleep" if scenario == "fanout" else "noop")
    log = log_dir / f"{peer.name}-{scenario}.log"
    with harness.Probe() as probe:
        proc = peer.worker(scenario, probe, n, log)
        try:
            if peer.table is not None:
                assert peer.database is not None
                with harness.connect(peer.database) as conn:
                    t_end = harness.wait_table_empty(
                        conn, peer.table, probe=probe, timeout=timeout, proc=proc
                    )
            else:
                t_end = _wait_done(probe, proc, timeout)
            t_first = probe.first()
        finally:
            rc = proc.stop()
    if t_first is None:
        raise RuntimeError("no task reported its start")
    elapsed = t_end - t_first
    return {
        "tasks": n,
        "first_to_empty_s": elapsed,
        "tasks_per_s": n / elapsed,
        "worker_exit": rc,
    }


def _wait_done(probe: harness.Probe, proc: Any, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while (t := probe.done(harness.SLOW_POLL)) is None:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited before its tasks all ran:\n{proc.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the tasks had not all run after {timeout:.0f} s:\n{proc.tail()}")
    return t


def latency(peer: Peer, samples: int, log_dir: Path) -> dict[str, Any]:
    """Enqueue-to-start latency on an idle worker, as :func:`harness.latency_samples` takes
    it for aiotaskq: the same 20 warm-up samples and 2-8 ms pauses unless the peer says
    otherwise (a polling worker's pauses are spread over its polling interval)."""
    peer.clear()
    enqueue = peer.ping()
    with harness.Probe() as probe:
        proc = peer.worker("latency", probe, 0, log_dir / f"{peer.name}-latency.log")
        try:
            # The worker is ready once it has run a first task (no peer prints the same line).
            enqueue(READY_SAMPLE)
            if probe.start_of(READY_SAMPLE, 60) is None:
                raise RuntimeError(f"the worker ran no task within 60 s:\n{proc.tail()}")
            result = harness.latency_samples(
                enqueue,
                probe,
                samples=samples,
                warmup=peer.latency_warmup,
                pause=peer.latency_pause,
                timeout=5.0,
            )
        finally:
            proc.stop()
    result.pop("raw_latency_s", None)
    return result


def main(peer: Peer) -> int:
    parser = argparse.ArgumentParser(description=f"{peer.name}: one compared scenario")
    parser.add_argument(
        "scenario", choices=["setup", "drain", "fanout", "latency", "enqueue", "bulk"]
    )
    parser.add_argument("--tasks", type=int, default=1000, help="tasks, or latency samples")
    parser.add_argument("--json", type=Path, required=True, help="where to write the figures")
    parser.add_argument("--log-dir", type=Path, default=harness.ROOT / "benchmarks/results/logs")
    options = parser.parse_args()
    n = options.tasks
    result: dict[str, Any]
    try:
        if options.scenario == "setup":
            result = peer.setup()
        elif options.scenario in ("drain", "fanout"):
            result = timed_run(peer, options.scenario, n, options.log_dir, 120 + n / 20)
        elif options.scenario == "latency":
            result = latency(peer, n, options.log_dir)
        elif options.scenario == "enqueue":
            peer.clear()
            elapsed = peer.enqueue_one(n)
            result = {"tasks": n, "elapsed_s": elapsed, "tasks_per_s": n / elapsed}
        else:
            peer.clear()
            elapsed = peer.enqueue_bulk(n)
            result = {"tasks": n, "elapsed_s": elapsed, "tasks_per_s": n / elapsed}
        peer.clear()
    except Skip as exc:
        result = {"skipped": str(exc)}
    finally:
        peer.close()
    options.json.write_text(json.dumps(result, indent=2))
    return 0
