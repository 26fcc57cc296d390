"""examples/asgi_project end to end, as ``scripts/demo`` runs it, with 100 deliveries: real
uvicorn processes, the worker inside the web app, real HTTP to the example's receiver (which
fails, throttles and answers late on purpose), and a SIGTERM at the end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.conftest import ROOT, _admin_conninfo

DELIVERIES = 100


@pytest.fixture
def example_database() -> Iterator[str]:
    # Named like the suite's own databases, so that a run killed before the clean-up below
    # has it dropped by the next run (tests/conftest.py, _drop_stale_databases).
    name = f"aiotaskq_test_example_{os.getpid()}"
    yield name
    with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.mark.timeout(100)
def test_the_demo_delivers_every_webhook_and_stops_cleanly(
    tmp_path: Path, example_database: str
) -> None:
    summary_path = tmp_path / "summary.json"
    logs = tmp_path / "logs"
    run = subprocess.run(
        [
            sys.executable,
            "examples/asgi_project/demo.py",
            *("--deliveries", str(DELIVERIES), "--database", example_database),
            *("--logs", str(logs), "--summary-json", str(summary_path)),
            # The fan-out takes a few seconds; the deadline only bounds a broken run.
            *("--timeout", "60"),
        ],
        cwd=ROOT,
        env=os.environ.copy(),  # the PG* variables of the suite's server
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    server_logs = "".join(
        f"\n--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
        for path in sorted(logs.glob("*.log"))
    )
    output = f"{run.stdout}\n{run.stderr}{server_logs}"
    assert run.returncode == 0, output
    assert run.stdout.splitlines()[-1] == "OK", output

    summary = json.loads(summary_path.read_text())
    # Every delivery reached a final state: delivered, or failed after its retries (with
    # the receiver's default failure rates, about one in a million is).
    assert summary["deliveries"] == DELIVERIES
    assert summary["pending"] == 0
    assert summary["delivered"] + summary["failed"] == DELIVERIES
    assert summary["all_final"]
    # The summary view awaited a task's result: the same counts, by status.
    # The receiver never had more requests at once from one host than the limit per host
    # (max_concurrent over every worker), and reached it.
    assert summary["peak_per_host"]
    assert max(summary["peak_per_host"].values()) <= summary["per_host_limit"]
    assert summary["summary_view"] == {k: summary[k] for k in ("delivered", "failed") if summary[k]}
    # The server stopped on SIGTERM through its lifespan shutdown, and left no task row
    # running or queued; a delivery failed for good is kept as a Failed task.
    assert summary["web_stopped_cleanly"]
    assert summary["tasks"] == {"queued": 0, "running": 0, "failed": summary["failed"]}
    # The receiver processed each delivered webhook exactly once: its repeats (a 500 sent
    # after the work was done) were recognised by their Idempotency-Key. Every request was
    # signed correctly.
    receiver = summary["receiver"]
    assert summary["delivered"] <= receiver["accepted"] <= DELIVERIES
    assert receiver.get("bad_signature", 0) == 0
    assert receiver.get("no_idempotency_key", 0) == 0
    # Every request after a delivery's first was a retry or a snooze; the receiver saw
    # them all, but for those that a network error cut before they reached it.
    assert summary["attempts"] == DELIVERIES + summary["retries"] + summary["snoozes"]
    assert summary["delivered"] <= receiver["requests"] <= summary["attempts"]
