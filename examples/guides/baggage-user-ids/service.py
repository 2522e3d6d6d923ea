"""The services' side of the baggage guide: put a pseudonym (never the raw user id) in baggage,
copy baggage onto spans, and strip baggage from calls that leave your organisation.

    CLEW_BAGGAGE_SECRET=... OTEL_SERVICE_NAME=web OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 \
        python service.py --user-id 42

Prints JSON: the trace id, the pseudonym, and the headers sent to an internal service and to a
third party.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os

from opentelemetry import baggage, context, propagate, trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator


# ANCHOR: pseudonym
def pseudonymize(key: str, value: str, secret: bytes) -> str:
    """The pseudonym clew-propagation and Clew's baggage_policy compute:
    `h1:` + the first 128 bits of HMAC-SHA256(secret, key || 0x00 || value), hex."""
    tag = hmac.new(secret, key.encode() + b"\0" + value.encode(), hashlib.sha256).digest()
    return "h1:" + tag[:16].hex()
# ANCHOR_END: pseudonym


# ANCHOR: copy
class BaggageToAttributes(SpanProcessor):
    """Copies baggage entries onto every span started in their context, so they can be searched."""

    def on_start(self, span, parent_context=None):
        for key, value in baggage.get_all(parent_context).items():
            span.set_attribute(key, str(value))
# ANCHOR_END: copy


# ANCHOR: outbound
INTERNAL_HOSTS = {"orders.internal", "billing.internal"}


def outgoing_headers(host: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    if host in INTERNAL_HOSTS:
        propagate.inject(headers)  # traceparent, tracestate and baggage
    else:
        # Third parties get the trace context (harmless random ids) and no baggage at all.
        TraceContextTextMapPropagator().inject(headers)
    return headers
# ANCHOR_END: outbound


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--user-id", required=True)
    p.add_argument("--leak-raw-id", action="store_true",
                   help="behave like a careless service: put the raw id in baggage")
    a = p.parse_args()
    secret = os.environ["CLEW_BAGGAGE_SECRET"].encode()

    provider = TracerProvider(resource=Resource.create())
    provider.add_span_processor(BaggageToAttributes())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(
        endpoint=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"), insecure=True)))
    tracer = provider.get_tracer("baggage-example")

    # ANCHOR: inbound
    user = a.user_id if a.leak_raw_id else pseudonymize("user.id", a.user_id, secret)
    ctx = baggage.set_baggage("user.id", user)
    ctx = baggage.set_baggage("tenant.plan", "gold", ctx)
    ctx = baggage.set_baggage("session.id", "s-7f3a", ctx)  # not allowlisted in Clew
    token = context.attach(ctx)
    # ANCHOR_END: inbound
    try:
        with tracer.start_as_current_span("GET /account", kind=trace.SpanKind.SERVER) as span:
            with tracer.start_as_current_span("load-profile"):
                internal = outgoing_headers("orders.internal")
                external = outgoing_headers("api.payments.example")
            trace_id = format(span.get_span_context().trace_id, "032x")
    finally:
        context.detach(token)
    provider.shutdown()
    print(json.dumps({"trace_id": trace_id, "pseudonym": pseudonymize("user.id", a.user_id, secret),
                      "internal": internal, "external": external}))


if __name__ == "__main__":
    main()
