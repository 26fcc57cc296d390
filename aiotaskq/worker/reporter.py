"""Outcomes of attempts, written in batches: one statement per kind of outcome (success, kept
result, failure, retry or snooze, release) for everything that finished in the same few
milliseconds.

No outcome can hold the others back. A batch refused for a reason that is not the connection
(one outcome PostgreSQL will not store) is written again outcome by outcome; an outcome that is
still refused is written in a form that is always storable (a minimal error that says so), and
if even that is refused it is dropped with an error in the log: its task turns Dirty, which is
where a person looks. Outcomes are held only while the database cannot be reached.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence

from ..db import finish
from ..db.connect import WorkerDatabase, is_connection_error
from ..db.finish import Ack, Failed, KeptResult, Lease, Outcome, Released, Retried
from ..db.listen import channels_for, seats_payload
from ..db.sql import text
from ..errors import DatabaseError
from . import outcome as decide

__all__ = ["Reporter"]

logger = logging.getLogger(__name__)

_BACKOFF_MAX = 2.0
# The order of a flush: successes first (they free the most), releases last.
_KINDS: tuple[type, ...] = (Ack, KeptResult, Failed, Retried, Released)


class Reporter:
    """Collects outcomes and writes them. Outcomes that cannot be written (the database is
    away) are kept and written when it is back; the lease check discards the ones whose task
    was rescued meanwhile."""

    def __init__(self, db: WorkerDatabase, worker_id: str, flush_delay: float = 0.002) -> None:
        self._db = db
        self._worker_id = worker_id
        self._flush_delay = flush_delay
        self._outcomes: list[Outcome] = []
        self._writing: list[Outcome] = []
        self._pending = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        #: Outcomes written by the flushes so far (the outage log reports them).
        self.written = 0
        #: Called after every successful flush (the executor's backpressure listens).
        self.on_written: Callable[[], None] | None = None
        #: Tasks with a limit key in flight, and their queues: when their outcome is written
        #: their seat is free, and the queue's workers are told (docs/limits.md).
        self._limited: dict[uuid.UUID, str] = {}
        #: Called when a written outcome freed a seat (the fetcher claims again).
        self.on_seat_freed: Callable[[], None] | None = None

    @property
    def backlog(self) -> int:
        """Outcomes handed in and not written yet (those being written included)."""
        return len(self._outcomes) + len(self._writing)

    def add(self, item: Outcome) -> None:
        """Hand in one outcome; it is written within milliseconds."""
        self._outcomes.append(item)
        self._pending.set()
        self._idle.clear()

    def watch(self, task_id: uuid.UUID, queue: str) -> None:
        """Tell the queue's workers when this (limited) task's outcome is written."""
        self._limited[task_id] = queue

    def unwritten(self) -> list[Lease]:
        """Leases whose outcome is not written yet (the heartbeat keeps them alive)."""
        return [o.lease for o in self._writing] + [o.lease for o in self._outcomes]

    async def wait_idle(self) -> None:
        """Return once every outcome handed in so far is written."""
        await self._idle.wait()

    async def run(self) -> None:
        """Flush until cancelled; a flush that cannot reach the database keeps its outcomes
        and is tried again once the database is back."""
        backoff = 0.1
        while True:
            await self._pending.wait()
            # Let the outcomes of tasks finishing in the same moment join this batch.
            await asyncio.sleep(self._flush_delay)
            try:
                await self.flush()
                backoff = 0.1
            except DatabaseError as exc:
                logger.debug("reporter.flush_failed: %s", exc)
                await self._db.wait_available(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)

    async def flush(self) -> None:
        """Write everything handed in so far: one statement per kind of outcome.

        Raises:
            DatabaseError: the database could not be reached; what was not written is kept.
        """
        batch, self._outcomes = self._outcomes, []
        self._pending.clear()
        self._writing = batch
        sent = len(batch)
        written = 0
        groups = [[o for o in batch if type(o) is kind] for kind in _KINDS]
        try:
            for index, group in enumerate(groups):
                if group:
                    written += await self._write_group(group)
                    groups[index] = []
        except DatabaseError:
            # Put back what was not written, ahead of what arrived meanwhile.
            self._outcomes[:0] = [o for group in groups for o in group]
            self._pending.set()
            raise
        finally:
            self._writing = []
        self.written += sent
        if written < sent:
            # The lease check kept them out: their tasks were rescued, re-run or deleted
            # elsewhere while this worker held them (it was frozen, or cut off too long).
            logger.warning(
                "outcome.discarded: %d of %d outcomes were for tasks this worker no longer "
                "holds; they changed nothing",
                sent - written,
                sent,
                extra={"worker_id": self._worker_id},
            )
        if self.on_written is not None:
            self.on_written()
        if self._limited:
            await self._free_seats(batch)
        if not self._outcomes:
            self._idle.set()

    async def _free_seats(self, batch: Sequence[Outcome]) -> None:
        """After the outcomes of limited tasks are written (their seats are free with them),
        wake this worker's limited claim and notify their queues, so that the other workers'
        limited claims take the seats too (their ordinary claims are not woken: no ordinary
        task became ready). A notification that cannot be sent is only late: the workers
        look again within a second while a key waits for a seat."""
        queues = {q for o in batch if (q := self._limited.pop(o.lease[0], None)) is not None}
        if not queues:
            return
        if self.on_seat_freed is not None:
            self.on_seat_freed()
        try:
            async with self._db.connection("Announcing free seats") as conn:
                await conn.execute(
                    text("notify_limited"),
                    {"channels": channels_for(queues), "payload": seats_payload(self._worker_id)},
                )
        except DatabaseError as exc:
            logger.info(
                "limits.notify_failed: %s; the other workers find the free seats within a second",
                exc,
                extra={"worker_id": self._worker_id},
            )

    async def _write_group(self, group: list[Outcome]) -> int:
        try:
            return await self._write(group)
        except DatabaseError as exc:
            if is_connection_error(exc):
                raise
            if len(group) == 1:
                return await self._write_storable(group[0], exc)
            logger.warning(
                "outcome.batch_refused: %s; writing its %d outcomes one by one",
                exc,
                len(group),
                extra={"worker_id": self._worker_id},
            )
        written = 0
        for index, item in enumerate(group):
            try:
                written += await self._write([item])
            except DatabaseError as exc:
                if is_connection_error(exc):
                    # Keep what is left of the group for the next flush.
                    del group[:index]
                    raise
                written += await self._write_storable(item, exc)
        group.clear()
        return written

    async def _write_storable(self, item: Outcome, refused: DatabaseError) -> int:
        """Write ``item`` in a form that is always storable, or drop it."""
        replacement = _storable(
            item, f"The attempt's outcome could not be stored: {refused}", self._worker_id
        )
        logger.error(
            "outcome.not_storable: %s for task %s: %s; %s",
            type(item).__name__,
            item.lease[0],
            refused,
            "written as a minimal error instead"
            if replacement is not None
            else "dropped (the task will turn Dirty)",
            extra={"worker_id": self._worker_id, "task_id": str(item.lease[0])},
        )
        if replacement is None:
            return 0
        try:
            return await self._write([replacement])
        except DatabaseError as exc:
            if is_connection_error(exc):
                raise
            logger.error(
                "outcome.dropped: task %s: %s; the task will turn Dirty",
                item.lease[0],
                exc,
                extra={"worker_id": self._worker_id, "task_id": str(item.lease[0])},
            )
            return 0

    async def _write(self, group: Sequence[Outcome]) -> int:
        async with self._db.connection("Writing outcomes") as conn:
            return await finish.write(conn, group, self._worker_id)


def _storable(item: Outcome, message: str, worker_id: str) -> Outcome | None:
    """The same outcome with nothing of the task's in it, or None when there is nothing
    left to simplify (a refused ack or release says nothing of the task's)."""
    attempt = decide.Attempt(item.lease, "", "", 0, worker_id)
    if isinstance(item, KeptResult | Failed):
        return Failed(item.lease, decide.minimal_error_json(attempt, message))
    if isinstance(item, Retried):
        error = None if item.error is None else decide.minimal_error_json(attempt, message)
        return Retried(item.lease, item.queue, error, countdown=0.0)
    return None
