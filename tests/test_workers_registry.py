"""The registry of workers: ``aiotaskq workers``, ``aiotaskq health``, the admin's Workers
view and the Dirty view's lost worker, with real worker processes and real signals."""

from __future__ import annotations

import datetime as dt
import json
import signal
import socket
import subprocess
from collections.abc import Callable
from typing import Any

import psycopg

from aiotaskq.db import workers
from tests.app import tasks
from tests.conftest import WorkerProcess, run_cli, task_db_conninfo, wait_for

HOST = socket.gethostname()


def _listed(*extra: str) -> list[dict[str, Any]]:
    out = run_cli("workers", "--json", *extra)
    doc = json.loads(out.stdout)
    assert list(doc) == ["workers"]
    rows: list[dict[str, Any]] = doc["workers"]
    return rows


def _by_pid(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {row["pid"]: row for row in rows}


def _health(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("health", *args, check=False)


def test_live_workers_are_listed_with_their_queues_and_leave_on_a_clean_stop(
    worker: Callable[..., WorkerProcess],
) -> None:
    capped = worker("--queues", "default,a:2", "--concurrency", "10")
    plain = worker("--concurrency", "5")
    rows = wait_for(
        lambda: len(r := _by_pid(_listed())) == 2 and r, what="both workers in the registry"
    )
    one, two = rows[capped.pid], rows[plain.pid]
    assert set(one) == {
        "id",
        "host",
        "pid",
        "queues",
        "concurrency",
        "in_flight",
        "started_at",
        "alive_at",
    }
    assert one["host"] == two["host"] == HOST
    assert one["queues"] == [{"name": "default", "cap": None}, {"name": "a", "cap": 2}]
    assert two["queues"] == [{"name": "default", "cap": None}]
    assert (one["concurrency"], two["concurrency"]) == (10, 5)
    assert one["in_flight"] == two["in_flight"] == 0
    assert one["id"] in capped.log()
    assert one["id"].startswith(f"{HOST}:{capped.pid}:")
    started = dt.datetime.fromisoformat(one["started_at"])
    assert started <= dt.datetime.fromisoformat(one["alive_at"])
    assert started.tzinfo is not None

    text = run_cli("workers").stdout
    assert "default,a:2" in text
    assert one["id"] in text
    assert two["id"] in text

    capped.signal(signal.SIGTERM)
    assert capped.wait(30) == 0
    # Gone at once: not after DIRTY_AFTER, and not lost either.
    assert [r["pid"] for r in _listed("--all")] == [plain.pid]


def test_a_killed_worker_is_lost_after_dirty_after_and_health_says_so(
    worker: Callable[..., WorkerProcess], db: Any
) -> None:
    from tests.test_admin import client_for, make_user

    proc = worker("--concurrency", "4")
    wait_for(lambda: _listed(), what="the worker in the registry")
    ok = _health()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith(f"ok: 1 worker on host {HOST} alive (last heartbeat ")
    assert _health("--queue", "default").returncode == 0
    other = _health("--queue", "other")
    assert other.returncode == 1
    assert other.stdout.strip() == (
        "not alive: no worker of queue 'other' is registered (none started, or every one stopped)"
    )

    result = tasks.sleep_then_record.delay("long", 120)
    wait_for(lambda: _listed()[0]["in_flight"] == 1, what="the task in flight")
    proc.signal(signal.SIGKILL)
    proc.wait(10)
    wait_for(lambda: not _listed(), timeout=20, what="the killed worker to leave the live list")
    (lost,) = _listed("--all")
    assert lost["pid"] == proc.pid
    assert lost["alive"] is False
    down = _health()
    assert down.returncode == 1
    assert down.stdout.startswith(f"not alive: the last heartbeat of a worker on host {HOST} was")
    assert "more than DIRTY_AFTER (3 s)" in down.stdout
    assert "lost" in run_cli("workers", "--all").stdout

    # The Dirty view names the lost worker, in its list and on the task's page.
    wait_for(
        lambda: db.execute(
            "SELECT alive_at < now() - interval '3 seconds' FROM aiotaskq_task WHERE id = %s",
            (result.id,),
        ).fetchone()[0],
        what="the task to turn Dirty",
    )
    admin = client_for(make_user(superuser=True))
    listing = admin.get("/admin/aiotaskq/dirtytask/").content.decode()
    assert lost["id"] in listing
    assert "lost\u00a0" in listing, listing[
        listing.find(lost["id"]) - 200 : listing.find(lost["id"]) + 200
    ]
    page = admin.get(f"/admin/aiotaskq/dirtytask/{result.id}/change/").content.decode()
    assert f"on worker {lost['id']} (host {HOST}, pid {proc.pid}), lost: its last heartbeat" in (
        page
    )
    workers_page = admin.get("/admin/aiotaskq/worker/").content.decode()
    assert lost["id"] in workers_page
    assert "icon-no" in workers_page


def test_a_blocked_event_loop_fails_the_health_check_until_it_runs_again(
    worker: Callable[..., WorkerProcess],
) -> None:
    proc = worker()
    wait_for(lambda: _health().returncode == 0, what="a healthy worker")
    tasks.block_loop.delay("blocked", 12)
    down = wait_for(
        lambda: (h := _health()).returncode == 1 and h, timeout=11, what="health to fail"
    )
    assert "its event loop is blocked" in down.stdout
    wait_for(lambda: _health().returncode == 0, timeout=30, what="health to come back")
    assert "loop.stalled" in proc.log()


def test_no_worker_at_all() -> None:
    assert run_cli("workers").stdout.strip() == "(no worker alive)"
    assert _listed() == []
    down = _health()
    assert down.returncode == 1
    assert down.stdout.strip() == (
        f"not alive: no worker on host {HOST} is registered (none started, or every one stopped)"
    )
    assert _health("--host", "elsewhere").stdout.startswith(
        "not alive: no worker on host elsewhere"
    )
    bad = _health("--queue", "no spaces")
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1, bad.stderr


async def test_a_deleted_row_comes_back_and_day_old_lost_rows_are_pruned(
    worker: Callable[..., WorkerProcess], db: Any
) -> None:
    proc = worker()
    wait_for(lambda: _listed(), what="the worker in the registry")
    db.execute("DELETE FROM aiotaskq_worker")
    wait_for(lambda: _listed(), what="the row written back by the next beat")
    db.execute(
        "INSERT INTO aiotaskq_worker (id, host, pid, queues, concurrency, started_at, alive_at) "
        "VALUES ('old', 'h', 1, '[]', 1, now() - interval '3 days', now() - interval '25 hours'),"
        " ('recent', 'h', 2, '[]', 1, now() - interval '3 days', now() - interval '23 hours')"
    )
    async with await psycopg.AsyncConnection.connect(task_db_conninfo(), autocommit=True) as conn:
        assert await workers.prune(conn) == 1
    left = {row[0] for row in db.execute("SELECT pid FROM aiotaskq_worker").fetchall()}
    assert left == {2, proc.pid}


async def test_the_beats_leave_the_registry_small_without_any_vacuum(db: Any) -> None:
    # Each beat rewrites its row. The rows are updated in place (HOT: no indexed column
    # changes, and fillfactor 50 leaves room on the page), and the page's dead versions are
    # pruned by the next beats themselves, so the table does not grow where autovacuum is
    # off or held back by a long transaction. An index on alive_at would break this.
    started = dt.datetime.now(dt.UTC)
    records = [
        workers.WorkerRecord(
            id=f"{HOST}:{pid}:beats",
            host=HOST,
            pid=pid,
            queues={"default": None, "emails": 4},
            concurrency=200,
            started_at=started,
        )
        for pid in range(8)
    ]
    async with await psycopg.AsyncConnection.connect(task_db_conninfo(), autocommit=True) as conn:
        for beat in range(2_500):  # 20,000 beats: eight workers for over five hours
            for record in records:
                await workers.beat(conn, record, in_flight=beat)
    heap, index = db.execute(
        "SELECT pg_relation_size('aiotaskq_worker'), pg_relation_size('aiotaskq_worker_pkey')"
    ).fetchone()
    assert heap <= 16 * 8192, f"the registry grew to {heap} bytes"
    assert index <= 4 * 8192, f"its primary key grew to {index} bytes"
    assert {row[0] for row in db.execute("SELECT in_flight FROM aiotaskq_worker")} == {2_499}
