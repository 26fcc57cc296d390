"""The admin's actions over large selections and their history: each action is one statement
on the task table whatever the selection holds ("select all" over 10,000 tasks included), and
writes Django's admin history (``LogEntry``) in bulk. Through Django's test client against
the real database; a race with a worker's claim is frozen with a real second connection."""

# The admin's fixtures come from tests/test_admin.py; a test names them as parameters.
# ruff: noqa: F811

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.db import connection, connections
from django.test import Client
from django.test.utils import CaptureQueriesContext

from aiotaskq.db import control
from aiotaskq.db.listen import CONTROL_CHANNEL
from tests.conftest import task_db_conninfo, wait_for
from tests.test_admin import (
    _admin_setup,  # noqa: F401 (autouse fixture)
    admin,  # noqa: F401 (fixture)
    heard,
    insert,
    listener,  # noqa: F401 (fixture)
    messages_of,
    seed,
    state_of,
    url,
)

MANY = 10_000


def _history() -> list[tuple[str, str, int, str]]:
    """Every history entry: the task's group, its id, the flag and the message."""
    return sorted(
        (e.content_type.model, e.object_id, e.action_flag, e.change_message)
        for e in LogEntry.objects.select_related("content_type")
    )


def test_every_action_writes_the_admins_history(db: psycopg.Connection[Any], admin: Client) -> None:
    rows = seed(db)
    failed, dirty, pending, active, kept = (
        sorted(rows[group])[0] for group in ("failed", "dirty", "pending", "active", "succeeded")
    )

    def act(group: str, action: str, task_id: uuid.UUID) -> None:
        data = {"action": action, "post": "yes", "_selected_action": [str(task_id)]}
        assert admin.post(url(group), data).status_code == 302

    act("failed", "requeue", failed)
    act("dirty", "delete_selected", dirty)
    act("pending", "revoke", pending)
    act("active", "revoke", active)
    act("succeeded", "requeue", kept)
    (new,) = (
        row[0]
        for row in db.execute(
            "SELECT id FROM aiotaskq_task WHERE state = 'queued' AND execute_at <= now()"
            " AND id <> ALL(%s)",
            (list(rows["pending"] | {failed}),),
        )
    )
    assert _history() == sorted(
        [
            ("failedtask", str(failed), CHANGE, "Run again now: queued again, due now."),
            ("dirtytask", str(dirty), DELETION, ""),
            ("pendingtask", str(pending), DELETION, "Revoked before running."),
            (
                "activetask",
                str(active),
                CHANGE,
                "Revoked while running: its worker was told to cancel it.",
            ),
            (
                "succeededtask",
                str(kept),
                CHANGE,
                "Run again now as a new task with the same arguments.",
            ),
            (
                "pendingtask",
                str(new),
                ADDITION,
                "Run again now: a new task with the arguments of a succeeded one.",
            ),
        ]
    )
    entries = list(LogEntry.objects.all())
    assert {e.user.username for e in entries} == {entries[0].user.username}
    assert all(e.user.is_superuser for e in entries)
    # As Django shows them: a task's name and id, and a link while the task exists.
    (requeued,) = [e for e in entries if e.object_id == str(failed)]
    assert requeued.object_repr in (f"app.work [{failed}]", f"app.other [{failed}]")
    assert requeued.get_admin_url() == url("failed", str(failed), "change")
    # A task left alone (no longer in the group) writes no history.
    LogEntry.objects.all().delete()
    act("failed", "requeue", failed)  # it is pending now
    assert _history() == []
    # Django's "recent actions" on the index page lists them.
    act("failed", "delete_selected", sorted(rows["failed"])[1])
    assert "Failed task" in admin.get("/admin/").content.decode()


def _bulk_insert(db: psycopg.Connection[Any], group: str, n: int) -> None:
    """``n`` rows of ``group`` over two queues, in one statement."""
    # state, execute_at, worker_id, started_at, alive_at, finished_at, return_value, expires_at
    columns = {
        "pending": "'queued', now() - interval '1 minute', NULL, NULL, NULL, NULL, NULL, NULL",
        "failed": "'failed', now(), 'w', now(), now(), now(), NULL, NULL",
        "dirty": "'running', now(), 'w', now(), now() - interval '1 hour', NULL, NULL, NULL",
        "succeeded": "'succeeded', now(), 'w', now(), now(), now(), to_jsonb(i),"
        " now() + interval '1 day'",
    }[group]
    db.execute(
        "INSERT INTO aiotaskq_task (id, name, queue, args, state, execute_at, worker_id,"
        " started_at, alive_at, finished_at, return_value, expires_at)"
        " SELECT gen_random_uuid(), 'app.bulk', (ARRAY['default', 'other'])[1 + i %% 2],"
        " jsonb_build_array(i), " + columns + " FROM generate_series(1, %s) AS i",
        (n,),
    )


@pytest.mark.parametrize(
    ("group", "action", "left", "flag"),
    [
        ("pending", "revoke", None, DELETION),
        ("failed", "requeue", "queued", CHANGE),
        ("dirty", "requeue", "queued", CHANGE),
        ("failed", "delete_selected", None, DELETION),
        ("dirty", "delete_selected", None, DELETION),
        ("succeeded", "delete_selected", None, DELETION),
        ("succeeded", "requeue", "succeeded", CHANGE),
    ],
)
def test_select_all_over_a_backlog_is_one_statement(
    db: psycopg.Connection[Any],
    admin: Client,
    listener: psycopg.Connection[Any],
    group: str,
    action: str,
    left: str | None,
    flag: int,
) -> None:
    _bulk_insert(db, group, MANY)
    one = db.execute("SELECT id FROM aiotaskq_task LIMIT 1").fetchone()
    assert one is not None
    data = {"action": action, "post": "yes", "select_across": "1", "_selected_action": [one[0]]}
    with CaptureQueriesContext(connection) as queries:
        response = admin.post(url(group), data, follow=True)
    assert f"{MANY} tasks" in messages_of(response)
    statements = [q["sql"] for q in queries.captured_queries]
    on_tasks = [s for s in statements if "aiotaskq_task" in s]
    # One read of the selection and one write of it all (the wake-up of the queues is a
    # statement of its own, on no table). New tasks are written by the enqueue path, which
    # may COPY them past Django's cursor: their rows are counted below.
    writes = [s for s in on_tasks if not s.lstrip().upper().startswith("SELECT")]
    reads = [s for s in on_tasks if '"aiotaskq_task"."id" AS "pk"' in s]
    assert len(reads) == 1, reads
    if group == "succeeded" and action == "requeue":
        assert len(writes) <= 1, writes
    else:
        assert len(writes) == 1, writes
    history = [s for s in statements if "django_admin_log" in s and "INSERT" in s]
    assert 1 <= len(history) <= 2, history  # bulk: one INSERT, or two for the new tasks
    assert len(statements) < 25, statements
    # Every task acted on, and in the history.
    states = dict(
        db.execute(
            "SELECT state, count(*) FROM aiotaskq_task WHERE name = 'app.bulk' GROUP BY state"
        ).fetchall()
    )
    assert states == ({} if left is None else {left: MANY}) | (
        {"queued": MANY} if action == "requeue" and group == "succeeded" else {}
    )
    assert LogEntry.objects.filter(action_flag=flag).count() == MANY
    # Queues woken once each when tasks were queued (PostgreSQL folds the rest).
    if left == "queued" or (group == "succeeded" and action == "requeue"):
        assert sorted(heard(listener)) == [("aiotaskq:default", ""), ("aiotaskq:other", "")]


def test_revoking_many_running_tasks_is_one_statement_and_one_notice_each(
    db: psycopg.Connection[Any], admin: Client, listener: psycopg.Connection[Any]
) -> None:
    running = {insert(db, "active", queue=q) for q in ("default", "other") for _ in range(3)}
    queued = {insert(db, "pending") for _ in range(3)}
    with CaptureQueriesContext(connection) as queries:
        response = admin.post(
            url("active"),
            {"action": "revoke", "post": "yes", "select_across": "1", "_selected_action": "x"},
            follow=True,
        )
    assert "6 tasks running: workers were told to cancel them." in messages_of(response)
    revokes = [q["sql"] for q in queries.captured_queries if "revoke:" in q["sql"]]
    assert len(revokes) == 1
    notices = heard(listener)
    assert sorted(notices) == sorted((CONTROL_CHANNEL, f"revoke:{t}") for t in running)
    assert all(state_of(db, t) == "running" for t in running)
    assert all(state_of(db, t) == "queued" for t in queued)


def _in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """``work`` in a thread of its own (its own Django connection, closed at the end)."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(work())
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def test_a_task_claimed_while_it_is_revoked_is_announced(
    db: psycopg.Connection[Any], listener: psycopg.Connection[Any]
) -> None:
    claimed, untouched = insert(db, "pending"), insert(db, "pending")
    with psycopg.connect(task_db_conninfo()) as worker:
        # A worker's claim of one of them, not yet committed: it holds the row.
        worker.execute(
            "UPDATE aiotaskq_task SET state = 'running', worker_id = 'w-claim', attempt = 1,"
            " started_at = now(), alive_at = now() WHERE id = %s",
            (claimed,),
        )
        thread, out = _in_thread(lambda: control.revoke_many_sync([claimed, untouched], "default"))

        def revoke_waits() -> bool:
            row = db.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE '%%revoke:%%'"
            ).fetchone()
            return row is not None and row[0] == 1

        wait_for(revoke_waits, what="the revoke to wait for the claim's row lock")
        worker.commit()
    thread.join(timeout=30)
    assert not thread.is_alive()
    (done,) = out
    # The claimed task was not deleted under its worker: it was announced to it.
    assert done == control.Revocation(deleted=(untouched,), announced=(claimed,))
    assert state_of(db, claimed) == "running"
    assert state_of(db, untouched) is None
    assert heard(listener) == [(CONTROL_CHANNEL, f"revoke:{claimed}")]


async def test_revoke_many_and_its_one_task_form_off_the_event_loop(
    db: psycopg.Connection[Any], listener: psycopg.Connection[Any]
) -> None:
    queued, running, failed = insert(db, "pending"), insert(db, "active"), insert(db, "failed")
    done = await control.revoke_many([queued, running, failed, uuid.uuid4()])
    assert done == control.Revocation(deleted=(queued,), announced=(running,))
    assert heard(listener) == [(CONTROL_CHANNEL, f"revoke:{running}")]
    assert await control.revoke(running) == (False, True)
    assert await control.revoke(failed) == (False, False)
    assert state_of(db, failed) == "failed"
