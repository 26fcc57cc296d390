"""Outcomes of attempts, written in batches: one ``ack`` statement for many successes, one
``fail`` statement for many failures and one ``retry`` statement for many retries and
snoozes, flushed within milliseconds."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from ..db import finish
from ..db.connect import recover
from ..errors import DatabaseError

__all__ = ["Reporter"]

logger = logging.getLogger(__name__)

Lease = finish.Lease
_BACKOFF_MAX = 2.0


class Reporter:
    """Collects outcomes and writes them. Outcomes that cannot be written (the database is
    away) are kept and written when it is back; the lease check discards the ones whose task
    was rescued meanwhile."""

    def __init__(
        self,
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]],
        worker_id: str,
        flush_delay: float = 0.002,
    ) -> None:
        self._pool = pool
        self._worker_id = worker_id
        self._flush_delay = flush_delay
        self._acks: list[Lease] = []
        self._fails: list[tuple[Lease, str]] = []
        self._retries: list[finish.Reschedule] = []
        self._kept: list[finish.Kept] = []
        self._pending = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._writing = 0  # outcomes of the flush in progress
        #: Called after every successful flush (the executor's backpressure listens).
        self.on_written: Callable[[], None] | None = None

    @property
    def backlog(self) -> int:
        """Outcomes handed in and not written yet (those being written included)."""
        return (
            len(self._acks) + len(self._fails) + len(self._retries) + len(self._kept)
        ) + self._writing

    def ack(self, lease: Lease) -> None:
        self._acks.append(lease)
        self._pending.set()
        self._idle.clear()

    def fail(self, lease: Lease, error: str) -> None:
        self._fails.append((lease, error))
        self._pending.set()
        self._idle.clear()

    def succeed(self, item: finish.Kept) -> None:
        self._kept.append(item)
        self._pending.set()
        self._idle.clear()

    def reschedule(self, item: finish.Reschedule) -> None:
        self._retries.append(item)
        self._pending.set()
        self._idle.clear()

    def unwritten(self) -> list[Lease]:
        """Leases whose outcome is not written yet (the heartbeat keeps them alive)."""
        return self._acks + [lease for lease, _ in self._fails] + [r.lease for r in self._retries]

    async def wait_idle(self) -> None:
        """Return once every outcome handed in so far is written."""
        await self._idle.wait()

    async def run(self) -> None:
        """Flush until cancelled; a failed flush keeps its outcomes and is retried."""
        backoff = 0.1
        while True:
            await self._pending.wait()
            # Let the outcomes of tasks finishing in the same moment join this batch.
            await asyncio.sleep(self._flush_delay)
            try:
                await self.flush()
                backoff = 0.1
            except DatabaseError as exc:
                await recover(self._pool)
                logger.warning(
                    "reporter.flush_failed: %s; %d outcomes kept, retrying in %.1f s",
                    exc,
                    len(self.unwritten()),
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)

    async def flush(self) -> None:
        """Write everything collected so far in at most four statements."""
        acks, fails, retries, kept = self._acks, self._fails, self._retries, self._kept
        self._acks, self._fails, self._retries, self._kept = [], [], [], []
        self._pending.clear()
        self._writing = sent = len(acks) + len(fails) + len(retries) + len(kept)
        written = 0
        try:
            async with self._pool.connection() as conn:
                if acks:
                    written += await finish.ack(conn, acks, self._worker_id)
                    acks = []
                if fails:
                    written += await finish.fail(
                        conn, [f[0] for f in fails], [f[1] for f in fails], self._worker_id
                    )
                    fails = []
                if retries:
                    written += await finish.retry(conn, retries, self._worker_id)
                    retries = []
                if kept:
                    written += await finish.succeed(conn, kept, self._worker_id)
                    kept = []
        except (DatabaseError, psycopg.Error, OSError) as exc:
            # Put back what was not written, ahead of what arrived meanwhile.
            self._acks[:0] = acks
            self._fails[:0] = fails
            self._retries[:0] = retries
            self._kept[:0] = kept
            self._pending.set()
            if isinstance(exc, DatabaseError):
                raise
            raise DatabaseError(f"Writing outcomes failed: {exc}") from exc
        finally:
            self._writing = 0
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
        if not (self._acks or self._fails or self._retries or self._kept):
            self._idle.set()
