"""What the admin's pages say: a task is viewed, never "changed"; every time is shown in one
format; a Dirty task's page says why it is Dirty."""

from __future__ import annotations

import re
import uuid
from typing import Any

import psycopg
import pytest
from django.test import Client, override_settings

from tests.test_admin import (  # the admin tests' fixtures and helpers
    GROUPS,
    _admin_setup,  # noqa: F401
    admin,  # noqa: F401
    client_for,
    insert,
    make_user,
    url,
)

MOMENT = re.compile(r"\b\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [A-Z+0-9-]+\b")


def _changes(html: str) -> list[str]:
    """Every "Change" the page shows, but Django's hidden header of the sidebar's table and
    the rows of django.contrib.auth's own models."""
    html = html.replace("Change or view list link", "")
    html = re.sub(r'<tr class="model-(user|group)[^"]*">.*?</tr>', "", html, flags=re.DOTALL)
    return re.findall(r"[^<>]{0,40}\bChange\b[^<>]{0,40}", html)


def _set_times(db: psycopg.Connection[Any], task_id: uuid.UUID) -> None:
    """Fixed times, for the format; the group stays the same (only its times change)."""
    db.execute(
        "UPDATE aiotaskq_task SET created_at = '2026-11-22 18:46:01+00',"
        " started_at = CASE WHEN started_at IS NULL THEN NULL"
        " ELSE '2026-11-22 18:47:02+00'::timestamptz END"
        " WHERE id = %s",
        (task_id,),
    )


@pytest.mark.parametrize("superuser", [True, False], ids=["superuser", "with-permissions"])
def test_task_pages_say_view_never_change(db: psycopg.Connection[Any], superuser: bool) -> None:
    perms = () if superuser else ("view_pendingtask", "change_failedtask", "delete_failedtask")
    client = client_for(make_user(*perms, superuser=superuser))
    rows = {group: insert(db, group) for group in GROUPS}
    visible = GROUPS if superuser else ("pending",)
    pages = ["/admin/", "/admin/aiotaskq/"]
    for group in visible:
        task_id = str(rows[group])
        pages += [url(group), url(group, task_id, "change"), url(group, task_id, "history")]
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, page
        html = response.content.decode()
        assert _changes(html) == [], page
        if "/change/" in page:
            group = page.split("/")[3].removesuffix("task")
            assert f"View {group} task" in html
        if "/history/" in page:
            assert "<h1>History: app.work [" in html
    index = client.get("/admin/aiotaskq/").content.decode()
    assert 'class="viewlink"' in index
    assert 'class="changelink"' not in index


def test_one_date_format_on_lists_pages_errors_and_history(
    db: psycopg.Connection[Any],
    admin: Client,  # noqa: F811
) -> None:
    rows = {group: insert(db, group) for group in GROUPS}
    for task_id in rows.values():
        _set_times(db, task_id)
    admin.post(url("failed"), {"action": "requeue", "_selected_action": [str(rows["failed"])]})
    # An entry in an active task's history: revoked (its worker is told; it stays active).
    admin.post(
        url("active"),
        {"action": "revoke", "_selected_action": [str(rows["active"])], "post": "yes"},
    )
    pages = {
        "pending list": url("pending"),
        "dirty list": url("dirty"),
        "future list": url("future"),
        "pending page": url("pending", str(rows["pending"]), "change"),
        "dirty page": url("dirty", str(rows["dirty"]), "change"),
        "requeued page (errors)": url("pending", str(rows["failed"]), "change"),
        "history": url("active", str(rows["active"]), "history"),
    }
    html = {name: admin.get(page).content.decode() for name, page in pages.items()}
    assert "2026-11-22 18:46:01 UTC" in html["pending list"]  # created
    assert "2026-11-22 18:47:02 UTC" in html["dirty list"]  # started
    assert MOMENT.search(html["future list"])  # not before
    assert "2026-11-22 18:46:01 UTC (" in html["pending page"]  # and how long ago
    assert "2026-11-22 18:47:02 UTC (" in html["dirty page"]
    assert "at 2026-11-22 18:46:00 UTC" in html["requeued page (errors)"]  # an error's time
    assert MOMENT.search(html["history"].split('id="change-history"')[1])
    for name, text in html.items():
        # Not Django's DATETIME_FORMAT ("Nov. 22, 2026, 6:46 p.m."), nor raw ISO strings; the
        # arguments' own JSON stays as it is.
        shown = re.sub(r'<pre class="aiotaskq-json">.*?</pre>', "", text, flags=re.DOTALL)
        assert not re.search(r"\b[ap]\.m\.|\d{4}-\d\d-\d\dT\d\d", shown), name
    with override_settings(TIME_ZONE="Europe/Riga"):
        riga = admin.get(url("pending")).content.decode()
    assert "2026-11-22 20:46:01 EET" in riga


def test_a_dirty_task_says_why(db: psycopg.Connection[Any], admin: Client) -> None:  # noqa: F811
    task_id = insert(db, "dirty")  # its heartbeat stopped an hour ago, on worker w-dead
    html = admin.get(url("dirty", str(task_id), "change")).content.decode()
    note = re.search(r'<p class="aiotaskq-note">(.*?)</p>', html, re.DOTALL)
    assert note is not None
    assert note.group(1).startswith(
        "Dirty: its heartbeat stopped 1 h 0 min ago, more than DIRTY_AFTER (600 s) ago, on "
        "worker w-dead, no longer in the registry (it stopped cleanly, or was lost over a day "
        "ago)."
    )
    listing = admin.get(url("dirty")).content.decode()
    assert "w-dead (not\u00a0registered)" in listing
    assert "heartbeat stopped" in listing.lower()
    assert "1\u00a0h\u00a00\u00a0min\u00a0ago" in listing
    # No other group's page has the note.
    failed = insert(db, "failed")
    assert (
        '<p class="aiotaskq-note">'
        not in admin.get(url("failed", str(failed), "change")).content.decode()
    )


def test_an_active_task_shows_its_progress_and_checkpoint(
    db: psycopg.Connection[Any],
    admin: Client,  # noqa: F811
) -> None:
    task_id = insert(db, "active")
    db.execute(
        "UPDATE aiotaskq_task SET checkpoint = '{\"after\": 4000}', progress = "
        '\'{"done": 4000, "total": 10000, "message": "4,000 <b>of</b> 10,000 rows",'
        ' "at": "2026-11-22T18:47:02+00:00"}\' WHERE id = %s',
        (task_id,),
    )
    listing = admin.get(url("active")).content.decode()
    assert '<progress class="aiotaskq-progress" value="40.0" max="100"' in listing
    assert "4,000 &lt;b&gt;of&lt;/b&gt; 10,000 rows" in listing  # escaped
    page = admin.get(url("active", str(task_id), "change")).content.decode()
    assert "(40&nbsp;%)" in page
    assert "2026-11-22 18:47:02" in page
    assert "&quot;after&quot;: 4000" in page
