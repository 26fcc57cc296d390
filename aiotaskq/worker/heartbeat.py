"""One heartbeat for all in-flight tasks, and a watch on the event loop's lag."""

from __future__ import annotations

import asyncio
import logging
import time

from ..db import finish, workers
from ..db.connect import WorkerDatabase
from ..errors import DatabaseError, DatabaseUnreachable
from .executor import Executor
from .reporter import Reporter

__all__ = ["Heartbeat"]

logger = logging.getLogger(__name__)


class Heartbeat:
    """Every ``interval`` seconds, one statement refreshes ``alive_at`` of every task this
    worker holds (running, or finished with its outcome not yet written), and writes the
    progress its tasks set since the last beat (``set_progress``); another writes the
    worker's own row in the registry (``aiotaskq workers``), at once on start too.

    The beat also measures how late the loop woke it: a stall longer than a beat means a task
    blocked the loop (a blocking call inside ``async def``); it is logged with the names of
    the coroutine tasks that were running, since one of them is the culprit.
    """

    def __init__(
        self,
        db: WorkerDatabase,
        executor: Executor,
        reporter: Reporter,
        worker_id: str,
        interval: float,
        record: workers.WorkerRecord | None = None,
    ) -> None:
        self._db = db
        self._record = record
        self._executor = executor
        self._reporter = reporter
        self._worker_id = worker_id
        self._interval = interval

    async def run(self) -> None:
        """Beat until cancelled; a failed beat is logged and the next one tried."""
        await self.beat()  # the worker shows in the registry from its start
        while True:
            expected = time.monotonic() + self._interval
            await asyncio.sleep(self._interval)
            lag = time.monotonic() - expected
            self._executor.metrics.loop_lag = max(lag, 0.0)
            if lag > self._interval:
                names = sorted({j.name for j in self._executor.jobs.values() if not j.is_sync})
                logger.warning(
                    "loop.stalled: the event loop was blocked for %.2f s; coroutine tasks "
                    "running then: %s. A blocking call inside an async task stalls every "
                    "task and the heartbeat: move it to a sync task or sync_to_async.",
                    lag,
                    ", ".join(names) or "(none)",
                    extra={"lag_s": lag, "task_names": names, "worker_id": self._worker_id},
                )
            await self.beat()

    async def beat(self) -> None:
        leases = [j.lease for j in self._executor.jobs.values()] + self._reporter.unwritten()
        if not leases and self._record is None:
            return
        progress = self._executor.progress() if leases else {}
        try:
            async with self._db.connection("Writing the heartbeat") as conn:
                if self._record is not None:
                    await workers.beat(conn, self._record, len(self._executor.jobs))
                if not leases:
                    return
                held = await finish.heartbeat(conn, leases, self._worker_id, progress)
        except DatabaseUnreachable:
            self._executor.put_back_progress(progress)
            return  # the database.unreachable line has told
        except DatabaseError as exc:
            self._executor.put_back_progress(progress)
            logger.warning("heartbeat.failed: %s", exc, extra={"worker_id": self._worker_id})
            return
        lost = [lease for lease in leases if lease[0] not in held]
        for task_id, attempt in lost:
            job = self._executor.jobs.get(task_id)
            if job is not None and job.attempt == attempt:
                logger.warning(
                    "task.lease_lost: %s [%s] attempt %d is no longer held by this worker "
                    "(rescued, re-run or deleted elsewhere); its outcome will be discarded",
                    job.name,
                    task_id,
                    attempt,
                    extra={
                        "task_id": str(task_id),
                        "task_name": job.name,
                        "worker_id": self._worker_id,
                    },
                )
