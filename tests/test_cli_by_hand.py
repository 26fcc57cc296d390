"""``aiotaskq retry`` and ``aiotaskq delete`` for Failed and Dirty tasks."""

from __future__ import annotations

import subprocess
import uuid
from typing import Any

from tests.conftest import run_cli


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, check=False)


def _insert(db: Any, state: str, alive: str = "now()", queue: str = "default") -> uuid.UUID:
    task_id = uuid.uuid4()
    db.execute(
        f"INSERT INTO aiotaskq_task (id, name, queue, state, attempt, worker_id, alive_at) "
        f"VALUES (%s, 'tests.app.tasks.record', %s, %s, 1, 'w', {alive})",
        (task_id, queue, state),
    )
    return task_id


def _states(db: Any) -> dict[uuid.UUID, str]:
    return dict(db.execute("SELECT id, state FROM aiotaskq_task").fetchall())


def test_retry_failed_and_dirty_by_hand(db: Any) -> None:
    failed = _insert(db, "failed")
    dirty = _insert(db, "running", "now() - interval '1 hour'")
    active = _insert(db, "running", "now() + interval '1 hour'")  # fresh, however slow the CLI
    other_queue = _insert(db, "failed", queue="other")
    out = _cli("retry", "--failed", "--queue", "default")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1 task queued again"
    assert _states(db) == {
        failed: "queued",
        dirty: "running",
        active: "running",
        other_queue: "failed",
    }
    out = _cli("retry", "--dirty")
    assert out.stdout.strip() == "1 task queued again"
    assert _states(db)[dirty] == "queued"
    assert _states(db)[active] == "running", "an active task is never touched"
    (worker_id,) = db.execute(
        "SELECT worker_id FROM aiotaskq_task WHERE id = %s", (dirty,)
    ).fetchone()
    assert worker_id is None


def test_delete_by_id_and_refusal_without_a_selection(db: Any) -> None:
    failed = _insert(db, "failed")
    active = _insert(db, "running", "now() + interval '1 hour'")
    out = _cli("delete", str(failed), str(active))
    assert out.stdout.strip() == "1 task deleted"
    assert _states(db) == {active: "running"}
    out = _cli("delete")
    assert out.returncode == 2
    assert "name task ids, or pass --failed and/or --dirty" in out.stderr
