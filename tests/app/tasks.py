"""Tasks the test suite runs in real worker processes. Each writes the ledger
(:class:`tests.app.models.Execution`), so a test can see what ran, where, and how often."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from aiotaskq import task

from .models import Execution


@task
async def record(label: str, value: Any = None) -> None:
    await Execution.objects.acreate(label=label, pid=os.getpid(), value=value)


@task
def record_sync(label: str, value: Any = None) -> None:
    Execution.objects.create(label=label, pid=os.getpid(), value=value)


@task(queue="a")
async def record_a(label: str) -> None:
    await Execution.objects.acreate(label=label, pid=os.getpid())


@task(queue="b")
async def record_b(label: str) -> None:
    await Execution.objects.acreate(label=label, pid=os.getpid())


@task
async def sleep_then_record(label: str, seconds: float) -> None:
    await Execution.objects.acreate(label=f"{label}:start", pid=os.getpid())
    await asyncio.sleep(seconds)
    await Execution.objects.acreate(label=label, pid=os.getpid())


@task
def sleep_sync_then_record(label: str, seconds: float) -> None:
    Execution.objects.create(label=f"{label}:start", pid=os.getpid())
    time.sleep(seconds)
    Execution.objects.create(label=label, pid=os.getpid())


@task
async def fail(label: str) -> None:
    await Execution.objects.acreate(label=label, pid=os.getpid())
    raise RuntimeError(f"failing on purpose: {label}")


@task
async def types(label: str, *args: Any, **kwargs: Any) -> None:
    """Record the Python type and repr of every argument, as the task received it."""
    seen = [[type(v).__name__, repr(v)] for v in args]
    seen += [[k, type(v).__name__, repr(v)] for k, v in sorted(kwargs.items())]
    await Execution.objects.acreate(label=label, pid=os.getpid(), value=seen)


@task
async def noop() -> None:
    return None
