"""Clew's Kafka receiver and exporter against a real broker (Tansu) and a real Kafka client
(`confluent-kafka`), in the OpenTelemetry Collector's formats:

* messages a Collector would write (`otlp_proto` keyed by trace id, `otlp_json` holding many
  traces unkeyed) are ingested and come back from the query API field by field; a garbage message
  is skipped and counted, and does not stop what follows;
* the exporter's messages are read back by the same client and decoded: one message per trace,
  key = the lowercase hex trace id, the tenant in a header;
* offsets are committed only after the spans are durable: kill -9 the consuming Clew under load,
  restart it, and every produced trace is there;
* collector → Kafka → ingester: two Clews chained through the broker, the Python SDK as client.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import requests
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from clew_helpers import assert_same_spans, canon_from_otlp_json, canon_from_proto, wait_until
from kafka_broker import FAST_GROUP_CONFIG
from test_python_sdk import record_trace, trace_hex
from test_zipkin_and_json import now_ns, otlp_json_request, rand_hex


def _receiver_config(tmp_path: Path, broker, topic: str, encoding: str = "otlp_proto", **extra) -> Path:
    cfg = {
        "receivers": {
            "kafka": {
                "brokers": [broker.bootstrap],
                "topic": topic,
                "encoding": encoding,
                "group_id": f"clew-{uuid.uuid4().hex[:6]}",
                "initial_offset": "earliest",
                "session_timeout": "6s",
                "heartbeat_interval": "500ms",
                **extra,
            }
        }
    }
    path = tmp_path / f"kafka-receiver-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _metric(clew, name: str, **labels) -> float:
    text = requests.get(f"{clew.query_url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _produce(broker, topic: str, messages: list[tuple[str | None, bytes, dict]]) -> None:
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    for key, value, headers in messages:
        p.produce(topic, key=key, value=value, headers=list(headers.items()))
    assert p.flush(30) == 0, "the broker did not take every message"


def test_collector_formats_are_ingested_exactly_and_garbage_is_skipped(clew_factory, kafka_broker, tmp_path):
    topic = "otlp_spans"
    kafka_broker.create_topic(topic, partitions=3)
    clew = clew_factory(extra_args=["--config", str(_receiver_config(tmp_path, kafka_broker, topic))])

    # otlp_proto, as the Collector's exporter writes it with partition_traces_by_id: one message
    # per trace, keyed by the trace id; the SDK's own encoder makes the bytes.
    spans, root_ctx, target_ctx = record_trace(f"kafka-proto-{uuid.uuid4().hex[:6]}")
    sent = canon_from_proto(encode_spans(spans).resource_spans)
    messages = []
    for ctx in (root_ctx, target_ctx):
        tid = trace_hex(ctx)
        req = encode_spans([s for s in spans if s.context.trace_id == ctx.trace_id])
        messages.append((tid, req.SerializeToString(), {"X-Scope-OrgID": "acme"}))
    # A message no decoder accepts comes first on its partition: it must not block the rest.
    messages.insert(0, (trace_hex(root_ctx), b"\x0a\xff\xff garbage", {"X-Scope-OrgID": "acme"}))
    _produce(kafka_broker, topic, messages)

    acme = {"x-scope-orgid": "acme"}
    for ctx in (root_ctx, target_ctx):
        tid = trace_hex(ctx)
        expected = {k: v for k, v in sent.items() if v["trace_id"] == tid}
        got = canon_from_otlp_json(clew.wait_trace_v3(tid, spans=len(expected), timeout=30, headers=acme))
        assert_same_spans(expected, got)
    # The tenant came from the header: the default tenant does not see it.
    assert clew.trace_v3(trace_hex(root_ctx)).status_code == 404

    wait_until(lambda: _metric(clew, "clew_kafka_receiver_messages_total", outcome="invalid") >= 1, 10,
               "the garbage message counted as invalid")
    assert _metric(clew, "clew_kafka_receiver_messages_total", outcome="stored") >= 2
    assert _metric(clew, "clew_receiver_spans_accepted_total", protocol="kafka") >= 6
    assert "message skipped, it can never be stored" in clew.log_text()


def test_otlp_json_messages_with_many_traces_unkeyed(clew_factory, kafka_broker, tmp_path):
    topic = "spans_json"
    kafka_broker.create_topic(topic, partitions=2)
    clew = clew_factory(extra_args=["--config", str(_receiver_config(tmp_path, kafka_broker, topic, "otlp_json"))])
    service = f"kafka-json-{uuid.uuid4().hex[:6]}"
    t0 = now_ns()
    traces = [(rand_hex(16), [rand_hex(8) for _ in range(3)]) for _ in range(4)]
    # The Collector's default: one unkeyed message per request, holding several traces.
    reqs = [otlp_json_request(service, tid, ids, t0) for tid, ids in traces]
    body = {"resourceSpans": [rs for r in reqs for rs in r["resourceSpans"]]}
    _produce(kafka_broker, topic, [(None, json.dumps(body).encode(), {})])
    for req, (tid, _) in zip(reqs, traces):
        got = canon_from_otlp_json(clew.wait_trace_v3(tid, spans=3, timeout=30))
        assert_same_spans(canon_from_otlp_json(req["resourceSpans"]), got)


def test_named_kafka_receivers_consume_their_own_topics(clew_factory, kafka_broker, tmp_path):
    """`kafka/eu` and `kafka/us`: two receivers, two topics, two consumer groups, one pipeline;
    each topic's messages are stored, and each receiver counts its own in /metrics."""
    group = uuid.uuid4().hex[:6]
    receivers = {}
    for region in ("eu", "us"):
        kafka_broker.create_topic(f"spans_{region}", partitions=2)
        receivers[f"kafka/{region}"] = {
            "brokers": [kafka_broker.bootstrap], "topic": f"spans_{region}", "encoding": "otlp_json",
            "group_id": f"clew-{region}-{group}", "initial_offset": "earliest",
            "session_timeout": "6s", "heartbeat_interval": "500ms",
        }
    cfg = tmp_path / "named-receivers.yaml"
    cfg.write_text(yaml.safe_dump({
        "receivers": receivers,
        "service": {"pipelines": {"traces": {"receivers": ["otlp", "kafka/eu", "kafka/us"],
                                             "exporters": ["clew_store"]}}},
    }))
    clew = clew_factory(extra_args=["--config", str(cfg)])
    t0 = now_ns()
    sent = {}
    for region in ("eu", "us"):
        tid, ids = rand_hex(16), [rand_hex(8) for _ in range(3)]
        req = otlp_json_request(f"kafka-{region}-{group}", tid, ids, t0)
        _produce(kafka_broker, f"spans_{region}", [(tid, json.dumps(req).encode(), {})])
        sent[region] = (tid, req)
    for region, (tid, req) in sent.items():
        got = canon_from_otlp_json(clew.wait_trace_v3(tid, spans=3, timeout=30))
        assert_same_spans(canon_from_otlp_json(req["resourceSpans"]), got)
        assert _metric(clew, "clew_kafka_receiver_messages_total", component=f"kafka/{region}", outcome="stored") == 1


def _read_topic(broker, topic: str, want: int, timeout: float = 30) -> list:
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"reader-{uuid.uuid4().hex[:6]}",
                  "auto.offset.reset": "earliest", **FAST_GROUP_CONFIG})
    c.subscribe([topic])
    out = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < want and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                out.append(m)
    finally:
        c.close()
    return out


def _exporter_config(tmp_path: Path, broker, topic: str, **kafka) -> Path:
    cfg = {
        "exporters": {"kafka": {"brokers": [broker.bootstrap], "topic": topic, **kafka}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["kafka"]}}},
    }
    path = tmp_path / f"kafka-exporter-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _export(clew, spans, tenant: str) -> None:
    from test_python_sdk import make_exporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    exporter = make_exporter(clew, "grpc", None, headers={"x-scope-orgid": tenant})
    try:
        assert exporter.export(spans) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


def test_exporter_writes_one_keyed_message_per_trace(clew_factory, kafka_broker, tmp_path):
    topic = "otlp_spans"
    kafka_broker.create_topic(topic, partitions=3)
    config = _exporter_config(tmp_path, kafka_broker, topic, partition_traces_by_id=True,
                              producer={"compression": "gzip"})
    clew = clew_factory(extra_args=["--config", str(config)])
    spans, root_ctx, target_ctx = record_trace(f"kafka-exp-{uuid.uuid4().hex[:6]}")
    _export(clew, spans, "acme")

    msgs = _read_topic(kafka_broker, topic, 2)
    assert len(msgs) == 2, f"{len(msgs)} messages"
    sent = canon_from_proto(encode_spans(spans).resource_spans)
    partitions = {}
    for m in msgs:
        req = ExportTraceServiceRequest()
        req.ParseFromString(m.value())
        got = canon_from_proto(req.resource_spans)
        key = m.key().decode()
        assert len(key) == 32 and key == key.lower()
        assert {v["trace_id"] for v in got.values()} == {key}, "one trace per message, keyed by it"
        assert_same_spans({k: v for k, v in sent.items() if v["trace_id"] == key}, got)
        assert dict(m.headers())["X-Scope-OrgID"] == b"acme"
        partitions[key] = m.partition()
    assert set(partitions) == {trace_hex(root_ctx), trace_hex(target_ctx)}
    assert _metric(clew, "clew_kafka_exporter_messages_total", outcome="sent") == 2


def test_exporter_otlp_json_is_read_by_the_collector_mapping(clew_factory, kafka_broker, tmp_path):
    topic = "spans_json"
    kafka_broker.create_topic(topic)
    clew = clew_factory(extra_args=["--config", str(_exporter_config(tmp_path, kafka_broker, topic, encoding="otlp_json"))])
    spans, root_ctx, _ = record_trace(f"kafka-expjson-{uuid.uuid4().hex[:6]}")
    _export(clew, spans, "acme")
    msgs = _read_topic(kafka_broker, topic, 1)
    assert len(msgs) == 1 and msgs[0].key() is None, "one unkeyed message per request by default"
    body = json.loads(msgs[0].value())
    assert_same_spans(canon_from_proto(encode_spans(spans).resource_spans),
                      canon_from_otlp_json(body["resourceSpans"]))
    # The OTLP/JSON mapping: hex ids, not base64.
    assert body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] in {
        trace_hex(s.context) for s in spans}


def test_offsets_are_committed_only_after_durable_storage_kill9(clew_factory, kafka_broker, tmp_path):
    topic = "otlp_spans"
    kafka_broker.create_topic(topic, partitions=3)
    config = _receiver_config(tmp_path, kafka_broker, topic, max_batch_messages=20)
    clew = clew_factory(extra_args=["--config", str(config)])
    group = yaml.safe_load(config.read_text())["receivers"]["kafka"]["group_id"]

    spans, _, _ = record_trace("kafka-kill9")
    template = encode_spans(spans)
    trace_ids = []
    messages = []
    for _ in range(400):
        tid = uuid.uuid4().bytes
        req = ExportTraceServiceRequest()
        req.CopyFrom(template)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    s.trace_id = tid
        trace_ids.append(tid.hex())
        messages.append((tid.hex(), req.SerializeToString(), {}))
    _produce(kafka_broker, topic, messages[:200])
    wait_until(lambda: _metric(clew, "clew_kafka_receiver_messages_total", outcome="stored") >= 50, 30,
               "the receiver to store some messages")
    _produce(kafka_broker, topic, messages[200:])
    clew.kill9()
    clew.start()

    for tid in trace_ids:
        rs = clew.wait_trace_v3(tid, spans=6, timeout=60)
        # Re-read messages are stored twice; reads return each span once.
        assert sum(len(ss["spans"]) for r in rs for ss in r["scopeSpans"]) == 6, tid

    # Eventually the committed offsets cover every message: nothing more will be re-read. The
    # topic started empty, so its offsets count messages from 0 on every partition.
    def committed_all():
        c = Consumer({"bootstrap.servers": kafka_broker.bootstrap, "group.id": group})
        try:
            parts = c.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
        finally:
            c.close()
        return sum(max(tp.offset, 0) for tp in parts) == len(messages)

    wait_until(committed_all, 30, "the group's committed offsets to cover all 400 messages", interval=1)


def test_exporter_refuses_retryably_while_the_broker_is_down(clew_factory, tmp_path):
    """No broker: the client gets a retryable refusal (HTTP 503 + Retry-After), never a false ack."""
    from clew_helpers import free_port
    from test_zipkin_and_json import otlp_json_request

    class Down:
        bootstrap = f"127.0.0.1:{free_port()}"

    clew = clew_factory(extra_args=["--config", str(_exporter_config(tmp_path, Down, "otlp_spans", timeout="1s"))])
    req = otlp_json_request("kafka-down", rand_hex(16), [rand_hex(8) for _ in range(3)], now_ns())
    r = requests.post(f"{clew.http_url}/v1/traces", json=req, timeout=30)
    assert r.status_code == 503, (r.status_code, r.text[:300])
    assert int(r.headers["retry-after"]) >= 1
    assert _metric(clew, "clew_kafka_exporter_messages_total", outcome="failed") == 1
