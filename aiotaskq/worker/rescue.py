"""Rerunning Dirty tasks of the names that opted in with ``@task(on_dirty="retry")``."""

from __future__ import annotations

import logging
import time

from ..db import finish
from ..db.connect import WorkerDatabase
from ..tasks.registry import registered

__all__ = ["Rescuer", "rescue_policies"]

logger = logging.getLogger(__name__)


def rescue_policies() -> dict[str, int | None]:
    """Name -> max_retries of every registered task with ``on_dirty="retry"``."""
    return {
        name: task.policy.max_retries
        for name, task in registered().items()
        if task.on_dirty == "retry"
    }


class Rescuer:
    """Every half ``DIRTY_AFTER``, requeues the Dirty tasks of the opted-in names in this
    worker's queues (the lost attempt is recorded as an error and counts as a retry; a task
    with no retry left is Failed instead). Any number of workers may do this at once: the
    statement is a compare-and-set, so each Dirty attempt is rescued once.

    After the database was unreachable (or when this worker has just connected), every
    worker's tasks may look Dirty at once, because no heartbeat got through: the rescuer
    then waits ``DIRTY_AFTER`` from the moment the database answered again, so the other
    workers' heartbeats have resumed before it judges anything.
    """

    def __init__(
        self, db: WorkerDatabase, queues: list[str], dirty_after: float, worker_id: str
    ) -> None:
        self._db = db
        self._queues = queues
        self._dirty_after = dirty_after
        self._worker_id = worker_id

    @property
    def interval(self) -> float:
        return max(0.5, self._dirty_after / 2)

    async def rescue_once(self) -> int:
        policies = rescue_policies()
        if not policies:
            return 0
        if time.monotonic() - self._db.reachable_since < self._dirty_after:
            return 0
        async with self._db.connection("Rescuing Dirty tasks") as conn:
            rows = await finish.rescue(
                conn, policies, self._queues, self._dirty_after, self._worker_id
            )
        for task_id, name, queue, state in rows:
            logger.warning(
                "task.rescued: Dirty task %s [%s] %s",
                name,
                task_id,
                "queued again" if state == "queued" else "failed (no retry left)",
                extra={
                    "task_id": str(task_id),
                    "task_name": name,
                    "queue": queue,
                    "worker_id": self._worker_id,
                },
            )
        return len(rows)
