"""Celery's app and tasks for the comparison (see :mod:`.celery_bench`), loaded by its worker:
``celery -A benchmarks.peers.celery_tasks worker -P gevent -c 100``."""

from __future__ import annotations

import os
import time

from celery import Celery

from benchmarks import dbenv, probe

#: The machine's Redis; a queue of the benchmark's own name, so another run's queues or
#: anything else kept in that Redis are left alone.
BROKER = os.environ.get("AIOTASKQ_BENCH_REDIS_URL") or "redis://127.0.0.1:6379/0"
QUEUE = f"{dbenv.database_name()}_celery"
PREFETCH_MULTIPLIER = 4

app = Celery("aiotaskq_bench", broker=BROKER)
app.conf.update(
    task_default_queue=QUEUE,
    # No result backend: nothing waits for outcomes, as in the other queues' runs.
    task_ignore_result=True,
    # Celery's default: each worker slot reserves this many messages ahead.
    worker_prefetch_multiplier=PREFETCH_MULTIPLIER,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="noop")
def noop(i: int = 0) -> None:
    probe.task_started()
    probe.task_finished()


@app.task(name="sleep_for")
def sleep_for(seconds: float) -> None:
    # The gevent pool patches time.sleep: 200 of these wait side by side in one process.
    probe.task_started()
    time.sleep(seconds)
    probe.task_finished()


@app.task(name="ping")
def ping(sample: int) -> None:
    probe.started(sample)
