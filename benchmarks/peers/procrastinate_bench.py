"""procrastinate, compared: its driver (see :mod:`.driver`); its app and tasks are in
:mod:`.procrastinate_tasks`.

Run with ``benchmarks/.venv-procrastinate/bin/python -m benchmarks.peers.procrastinate_bench
SCENARIO ...``.

How it is run, from its documentation: the psycopg 3 connector (``PsycopgConnector``, an
``AsyncConnectionPool``), the schema applied by ``procrastinate schema --apply`` into its own
database, and one worker, ``procrastinate worker --concurrency N`` (the documented way to
run ``async def`` tasks side by side in one process; 100 for the drain, 200 for the fan-out
and the latency), LISTEN/NOTIFY on (its default), and ``--delete-jobs always`` so that a
finished job leaves the table as aiotaskq's do (the default keeps every finished row, which
makes the table grow for ever). Tasks are ``async def``. Enqueueing is ``await
task.defer_async()`` (one) and ``await task.batch_defer_async()`` (many, one statement); the
latency producer uses the synchronous ``task.defer()``, as aiotaskq's uses ``delay()``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.peers import driver
from benchmarks.peers.procrastinate_tasks import APP_PATH, DATABASE, POOL_MAX, app, noop, sleep_for
from benchmarks.peers.procrastinate_tasks import ping as ping_task


class Procrastinate(driver.Peer):
    name = "procrastinate"
    table = "procrastinate_jobs"
    database = DATABASE

    def setup(self) -> dict[str, Any]:
        harness.recreate_database(DATABASE)
        subprocess.run(
            [sys.executable, "-m", "procrastinate", "--app", APP_PATH, "schema", "--apply"],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return {
            "version": version("procrastinate"),
            "how": (
                f"psycopg 3 connector (pool max_size {POOL_MAX}); one worker, procrastinate "
                "worker --concurrency 100 (drain) / 200 (fan-out, latency) --delete-jobs "
                "always, LISTEN/NOTIFY on; async def tasks; defer_async() / "
                "batch_defer_async()"
            ),
        }

    def clear(self) -> None:
        with harness.connect(DATABASE) as conn:
            conn.execute("TRUNCATE procrastinate_jobs CASCADE")

    def fill(self, n: int, kind: str) -> None:
        async def go() -> None:
            async with app.open_async():
                for start in range(0, n, 5000):
                    chunk = range(start, min(n, start + 5000))
                    if kind == "sleep":
                        await sleep_for.batch_defer_async(
                            *({"seconds": driver.FANOUT_SLEEP} for _ in chunk)
                        )
                    else:
                        await noop.batch_defer_async(*({"i": i} for i in chunk))

        asyncio.run(go())
        with harness.connect(DATABASE) as conn:
            conn.execute("ANALYZE procrastinate_jobs")

    def worker(self, scenario: str, probe: harness.Probe, expect: int, log: Path) -> Any:
        concurrency = "100" if scenario == "drain" else "200"
        env = harness.subprocess_env(
            AIOTASKQ_BENCH_PROBE=probe.address, AIOTASKQ_BENCH_EXPECT=str(expect)
        )
        argv = [
            *(sys.executable, "-m", "procrastinate", "--app", APP_PATH, "--log-level", "warning"),
            *("worker", "--concurrency", concurrency, "--delete-jobs", "always"),
        ]
        return harness.WorkerProcess(argv, env=env, log_path=log)

    def ping(self) -> Callable[[int], None]:
        app.open()
        self._opened = True

        def enqueue(i: int) -> None:
            ping_task.defer(sample=i)

        return enqueue

    def enqueue_one(self, n: int) -> float:
        async def go() -> float:
            async with app.open_async():
                await noop.defer_async(i=-1)  # the pool is opened outside the timing
                started = time.perf_counter()
                for i in range(n):
                    await noop.defer_async(i=i)
                return time.perf_counter() - started

        return asyncio.run(go())

    def enqueue_bulk(self, n: int) -> float:
        async def go() -> float:
            async with app.open_async():
                await noop.defer_async(i=-1)
                kwargs = [{"i": i} for i in range(n)]
                started = time.perf_counter()
                await noop.batch_defer_async(*kwargs)
                return time.perf_counter() - started

        return asyncio.run(go())

    def close(self) -> None:
        if getattr(self, "_opened", False):
            app.close()


if __name__ == "__main__":
    raise SystemExit(driver.main(Procrastinate()))
