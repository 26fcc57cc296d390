"""Async enqueue with the database out of reach: it fails within ``ENQUEUE_TIMEOUT`` and
works again promptly once the database answers, however long the outage was. The outage is
a proxy taken down (tests/tcpproxy.py): the shared server is never stopped."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import connections
from django.test import override_settings

from aiotaskq import errors
from aiotaskq.conf import get_settings
from tests.app import tasks
from tests.conftest import ROOT, task_db_conninfo
from tests.tcpproxy import TcpProxy

TIMEOUT = 2.0


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    """A proxy to the test database, and the ``proxied`` database alias through it, which
    ``AIOTASKQ["DATABASE"]`` names for the test."""
    with TcpProxy.start() as running:
        default = connections.settings["default"]
        connections.settings["proxied"] = {**default, "HOST": "127.0.0.1", "PORT": running.port}
        try:
            with override_settings(AIOTASKQ={"DATABASE": "proxied", "ENQUEUE_TIMEOUT": TIMEOUT}):
                yield running
        finally:
            connections["proxied"].close()
            del connections.settings["proxied"]


def _labels(db: Any) -> list[str]:
    return sorted(r[0] for r in db.execute("SELECT args->>0 FROM aiotaskq_task").fetchall())


async def test_adelay_fails_fast_while_the_database_is_down_and_recovers_at_once(
    db: Any, proxy: TcpProxy
) -> None:
    await tasks.record.adelay("before")
    proxy.down()
    # A long outage (several timeouts in a row): psycopg_pool's own reconnect delay would
    # have doubled to seconds by the time the database is back.
    for attempt in range(3):
        started = time.monotonic()
        with pytest.raises(errors.DatabaseUnreachable) as info:
            await tasks.record.adelay(f"during-{attempt}")
        elapsed = time.monotonic() - started
        assert TIMEOUT - 0.1 <= elapsed < TIMEOUT + 1.5, elapsed
    message = str(info.value)
    assert "could not be reached within 2 s" in message
    assert 'AIOTASKQ["ENQUEUE_TIMEOUT"]' in message
    assert isinstance(info.value, errors.DatabaseError)

    proxy.up()
    started = time.monotonic()
    await tasks.record.adelay("after")
    assert time.monotonic() - started < 2.0
    assert _labels(db) == ["after", "before"]


async def test_the_pool_finds_the_cut_connections_without_failing_a_call(
    db: Any, proxy: TcpProxy
) -> None:
    # Several pooled connections, all cut while idle, the database back at once.
    import asyncio

    await asyncio.gather(*(tasks.record.adelay(f"warm-{i}") for i in range(6)))
    proxy.down()
    proxy.up()
    for i in range(4):
        await tasks.record.adelay(f"after-{i}")
    await asyncio.gather(*(tasks.record.adelay(f"many-{i}") for i in range(6)))
    assert len(_labels(db)) == 16


async def test_concurrent_callers_during_an_outage_all_fail_within_the_timeout(
    db: Any, proxy: TcpProxy
) -> None:

    await tasks.record.adelay("warm")
    proxy.down()
    started = time.monotonic()
    outcomes = await asyncio.gather(
        *(tasks.record.adelay(f"during-{i}") for i in range(8)), return_exceptions=True
    )
    assert all(isinstance(o, errors.DatabaseUnreachable) for o in outcomes), outcomes
    assert time.monotonic() - started < TIMEOUT + 1.5
    proxy.up()
    await asyncio.gather(*(tasks.record.adelay(f"after-{i}") for i in range(8)))
    assert len(_labels(db)) == 9


@pytest.mark.parametrize("value", [0, -1, "5", True])
def test_the_timeout_must_be_a_positive_number(value: object) -> None:
    with (
        override_settings(AIOTASKQ={"ENQUEUE_TIMEOUT": value}),
        pytest.raises(errors.ConfigurationError, match=r'ENQUEUE_TIMEOUT"\] must be a positive'),
    ):
        get_settings()


def test_the_proxy_runs_in_a_process_of_its_own() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.tcpproxy"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        port = int(proc.stdout.readline().split()[-1])
        through = psycopg.conninfo.make_conninfo(task_db_conninfo(), host="127.0.0.1", port=port)
        with psycopg.connect(through, connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            proc.stdin.write("down\n")
            proc.stdin.flush()
            assert proc.stdout.readline() == "ok\n"
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(through, connect_timeout=5)
        proc.stdin.write("up\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "ok\n"
        with psycopg.connect(through, connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        proc.stdin.close()
        proc.wait(10)
        proc.stdout.close()
