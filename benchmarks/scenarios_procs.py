"""The ``processes`` scenario of ``benchmarks/run.py``: CPU-bound plain functions drained by
one worker process, then by ``aiotaskq run --processes 2`` (a supervisor and two children).

Each task spins :data:`SPIN_MS` ms of pure Python (by its thread's CPU clock, so the work is
the same however many threads share one GIL). One event loop runs plain functions in its
thread pool, but they take turns on the GIL: one process drains at best one core's worth.
Two processes should drain nearly twice as fast on two free cores.

The worker processes start on an empty table and are timed from the enqueue (one
``enqueue_many``, its NOTIFY wakes every child) to the table found empty, several rounds on
the same processes; the median round is kept. The probe's running counts (every
:data:`~benchmarks.scenarios_load.COUNT_EVERY` tasks per process) tell when to start looking.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks import dbenv, harness
from benchmarks.scenarios_load import COUNT_EVERY, Kit, wait_drained

#: CPU milliseconds of each task, tasks per round, and the worker's options.
SPIN_MS = 20.0
THREADS = 4
CONCURRENCY = 8


def _drain(kit: Kit, n: int, processes: int | None, rounds: int) -> dict[str, Any]:
    from benchmarks import bench_tasks

    kit.truncate()
    name = f"processes-{processes}" if processes else "processes-alone"
    args = ["--concurrency", str(CONCURRENCY), "--threads", str(THREADS)]
    if processes:
        args += ["--processes", str(processes)]
    runs: list[float] = []
    with harness.Probe() as probe, harness.connect(dbenv.database_name()) as conn:
        env = harness.subprocess_env(
            AIOTASKQ_BENCH_PROBE=probe.address, AIOTASKQ_BENCH_EVERY=str(COUNT_EVERY // 10)
        )
        proc = kit.start_worker(name, kit.log_dir, env, *args)
        try:
            for k in range(processes or 1):
                # Every child logs worker.started once claiming; wait for the last one.
                _wait_nth_line(proc, "worker.started", k + 1, timeout=120)
            for _ in range(rounds):
                done_before = probe.progress()
                t0 = time.time()
                kit.run_async(_enqueue(bench_tasks.spin_sync, n))
                t_empty = wait_drained(
                    conn,
                    probe,
                    tasks=done_before + n,
                    slack=(COUNT_EVERY // 10) * (processes or 1),
                    procs=[proc],
                    timeout=120 + n * SPIN_MS / 1000,
                )
                runs.append(t_empty - t0)
        finally:
            rc = proc.stop(30)
    ordered = sorted(runs)
    wall = ordered[(len(ordered) - 1) // 2]
    return {
        "processes": processes or 1,
        "tasks": n,
        "wall_s": wall,
        "tasks_per_s": n / wall,
        "rounds": runs,
        "exit": rc,
    }


async def _enqueue(task: Any, n: int) -> None:
    import aiotaskq

    await aiotaskq.aenqueue_many([task.s(SPIN_MS) for _ in range(n)])


def _wait_nth_line(proc: harness.WorkerProcess, needle: str, nth: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while proc.tail(10_000).count(needle) < nth:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"no {nth} x {needle!r} from the worker:\n{proc.tail()}")
        time.sleep(0.1)


def bench_processes(kit: Kit, n: int, rounds: int) -> dict[str, Any]:
    """``n`` CPU-bound plain functions drained by one process, then by ``--processes 2``."""
    one = _drain(kit, n, None, rounds)
    two = _drain(kit, n, 2, rounds)
    return {
        "tasks": n,
        "spin_ms": SPIN_MS,
        "ideal_one_s": n * SPIN_MS / 1000,
        "one": one,
        "two": two,
        "speedup": one["wall_s"] / two["wall_s"],
    }


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The table's rows of this scenario, as keyword arguments of run.py's ``Row``."""
    r = results.get("processes")
    if not r:
        return []
    head = f"processes: {r['tasks']:,} sync x {r['spin_ms']:.0f} ms CPU"
    one, two = r["one"], r["two"]
    return [
        {
            "label": f"{head}, 1 process",
            "unit": "tasks/s",
            "higher_is_better": True,
            "aiotaskq": one["tasks_per_s"],
            "target": None,
        },
        {
            "label": f"{head}, --processes 2 (x{r['speedup']:.2f})",
            "unit": "tasks/s",
            "higher_is_better": True,
            "aiotaskq": two["tasks_per_s"],
            "target": one["tasks_per_s"],
        },
    ]
