"""A schedule of every second whose runs write down the tick they are for."""

from __future__ import annotations

import os

from aiotaskq import current_task, periodic, task
from tests.app.models import Execution


@periodic(every=1)
@task
async def tick() -> None:
    ctx = current_task()
    assert ctx.scheduled_for is not None
    await Execution.objects.acreate(
        label="tick", pid=os.getpid(), value=ctx.scheduled_for.isoformat()
    )
