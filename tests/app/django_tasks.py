"""Tasks of Django's tasks framework (Django >= 6.0), run by aiotaskq workers."""

from __future__ import annotations

import os
from typing import Any

from django.tasks import TaskContext
from django.tasks import task as django_task
from django.tasks.signals import task_finished, task_started

from aiotaskq.backend import task as aiotaskq_django_task

from .models import Execution


@django_task
def dj_add(x: int, y: int) -> int:
    return x + y


@django_task(priority=10, queue_name="default")
async def dj_async_echo(value: Any) -> Any:
    return {"echo": value}


@django_task
def dj_fail(message: str) -> None:
    raise ValueError(message)


@aiotaskq_django_task(takes_context=True, max_retries=2, retry_delay=0.1, retry_jitter=False)
async def dj_flaky(context: TaskContext, label: str) -> int:
    """Fails on its first attempt; records the attempt number Django's context gives."""
    await Execution.objects.acreate(label=label, pid=os.getpid(), value=context.attempt)
    if context.attempt < 2:
        raise RuntimeError("first attempt fails")
    return context.attempt


def _record_signal(sender: Any, task_result: Any, **kwargs: Any) -> None:
    if task_result.task.name == "dj_add":
        Execution.objects.create(
            label=f"signal:{kwargs['signal_name']}:{task_result.id}",
            pid=os.getpid(),
            value=str(task_result.status),
        )


def _started(sender: Any, task_result: Any, **kwargs: Any) -> None:
    _record_signal(sender, task_result, signal_name="started")


def _finished(sender: Any, task_result: Any, **kwargs: Any) -> None:
    _record_signal(sender, task_result, signal_name="finished")


task_started.connect(_started, dispatch_uid="tests.started")
task_finished.connect(_finished, dispatch_uid="tests.finished")
