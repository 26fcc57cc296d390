"""pgqueuer, compared: its driver (see :mod:`.driver`); its entrypoints are in
:mod:`.pgqueuer_tasks`.

Run with ``benchmarks/.venv-pgqueuer/bin/python -m benchmarks.peers.pgqueuer_bench SCENARIO``.

How it is run, from its documentation: the asyncpg driver (``AsyncpgDriver``), the schema
installed by ``pgq install`` (durable tables, its default) into its own database, and one
worker, ``pgqueuer.run(..., batch_size=100)`` (the Python twin of ``pgq run``; jobs are
claimed, and their outcomes written, in batches of 100; the default is 10). pgqueuer has no
concurrency setting beyond a cap, so the drain runs uncapped and the fan-out and latency
with ``max_concurrent_tasks=200`` (which must be at least twice the batch size).
LISTEN/NOTIFY wakes the worker. A finished job leaves the queue table (it is logged in
``pgqueuer_log``), so the drain ends when the queue table is empty, as aiotaskq's does.
Enqueueing is ``await queries.enqueue(name, payload)`` (one) and ``await
queries.enqueue([names], [payloads], [priorities])`` (many, one statement), on one asyncpg
connection; the latency producer runs the same call to completion on its own event loop.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import asyncpg
from pgqueuer import Queries
from pgqueuer.db import AsyncpgDriver

from benchmarks import harness
from benchmarks.peers import driver
from benchmarks.peers.pgqueuer_tasks import DATABASE, asyncpg_params

BATCH_SIZE = 100
MAX_CONCURRENT = 200


def _pg_env() -> dict[str, str]:
    """libpq's variables for the peer's database, which ``pgq`` reads."""
    params = asyncpg_params()
    names = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD"}
    env = {names[k]: str(v) for k, v in params.items() if k in names}
    env["PGDATABASE"] = DATABASE
    return env


class PgQueuerPeer(driver.Peer):
    name = "pgqueuer"
    table = "pgqueuer"
    database = DATABASE

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._conn: asyncpg.Connection | None = None

    def _queries(self) -> Queries:
        if self._conn is None:
            self._conn = self._loop.run_until_complete(asyncpg.connect(**asyncpg_params()))
        return Queries(AsyncpgDriver(self._conn))

    def setup(self) -> dict[str, Any]:
        harness.recreate_database(DATABASE)
        subprocess.run(
            [sys.executable, "-m", "pgqueuer", "install"],
            env={**os.environ, **_pg_env()},
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return {
            "version": version("pgqueuer"),
            "asyncpg": version("asyncpg"),
            "how": (
                f"asyncpg driver; one worker, pgqueuer.run(batch_size={BATCH_SIZE}; drain "
                f"uncapped, fan-out and latency max_concurrent_tasks={MAX_CONCURRENT}); "
                "durable tables; async def entrypoints; enqueue() of one / of lists"
            ),
        }

    def clear(self) -> None:
        with harness.connect(DATABASE) as conn:
            conn.execute("TRUNCATE pgqueuer, pgqueuer_log")

    def fill(self, n: int, kind: str) -> None:
        queries = self._queries()
        name, payload = (
            ("sleep_for", str(driver.FANOUT_SLEEP).encode())
            if kind == "sleep"
            else (
                "noop",
                None,
            )
        )
        for start in range(0, n, 5000):
            size = min(n, start + 5000) - start
            self._loop.run_until_complete(
                queries.enqueue([name] * size, [payload] * size, [0] * size)
            )
        with harness.connect(DATABASE) as conn:
            conn.execute("ANALYZE pgqueuer")

    def worker(self, scenario: str, probe: harness.Probe, expect: int, log: Path) -> Any:
        argv = [
            sys.executable,
            "-m",
            "benchmarks.peers.pgqueuer_tasks",
            "--batch-size",
            str(BATCH_SIZE),
        ]
        if scenario != "drain":
            argv += ["--max-concurrent-tasks", str(MAX_CONCURRENT)]
        env = harness.subprocess_env(
            AIOTASKQ_BENCH_PROBE=probe.address, AIOTASKQ_BENCH_EXPECT=str(expect), **_pg_env()
        )
        return harness.WorkerProcess(argv, env=env, log_path=log)

    def ping(self) -> Callable[[int], None]:
        queries = self._queries()

        def enqueue(i: int) -> None:
            self._loop.run_until_complete(queries.enqueue("ping", str(i).encode()))

        return enqueue

    def enqueue_one(self, n: int) -> float:
        queries = self._queries()

        async def go() -> float:
            await queries.enqueue("noop", None)  # statements prepared outside the timing
            started = time.perf_counter()
            for _ in range(n):
                await queries.enqueue("noop", None)
            return time.perf_counter() - started

        return self._loop.run_until_complete(go())

    def enqueue_bulk(self, n: int) -> float:
        queries = self._queries()

        async def go() -> float:
            await queries.enqueue("noop", None)
            names, payloads, priorities = ["noop"] * n, [None] * n, [0] * n
            started = time.perf_counter()
            await queries.enqueue(names, payloads, priorities)
            return time.perf_counter() - started

        return self._loop.run_until_complete(go())

    def close(self) -> None:
        if self._conn is not None:
            self._loop.run_until_complete(self._conn.close())
        self._loop.close()


if __name__ == "__main__":
    raise SystemExit(driver.main(PgQueuerPeer()))
