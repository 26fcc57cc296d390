"""aiotaskq behind a real PgBouncer in transaction mode, in front of the test database.

Every process here but the test itself reaches PostgreSQL through the pooler: the enqueuers
(``tests/pgbouncer_client.py``: sync, async, bulk with and without COPY) and the workers,
whose LISTEN goes either straight to PostgreSQL (``LISTEN_DSN``) or nowhere (``LISTEN =
False``: polling). With ``AIOTASKQ["PREPARE"] = False`` nothing is prepared; with
statements prepared, a pooler before 1.21 loses them and the error says what to do.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import ROOT, WorkerProcess, load_pgserver, wait_for

BINARY = shutil.which("pgbouncer") or next(
    (p for p in ("/usr/sbin/pgbouncer",) if os.access(p, os.X_OK)), None
)
pytestmark = pytest.mark.skipif(
    BINARY is None,
    reason="pgbouncer is not installed (not in PATH nor /usr/sbin): apt-get install pgbouncer",
)

#: More than psycopg's prepare_threshold (5) executions of every statement, on every path.
COUNT = 30
#: Per label: COUNT one by one (+ 10 at once for async), then the BULK batches.
PER_RUN = {"sync": COUNT, "sync-bulk": 110, "async": COUNT + 10, "async-bulk": 110}
#: Longer than any test waits: a task that ran was woken by NOTIFY, not by the safety poll.
NO_POLL = 600.0


def _version(binary: str) -> tuple[int, ...]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    match = re.search(r"PgBouncer (\d+)\.(\d+)", out.stdout)
    assert match, out.stdout
    return tuple(int(n) for n in match.groups())


class PgBouncer:
    """One PgBouncer process in transaction mode, on a free port, with its own config."""

    def __init__(self, binary: str) -> None:
        self.version = _version(binary)
        self.dir = Path(tempfile.mkdtemp(prefix="aiotaskq-pgbouncer-"))
        try:
            self._start(binary)
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def _start(self, binary: str) -> None:
        self.dir.chmod(0o755)  # read by the pooler's own user when this runs as root
        self.port = load_pgserver()._free_port()
        direct = psycopg.conninfo.conninfo_to_dict(task_conninfo())
        target = {"host": direct.get("host") or "127.0.0.1", "port": direct.get("port") or 5432}
        user = os.environ.get("PGUSER") or _current_role()
        (self.dir / "users.txt").write_text(f'"{user}" "{os.environ.get("PGPASSWORD", "")}"\n')
        lines = [
            "[databases]",
            f"* = host={target['host']} port={target['port']}",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            "auth_type = trust" if not os.environ.get("PGPASSWORD") else "auth_type = plain",
            f"auth_file = {self.dir / 'users.txt'}",
            "pool_mode = transaction",
            "max_client_conn = 400",
            "default_pool_size = 20",
            f"admin_users = {user}",  # SHOW STATS: what went through
        ]
        if self.version >= (1, 21):
            # The pooler keeps no prepared statement, as before 1.21 (and as 1.21's default).
            lines.append("max_prepared_statements = 0")
        (self.dir / "pgbouncer.ini").write_text("\n".join(lines) + "\n")
        for name in ("users.txt", "pgbouncer.ini"):
            (self.dir / name).chmod(0o644)
        self._log = open(self.dir / "pgbouncer.log", "wb")  # noqa: SIM115 - closed in stop()
        die_with = load_pgserver()._parent_death_signal()
        parent = os.getpid()
        self.proc = subprocess.Popen(
            [binary, str(self.dir / "pgbouncer.ini")],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # PgBouncer refuses to run as root.
            user="postgres" if os.geteuid() == 0 else None,
            # Stopped with this process however it ends (the signal is set after the switch
            # of user, which would clear it).
            preexec_fn=lambda: die_with(parent, signal.SIGTERM),
            start_new_session=True,
        )

    def log(self) -> str:
        return (self.dir / "pgbouncer.log").read_text(errors="replace")

    def dsn(self, **extra: Any) -> str:
        info = psycopg.conninfo.conninfo_to_dict(task_conninfo())
        info.update(host="127.0.0.1", port=self.port, **extra)
        return psycopg.conninfo.make_conninfo(**info)

    def transactions(self) -> int:
        """How many transactions the pooler has run on the task database so far."""
        name = psycopg.conninfo.conninfo_to_dict(task_conninfo())["dbname"]
        # The admin console speaks the simple query protocol only: a client-side cursor.
        with psycopg.connect(
            self.dsn(dbname="pgbouncer"), autocommit=True, cursor_factory=psycopg.ClientCursor
        ) as conn:
            rows = conn.execute("SHOW STATS").fetchall()
        return sum(int(row[1]) for row in rows if row[0] == name)

    def wait_ready(self, timeout: float = 20.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"pgbouncer exited with {self.proc.returncode}:\n{self.log()}")
            try:
                psycopg.connect(self.dsn(connect_timeout=2)).close()
            except psycopg.OperationalError:
                return False
            return True

        wait_for(ready, timeout, interval=0.05, what="pgbouncer to accept connections")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _current_role() -> str:
    with psycopg.connect(task_conninfo()) as conn:
        row = conn.execute("SELECT current_user").fetchone()
    assert row is not None
    return str(row[0])


def task_conninfo() -> str:
    from tests.conftest import task_db_conninfo

    return task_db_conninfo()


@pytest.fixture(scope="module")
def pgbouncer() -> Iterator[PgBouncer]:
    assert BINARY is not None
    bouncer = PgBouncer(BINARY)
    try:
        bouncer.wait_ready()
        yield bouncer
    finally:
        bouncer.stop()


def _env(bouncer: PgBouncer, settings: dict[str, Any], **extra: str) -> dict[str, str]:
    """The environment of a process whose database goes through ``bouncer``."""
    return {
        "PGHOST": "127.0.0.1",
        "PGPORT": str(bouncer.port),
        "AIOTASKQ_TEST_POOLER": "1",
        "AIOTASKQ_TEST_SETTINGS": json.dumps(settings),
        **extra,
    }


def enqueue_through(
    bouncer: PgBouncer, label: str, settings: dict[str, Any], **extra: str
) -> subprocess.CompletedProcess[str]:
    """Run tests/pgbouncer_client.py through ``bouncer``: it enqueues ``PER_RUN`` tasks."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **_env(bouncer, settings, **extra)}
    return subprocess.run(
        [sys.executable, "-m", "tests.pgbouncer_client", label, str(COUNT)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )


def _ran(label: str) -> dict[str, int]:
    """How many times each kind of ``label``'s tasks ran."""
    from tests.app.models import Execution

    counts: dict[str, int] = {}
    for name in Execution.objects.filter(label__startswith=f"{label}:").values_list(
        "label", flat=True
    ):
        counts[name] = counts.get(name, 0) + 1
    return counts


def assert_all_ran_once(label: str, db: psycopg.Connection[Any], what: str) -> None:
    """Every task that ``enqueue_through`` wrote for ``label`` runs, once, and is acked."""
    want = {f"{label}:{kind}": n for kind, n in PER_RUN.items()}
    wait_for(lambda: _ran(label) == want, timeout=60, what=what)

    def acked() -> bool:
        row = db.execute("SELECT count(*) FROM aiotaskq_task").fetchone()
        return row is not None and row[0] == 0

    wait_for(acked, timeout=30, what="every outcome to be written")
    assert _ran(label) == want


def test_enqueue_through_pgbouncer_and_a_worker_woken_by_notify(
    pgbouncer: PgBouncer, worker: Callable[..., WorkerProcess], db: psycopg.Connection[Any]
) -> None:
    """The worker's LISTEN goes past the pooler (LISTEN_DSN); its claims and acks, and every
    enqueue, through it. It polls only every NO_POLL seconds: what ran was announced."""
    settings = {"PREPARE": False, "LISTEN_DSN": task_conninfo()}
    before = pgbouncer.transactions()
    proc = worker("--concurrency", "20", poll=NO_POLL, env=_env(pgbouncer, settings))
    done = enqueue_through(pgbouncer, "notify", settings)
    assert done.returncode == 0, done.stderr
    assert_all_ran_once("notify", db, "every task to run, woken by NOTIFY")
    assert pgbouncer.transactions() - before > sum(PER_RUN.values())
    assert "ERROR" not in proc.log(), proc.log()


def test_a_worker_polling_entirely_through_pgbouncer(
    pgbouncer: PgBouncer, worker: Callable[..., WorkerProcess], db: psycopg.Connection[Any]
) -> None:
    settings = {"PREPARE": False, "LISTEN": False}
    proc = worker("--concurrency", "20", poll=0.2, env=_env(pgbouncer, settings))
    done = enqueue_through(pgbouncer, "poll", settings)
    assert done.returncode == 0, done.stderr
    assert_all_ran_once("poll", db, "every task to run, found by the poll")
    assert "ERROR" not in proc.log(), proc.log()


def test_prepare_threshold_none_in_django_options_turns_preparing_off(
    pgbouncer: PgBouncer, worker: Callable[..., WorkerProcess], db: psycopg.Connection[Any]
) -> None:
    # No AIOTASKQ["PREPARE"]: what the database's OPTIONS tell Django is enough.
    settings = {"LISTEN_DSN": task_conninfo()}
    options = {"AIOTASKQ_TEST_DB_OPTIONS": json.dumps({"prepare_threshold": None})}
    proc = worker("--concurrency", "20", poll=NO_POLL, env=_env(pgbouncer, settings, **options))
    done = enqueue_through(pgbouncer, "options", settings, **options)
    assert done.returncode == 0, done.stderr
    assert_all_ran_once("options", db, "every task to run")
    assert "ERROR" not in proc.log(), proc.log()


async def test_a_lost_prepared_statement_names_the_setting(pgbouncer: PgBouncer) -> None:
    """What PostgreSQL answers behind the pooler when statements are prepared, with what
    aiotaskq adds to it. Two connections that prepare from the first run, as the worker's
    do, one after the other: PgBouncer hands the second the server connection that the
    first just used, where "_pg3_0" is prepared already."""
    from aiotaskq.db.connect import new_connection, translate_errors
    from aiotaskq.db.prepare import prepared_lost
    from aiotaskq.errors import DatabaseError

    dsn = pgbouncer.dsn()
    conns = [await new_connection(dsn, autocommit=True, prepare_threshold=0) for _ in range(2)]
    try:
        await conns[0].execute("SELECT %(n)s::int", {"n": 1})
        with pytest.raises(DatabaseError) as caught, translate_errors("Looking"):
            await conns[1].execute("SELECT %(n)s::int", {"n": 1})
    finally:
        for conn in conns:
            await conn.close()
    assert prepared_lost(caught.value)
    message = str(caught.value)
    assert 'prepared statement "_pg3_0" already exists' in message
    assert message.endswith('set AIOTASKQ["PREPARE"] = False')


def test_a_worker_that_prepares_behind_pgbouncer_stops_preparing(
    pgbouncer: PgBouncer, worker: Callable[..., WorkerProcess], db: psycopg.Connection[Any]
) -> None:
    """The default (statements prepared) behind a pooler that does not keep them: the
    worker's first lost statement is told once, it prepares nothing from then on, and no
    outcome is lost meanwhile (a statement the pooler refused is tried again)."""
    clean = {"PREPARE": False}
    done = enqueue_through(pgbouncer, "prepared", clean)
    assert done.returncode == 0, done.stderr
    proc = worker("--concurrency", "20", poll=0.2, env=_env(pgbouncer, {"LISTEN": False}))
    assert_all_ran_once("prepared", db, "every task to run once")
    log = proc.log()
    assert log.count("database.prepared_lost") == 1, log
    assert "outcome.not_storable" not in log, log
