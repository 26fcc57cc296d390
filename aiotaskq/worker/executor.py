"""Running claimed tasks: coroutines on the loop, plain functions in bounded thread pools
(the worker's, or a queue's own), under the slots of each lane (see :mod:`.lanes`). Each
outcome goes to the reporter."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
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
from ..db.connect import WorkerDatabase
from ..db.finish import Outcome, Released, Retried
from ..errors import Revoked, TaskNotRegistered, TimeLimitExceeded
from ..retry import Snooze
from ..serialization import decode_arguments
from ..tasks import tracing
from ..tasks.context import TaskContext, activate
from ..tasks.registry import get_task
from ..tasks.task import Attempt, Task
from ..tracebacks import safe_str
from . import outcome
from .dbthreads import DatabaseThreads
from .lanes import LanePlan, Slots
from .metrics import WorkerMetrics
from .reporter import Reporter

__all__ = ["Executor", "Job"]

logger = logging.getLogger(__name__)


#: How long a cancelled coroutine (past its time limit, or revoked) may take to end before
#: its attempt is ended without it: its outcome is written, its slot freed, and the coroutine,
#: which ignored its cancellation, runs on detached (logged as task.stubborn).
STUBBORN_MARGIN = 2.0


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
    #: Why the worker cancelled it, if it did: "revoke" or "release" (a graceful stop).
    cancelled_for: str | None = None
    #: Its outcome has been handed to the reporter (or its row is being released): anything
    #: the attempt does later is dropped.
    ended: bool = False
    watchdog: asyncio.TimerHandle | None = None
    #: What the task sees of itself (``current_task()``): its checkpoint and progress.
    context: TaskContext | None = None
    #: The enqueuing span's trace context (JSON text), and this attempt's span (tracing.py).
    trace: str | None = None
    span: Any = None
    #: The exception the attempt ended with, for its span.
    error: BaseException | None = None

    @property
    def lease(self) -> tuple[uuid.UUID, int]:
        return self.id, self.attempt


def _outcome_name(job: Job, result: Outcome) -> str:
    """``aiotaskq_tasks_finished_total{outcome}`` of an attempt's outcome."""
    if isinstance(result, Released):
        return "released"
    if isinstance(result, Retried):
        return "snoozed" if result.error is None else "retried"
    if isinstance(result, finish.Failed):
        return "revoked" if job.cancelled_for == "revoke" else "failed"
    return "succeeded"


def _ran(job: Job, result: Outcome) -> float | None:
    """How long the attempt ran, for the duration histogram (not for a released one: it was
    cut short by a stop, not finished)."""
    return None if isinstance(result, Released) else time.monotonic() - job.started


def _call_sync(fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
    # In the pool thread: the same connection hygiene as a Django request.
    close_old_connections()
    try:
        return fn(*args, **kwargs)
    finally:
        close_old_connections()


class Executor:
    """Starts jobs and tracks them until their outcome is handed to the reporter."""

    def __init__(
        self,
        concurrency: int,
        threads: int,
        reporter: Reporter,
        worker_id: str,
        db: DatabaseThreads,
        *,
        lanes: LanePlan,
        database: WorkerDatabase | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self._db = db
        #: What the worker counts for /metrics (worker/metrics.py).
        self.metrics = metrics or WorkerMetrics()
        # Where checkpoints are written (the worker's pool); None: not written (tests).
        self._database = database
        self.lanes = lanes
        self.slots = Slots(lanes)
        # ``concurrency`` less what a worker whose queues are all capped leaves unused.
        self.capacity = min(concurrency, lanes.capacity)
        self.jobs: dict[uuid.UUID, Job] = {}
        self._reporter = reporter
        self._worker_id = worker_id
        self._threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="aiotaskq")
        # A queue with threads of its own: its plain functions never wait for a thread of
        # the shared pool, nor hold one another queue's task needs.
        self._queue_threads = {
            queue: ThreadPoolExecutor(max_workers=n, thread_name_prefix=f"aiotaskq-{queue}")
            for queue, n in lanes.threads.items()
        }
        self._slot_freed = asyncio.Event()
        reporter.on_written = self._slot_freed.set  # written outcomes free slots too
        self._empty = asyncio.Event()
        self._empty.set()
        # Set by a worker that recycles its process (worker/recycle.py): how many more tasks
        # it may start and what to call once it has started them all; how long a plain
        # function may run past its time limit, and what to call when one has.
        self.start_budget: int | None = None
        self.on_budget_spent: Callable[[], None] | None = None
        self.hard_limit_margin: float | None = None
        self.on_overrun: Callable[[Job], None] | None = None

    @property
    def free(self) -> int:
        # Backpressure: outcomes not yet written beyond one batch of ``capacity`` take slots,
        # so a worker whose acks fall behind (the database is slow) stops claiming more than
        # it can report, instead of piling up running rows and outcomes in memory.
        unwritten = self._reporter.backlog - self.capacity
        free = self.capacity - len(self.jobs) - (unwritten if unwritten > 0 else 0)
        return free if self.start_budget is None else min(free, self.start_budget)

    def demands(self, batch: int) -> list[int]:
        """How many tasks each lane asks of the next claim: its free slots, within the
        worker's free slots (backpressure included) and one ``batch``, shared fairly."""
        return self.slots.demands(min(self.free, batch))

    def claimable(self, lanes: set[int], batch: int) -> bool:
        """Whether ``lanes`` (those behind) have enough free slots for a claim: the worker's
        refill among them, or half of one lane's."""
        demands = self.demands(batch)
        free = sum(demands[i] for i in lanes)
        room = sum(self.lanes.lanes[i].capacity for i in lanes)
        if free >= min(self.lanes.refill, room):
            return True
        # A recycled process's last few starts: claim them even below the refill.
        if self.start_budget is not None and 0 < self.start_budget <= free:
            return True
        return any(demands[i] >= self.lanes.lanes[i].refill for i in lanes)

    async def wait_for_slots(self, lanes: set[int], batch: int) -> None:
        """Return once one of ``lanes`` has enough free slots for a claim."""
        while not self.claimable(lanes, batch):
            self._slot_freed.clear()
            await self._slot_freed.wait()

    async def wait_empty(self) -> None:
        await self._empty.wait()

    def start(self, rows: list[Claimed]) -> None:
        """Start a job for each claimed row (expired rows are only logged)."""
        loop = asyncio.get_running_loop()
        for row in rows:
            if row.expired:
                self.metrics.finish(row.name, row.queue, "expired", None)
                logger.info(
                    "task.expired: %s [%s] dropped unrun",
                    row.name,
                    row.id,
                    extra={"task_id": str(row.id), "task_name": row.name, "queue": row.queue},
                )
                continue
            if row.limit_key is not None:
                self._reporter.watch(row.id, row.queue)
            job = Job(
                id=row.id,
                name=row.name,
                queue=row.queue,
                attempt=row.attempt or 1,
                retries=row.retries or 0,
                time_limit=row.time_limit,
                trace=row.trace,
            )
            job.context = TaskContext(
                id=job.id,
                name=job.name,
                queue=job.queue,
                attempt=job.attempt,
                retries=job.retries,
                checkpoint=row.checkpoint,
                writer=self._write_checkpoint if self._database is not None else None,
                loop=loop,
                scheduled_for=row.scheduled_for,
            )
            self.metrics.start(job.name, job.queue, row.pickup_s)
            self.jobs[job.id] = job
            self.slots.take(job.queue)
            self._empty.clear()
            job.handle = loop.create_task(self._run(job, row.args or "[]", row.kwargs or "{}"))
            if self.start_budget is not None:
                self.start_budget -= 1
        if self.start_budget is not None and self.start_budget <= 0 and self.on_budget_spent:
            self.on_budget_spent()

    async def _write_checkpoint(self, task_id: uuid.UUID, attempt: int, value: str) -> bool:
        job = self.jobs.get(task_id)
        if job is None or job.attempt != attempt or job.ended:
            return False  # the attempt was ended without it (stubborn, released, overrun)
        assert self._database is not None
        async with self._database.connection("Saving a checkpoint") as conn:
            return await finish.save_checkpoint(conn, job.lease, self._worker_id, value)

    def progress(self) -> dict[uuid.UUID, str]:
        """The progress each running job set since the last call (for the heartbeat)."""
        out: dict[uuid.UUID, str] = {}
        for job in self.jobs.values():
            if job.context is not None and (doc := job.context.take_progress()) is not None:
                out[job.id] = doc
        return out

    def put_back_progress(self, progress: dict[uuid.UUID, str]) -> None:
        """Progress a beat could not write, for the next beat (unless set anew since)."""
        for task_id, doc in progress.items():
            job = self.jobs.get(task_id)
            if job is not None and job.context is not None:
                job.context.put_back_progress(doc)

    def _attempt(self, job: Job) -> outcome.Attempt:
        return outcome.Attempt(job.lease, job.name, job.queue, job.retries, self._worker_id)

    async def _run(self, job: Job, args_json: str, kwargs_json: str) -> None:
        if job.context is not None:
            activate(job.context)  # this attempt's task (an asyncio task of its own)
        if not tracing.active():
            await self._attempt_run(job, args_json, kwargs_json)
            return
        with tracing.attempt_span(job.name, job.queue, job.id, job.attempt, job.trace) as span:
            job.span = span
            await self._attempt_run(job, args_json, kwargs_json)

    async def _attempt_run(self, job: Job, args_json: str, kwargs_json: str) -> None:
        # Every way an attempt can end becomes one outcome; only the worker's own
        # cancellation (revoke, a graceful stop, the worker torn down) is treated as such.
        task: Task[Any, Any] | None = None
        try:
            task = get_task(job.name)
            args, kwargs = decode_arguments(args_json, kwargs_json)
            if task.wants_attempt:
                args.insert(
                    0, Attempt(task_id=job.id, number=job.attempt, worker_id=self._worker_id)
                )
            # The call's, the task's, the queue's (AIOTASKQ["QUEUES"]), or none.
            limit = job.time_limit or task.time_limit or self.lanes.time_limits.get(job.queue)
            if task.is_async:
                if limit is not None:
                    job.watchdog = asyncio.get_running_loop().call_later(
                        limit + STUBBORN_MARGIN, self._abandon, job, limit
                    )
                value = await self._run_async(task.fn, args, kwargs, limit)
            else:
                job.is_sync = True
                value = await self._run_sync(job, task.fn, args, kwargs, limit)
            result = outcome.success(self._attempt(job), task, value)
        except asyncio.CancelledError as exc:
            if job.cancelled_for == "revoke":
                self._fail(job, task, Revoked("revoked while running"), args_json, kwargs_json)
            elif job.cancelled_for == "release":
                # Given back by a graceful stop: give_back releases the row. (A sync task's
                # thread cannot be interrupted: it runs on, and what it does is dropped.)
                pass
            else:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # the worker itself is being torn down
                # The task raised CancelledError of its own: that is its failure.
                self._fail(job, task, exc, args_json, kwargs_json)
        except Snooze as exc:
            snoozed = outcome.snooze(self._attempt(job), exc)
            self._report(job, snoozed)
            logger.info(
                "task.snoozed: %s [%s] runs again in %.1f s",
                job.name,
                job.id,
                snoozed.countdown or 0.0,
                extra=self._extra(job),
            )
        except BaseException as exc:
            self._fail(job, task, exc, args_json, kwargs_json)
        else:
            self._report(job, result)
        finally:
            self._finished(job)

    def _report(self, job: Job, result: Outcome) -> None:
        if job.ended:
            return  # the attempt was already ended without it (stubborn, or released)
        job.ended = True
        self._reporter.add(result)
        name = _outcome_name(job, result)
        self.metrics.finish(job.name, job.queue, name, _ran(job, result))
        if job.span is not None:
            tracing.set_outcome(job.span, name, job.error)

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
            pool = self._queue_threads.get(job.queue, self._threads)
            return await sync_to_async(_call_sync, thread_sensitive=False, executor=pool)(
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
        if self.hard_limit_margin is not None:
            # Cancelled by _finished if the function returns within the margin.
            job.watchdog = asyncio.get_running_loop().call_later(
                self.hard_limit_margin, self._past_hard_limit, job, limit
            )

    def _past_hard_limit(self, job: Job, limit: float) -> None:
        """End the attempt of a plain function still running past its hard limit; the
        process is then replaced (``on_overrun``), its thread left running."""
        if job.ended or self.jobs.get(job.id) is not job:
            return
        margin = self.hard_limit_margin or 0.0
        logger.error(
            "task.hard_time_limit: %s [%s] still runs %g s past its time limit of %g s; its "
            "attempt is ended and its worker process will be replaced",
            job.name,
            job.id,
            margin,
            limit,
            extra=self._extra(job),
        )
        exc = TimeLimitExceeded(
            f"the plain function ran past its time limit of {limit:g} s (and {margin:g} s "
            "more); it cannot be interrupted, so its worker process was replaced"
        )
        self._end_without_it(job, exc)
        if self.on_overrun is not None:
            self.on_overrun(job)

    def _abandon(self, job: Job, limit: float | None) -> None:
        """End the attempt of a coroutine that ignored its cancellation (it caught
        ``CancelledError`` and went on): its outcome is written and its slot freed now."""
        if job.ended or self.jobs.get(job.id) is not job:
            return
        if limit is None:
            exc: BaseException = Revoked("revoked while running")
        else:
            exc = TimeLimitExceeded(
                f"the attempt ran past its time limit of {limit:g} s and ignored its "
                "cancellation; it was ended without it"
            )
        logger.error(
            "task.stubborn: %s [%s] ignored its cancellation for %g s; its attempt is ended "
            "and its slot freed, but the coroutine runs on detached (do not catch "
            "CancelledError or BaseException without re-raising it)",
            job.name,
            job.id,
            STUBBORN_MARGIN,
            extra=self._extra(job),
        )
        self._end_without_it(job, exc)

    def _end_without_it(self, job: Job, exc: BaseException) -> None:
        """Fail the attempt (retried or failed by the task's policy) and free its slot while
        its code still runs; whatever it does later is dropped (``job.ended``)."""
        task = None
        with contextlib.suppress(TaskNotRegistered):
            task = get_task(job.name)
        self._fail(job, task, exc, "[]", "{}")
        self._finished(job)

    def _fail(
        self,
        job: Job,
        task: Task[Any, Any] | None,
        exc: BaseException,
        args_json: str,
        kwargs_json: str,
    ) -> None:
        """Record a failed attempt: retried if the task's policy says so, else Failed."""
        job.error = exc
        result, words = outcome.failure(self._attempt(job), task, exc, args_json, kwargs_json)
        self._report(job, result)
        logger.warning(
            "task.%s: %s [%s] attempt %d: %s: %s (%s)",
            "retry" if isinstance(result, Retried) else "failed",
            job.name,
            job.id,
            job.attempt,
            type(exc).__name__,
            safe_str(exc),
            words,
            # The exception object itself, for handlers that report errors elsewhere.
            extra={**self._extra(job), "exception": exc},
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
        job.cancelled_for = "revoke"
        job.handle.cancel()
        if job.watchdog is not None:
            job.watchdog.cancel()
        job.watchdog = asyncio.get_running_loop().call_later(
            STUBBORN_MARGIN, self._abandon, job, None
        )

    def _finished(self, job: Job) -> None:
        if job.watchdog is not None:
            job.watchdog.cancel()
            job.watchdog = None
        # By identity: an abandoned attempt that ends late must not take the slot of a later
        # attempt of the same task.
        if self.jobs.get(job.id) is job:
            del self.jobs[job.id]
            self.slots.free_one(job.queue)
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
        """Cancel the jobs still running, wait (up to ``timeout``) for the coroutines to stop,
        and hand the reporter a release of every unfinished row: the cancelled coroutines,
        those that ignore their cancellation, and the plain functions still running in their
        threads (which cannot be interrupted). Return those jobs."""
        running = list(self.jobs.values())
        for job in running:
            job.cancelled_for = "release"
            if job.handle is not None:
                job.handle.cancel()
        handles = [j.handle for j in running if j.handle is not None]
        if handles:
            await asyncio.wait(handles, timeout=timeout)
        # A job that finished before its cancellation landed has reported its outcome itself.
        left = [job for job in running if not job.ended]
        for job in left:
            self._report(job, Released(job.lease, job.queue))
            self._finished(job)
        return left

    def shutdown_threads(self) -> None:
        """Stop the thread pools without waiting for threads still running a task."""
        for pool in (self._threads, *self._queue_threads.values()):
            pool.shutdown(wait=False, cancel_futures=True)


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
