"""The peer's scenarios: django-taskq's drain and latency, measured as aiotaskq's are.

Run by ``benchmarks/run.py`` with the peer's virtualenv (``benchmarks/.venv-peers``), from
the repository root::

    benchmarks/.venv-peers/bin/python -m benchmarks.peers.taskq_bench --json out.json

How django-taskq works, which shapes what is measured here: ``manage.py taskq`` is one
process that takes one task at a time (``SELECT ... FOR UPDATE SKIP LOCKED`` of the oldest
due row, in a transaction that marks it started), runs it, deletes the row, and when nothing
is due sleeps one second before it looks again (it has no wake-up on enqueue). SIGTERM makes
it leave its loop after the current task or sleep.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import dbenv, harness

SETTINGS = "benchmarks.peers.taskq_settings"
TABLE = "taskq_task"


def _worker(
    log_dir: Path, name: str, probe: harness.Probe, expect: int = 0
) -> harness.WorkerProcess:
    env = harness.subprocess_env(
        DJANGO_SETTINGS_MODULE=SETTINGS,
        AIOTASKQ_BENCH_PROBE=probe.address,
        AIOTASKQ_BENCH_EXPECT=str(expect),
    )
    return harness.WorkerProcess(
        [sys.executable, "-m", "django", "taskq", "--settings", SETTINGS, "-l", "WARNING"],
        env=env,
        log_path=log_dir / f"taskq-{name}.log",
    )


def fill(n: int) -> None:
    """``n`` no-op tasks in an emptied table: django-taskq has no bulk enqueue, so its rows
    are written with the ORM's ``bulk_create``, as ``delay()`` would write them one by one."""
    from django.utils import timezone
    from django_taskq.models import Task

    from benchmarks.peers import taskq_tasks

    Task.objects.all().delete()
    now = timezone.now()
    Task.objects.bulk_create(
        [
            Task(
                queue=Task.DEFAULTQ,
                func=taskq_tasks.noop.name,
                args=(i,),
                kwargs={},
                execute_at=now,
            )
            for i in range(n)
        ],
        batch_size=1000,
    )


def drain(n: int, log_dir: Path) -> dict[str, Any]:
    """``n`` no-op tasks, enqueued before the worker starts; from the first task's start
    (reported by the task) to the table found empty (every row deleted)."""
    fill(n)
    with harness.connect(dbenv.peer_database_name()) as conn, harness.Probe() as probe:
        conn.execute(f"ANALYZE {TABLE}")
        proc = _worker(log_dir, "drain", probe, expect=n)
        try:
            t_empty = harness.wait_table_empty(
                conn, TABLE, probe=probe, timeout=60 + n / 20, proc=proc
            )
            t_first = probe.first()
        finally:
            proc.stop()
    if t_first is None:
        raise RuntimeError("no task reported its start")
    elapsed = t_empty - t_first
    return {"tasks": n, "elapsed_s": elapsed, "tasks_per_s": n / elapsed}


def latency(samples: int, warmup: int, log_dir: Path) -> dict[str, Any]:
    """Enqueue-to-start latency on an idle, running worker (see harness.latency_samples).
    The pauses between samples are spread over the worker's one-second sleep."""
    from benchmarks.peers import taskq_tasks

    with harness.Probe() as probe:
        proc = _worker(log_dir, "latency", probe)
        try:
            # The worker has no "ready" line; its first empty look prints "No new tasks".
            proc.wait_line("No new tasks", timeout=60)
            result = harness.latency_samples(
                taskq_tasks.ping.delay,
                probe,
                samples=samples,
                warmup=warmup,
                pause=(0.0, 1.0),
                timeout=5.0,
            )
        finally:
            proc.stop()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drain", type=int, default=2000, help="tasks in the drain")
    parser.add_argument("--latency", type=int, default=30, help="latency samples")
    parser.add_argument("--warmup", type=int, default=2, help="latency samples not kept")
    parser.add_argument("--log-dir", type=Path, default=harness.ROOT / "benchmarks/results")
    parser.add_argument("--json", type=Path, required=True, help="where to write results")
    options = parser.parse_args()

    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    harness.recreate_database(dbenv.peer_database_name())
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)

    from importlib.metadata import version

    results: dict[str, Any] = {"version": version("django-taskq"), "django": django.get_version()}
    started = time.monotonic()
    if options.drain:
        results["drain"] = drain(options.drain, options.log_dir)
    if options.latency:
        results["latency"] = latency(options.latency, options.warmup, options.log_dir)
    results["seconds"] = time.monotonic() - started
    options.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
