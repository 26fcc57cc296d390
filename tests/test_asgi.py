"""A worker in the ASGI server's lifespan: under a real uvicorn (startup, requests that
enqueue, SIGTERM, several processes, no database, disabled), and the lifespan protocol driven
directly, with the worker connected to the real database."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.test import override_settings

import aiotaskq.asgi
from aiotaskq import ConfigurationError, InvalidQueueName, InvalidWorkerOptions
from aiotaskq.worker import Worker
from tests.app import tasks
from tests.app.models import Execution
from tests.conftest import ROOT, executions, wait_for


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _task_rows(db: Any) -> list[tuple[Any, ...]]:
    return db.execute("SELECT state, attempt FROM aiotaskq_task ORDER BY state").fetchall()


def _running(db: Any) -> int:
    return int(
        db.execute("SELECT count(*) FROM aiotaskq_task WHERE state = 'running'").fetchone()[0]
    )


# --- under uvicorn ---------------------------------------------------------------------------


class Uvicorn:
    """``python -m uvicorn tests.asgi_app:application`` on a free port; its log in a file."""

    def __init__(self, log_path: Path, args: list[str], env: dict[str, str]) -> None:
        self.port = _free_port()
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "tests.asgi_app:application",
                "--port",
                str(self.port),
                "--lifespan",
                "on",
                *args,
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_started(self, processes: int = 1) -> None:
        def started() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"uvicorn exited with {self.proc.returncode}:\n{self.log()}")
            return self.log().count("Application startup complete.") >= processes

        wait_for(started, 60, what="uvicorn to start")

    def post(self, path: str) -> dict[str, Any]:
        response = httpx.post(f"http://127.0.0.1:{self.port}{path}", timeout=10)
        assert response.status_code == 202, response.text
        return dict(response.json())

    def stop(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


@pytest.fixture
def uvicorn(tmp_path: Path) -> Iterator[Callable[..., Uvicorn]]:
    """Start uvicorn: ``uvicorn("--workers", "2", env={...}, wait=False)``."""
    started: list[Uvicorn] = []

    def start(*args: str, env: dict[str, str] | None = None, wait: bool = True) -> Uvicorn:
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        server = Uvicorn(tmp_path / f"uvicorn-{len(started)}.log", list(args), full_env)
        started.append(server)
        if wait:
            server.wait_started()
        return server

    yield start
    for server in started:
        server.close()


def test_a_request_enqueues_and_the_server_process_runs_the_task(uvicorn: Any, db: Any) -> None:
    server = uvicorn()
    assert "worker.started" in server.log()
    answer = server.post("/record/from-a-request/")
    # The view ran in the uvicorn process, and so did the task.
    assert answer["pid"] == server.proc.pid
    (row,) = wait_for(lambda: executions("from-a-request"), what="the task to run")
    assert row.pid == server.proc.pid
    # uvicorn re-raises SIGTERM once it has shut down cleanly.
    assert server.stop() == -signal.SIGTERM, server.log()
    log = server.log()
    assert "worker.stopped" in log
    assert "Application shutdown complete." in log
    assert _task_rows(db) == []


def test_sigterm_drains_the_worker_then_gives_back_what_is_left(uvicorn: Any, db: Any) -> None:
    server = uvicorn(env={"AIOTASKQ_TEST_GRACE": "3"})
    for i in range(3):
        server.post(f"/sleep/short-{i}/1/")
    for i in range(2):
        server.post(f"/sleep/long-{i}/60/")
    labels = [f"short-{i}" for i in range(3)] + [f"long-{i}" for i in range(2)]
    wait_for(lambda: all(executions(f"{label}:start") for label in labels), what="all to start")
    assert server.stop() == -signal.SIGTERM, server.log()
    # In-flight tasks finished within the grace period...
    for i in range(3):
        assert len(executions(f"short-{i}")) == 1
    # ... and those that could not were put back: queued again, the attempt counted.
    assert "worker.released: 2 unfinished tasks put back to queued" in server.log()
    assert _running(db) == 0
    assert _task_rows(db) == [("queued", 1), ("queued", 1)]


def test_two_server_processes_each_run_a_worker(uvicorn: Any, db: Any) -> None:
    server = uvicorn("--workers", "2", wait=False)
    server.wait_started(processes=2)
    log = server.log()
    assert log.count("worker.started") == 2, log
    children = {
        int(line.rsplit("[", 1)[1].split("]")[0])
        for line in log.splitlines()
        if "Started server process" in line
    }
    assert len(children) == 2
    assert server.proc.pid not in children
    labels = [f"multi-{i}" for i in range(20)]
    for label in labels:
        server.post(f"/record/{label}/")
    wait_for(lambda: all(executions(label) for label in labels), what="every task to run")
    ran_in = set()
    for label in labels:
        (row,) = executions(label)  # once each
        ran_in.add(row.pid)
    assert ran_in <= children
    server.stop()
    assert server.log().count("worker.stopped") == 2
    assert _task_rows(db) == []


def test_startup_fails_with_the_reason_when_the_database_is_unreachable(uvicorn: Any) -> None:
    server = uvicorn(env={"PGPORT": str(_free_port())}, wait=False)
    assert server.proc.wait(60) == 3
    log = server.log()
    assert "aiotaskq: the worker did not start: DatabaseError" in log
    assert "Application startup failed. Exiting." in log


def test_disabled_serves_without_a_worker(uvicorn: Any, db: Any) -> None:
    server = uvicorn(env={"AIOTASKQ_TEST_ASGI_WORKER": "0"})
    server.post("/record/nobody-runs-this/")
    assert server.stop() == -signal.SIGTERM, server.log()
    log = server.log()
    assert "worker.started" not in log
    assert "Application shutdown complete." in log
    # The server has exited: the task was never run, it waits for a worker.
    assert executions("nobody-runs-this") == []
    assert _task_rows(db) == [("queued", 0)]


# --- the lifespan protocol, driven directly ---------------------------------------------------


async def _not_called(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("the wrapped app must not see the lifespan scope")


class Lifespan:
    """The server's side of the lifespan protocol."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        self.task = asyncio.create_task(app(scope, self.inbox.get, self.sent.put))

    async def event(self, kind: str) -> dict[str, Any]:
        await self.inbox.put({"type": f"lifespan.{kind}"})
        return await asyncio.wait_for(self.sent.get(), 60)


async def _eventually(check: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := await check()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout} s")
        await asyncio.sleep(0.02)
    return value


def _worker_tasks() -> list[str]:
    """The names of the tasks of ``with_worker``'s worker: its run() and what it started
    (pools, listener, heartbeat, reporter)."""
    return sorted(t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("aiotaskq"))


async def test_lifespan_runs_a_worker_on_the_servers_loop(db: Any) -> None:
    lifespan = Lifespan(aiotaskq.asgi.with_worker(_not_called, concurrency=5, threads=1))
    assert await lifespan.event("startup") == {"type": "lifespan.startup.complete"}
    assert "aiotaskq-asgi-worker" in _worker_tasks()
    await tasks.record.adelay("same-loop")
    row = await _eventually(lambda: Execution.objects.filter(label="same-loop").afirst())
    assert row.pid == os.getpid()
    assert await lifespan.event("shutdown") == {"type": "lifespan.shutdown.complete"}
    await lifespan.task
    assert _worker_tasks() == []
    assert _task_rows(db) == []


async def test_other_scopes_pass_through_untouched() -> None:
    seen: list[tuple[Any, Any, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send))

    wrapped = aiotaskq.asgi.with_worker(app)
    for kind in ("http", "websocket"):
        scope, receive, send = {"type": kind}, object(), object()
        await wrapped(scope, receive, send)  # type: ignore[arg-type]
        assert seen[-1][0] is scope
        assert seen[-1][1] is receive
        assert seen[-1][2] is send
    assert _worker_tasks() == []


async def test_a_worker_that_cannot_start_fails_the_startup_with_the_reason() -> None:
    broken = {**settings.AIOTASKQ, "IMPORTS": ["tests.no_such_module"]}
    with override_settings(AIOTASKQ=broken):
        lifespan = Lifespan(aiotaskq.asgi.with_worker(_not_called))
        message = await lifespan.event("startup")
        await lifespan.task
    assert message["type"] == "lifespan.startup.failed"
    assert "ModuleNotFoundError" in message["message"]
    assert "tests.no_such_module" in message["message"]
    assert _worker_tasks() == []


async def test_disabled_completes_the_lifespan_without_a_worker() -> None:
    lifespan = Lifespan(aiotaskq.asgi.with_worker(_not_called, enabled=False))
    assert await lifespan.event("startup") == {"type": "lifespan.startup.complete"}
    assert _worker_tasks() == []
    assert await lifespan.event("shutdown") == {"type": "lifespan.shutdown.complete"}
    await lifespan.task


async def test_the_context_manager_drains_then_gives_back(db: Any) -> None:
    async with aiotaskq.asgi.lifespan(concurrency=5, threads=1, grace=0.5) as worker:
        assert isinstance(worker, Worker)
        assert worker.ready is not None
        assert worker.ready.is_set()
        await tasks.sleep_then_record.adelay("cm-short", 0)
        await tasks.sleep_then_record.adelay("cm-long", 60)

        async def both_ran() -> bool:
            labels = ["cm-short", "cm-long:start"]
            return await Execution.objects.filter(label__in=labels).acount() == 2

        await _eventually(both_ran)
    assert _worker_tasks() == []
    assert _running(db) == 0
    assert _task_rows(db) == [("queued", 1)]


async def test_cancelled_while_draining_gives_back_at_once(
    db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiotaskq")
    leave = asyncio.Event()

    async def serve() -> None:
        async with aiotaskq.asgi.lifespan(concurrency=5, threads=1, grace=60):
            await tasks.sleep_then_record.adelay("cancelled-drain", 60)
            await leave.wait()

    task = asyncio.create_task(serve())
    await _eventually(lambda: Execution.objects.filter(label="cancelled-drain:start").aexists())
    leave.set()

    async def draining() -> bool:
        return any("worker.draining" in r.getMessage() for r in caplog.records)

    await _eventually(draining)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The rest of the 60 s grace period was skipped, as by a second SIGTERM, and the task
    # put back before the cancellation went on.
    messages = [r.getMessage() for r in caplog.records]
    assert any("worker.stopping_now" in m for m in messages), messages
    assert any("worker.released: 1 unfinished tasks" in m for m in messages), messages
    assert _worker_tasks() == []
    assert _running(db) == 0
    assert _task_rows(db) == [("queued", 1)]


async def test_caps_make_lanes_in_the_servers_worker(db: Any) -> None:
    """``caps`` are ``--queues exports:1,critical``: the one export slot is never the
    critical queue's, and the second export waits for the first."""
    async with aiotaskq.asgi.lifespan(
        concurrency=3, threads=1, grace=0.5, queues=["exports", "critical"], caps={"exports": 1}
    ) as worker:
        assert worker is not None
        assert str(worker.lanes) == "exports:1, critical (sharing 2)"
        for label in ("export-1", "export-2"):
            await aiotaskq.aenqueue_many(
                [tasks.sleep_then_record.s(label, 60).set(queue="exports")]
            )
        await _eventually(lambda: Execution.objects.filter(label__endswith=":start").aexists())
        await tasks.record.adelay("urgent")  # the default queue is not served
        await aiotaskq.aenqueue_many([tasks.record.s("critical").set(queue="critical")])
        await _eventually(lambda: Execution.objects.filter(label="critical").aexists())
        started = [e.label async for e in Execution.objects.filter(label__endswith=":start")]
        assert len(started) == 1, started
    assert sorted(_task_rows(db)) == [("queued", 0), ("queued", 0), ("queued", 1)]


def test_bad_options_fail_when_the_app_is_built() -> None:
    with pytest.raises(ConfigurationError, match="concurrency"):
        aiotaskq.asgi.with_worker(_not_called, concurrency=0)
    with pytest.raises(ConfigurationError, match="list of queue names"):
        aiotaskq.asgi.with_worker(_not_called, queues="default")
    with pytest.raises(InvalidQueueName):
        aiotaskq.asgi.lifespan(queues=["no spaces"])
    with pytest.raises(InvalidWorkerOptions, match="add up to 12, more than the concurrency of 10"):
        aiotaskq.asgi.with_worker(
            _not_called, concurrency=10, queues=["a", "b"], caps={"a": 6, "b": 6}
        )
    with pytest.raises(InvalidWorkerOptions, match="'b', which this worker does not serve"):
        aiotaskq.asgi.lifespan(queues=["a"], caps={"b": 1})
    with pytest.raises(ConfigurationError, match="caps must map queue names"):
        aiotaskq.asgi.lifespan(queues=["a"], caps=[("a", 1)])  # type: ignore[arg-type]
