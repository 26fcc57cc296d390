"""OpenTelemetry traces across processes: a producer with an SDK enqueues inside a span, a
worker with an SDK runs each attempt in a span that continues (first attempt) or links to
(later attempts) the producer's, with the messaging attributes. Without an SDK, or without
the package, nothing is stored and nothing is imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, WorkerProcess, wait_for

PRODUCER = """
import asyncio, json, os, sys
import django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()
if os.environ.get("AIOTASKQ_TEST_SPANS"):
    import tests.otel_spans
from opentelemetry import trace
from aiotaskq import aenqueue_many, enqueue_many
from tests.app import tasks

out = {}
with trace.get_tracer("producer").start_as_current_span("request") as span:
    ctx = span.get_span_context()
    out["trace_id"] = f"{ctx.trace_id:032x}"
    out["span_id"] = f"{ctx.span_id:016x}"
    out["delay"] = str(tasks.record.delay("t-delay").id)
    out["flaky"] = str(tasks.flaky.delay("t-flaky", 1).id)
    out["fail"] = str(tasks.fail.delay("t-fail").id)
    out["inner"] = str(tasks.traced_inner.delay("t-inner").id)
    out["keyed"] = str(tasks.rebuild.delay("t-keyed", 7).id)
    out["limited"] = str(tasks.per_host.delay("t-limited", "h", 0).id)
    out["few"] = [str(r.id) for r in enqueue_many([tasks.record.s(f"t-few-{i}") for i in range(3)])]
    out["copied"] = [
        str(r.id) for r in enqueue_many([tasks.record.s(f"t-copy-{i}") for i in range(70)])
    ]

    async def produce():
        one = await tasks.record.adelay("t-adelay")
        many = await aenqueue_many([tasks.record.s(f"t-amany-{i}") for i in range(70)])
        return str(one.id), [str(r.id) for r in many]

    out["adelay"], out["amany"] = asyncio.run(produce())
print(json.dumps(out))
"""


def _produce(env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", PRODUCER],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    produced: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return produced


def _spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def _processes(path: Path, task_id: str) -> list[dict[str, Any]]:
    return [
        s
        for s in _spans(path)
        if s["name"].startswith("process ")
        and s["attributes"].get("messaging.message.id") == task_id
    ]


def test_a_span_continues_from_the_producer_into_the_worker(
    worker: Callable[..., WorkerProcess], tmp_path: Path, db: Any
) -> None:
    producer_spans = tmp_path / "producer.jsonl"
    p = _produce({"AIOTASKQ_TEST_SPANS": str(producer_spans)})
    (request,) = _spans(producer_spans)
    assert request["span_id"] == p["span_id"]
    # Every enqueue path stored the producer's context with its task.
    ids = [p[k] for k in ("delay", "flaky", "fail", "inner", "keyed", "limited", "adelay")]
    ids += p["few"] + p["copied"] + p["amany"]
    rows = dict(
        db.execute(
            "SELECT id::text, trace->>'traceparent' FROM aiotaskq_task WHERE id = ANY(%s::uuid[])",
            (ids,),
        ).fetchall()
    )
    assert len(rows) == len(ids)
    assert {v.rsplit("-", 1)[0] for v in rows.values()} == {f"00-{p['trace_id']}-{p['span_id']}"}

    spans = tmp_path / "worker.jsonl"
    worker(env={"AIOTASKQ_TEST_SPANS": str(spans), "AIOTASKQ_TEST_IMPORTS": "tests.otel_spans"})
    every = [p[k] for k in ("delay", "fail", "inner", "keyed", "limited", "adelay")]
    every += p["few"] + p["copied"] + p["amany"]
    wait_for(
        lambda: (
            all(_processes(spans, i) for i in every) and len(_processes(spans, p["flaky"])) == 2
        ),
        what="a span for every attempt",
    )

    for task_id in every:
        (span,) = _processes(spans, task_id)
        assert span["trace_id"] == p["trace_id"]
        assert span["parent_id"] == p["span_id"]
        assert span["kind"] == "CONSUMER"
        assert span["links"] == []
    (delay,) = _processes(spans, p["delay"])
    assert delay["name"] == "process tests.app.tasks.record"
    assert delay["attributes"] == {
        "messaging.system": "aiotaskq",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "default",
        "messaging.message.id": p["delay"],
        "aiotaskq.task.name": "tests.app.tasks.record",
        "aiotaskq.task.attempt": 1,
        "aiotaskq.outcome": "succeeded",
    }
    assert delay["status"] == "UNSET"
    # A failure: status ERROR and the exception recorded.
    (fail,) = _processes(spans, p["fail"])
    assert fail["status"] == "ERROR"
    assert fail["events"] == ["exception"]
    assert fail["attributes"]["aiotaskq.outcome"] == "failed"
    # A retry: the first attempt continues the producer's trace; the second is a trace of
    # its own, linked to the producer's span.
    first, second = sorted(
        _processes(spans, p["flaky"]), key=lambda s: s["attributes"]["aiotaskq.task.attempt"]
    )
    assert first["parent_id"] == p["span_id"]
    assert first["attributes"]["aiotaskq.outcome"] == "retried"
    assert second["attributes"]["aiotaskq.task.attempt"] == 2
    assert second["parent_id"] is None
    assert second["trace_id"] != p["trace_id"]
    assert second["links"] == [{"trace_id": p["trace_id"], "span_id": p["span_id"]}]
    # The task's own span is a child of its attempt's.
    (inner_attempt,) = _processes(spans, p["inner"])
    (inner,) = [s for s in _spans(spans) if s["name"] == "inner work"]
    assert inner["parent_id"] == inner_attempt["span_id"]
    assert inner["trace_id"] == p["trace_id"]


def test_without_an_sdk_nothing_is_stored_and_no_span_is_made(
    worker: Callable[..., WorkerProcess], db: Any
) -> None:
    p = _produce({})  # the API is installed, no tracer provider is set
    (stored,) = db.execute("SELECT count(*) FROM aiotaskq_task WHERE trace IS NOT NULL").fetchone()
    assert stored == 0
    assert p["trace_id"] == "0" * 32  # the API's span records nothing


def test_without_the_package_nothing_is_imported() -> None:
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None\n"  # as if it were not installed
        "import os, django\n"
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'tests.settings'\n"
        "django.setup()\n"
        "from aiotaskq.tasks import tracing\n"
        "from tests.app import tasks\n"
        "r = tasks.record.delay('no-otel')\n"
        "assert not tracing.enabled() and tracing.carrier() is None\n"
        "with tracing.attempt_span('n', 'q', r.id, 1, None) as span:\n"
        "    assert span is None\n"
        "print('ok', [m for m in sys.modules if m.startswith('opentelemetry.')])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok []"
