"""A schedule of every second whose runs take longer than a second, and skip the ticks that
come while one runs."""

from __future__ import annotations

import asyncio
import os

from aiotaskq import current_task, periodic, task
from tests.app.models import Execution


@periodic(every=1, overlap="skip")
@task
async def slow_tick() -> None:
    ctx = current_task()
    assert ctx.scheduled_for is not None
    await Execution.objects.acreate(
        label="slow", pid=os.getpid(), value=ctx.scheduled_for.isoformat()
    )
    await asyncio.sleep(2.5)


@periodic(cron="0 3 * * *", tz="Europe/Riga", name="nightly")
@task
def nightly_report() -> None:
    """Listed by `aiotaskq schedules`; never due in a test."""
