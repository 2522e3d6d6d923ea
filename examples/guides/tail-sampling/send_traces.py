"""Sends a mix of traces to a Clew running with the guide's tail sampling policies.

    OTEL_SERVICE_NAME=checkout OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 \
        python send_traces.py --normal 180 --errors 10 --slow 10

Every trace is `GET /checkout` (SERVER) with a `SELECT orders` child. Error traces have an ERROR
child; slow traces last 1.5 s (timestamps are set explicitly, nothing sleeps). Prints the trace ids
of each kind as JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode


# ANCHOR: send
def send(tracer, kind: str) -> str:
    start = time.time_ns()
    duration = 1_500_000_000 if kind == "slow" else 40_000_000
    root = tracer.start_span("GET /checkout", kind=SpanKind.SERVER, start_time=start,
                             attributes={"http.route": "/checkout"})
    with trace.use_span(root, end_on_exit=False):
        child = tracer.start_span("SELECT orders", kind=SpanKind.CLIENT, start_time=start + 1_000_000,
                                  attributes={"db.system.name": "postgresql"})
        if kind == "error":
            child.set_status(Status(StatusCode.ERROR, "deadlock detected"))
        child.end(end_time=start + duration - 1_000_000)
    root.end(end_time=start + duration)
    return format(root.get_span_context().trace_id, "032x")
# ANCHOR_END: send


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--normal", type=int, default=180)
    p.add_argument("--errors", type=int, default=10)
    p.add_argument("--slow", type=int, default=10)
    a = p.parse_args()
    provider = TracerProvider(resource=Resource.create())
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    tracer = provider.get_tracer("tail-sampling-example")
    ids = {k: [send(tracer, k) for _ in range(n)]
           for k, n in (("error", a.errors), ("slow", a.slow), ("normal", a.normal))}
    provider.shutdown()  # flush before printing: the ids are only useful once the spans are sent
    print(json.dumps(ids))


if __name__ == "__main__":
    main()
