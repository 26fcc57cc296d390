"""Helpers for tests of ``aiotaskq run --processes``: start a supervisor, read its log, and
make sure that neither it nor any of its children outlives the test."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import WorkerProcess, wait_for

_CHILD = re.compile(r"supervisor\.child_started: process (\d+) pid (\d+)")


def child_pids(proc: WorkerProcess) -> list[tuple[int, int]]:
    """``(process number, pid)`` of every child the supervisor started, in order."""
    return [(int(n), int(pid)) for n, pid in _CHILD.findall(proc.log())]


def wait_children_started(proc: WorkerProcess, count: int, timeout: float = 60) -> None:
    """Wait until ``count`` workers (in all, replacements included) logged worker.started."""

    def started() -> bool:
        if proc.proc.poll() is not None:
            raise AssertionError(
                f"the supervisor exited with {proc.proc.returncode}:\n{proc.log()}"
            )
        return proc.log().count("worker.started") >= count

    wait_for(started, timeout, what=f"{count} worker processes to start")


def _is_our_child(pid: int) -> bool:
    try:
        return b"--supervised" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@pytest.fixture
def supervisor(worker: Any) -> Iterator[Callable[..., WorkerProcess]]:
    """``supervisor("--processes", "2", ...)``: ``aiotaskq run`` started without waiting. At
    the end of the test the supervisor is stopped (a second signal skips the grace) and any
    child still running is killed."""
    started: list[WorkerProcess] = []

    def start(*args: str, **kwargs: Any) -> WorkerProcess:
        proc = worker(*args, wait=False, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.proc.poll() is None:
            proc.signal(signal.SIGTERM)
            with suppress(AssertionError):
                wait_for(lambda proc=proc: "supervisor.stopping" in proc.log(), timeout=5)
            proc.signal(signal.SIGINT)
            with suppress(Exception):
                proc.wait(30)
        for _, pid in child_pids(proc):
            if _is_our_child(pid):
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
