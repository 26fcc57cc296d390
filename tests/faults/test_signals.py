"""Fault 3: SIGTERM while the worker is claiming, and repeated SIGTERMs."""

from __future__ import annotations

import signal
from typing import Any

import aiotaskq
from tests.app import tasks
from tests.conftest import wait_for


def test_sigterm_during_claims_loses_nothing(ledger_worker: Any, ledger: Any, db: Any) -> None:
    total = 3000
    labels = [f"c{i}" for i in range(total)]
    for round_ in range(3):
        aiotaskq.enqueue_many(tasks.ledger_async.s(label) for label in labels[round_::3])
        done = len(ledger.lines())
        proc = ledger_worker("--concurrency", "50", "--grace", "10", wait=False)
        # Stop it as soon as it has started claiming: mid-stream of claims.
        wait_for(lambda done=done: len(ledger.lines()) > done, timeout=30, interval=0.001)
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0, proc.log()
        running = db.execute(
            "SELECT count(*) FROM aiotaskq_task WHERE state = 'running'"
        ).fetchone()[0]
        assert running == 0, "nothing left running after a graceful stop"
    # Whatever is left is queued; a last worker runs it.
    last = ledger_worker("--burst", wait=False)
    assert last.wait(60) == 0, last.log()
    counts = ledger.counts()
    assert set(counts) == set(labels), "every task ran"
    assert max(counts.values()) == 1, "none twice"


def test_repeated_sigterm_is_safe(ledger_worker: Any, db: Any) -> None:
    for i in range(20):
        tasks.slow_idempotent.delay(f"r{i}", 60)
    proc = ledger_worker("--grace", "60")
    wait_for(
        lambda: (
            db.execute("SELECT count(*) FROM aiotaskq_task WHERE state = 'running'").fetchone()
            == (20,)
        )
    )
    # Pending signals of one kind merge into one, so each is sent once the last was seen.
    proc.signal(signal.SIGTERM)
    wait_for(lambda: "worker.draining" in proc.log())
    proc.signal(signal.SIGTERM)
    wait_for(lambda: "worker.stopping_now" in proc.log())
    proc.signal(signal.SIGTERM)  # a third one while giving back: changes nothing
    assert proc.wait(30) == 0, proc.log()
    assert db.execute("SELECT state, count(*) FROM aiotaskq_task GROUP BY state").fetchall() == [
        ("queued", 20)
    ]
