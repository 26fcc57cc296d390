"""The admin in a real browser: headless Chromium, driven over the DevTools protocol (on a
pipe, so no port and no extra package), against ``runserver`` on the test database. It logs
in through the login form, opens every view, runs "Run again now" from the Failed list, and
takes a screenshot (``AIOTASKQ_ADMIN_SCREENSHOT=docs/admin.png`` keeps a copy).

Skipped when no Chromium is installed (Debian: ``apt-get install -y chromium``)."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import ROOT, wait_for
from tests.test_admin import insert

BROWSER = next(
    (
        found
        for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
        if (found := shutil.which(name))
    ),
    None,
)
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="no Chromium installed (Debian: apt-get install -y chromium)"
)


class Browser:
    """Headless Chromium with ``--remote-debugging-pipe``: JSON messages separated by NUL,
    written to its fd 3 and read from its fd 4; one page, attached in flat mode."""

    def __init__(self, profile: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # Above 10, so that putting one at fd 3 or 4 cannot overwrite the other.
        to_browser_r, from_browser_w = (_above_ten(fd) for fd in (to_browser_r, from_browser_w))
        command = [
            BROWSER or "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1440,900",
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        # A small trampoline puts the two pipe ends at the fd numbers Chromium uses, then
        # becomes Chromium.
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _TRAMPOLINE, str(to_browser_r), str(from_browser_w), *command],
            pass_fds=(to_browser_r, from_browser_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._events: list[dict[str, Any]] = []
        self._next_id = 0
        target = self.call("Target.createTarget", {"url": "about:blank"}, page=False)
        attached = self.call(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, page=False
        )
        self._session = attached["sessionId"]
        self.call("Page.enable")

    def _send(self, method: str, params: dict[str, Any], page: bool) -> int:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if page:
            message["sessionId"] = self._session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        return self._next_id

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError("the browser did not answer")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise EOFError("the browser closed its pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def call(
        self, method: str, params: dict[str, Any] | None = None, page: bool = True
    ) -> dict[str, Any]:
        wanted = self._send(method, params or {}, page)
        deadline = time.monotonic() + 30
        while True:
            message = self._receive(deadline)
            if message.get("id") == wanted:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result
            if "method" in message:
                self._events.append(message)

    def wait_for_load(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self._events):
                if event["method"] == "Page.loadEventFired":
                    del self._events[: i + 1]
                    return
            self._events.clear()
            message = self._receive(deadline)
            if "method" in message:
                self._events.append(message)

    def open(self, url: str) -> None:
        self._events.clear()
        self.call("Page.navigate", {"url": url})
        self.wait_for_load()

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def submit(self, expression: str) -> None:
        """Run ``expression`` (which submits a form) and wait for the next page."""
        self._events.clear()
        self.js(expression)
        self.wait_for_load()

    def screenshot(self, path: Path) -> None:
        """The page down to the end of its content (at most 1400 px), 1440 px wide."""
        self.call("Emulation.clearDeviceMetricsOverride")
        bottom = self.js("document.querySelector('#content').getBoundingClientRect().bottom")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {
                "width": 1440,
                "height": min(int(bottom) + 40, 1400),
                "deviceScaleFactor": 1,
                "mobile": False,
            },
        )
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.call("Browser.close", page=False)
            self.proc.wait(10)
        except (OSError, TimeoutError, EOFError, RuntimeError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(10)
        os.close(self._to_browser)
        os.close(self._from_browser)


_TRAMPOLINE = (
    "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
    "os.execv(sys.argv[3], sys.argv[3:])"
)


def _above_ten(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """``runserver`` (``--insecure`` serves the admin's CSS) on the test database."""
    port = _free_port()
    log = open(tmp_path / "runserver.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "django",
            "runserver",
            f"127.0.0.1:{port}",
            "--noreload",
            "--insecure",
            "--settings",
            "tests.settings",
        ],
        cwd=ROOT,
        # A heartbeat written by the test stays fresh (Active) however slow the machine.
        env={**os.environ, "PYTHONPATH": str(ROOT), "AIOTASKQ_TEST_DIRTY_AFTER": "600"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError((tmp_path / "runserver.log").read_text())
        try:
            with urllib.request.urlopen(base + "/admin/login/", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    try:
        wait_for(up, timeout=60, what="runserver")
        yield base
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture
def browser() -> Iterator[Browser]:
    with tempfile.TemporaryDirectory() as profile:
        chromium = Browser(Path(profile))
        try:
            yield chromium
        finally:
            chromium.close()


def test_the_admin_in_a_browser(
    db: psycopg.Connection[Any], server: str, browser: Browser, tmp_path: Path
) -> None:
    from django.contrib.auth.models import User

    db.execute("TRUNCATE auth_user, django_session, django_admin_log CASCADE")
    User.objects.create_superuser("ops", password="correct horse battery staple")
    failed = [
        insert(db, "failed", queue=queue, name=name, error=error)
        for queue, name, error in (
            (
                "webhooks",
                "webhooks.tasks.deliver_webhook",
                ("httpx.ConnectTimeout", "timed out connecting to hooks.example.com"),
            ),
            (
                "webhooks",
                "webhooks.tasks.deliver_webhook",
                ("builtins.RuntimeError", "503 from hooks.example.com"),
            ),
            (
                "default",
                "reports.tasks.rebuild_report",
                ("reports.models.Org.DoesNotExist", "Org matching query does not exist."),
            ),
            (
                "emails",
                "emails.tasks.send_receipt",
                ("smtplib.SMTPRecipientsRefused", "{'x@example': (550, 'No such user')}"),
            ),
        )
    ]
    for group in ("pending", "pending", "future", "active", "dirty", "succeeded"):
        insert(db, group, queue="webhooks", name="webhooks.tasks.deliver_webhook")

    # The login form.
    browser.open(f"{server}/admin/login/?next=/admin/")
    browser.submit(
        "document.querySelector('#id_username').value = 'ops';"
        "document.querySelector('#id_password').value = 'correct horse battery staple';"
        "document.querySelector('#login-form').submit()"
    )
    index = browser.js("document.body.innerText")
    for group in ("Pending", "Future", "Active", "Dirty", "Failed", "Succeeded"):
        assert f"{group} tasks" in index, index

    # Every view renders, with its rows.
    for model, rows in (
        ("pendingtask", 2),
        ("futuretask", 1),
        ("activetask", 1),
        ("dirtytask", 1),
        ("failedtask", 4),
        ("succeededtask", 1),
    ):
        browser.open(f"{server}/admin/aiotaskq/{model}/")
        count = browser.js("document.querySelectorAll('#result_list tbody tr').length")
        assert count == rows, model
    browser.open(f"{server}/admin/aiotaskq/tasksummary/")
    assert "webhooks.tasks.deliver_webhook" in browser.js("document.body.innerText")
    browser.screenshot(tmp_path / "summary.png")

    # A task's page: its tracebacks.
    browser.open(f"{server}/admin/aiotaskq/failedtask/{failed[0]}/change/")
    assert browser.js("document.querySelectorAll('pre.aiotaskq-traceback').length") == 2
    browser.screenshot(tmp_path / "task.png")

    # The Failed list, as the screenshot shows it, then "Run again now" on one task.
    browser.open(f"{server}/admin/aiotaskq/failedtask/")
    browser.js(
        f"document.querySelector('input[name=_selected_action][value=\"{failed[0]}\"]').click();"
        "document.querySelector('select[name=action]').value = 'requeue';"
    )
    shot = tmp_path / "admin.png"
    browser.screenshot(shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if keep := os.environ.get("AIOTASKQ_ADMIN_SCREENSHOT"):
        shutil.copyfile(shot, ROOT / keep)
    browser.submit("document.querySelector('#changelist-form button[name=index]').click()")
    assert "1 task queued again, due now." in browser.js("document.body.innerText")

    state = db.execute(
        "SELECT state, execute_at <= now() FROM aiotaskq_task WHERE id = %s", (failed[0],)
    ).fetchone()
    assert state == ("queued", True)
    others = db.execute(
        "SELECT count(*) FROM aiotaskq_task WHERE state = 'failed' AND id <> %s", (failed[0],)
    ).fetchone()
    assert others == (3,)
    assert isinstance(failed[0], uuid.UUID)
    # The admin's history has it ("Recent actions" on the index page).
    browser.open(f"{server}/admin/")
    recent = browser.js("document.querySelector('#recent-actions-module').innerText")
    assert str(failed[0]) in recent, recent
