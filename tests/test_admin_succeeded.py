"""The admin's Succeeded view: the results that Django's tasks framework keeps after success,
with their return values; run again (as new tasks) and delete. Through Django's test client
against the real database, and once with a real worker."""

# The admin's fixtures come from tests/test_admin.py; a test names them as parameters.
# ruff: noqa: F811

from __future__ import annotations

import json
import uuid
from typing import Any

import django
import psycopg
import pytest
from django.test import Client

from tests.conftest import wait_for
from tests.test_admin import (
    _admin_setup,  # noqa: F401 (autouse fixture)
    admin,  # noqa: F401 (fixture)
    client_for,
    heard,
    insert,
    listed,
    listener,  # noqa: F401 (fixture)
    make_user,
    messages_of,
    seed,
    state_of,
    url,
)


def _row(db: psycopg.Connection[Any], task_id: uuid.UUID) -> tuple[Any, ...] | None:
    return db.execute(
        "SELECT state, name, queue, priority, args, kwargs, return_value, execute_at <= now()"
        " FROM aiotaskq_task WHERE id = %s",
        (task_id,),
    ).fetchone()


def test_the_view_lists_kept_results_and_no_other_group_does(
    db: psycopg.Connection[Any], admin: Client
) -> None:
    rows = seed(db)
    assert listed(admin.get(url("succeeded"))) == rows["succeeded"]
    for group in ("pending", "future", "active", "dirty", "failed"):
        assert not listed(admin.get(url(group))) & rows["succeeded"], group
    html = admin.get(url("succeeded")).content.decode()
    assert "2 succeeded tasks" in html
    assert "&quot;delivered&quot;: 3}" in html  # the start of the result, in a column
    # The summary counts them, each count a link to the filtered view.
    summary = admin.get("/admin/aiotaskq/tasksummary/").content.decode()
    assert 'href="/admin/aiotaskq/succeededtask/?queue=other&amp;name=app.other">1</a>' in summary


def test_a_kept_result_page_shows_its_return_value_and_times(
    db: psycopg.Connection[Any], admin: Client
) -> None:
    task_id = insert(db, "succeeded")
    response = admin.get(url("succeeded", str(task_id), "change"))
    assert response.status_code == 200
    html = response.content.decode()
    # The whole value, indented and escaped.
    value = '<pre class="aiotaskq-json">{\n  &quot;note&quot;: &quot;&lt;ok &amp; done&gt;&quot;,'
    assert value + "\n  &quot;delivered&quot;: 3\n}</pre>" in html
    for label in ("Return value", "Created", "Started", "Finished", "Kept until"):
        assert f"<label>{label}:</label>" in html, label
    assert "ago)" in html  # finished, by the database's clock
    assert "(in 23 h" in html or "(in 1 d" in html  # kept for a day from now
    # Run again and delete; nothing to revoke, and the page stays read-only.
    assert 'value="Run again now"' in html
    assert 'value="Delete…"' in html
    assert "Revoke" not in html
    assert 'name="_save"' not in html
    # Opened from another group's view, the page moves to this one.
    moved = admin.get(url("failed", str(task_id), "change"), follow=True)
    assert moved.redirect_chain == [(url("succeeded", str(task_id), "change"), 302)]
    assert "it is succeeded now." in messages_of(moved)


def test_run_again_enqueues_new_tasks_and_keeps_the_results(
    db: psycopg.Connection[Any], admin: Client, listener: psycopg.Connection[Any]
) -> None:
    first = insert(db, "succeeded")
    second = insert(db, "succeeded", queue="other", name="app.other")
    db.execute("UPDATE aiotaskq_task SET priority = 7, time_limit = 9.5 WHERE id = %s", (second,))
    response = admin.post(
        url("succeeded"),
        {"action": "requeue", "index": "0", "_selected_action": [str(first), str(second)]},
        follow=True,
    )
    assert "2 tasks queued again as new tasks, due now" in messages_of(response)
    # The kept results are as they were (a finished result does not change).
    for kept in (first, second):
        found = _row(db, kept)
        assert found is not None
        assert found[0] == "succeeded"
        assert found[6] == {"delivered": 3, "note": "<ok & done>"}
    # One new task for each: same name, queue, priority, time limit and arguments, due now.
    new = db.execute(
        "SELECT name, queue, priority, time_limit, args, kwargs, execute_at <= now(), attempt,"
        " return_value FROM aiotaskq_task WHERE state = 'queued' ORDER BY queue"
    ).fetchall()
    arguments = (
        ["https://example.com/hook", {"id": 7}],
        {"payload": {"$datetime": "2026-11-22T18:46:00+00:00"}},
    )
    assert new == [
        ("app.work", "default", 0, None, *arguments, True, 0, None),
        ("app.other", "other", 7, 9.5, *arguments, True, 0, None),
    ]
    # Their queues' workers are woken, as by any enqueue.
    assert sorted(heard(listener)) == [("aiotaskq:default", ""), ("aiotaskq:other", "")]
    assert len(listed(admin.get(url("pending")))) == 2


def test_run_again_of_a_unique_result_writes_nothing_while_another_holds_its_key(
    db: psycopg.Connection[Any], admin: Client
) -> None:
    kept = insert(db, "succeeded")
    db.execute("UPDATE aiotaskq_task SET unique_key = 'k' WHERE id = %s", (kept,))
    first = admin.post(
        url("succeeded"),
        {"action": "requeue", "index": "0", "_selected_action": [str(kept)]},
        follow=True,
    )
    assert "1 task queued again as new tasks" not in messages_of(first)
    assert "1 task queued again as new task, due now" in messages_of(first)
    (new_id,) = db.execute("SELECT task_id FROM aiotaskq_unique WHERE key = 'k'").fetchone() or ()
    assert new_id != kept
    second = admin.post(
        url("succeeded"),
        {"action": "requeue", "index": "0", "_selected_action": [str(kept)]},
        follow=True,
    )
    assert "0 tasks queued again" in messages_of(second)
    assert (
        "1 task not run again: another task with the same unique key is queued or running."
        in messages_of(second)
    )
    assert db.execute("SELECT count(*) FROM aiotaskq_task WHERE state = 'queued'").fetchone() == (
        1,
    )


def test_delete_asks_first_then_deletes_kept_results(
    db: psycopg.Connection[Any], admin: Client
) -> None:
    rows = seed(db)
    kept = sorted(rows["succeeded"])
    data = {"action": "delete_selected", "index": "0", "_selected_action": [str(kept[0])]}
    page = admin.post(url("succeeded"), data).content.decode()
    assert "Yes, delete" in page
    assert "get_result() will no longer find them" in page
    assert state_of(db, kept[0]) == "succeeded"
    data = {"action": "delete_selected", "post": "yes", "_selected_action": [str(kept[0])]}
    response = admin.post(url("succeeded"), data, follow=True)
    assert "1 task deleted." in messages_of(response)
    assert state_of(db, kept[0]) is None
    assert state_of(db, kept[1]) == "succeeded"
    # A failed task cannot be deleted from this view: the SQL re-checks the group.
    failed = sorted(rows["failed"])[0]
    admin.post(
        url("succeeded"),
        {"action": "delete_selected", "post": "yes", "_selected_action": [str(failed)]},
    )
    assert state_of(db, failed) == "failed"


def test_the_actions_take_the_views_permissions(db: psycopg.Connection[Any]) -> None:
    task_id = insert(db, "succeeded")
    requeue = {"action": "requeue", "index": "0", "_selected_action": [str(task_id)]}
    delete = {"action": "delete_selected", "post": "yes", "_selected_action": [str(task_id)]}
    viewer = client_for(make_user("view_succeededtask"))
    html = viewer.get(url("succeeded")).content.decode()
    assert url("succeeded", str(task_id), "change") in html
    assert 'name="action"' not in html
    viewer.post(url("succeeded"), requeue)
    viewer.post(url("succeeded"), delete)
    assert db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (1,)
    changer = client_for(make_user("view_succeededtask", "change_succeededtask"))
    changer.post(url("succeeded"), delete)
    assert state_of(db, task_id) == "succeeded"
    changer.post(url("succeeded"), requeue)
    assert db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (2,)
    deleter = client_for(make_user("view_succeededtask", "delete_succeededtask"))
    deleter.post(url("succeeded"), delete)
    assert state_of(db, task_id) is None


@pytest.mark.skipif(django.VERSION < (6, 0), reason="Django's tasks framework needs 6.0")
def test_a_result_kept_by_a_worker_is_shown_and_run_again(
    db: psycopg.Connection[Any], admin: Client, worker: Any
) -> None:
    from django.tasks import TaskResultStatus

    from tests.app import django_tasks as dj

    worker()
    result = dj.dj_add.enqueue(2, 3)
    task_id = uuid.UUID(result.id)

    def finished() -> bool:
        result.refresh()
        return result.status == TaskResultStatus.SUCCESSFUL

    wait_for(finished, what="the task to succeed")
    assert listed(admin.get(url("succeeded"))) == {task_id}
    html = admin.get(url("succeeded", str(task_id), "change")).content.decode()
    assert '<pre class="aiotaskq-json">5</pre>' in html
    admin.post(
        url("succeeded"), {"action": "requeue", "index": "0", "_selected_action": [str(task_id)]}
    )

    def both_kept() -> set[uuid.UUID]:
        kept = listed(admin.get(url("succeeded")))
        return kept if len(kept) == 2 else set()

    again = (wait_for(both_kept, what="the new task to succeed") - {task_id}).pop()
    rerun = dj.dj_add.get_result(str(again))
    assert (rerun.status, rerun.return_value, rerun.args) == (
        TaskResultStatus.SUCCESSFUL,
        5,
        [2, 3],
    )
    # The first result is as it was.
    assert dj.dj_add.get_result(result.id).return_value == 5
    assert json.loads(json.dumps(rerun.kwargs)) == {}
