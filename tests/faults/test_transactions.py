"""Fault 1: enqueue is transactional, and so is its NOTIFY."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import transaction

from aiotaskq.db.listen import channel_for
from tests.app import tasks
from tests.conftest import executions, task_db_conninfo, wait_for


@pytest.fixture
def listener() -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(task_db_conninfo(), autocommit=True) as conn:
        conn.execute(f'LISTEN "{channel_for("default")}"')
        yield conn


def _notifications(conn: psycopg.Connection[Any], wait: float) -> int:
    return sum(1 for _ in conn.notifies(timeout=wait))


def test_notify_only_at_commit(listener: psycopg.Connection[Any], db: Any) -> None:
    with transaction.atomic():
        tasks.record.delay("in-transaction")
        tasks.record.delay("in-transaction-2")
        assert _notifications(listener, 0.3) == 0, "no wake-up before commit"
        assert db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (0,)
    # One notification for the queue at commit (PostgreSQL folds identical ones).
    assert _notifications(listener, 2.0) == 1
    assert db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (2,)


def test_rollback_and_savepoint_rollback_leave_nothing(
    listener: psycopg.Connection[Any], db: Any
) -> None:
    def enqueue_and_fail() -> None:
        with transaction.atomic():
            tasks.record.delay("never")
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        enqueue_and_fail()
    with transaction.atomic():
        with pytest.raises(RuntimeError):
            enqueue_and_fail()  # a savepoint
        tasks.record.delay("kept")
    assert _notifications(listener, 1.0) == 1
    assert db.execute("SELECT args FROM aiotaskq_task").fetchall() == [(["kept"],)]


def test_only_the_committed_task_runs(worker: Any) -> None:
    worker()

    def enqueue_and_fail() -> None:
        with transaction.atomic():
            tasks.record.delay("rolled-back")
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        enqueue_and_fail()
    tasks.record.delay("committed")
    wait_for(lambda: executions("committed"))
    tasks.record.delay("last")
    wait_for(lambda: executions("last"))
    assert executions("rolled-back") == []
