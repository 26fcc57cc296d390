"""Faults 4, 5 and 6: connections terminated, PostgreSQL restarted, a notification lost."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from typing import Any

import pytest

import aiotaskq
from tests.app import tasks
from tests.conftest import executions, wait_for


def _terminate_all_but(db: Any, pid: int) -> int:
    rows = db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> %s AND backend_type = 'client backend'",
        (pid,),
    ).fetchall()
    return len(rows)


def test_every_worker_connection_terminated_mid_load(
    ledger_worker: Any, ledger: Any, db: Any
) -> None:
    total = 4000
    labels = [f"t{i}" for i in range(total)]
    aiotaskq.enqueue_many(
        (tasks.ledger_async if i % 2 else tasks.ledger_sync).s(label)
        for i, label in enumerate(labels)
    )
    proc = ledger_worker("--concurrency", "100", "--threads", "4")
    me = db.info.backend_pid
    terminated = 0
    for _ in range(5):
        # Listener, pool and the Django connections of the task threads, mid-load.
        done = len(ledger.counts())
        wait_for(lambda done=done: len(ledger.counts()) > done + 200, timeout=60)
        terminated += _terminate_all_but(db, me)
    wait_for(lambda: len(ledger.counts()) == total, timeout=120)
    counts = ledger.counts()
    assert max(counts.values()) == 1, "no task ran twice"
    wait_for(
        lambda: db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (0,), timeout=30
    )
    assert terminated >= 10
    assert proc.proc.poll() is None, "the worker kept running"
    assert "listener.reconnected" in proc.log()


def _restartable_cluster() -> tuple[str, str] | None:
    if os.environ.get("AIOTASKQ_TEST_RESTART_POSTGRES") != "1":
        return None
    if shutil.which("pg_ctlcluster") is None or shutil.which("pg_lsclusters") is None:
        return None
    port = os.environ.get("PGPORT", "5432")
    for line in subprocess.run(
        ["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True
    ).stdout.splitlines():
        version, cluster, cluster_port, *_ = line.split()
        if cluster_port == port:
            return version, cluster
    return None


@pytest.mark.skipif(
    _restartable_cluster() is None,
    reason="restarts the local PostgreSQL cluster: runs only with "
    "AIOTASKQ_TEST_RESTART_POSTGRES=1 and a Debian pg_ctlcluster cluster on PGPORT "
    "(.ci/run sets it on machines where the suite owns the server)",
)
def test_postgres_restarted_under_load(ledger_worker: Any, ledger: Any, db: Any) -> None:
    version, cluster = _restartable_cluster()  # type: ignore[misc]
    total = 3000
    labels = [f"p{i}" for i in range(total)]
    aiotaskq.enqueue_many(tasks.ledger_async.s(label) for label in labels)
    proc = ledger_worker("--concurrency", "50")
    wait_for(lambda: len(ledger.counts()) > 300, timeout=60)
    db.close()
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, "restart", "-m", "fast"],
        check=True,
        timeout=120,
    )
    wait_for(lambda: len(ledger.counts()) == total, timeout=180)
    assert max(ledger.counts().values()) == 1
    assert "listener.reconnected" in proc.log()
    assert proc.proc.poll() is None


def test_a_lost_notification_is_made_up_by_the_safety_poll(worker: Any, db: Any) -> None:
    worker(poll=1.5)
    # A row written without its NOTIFY: as if the notification had been lost.
    db.execute(
        "INSERT INTO aiotaskq_task (id, name, args) VALUES (%s, 'tests.app.tasks.record', "
        "'[\"unannounced\"]')",
        (uuid.uuid4(),),
    )
    started = time.monotonic()
    wait_for(lambda: executions("unannounced"), timeout=10)
    assert time.monotonic() - started < 1.5 + 1.0, "within the safety poll"
