"""Recycling: a worker process that ends itself, gracefully, to be replaced by a fresh one.

Three things end a process this way: it has started ``max_tasks`` tasks, its resident memory
has reached ``max_memory_mb``, or (under a supervisor, ``hard_time_limits``) a plain function
has run past its time limit plus :data:`HARD_LIMIT_MARGIN`. In every case the worker stops
claiming and drains as on SIGTERM: the tasks it holds finish within the grace period and
their outcomes are written, so nothing is run twice or lost across the handover. A plain
function past its hard limit is the exception that makes the rule: its attempt is ended
without it (``TimeLimitExceeded``, retried or failed by its task's policy) and the process
exits without waiting for its thread, which cannot be interrupted.

The worker only stops; what happens next belongs to whoever started it. Under
``aiotaskq run --processes`` the process exits with :data:`REPLACE_ME` and the supervisor
starts another at once; alone, ``aiotaskq run`` exits 0 for systemd or Kubernetes to restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import sys
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ConfigurationError
from .executor import Executor, Job

__all__ = ["HARD_LIMIT_MARGIN", "REPLACE_ME", "Recycler", "Recycling", "rss_mb"]

logger = logging.getLogger(__name__)

#: The exit status of a worker process that asks its supervisor to replace it at once (no
#: backoff): it recycled itself, or left a plain function running past its hard time limit.
#: ``EX_TEMPFAIL`` of sysexits.h: "a temporary failure; try again".
REPLACE_ME = 75
#: How long a plain function may run past its time limit before, under a supervisor, its
#: attempt is failed and its process replaced. At the limit itself the worker only logs
#: ``task.time_limit_exceeded``: a function that is finishing gets this long to do so.
HARD_LIMIT_MARGIN = 2.0
#: How often the resident memory and the supervisor's presence are looked at. Reading
#: /proc/self/status costs some microseconds.
CHECK_EVERY = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Recycling:
    """When a worker process stops to be replaced. The defaults never recycle."""

    #: Stop claiming once this many tasks have been started (``--max-tasks-per-process``).
    max_tasks: int | None = None
    #: Stop claiming once the resident set reaches this many MB (``--max-memory-per-process``).
    max_memory_mb: int | None = None
    #: Fail a plain function still running :data:`HARD_LIMIT_MARGIN` past its time limit
    #: and replace the process (only under a supervisor, which starts the replacement).
    hard_time_limits: bool = False
    #: The supervisor's pid: if the process's parent changes (the supervisor died), the
    #: worker stops gracefully rather than run on unsupervised.
    supervisor_pid: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_tasks", "max_memory_mb"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise ConfigurationError(f"{name} must be a positive integer, got {value!r}.")


def rss_mb() -> float | None:
    """This process's resident set size in MB: ``VmRSS`` of /proc/self/status on Linux,
    else the peak from ``getrusage`` (which only grows, so it recycles no later)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if not peak:
        return None
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


class Recycler:
    """Watches one worker's process against its :class:`Recycling` policy.

    The task budget and the hard time limit are enforced by the executor, which calls back
    the moment either is reached; :meth:`run` looks at the memory and the supervisor every
    :data:`CHECK_EVERY` seconds. ``recycle(reason)`` and ``stop()`` are the worker's: the
    first stops it to be replaced, the second is a plain graceful stop.
    """

    def __init__(
        self,
        policy: Recycling,
        executor: Executor,
        *,
        recycle: Callable[[str], None],
        stop: Callable[[], None],
        worker_id: str,
    ) -> None:
        self._policy = policy
        self._recycle = recycle
        self._stop = stop
        self._worker_id = worker_id
        #: Names of the plain functions whose attempts were ended past their hard limit:
        #: their threads still run, and the process must exit without waiting for them.
        self.overran: list[str] = []
        if policy.max_tasks is not None:
            executor.start_budget = policy.max_tasks
            executor.on_budget_spent = lambda: recycle(f"{policy.max_tasks} tasks")
        if policy.hard_time_limits:
            executor.hard_limit_margin = HARD_LIMIT_MARGIN
            executor.on_overrun = self._overrun

    @property
    def watches(self) -> bool:
        """Whether :meth:`run` has anything to look at."""
        return self._policy.max_memory_mb is not None or self._policy.supervisor_pid is not None

    def _overrun(self, job: Job) -> None:
        self.overran.append(job.name)
        self._recycle(f"{job.name} [{job.id}] ran past its hard time limit")

    async def run(self) -> None:
        """Look every :data:`CHECK_EVERY` seconds; return once the worker is told to stop."""
        limit = self._policy.max_memory_mb
        supervisor = self._policy.supervisor_pid
        while True:
            await asyncio.sleep(CHECK_EVERY)
            if supervisor is not None and os.getppid() != supervisor:
                logger.warning(
                    "worker.orphaned: its supervisor (pid %d) is gone; stopping",
                    supervisor,
                    extra={"worker_id": self._worker_id},
                )
                self._stop()
                return
            if limit is not None and (rss := rss_mb()) is not None and rss >= limit:
                self._recycle(f"RSS {rss:.0f} MB (limit {limit} MB)")
                return
