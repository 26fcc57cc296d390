"""The webhook fan-out, end to end, over real HTTP on 127.0.0.1:

1. a fresh database, migrated;
2. the receiver (``receiver.py``) under uvicorn: it fails, throttles and lags on purpose;
3. the web app under ``uvicorn --lifespan on``, with the aiotaskq worker inside it;
4. subscriptions, all pointing at the receiver;
5. ``POST /events/``: one event, one delivery task per subscription, enqueued at once;
6. ``manage.py fanout_progress`` until every delivery is final, and the summary;
7. SIGTERM to the web app, and checks: it stopped cleanly, and no task row is ``running``;
8. ``aiotaskq status`` on what is left, and how to look again.

::

    python examples/asgi_project/demo.py [--deliveries 1000] [--concurrency 32]

The PostgreSQL server is the one of ``PGHOST``, ``PGPORT``, ``PGUSER`` and ``PGPASSWORD``
(or ``DATABASE_URL``; its database is the one connected to for ``CREATE DATABASE``,
``postgres`` by default). The example's database (``--database``) is dropped and created
again, and kept when the demo ends, for a look with ``aiotaskq status``; but a throwaway
server that ``scripts/demo`` started (no PostgreSQL answered) is removed as it exits, with
the database (``AIOTASKQ_DEMO_THROWAWAY_SERVER=1`` says so), so the demo prints the status
before it ends. Exit status 0 when every delivery reached a final state (delivered, or
failed after its retries), the server stopped cleanly, and nothing was left running; 1
otherwise.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

HERE = Path(__file__).resolve().parent
T = TypeVar("T")
# DATABASE_URL keys and the libpq variables they become (as scripts/pgserver.py does).
_URL_ENV = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD"}
_URL_ENV |= {"dbname": "PGDATABASE"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--deliveries", type=int, default=1000, help="subscriptions (1000)")
    parser.add_argument(
        "--concurrency", type=int, help="deliveries at once (default: WEBHOOK_CONCURRENCY, 32)"
    )
    parser.add_argument(
        "--database",
        default=os.environ.get("EXAMPLE_DATABASE", "aiotaskq_example"),
        help="the database to (re)create (aiotaskq_example)",
    )
    parser.add_argument(
        "--timeout", type=float, default=180.0, help="seconds the fan-out may take (180)"
    )
    parser.add_argument("--logs", type=Path, help="where the servers' logs go (a temp dir)")
    parser.add_argument("--summary-json", type=Path, help="also write the summary here")
    return parser.parse_args(argv)


def wait_for(what: str, check: Callable[[], T | None], timeout: float) -> T:
    """Poll ``check`` until it returns something; give up after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (value := check()) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)
    return value


class Server:
    """``uvicorn APP`` on a port of 127.0.0.1 that the kernel picks; its log in a file."""

    def __init__(self, name: str, app: str, args: list[str], env: dict[str, str], logs: Path):
        self.name = name
        self.log_path = logs / f"{name}.log"
        self._log: IO[bytes] = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", "0"),
                *("--log-level", "info", "--no-access-log", *args),
            ],
            cwd=HERE,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.url = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_started(self, timeout: float = 60.0) -> str:
        """Wait until uvicorn serves (after its lifespan startup); return its base URL."""

        def started() -> str | None:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with status {self.proc.returncode}:\n{self.log()}"
                )
            found = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", self.log())
            return found.group(1) if found else None

        self.url = wait_for(f"{self.name} to start", started, timeout)
        return self.url

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM, and wait; True if uvicorn ran its shutdown to the end. Idempotent."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        # uvicorn raises the SIGTERM again once it has shut down, so -15 is a clean stop too.
        clean_exit = self.proc.returncode in (0, -signal.SIGTERM)
        return clean_exit and "Application shutdown complete." in self.log()


def database_env(database: str) -> dict[str, str]:
    """The environment of every process: the ``PG*`` variables (from ``DATABASE_URL`` when
    it is set) and the example's settings."""
    env = dict(os.environ)
    if url := env.get("DATABASE_URL"):
        for key, value in conninfo_to_dict(url).items():
            if key in _URL_ENV and value is not None:
                env[_URL_ENV[key]] = str(value)
    env.update(
        DJANGO_SETTINGS_MODULE="project.settings",
        EXAMPLE_DATABASE=database,
        PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")])),
    )
    return env


def recreate_database(env: dict[str, str], database: str) -> str:
    admin = make_conninfo(
        host=env.get("PGHOST", "127.0.0.1"),
        port=env.get("PGPORT", "5432"),
        user=env.get("PGUSER") or None,
        password=env.get("PGPASSWORD") or None,
        dbname=env.get("PGDATABASE") or "postgres",
    )
    with psycopg.connect(admin, autocommit=True) as conn:
        name = sql.Identifier(database)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
        info = conn.info
        return f"{info.host}:{info.port}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = database_env(args.database)
    if args.concurrency:
        env["WEBHOOK_CONCURRENCY"] = str(args.concurrency)
    logs = args.logs or Path(tempfile.mkdtemp(prefix="aiotaskq-demo-"))
    logs.mkdir(parents=True, exist_ok=True)
    where = recreate_database(env, args.database)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=HERE, env=env, check=True
    )
    print(f"1. A fresh database {args.database!r} on {where}, migrated")

    # Django in this process too, for the management commands and the summary.
    os.environ.update(env)
    sys.path.insert(0, str(HERE))
    import django

    django.setup()

    secret = os.urandom(16).hex()
    receiver = Server("receiver", "receiver:app", [], {**env, "RECEIVER_SECRET": secret}, logs)
    web = Server("web", "project.asgi:application", ["--lifespan", "on"], env, logs)
    try:
        receiver_url = receiver.wait_started()
        config = httpx.get(f"{receiver_url}/stats", timeout=10).json()["config"]
        print(
            f"2. The receiver on {receiver_url}, {config['latency_ms']} ms a request: it "
            f"answers 500 to {config['fail_rate']:.0%},\n   500 after doing the work to "
            f"{config['lost_rate']:.0%}, 429 (Retry-After: 1) to {config['throttle_rate']:.0%}"
        )
        web_url = web.wait_started()
        print(
            f"3. The web app on {web_url} under uvicorn --lifespan on, with an aiotaskq "
            f"worker\n   inside that runs {env.get('WEBHOOK_CONCURRENCY', 32)} deliveries at once, "
            f"at most {per_host_limit()} to one host (max_concurrent per host, over every worker)"
        )
        summary = run_fanout(args, web_url, receiver_url, secret)
        seen = httpx.get(f"{receiver_url}/stats", timeout=10).json()
        receiver_stats = seen["seen"]
        peaks = seen["peak_per_host"]
        print(
            "   The receiver saw at most "
            + ", ".join(f"{n} requests at once from {host}" for host, n in sorted(peaks.items()))
            + f" (the limit per host: {per_host_limit()})"
        )
        summary |= {"peak_per_host": peaks, "per_host_limit": per_host_limit()}
        after = check_after_stop(web.stop(), receiver_stats)
        summary |= after | {"ok": summary["all_final"] and after["ok"]}
    except (RuntimeError, httpx.HTTPError) as exc:
        print(f"FAILED: {exc}")
        return 1
    finally:
        web.stop()
        receiver.stop()
        print(f"   Server logs: {logs}")
    show_status(env, args.database, where)
    if args.summary_json:
        args.summary_json.write_text(json.dumps(summary, indent=2, default=str))
    print("OK" if summary["ok"] else "FAILED: see above and the server logs")
    return 0 if summary["ok"] else 1


def per_host_limit() -> int:
    from django.conf import settings

    return int(settings.WEBHOOK_PER_HOST)


def run_fanout(
    args: argparse.Namespace, web_url: str, receiver_url: str, secret: str
) -> dict[str, Any]:
    from django.core.management import CommandError, call_command
    from webhooks.models import Delivery, Event
    from webhooks.progress import tally

    target = f"{receiver_url}/hooks/{{n}}"
    call_command("subscribe", target, count=args.deliveries, secret=secret, stdout=io.StringIO())
    print(f"4. {args.deliveries} subscriptions to {target}")

    started = time.perf_counter()
    response = httpx.post(
        f"{web_url}/events/",
        json={"type": "invoice.paid", "data": {"invoice": "in_1042", "amount": "99.00"}},
        timeout=60,
    )
    response.raise_for_status()
    created = response.json()
    print(
        f"5. POST /events/ -> {response.status_code} in "
        f"{(time.perf_counter() - started) * 1000:.0f} ms: event {created['event']}, "
        f"{created['deliveries']} delivery tasks enqueued with one aenqueue_many()"
    )
    print("6. The worker delivers (manage.py fanout_progress):")
    try:
        call_command("fanout_progress", event=created["event"], timeout=args.timeout)
        finished = True
    except CommandError as exc:
        print(f"   {exc}")
        finished = False
        for delivery in Delivery.objects.filter(status=Delivery.Status.PENDING)[:3]:
            error = delivery.last_error or "no error recorded"
            print(f"   still pending: {delivery.pk} ({delivery.attempts} attempts; {error})")
    counts = tally(created["event"])
    # A view that waits for a task's result: it enqueues a short summary task on the web
    # server's own worker and answers with `await result.aget()`.
    started = time.perf_counter()
    answer = httpx.get(f"{web_url}/events/{created['event']}/summary/", timeout=30)
    answer.raise_for_status()
    by_status = answer.json()["deliveries"]
    print(
        f"   GET /events/{created['event']}/summary/ -> {by_status} in "
        f"{(time.perf_counter() - started) * 1000:.0f} ms (a task's result, awaited by the view)"
    )
    event = Event.objects.get(pk=created["event"])
    end = counts.last_finished_at or event.created_at
    wall = (end - event.created_at).total_seconds()
    return {
        "deliveries": counts.total,
        "delivered": counts.delivered,
        "failed": counts.failed,
        "pending": counts.pending,
        "attempts": counts.attempts,
        "retried": counts.retried,
        "retries": counts.retries,
        "snoozed": counts.snoozed,
        "snoozes": counts.snoozes,
        "wall_seconds": round(wall, 3),
        "deliveries_per_second": round(counts.total / wall, 1) if wall > 0 else None,
        "all_final": finished and counts.done,
        "summary_view": by_status,
    }


def check_after_stop(web_stopped: bool, receiver: dict[str, int]) -> dict[str, Any]:
    from aiotaskq.models import Task

    tasks = {
        state: Task.objects.filter(state=state).count() for state in ("queued", "running", "failed")
    }
    print(
        f"7. The receiver got {receiver.get('requests', 0)} requests, "
        f"{receiver.get('bad_signature', 0)} with a bad signature, and processed "
        f"{receiver.get('accepted', 0)} webhooks,\n   each once (repeats recognised by "
        f"their Idempotency-Key: {receiver.get('duplicates', 0)})"
    )
    print(
        f"8. SIGTERM to the web app: {'stopped cleanly' if web_stopped else 'NOT stopped cleanly'}"
        f". Task rows left: {tasks['running']} running, {tasks['queued']} queued, "
        f"{tasks['failed']} failed"
    )
    return {
        "receiver": receiver,
        "tasks": tasks,
        "web_stopped_cleanly": web_stopped,
        "ok": web_stopped and tasks["running"] == 0,
    }


def show_status(env: dict[str, str], database: str, where: str) -> None:
    """``aiotaskq status`` while the database is still there, and whether it stays."""
    status = subprocess.run(
        [sys.executable, "-m", "aiotaskq.cli", "status", "--settings", "project.settings"],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    print("9. aiotaskq status:")
    for line in (status.stdout or status.stderr).splitlines():
        print(f"   {line}")
    if env.get("AIOTASKQ_DEMO_THROWAWAY_SERVER") == "1":
        print(
            f"   The database {database!r} is on the throwaway PostgreSQL that scripts/demo\n"
            "   started, and goes with it when the demo exits. To keep it for a look, run the\n"
            "   demo against a server of your own (PGHOST and PGPORT, or DATABASE_URL)."
        )
    else:
        variables = [f"{key}={env[key]}" for key in ("PGHOST", "PGPORT", "PGUSER") if env.get(key)]
        command = " ".join([*variables, f"EXAMPLE_DATABASE={database}", "aiotaskq status"])
        password = " (and PGPASSWORD)" if env.get("PGPASSWORD") else ""
        print(
            f"   The database {database!r} on {where} is kept; look at it again with{password}:\n"
            f"   cd examples/asgi_project && {command} --settings project.settings"
        )


if __name__ == "__main__":
    raise SystemExit(main())
