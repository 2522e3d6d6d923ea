"""Kafka consumer that continues the producer's trace from the record headers (confluent-kafka and
the OpenTelemetry Python SDK, no Kafka instrumentation library).

    OTEL_SERVICE_NAME=billing OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 \
        python consumer.py --bootstrap 127.0.0.1:9092 --topic orders --group billing --count 3 \
        --mode each            # or: batch, ignore-headers

* `each`: one `process {topic}` span per record, a child of the producer's `send` span.
* `batch`: one `process {topic}` span for the batch, with a link to every record's `send` span.
* `ignore-headers`: the broken version: the headers are not read, every record starts a new trace.

Prints {"traces": [TRACE_ID...], "process_spans": [SPAN_ID...]} (its `process` spans) on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from confluent_kafka import Consumer, Message
from opentelemetry import context, trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.propagate import extract
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, SpanKind

provider = TracerProvider(resource=Resource.create())
provider.add_span_processor(BatchSpanProcessor(
    OTLPSpanExporter(endpoint=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
                     insecure=True)))
tracer = provider.get_tracer("shop.billing", "1.0.0")


def messaging_attributes(topic: str, group: str) -> dict:
    return {"messaging.system": "kafka", "messaging.operation.type": "process",
            "messaging.destination.name": topic, "messaging.consumer.group.name": group}


def charge_card(msg: Message) -> None:
    with tracer.start_as_current_span("charge-card", attributes={"app.order": msg.key().decode()}):
        pass  # the business logic; its spans are children of the current process span


# ANCHOR: extract
def creation_context(msg: Message) -> context.Context:
    """The context the producer injected: Kafka headers are (key, bytes) pairs, the propagator
    reads a dict of strings."""
    carrier = {k: v.decode("utf-8", "replace") for k, v in msg.headers() or [] if v is not None}
    return extract(carrier)
# ANCHOR_END: extract


# ANCHOR: each
def process_each(msg: Message, group: str) -> trace.SpanContext:
    parent = creation_context(msg)
    creation = trace.get_current_span(parent).get_span_context()
    # The producer's send span is the parent (one trace from producer to consumer); the semantic
    # conventions also link it, which is how batch consumers below refer to it.
    with tracer.start_as_current_span(
            f"process {msg.topic()}", context=parent, kind=SpanKind.CONSUMER,
            links=[Link(creation)] if creation.is_valid else [],
            attributes={**messaging_attributes(msg.topic(), group),
                        "messaging.kafka.offset": msg.offset(),
                        "messaging.destination.partition.id": str(msg.partition())}) as span:
        charge_card(msg)
        return span.get_span_context()
# ANCHOR_END: each


# ANCHOR: batch
def process_batch(msgs: list[Message], topic: str, group: str) -> trace.SpanContext:
    # A span has one parent but a batch has many producers: the batch is a trace of its own, with
    # a link to each record's creation context.
    links = []
    for msg in msgs:
        creation = trace.get_current_span(creation_context(msg)).get_span_context()
        if creation.is_valid:
            links.append(Link(creation, {"messaging.kafka.offset": msg.offset(),
                                         "messaging.destination.partition.id": str(msg.partition())}))
    with tracer.start_as_current_span(
            f"process {topic}", context=context.Context(), kind=SpanKind.CONSUMER, links=links,
            attributes={**messaging_attributes(topic, group),
                        "messaging.batch.message_count": len(msgs)}) as span:
        for msg in msgs:
            charge_card(msg)
        return span.get_span_context()
# ANCHOR_END: batch


# ANCHOR: broken
def process_ignoring_headers(msg: Message, group: str) -> trace.SpanContext:
    # BROKEN: nothing reads the headers, so nothing is current here and the span starts a new trace.
    with tracer.start_as_current_span(f"process {msg.topic()}", kind=SpanKind.CONSUMER,
                                      attributes=messaging_attributes(msg.topic(), group)) as span:
        charge_card(msg)
        return span.get_span_context()
# ANCHOR_END: broken


def poll(consumer: Consumer, count: int, timeout: float) -> list[Message]:
    deadline = time.monotonic() + timeout
    msgs: list[Message] = []
    while len(msgs) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"{len(msgs)} of {count} records after {timeout}s")
        for msg in consumer.consume(num_messages=count - len(msgs), timeout=0.5):
            if msg.error():
                raise SystemExit(f"consume failed: {msg.error()}")
            msgs.append(msg)
    return msgs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--topic", default="orders")
    ap.add_argument("--group", default="billing")
    ap.add_argument("--count", type=int, default=3)
    ap.add_argument("--mode", choices=["each", "batch", "ignore-headers"], default="each")
    a = ap.parse_args()

    consumer = Consumer({
        "bootstrap.servers": a.bootstrap, "group.id": a.group, "auto.offset.reset": "earliest",
        "enable.auto.commit": False,  # commit after processing: at-least-once
        # Short group timeouts: the group forms in a second or two instead of ~20 s on a test
        # broker. The defaults are fine in production.
        "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
    })
    consumer.subscribe([a.topic])
    msgs = poll(consumer, a.count, 60)
    if a.mode == "batch":
        spans = [process_batch(msgs, a.topic, a.group)]
    elif a.mode == "each":
        spans = [process_each(m, a.group) for m in msgs]
    else:
        spans = [process_ignoring_headers(m, a.group) for m in msgs]
    consumer.commit(asynchronous=False)
    consumer.close()
    provider.shutdown()
    print(json.dumps({"traces": [format(s.trace_id, "032x") for s in spans],
                      "process_spans": [format(s.span_id, "016x") for s in spans]}))


if __name__ == "__main__":
    main()
