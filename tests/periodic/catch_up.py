"""Two schedules of every second that differ only in what they do after a downtime."""

from __future__ import annotations

import os

from aiotaskq import current_task, periodic, task
from tests.app.models import Execution


async def _record(label: str) -> None:
    ctx = current_task()
    assert ctx.scheduled_for is not None
    await Execution.objects.acreate(
        label=label, pid=os.getpid(), value=ctx.scheduled_for.isoformat()
    )


@periodic(every=1, catch_up="all")
@task
async def catch_up_all() -> None:
    await _record("all")


@periodic(every=1, catch_up="latest")
@task
async def catch_up_latest() -> None:
    await _record("latest")


@periodic(every=1, catch_up="none", name="catch-up-none", kwargs={"label": "none"})
@task
async def catch_up_none(label: str) -> None:
    await _record(label)
