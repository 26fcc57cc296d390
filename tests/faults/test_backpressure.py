"""Fault: the worker's acks cannot be written (the database holds them up). The worker must
stop claiming once its unwritten outcomes exceed what it can report, not keep claiming."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import aiotaskq
from tests.app import tasks
from tests.conftest import task_db_conninfo, wait_for

CONCURRENCY = 5
TASKS = 60
GATE = 4242  # the advisory lock a test holds to keep every DELETE of a task waiting


@pytest.fixture
def gated_deletes() -> Iterator[psycopg.Connection[Any]]:
    """A trigger makes every DELETE of a task wait for advisory lock GATE; the connection
    returned holds it (in a transaction) until the test commits."""
    with psycopg.connect(task_db_conninfo(), autocommit=True) as admin:
        admin.execute(
            "CREATE FUNCTION aiotaskq_test_gate() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN PERFORM pg_advisory_xact_lock_shared({GATE}); RETURN OLD; END $$"
        )
        admin.execute(
            "CREATE TRIGGER aiotaskq_test_gate BEFORE DELETE ON aiotaskq_task "
            "FOR EACH ROW EXECUTE FUNCTION aiotaskq_test_gate()"
        )
        try:
            with psycopg.connect(task_db_conninfo()) as holder:
                holder.execute("SELECT pg_advisory_xact_lock(%s)", (GATE,))
                yield holder
        finally:
            admin.execute("DROP TRIGGER aiotaskq_test_gate ON aiotaskq_task")
            admin.execute("DROP FUNCTION aiotaskq_test_gate()")


def _running(db: psycopg.Connection[Any]) -> int:
    (n,) = db.execute("SELECT count(*) FROM aiotaskq_task WHERE state = 'running'").fetchone() or (
        0,
    )
    return int(n)


def test_unwritten_acks_stop_the_claims(
    worker: Any, db: psycopg.Connection[Any], gated_deletes: psycopg.Connection[Any]
) -> None:
    aiotaskq.enqueue_many(tasks.add.s(i, i) for i in range(TASKS))
    worker("--concurrency", str(CONCURRENCY))
    # The tasks finish at once; their acks wait at the gate. The worker claims while its
    # unwritten outcomes stay within one batch of its concurrency, then stops.
    limit = 2 * CONCURRENCY
    wait_for(lambda: _running(db) >= limit, what=f"{limit} tasks claimed")
    # It does not claim past that, however long the acks are held (watched for a second).
    watch_until = time.monotonic() + 1.0
    while time.monotonic() < watch_until:
        assert _running(db) <= limit
        time.sleep(0.05)
    gated_deletes.commit()  # opens the gate: the acks go through, the claims resume
    wait_for(
        lambda: db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (0,),
        what="every task run and acked",
    )
