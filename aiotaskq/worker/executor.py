"""Running claimed tasks: coroutines on the loop, plain functions in a bounded thread pool,
under one concurrency limit. Each outcome goes to the reporter."""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import json
import logging
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django import db as django_db
from django.db import close_old_connections

from ..db import finish
from ..db.claim import Claimed
from ..errors import Revoked, TimeLimitExceeded
from ..retry import Decision, Retry, Snooze
from ..serialization import decode_arguments
from ..tasks.registry import get_task
from ..tasks.task import Attempt, Task
from .dbthreads import DatabaseThreads
from .reporter import Reporter

__all__ = ["Executor", "Job"]

logger = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class Job:
    """A claimed attempt while this worker runs it."""

    id: uuid.UUID
    name: str
    queue: str
    attempt: int
    #: Failed attempts before this one (retries already spent).
    retries: int = 0
    #: This call's own time limit, if it was enqueued with one.
    time_limit: float | None = None
    started: float = field(default_factory=time.monotonic)
    is_sync: bool = False
    handle: asyncio.Task[None] | None = None
    #: Cancelled by a graceful stop before it finished: its row is to be released.
    released: bool = False
    #: Cancelled because it was revoked.
    revoked: bool = False

    @property
    def lease(self) -> tuple[uuid.UUID, int]:
        return self.id, self.attempt


def _call_sync(fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
    # In the pool thread: the same connection hygiene as a Django request.
    close_old_connections()
    try:
        return fn(*args, **kwargs)
    finally:
        close_old_connections()


def error_record(
    job: Job,
    exc: BaseException,
    worker_id: str,
    reason: str | None = None,
    outcome: str = "failed",
) -> str:
    """The JSON kept in the row's ``errors`` for a failed attempt; ``outcome`` says what
    became of it (retried when, or failed and why)."""
    return json.dumps(
        {
            "attempt": job.attempt,
            "outcome": outcome,
            "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "message": reason or str(exc),
            "traceback": "".join(traceback.format_exception(exc)),
            "worker_id": worker_id,
            "at": dt.datetime.now(dt.UTC).isoformat(),
        }
    )


class Executor:
    """Starts jobs and tracks them until their outcome is handed to the reporter."""

    def __init__(
        self,
        concurrency: int,
        threads: int,
        reporter: Reporter,
        worker_id: str,
        db: DatabaseThreads,
    ) -> None:
        self._db = db
        self.capacity = concurrency
        self.jobs: dict[uuid.UUID, Job] = {}
        self._reporter = reporter
        self._worker_id = worker_id
        self._threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="aiotaskq")
        self._slot_freed = asyncio.Event()
        reporter.on_written = self._slot_freed.set  # written outcomes free slots too
        self._empty = asyncio.Event()
        self._empty.set()
        # Set when the jobs still running are being given back: their cancellation is then
        # not a failure, and their rows are released instead.
        self.releasing = False

    @property
    def free(self) -> int:
        # Backpressure: outcomes not yet written beyond one batch of ``capacity`` take slots,
        # so a worker whose acks fall behind (the database is slow) stops claiming more than
        # it can report, instead of piling up running rows and outcomes in memory.
        unwritten = self._reporter.backlog - self.capacity
        return self.capacity - len(self.jobs) - (unwritten if unwritten > 0 else 0)

    async def wait_for_slots(self, at_least: int) -> None:
        """Return once ``at_least`` slots are free (or all are)."""
        need = min(at_least, self.capacity)
        while self.free < need:
            self._slot_freed.clear()
            await self._slot_freed.wait()

    async def wait_empty(self) -> None:
        await self._empty.wait()

    def start(self, rows: list[Claimed]) -> None:
        """Start a job for each claimed row (expired rows are only logged)."""
        loop = asyncio.get_running_loop()
        for row in rows:
            if row.expired:
                logger.info(
                    "task.expired: %s [%s] dropped unrun",
                    row.name,
                    row.id,
                    extra={"task_id": str(row.id), "task_name": row.name, "queue": row.queue},
                )
                continue
            job = Job(
                id=row.id,
                name=row.name,
                queue=row.queue,
                attempt=row.attempt or 1,
                retries=row.retries or 0,
                time_limit=row.time_limit,
            )
            self.jobs[job.id] = job
            self._empty.clear()
            job.handle = loop.create_task(self._run(job, row.args or "[]", row.kwargs or "{}"))

    async def _run(self, job: Job, args_json: str, kwargs_json: str) -> None:
        task: Task[Any, Any] | None = None
        try:
            task = get_task(job.name)
            args, kwargs = decode_arguments(args_json, kwargs_json)
            if task.wants_attempt:
                args.insert(
                    0, Attempt(task_id=job.id, number=job.attempt, worker_id=self._worker_id)
                )
            limit = job.time_limit or task.time_limit
            if task.is_async:
                value = await self._run_async(task.fn, args, kwargs, limit)
            else:
                job.is_sync = True
                value = await self._run_sync(job, task.fn, args, kwargs, limit)
            kept = None
            if task.result_retention is not None:
                kept = finish.Kept(job.lease, json.dumps(value), task.result_retention)
        except asyncio.CancelledError:
            if job.revoked:
                self._fail(job, None, Revoked("revoked while running"), args_json, kwargs_json)
            elif self.releasing:
                # Given back by a graceful stop: the lifecycle releases the row. (A sync
                # task's thread cannot be interrupted: it runs on, and its late outcome is
                # discarded by the lease check.)
                job.released = True
            else:
                raise
        except Snooze as snooze:
            self._reporter.reschedule(
                finish.Reschedule(job.lease, job.queue, None, snooze.seconds, None)
            )
            logger.info(
                "task.snoozed: %s [%s] runs again in %.1f s",
                job.name,
                job.id,
                snooze.seconds,
                extra=self._extra(job),
            )
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            self._fail(job, task, exc, args_json, kwargs_json)
        else:
            if kept is None:
                self._reporter.ack(job.lease)
            else:
                self._reporter.succeed(kept)
        finally:
            self._finished(job)

    async def _run_async(
        self,
        fn: Callable[..., Any],
        args: list[Any],
        kwargs: dict[str, Any],
        limit: float | None,
    ) -> Any:
        # The task's ORM calls all go to one of the worker's database threads.
        slot = self._db.acquire()
        try:
            context = self._db.bind(slot)
            if context is None:
                return await _run_coroutine(fn, args, kwargs, limit)
            async with context:
                return await _run_coroutine(fn, args, kwargs, limit)
        except django_db.Error:
            self._db.repair(slot)
            raise
        finally:
            self._db.release(slot)

    async def _run_sync(
        self,
        job: Job,
        fn: Callable[..., Any],
        args: list[Any],
        kwargs: dict[str, Any],
        limit: float | None,
    ) -> Any:
        watchdog = None
        if limit is not None:
            watchdog = asyncio.get_running_loop().call_later(
                limit, self._sync_over_limit, job, limit
            )
        try:
            return await sync_to_async(_call_sync, thread_sensitive=False, executor=self._threads)(
                fn, args, kwargs
            )
        finally:
            if watchdog is not None:
                watchdog.cancel()

    def _sync_over_limit(self, job: Job, limit: float) -> None:
        logger.warning(
            "task.time_limit_exceeded: %s [%s] has run past its time limit of %g s; a plain "
            "function cannot be interrupted, so it runs on and keeps its thread's slot",
            job.name,
            job.id,
            limit,
            extra=self._extra(job),
        )

    def _fail(
        self,
        job: Job,
        task: Task[Any, Any] | None,
        exc: BaseException,
        args_json: str,
        kwargs_json: str,
    ) -> None:
        """Record a failed attempt: retried if the task's policy says so, else Failed."""
        reason = _reason(task.fn if task else None, exc, args_json, kwargs_json)
        decision = Decision(action="fail")
        if task is not None and reason is None:
            decision = task.policy.decide(exc, job.retries)
        recorded = exc.exc if isinstance(exc, Retry) and exc.exc is not None else exc
        if decision.action == "retry":
            when = (
                f"at {decision.eta.isoformat()}"
                if decision.eta
                else (f"in {decision.countdown:.1f} s")
            )
            outcome = f"retry {job.retries + 1} {when}"
            self._reporter.reschedule(
                finish.Reschedule(
                    job.lease,
                    job.queue,
                    error_record(job, recorded, self._worker_id, reason, outcome),
                    decision.countdown,
                    decision.eta,
                )
            )
        else:
            outcome = _final_outcome(task, exc, job.retries, reason)
            self._reporter.fail(
                job.lease, error_record(job, recorded, self._worker_id, reason, outcome)
            )
        logger.warning(
            "task.%s: %s [%s] attempt %d: %s: %s (%s)",
            "retry" if decision.action == "retry" else "failed",
            job.name,
            job.id,
            job.attempt,
            type(recorded).__name__,
            recorded,
            outcome,
            extra=self._extra(job),
        )

    def revoke(self, task_id: uuid.UUID) -> None:
        """Cancel the job of ``task_id`` if this worker runs it as a coroutine."""
        job = self.jobs.get(task_id)
        if job is None or job.handle is None:
            return
        if job.is_sync:
            logger.warning(
                "task.revoke_too_late: %s [%s] is a plain function already running; it "
                "cannot be interrupted and will finish",
                job.name,
                job.id,
                extra=self._extra(job),
            )
            return
        logger.info("task.revoked: %s [%s] cancelled", job.name, job.id, extra=self._extra(job))
        job.revoked = True
        job.handle.cancel()

    def _finished(self, job: Job) -> None:
        if self.jobs.pop(job.id, None) is not None:
            self._slot_freed.set()
            if not self.jobs:
                self._empty.set()

    def _extra(self, job: Job) -> dict[str, Any]:
        return {
            "task_id": str(job.id),
            "task_name": job.name,
            "queue": job.queue,
            "worker_id": self._worker_id,
            "attempt": job.attempt,
        }

    async def give_back(self, timeout: float) -> list[Job]:
        """Cancel the coroutine jobs still running and wait (up to ``timeout``) for them to
        stop. Return the jobs whose rows must be released: the cancelled ones, and the sync
        ones still running in their thread (which cannot be interrupted)."""
        self.releasing = True
        running = list(self.jobs.values())
        handles = [j.handle for j in running if j.handle is not None]
        for handle in handles:
            handle.cancel()
        if handles:
            await asyncio.wait(handles, timeout=timeout)
        # A job that finished before its cancellation landed has reported its outcome itself;
        # one that ignores cancellation past the timeout is released all the same.
        return [j for j in running if j.released or j.handle is None or not j.handle.done()]

    def shutdown_threads(self) -> None:
        """Stop the thread pool without waiting for threads still running a task."""
        self._threads.shutdown(wait=False, cancel_futures=True)


def _final_outcome(
    task: Task[Any, Any] | None, exc: BaseException, retries: int, reason: str | None
) -> str:
    if isinstance(exc, Revoked):
        return "failed: revoked"
    if task is None or reason is not None:
        return "failed: cannot run"
    policy = task.policy
    limit = (
        exc.max_retries
        if isinstance(exc, Retry) and exc.max_retries is not None
        else (policy.max_retries)
    )
    if isinstance(exc, Retry) or policy.retries_automatically(exc):
        return f"failed: no retries left ({retries} of max_retries={limit})"
    if policy.autoretry_for:
        return f"failed: {type(exc).__name__} is not retried (not in autoretry_for)"
    return "failed"


async def _run_coroutine(
    fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any], limit: float | None
) -> Any:
    if limit is None:
        return await fn(*args, **kwargs)
    try:
        async with asyncio.timeout(limit) as scope:
            return await fn(*args, **kwargs)
    except TimeoutError as exc:
        if scope.expired():
            raise TimeLimitExceeded(
                f"the attempt ran past its time limit of {limit:g} s and was cancelled"
            ) from exc
        raise


def _reason(
    fn: Callable[..., Any] | None, exc: BaseException, args_json: str, kwargs_json: str
) -> str | None:
    """A clearer message for the two failures that are not the task's own."""
    if fn is None:
        return str(exc)
    if isinstance(exc, TypeError):
        try:
            args, kwargs = decode_arguments(args_json, kwargs_json)
            inspect.signature(fn).bind(*args, **kwargs)
        except TypeError as bind_error:
            return (
                f"The stored arguments no longer fit the task's signature: {bind_error}. "
                "Fix the row's arguments and run it again, or delete it."
            )
        except ValueError:
            return None
    return None
