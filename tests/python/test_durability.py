"""No acknowledged span is lost across kill -9: load the server from several clients, SIGKILL it in the
middle, restart it on the same data dir and find every trace whose export was acknowledged."""

from __future__ import annotations

import os
import threading
import time

import requests
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

SPANS = 3
MAX_REQUESTS_PER_CLIENT = 3000
CLIENTS = 3


def one_trace_request(tid: bytes) -> bytes:
    t0 = time.time_ns()
    root = os.urandom(8)
    spans = [
        trace_pb2.Span(
            trace_id=tid, span_id=root if j == 0 else os.urandom(8), parent_span_id=b"" if j == 0 else root,
            name=f"op-{j}", kind=trace_pb2.Span.SPAN_KIND_SERVER, start_time_unix_nano=t0,
            end_time_unix_nano=t0 + 1000 * (SPANS - j),
            attributes=[common_pb2.KeyValue(key="k", value=common_pb2.AnyValue(string_value="v" * 20))],
        )
        for j in range(SPANS)
    ]
    return trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource=resource_pb2.Resource(
                    attributes=[common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value="kill9"))]
                ),
                scope_spans=[trace_pb2.ScopeSpans(spans=spans)],
            )
        ]
    ).SerializeToString()


def test_no_acknowledged_trace_is_lost_across_kill_9(clew_factory):
    server = clew_factory()
    acked: list[bytes] = []
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[str] = []
    cut_off: list[int] = []  # clients whose connection the kill broke (proves the kill hit live load)

    def client():
        session = requests.Session()
        for _ in range(MAX_REQUESTS_PER_CLIENT):
            if stop.is_set():
                return
            tid = os.urandom(16)
            try:
                r = session.post(
                    f"{server.http_url}/v1/traces", data=one_trace_request(tid),
                    headers={"Content-Type": "application/x-protobuf"}, timeout=10,
                )
            except requests.RequestException:
                cut_off.append(1)
                return  # the server is gone
            if r.status_code == 200:
                resp = trace_service_pb2.ExportTraceServiceResponse.FromString(r.content)
                if resp.partial_success.rejected_spans == 0:
                    with lock:
                        acked.append(tid)
            elif r.status_code not in (429, 503):
                errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
                return

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    # Kill in the middle of the load (but only once some exports went through).
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with lock:
            if len(acked) >= 500:
                break
        time.sleep(0.05)
    time.sleep(0.3)
    server.kill9()
    stop.set()
    for t in threads:
        t.join(timeout=15)
    assert not errors, errors[:5]
    with lock:
        acked_now = list(acked)
    assert len(acked_now) >= 50, f"only {len(acked_now)} exports acknowledged before the kill"
    assert cut_off, "no client was sending when the server was killed: the kill did not hit live load"

    server.start()
    session = requests.Session()
    missing = []
    for tid in acked_now:
        r = session.get(f"{server.query_url}/api/v3/traces/{tid.hex()}", timeout=10)
        spans = 0
        if r.status_code == 200:
            body = r.json()["result"]
            spans = sum(len(ss.get("spans") or []) for rs in body.get("resourceSpans") or [] for ss in rs.get("scopeSpans") or [])
        if spans != SPANS:
            missing.append((tid.hex(), r.status_code, spans))
    assert not missing, f"{len(missing)} of {len(acked_now)} acknowledged traces lost or incomplete: {missing[:10]}"
