"""pgqueuer's entrypoints for the comparison (see :mod:`.pgqueuer_bench`); run as a module, one
worker: ``python -m benchmarks.peers.pgqueuer_tasks --batch-size 100``.

The worker is started with ``pgqueuer.run()``, the documented equivalent of ``pgq run``:
pgqueuer 1.6.0's ``pgq run`` fails before it starts (its log-level option reaches the
logging set-up as a string and raises ``AttributeError``), whatever the options.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg
import pgqueuer
from pgqueuer import AsyncpgDriver, Job, PgQueuer

from benchmarks import dbenv, probe

DATABASE = f"{dbenv.database_name()}_pgqueuer"


def asyncpg_params() -> dict[str, Any]:
    """``asyncpg.connect`` keyword arguments for the peer's database."""
    params, _ = dbenv.server()
    names = {"host": "host", "port": "port", "user": "user", "password": "password"}
    kwargs: dict[str, Any] = {names[k]: v for k, v in params.items() if v}
    if "port" in kwargs:
        kwargs["port"] = int(kwargs["port"])
    return {**kwargs, "database": DATABASE}


@asynccontextmanager
async def create() -> AsyncIterator[PgQueuer]:
    """The worker's PgQueuer: one asyncpg connection (pgqueuer's ``AsyncpgDriver``)."""
    conn = await asyncpg.connect(**asyncpg_params())
    pgq = PgQueuer(AsyncpgDriver(conn))

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        probe.task_started()
        probe.task_finished()

    @pgq.entrypoint("sleep_for")
    async def sleep_for(job: Job) -> None:
        probe.task_started()
        await asyncio.sleep(float(job.payload or b"0"))
        probe.task_finished()

    @pgq.entrypoint("ping")
    async def ping(job: Job) -> None:
        probe.started(int(job.payload or b"0"))

    try:
        yield pgq
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="one pgqueuer worker")
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--max-concurrent-tasks", type=int, default=None)
    options = parser.parse_args()
    asyncio.run(
        pgqueuer.run(
            create,
            batch_size=options.batch_size,
            max_concurrent_tasks=options.max_concurrent_tasks,
            dequeue_timeout=timedelta(seconds=30),
        )
    )


if __name__ == "__main__":
    main()
