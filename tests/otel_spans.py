"""An OpenTelemetry SDK for one process of the trace tests (tests/test_traces.py): every
ended span as a JSON line in the file ``AIOTASKQ_TEST_SPANS`` names. Imported by a worker
through ``AIOTASKQ["IMPORTS"]``, or by a producer script."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult


class _ToFile(SpanExporter):
    def __init__(self, path: str) -> None:
        self._path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self._path, "a") as out:
            for span in spans:
                ctx = span.get_span_context()
                assert ctx is not None
                out.write(
                    json.dumps(
                        {
                            "name": span.name,
                            "trace_id": f"{ctx.trace_id:032x}",
                            "span_id": f"{ctx.span_id:016x}",
                            "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
                            "kind": span.kind.name,
                            "attributes": dict(span.attributes or {}),
                            "links": [
                                {
                                    "trace_id": f"{link.context.trace_id:032x}",
                                    "span_id": f"{link.context.span_id:016x}",
                                }
                                for link in span.links
                            ],
                            "status": span.status.status_code.name,
                            "events": [event.name for event in span.events],
                        }
                    )
                    + "\n"
                )
        return SpanExportResult.SUCCESS


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(_ToFile(os.environ["AIOTASKQ_TEST_SPANS"])))
trace.set_tracer_provider(provider)
