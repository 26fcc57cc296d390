"""What a worker counts, for ``/metrics`` (:mod:`aiotaskq.metrics` exports it to Prometheus).

The hot path only adds to plain dictionaries and lists (a task costs two dictionary
increments and two bucket increments, well under a microsecond): nothing of
``prometheus_client`` runs per task, and this module imports none of it. The numbers are
turned into metric families when they are collected (a scrape), from a :meth:`snapshot` of
every worker of the process; under ``--processes`` each child writes its snapshot to a file
every second and the supervisor serves their sum (:class:`SnapshotWriter`).

Counters and histograms never go down: a worker that stops leaves its totals to the
process (:func:`retire`), and the supervisor keeps the last snapshot of a child that exited.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import importlib.util
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..db.connect import WorkerDatabase
from ..db.status import queue_status_on
from ..errors import DatabaseError

__all__ = [
    "DURATION_BUCKETS",
    "OUTCOMES",
    "PICKUP_BUCKETS",
    "DepthSampler",
    "Histogram",
    "SnapshotWriter",
    "WorkerMetrics",
    "exported",
    "live",
    "merged",
    "retire",
]

logger = logging.getLogger(__name__)

#: How an attempt ended, as ``aiotaskq_tasks_finished_total{outcome}`` names it.
OUTCOMES = ("succeeded", "failed", "retried", "snoozed", "revoked", "released", "expired")
#: Seconds an attempt ran: from a few milliseconds (webhooks) to an hour (exports).
DURATION_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    *(30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0),
)
#: Seconds from a task's due time to its start: a millisecond when the queue keeps up.
PICKUP_BUCKETS = (
    *(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    *(10.0, 30.0, 60.0, 300.0),
)
#: The groups of ``aiotaskq status``, as ``aiotaskq_queue_depth{state}`` names them.
DEPTH_STATES = ("pending", "future", "active", "dirty", "failed")


def exported() -> bool:
    """Whether ``prometheus_client`` is installed (looked up, not imported): without it no
    metric is served, so the depth of the queues is not read either."""
    try:
        return importlib.util.find_spec("prometheus_client") is not None
    except ValueError:  # blocked in sys.modules
        return False


class Histogram:
    """Counts per bucket (``le`` bounds, then +Inf), their sum and their number."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le).
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def as_json(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "sum": self.sum, "count": self.count}

    def add(self, doc: dict[str, Any]) -> None:
        """Add another histogram's :meth:`as_json` of the same bounds."""
        for i, n in enumerate(doc["counts"]):
            self.counts[i] += n
        self.sum += doc["sum"]
        self.count += doc["count"]


def _key(*parts: str) -> str:
    # NUL cannot be in a task or queue name (they are stored as PostgreSQL text).
    return "\x00".join(parts)


class WorkerMetrics:
    """The counts of one worker. ``in_flight`` and ``pool`` are read when collected."""

    def __init__(self) -> None:
        self.started: dict[str, int] = {}  # task NUL queue
        self.finished: dict[str, int] = {}  # task NUL queue NUL outcome
        self.duration: dict[str, Histogram] = {}  # task NUL queue
        self.pickup: dict[str, Histogram] = {}  # queue
        self.loop_lag = 0.0
        #: (queue, state) -> tasks, and queue -> age of the oldest pending task, as the
        #: last :class:`DepthSampler` pass read them.
        self.depth: dict[str, int] = {}  # queue NUL state
        self.oldest: dict[str, float] = {}
        self.in_flight: Callable[[], dict[str, int]] = dict
        self.pool: Callable[[], dict[str, int]] = dict

    def start(self, task: str, queue: str, pickup_s: float | None) -> None:
        key = _key(task, queue)
        self.started[key] = self.started.get(key, 0) + 1
        if pickup_s is not None:
            hist = self.pickup.get(queue)
            if hist is None:
                hist = self.pickup[queue] = Histogram(PICKUP_BUCKETS)
            hist.observe(max(pickup_s, 0.0))

    def finish(self, task: str, queue: str, outcome: str, seconds: float | None) -> None:
        key = _key(task, queue, outcome)
        self.finished[key] = self.finished.get(key, 0) + 1
        if seconds is not None:
            dkey = _key(task, queue)
            hist = self.duration.get(dkey)
            if hist is None:
                hist = self.duration[dkey] = Histogram(DURATION_BUCKETS)
            hist.observe(seconds)

    def snapshot(self) -> dict[str, Any]:
        """Everything, as JSON-able values (what a child of ``--processes`` writes)."""
        return {
            "started": dict(self.started),
            "finished": dict(self.finished),
            "duration": {k: h.as_json() for k, h in self.duration.items()},
            "pickup": {k: h.as_json() for k, h in self.pickup.items()},
            "gauges": self.gauges(),
        }

    def totals(self) -> dict[str, Any]:
        """The counters and histograms alone (what outlives the worker)."""
        snap = self.snapshot()
        del snap["gauges"]
        return snap

    def gauges(self) -> dict[str, Any]:
        return {
            "loop_lag": self.loop_lag,
            "in_flight": self.in_flight(),
            "depth": dict(self.depth),
            "oldest": dict(self.oldest),
            "pool": self.pool(),
        }


#: The workers of this process that count, and the totals of those that stopped.
_live: list[WorkerMetrics] = []
_retired: dict[str, Any] = {"started": {}, "finished": {}, "duration": {}, "pickup": {}}


def live(metrics: WorkerMetrics) -> None:
    """Count ``metrics`` in what this process exports."""
    _live.append(metrics)


def retire(metrics: WorkerMetrics) -> None:
    """The worker stopped: keep its totals, drop its gauges."""
    if metrics in _live:
        _live.remove(metrics)
        add_totals(_retired, metrics.totals())


def add_totals(into: dict[str, Any], snap: dict[str, Any]) -> None:
    """Add a snapshot's counters and histograms to ``into`` (same layout, no gauges)."""
    for name in ("started", "finished"):
        for key, n in snap.get(name, {}).items():
            into[name][key] = into[name].get(key, 0) + n
    for name in ("duration", "pickup"):
        for key, doc in snap.get(name, {}).items():
            have = into[name].get(key)
            if have is None:
                into[name][key] = {
                    "counts": list(doc["counts"]),
                    "sum": doc["sum"],
                    "count": doc["count"],
                }
            else:
                for i, n in enumerate(doc["counts"]):
                    have["counts"][i] += n
                have["sum"] += doc["sum"]
                have["count"] += doc["count"]


def merged(
    extra: Sequence[dict[str, Any]] = (),
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The totals of this process (its live workers, those that stopped, and the
    snapshots in ``extra``), and the gauges of each live worker and live snapshot."""
    totals: dict[str, Any] = {"started": {}, "finished": {}, "duration": {}, "pickup": {}}
    add_totals(totals, _retired)
    gauges = []
    for metrics in list(_live):
        add_totals(totals, metrics.totals())
        gauges.append(metrics.gauges())
    for snap in extra:
        add_totals(totals, snap)
        if "gauges" in snap:
            gauges.append(snap["gauges"])
    return totals, gauges


class SnapshotWriter:
    """Under ``--processes``: every second, this child's snapshot to ``DIR/PID.json``
    (written to a temporary file and renamed, so the supervisor never reads half of one);
    once more when the worker stops, without its gauges, ``"gone": true``."""

    interval = 1.0

    def __init__(self, metrics: WorkerMetrics, directory: str) -> None:
        self._metrics = metrics
        self._path = Path(directory) / f"{os.getpid()}.json"

    def write(self, *, final: bool = False) -> None:
        snap = self._metrics.totals() if final else self._metrics.snapshot()
        if final:
            snap["gone"] = True
        fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=".snapshot-")
        with os.fdopen(fd, "w") as out:
            json.dump(snap, out)
        os.replace(tmp, self._path)

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.interval)
                self.write()
        finally:
            with contextlib.suppress(OSError):
                self.write(final=True)


class DepthSampler:
    """Every ``interval`` seconds, one read of the queues' groups (as ``aiotaskq status``
    counts them) for ``aiotaskq_queue_depth`` and ``aiotaskq_queue_oldest_pending_seconds``:
    per worker, never per scrape. It counts the table's rows, so its cost grows with the
    backlog; ``AIOTASKQ["METRICS_DEPTH_EVERY"]`` sets how often (0: never)."""

    def __init__(
        self,
        db: WorkerDatabase,
        metrics: WorkerMetrics,
        queues: Sequence[str],
        interval: float,
        dirty_after: float,
    ) -> None:
        self._db = db
        self._queues = queues
        self._metrics = metrics
        self.interval = interval
        self._dirty_after = dirty_after

    async def sample_once(self) -> None:
        began = time.monotonic()
        try:
            async with self._db.connection("Reading the queue depths") as conn:
                rows = await queue_status_on(conn, self._dirty_after)
        except DatabaseError:
            return  # the heartbeat's and the claim's lines tell of the database
        # The worker's own queues show with zeros when empty (a series does not vanish).
        depth = {_key(q, state): 0 for q in self._queues for state in DEPTH_STATES}
        oldest: dict[str, float] = {}
        for r in rows:
            for state in DEPTH_STATES:
                depth[_key(r.queue, state)] = getattr(r, state)
            if r.oldest_pending_age_s is not None:
                oldest[r.queue] = r.oldest_pending_age_s
        self._metrics.depth = depth
        self._metrics.oldest = oldest
        logger.debug("metrics.depth read in %.3f s", time.monotonic() - began)
