"""procrastinate's app and tasks for the comparison (see :mod:`.procrastinate_bench`), loaded
by its CLI: ``procrastinate --app benchmarks.peers.procrastinate_tasks.app worker``."""

from __future__ import annotations

import asyncio

import procrastinate
from psycopg.conninfo import make_conninfo

from benchmarks import dbenv, probe

DATABASE = f"{dbenv.database_name()}_procrastinate"
APP_PATH = "benchmarks.peers.procrastinate_tasks.app"
#: The connector's pool: 10 connections, the size procrastinate's documentation gives as a
#: worker's default ("Limit the number of opened connections"); psycopg_pool's own default
#: (4) would leave a worker at concurrency 200 queueing for connections to finish its jobs.
POOL_MAX = 10


def _connector() -> procrastinate.PsycopgConnector:
    conninfo = make_conninfo(**dbenv.libpq_params(DATABASE))
    return procrastinate.PsycopgConnector(conninfo=conninfo, min_size=2, max_size=POOL_MAX)


app = procrastinate.App(connector=_connector())


@app.task(name="noop")
async def noop(i: int = 0) -> None:
    probe.task_started()
    probe.task_finished()


@app.task(name="sleep_for")
async def sleep_for(seconds: float) -> None:
    probe.task_started()
    await asyncio.sleep(seconds)
    probe.task_finished()


@app.task(name="ping")
async def ping(sample: int) -> None:
    probe.started(sample)
