"""Periodic schedules: every worker enqueues the due ticks of the schedules it imported.

No leader. Each second a worker reads the rows of its schedules (``schedule_sync``, which
also makes the row of a schedule seen for the first time), works out the due ticks of each
by its ``catch_up`` (:meth:`aiotaskq.tasks.periodic.Schedule.due`), and enqueues them oldest
first with ``schedule_fire``: a compare-and-set of the schedule's last tick in the statement
that inserts the task. Of several workers that try the same tick, one moves the schedule on
and inserts the task; the others find it moved, insert nothing, and go on to the next
schedule. A paused schedule does not move.
"""

from __future__ import annotations

import logging

from ..db import schedules as db_schedules
from ..db.connect import WorkerDatabase
from ..serialization import encode
from ..tasks.periodic import schedules

__all__ = ["Scheduler"]

logger = logging.getLogger(__name__)


class Scheduler:
    """Enqueues the due ticks of this process's schedules (every second, from the worker)."""

    interval = 1.0

    def __init__(self, db: WorkerDatabase, worker_id: str) -> None:
        self._db = db
        self._worker_id = worker_id

    async def enqueue_due(self) -> int:
        """Enqueue what is due now; return how many tasks this worker inserted."""
        known = schedules()
        if not known:
            return 0
        inserted = 0
        async with self._db.connection("Enqueueing periodic tasks") as conn:
            rows = {
                r.name: r
                for r in await db_schedules.sync(
                    conn, [s.name for s in known], [s.task.name for s in known]
                )
            }
            for schedule in known:
                row = rows.get(schedule.name)
                if row is None or row.paused:
                    continue
                expected = row.last_tick
                for tick in schedule.due(row.last_tick or row.now, row.now):
                    moved, added = await db_schedules.fire(
                        conn,
                        db_schedules.Fire(
                            schedule=schedule.name,
                            expected=expected,
                            tick=tick,
                            name=schedule.task.name,
                            queue=schedule.task.queue,
                            priority=schedule.task.priority,
                            args=encode(list(schedule.args)),
                            kwargs=encode(dict(schedule.kwargs)),
                            time_limit=None,
                            skip_overlap=schedule.overlap == "skip",
                        ),
                    )
                    if not moved:
                        break  # another worker enqueued it (or it was paused): theirs
                    expected = tick
                    extra = {
                        "worker_id": self._worker_id,
                        "schedule": schedule.name,
                        "task_name": schedule.task.name,
                        "tick": tick.isoformat(),
                    }
                    if added:
                        inserted += 1
                        logger.info(
                            "schedule.enqueued: %s for %s",
                            schedule.name,
                            tick.isoformat(),
                            extra=extra,
                        )
                    else:
                        logger.info(
                            "schedule.skipped: %s for %s: its previous run is still queued or "
                            'running (overlap="skip")',
                            schedule.name,
                            tick.isoformat(),
                            extra=extra,
                        )
        return inserted
