"""OpenTelemetry SDK set-up for a Python service that sends to Clew (the guide's step 1).

The endpoint and the service name come from the standard variables, so the same code runs against
a local Clew and a production one:

    OTEL_SERVICE_NAME=orders OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 python orders.py
"""

from __future__ import annotations

# ANCHOR: setup
import atexit
import os

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


def init_tracing() -> TracerProvider:
    # service.name comes from OTEL_SERVICE_NAME; Resource.create() reads it (and OTEL_RESOURCE_ATTRIBUTES).
    provider = TracerProvider(resource=Resource.create())
    # OTLP/gRPC to Clew's :4317. insecure=True: plaintext to a loopback Clew; with TLS on the
    # receiver, drop it and set OTEL_EXPORTER_OTLP_CERTIFICATE to the CA file.
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    trace.set_tracer_provider(provider)
    # Spans still queued in the BatchSpanProcessor are lost if the process exits without this.
    atexit.register(provider.shutdown)
    return provider
# ANCHOR_END: setup
