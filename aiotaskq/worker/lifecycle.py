"""The worker's life: start its parts, run until told to stop, then drain and give back."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import importlib
import logging
import os
import secrets
import socket
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import anyio
from django.utils.module_loading import autodiscover_modules

from ..conf import get_settings
from ..db import workers
from ..db.claim import LimitTable
from ..db.connect import WorkerDatabase
from ..errors import ConfigurationError, DatabaseError
from ..tasks.enqueue import validate_queue
from ..tasks.registry import registered
from . import metrics
from .dbthreads import DatabaseThreads
from .events import Wake, first_of
from .executor import STUBBORN_MARGIN, Executor
from .fetcher import Fetcher
from .heartbeat import Heartbeat
from .lanes import LanePlan, plan_lanes
from .listener import Listener
from .loops import every, supervised
from .marks import Marks, MarksLoop
from .metrics import WorkerMetrics
from .recycle import Recycler, Recycling
from .reporter import Reporter
from .rescue import Rescuer
from .scheduler import Scheduler
from .upkeep import Pruner, Rotator, TableKeeper

__all__ = ["ConnectionBudget", "Worker", "WorkerConfig"]

logger = logging.getLogger(__name__)

# How long a stopping worker keeps trying to write the outcomes of finished tasks.
_OUTCOME_TIMEOUT = 30.0
# How often Django's connection hygiene runs in the ORM threads of coroutine tasks.
_TIDY_EVERY = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerConfig:
    """How one worker runs. Defaults match ``aiotaskq run`` without options."""

    queues: tuple[str, ...] = ()  # empty: AIOTASKQ["DEFAULT_QUEUE"]
    #: Caps of queues (``--queues exports:2``), over ``AIOTASKQ["QUEUES"]``; see
    #: :mod:`aiotaskq.worker.lanes` for how they divide ``concurrency``.
    caps: Mapping[str, int] = field(default_factory=dict)
    concurrency: int = 100
    threads: int = 8
    #: Threads (and so Django connections) for the ORM calls of coroutine tasks.
    db_threads: int = 4
    grace: float = 30.0
    #: Drain what is due, then return (for tests and one-off runs).
    burst: bool = False
    #: When the process stops to be replaced (worker/recycle.py); by default never.
    recycling: Recycling = field(default_factory=Recycling)
    worker_id: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
    )
    #: Under ``--processes``: the directory where this child writes its metrics for the
    #: supervisor to serve (worker/metrics.py); None: the process serves its own.
    metrics_dir: str | None = None

    def __post_init__(self) -> None:
        for name in ("concurrency", "threads", "db_threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigurationError(f"{name} must be a positive integer, got {value!r}.")
        if not isinstance(self.grace, int | float) or self.grace < 0:
            raise ConfigurationError(f"grace must be a number of seconds >= 0, got {self.grace!r}.")
        for queue in self.queues:
            validate_queue(queue)
        if len(set(self.queues)) != len(self.queues):
            raise ConfigurationError(f"queues names a queue twice: {', '.join(self.queues)}.")


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionBudget:
    """The most PostgreSQL connections one worker opens."""

    listener: int
    pool: int
    threads: int
    db_threads: int

    @property
    def total(self) -> int:
        return self.listener + self.pool + self.threads + self.db_threads

    def __str__(self) -> str:
        return (
            f"{self.total} connections at most ({self.listener} listener + {self.pool} pool "
            f"+ {self.threads} sync-task threads + {self.db_threads} ORM threads of async "
            "tasks)"
        )


def import_task_modules() -> None:
    """Import every installed app's ``tasks`` module and ``AIOTASKQ["IMPORTS"]``: what a
    worker imports at start (its tasks, and their schedules)."""
    settings = get_settings()
    if settings.AUTODISCOVER:
        autodiscover_modules("tasks")
    for module in settings.IMPORTS:
        importlib.import_module(module)


class Worker:
    """An asyncio worker. The constructor does no I/O; :meth:`run` does the work.

    ``run`` returns after :meth:`stop` (a graceful stop: claiming ends, in-flight tasks get
    ``grace`` seconds to finish, then coroutine tasks are cancelled and every unfinished row
    is put back to queued) or, with ``burst``, when nothing is due and nothing runs.
    Calling :meth:`stop` a second time skips what is left of the grace period.
    """

    def __init__(self, config: WorkerConfig | None = None) -> None:
        self.config = config or WorkerConfig()
        settings = get_settings()
        self.id = self.config.worker_id
        self.queues: list[str] = list(self.config.queues) or [settings.DEFAULT_QUEUE]
        #: How ``concurrency`` is divided between the queues (raises ConfigurationError).
        self.lanes: LanePlan = plan_lanes(self.queues, self.config.caps, self.config.concurrency)
        # The shared pool serves the queues without threads of their own.
        shared_threads = (
            self.config.threads if any(q not in self.lanes.threads for q in self.queues) else 0
        )
        self.budget = ConnectionBudget(
            listener=1 if settings.LISTEN and not self.config.burst else 0,
            pool=settings.WORKER_POOL_SIZE,
            threads=shared_threads + sum(self.lanes.threads.values()),
            db_threads=self.config.db_threads,
        )
        self._started_at = dt.datetime.now(dt.UTC)
        self._stopping: asyncio.Event | None = None
        self._forced: asyncio.Event | None = None
        self._stop_requests = 0
        #: Set once the worker is claiming (its listener, if any, is listening).
        self.ready: asyncio.Event | None = None
        self.listener: Listener | None = None
        self.executor: Executor | None = None
        self.marks: Marks | None = None
        #: Set when tasks with limit keys may be ready (the fetcher's limited claim runs).
        self._limited: asyncio.Event | None = None
        #: Sync tasks still running in their threads when :meth:`run` returned (their rows
        #: were given back, or their attempts failed past a hard time limit). A process
        #: that owns the worker may exit without waiting.
        self.abandoned_threads = 0
        #: Why the worker stopped to have its process replaced (``"1000 tasks"``), if it did.
        self.recycled: str | None = None
        self._recycler: Recycler | None = None
        #: Names of coroutine tasks that ignored their cancellation at the end of the grace
        #: period (their rows were given back); they still run on the loop. A process that
        #: owns the worker exits without waiting for them.
        self.stubborn: list[str] = []

    def stop(self) -> None:
        """Ask for a graceful stop; a second call skips the rest of the grace period.

        Safe to call from a signal handler installed with ``loop.add_signal_handler``.
        """
        self._stop_requests += 1
        if self._stopping is None or self._forced is None:
            return
        if self._stop_requests == 1:
            logger.info(
                "worker.stopping: no more claims; waiting for in-flight tasks",
                extra={"worker_id": self.id},
            )
            self._stopping.set()
        else:
            logger.warning(
                "worker.stopping_now: second stop request, giving tasks back now",
                extra={"worker_id": self.id},
            )
            self._stopping.set()
            self._forced.set()

    def _recycle(self, reason: str) -> None:
        """Stop claiming and drain as on a first :meth:`stop`, to have the process replaced;
        a later stop request is then the first (the grace period still holds)."""
        if self._stopping is None or self._stopping.is_set():
            return
        self.recycled = reason
        logger.info(
            "worker.recycled: %s; no more claims, %d tasks in flight to finish",
            reason,
            len(self.executor.jobs) if self.executor is not None else 0,
            extra={"worker_id": self.id},
        )
        self._stopping.set()

    def _on_control(self, payload: str) -> None:
        verb, _, argument = payload.partition(":")
        if verb == "revoke" and self.executor is not None:
            try:
                task_id = uuid.UUID(argument)
            except ValueError:
                logger.warning("control.ignored: %r", payload, extra={"worker_id": self.id})
                return
            self.executor.revoke(task_id)

    def import_tasks(self) -> None:
        """Import every installed app's ``tasks`` module and ``AIOTASKQ["IMPORTS"]``."""
        import_task_modules()

    async def run(self) -> None:
        """Run until stopped; see the class docstring.

        A worker started while the database does not answer says so and waits for it (a
        ``burst`` run raises instead).

        Raises:
            DatabaseError: the database refuses the configuration (a wrong password, no
                such database), or, in burst mode, it does not answer at start. (Once
                running, the worker rides out outages by itself.)
        """
        self._stopping = asyncio.Event()
        self._forced = asyncio.Event()
        self.ready = asyncio.Event()
        if self._stop_requests:
            self._stopping.set()
        settings = get_settings()
        self.import_tasks()
        db = WorkerDatabase(f"aiotaskq-worker-{self.id}", settings.WORKER_POOL_SIZE)
        if not await db.open(wait=not self.config.burst, stopping=self._stopping):
            logger.info("worker.stopped: %s", self.id, extra={"worker_id": self.id})
            return
        wake = Wake()
        # Limited tasks may be ready (docs/limits.md): the fetcher's limited claim runs then.
        limited = asyncio.Event()
        limited.set()
        self._limited = limited
        reporter = Reporter(db, self.id)

        def seat_freed() -> None:
            limited.set()
            wake.seats()

        reporter.on_seat_freed = seat_freed
        db_threads = DatabaseThreads(self.config.db_threads)
        counts = WorkerMetrics()
        counts.pool = db.stats
        executor = Executor(
            self.config.concurrency,
            self.config.threads,
            reporter,
            self.id,
            db_threads,
            lanes=self.lanes,
            database=db,
            metrics=counts,
        )
        self.executor = executor
        counts.in_flight = functools.partial(_in_flight, executor, self.queues)
        metrics.live(counts)
        db.on_back = functools.partial(self._database_back, reporter, wake)
        marks = Marks(self.queues)
        self.marks = marks
        try:
            async with anyio.create_task_group() as loops:
                side_loops = self._side_loops(db, executor, reporter, db_threads, wake)
                side_loops.append(("marks", MarksLoop(db, marks, self.queues, wake, self.id).run))
                for name, loop in side_loops:
                    loops.start_soon(
                        functools.partial(supervised, name, loop, extra={"worker_id": self.id}),
                        name=f"aiotaskq-{name}",
                    )
                if self.listener is not None:
                    await first_of(
                        self.listener.connected.wait(), self._stopping.wait(), timeout=10
                    )
                logger.info(
                    "worker.started: %s on queues %s, concurrency %d, threads %d; %s",
                    self.id,
                    self.lanes,
                    self.config.concurrency,
                    self.config.threads,
                    self.budget,
                    extra={"worker_id": self.id, "queues": self.queues},
                )
                self.ready.set()
                fetcher = Fetcher(
                    db,
                    executor,
                    marks,
                    queues=self.queues,
                    worker_id=self.id,
                    wake=wake,
                    stopping=self._stopping,
                    poll_interval=settings.POLL_INTERVAL,
                    batch=settings.CLAIM_BATCH,
                    burst=self.config.burst,
                    limits=_limit_table(),
                    dirty_after=settings.DIRTY_AFTER,
                    limited=limited,
                )
                await fetcher.run()
                await self._drain(executor, reporter)
                loops.cancel_scope.cancel()
        finally:
            metrics.retire(counts)
            executor.shutdown_threads()
            await db_threads.close()
            await self._leave(db)
            await db.close()
            logger.info("worker.stopped: %s", self.id, extra={"worker_id": self.id})

    def _side_loops(
        self,
        db: WorkerDatabase,
        executor: Executor,
        reporter: Reporter,
        db_threads: DatabaseThreads,
        wake: Wake,
    ) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        """The loops that run beside the fetcher, by name; each is supervised."""
        settings = get_settings()
        extra = {"worker_id": self.id}
        heartbeat = Heartbeat(
            db, executor, reporter, self.id, settings.HEARTBEAT_INTERVAL, self.record()
        )
        rescuer = Rescuer(db, self.queues, settings.DIRTY_AFTER, self.id)
        pruner = Pruner(db, self.id)
        keeper = TableKeeper(db, self.id)
        rotator = Rotator(db, self.id)
        scheduler = Scheduler(db, self.id)
        self._recycler = Recycler(
            self.config.recycling,
            executor,
            recycle=self._recycle,
            stop=self.stop,
            worker_id=self.id,
        )
        loops: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("reporter", reporter.run),
            ("heartbeat", heartbeat.run),
            (
                "rescuer",
                functools.partial(
                    every, rescuer.interval, rescuer.rescue_once, "rescue", extra=extra
                ),
            ),
            (
                "pruner",
                functools.partial(every, pruner.interval, pruner.prune_once, "prune", extra=extra),
            ),
            (
                "upkeep",
                functools.partial(
                    every, keeper.interval, keeper.keep_once, "upkeep", first=True, extra=extra
                ),
            ),
            (
                "rotator",
                functools.partial(
                    every, rotator.interval, rotator.rotate_once, "rotation", extra=extra
                ),
            ),
            (
                "db-tidy",
                functools.partial(every, _TIDY_EVERY, db_threads.tidy, "db_tidy", extra=extra),
            ),
        ]
        if not self.config.burst:  # a burst drains what is due and exits: no new ticks
            loops.append(
                (
                    "scheduler",
                    functools.partial(
                        every,
                        scheduler.interval,
                        scheduler.enqueue_due,
                        "scheduler",
                        first=True,
                        extra=extra,
                    ),
                )
            )
        if settings.LISTEN and not self.config.burst:
            self.listener = Listener(
                self.queues,
                settings.LISTEN_DSN,
                wake,
                quiet_check=settings.POLL_INTERVAL,
                on_control=self._on_control,
                db=db,
                limited=self._limited,
                worker_id=self.id,
            )
            loops.append(("listener", self.listener.run))
        if self._recycler.watches:
            loops.append(("recycler", self._recycler.run))
        if settings.METRICS_DEPTH_EVERY > 0 and metrics.exported():
            sampler = metrics.DepthSampler(
                db,
                executor.metrics,
                self.queues,
                settings.METRICS_DEPTH_EVERY,
                settings.DIRTY_AFTER,
            )
            loops.append(
                (
                    "metrics-depth",
                    functools.partial(
                        every,
                        sampler.interval,
                        sampler.sample_once,
                        "metrics_depth",
                        first=True,
                        extra=extra,
                    ),
                )
            )
        if self.config.metrics_dir is not None:
            loops.append(
                ("metrics", metrics.SnapshotWriter(executor.metrics, self.config.metrics_dir).run)
            )
        return loops

    def record(self) -> workers.WorkerRecord:
        """This worker's row in the registry (``aiotaskq workers``)."""
        caps = {
            queue: lane.capacity if lane.capped else None
            for lane in self.lanes.lanes
            for queue in lane.queues
        }
        return workers.WorkerRecord(
            id=self.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            queues={queue: caps.get(queue) for queue in self.queues},
            concurrency=self.config.concurrency,
            started_at=self._started_at,
        )

    async def _leave(self, db: WorkerDatabase) -> None:
        """Delete this worker's row from the registry: it stopped cleanly. With the database
        gone, the row stays and shows the worker lost once it is older than DIRTY_AFTER."""
        if not db.available.is_set():
            return
        try:
            with anyio.fail_after(5), anyio.CancelScope(shield=True):
                async with db.connection("Leaving the registry of workers") as conn:
                    await workers.leave(conn, self.id)
        except (TimeoutError, DatabaseError) as exc:
            logger.warning(
                "worker.not_unregistered: %s; its row shows it lost after DIRTY_AFTER",
                exc or "timed out",
                extra={"worker_id": self.id},
            )

    async def _database_back(self, reporter: Reporter, wake: Wake, outage: float) -> None:
        """The database answers again: claim at once, and say so once the outcomes kept
        during the outage are written."""
        wake.set()
        held = reporter.backlog
        await first_of(reporter.wait_idle(), timeout=10)
        logger.warning(
            "database.back after %.1f s; %s",
            outage,
            f"{held} outcomes kept during the outage written"
            if reporter.backlog == 0
            else f"{reporter.backlog} outcomes still to write",
            extra={"worker_id": self.id, "outage_s": outage, "outcomes_held": held},
        )

    async def _drain(self, executor: Executor, reporter: Reporter) -> None:
        assert self._forced is not None
        if executor.jobs:
            logger.info(
                "worker.draining: %d tasks in flight, grace %.0f s",
                len(executor.jobs),
                self.config.grace,
                extra={"worker_id": self.id},
            )
            await first_of(executor.wait_empty(), self._forced.wait(), timeout=self.config.grace)
        # Past the grace: the coroutines still running are cancelled and every unfinished
        # row is handed to the reporter to be released.
        left = await executor.give_back(timeout=STUBBORN_MARGIN)
        self.abandoned_threads = sum(1 for job in left if job.is_sync) + len(
            self._recycler.overran if self._recycler is not None else ()
        )
        self.stubborn = sorted(
            {
                job.name
                for job in left
                if not job.is_sync and job.handle is not None and not job.handle.done()
            }
        )
        if self.stubborn:
            logger.error(
                "worker.stubborn: %s ignored their cancellation; their rows are put back, "
                "and the process leaves them running",
                ", ".join(self.stubborn),
                extra={"worker_id": self.id},
            )
        # The reporter's own loop writes (and retries) every outcome handed in; wait for it
        # rather than flush beside it, so a batch in flight is never cut off.
        await first_of(reporter.wait_idle(), timeout=_OUTCOME_TIMEOUT)
        if unwritten := reporter.unwritten():
            logger.error(
                "worker.outcomes_lost: %d outcomes could not be written; those tasks stay "
                "running and will turn Dirty",
                len(unwritten),
                extra={"worker_id": self.id},
            )
        elif left:
            logger.warning(
                "worker.released: %d unfinished tasks put back to queued (%s)",
                len(left),
                ", ".join(sorted({job.name for job in left})),
                extra={"worker_id": self.id},
            )


def _in_flight(executor: Executor, queues: list[str]) -> dict[str, int]:
    """Tasks in flight per queue (the worker's queues show with 0)."""
    counts = dict.fromkeys(queues, 0)
    for job in executor.jobs.values():
        counts[job.queue] = counts.get(job.queue, 0) + 1
    return counts


def _limit_table() -> LimitTable | None:
    """The limits of the registered tasks that have some (docs/limits.md), or None."""
    limited = [(name, t.limits) for name, t in sorted(registered().items()) if t.limits]
    if not limited:
        return None
    return LimitTable(
        names=[name for name, _ in limited],
        max_running=[lim.max_concurrent for _, lim in limited],
        intervals=[lim.interval for _, lim in limited],
        bursts=[lim.burst for _, lim in limited],
    )
