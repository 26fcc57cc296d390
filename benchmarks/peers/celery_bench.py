"""Celery with Redis, compared: its driver (see :mod:`.driver`); its app and tasks are in
:mod:`.celery_tasks`.

Run with ``benchmarks/.venv-celery/bin/python -m benchmarks.peers.celery_bench SCENARIO``.

How it is run, from its documentation ("Optimizing", "Concurrency with gevent"): the
machine's Redis as the broker, no result backend (``task_ignore_result``), and one worker
process with the gevent pool, ``celery worker -P gevent -c 100`` for the drain and the
latency and ``-c 200`` for the fan-out (Celery has no asyncio; gevent is its documented
pool for many waiting tasks, and it patches ``time.sleep``, so the fan-out's tasks sleep
side by side), ``--without-gossip --without-mingle --without-heartbeat`` (the documented
way to save a lone worker its cluster chatter), the default prefetch multiplier (4) and
early acknowledgement. Redis here keeps nothing on disk, so unlike the PostgreSQL queues
a task is not durable once enqueued: that is the trade the column is labelled with.
Celery keeps no row per task, so a drain ends when the last task has returned (the probe's
"done"), not at an empty table. Enqueueing is ``task.delay()`` in a loop; Celery has no
bulk enqueue (``group()`` publishes one message per task), so that cell is empty.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import redis

from benchmarks import harness
from benchmarks.peers import driver
from benchmarks.peers.celery_tasks import BROKER, PREFETCH_MULTIPLIER, QUEUE, noop, ping, sleep_for


class CeleryPeer(driver.Peer):
    name = "celery"

    def __init__(self) -> None:
        self._redis = redis.Redis.from_url(BROKER)

    def setup(self) -> dict[str, Any]:
        info = self._redis.info("server")
        self.clear()
        return {
            "version": version("celery"),
            "kombu": version("kombu"),
            "redis_py": version("redis"),
            "gevent": version("gevent"),
            "redis_server": str(info.get("redis_version", "?")),
            "how": (
                "Redis broker, no result backend (ignore_result); one worker process, "
                "-P gevent -c 100 (drain, latency) / -c 200 (fan-out), "
                f"prefetch multiplier {PREFETCH_MULTIPLIER}, early ack, "
                "--without-gossip --without-mingle --without-heartbeat; delay()"
            ),
        }

    def clear(self) -> None:
        self._redis.delete(QUEUE)

    def fill(self, n: int, kind: str) -> None:
        for i in range(n):
            if kind == "sleep":
                sleep_for.delay(driver.FANOUT_SLEEP)
            else:
                noop.delay(i)

    def worker(self, scenario: str, probe: harness.Probe, expect: int, log: Path) -> Any:
        concurrency = "200" if scenario == "fanout" else "100"
        argv = [
            *(sys.executable, "-m", "celery", "-A", "benchmarks.peers.celery_tasks", "worker"),
            *("-P", "gevent", "-c", concurrency, "-Q", QUEUE, "-l", "WARNING"),
            *("--without-gossip", "--without-mingle", "--without-heartbeat"),
        ]
        env = harness.subprocess_env(
            AIOTASKQ_BENCH_PROBE=probe.address, AIOTASKQ_BENCH_EXPECT=str(expect)
        )
        return harness.WorkerProcess(argv, env=env, log_path=log)

    def ping(self) -> Callable[[int], None]:
        def enqueue(i: int) -> None:
            ping.delay(i)

        return enqueue

    def enqueue_one(self, n: int) -> float:
        noop.delay(-1)  # the broker connection is opened outside the timing
        started = time.perf_counter()
        for i in range(n):
            noop.delay(i)
        return time.perf_counter() - started

    def enqueue_bulk(self, n: int) -> float:
        raise driver.Skip("none: no bulk enqueue, group() publishes one message per task")

    def close(self) -> None:
        self._redis.close()


if __name__ == "__main__":
    raise SystemExit(driver.main(CeleryPeer()))
