"""django-taskq, compared: the same peer as :mod:`.taskq_bench` (its settings, tasks and
worker), measured by the common driver (see :mod:`.driver`) like the other queues.

Run with ``benchmarks/.venv-peers/bin/python -m benchmarks.peers.taskq_compare SCENARIO``.

How it is run: ``manage.py taskq``, its one way to run (one process, one task at a time,
plain functions only, a one-second sleep when nothing is due and no wake-up on enqueue).
It has no concurrency, so the fan-out of sleeping tasks would run one after the other
(2,000 x 0.2 s = 400 s): that cell says "serial" instead. Its latency is measured with
pauses drawn over that one-second sleep, and fewer samples, as in ``taskq_bench``.
Enqueueing is ``task.delay()``; it has no bulk enqueue, so the drain's rows are written with
the ORM's ``bulk_create`` and the bulk cell is empty.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from benchmarks import dbenv, harness
from benchmarks.peers import driver, taskq_bench

os.environ["DJANGO_SETTINGS_MODULE"] = taskq_bench.SETTINGS


class TaskqPeer(driver.Peer):
    name = "django-taskq"
    table = taskq_bench.TABLE
    database = dbenv.peer_database_name()
    latency_pause = (0.0, 1.0)
    latency_warmup = 2

    def __init__(self) -> None:
        import django

        django.setup()

    def setup(self) -> dict[str, Any]:
        import django
        from django.core.management import call_command
        from django.db import connections

        connections.close_all()
        harness.recreate_database(dbenv.peer_database_name())
        call_command("migrate", verbosity=0)
        return {
            "version": version("django-taskq"),
            "django": django.get_version(),
            "how": (
                "manage.py taskq: one process, one task at a time (plain functions), "
                "1 s sleep when idle, no wake-up on enqueue; delay()"
            ),
        }

    def clear(self) -> None:
        from django_taskq.models import Task

        Task.objects.all().delete()

    def fill(self, n: int, kind: str) -> None:
        if kind == "sleep":
            raise driver.Skip(
                "serial: one task at a time, so 2,000 x 0.2 s would take 400 s (no async)"
            )
        taskq_bench.fill(n)
        with harness.connect(dbenv.peer_database_name()) as conn:
            conn.execute(f"ANALYZE {taskq_bench.TABLE}")

    def worker(self, scenario: str, probe: harness.Probe, expect: int, log: Path) -> Any:
        return taskq_bench._worker(log.parent, f"compare-{scenario}", probe, expect)

    def ping(self) -> Callable[[int], None]:
        from benchmarks.peers import taskq_tasks

        def enqueue(i: int) -> None:
            taskq_tasks.ping.delay(i)

        return enqueue

    def enqueue_one(self, n: int) -> float:
        from benchmarks.peers import taskq_tasks

        taskq_tasks.noop.delay(-1)  # the connection is opened outside the timing
        started = time.perf_counter()
        for i in range(n):
            taskq_tasks.noop.delay(i)
        return time.perf_counter() - started

    def enqueue_bulk(self, n: int) -> float:
        raise driver.Skip("none: no bulk enqueue API")

    def close(self) -> None:
        from django.db import connections

        connections.close_all()


if __name__ == "__main__":
    raise SystemExit(driver.main(TaskqPeer()))
