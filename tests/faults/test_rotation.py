"""Rotations of the ring under real workers: workers SIGKILLed while segments rotate under
load, and a worker started while a rotation holds its segment. Every task runs, none is lost,
and only a task in flight at a kill runs again."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import psycopg

import aiotaskq
from tests.app import tasks
from tests.conftest import task_db_conninfo, wait_for


def _files(db: Any) -> dict[str, int]:
    rows = db.execute(
        "SELECT relname, relfilenode FROM pg_class "
        "WHERE relname IN ('aiotaskq_task_ring0', 'aiotaskq_task_ring1')"
    ).fetchall()
    return dict(rows)


def test_rotations_under_load_with_workers_sigkilled(
    ledger_worker: Any, ledger: Any, db: Any
) -> None:
    first = ledger_worker("--concurrency", "50", "--threads", "4", "--log-level", "DEBUG")
    second = ledger_worker("--concurrency", "50", "--threads", "4", "--log-level", "DEBUG")
    files = _files(db)
    truncated: set[tuple[str, int]] = set()
    labels: list[str] = []
    stop = threading.Event()

    def produce() -> None:
        # About 300 tasks a second for 35 s: three turns of the ring at least.
        from django.db import connections

        n = 0
        try:
            while not stop.is_set() and n < 10_500:
                batch = [f"t{n + i}" for i in range(100)]
                aiotaskq.enqueue_many(
                    (tasks.ledger_async if i % 2 else tasks.ledger_sync).s(label)
                    for i, label in enumerate(batch)
                )
                labels.extend(batch)
                n += len(batch)
                stop.wait(1 / 3)  # the pace; a stop ends it at once
        finally:
            connections.close_all()  # this thread's own

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        wait_for(lambda: len(ledger.counts()) > 2000, timeout=60)
        first.signal(signal.SIGKILL)
        first.wait(10)
        third = ledger_worker("--concurrency", "50", "--threads", "4", "--log-level", "DEBUG")
        deadline = time.monotonic() + 60
        while producer.is_alive() and time.monotonic() < deadline:
            truncated |= {(k, v) for k, v in _files(db).items() if files.get(k) != v}
            time.sleep(0.2)
    finally:
        stop.set()
        producer.join()
    total = len(labels)
    wait_for(lambda: len(ledger.counts()) == total, timeout=120, what="every task to run")
    wait_for(
        lambda: db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (0,), timeout=30
    )
    assert len(truncated) >= 2, f"the segments rotated while the workers ran: {truncated}"
    assert {name for name, _ in truncated} == {"aiotaskq_task_ring0", "aiotaskq_task_ring1"}
    runs = ledger.lines()
    by_first = {label: pid for label, event, pid in reversed(runs) if event == "ran"}
    twice = [label for label, count in ledger.counts().items() if count > 1]
    # Only a task the killed worker had started may run again (its ack died with it).
    assert all(by_first[label] == first.pid for label in twice), twice
    assert len(twice) <= 50 + 4
    assert second.proc.poll() is None
    assert third.proc.poll() is None


def test_a_worker_started_during_a_rotation_waits_for_it(
    ledger_worker: Any, ledger: Any, db: Any
) -> None:
    labels = [f"r{i}" for i in range(300)]
    aiotaskq.enqueue_many(tasks.ledger_async.s(label) for label in labels)
    ((segment,),) = db.execute("SELECT DISTINCT segment FROM aiotaskq_task").fetchall()
    with psycopg.connect(task_db_conninfo()) as rotation:
        # What a rotation does, stopped halfway: the segment locked, its rows moved, not yet
        # truncated nor committed.
        rotation.execute(f"LOCK TABLE aiotaskq_task_ring{segment} IN ACCESS EXCLUSIVE MODE")
        rotation.execute("UPDATE aiotaskq_task SET segment = -1 WHERE segment = %s", (segment,))
        proc = ledger_worker("--concurrency", "50", wait=False)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert proc.proc.poll() is None, proc.log()
            time.sleep(0.1)
        assert not ledger.counts(), "nothing ran while the rotation held the segment"
        rotation.execute(f"TRUNCATE aiotaskq_task_ring{segment}")
        rotation.commit()
    proc.wait_started()
    wait_for(lambda: len(ledger.counts()) == len(labels), timeout=60, what="every task to run")
    assert max(ledger.counts().values()) == 1
    wait_for(
        lambda: db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (0,), timeout=30
    )
