"""End to end: a database, the ASGI app under uvicorn, a worker, requests that enqueue, and
the proof that every task ran. Run from anywhere: ``python examples/asgi_project/demo.py``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg

HERE = Path(__file__).resolve().parent
REQUESTS = 50


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except (httpx.HTTPError, OSError):
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise SystemExit(f"demo: timed out waiting for {what}")


def main() -> int:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", "PYTHONPATH": str(HERE)}
    database = env.setdefault("EXAMPLE_DATABASE", "aiotaskq_example")
    admin = psycopg.conninfo.make_conninfo(
        host=env.get("PGHOST", "127.0.0.1"),
        port=env.get("PGPORT", "5432"),
        user=env.get("PGUSER") or None,
        password=env.get("PGPASSWORD") or None,
        dbname="postgres",
    )
    print(f"1. a fresh database {database!r}")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{database}"')
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=HERE, env=env, check=True
    )

    port = free_port()
    print(f"2. the web app on http://127.0.0.1:{port} and one aiotaskq worker")
    web = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "project.asgi:application",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--lifespan",
            "off",
        ],
        cwd=HERE,
        env=env,
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aiotaskq.cli",
            "run",
            "--concurrency",
            "50",
            "--log-level",
            "WARNING",
        ],
        cwd=HERE,
        env=env,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for("the web app", lambda: httpx.get(f"{base}/greetings/").status_code == 200)
        print(f"3. {REQUESTS} requests to POST /greet/, each enqueueing one task")
        started = time.monotonic()
        with httpx.Client(base_url=base) as client:
            for i in range(REQUESTS):
                response = client.post("/greet/", json={"name": f"visitor {i}"})
                response.raise_for_status()
        enqueued = time.monotonic() - started
        count = wait_for(
            "the greetings",
            lambda: (n := httpx.get(f"{base}/greetings/").json()["count"]) >= REQUESTS and n,
        )
        elapsed = time.monotonic() - started
        print(
            f"4. the worker ran all {count} tasks: requests took {enqueued:.2f} s, "
            f"everything was delivered {elapsed:.2f} s after the first request"
        )
    finally:
        for proc in (worker, web):
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(40) for proc in (worker, web)]
    status = subprocess.run(
        [sys.executable, "-m", "aiotaskq.cli", "status", "--json"],
        cwd=HERE,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # uvicorn re-raises SIGTERM after its clean shutdown, so its exit code is -15.
    print(f"5. the worker stopped with exit code {codes[0]}; queue status: {json.loads(status)}")
    return 0 if codes[0] == 0 and count == REQUESTS else 1


if __name__ == "__main__":
    raise SystemExit(main())
