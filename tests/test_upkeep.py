"""The task table where autovacuum does not run: the worker vacuums and analyzes it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from aiotaskq.db import upkeep
from aiotaskq.db.connect import WorkerDatabase
from aiotaskq.worker.upkeep import VACUUM_DEAD_ROWS, TableKeeper
from tests.conftest import task_db_conninfo, wait_for


@pytest.fixture
def autovacuum_off_for_the_table(db: psycopg.Connection[Any]) -> Iterator[None]:
    """Whatever the server's setting, autovacuum does not run for the task table: the ring's
    segments have it off by migration 0009, and the cold partition for the test."""
    db.execute("ALTER TABLE aiotaskq_task_cold SET (autovacuum_enabled = false)")
    yield
    db.execute("ALTER TABLE aiotaskq_task_cold RESET (autovacuum_enabled)")


PARTITIONS = ("aiotaskq_task_cold", "aiotaskq_task_ring0", "aiotaskq_task_ring1")


def _dead_rows(db: psycopg.Connection[Any]) -> int:
    db.execute("SELECT pg_stat_clear_snapshot()")
    (dead,) = db.execute(
        "SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables WHERE relname = ANY(%s)",
        (list(PARTITIONS),),
    ).fetchone() or (0,)
    return int(dead)


@pytest.mark.usefixtures("autovacuum_off_for_the_table")
async def test_keeper_vacuums_dead_tasks_once_per_table(db: psycopg.Connection[Any]) -> None:
    total = VACUUM_DEAD_ROWS * 2
    db.execute(
        "INSERT INTO aiotaskq_task (id, name, queue) "
        "SELECT gen_random_uuid(), 't', 'q' FROM generate_series(1, %s)",
        (total,),
    )
    db.execute("DELETE FROM aiotaskq_task")  # what acks do, row by row
    wait_for(lambda: _dead_rows(db) >= total, what="the statistics to count the dead rows")

    pool = WorkerDatabase("aiotaskq-upkeep-test", 2)
    await pool.open(wait=False)
    try:
        keeper = TableKeeper(pool, "test-worker")
        # Another worker is keeping the table: this one leaves it alone.
        with psycopg.connect(task_db_conninfo(), autocommit=True) as other:
            other.execute("SELECT pg_advisory_lock(%s)", (upkeep.UPKEEP_LOCK,))
            assert await keeper.keep_once() is None
            other.execute("SELECT pg_advisory_unlock(%s)", (upkeep.UPKEEP_LOCK,))
        assert await keeper.keep_once() == "vacuum"
        wait_for(lambda: _dead_rows(db) == 0, what="the dead rows to be gone")
        assert await keeper.keep_once() is None, "nothing left to do"
    finally:
        await pool.close()


async def test_the_segments_are_the_keepers_even_where_autovacuum_runs(
    db: psycopg.Connection[Any],
) -> None:
    """Autovacuum would vacuum and analyze a segment under a held horizon too, and what it
    records then (a few live rows among many dead pages) misleads the planner; the keeper
    knows when the horizon is held. So autovacuum is off for the ring's partitions alone, and
    the keeper keeps the table whatever the server's setting."""
    options = dict(
        db.execute(
            "SELECT c.relname, coalesce(c.reloptions, '{}') "
            "FROM pg_partition_tree('aiotaskq_task') p JOIN pg_class c ON c.oid = p.relid "
            "WHERE p.isleaf"
        ).fetchall()
    )
    assert "autovacuum_enabled=false" in options["aiotaskq_task_ring0"]
    assert "autovacuum_enabled=false" in options["aiotaskq_task_ring1"]
    assert "autovacuum_enabled=false" not in options["aiotaskq_task_cold"]
    pool = WorkerDatabase("aiotaskq-upkeep-test", 2)
    await pool.open(wait=False)
    try:
        async with pool.connection("Test") as conn:
            health = await upkeep.table_health(conn)
        assert health is not None
        assert not health.autovacuum
    finally:
        await pool.close()


async def test_keeper_waits_while_a_snapshot_holds_the_horizon(
    db: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A VACUUM under a long transaction removes nothing that died after that transaction
    began; the keeper runs it once, then waits for the transaction to end instead of reading
    the whole table every 10 s for nothing."""

    def churn(segment: str = "aiotaskq_segment(statement_timestamp())") -> None:
        before = _dead_rows(db)
        db.execute(
            f"INSERT INTO aiotaskq_task (id, name, queue, segment) "
            f"SELECT gen_random_uuid(), 't', 'q', {segment} FROM generate_series(1, %s)",
            (VACUUM_DEAD_ROWS * 2,),
        )
        db.execute("DELETE FROM aiotaskq_task")
        wait_for(lambda: _dead_rows(db) >= before + VACUUM_DEAD_ROWS * 2, what="dead rows")

    pool = WorkerDatabase("aiotaskq-upkeep-test", 2)
    await pool.open(wait=False)
    holder = psycopg.connect(task_db_conninfo(), autocommit=True)
    try:
        holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT txid_current()")
        keeper = TableKeeper(pool, "test-worker")
        churn()
        assert await keeper.keep_once() == "vacuum"
        churn("-1")
        # No VACUUM; an ANALYZE still renews the statistics the churn made stale...
        assert await keeper.keep_once() == "analyze", "VACUUM again under the same horizon"
        assert await keeper.keep_once() is None
        # ... of the cold partition: the ring's segments are left unanalyzed (planned from
        # their actual size) while the horizon is held.
        churn()
        assert await keeper.keep_once() is None
        assert "upkeep.horizon_held" in caplog.text
        holder.execute("ROLLBACK")
        assert await keeper.keep_once() == "vacuum"
        wait_for(lambda: _dead_rows(db) == 0, what="the dead rows to be gone")
    finally:
        holder.close()
        await pool.close()
