"""Prometheus metrics of the workers (needs ``prometheus_client``: the ``metrics`` extra).

- ``aiotaskq run --metrics-port 9108`` (or ``AIOTASKQ["METRICS_PORT"]``) serves
  ``/metrics`` from the worker process; under ``--processes`` the supervisor serves the sum
  of its children.
- In an ASGI server that runs a worker in its lifespan, route :func:`view`:
  ``path("metrics", aiotaskq.metrics.view)``; or :func:`register` the collector in a
  registry of your own.

The families (docs/operations.md): ``aiotaskq_tasks_started_total{task,queue}``,
``aiotaskq_tasks_finished_total{task,queue,outcome}``, the histograms
``aiotaskq_task_duration_seconds{task,queue}`` and ``aiotaskq_task_pickup_seconds{queue}``,
and the gauges ``aiotaskq_tasks_in_flight{queue}``, ``aiotaskq_queue_depth{queue,state}``,
``aiotaskq_queue_oldest_pending_seconds{queue}``, ``aiotaskq_loop_lag_seconds`` and
``aiotaskq_pool_connections{state}``. They are computed when collected, from what the
workers counted (:mod:`aiotaskq.worker.metrics`); nothing here runs per task.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse

from .worker import metrics as counts
from .worker.metrics import DURATION_BUCKETS, PICKUP_BUCKETS

try:
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector, CollectorRegistry
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImproperlyConfigured(
        "aiotaskq's metrics need prometheus_client: pip install prometheus-client (or the "
        '"metrics" extra of django-aiotaskq).'
    ) from exc

__all__ = ["WorkerCollector", "register", "serve", "view"]


def _split(key: str) -> list[str]:
    return key.split("\x00")


def _buckets(bounds: tuple[float, ...], doc: dict[str, Any]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    total = 0
    for bound, n in zip((*(repr(b) for b in bounds), "+Inf"), doc["counts"], strict=True):
        total += n
        out.append((bound, total))
    return out


def read_snapshots(directory: str) -> list[dict[str, Any]]:
    """The snapshots the children of ``--processes`` wrote in ``directory``; the gauges of a
    child that is gone (its last snapshot says so, or its process no longer exists) are left
    out, its counts kept."""
    snaps = []
    for path in sorted(Path(directory).glob("*.json")):
        try:
            snap = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # replaced while being read: the next scrape has it
        if snap.pop("gone", False) or not _alive(int(path.stem)):
            snap.pop("gauges", None)
        snaps.append(snap)
    return snaps


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkerCollector(Collector):
    """The metric families of the workers of this process (and, with ``directory``, of the
    children that write their snapshots there)."""

    def __init__(self, directory: str | None = None) -> None:
        self._directory = directory

    def collect(self) -> Iterator[Metric]:
        snaps = read_snapshots(self._directory) if self._directory else []
        totals, gauges = counts.merged(snaps)
        yield from _counters(totals)
        yield from _histograms(totals)
        yield from _gauges(gauges)


def _counters(totals: dict[str, Any]) -> Iterator[Metric]:
    started = CounterMetricFamily(
        "aiotaskq_tasks_started", "Attempts started.", labels=["task", "queue"]
    )
    for key, n in sorted(totals["started"].items()):
        started.add_metric(_split(key), n)
    yield started
    finished = CounterMetricFamily(
        "aiotaskq_tasks_finished",
        "Attempts ended, by outcome: succeeded, failed, retried, snoozed, revoked, released "
        "(given back at a stop) or expired (dropped unrun past its expiry).",
        labels=["task", "queue", "outcome"],
    )
    for key, n in sorted(totals["finished"].items()):
        finished.add_metric(_split(key), n)
    yield finished


def _histograms(totals: dict[str, Any]) -> Iterator[Metric]:
    duration = HistogramMetricFamily(
        "aiotaskq_task_duration_seconds",
        "How long attempts ran (not those given back at a stop).",
        labels=["task", "queue"],
    )
    for key, doc in sorted(totals["duration"].items()):
        duration.add_metric(_split(key), _buckets(DURATION_BUCKETS, doc), doc["sum"])
    yield duration
    pickup = HistogramMetricFamily(
        "aiotaskq_task_pickup_seconds",
        "From a task's due time to its start (tasks with limit keys are not counted: their "
        "wait for a seat or a token is the limit's).",
        labels=["queue"],
    )
    for key, doc in sorted(totals["pickup"].items()):
        pickup.add_metric([key], _buckets(PICKUP_BUCKETS, doc), doc["sum"])
    yield pickup


def _gauges(gauges: Iterable[dict[str, Any]]) -> Iterator[Metric]:
    gauges = list(gauges)
    in_flight: dict[str, int] = {}
    depth: dict[str, int] = {}
    oldest: dict[str, float] = {}
    pool: dict[str, int] = {}
    lag = 0.0
    for g in gauges:
        for queue, n in g["in_flight"].items():
            in_flight[queue] = in_flight.get(queue, 0) + n
        # Every worker reads the same table: the freshest of equal numbers, the largest.
        for key, n in g["depth"].items():
            depth[key] = max(depth.get(key, 0), n)
        for queue, age in g["oldest"].items():
            oldest[queue] = max(oldest.get(queue, 0.0), age)
        for state, n in g["pool"].items():
            pool[state] = pool.get(state, 0) + n
        lag = max(lag, g["loop_lag"])
    family = GaugeMetricFamily(
        "aiotaskq_tasks_in_flight",
        "Tasks running now (or ended, outcome unwritten).",
        labels=["queue"],
    )
    for queue, n in sorted(in_flight.items()):
        family.add_metric([queue], n)
    yield family
    family = GaugeMetricFamily(
        "aiotaskq_queue_depth",
        "Tasks per queue and group (pending, future, active, dirty, failed), as the workers "
        'last read them (every AIOTASKQ["METRICS_DEPTH_EVERY"] seconds).',
        labels=["queue", "state"],
    )
    for key, n in sorted(depth.items()):
        family.add_metric(_split(key), n)
    yield family
    family = GaugeMetricFamily(
        "aiotaskq_queue_oldest_pending_seconds",
        "Age of the oldest pending (due, unclaimed) task per queue; absent when none is.",
        labels=["queue"],
    )
    for queue, age in sorted(oldest.items()):
        family.add_metric([queue], age)
    yield family
    if gauges:
        yield GaugeMetricFamily(
            "aiotaskq_loop_lag_seconds",
            "How late the event loop woke the heartbeat at its last beat (the largest of the "
            "workers): a blocking call in an async task shows here.",
            value=lag,
        )
    family = GaugeMetricFamily(
        "aiotaskq_pool_connections",
        "The workers' connection pools: size (open), available (idle), waiting (requests).",
        labels=["state"],
    )
    for state, n in sorted(pool.items()):
        family.add_metric([state], n)
    yield family


_registered: set[int] = set()


def register(registry: CollectorRegistry = REGISTRY, directory: str | None = None) -> None:
    """Add the workers' collector to ``registry`` (the default one by default); once per
    registry."""
    if id(registry) in _registered:
        return
    registry.register(WorkerCollector(directory))
    _registered.add(id(registry))


def view(request: HttpRequest) -> HttpResponse:
    """A Django view of ``/metrics`` in Prometheus' text format: the default registry, with
    the collector of this process's workers (an ASGI server that runs one in its lifespan)."""
    register()
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)


def serve(port: int, directory: str | None = None) -> None:
    """Serve ``/metrics`` on ``port`` (all interfaces) from a daemon thread: the default
    registry with the workers' collector (over ``directory``'s snapshots under
    ``--processes``).

    Raises:
        OSError: the port cannot be bound (taken, or privileged).
    """
    from prometheus_client import start_http_server

    register(directory=directory)
    start_http_server(port)
