"""The example's resumable CSV export (examples/asgi_project/webhooks/exports.py) under a
SIGKILL: the worker writing it is killed halfway, another rescues the Dirty task, and the
rescued attempt resumes from the checkpoint; the file holds every delivery exactly once."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.conftest import ROOT, _admin_conninfo, wait_for

EXAMPLE = ROOT / "examples" / "asgi_project"
DELIVERIES = 6000


@pytest.fixture
def example(tmp_path: Path) -> Iterator[dict[str, Any]]:
    name = f"aiotaskq_test_export_{os.getpid()}"
    with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    env = {
        **os.environ,
        "EXAMPLE_DATABASE": name,
        "EXPORT_DIR": str(tmp_path / "exports"),
        "AIOTASKQ_DIRTY_AFTER": "2",
        "DJANGO_SETTINGS_MODULE": "project.settings",
    }
    env.pop("PYTHONPATH", None)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=EXAMPLE, env=env, check=True
    )
    workers: list[subprocess.Popen[bytes]] = []
    yield {"database": name, "env": env, "workers": workers, "logs": tmp_path}
    for proc in workers:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _connect(example: dict[str, Any]) -> psycopg.Connection[Any]:
    from tests.conftest import task_db_conninfo

    info = psycopg.conninfo.conninfo_to_dict(task_db_conninfo())
    info["dbname"] = example["database"]
    return psycopg.connect(psycopg.conninfo.make_conninfo(**info), autocommit=True)


def _worker(example: dict[str, Any], pause: float) -> subprocess.Popen[bytes]:
    with (example["logs"] / f"worker-{len(example['workers'])}.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "aiotaskq", "run", "--queues", "exports"],
            cwd=EXAMPLE,
            env={**example["env"], "EXPORT_CHUNK_PAUSE": str(pause)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    example["workers"].append(proc)
    return proc


def _logs(example: dict[str, Any]) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(example["logs"].glob("*.log")))


@pytest.mark.timeout(120)
def test_a_killed_export_resumes_from_its_checkpoint_and_writes_every_row_once(
    example: dict[str, Any],
) -> None:
    with _connect(example) as db:
        db.execute(
            "INSERT INTO webhooks_subscription (target_url, secret, active, created_at) "
            "VALUES ('http://127.0.0.1:9/hook', 's', true, now())"
        )
        db.execute(
            "INSERT INTO webhooks_event (kind, payload, created_at) "
            "VALUES ('order.paid', '{}', now())"
        )
        db.execute(
            "INSERT INTO webhooks_delivery (id, event_id, subscription_id, status, attempts, "
            "retries, snoozes, last_error, created_at, updated_at) "
            "SELECT gen_random_uuid(), (SELECT id FROM webhooks_event), "
            "(SELECT id FROM webhooks_subscription), 'delivered', 1, 0, 0, '', now(), now() "
            "FROM generate_series(1, %s)",
            (DELIVERIES,),
        )
        started = subprocess.run(
            [sys.executable, "manage.py", "start_export"],
            cwd=EXAMPLE,
            env=example["env"],
            capture_output=True,
            text=True,
            check=True,
        )
        export = json.loads(started.stdout)
        path = Path(export["path"])

        first = _worker(example, pause=0.25)

        def halfway() -> Any:
            row = db.execute(
                "SELECT checkpoint, progress FROM aiotaskq_task WHERE id = %s", (export["task"],)
            ).fetchone()
            return row if row and row[0] and row[0]["rows"] >= DELIVERIES // 2 else None

        checkpoint, _ = wait_for(halfway, timeout=60, what="the export to reach halfway")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert checkpoint["rows"] < DELIVERIES
        # The progress was written with the heartbeat (at most a beat behind the checkpoint).
        progress = wait_for(
            lambda: db.execute(
                "SELECT progress FROM aiotaskq_task WHERE id = %s", (export["task"],)
            ).fetchone()[0],
            what="the progress",
        )
        assert progress["total"] == DELIVERIES
        assert "deliveries" in progress["message"]
        # What the killed attempt was writing when it died: a chunk past the checkpoint, cut
        # off mid-row. The next attempt must drop it, not keep it.
        with path.open("ab") as out:
            out.write(b"00000000-0000-0000-0000-000000000000,1,1,deliv")

        _worker(example, pause=0)  # rescues the Dirty task after DIRTY_AFTER, and resumes

        def done() -> Any:
            row = db.execute(
                "SELECT status, rows FROM webhooks_export WHERE id = %s", (export["export"],)
            ).fetchone()
            return row if row and row[0] == "done" else None

        assert wait_for(done, timeout=90, what="the export to finish") == ("done", DELIVERIES)
        ids = {r[0] for r in db.execute("SELECT id::text FROM webhooks_delivery").fetchall()}
        # The task succeeded: once its worker acknowledges it (just after the export row says
        # done), its row and its checkpoint are gone.
        wait_for(
            lambda: (
                db.execute(
                    "SELECT count(*) FROM aiotaskq_task WHERE id = %s", (export["task"],)
                ).fetchone()
                == (0,)
            ),
            what="the export's task to be acknowledged",
        )

    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["delivery", "event", "subscription", "status", "attempts", "response_code"]
    written = [r[0] for r in rows[1:]]
    assert len(written) == DELIVERIES, _logs(example)[-3000:]
    assert set(written) == ids  # every delivery, once each
    logs = _logs(example)
    assert "task.rescued" in logs, logs[-3000:]
