"""Kafka producer that puts the W3C trace context into each record's headers (confluent-kafka and
the OpenTelemetry Python SDK, no Kafka instrumentation library).

    OTEL_SERVICE_NAME=orders OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 \
        python producer.py --bootstrap 127.0.0.1:9092 --topic orders --count 3

Prints {"traces": [TRACE_ID...], "send_spans": [SPAN_ID...]} on stdout: one trace per order.
"""

from __future__ import annotations

import argparse
import json
import os

from confluent_kafka import Producer
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.propagate import inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

provider = TracerProvider(resource=Resource.create())
provider.add_span_processor(BatchSpanProcessor(
    OTLPSpanExporter(endpoint=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
                     insecure=True)))
tracer = provider.get_tracer("shop.orders", "1.0.0")


# ANCHOR: send
def send_order(producer: Producer, topic: str, order_id: str, on_delivery) -> trace.SpanContext:
    # A PRODUCER span named `send {topic}`, with the messaging semantic conventions' attributes.
    with tracer.start_as_current_span(f"send {topic}", kind=SpanKind.PRODUCER, attributes={
        "messaging.system": "kafka",
        "messaging.operation.type": "send",
        "messaging.destination.name": topic,
        "messaging.kafka.message.key": order_id,
    }) as span:
        # The current context (this send span) becomes the message's creation context:
        # inject() writes traceparent (and tracestate, baggage) into a dict...
        carrier: dict[str, str] = {}
        inject(carrier)
        # ...and Kafka headers are (key, bytes) pairs.
        producer.produce(topic, key=order_id, value=json.dumps({"order": order_id}).encode(),
                         headers=[(k, v.encode()) for k, v in carrier.items()], on_delivery=on_delivery)
        return span.get_span_context()
# ANCHOR_END: send


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--topic", default="orders")
    ap.add_argument("--count", type=int, default=3)
    a = ap.parse_args()

    producer = Producer({"bootstrap.servers": a.bootstrap})
    failed = []

    def delivered(err, _msg) -> None:  # called from flush(): produce() only enqueues
        if err is not None:
            failed.append(err)

    sent = []
    for n in range(1, a.count + 1):
        # The work that decides to send: in a service, usually the request's server span.
        with tracer.start_as_current_span("place-order"):
            sent.append(send_order(producer, a.topic, f"order-{n}", delivered))
    undelivered = producer.flush(10)
    provider.shutdown()  # export the spans before exiting
    if undelivered or failed:
        raise SystemExit(f"records not delivered: {undelivered} still queued, errors {failed}")
    print(json.dumps({"traces": [format(s.trace_id, "032x") for s in sent],
                      "send_spans": [format(s.span_id, "016x") for s in sent]}))


if __name__ == "__main__":
    main()
