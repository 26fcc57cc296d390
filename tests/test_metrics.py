"""Prometheus metrics: real scrapes of real workers (one process, and ``--processes``), the
Django view, every outcome counted, label values that need escaping, and nothing of
``prometheus_client`` imported where it is not asked for."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from aiotaskq import metrics
from aiotaskq.worker import metrics as counts
from tests.app import tasks
from tests.conftest import ROOT, WorkerProcess, executions, run_cli, wait_for

RECORD = "tests.app.tasks.record"
FAIL = "tests.app.tasks.fail"
FAST_DEPTH = {"AIOTASKQ_TEST_SETTINGS": json.dumps({"METRICS_DEPTH_EVERY": 0.3})}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def _scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return _parse(response.read().decode())


def _get(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def _done(db: Any) -> bool:
    (left,) = db.execute("SELECT count(*) FROM aiotaskq_task WHERE state <> 'failed'").fetchone()
    return left == 0


def test_a_scrape_after_40_successes_and_10_failures_counts_them_exactly(
    worker: Callable[..., WorkerProcess], db: Any
) -> None:
    port = _free_port()
    proc = worker("--metrics-port", str(port), env=FAST_DEPTH)
    assert f"metrics:     http://0.0.0.0:{port}/metrics" in proc.log()
    for i in range(40):
        tasks.record.delay(f"ok-{i}")
    for i in range(10):
        tasks.fail.delay(f"bad-{i}")
    wait_for(
        lambda: (
            _done(db) and db.execute("SELECT count(*) FROM testapp_execution").fetchone()[0] == 50
        ),
        what="the 50 tasks",
    )
    s = wait_for(
        lambda: (
            (m := _scrape(port))
            and _get(m, "aiotaskq_queue_depth", queue="default", state="failed") == 10
            and m
        ),
        what="the depth read after the failures",
    )
    assert _get(s, "aiotaskq_tasks_started_total", task=RECORD, queue="default") == 40
    assert _get(s, "aiotaskq_tasks_started_total", task=FAIL, queue="default") == 10
    finished = {
        (dict(labels)["task"], dict(labels)["outcome"]): value
        for (name, labels), value in s.items()
        if name == "aiotaskq_tasks_finished_total"
    }
    assert finished == {(RECORD, "succeeded"): 40, (FAIL, "failed"): 10}
    assert _get(s, "aiotaskq_task_duration_seconds_count", task=RECORD, queue="default") == 40
    assert _get(s, "aiotaskq_task_duration_seconds_count", task=FAIL, queue="default") == 10
    inf = _get(s, "aiotaskq_task_duration_seconds_bucket", task=RECORD, queue="default", le="+Inf")
    assert inf == 40
    assert _get(s, "aiotaskq_task_pickup_seconds_count", queue="default") == 50
    # Buckets are cumulative, and the sum is a sum of non-negative seconds.
    buckets = sorted(
        (float(dict(labels)["le"]), value)
        for (name, labels), value in s.items()
        if name == "aiotaskq_task_pickup_seconds_bucket"
    )
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    assert buckets[-1] == (math.inf, 50)
    assert 0 <= (_get(s, "aiotaskq_task_pickup_seconds_sum", queue="default") or 0) < 50 * 5
    assert _get(s, "aiotaskq_tasks_in_flight", queue="default") == 0
    assert _get(s, "aiotaskq_queue_depth", queue="default", state="pending") == 0
    assert _get(s, "aiotaskq_queue_depth", queue="default", state="active") == 0
    assert _get(s, "aiotaskq_queue_oldest_pending_seconds", queue="default") is None
    lag = _get(s, "aiotaskq_loop_lag_seconds")
    assert lag is not None
    assert 0 <= lag < 60
    size = _get(s, "aiotaskq_pool_connections", state="size")
    assert size is not None
    assert size >= 1
    # The default registry's own families come along (a user's metrics would too).
    assert any(name.startswith("process_") for name, _ in s)


def test_every_outcome_has_its_count(worker: Callable[..., WorkerProcess], db: Any) -> None:
    port = _free_port()
    worker("--metrics-port", str(port), "--concurrency", "10")
    tasks.flaky.delay("flaky", 1)  # a retry, then a success
    tasks.snooze_once.delay("snoozy")  # a snooze, then a success
    tasks.record.apply_async(("gone",), countdown=0.5, expires=0.2)  # expired unrun
    long = tasks.sleep_then_record.delay("revoke-me", 60)
    wait_for(
        lambda: (
            _get(_scrape(port), "aiotaskq_tasks_in_flight", queue="default") == 1
            and len(executions("flaky")) == 2
            and len(executions("snoozy")) == 2
        ),
        what="the flaky and snoozed tasks to end, the long one to run",
    )
    long.revoke()
    wait_for(lambda: _done(db), what="every task to end")

    def finished() -> dict[tuple[str, str], float]:
        return {
            (dict(labels)["task"].rsplit(".", 1)[1], dict(labels)["outcome"]): value
            for (name, labels), value in _scrape(port).items()
            if name == "aiotaskq_tasks_finished_total"
        }

    want = {
        ("flaky", "retried"): 1,
        ("flaky", "succeeded"): 1,
        ("snooze_once", "snoozed"): 1,
        ("snooze_once", "succeeded"): 1,
        ("record", "expired"): 1,
        ("sleep_then_record", "revoked"): 1,
    }
    wait_for(lambda: finished() == want, what=f"the counts {want}")
    s = _scrape(port)
    # An expired task never started; a snoozed one started twice.
    assert _get(s, "aiotaskq_tasks_started_total", task=RECORD, queue="default") is None
    assert (
        _get(s, "aiotaskq_tasks_started_total", task="tests.app.tasks.snooze_once", queue="default")
        == 2
    )


def test_processes_are_summed_and_a_stopped_child_still_counts(
    worker: Callable[..., WorkerProcess], db: Any
) -> None:
    port = _free_port()
    proc = worker(
        "--processes", "2", "--metrics-port", str(port), "--grace", "0", wait=False, env=FAST_DEPTH
    )
    wait_for(lambda: proc.log().count("worker.started") == 2, what="both children")
    for i in range(30):
        tasks.record.delay(f"p-{i}")
    wait_for(lambda: _done(db), what="the 30 tasks")

    def started() -> float | None:
        return _get(_scrape(port), "aiotaskq_tasks_started_total", task=RECORD, queue="default")

    wait_for(lambda: started() == 30, what="30 starts summed over the children")
    # Two children's pools, one gauge.
    wait_for(
        lambda: (_get(_scrape(port), "aiotaskq_pool_connections", state="size") or 0) >= 2,
        what="both children's pools",
    )
    # A task given back at a stop counts as released, and the supervisor still serves the
    # counts of the child that stopped: SIGTERM one child (the supervisor replaces it).
    tasks.sleep_then_record.delay("held", 60)
    wait_for(
        lambda: _get(_scrape(port), "aiotaskq_tasks_in_flight", queue="default") == 1,
        what="the long task in flight",
    )
    (holder,) = db.execute("SELECT worker_id FROM aiotaskq_task").fetchone()
    os.kill(int(holder.split(":")[1]), signal.SIGTERM)
    wait_for(
        lambda: (
            _get(
                _scrape(port),
                "aiotaskq_tasks_finished_total",
                task="tests.app.tasks.sleep_then_record",
                queue="default",
                outcome="released",
            )
            == 1
        ),
        what="the released task counted after its child left",
    )
    assert started() == 30
    # The long task started in the child that left, and again in another.
    wait_for(
        lambda: (
            _get(
                _scrape(port),
                "aiotaskq_tasks_started_total",
                task="tests.app.tasks.sleep_then_record",
                queue="default",
            )
            == 2
        ),
        what="the long task's second start",
    )
    proc.signal(signal.SIGTERM)
    assert proc.wait(60) == 0


async def test_the_django_view_serves_the_workers_of_its_process(db: Any) -> None:
    from django.test import RequestFactory

    from aiotaskq.worker import Worker, WorkerConfig

    def started() -> float:
        response = metrics.view(RequestFactory().get("/metrics"))
        assert response["Content-Type"].startswith("text/plain")
        s = _parse(response.content.decode())
        return _get(s, "aiotaskq_tasks_started_total", task=RECORD, queue="default") or 0

    before = started()
    for i in range(5):
        await tasks.record.adelay(f"view-{i}")
    await Worker(WorkerConfig(burst=True)).run()
    # The worker stopped: its counts stay with the process.
    assert started() == before + 5


def test_no_prometheus_client_no_import_and_a_clear_error() -> None:
    def run(code: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    # A burst run without a metrics port imports none of prometheus_client.
    out = run(
        "import sys\n"
        "from aiotaskq.cli import main\n"
        "code = main(['run', '--burst', '--settings', 'tests.settings'])\n"
        "print('imported' if 'prometheus_client' in sys.modules else 'not imported')\n"
        "sys.exit(code)\n"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("not imported")
    # Asked for without the package: one line that names it.
    out = run(
        "import sys\n"
        "sys.modules['prometheus_client'] = None\n"
        "from aiotaskq.cli import main\n"
        "sys.exit(main(['run', '--burst', '--metrics-port', '9', '--settings', 'tests.settings']))"
    )
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("aiotaskq run: error: --metrics-port 9: aiotaskq's metrics need")
    assert "pip install prometheus-client" in out.stderr


@pytest.mark.parametrize("value", ["0", "65536", "http", "-1"])
def test_a_bad_port_is_one_line(value: str) -> None:
    out = run_cli("run", "--metrics-port", value, check=False)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1, out.stderr
    assert "expected a TCP port from 1 to 65535" in out.stderr


def test_a_taken_port_is_one_line() -> None:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        port = sock.getsockname()[1]
        out = run_cli("run", "--burst", "--metrics-port", str(port), check=False)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1, out.stderr
    assert f"--metrics-port {port}: the port cannot be served" in out.stderr


names = st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s)


@settings(max_examples=60, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            names,
            names,
            st.sampled_from(counts.OUTCOMES),
            st.floats(min_value=0, max_value=1e6, allow_nan=False),
            st.one_of(st.none(), st.floats(min_value=-5, max_value=1e6, allow_nan=False)),
        ),
        max_size=30,
    )
)
def test_counts_survive_the_exposition_format_whatever_the_names(
    events: list[tuple[str, str, str, float, float | None]],
) -> None:
    """Task and queue names with quotes, backslashes, newlines or surrogates come back from
    a scrape as they were counted, and every histogram is consistent."""
    one, two = counts.WorkerMetrics(), counts.WorkerMetrics()
    for i, (task, queue, outcome, seconds, pickup) in enumerate(events):
        side = one if i % 2 else two
        side.start(task, queue, pickup)
        side.finish(task, queue, outcome, seconds)
    # One worker's totals by way of a --processes snapshot (JSON), the other live.
    snap = json.loads(json.dumps(one.snapshot()))
    totals: dict[str, Any] = {"started": {}, "finished": {}, "duration": {}, "pickup": {}}
    counts.add_totals(totals, snap)
    counts.add_totals(totals, two.totals())

    class Fixed:
        def collect(self) -> Any:
            yield from metrics._counters(totals)
            yield from metrics._histograms(totals)

    registry = CollectorRegistry()
    registry.register(Fixed())  # type: ignore[arg-type]
    try:
        text = generate_latest(registry).decode()
    except UnicodeEncodeError:
        # A lone surrogate cannot be written as UTF-8: the client refuses the whole scrape.
        assert any(any(0xD800 <= ord(c) <= 0xDFFF for c in t + q) for t, q, *_ in events), (
            "only a surrogate may fail the encoding"
        )
        return
    s = _parse(text)
    started: dict[tuple[str, str], int] = {}
    finished: dict[tuple[str, str, str], int] = {}
    pickups: dict[str, int] = {}
    for task, queue, outcome, _seconds, pickup in events:
        started[task, queue] = started.get((task, queue), 0) + 1
        finished[task, queue, outcome] = finished.get((task, queue, outcome), 0) + 1
        if pickup is not None:
            pickups[queue] = pickups.get(queue, 0) + 1
    for (task, queue), n in started.items():
        assert _get(s, "aiotaskq_tasks_started_total", task=task, queue=queue) == n
        assert _get(s, "aiotaskq_task_duration_seconds_count", task=task, queue=queue) == n
    for (task, queue, outcome), n in finished.items():
        got = _get(s, "aiotaskq_tasks_finished_total", task=task, queue=queue, outcome=outcome)
        assert got == n
    for queue, n in pickups.items():
        assert _get(s, "aiotaskq_task_pickup_seconds_count", queue=queue) == n
        assert _get(s, "aiotaskq_task_pickup_seconds_bucket", queue=queue, le="+Inf") == n


def test_histogram_buckets_take_a_bound_as_le() -> None:
    hist = counts.Histogram((0.1, 1.0))
    for value in (0.0, 0.1, 0.5, 1.0, 1.5, dt.timedelta(hours=1).total_seconds()):
        hist.observe(value)
    assert hist.counts == [2, 2, 2]
    assert hist.count == 6


def test_the_grafana_dashboard_uses_exactly_the_exported_families() -> None:
    import re

    registry = CollectorRegistry()
    registry.register(metrics.WorkerCollector())  # type: ignore[arg-type]
    m = counts.WorkerMetrics()
    m.start("t", "q", 0.1)
    m.finish("t", "q", "succeeded", 0.2)
    counts.live(m)
    try:
        text = generate_latest(registry).decode()
    finally:
        counts.retire(m)
    exported = {f.name for f in text_string_to_metric_families(text)}
    dashboard = (ROOT / "docs" / "grafana-dashboard.json").read_text()
    json.loads(dashboard)  # valid JSON
    used = {
        re.sub(r"_(bucket|total)$", "", name)
        for name in re.findall(r"aiotaskq_[a-z_]+", dashboard)
        if name != "aiotaskq"
    }
    assert used == exported
