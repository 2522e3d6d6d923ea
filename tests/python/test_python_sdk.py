"""The OpenTelemetry Python SDK, with the OTLP gRPC and the OTLP HTTP/protobuf exporters, against the
real `clew serve`: what the SDK sends must come back exactly through api_v3, faithfully through the
Jaeger API, and be found by search."""

from __future__ import annotations

import json
import time
import uuid

import grpc
import pytest
from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, TraceFlags, TraceState

from clew_helpers import READ_YOUR_WRITES_S, assert_same_spans, canon_from_otlp_json, canon_from_proto

# Attributes of every type the API allows, with edge values.
SPAN_ATTRS = {
    "attr.str": "hello",
    "attr.str.empty": "",
    "attr.str.unicode": "héllo ✓ 漢字 🚀",
    "attr.bool.true": True,
    "attr.bool.false": False,
    "attr.int": 42,
    "attr.int.negative": -7,
    "attr.int.max": 2**63 - 1,
    "attr.int.min": -(2**63),
    "attr.float": 3.25,
    "attr.float.inexact": 0.1,
    "attr.float.negative": -1.5e-300,
    "attr.str_array": ["a", "b", ""],
    "attr.bool_array": [True, False, True],
    "attr.int_array": [1, -2, 2**53 + 1],
    "attr.float_array": [1.5, -2.25, 0.1],
    "http.request.method": "GET",
    "http.response.status_code": 200,
}

EVENT_ATTRS = {"key": "user:1", "attempt": 2, "ratio": 0.5, "hit": False, "tags": ["x", "y"]}
LINK_ATTRS = {"link.reason": "batch", "link.n": 3, "link.flag": True}


def _export_modes():
    return [
        pytest.param("grpc", None, id="grpc"),
        pytest.param("grpc", "gzip", id="grpc-gzip"),
        pytest.param("http", None, id="http-protobuf"),
        pytest.param("http", "gzip", id="http-protobuf-gzip"),
    ]


def make_exporter(clew, transport: str, compression: str | None, headers: dict | None = None):
    if transport == "grpc":
        return GrpcExporter(
            endpoint=clew.grpc_endpoint,
            insecure=True,
            timeout=10,
            headers=headers,
            compression=grpc.Compression.Gzip if compression == "gzip" else grpc.Compression.NoCompression,
        )
    return HttpExporter(
        endpoint=f"{clew.http_url}/v1/traces",
        timeout=10,
        headers=headers,
        compression=HttpCompression.Gzip if compression == "gzip" else HttpCompression.NoCompression,
    )


def record_trace(service: str):
    """Produces, with the real SDK, a trace exercising every feature; returns (finished spans, ids)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create(
            {
                "service.name": service,
                "service.version": "1.2.3",
                "service.instance.id": str(uuid.uuid4()),
                "deployment.environment.name": "test",
                "host.cores": 2,
                "feature.enabled": True,
                "sample.ratio": 0.75,
                "langs": ["py", "rs"],
            }
        )
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer(
        "pytest.roundtrip", "1.2.3", schema_url="https://opentelemetry.io/schemas/1.26.0",
        attributes={"scope.attr": "yes", "scope.n": 7},
    )
    other_tracer = provider.get_tracer("pytest.other-scope", "0.0.1")

    # A separate trace to link to, with a trace state.
    with tracer.start_as_current_span("linked-target", kind=SpanKind.PRODUCER) as target:
        target.set_attribute("target", True)
    target_ctx = target.get_span_context()

    # The main trace continues a remote parent that carries a trace state (as after W3C propagation).
    remote_parent = trace_api.SpanContext(
        trace_id=uuid.uuid4().int & ((1 << 128) - 1) | (1 << 100),
        span_id=uuid.uuid4().int & ((1 << 64) - 1) | (1 << 40),
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "v1"), ("other", "x-y")]),
    )
    parent_ctx = trace_api.set_span_in_context(trace_api.NonRecordingSpan(remote_parent))
    with tracer.start_as_current_span("GET /checkout", context=parent_ctx, kind=SpanKind.SERVER) as root:
        root.set_attributes(SPAN_ATTRS)
        with tracer.start_as_current_span("process", kind=SpanKind.INTERNAL) as internal:
            internal.add_event("cache.miss", EVENT_ATTRS)
            internal.add_event("no-attrs")
            with other_tracer.start_as_current_span(
                "SELECT orders",
                kind=SpanKind.CLIENT,
                links=[Link(target_ctx, LINK_ATTRS)],
                attributes={"db.system": "postgresql", "db.query.text": "SELECT * FROM orders WHERE id = $1"},
            ) as db:
                try:
                    raise ValueError("connection refused: orders-db")
                except ValueError as e:
                    db.record_exception(e, attributes={"retry": 1})
                db.set_status(Status(StatusCode.ERROR, "query failed: connection refused"))
            with tracer.start_as_current_span("publish orders", kind=SpanKind.PRODUCER) as p:
                p.set_attribute("messaging.system", "kafka")
        with tracer.start_as_current_span("consume orders", kind=SpanKind.CONSUMER) as c:
            c.set_status(Status(StatusCode.OK))
    provider.shutdown()
    spans = memory.get_finished_spans()
    assert len(spans) == 6
    return spans, root.get_span_context(), target_ctx


def trace_hex(ctx) -> str:
    return f"{ctx.trace_id:032x}"


def span_hex(ctx) -> str:
    return f"{ctx.span_id:016x}"


@pytest.mark.parametrize("transport,compression", _export_modes())
def test_sdk_round_trip_is_exact_via_api_v3(clew, transport, compression):
    service = f"py-{transport}-{compression or 'plain'}-{uuid.uuid4().hex[:8]}"
    spans, root_ctx, target_ctx = record_trace(service)
    exporter = make_exporter(clew, transport, compression)
    try:
        assert exporter.export(spans) == SpanExportResult.SUCCESS, f"{transport} export failed (see log)"
    finally:
        exporter.shutdown()

    # What the SDK put on the wire (both exporters use this encoder).
    sent = canon_from_proto(encode_spans(spans).resource_spans)
    main = {k: v for k, v in sent.items() if v["trace_id"] == trace_hex(root_ctx)}
    linked = {k: v for k, v in sent.items() if v["trace_id"] == trace_hex(target_ctx)}
    assert len(main) == 5 and len(linked) == 1

    for trace_id, expected in ((trace_hex(root_ctx), main), (trace_hex(target_ctx), linked)):
        rs = clew.wait_trace_v3(trace_id, spans=len(expected))
        got = canon_from_otlp_json(rs)
        assert_same_spans(expected, got)

    # Spot checks that would catch an encoder/normaliser that lost everything symmetrically.
    got = canon_from_otlp_json(clew.wait_trace_v3(trace_hex(root_ctx), spans=5))
    root = got[span_hex(root_ctx)]
    assert root["attributes"]["attr.int.max"] == ("int", 2**63 - 1)
    assert root["attributes"]["attr.float.inexact"] == ("double", 0.1)
    assert root["attributes"]["attr.str_array"] == ("array", [("string", "a"), ("string", "b"), ("string", "")])
    assert root["trace_state"] == "vendor=v1,other=x-y"
    assert root["parent_span_id"] != "", "the root continues a remote parent"
    assert root["flags"] & 0x300 == 0x300, "SDK marks the parent as remote"
    assert root["resource"]["attributes"]["service.name"] == ("string", service)
    assert root["resource"]["attributes"]["telemetry.sdk.language"] == ("string", "python")
    assert root["scope"]["name"] == "pytest.roundtrip" and root["scope"]["version"] == "1.2.3"
    assert root["scope"]["attributes"] == {"scope.attr": ("string", "yes"), "scope.n": ("int", 7)}
    db = next(s for s in got.values() if s["name"] == "SELECT orders")
    assert db["status"] == {"code": 2, "message": "query failed: connection refused"}
    assert db["kind"] == 3
    assert db["scope"]["name"] == "pytest.other-scope"
    assert [e["name"] for e in db["events"]] == ["exception"]
    assert db["events"][0]["attributes"]["exception.type"] == ("string", "ValueError")
    assert db["links"][0]["span_id"] == span_hex(target_ctx)
    assert db["links"][0]["attributes"]["link.n"] == ("int", 3)
    kinds = sorted(s["kind"] for s in got.values())
    assert kinds == [1, 2, 3, 4, 5]


def _tags(span: dict) -> dict:
    out = {}
    for t in span.get("tags") or []:
        out[t["key"]] = (t.get("type"), t.get("value"))
    return out


def _jaeger_tag_expect(value):
    """(Jaeger tag type, value) of an OTel attribute value, as Jaeger's OTLP translator maps it."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int64", value)
    if isinstance(value, float):
        return ("float64", value)
    if isinstance(value, str):
        return ("string", value)
    raise TypeError(value)


def _same_trace_id(jaeger_id: str, hex32: str) -> bool:
    # Jaeger prints trace ids without leading zeros of the high half in some versions.
    return jaeger_id.lower().lstrip("0") == hex32.lstrip("0")


def test_sdk_trace_via_jaeger_api(clew):
    service = f"py-jaeger-{uuid.uuid4().hex[:8]}"
    spans, root_ctx, target_ctx = record_trace(service)
    exporter = make_exporter(clew, "grpc", None)
    try:
        assert exporter.export(spans) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    tid = trace_hex(root_ctx)
    trace = clew.wait_jaeger_trace(tid, spans=5)
    assert _same_trace_id(trace["traceID"], tid), trace["traceID"]
    jspans = {s["spanID"].lower().zfill(16): s for s in trace["spans"]}
    sdk = {span_hex(s.context): s for s in spans if s.context.trace_id == root_ctx.trace_id}
    assert sorted(jspans) == sorted(sdk)
    processes = trace["processes"]
    for sid, s in sdk.items():
        j = jspans[sid]
        where = f"jaeger span {s.name} ({sid})"
        assert j["operationName"] == s.name, where
        assert _same_trace_id(j["traceID"], tid), where
        assert j["startTime"] == s.start_time // 1000, where
        assert abs(j["duration"] - (s.end_time - s.start_time) // 1000) <= 1, where
        # Parent → CHILD_OF (the root's parent is the remote one); links → FOLLOWS_FROM.
        refs = {(r["refType"], r["spanID"].lower().zfill(16)) for r in j.get("references") or []}
        assert ("CHILD_OF", f"{s.parent.span_id:016x}") in refs, (where, refs)
        for link in s.links:
            assert ("FOLLOWS_FROM", span_hex(link.context)) in refs, (where, refs)
        tags = _tags(j)
        for k, v in s.attributes.items():
            if isinstance(v, (tuple, list)):
                assert k in tags, (where, k)
                typ, val = tags[k]
                assert typ == "string", (where, k, typ)
                assert json.loads(val) == list(v), (where, k, val)
            else:
                assert tags.get(k) == _jaeger_tag_expect(v), (where, k, tags.get(k))
        kind = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}[s.kind.value + 1]
        assert tags.get("span.kind") == ("string", kind), (where, tags.get("span.kind"))
        if s.status.status_code == StatusCode.ERROR:
            assert tags.get("error") == ("bool", True), (where, tags.get("error"))
            assert tags.get("otel.status_code") == ("string", "ERROR"), where
            assert tags.get("otel.status_description") == ("string", s.status.description), where
        else:
            assert "error" not in tags, where
        # Events → logs: timestamp (µs), "event" field = name, attributes as fields.
        logs = j.get("logs") or []
        assert len(logs) == len(s.events), where
        for log, ev in zip(sorted(logs, key=lambda l: l["timestamp"]), s.events):
            assert log["timestamp"] == ev.timestamp // 1000, where
            fields = {f["key"]: f.get("value") for f in log.get("fields") or []}
            assert fields.get("event") == ev.name, (where, fields)
            for k, v in ev.attributes.items():
                if not isinstance(v, (tuple, list)):
                    assert fields.get(k) == v, (where, ev.name, k, fields.get(k))
        # Process: service name + resource attributes as tags.
        proc = processes[j["processID"]]
        assert proc["serviceName"] == service, where
        ptags = {t["key"]: t.get("value") for t in proc.get("tags") or []}
        assert ptags.get("service.version") == "1.2.3", (where, ptags)
        assert ptags.get("host.cores") == 2, (where, ptags)
        assert ptags.get("telemetry.sdk.language") == "python", (where, ptags)


def _search(clew, **params) -> list[dict]:
    body = clew.get_json("/api/traces", params=params)
    assert "data" in body, body
    return body["data"] or []


def test_search_finds_sdk_trace(clew):
    service = f"py-search-{uuid.uuid4().hex[:8]}"
    spans, root_ctx, _ = record_trace(service)
    exporter = make_exporter(clew, "http", None)
    try:
        assert exporter.export(spans) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    tid = trace_hex(root_ctx)
    clew.wait_trace_v3(tid, spans=5)

    def ids(found):
        return {t["traceID"].lower().lstrip("0") for t in found}

    target = tid.lstrip("0")
    # The service lists it.
    services = clew.get_json("/api/services")["data"]
    assert service in services, services
    ops = clew.get_json(f"/api/services/{service}/operations")["data"]
    assert "GET /checkout" in ops and "SELECT orders" in ops, ops
    # Service alone; service + tag; service + operation + tag; resource attribute tag.
    assert target in ids(_search(clew, service=service, limit=20))
    assert target in ids(_search(clew, service=service, tags=json.dumps({"attr.str": "hello"}), limit=20))
    assert target in ids(
        _search(clew, service=service, operation="SELECT orders", tags=json.dumps({"db.system": "postgresql"}))
    )
    assert target in ids(_search(clew, service=service, tags=json.dumps({"deployment.environment.name": "test"})))
    # Filters must filter.
    assert target not in ids(_search(clew, service=service, tags=json.dumps({"attr.str": "nope"})))
    assert target not in ids(_search(clew, service=service, operation="no such operation"))
    assert _search(clew, service=f"{service}-absent") == []
    # Duration filter: the root spans the whole trace, so a huge minDuration excludes it.
    assert target not in ids(_search(clew, service=service, minDuration="1h"))


def test_read_your_writes_within_one_second(clew):
    service = f"py-ryw-{uuid.uuid4().hex[:8]}"
    spans, root_ctx, _ = record_trace(service)
    exporter = make_exporter(clew, "grpc", None)
    try:
        assert exporter.export(spans) == SpanExportResult.SUCCESS
        acked = time.monotonic()
    finally:
        exporter.shutdown()
    tid = trace_hex(root_ctx)
    while True:
        r = clew.trace_v3(tid)
        if r.status_code == 200 and r.json().get("result", {}).get("resourceSpans"):
            break
        elapsed = time.monotonic() - acked
        assert elapsed < READ_YOUR_WRITES_S + 0.25, f"trace not queryable {elapsed:.2f}s after the ack"
        time.sleep(0.02)


def test_unknown_trace_is_404(clew):
    tid = uuid.uuid4().hex
    r = clew.trace_v3(tid)
    assert r.status_code == 404, (r.status_code, r.text[:300])
    r = clew.get(f"/api/traces/{tid}")
    assert r.status_code == 404, (r.status_code, r.text[:300])


def test_tenant_header_isolates_traces(clew):
    tenant = f"tenant-{uuid.uuid4().hex[:6]}"
    service = f"py-tenant-{uuid.uuid4().hex[:8]}"
    spans, root_ctx, _ = record_trace(service)
    exporter = make_exporter(clew, "http", None, headers={"X-Scope-OrgID": tenant})
    try:
        assert exporter.export(spans) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    tid = trace_hex(root_ctx)
    clew.wait_trace_v3(tid, spans=5, headers={"X-Scope-OrgID": tenant})
    # The default tenant and another tenant do not see it.
    assert clew.trace_v3(tid).status_code == 404
    assert clew.trace_v3(tid, headers={"X-Scope-OrgID": f"{tenant}-other"}).status_code == 404
