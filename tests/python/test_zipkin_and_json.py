"""Zipkin v2 JSON and raw OTLP JSON ingest, and bad input on every receiver: each gets the status the
OTLP/Zipkin specs call for, and the server keeps serving."""

from __future__ import annotations

import base64
import gzip
import json
import os
import time
import uuid

import grpc
import requests
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from clew_helpers import assert_same_spans, canon_from_otlp_json, post_oversized

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def rand_hex(nbytes: int) -> str:
    return os.urandom(nbytes).hex()


def now_ns() -> int:
    return time.time_ns()


# --------------------------------------------------------------------------------------------------
# Zipkin v2 JSON
# --------------------------------------------------------------------------------------------------


def test_zipkin_v2_json_is_accepted_and_mapped(clew):
    service = f"zipkin-{uuid.uuid4().hex[:8]}"
    trace_id, root_id, child_id = rand_hex(16), rand_hex(8), rand_hex(8)
    t0 = now_ns() // 1000 * 1000  # Zipkin has microsecond precision
    ts = t0 // 1000
    spans = [
        {
            "traceId": trace_id,
            "id": root_id,
            "name": "get /api/orders",
            "kind": "SERVER",
            "timestamp": ts,
            "duration": 25_000,
            "localEndpoint": {"serviceName": service, "ipv4": "127.0.0.1", "port": 8080},
            "remoteEndpoint": {"ipv4": "127.0.0.9", "port": 51000},
            "tags": {"http.method": "GET", "http.path": "/api/orders", "custom.tag": "v1"},
            "annotations": [{"timestamp": ts + 1_000, "value": "cache.miss"}],
        },
        {
            "traceId": trace_id,
            "parentId": root_id,
            "id": child_id,
            "name": "select orders",
            "kind": "CLIENT",
            "timestamp": ts + 2_000,
            "duration": 10_000,
            "localEndpoint": {"serviceName": service},
            "remoteEndpoint": {"serviceName": "postgres", "port": 5432},
            "tags": {"db.statement": "SELECT 1"},
        },
    ]
    r = requests.post(f"{clew.zipkin_url}/api/v2/spans", json=spans, timeout=10)
    assert r.status_code == 202, (r.status_code, r.text[:500])

    got = canon_from_otlp_json(clew.wait_trace_v3(trace_id, spans=2))
    assert sorted(got) == sorted([root_id, child_id])
    root, child = got[root_id], got[child_id]
    for s in (root, child):
        assert s["trace_id"] == trace_id
        assert s["resource"]["attributes"].get("service.name") == ("string", service)
    assert root["parent_span_id"] == ""
    assert child["parent_span_id"] == root_id
    assert (root["name"], root["kind"]) == ("get /api/orders", 2)
    assert (child["name"], child["kind"]) == ("select orders", 3)
    assert root["start_time_unix_nano"] == t0
    assert root["end_time_unix_nano"] == t0 + 25_000_000
    assert child["start_time_unix_nano"] == t0 + 2_000_000
    assert child["end_time_unix_nano"] == t0 + 12_000_000
    for k, v in spans[0]["tags"].items():
        assert root["attributes"].get(k) == ("string", v), (k, root["attributes"].get(k))
    assert child["attributes"].get("db.statement") == ("string", "SELECT 1")
    assert [(e["name"], e["time_unix_nano"]) for e in root["events"]] == [("cache.miss", t0 + 1_000_000)]

    # And through the Jaeger API.
    trace = clew.wait_jaeger_trace(trace_id, spans=2)
    by_id = {s["spanID"].zfill(16): s for s in trace["spans"]}
    assert trace["processes"][by_id[root_id]["processID"]]["serviceName"] == service
    assert {(r["refType"], r["spanID"].zfill(16)) for r in by_id[child_id]["references"]} == {("CHILD_OF", root_id)}
    kinds = {t["key"]: t["value"] for t in by_id[child_id]["tags"]}
    assert kinds.get("span.kind") == "client"


def test_zipkin_invalid_json_is_400(clew):
    r = requests.post(
        f"{clew.zipkin_url}/api/v2/spans", data=b"[{\"traceId\":", headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert clew.get("/ready").status_code == 200


# --------------------------------------------------------------------------------------------------
# Raw OTLP JSON
# --------------------------------------------------------------------------------------------------


def otlp_json_request(service: str, trace_id: str, ids: list[str], t0: int) -> dict:
    """A hand-written OTLP/JSON request: hex ids, lowerCamelCase, int64 as strings, enums as ints."""
    root, child, consumer = ids
    other_trace = rand_hex(16)
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        {"key": "service.name", "value": {"stringValue": service}},
                        {"key": "service.version", "value": {"stringValue": "9.9.9"}},
                        {"key": "host.cpus", "value": {"intValue": "8"}},
                        {"key": "cloud.ok", "value": {"boolValue": True}},
                    ],
                },
                "scopeSpans": [
                    {
                        "scope": {
                            "name": "raw-json-client",
                            "version": "0.1.0",
                            "attributes": [{"key": "scope.k", "value": {"stringValue": "scope-v"}}],
                        },
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": root,
                                "traceState": "congo=t61rcWkgMzE",
                                "flags": 257,
                                "name": "POST /orders",
                                "kind": 2,
                                "startTimeUnixNano": str(t0),
                                "endTimeUnixNano": str(t0 + 50_000_123),
                                "attributes": [
                                    {"key": "s", "value": {"stringValue": "text ✓"}},
                                    {"key": "b", "value": {"boolValue": False}},
                                    {"key": "i", "value": {"intValue": "-9223372036854775808"}},
                                    {"key": "i.big", "value": {"intValue": "9007199254740993"}},
                                    {"key": "d", "value": {"doubleValue": 2.5e-7}},
                                    {"key": "bytes", "value": {"bytesValue": base64.b64encode(b"\x00\x01\xfe\xff").decode()}},
                                    {
                                        "key": "arr",
                                        "value": {
                                            "arrayValue": {
                                                "values": [
                                                    {"stringValue": "x"},
                                                    {"intValue": "3"},
                                                    {"doubleValue": 1.25},
                                                    {"boolValue": True},
                                                ]
                                            }
                                        },
                                    },
                                    {
                                        "key": "map",
                                        "value": {
                                            "kvlistValue": {
                                                "values": [
                                                    {"key": "inner.s", "value": {"stringValue": "y"}},
                                                    {
                                                        "key": "inner.list",
                                                        "value": {"arrayValue": {"values": [{"intValue": "1"}, {"intValue": "2"}]}},
                                                    },
                                                ]
                                            }
                                        },
                                    },
                                ],
                                "droppedAttributesCount": 3,
                                "events": [
                                    {
                                        "timeUnixNano": str(t0 + 1_000),
                                        "name": "exception",
                                        "attributes": [
                                            {"key": "exception.type", "value": {"stringValue": "IOError"}},
                                            {"key": "exception.message", "value": {"stringValue": "disk full"}},
                                            {"key": "exception.stacktrace", "value": {"stringValue": "at a()\nat b()"}},
                                        ],
                                        "droppedAttributesCount": 1,
                                    },
                                    {"timeUnixNano": str(t0 + 2_000), "name": "bare"},
                                ],
                                "droppedEventsCount": 2,
                                "links": [
                                    {
                                        "traceId": other_trace,
                                        "spanId": rand_hex(8),
                                        "traceState": "k=v",
                                        "attributes": [{"key": "link.i", "value": {"intValue": "5"}}],
                                        "droppedAttributesCount": 4,
                                        "flags": 769,
                                    }
                                ],
                                "droppedLinksCount": 1,
                                "status": {"code": 2, "message": "disk full"},
                            },
                            {
                                "traceId": trace_id,
                                "spanId": child,
                                "parentSpanId": root,
                                "name": "write",
                                "kind": 3,
                                "startTimeUnixNano": str(t0 + 10_000_000),
                                "endTimeUnixNano": str(t0 + 20_000_000),
                                "status": {"code": 1},
                            },
                        ],
                    }
                ],
            },
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": f"{service}-worker"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "worker"},
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": consumer,
                                "parentSpanId": root,
                                "name": "consume",
                                "kind": 5,
                                "startTimeUnixNano": str(t0 + 60_000_000),
                                "endTimeUnixNano": str(t0 + 61_000_000),
                            }
                        ],
                    }
                ],
            },
        ]
    }


def expected_from_json(req: dict) -> dict:
    """The canonical spans of a request we wrote by hand, decoded by the same JSON normaliser.

    The normaliser fills in defaults and decodes types; the spot checks in the test make sure it does not
    hide a loss that would affect both sides equally."""
    return canon_from_otlp_json(req["resourceSpans"])


def test_otlp_json_post_round_trips_exactly(clew):
    service = f"json-{uuid.uuid4().hex[:8]}"
    trace_id = rand_hex(16)
    ids = [rand_hex(8) for _ in range(3)]
    req = otlp_json_request(service, trace_id, ids, now_ns())
    r = requests.post(f"{clew.http_url}/v1/traces", json=req, timeout=10)
    assert r.status_code == 200, (r.status_code, r.text[:500])
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    body = r.json()
    rejected = int((body.get("partialSuccess") or {}).get("rejectedSpans", 0) or 0)
    assert rejected == 0, body

    expected = expected_from_json(req)
    got = canon_from_otlp_json(clew.wait_trace_v3(trace_id, spans=3))
    assert_same_spans(expected, got)

    root = got[ids[0]]
    assert root["attributes"]["i"] == ("int", -(2**63))
    assert root["attributes"]["i.big"] == ("int", 2**53 + 1)
    assert root["attributes"]["bytes"] == ("bytes", "0001feff")
    assert root["attributes"]["map"][0] == "kvlist"
    assert root["dropped_attributes_count"] == 3 and root["dropped_events_count"] == 2
    assert root["dropped_links_count"] == 1 and root["links"][0]["dropped_attributes_count"] == 4
    assert root["flags"] == 257 and root["links"][0]["flags"] == 769
    assert root["status"] == {"code": 2, "message": "disk full"}
    assert got[ids[1]]["status"] == {"code": 1, "message": ""}
    assert got[ids[2]]["resource"]["attributes"]["service.name"] == ("string", f"{service}-worker")


def test_otlp_json_gzip_is_accepted(clew):
    trace_id, ids = rand_hex(16), [rand_hex(8) for _ in range(3)]
    req = otlp_json_request(f"json-gz-{uuid.uuid4().hex[:8]}", trace_id, ids, now_ns())
    r = requests.post(
        f"{clew.http_url}/v1/traces",
        data=gzip.compress(json.dumps(req).encode()),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        timeout=10,
    )
    assert r.status_code == 200, (r.status_code, r.text[:500])
    assert sorted(canon_from_otlp_json(clew.wait_trace_v3(trace_id, spans=3))) == sorted(ids)


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------


def pb_span(trace_id: bytes, span_id: bytes, name: str = "s", t0: int | None = None) -> trace_pb2.Span:
    t0 = t0 or now_ns()
    return trace_pb2.Span(
        trace_id=trace_id, span_id=span_id, name=name, kind=trace_pb2.Span.SPAN_KIND_INTERNAL,
        start_time_unix_nano=t0, end_time_unix_nano=t0 + 1_000_000,
    )


def pb_request(service: str, spans: list[trace_pb2.Span]) -> trace_service_pb2.ExportTraceServiceRequest:
    return trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource=resource_pb2.Resource(
                    attributes=[common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value=service))]
                ),
                scope_spans=[trace_pb2.ScopeSpans(scope=common_pb2.InstrumentationScope(name="t"), spans=spans)],
            )
        ]
    )


def post_traces(clew, data: bytes, content_type: str, **headers) -> requests.Response:
    return requests.post(
        f"{clew.http_url}/v1/traces", data=data, headers={"Content-Type": content_type, **headers}, timeout=30
    )


def assert_still_serving(clew):
    """The server answers /ready and still ingests and serves a valid trace."""
    assert clew.alive(), f"clew serve died; log:\n{clew.log_tail()}"
    assert clew.get("/ready").status_code == 200
    tid, sid = os.urandom(16), os.urandom(8)
    r = post_traces(clew, pb_request("still-alive", [pb_span(tid, sid)]).SerializeToString(), "application/x-protobuf")
    assert r.status_code == 200, (r.status_code, r.text[:300])
    clew.wait_trace_v3(tid.hex(), spans=1)


def assert_protobuf_status(r: requests.Response):
    """OTLP/HTTP: an error answer to a protobuf request carries a google.rpc.Status saying what is wrong."""
    st = status_pb2.Status.FromString(r.content)
    assert st.message, f"error response has no message: {r.content[:200]!r}"


def test_garbage_protobuf_is_400(clew):
    # Field 1 (resource_spans), length-delimited, claims 100 bytes but only 5 follow.
    garbage = b"\x0a\x64short"
    r = post_traces(clew, garbage, "application/x-protobuf")
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert_protobuf_status(r)
    # Invalid wire type 7.
    r = post_traces(clew, b"\x0f\x01\x02\x03", "application/x-protobuf")
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert_still_serving(clew)


def test_invalid_json_is_400(clew):
    for body in (b'{"resourceSpans": [', b"not json at all", b'{"resourceSpans": "nope"}'):
        r = post_traces(clew, body, "application/json")
        assert r.status_code == 400, (body, r.status_code, r.text[:300])
        msg = r.json().get("message")
        assert msg, f"JSON error response without message: {r.text[:300]}"
    assert_still_serving(clew)


def test_wrong_content_type_is_415(clew):
    valid = pb_request("ct", [pb_span(os.urandom(16), os.urandom(8))]).SerializeToString()
    for ct in ("text/plain", "application/xml"):
        r = post_traces(clew, valid, ct)
        assert r.status_code == 415, (ct, r.status_code, r.text[:300])
    assert_still_serving(clew)


def test_oversized_body_is_413(clew):
    status, body = post_oversized("127.0.0.1", clew.http_port, "/v1/traces", 256 * 1024 * 1024, "application/x-protobuf")
    assert status == 413, (status, body[:300])
    assert_still_serving(clew)


def test_truncated_gzip_is_400(clew):
    valid = pb_request("gz", [pb_span(os.urandom(16), os.urandom(8)) for _ in range(20)]).SerializeToString()
    truncated = gzip.compress(valid)[:-12]
    r = post_traces(clew, truncated, "application/x-protobuf", **{"Content-Encoding": "gzip"})
    assert r.status_code == 400, (r.status_code, r.text[:300])
    # Not gzip at all, but declared as gzip.
    r = post_traces(clew, valid, "application/x-protobuf", **{"Content-Encoding": "gzip"})
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert_still_serving(clew)


def test_invalid_ids_are_rejected_per_span_protobuf(clew):
    good_tid = os.urandom(16)
    good = pb_span(good_tid, os.urandom(8), "good")
    bad = [
        pb_span(b"\x00" * 16, os.urandom(8), "zero-trace-id"),
        pb_span(os.urandom(16), b"\x00" * 8, "zero-span-id"),
        pb_span(os.urandom(15), os.urandom(8), "short-trace-id"),
        pb_span(os.urandom(16), os.urandom(9), "long-span-id"),
    ]
    req = pb_request(f"ids-{uuid.uuid4().hex[:6]}", [bad[0], good, *bad[1:]])
    r = post_traces(clew, req.SerializeToString(), "application/x-protobuf")
    assert r.status_code == 200, (r.status_code, r.text[:300])
    resp = trace_service_pb2.ExportTraceServiceResponse.FromString(r.content)
    assert resp.partial_success.rejected_spans == 4, resp
    assert resp.partial_success.error_message, "partial success should say why"
    got = canon_from_otlp_json(clew.wait_trace_v3(good_tid.hex(), spans=1))
    assert [s["name"] for s in got.values()] == ["good"]
    assert_still_serving(clew)


def test_all_zero_ids_are_rejected_per_span_json(clew):
    good_tid, good_sid = rand_hex(16), rand_hex(8)
    t0 = now_ns()

    def span(tid, sid, name):
        return {"traceId": tid, "spanId": sid, "name": name, "kind": 1,
                "startTimeUnixNano": str(t0), "endTimeUnixNano": str(t0 + 1000)}

    req = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "zero-ids"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "t"},
                        "spans": [
                            span("0" * 32, rand_hex(8), "zero-trace"),
                            span(good_tid, good_sid, "good"),
                            span(rand_hex(16), "0" * 16, "zero-span"),
                        ],
                    }
                ],
            }
        ]
    }
    r = post_traces(clew, json.dumps(req).encode(), "application/json")
    assert r.status_code == 200, (r.status_code, r.text[:300])
    ps = r.json().get("partialSuccess") or {}
    assert int(ps.get("rejectedSpans", 0)) == 2, r.text
    assert ps.get("errorMessage"), r.text
    got = canon_from_otlp_json(clew.wait_trace_v3(good_tid, spans=1))
    assert list(got) == [good_sid]
    assert clew.trace_v3("0" * 32).status_code in (400, 404)
    assert_still_serving(clew)


def test_grpc_garbage_is_invalid_argument_and_zero_ids_partial(clew):
    with grpc.insecure_channel(clew.grpc_endpoint) as channel:
        raw = channel.unary_unary(EXPORT_METHOD)  # no serializer: send bytes as they are
        try:
            raw(b"\x0a\x64short", timeout=10)
            raise AssertionError("garbage protobuf over gRPC was accepted")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (e.code(), e.details())
            assert e.details(), "INVALID_ARGUMENT without a message"

        export = channel.unary_unary(
            EXPORT_METHOD,
            request_serializer=trace_service_pb2.ExportTraceServiceRequest.SerializeToString,
            response_deserializer=trace_service_pb2.ExportTraceServiceResponse.FromString,
        )
        good_tid = os.urandom(16)
        req = pb_request("grpc-ids", [pb_span(good_tid, os.urandom(8)), pb_span(b"\x00" * 16, os.urandom(8))])
        resp = export(req, timeout=10)
        assert resp.partial_success.rejected_spans == 1, resp
        clew.wait_trace_v3(good_tid.hex(), spans=1)
    assert_still_serving(clew)


def test_metrics_count_received_and_rejected(clew):
    # Generates a rejection, then checks that /metrics is Prometheus text that mentions spans.
    req = pb_request("metrics", [pb_span(b"\x00" * 16, os.urandom(8))])
    r = post_traces(clew, req.SerializeToString(), "application/x-protobuf")
    assert r.status_code == 200
    m = clew.get("/metrics")
    assert m.status_code == 200, m.status_code
    text = m.text
    assert "# TYPE" in text, text[:300]
    span_lines = [l for l in text.splitlines() if not l.startswith("#") and "span" in l and "reject" in l]
    assert any(float(l.rsplit(" ", 1)[1]) >= 1 for l in span_lines), "no rejected-spans counter >= 1:\n" + "\n".join(
        l for l in text.splitlines() if "span" in l
    )[:2000]
