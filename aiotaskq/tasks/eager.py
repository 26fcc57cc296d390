"""Eager mode: run tasks at once in the caller, as Celery's ``task_always_eager`` does.

The arguments still go through JSON (and back), so a test fails where production would.
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence

from asgiref.sync import async_to_sync, sync_to_async

from ..conf import get_settings
from ..db.enqueue import TaskRow
from ..serialization import decode_arguments
from .context import eager_context, running
from .registry import get_task
from .result import EagerResult

__all__ = ["arun_eagerly", "run_eagerly"]


def _failed(row: TaskRow, exc: Exception) -> EagerResult:
    if get_settings().EAGER_PROPAGATES:
        raise exc
    return EagerResult(row.id, exception=exc, traceback="".join(traceback.format_exception(exc)))


def run_eagerly(rows: Sequence[TaskRow]) -> list[EagerResult]:
    """Run each row's task now, from sync code (a coroutine task via ``async_to_sync``)."""
    results = []
    for row in rows:
        task = get_task(row.name)
        args, kwargs = decode_arguments(row.args, row.kwargs)
        try:
            fn = async_to_sync(task.fn) if task.is_async else task.fn
            with running(eager_context(row.id, row.name, row.queue)):
                value = fn(*args, **kwargs)
            results.append(EagerResult(row.id, value=value))
        except Exception as exc:
            results.append(_failed(row, exc))
    return results


async def arun_eagerly(rows: Sequence[TaskRow]) -> list[EagerResult]:
    """Run each row's task now, from async code (a plain function via ``sync_to_async``)."""
    results = []
    for row in rows:
        task = get_task(row.name)
        args, kwargs = decode_arguments(row.args, row.kwargs)
        try:
            with running(eager_context(row.id, row.name, row.queue)):
                if task.is_async:
                    value = await task.fn(*args, **kwargs)
                else:
                    value = await sync_to_async(task.fn)(*args, **kwargs)
            results.append(EagerResult(row.id, value=value))
        except Exception as exc:
            results.append(_failed(row, exc))
    return results
