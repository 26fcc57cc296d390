"""The admin, through Django's test client against the real database: the six groups list
the right rows, the actions change the rows through the SQL of the CLI (and NOTIFY the
workers) in one statement for any selection and write the admin's history, permissions are
the admin's, and a large table is never counted."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from psycopg import sql

from aiotaskq.db.listen import CONTROL_CHANNEL, channel_for
from aiotaskq.db.status import queue_status
from tests.conftest import task_db_conninfo

GROUPS = ("pending", "future", "active", "dirty", "failed", "succeeded")
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/app/tasks.py", line 12, in work\n'
    "    response = await client.post(url, json=payload)\n"
)


@pytest.fixture(autouse=True)
def _admin_setup(db: psycopg.Connection[Any]) -> Iterator[None]:
    """No users or sessions left from another test; a Dirty threshold no slow test crosses."""
    db.execute("TRUNCATE auth_user, django_session, django_admin_log CASCADE")
    with override_settings(AIOTASKQ={**settings.AIOTASKQ, "DIRTY_AFTER": 600.0}):
        yield


def insert(
    db: psycopg.Connection[Any],
    group: str,
    *,
    queue: str = "default",
    name: str = "app.work",
    error: tuple[str, str] = ("builtins.OSError", "<boom & co>"),
) -> uuid.UUID:
    """One row in ``group``, as the worker's statements would have left it; a failed one
    with two attempts' errors of type and message ``error``; a succeeded one (a kept result
    of Django's tasks framework) with its return value, kept for a day."""
    task_id = uuid.uuid4()
    # state, execute_at, attempt, worker_id, started_at, alive_at, finished_at, errors,
    # return_value, expires_at
    columns: dict[str, str] = {
        "pending": "'queued', now() - interval '1 minute', 0, NULL, NULL, NULL, NULL, '[]',"
        " NULL, NULL",
        "future": "'queued', now() + interval '1 hour', 0, NULL, NULL, NULL, NULL, '[]',"
        " NULL, NULL",
        "active": "'running', now(), 1, 'w-live', now(), now(), NULL, '[]', NULL, NULL",
        "dirty": "'running', now(), 1, 'w-dead', now() - interval '2 hours', "
        "now() - interval '1 hour', NULL, '[]', NULL, NULL",
        "failed": "'failed', now(), 2, 'w-1', now(), now(), now(), %(errors)s, NULL, NULL",
        "succeeded": "'succeeded', now() - interval '1 minute', 1, 'w-ok',"
        " now() - interval '50 seconds', now() - interval '40 seconds',"
        " now() - interval '40 seconds', '[]', %(value)s, now() + interval '1 day'",
    }
    kind, message = error
    traceback = TRACEBACK + f"{kind.rsplit('.', 1)[-1]}: {message}\n"
    errors = json.dumps(
        [
            {
                "attempt": n,
                "outcome": "retry 2 in 4.0 s" if n == 1 else "failed: no retries left",
                "type": kind,
                "message": message,
                "traceback": traceback,
                "worker_id": "w-1",
                "at": "2026-11-22T18:46:00+00:00",
            }
            for n in (1, 2)
        ]
    )
    db.execute(
        "INSERT INTO aiotaskq_task (id, name, queue, args, kwargs, state, execute_at, attempt,"
        " worker_id, started_at, alive_at, finished_at, errors, return_value, expires_at)"
        " VALUES (%(id)s, %(name)s, %(queue)s, %(args)s, %(kwargs)s, " + columns[group] + ")",
        {
            "id": task_id,
            "name": name,
            "queue": queue,
            "args": json.dumps(["https://example.com/hook", {"id": 7}]),
            "kwargs": json.dumps({"payload": {"$datetime": "2026-11-22T18:46:00+00:00"}}),
            "errors": errors,
            "value": json.dumps({"delivered": 3, "note": "<ok & done>"}),
        },
    )
    return task_id


def seed(db: psycopg.Connection[Any]) -> dict[str, set[uuid.UUID]]:
    """Two rows of each group on two queues."""
    return {
        group: {insert(db, group), insert(db, group, queue="other", name="app.other")}
        for group in GROUPS
    }


def make_user(*perms: str, staff: bool = True, superuser: bool = False) -> User:
    user = User.objects.create_user(
        f"u{uuid.uuid4().hex[:8]}", is_staff=staff, is_superuser=superuser
    )
    for perm in perms:
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label="aiotaskq", codename=perm)
        )
    return user


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def admin() -> Client:
    return client_for(make_user(superuser=True))


def url(group: str, *rest: str) -> str:
    return "/admin/aiotaskq/" + group + "task/" + "".join(f"{r}/" for r in rest)


def listed(response: Any) -> set[uuid.UUID]:
    assert response.status_code == 200, response.status_code
    html = response.content.decode()
    return {
        uuid.UUID(v) for v in re.findall(r'name="_selected_action" value="([0-9a-f-]{36})"', html)
    }


def state(db: psycopg.Connection[Any], task_id: uuid.UUID) -> tuple[Any, ...] | None:
    return db.execute(
        "SELECT state, worker_id, execute_at <= now(), jsonb_array_length(errors)"
        " FROM aiotaskq_task WHERE id = %s",
        (task_id,),
    ).fetchone()


@pytest.fixture
def listener() -> Iterator[psycopg.Connection[Any]]:
    """A connection LISTENing where a worker of the queues "default" and "other" does."""
    with psycopg.connect(task_db_conninfo(), autocommit=True) as conn:
        for channel in (channel_for("default"), channel_for("other"), CONTROL_CHANNEL):
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        yield conn


def heard(conn: psycopg.Connection[Any], timeout: float = 0.5) -> list[tuple[str, str]]:
    return [(n.channel, n.payload) for n in conn.notifies(timeout=timeout)]


def messages_of(response: Any) -> str:
    """The admin's messages on the page (after ``follow=True``)."""
    html = response.content.decode()
    found = re.search(r'<ul class="messagelist">(.*?)</ul>', html, re.DOTALL)
    return " | ".join(re.findall(r"<li[^>]*>(.*?)</li>", found.group(1))) if found else ""


def state_of(db: psycopg.Connection[Any], task_id: uuid.UUID) -> str | None:
    found = state(db, task_id)
    return None if found is None else str(found[0])


# -- the groups ----------------------------------------------------------------------------


def test_each_view_lists_its_group_and_nothing_else(
    db: psycopg.Connection[Any], admin: Client
) -> None:
    rows = seed(db)
    for group in GROUPS:
        assert listed(admin.get(url(group))) == rows[group], group


def test_the_groups_are_those_of_aiotaskq_status(
    db: psycopg.Connection[Any], admin: Client
) -> None:
    seed(db)
    insert(db, "failed", queue="other")
    status = asyncio.run(queue_status(600.0))
    html = admin.get("/admin/aiotaskq/tasksummary/").content.decode()
    for row in status:
        for group in GROUPS:
            in_admin = sum(
                len(listed(admin.get(url(group), {"queue": row.queue, "name": name})))
                for name in ("app.work", "app.other")
            )
            assert in_admin == getattr(row, group), (row.queue, group)
    # The summary links each count to the group's list, filtered on its queue and name.
    assert 'href="/admin/aiotaskq/failedtask/?queue=other&amp;name=app.work">1</a>' in html
    assert 'href="/admin/aiotaskq/pendingtask/?queue=default&amp;name=app.work">1</a>' in html


def test_filters_and_search(db: psycopg.Connection[Any], admin: Client) -> None:
    rows = seed(db)
    (other,) = [t for t in rows["failed"] if _queue(db, t) == "other"]
    assert listed(admin.get(url("failed"), {"queue": "other"})) == {other}
    assert listed(admin.get(url("failed"), {"name": "app.other"})) == {other}
    assert listed(admin.get(url("failed"), {"q": str(other)})) == {other}
    assert listed(admin.get(url("failed"), {"q": "other"})) == {other}
    db.execute("UPDATE aiotaskq_task SET unique_key = 'order-42' WHERE id = %s", (other,))
    assert listed(admin.get(url("failed"), {"q": "order-42"})) == {other}
    html = admin.get(url("failed")).content.decode()
    assert "?queue=other" in html  # the queue filter offers the queues of the group
    assert "2 failed tasks" in html  # a small group is counted exactly


def test_the_summary_shows_the_limit_keys_in_use(
    db: psycopg.Connection[Any], admin: Client
) -> None:
    from tests.app import tasks

    for _ in range(3):
        tasks.per_host.delay("s", "a.example", 0.0)
    tasks.rated.delay("s", "api")
    running = tasks.per_host.delay("s", "a.example", 0.0).id
    db.execute(
        "UPDATE aiotaskq_task SET state = 'running', worker_id = 'w', started_at = now(),"
        " alive_at = now(), attempt = 1 WHERE id = %s",
        (running,),
    )
    html = admin.get("/admin/aiotaskq/tasksummary/").content.decode()
    table = html[
        html.index('<table id="limits">') : html.index("</table>", html.index('id="limits"'))
    ]
    rows = re.findall(
        r"<tr>\s*<td>(.*?)</td>\s*<td>(.*?)</td>\s*<td>(.*?)</td>\s*<td>(.*?)</td>\s*<td>(.*?)</td>",
        table,
    )
    assert rows == [
        ("tests.app.tasks.per_host", "a.example", "1 / 3", "-", "3"),
        ("tests.app.tasks.rated", "api", "0 / -", "10/s", "1"),
    ]


def _queue(db: psycopg.Connection[Any], task_id: uuid.UUID) -> str:
    row = db.execute("SELECT queue FROM aiotaskq_task WHERE id = %s", (task_id,)).fetchone()
    assert row is not None
    return str(row[0])


def test_a_task_page_shows_arguments_errors_lease_and_is_read_only(
    db: psycopg.Connection[Any], admin: Client
) -> None:
    task_id = insert(db, "failed")
    response = admin.get(url("failed", str(task_id), "change"))
    assert response.status_code == 200
    html = response.content.decode()
    assert '<pre class="aiotaskq-json">[\n  &quot;https://example.com/hook&quot;,' in html
    assert "&quot;$datetime&quot;: &quot;2026-11-22T18:46:00+00:00&quot;" in html
    # Every attempt: type, message (escaped), outcome, worker, and the traceback in a <pre>.
    assert html.count('<pre class="aiotaskq-traceback">') == 2
    assert "OSError: &lt;boom &amp; co&gt;" in html
    assert "retry 2 in 4.0 s" in html
    assert "failed: no retries left" in html
    assert "w-1" in html
    assert "Attempt 2" in html
    # Read-only: no save button, a POST to the page is refused, nothing can be added.
    assert 'name="_save"' not in html
    assert admin.post(url("failed", str(task_id), "change"), {"name": "x"}).status_code == 403
    assert admin.get(url("failed", "add")).status_code == 403
    assert admin.get(url("failed", str(task_id), "delete")).status_code == 403


def test_a_task_that_moved_is_found_in_its_new_group(
    db: psycopg.Connection[Any], admin: Client
) -> None:
    task_id = insert(db, "pending")
    response = admin.get(url("failed", str(task_id), "change"), follow=True)
    assert response.redirect_chain == [(url("pending", str(task_id), "change"), 302)]
    assert "This task is no longer failed: it is pending now." in messages_of(response)
    missing = admin.get(url("failed", str(uuid.uuid4()), "change"))
    assert missing.status_code == 302
    assert missing["Location"] == "/admin/"


# -- actions -------------------------------------------------------------------------------


def test_run_again_requeues_failed_and_wakes_their_queues(
    db: psycopg.Connection[Any], admin: Client, listener: psycopg.Connection[Any]
) -> None:
    rows = seed(db)
    response = admin.post(
        url("failed"),
        {"action": "requeue", "index": "0", "_selected_action": [str(t) for t in rows["failed"]]},
        follow=True,
    )
    assert "2 tasks queued again, due now." in messages_of(response)
    for task_id in rows["failed"]:
        # Due now, no lease, the error history kept.
        assert state(db, task_id) == ("queued", None, True, 2)
    assert sorted(heard(listener)) == [("aiotaskq:default", ""), ("aiotaskq:other", "")]
    assert listed(admin.get(url("pending"))) == rows["pending"] | rows["failed"]


def test_run_again_requeues_dirty(
    db: psycopg.Connection[Any], admin: Client, listener: psycopg.Connection[Any]
) -> None:
    rows = seed(db)
    dirty = sorted(rows["dirty"])[0]
    response = admin.post(
        url("dirty"), {"action": "requeue", "index": "0", "_selected_action": [str(dirty)]}
    )
    assert response.status_code == 302
    assert state(db, dirty) == ("queued", None, True, 0)
    assert len(heard(listener)) == 1
    for task_id in rows["active"]:
        assert state_of(db, task_id) == "running"


def test_run_again_of_a_unique_task_takes_its_key_back_unless_another_holds_it(
    db: psycopg.Connection[Any], admin: Client
) -> None:
    free, taken, holder = (insert(db, "failed") for _ in range(3))
    db.execute("UPDATE aiotaskq_task SET state = 'queued' WHERE id = %s", (holder,))
    for task_id, key in ((free, "free"), (taken, "taken"), (holder, "taken")):
        db.execute("UPDATE aiotaskq_task SET unique_key = %s WHERE id = %s", (key, task_id))
    db.execute(
        "INSERT INTO aiotaskq_unique (name, key, task_id) VALUES ('app.work', 'taken', %s)",
        (holder,),
    )
    response = admin.post(
        url("failed"),
        {"action": "requeue", "index": "0", "_selected_action": [str(free), str(taken)]},
        follow=True,
    )
    shown = messages_of(response)
    assert "1 task queued again, due now." in shown
    assert "1 task left alone" in shown
    assert "holding a unique key that another queued or running task holds now" in shown
    assert state_of(db, free) == "queued"
    assert state_of(db, taken) == "failed"
    keys = dict(db.execute("SELECT key, task_id FROM aiotaskq_unique").fetchall())
    assert keys == {"free": free, "taken": holder}


def test_an_active_task_cannot_be_run_again_from_the_dirty_view(
    db: psycopg.Connection[Any], admin: Client, listener: psycopg.Connection[Any]
) -> None:
    active = insert(db, "active")
    admin.post(url("dirty"), {"action": "requeue", "index": "0", "_selected_action": [str(active)]})
    assert state(db, active) == ("running", "w-live", True, 0)
    assert heard(listener, timeout=0.2) == []


def test_a_task_locked_by_someone_else_is_left_alone(
    db: psycopg.Connection[Any], admin: Client
) -> None:
    first, second = insert(db, "failed"), insert(db, "failed")
    with psycopg.connect(task_db_conninfo()) as other, other.transaction():
        # As the CLI's `aiotaskq retry` holds a row while it requeues it.
        other.execute("SELECT 1 FROM aiotaskq_task WHERE id = %s FOR UPDATE", (second,))
        response = admin.post(
            url("failed"),
            {"action": "requeue", "index": "0", "_selected_action": [str(first), str(second)]},
            follow=True,
        )
    assert "1 task queued again, due now." in messages_of(response)
    assert "1 task left alone: no longer failed, or being changed by someone else" in (
        messages_of(response)
    )
    assert (state_of(db, first), state_of(db, second)) == ("queued", "failed")


def test_delete_asks_first_then_deletes(db: psycopg.Connection[Any], admin: Client) -> None:
    rows = seed(db)
    failed = sorted(rows["failed"])
    data = {"action": "delete_selected", "index": "0", "_selected_action": [str(failed[0])]}
    response = admin.post(url("failed"), data)
    assert response.status_code == 200
    assert "Yes, delete" in response.content.decode()
    assert state(db, failed[0]) is not None
    data = {"action": "delete_selected", "post": "yes", "_selected_action": [str(failed[0])]}
    response = admin.post(url("failed"), data, follow=True)
    assert "1 task deleted." in messages_of(response)
    assert state(db, failed[0]) is None
    assert state(db, failed[1]) is not None
    dirty = sorted(rows["dirty"])[0]
    admin.post(
        url("dirty"),
        {"action": "delete_selected", "post": "yes", "_selected_action": [str(dirty)]},
    )
    assert state(db, dirty) is None


def test_revoke_deletes_queued_and_tells_workers_of_running(
    db: psycopg.Connection[Any], admin: Client, listener: psycopg.Connection[Any]
) -> None:
    rows = seed(db)
    pending, future, active = (sorted(rows[g])[0] for g in ("pending", "future", "active"))
    response = admin.post(
        url("pending"), {"action": "revoke", "index": "0", "_selected_action": [str(pending)]}
    )
    assert "Yes, revoke" in response.content.decode()
    for group, task_id in (("pending", pending), ("future", future), ("active", active)):
        admin.post(
            url(group), {"action": "revoke", "post": "yes", "_selected_action": [str(task_id)]}
        )
    assert state(db, pending) is None
    assert state(db, future) is None
    assert state(db, active) == ("running", "w-live", True, 0)  # its worker cancels it
    assert heard(listener) == [(CONTROL_CHANNEL, f"revoke:{active}")]


def test_the_buttons_of_a_task_page_run_the_actions(
    db: psycopg.Connection[Any], admin: Client
) -> None:
    task_id = insert(db, "failed")
    html = admin.get(url("failed", str(task_id), "change")).content.decode()
    assert 'value="Run again now"' in html
    assert 'value="Delete…"' in html
    # What the "Run again now" form posts.
    response = admin.post(
        url("failed"), {"action": "requeue", "index": "0", "_selected_action": str(task_id)}
    )
    assert response.status_code == 302
    assert state(db, task_id) == ("queued", None, True, 2)


def test_select_across_applies_to_the_filtered_group(
    db: psycopg.Connection[Any], admin: Client
) -> None:
    rows = seed(db)
    one = sorted(rows["failed"])[0]
    admin.post(
        url("failed") + "?queue=other",
        {"action": "requeue", "index": "0", "select_across": "1", "_selected_action": [str(one)]},
    )
    states = {t: state_of(db, t) for t in rows["failed"]}
    assert sorted(states.values()) == ["failed", "queued"]
    (requeued,) = [t for t, s in states.items() if s == "queued"]
    assert _queue(db, requeued) == "other"


# -- permissions ---------------------------------------------------------------------------


def test_only_staff_with_the_view_permission_see_a_group(db: psycopg.Connection[Any]) -> None:
    seed(db)
    anonymous = Client()
    assert anonymous.get(url("failed"))["Location"].startswith("/admin/login/")
    not_staff = client_for(make_user("view_failedtask", staff=False))
    assert not_staff.get(url("failed"))["Location"].startswith("/admin/login/")
    nothing = client_for(make_user())
    for group in GROUPS:
        assert nothing.get(url(group)).status_code == 403
    assert nothing.get("/admin/aiotaskq/tasksummary/").status_code == 403
    viewer = client_for(make_user("view_failedtask"))
    assert viewer.get(url("failed")).status_code == 200
    assert viewer.get(url("pending")).status_code == 403


def test_actions_need_change_or_delete_permission(db: psycopg.Connection[Any]) -> None:
    rows = seed(db)
    failed = sorted(rows["failed"])
    viewer = client_for(make_user("view_failedtask"))
    html = viewer.get(url("failed")).content.decode()
    assert 'name="action"' not in html
    assert (
        "Run again now" not in viewer.get(url("failed", str(failed[0]), "change")).content.decode()
    )
    for action in ("requeue", "delete_selected"):
        viewer.post(
            url("failed"),
            {"action": action, "index": "0", "post": "yes", "_selected_action": [str(failed[0])]},
        )
    assert state_of(db, failed[0]) == "failed"

    changer = client_for(make_user("view_failedtask", "change_failedtask"))
    html = changer.get(url("failed")).content.decode()
    assert 'value="requeue"' in html
    assert 'value="delete_selected"' not in html
    changer.post(
        url("failed"),
        {"action": "delete_selected", "post": "yes", "_selected_action": [str(failed[0])]},
    )
    assert state_of(db, failed[0]) == "failed"
    changer.post(
        url("failed"), {"action": "requeue", "index": "0", "_selected_action": [str(failed[0])]}
    )
    assert state_of(db, failed[0]) == "queued"

    pending = sorted(rows["pending"])[0]
    pending_viewer = client_for(make_user("view_pendingtask"))
    pending_viewer.post(
        url("pending"), {"action": "revoke", "post": "yes", "_selected_action": [str(pending)]}
    )
    assert state(db, pending) is not None
    revoker = client_for(make_user("view_pendingtask", "delete_pendingtask"))
    revoker.post(
        url("pending"), {"action": "revoke", "post": "yes", "_selected_action": [str(pending)]}
    )
    assert state(db, pending) is None


def test_no_add_permission_exists() -> None:
    codenames = set(
        Permission.objects.filter(content_type__app_label="aiotaskq").values_list(
            "codename", flat=True
        )
    )
    assert "view_failedtask" in codenames
    assert "change_failedtask" in codenames
    assert "delete_pendingtask" in codenames
    assert not {c for c in codenames if c.startswith("add_") and c != "add_task"}
    assert "change_pendingtask" not in codenames


# -- a large table -------------------------------------------------------------------------


def test_a_large_table_is_never_counted_whole(db: psycopg.Connection[Any], admin: Client) -> None:
    db.execute(
        "INSERT INTO aiotaskq_task (id, name, queue, args, state, execute_at, attempt,"
        " worker_id, started_at, alive_at, finished_at, errors, return_value, expires_at)"
        " SELECT gen_random_uuid(), 'app.t' || (i % 20), 'q' || (i % 5), '[1, 2, 3]',"
        "  CASE WHEN i <= 95000 OR i > 97000 AND i <= 98000 THEN 'queued'"
        "       WHEN i <= 96000 THEN 'succeeded'"
        "       WHEN i <= 99000 THEN 'running' ELSE 'failed' END,"
        "  CASE WHEN i > 97000 AND i <= 98000 THEN now() + make_interval(secs => i)"
        "       ELSE now() - make_interval(secs => i) END,"
        "  1, 'w', now(),"
        "  CASE WHEN i > 98500 THEN now() - interval '1 hour' ELSE now() END,"
        "  now(), '[]',"
        "  CASE WHEN i > 95000 AND i <= 96000 THEN jsonb_build_object('n', i) END,"
        "  CASE WHEN i > 95000 AND i <= 96000 THEN now() + make_interval(secs => i) END"
        " FROM generate_series(1, 100000) AS i"
    )
    # VACUUM too: with the visibility map set, the pages a plan reads are those of the
    # index it walks (no heap fetch per row), which is what the plans below are judged on.
    db.execute("VACUUM ANALYZE aiotaskq_task")
    expected = {
        "pending": 95000,
        "future": 1000,
        "active": 1500,
        "dirty": 500,
        "failed": 1000,
        "succeeded": 1000,
    }
    # The pages of the index that holds every ready row by queue: the backlog beside the
    # small groups.
    queued_pages = _pages(db, "aiotaskq_task_due")
    for group in GROUPS:
        admin.get(url(group))  # the session, warm
        with CaptureQueriesContext(connection) as queries:
            response = admin.get(url(group))
        assert len(listed(response)) == 100, group
        statements = [q["sql"] for q in queries.captured_queries]
        assert len(statements) <= 6, (group, statements)
        counts = [s for s in statements if "COUNT(" in s.upper()]
        # Every count is bounded: over a LIMITed subquery.
        assert all("LIMIT" in s.upper() for s in counts), counts
        html = response.content.decode()
        if expected[group] > 10_000:
            match = re.search(r"about (\d+) pending tasks", html)
            assert match, group
            assert 50_000 < int(match.group(1)) < 200_000
            assert any(s.startswith("EXPLAIN") for s in statements)
        else:
            assert re.search(rf"\b{expected[group]} {group} tasks", html), group
            # A small group's count and list read about its own rows, not the backlog
            # beside it: a small share of the queued rows' index.
            (count,) = counts
            (page,) = [s for s in statements if "ORDER BY" in s and "COUNT(" not in s.upper()]
            for statement in (count, page):
                read = _pages_read(db, statement)
                assert read < queued_pages / 4, (group, read, queued_pages, statement)
    # The Future view's count and list walk the index made for them.
    future = _explained(db, _captured_count(admin, url("future")))
    # (The index's partitions: aiotaskq_task_ring0_queued_eta and the like.)
    assert re.search(r"aiotaskq_task_\w+_queued_eta", json.dumps(future)), future
    # A later page of the large group.
    assert len(listed(admin.get(url("pending"), {"p": "3"}))) == 100
    with CaptureQueriesContext(connection) as queries:
        response = admin.get("/admin/aiotaskq/tasksummary/")
    assert response.status_code == 200
    # Session, user, one GROUP BY, and the limit keys in use (read in the indexes of
    # limited tasks alone: none here).
    assert len(queries.captured_queries) <= 4
    assert "limit_key" in queries.captured_queries[-1]["sql"]
    assert ">95000<" in response.content.decode().replace("</a>", "<")


def _pages(db: psycopg.Connection[Any], relation: str) -> int:
    # A partitioned table's or index's pages are those of its partitions.
    row = db.execute(
        "SELECT sum(pg_relation_size(relid)) / 8192 FROM pg_partition_tree(%s::regclass)",
        (relation,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _explained(db: psycopg.Connection[Any], statement: str) -> dict[str, Any]:
    """The plan of ``statement`` (as Django sent it, parameters inlined), run for real."""
    rows = db.execute(
        sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}").format(sql.SQL(statement))  # type: ignore[arg-type]
    ).fetchone()
    assert rows is not None
    plan: dict[str, Any] = rows[0][0]["Plan"]
    return plan


def _pages_read(db: psycopg.Connection[Any], statement: str) -> int:
    """The shared buffers ``statement`` touches (pages read, from the cache or the disk)."""
    plan = _explained(db, statement)
    return int(plan["Shared Hit Blocks"]) + int(plan["Shared Read Blocks"])


def _captured_count(client: Client, path: str) -> str:
    with CaptureQueriesContext(connection) as queries:
        client.get(path)
    (count,) = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    return count


def test_counts_are_exact_up_to_the_cap_and_estimated_beyond(
    db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiotaskq.admin import pagination
    from aiotaskq.models import FailedTask

    monkeypatch.setattr(pagination, "EXACT_UP_TO", 5)
    for _ in range(5):
        insert(db, "failed")
    exact = pagination.EstimatedCountPaginator(FailedTask.objects.order_by("pk"), 2)
    assert (exact.count, exact.estimated) == (5, False)
    insert(db, "failed")
    with CaptureQueriesContext(connection) as queries:
        beyond = pagination.EstimatedCountPaginator(FailedTask.objects.order_by("pk"), 2)
        assert beyond.count >= 6
    assert beyond.estimated
    assert "LIMIT 6" in queries.captured_queries[0]["sql"]
    assert queries.captured_queries[1]["sql"].startswith("EXPLAIN")


def test_revoke_across_a_filtered_selection_asks_then_revokes_it_all(
    db: psycopg.Connection[Any], admin: Client
) -> None:
    mine = {insert(db, "pending", queue="bulk") for _ in range(3)}
    other = insert(db, "pending")
    data = {
        "action": "revoke",
        "index": "0",
        "select_across": "1",
        "_selected_action": [str(sorted(mine)[0])],
    }
    page = admin.post(url("pending") + "?queue=bulk", data).content.decode()
    assert '<input type="hidden" name="select_across" value="1">' in page
    assert page.count("<code>") == 3
    data = {k: v for k, v in data.items() if k != "index"} | {"post": "yes"}
    response = admin.post(url("pending") + "?queue=bulk", data, follow=True)
    assert "3 tasks revoked: deleted before running." in messages_of(response)
    assert all(state_of(db, t) is None for t in mine)
    assert state_of(db, other) == "queued"
