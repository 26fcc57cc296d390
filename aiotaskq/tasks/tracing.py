"""OpenTelemetry traces, when ``opentelemetry-api`` is installed (the ``otel`` extra).

At enqueue, the current W3C trace context (``traceparent``, ``tracestate``) is stored with the
task; the worker runs each attempt in a span ``process <task name>`` (kind CONSUMER, the
messaging semantic conventions: ``messaging.system`` = ``aiotaskq``,
``messaging.destination.name`` = the queue, ``messaging.message.id`` = the task id,
``messaging.operation.type`` = ``process``, and ``aiotaskq.task.attempt``). The first
attempt's parent is the enqueuing span; a later attempt (a retry, a snooze, a rescue) starts
a trace of its own with a link to it, so the enqueuing trace is not stretched over hours.
A failed attempt's span records the exception and has status ERROR.

aiotaskq configures no SDK: until the application sets a tracer provider (the SDK's), no
context is stored and no span is made. Without the package, nothing of it is imported (the
module is looked up, not imported), and attempts run as before.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import time
import uuid
from collections.abc import Iterator
from functools import cache
from typing import Any

__all__ = ["active", "attempt_span", "carrier", "enabled", "set_outcome"]


@cache
def enabled() -> bool:
    """Whether ``opentelemetry-api`` is installed (looked up, not imported)."""
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except (ImportError, ValueError):  # a parent missing, or blocked in sys.modules
        return False


@cache
def _api() -> Any:
    from opentelemetry import propagate, trace

    return propagate, trace


_provider_set = False
_looked_at = -math.inf


def active() -> bool:
    """Whether traces are taken: the package is installed and an SDK has set a tracer
    provider. Without one, the API's spans record nothing, and making them would still
    cost every attempt some 15 microseconds: they are not made. A provider is set once for
    the process's life; until it is, this looks again at most once a second (the look
    itself costs a microsecond, too much for every enqueued row)."""
    global _provider_set, _looked_at
    if _provider_set:
        return True
    now = time.monotonic()
    if now - _looked_at < 1.0:
        return False
    _looked_at = now
    if not enabled():
        return False
    _, trace = _api()
    _provider_set = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    return _provider_set


def carrier() -> str | None:
    """The current span's context as JSON text (``{"traceparent": ...}``), or None when no
    span is recording (or no SDK is set up, or the package is not installed): what enqueue
    stores."""
    if not active():
        return None
    propagate, trace = _api()
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return json.dumps(headers, separators=(",", ":")) if headers else None


def _extract(stored: str | None) -> Any:
    propagate, trace = _api()
    if not stored:
        return None
    try:
        headers = json.loads(stored)
    except ValueError:
        return None
    if not isinstance(headers, dict):
        return None
    context = propagate.extract({str(k): str(v) for k, v in headers.items()})
    span_context = trace.get_current_span(context).get_span_context()
    return (context, span_context) if span_context.is_valid else None


@contextlib.contextmanager
def attempt_span(
    name: str, queue: str, task_id: uuid.UUID, attempt: int, stored: str | None
) -> Iterator[Any]:
    """Run an attempt in its span (a no-op without the package). The span is the current
    one inside, so the task's own spans (HTTP calls, queries) are its children."""
    if not active():
        yield None
        return
    _, trace = _api()
    parent = _extract(stored)
    context = links = None
    if parent is not None:
        if attempt <= 1:
            context = parent[0]
        else:
            links = [trace.Link(parent[1], {"aiotaskq.link": "enqueued"})]
    tracer = trace.get_tracer("aiotaskq")
    with tracer.start_as_current_span(
        f"process {name}",
        context=context,
        kind=trace.SpanKind.CONSUMER,
        links=links,
        attributes={
            "messaging.system": "aiotaskq",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": queue,
            "messaging.message.id": str(task_id),
            "aiotaskq.task.name": name,
            "aiotaskq.task.attempt": attempt,
        },
        # The executor records how the attempt ended (set_outcome): a task's exception is
        # its outcome, not an error of the span's code.
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


def set_outcome(span: Any, outcome: str, exc: BaseException | None = None) -> None:
    """Mark the attempt's span with how it ended (``aiotaskq.outcome``); a failure or a
    retry records the exception and sets status ERROR."""
    if span is None:
        return
    _, trace = _api()
    span.set_attribute("aiotaskq.outcome", outcome)
    if exc is not None and outcome in ("failed", "retried", "revoked"):
        span.record_exception(exc)
        span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(exc).__name__}"))
