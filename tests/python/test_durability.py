"""No acknowledged span is lost across kill -9 or a graceful stop: load the server from several
clients, SIGKILL (or SIGTERM) it in the middle, restart it on the same data dir and find every trace
whose export was acknowledged."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

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


class Load:
    """CLIENTS threads exporting one 3-span trace per OTLP/HTTP request until stopped or cut off,
    remembering every trace whose export was acknowledged in full."""

    def __init__(self, server):
        self.server = server
        self.acked: list[bytes] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.cut_off: list[int] = []  # clients whose connection the stop broke (proves it hit live load)
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(CLIENTS)]
        for t in self.threads:
            t.start()

    def _client(self):
        session = requests.Session()
        for _ in range(MAX_REQUESTS_PER_CLIENT):
            if self.stop.is_set():
                return
            tid = os.urandom(16)
            try:
                r = session.post(
                    f"{self.server.http_url}/v1/traces", data=one_trace_request(tid),
                    headers={"Content-Type": "application/x-protobuf"}, timeout=10,
                )
            except requests.RequestException:
                self.cut_off.append(1)
                return  # the server is gone
            if r.status_code == 200:
                resp = trace_service_pb2.ExportTraceServiceResponse.FromString(r.content)
                if resp.partial_success.rejected_spans == 0:
                    with self.lock:
                        self.acked.append(tid)
            elif r.status_code not in (429, 503):
                self.errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
                return

    def wait_for(self, n: int, within: float = 20.0) -> None:
        """Until `n` exports were acknowledged (so the stop lands in the middle of the load)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.acked) >= n:
                    break
            time.sleep(0.05)
        time.sleep(0.3)

    def finish(self) -> list[bytes]:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=15)
        assert not self.errors, self.errors[:5]
        with self.lock:
            acked = list(self.acked)
        assert len(acked) >= 50, f"only {len(acked)} exports acknowledged before the stop"
        assert self.cut_off, "no client was sending when the server stopped: the stop did not hit live load"
        return acked


def assert_all_found(server, acked: list[bytes]) -> None:
    session = requests.Session()
    missing = []
    for tid in acked:
        r = session.get(f"{server.query_url}/api/v3/traces/{tid.hex()}", timeout=10)
        spans = 0
        if r.status_code == 200:
            body = r.json()["result"]
            spans = sum(len(ss.get("spans") or []) for rs in body.get("resourceSpans") or [] for ss in rs.get("scopeSpans") or [])
        if spans != SPANS:
            missing.append((tid.hex(), r.status_code, spans))
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged traces lost or incomplete: {missing[:10]}"


def test_no_acknowledged_trace_is_lost_across_kill_9(clew_factory):
    server = clew_factory()
    load = Load(server)
    load.wait_for(500)
    server.kill9()
    acked = load.finish()
    server.start()
    assert_all_found(server, acked)


def test_sigterm_under_load_stops_within_10_s_and_keeps_every_acknowledged_trace(clew_factory):
    """Graceful stop while clients are exporting: in-flight requests finish, the head is flushed
    into blocks, the process exits 0 within 10 s, and every acknowledged trace is there after the
    restart (read from blocks, the WAL having been checkpointed by the flush)."""
    server = clew_factory()
    load = Load(server)
    load.wait_for(500)
    t0 = time.monotonic()
    code = server.stop(timeout=30)
    took = time.monotonic() - t0
    acked = load.finish()
    assert code == 0, f"exit code {code} after SIGTERM:\n{server.log_text()[-2000:]}"
    assert took <= 10.0, f"graceful stop took {took:.1f} s (limit 10 s)"
    blocks = list(Path(server.data_dir).rglob("data.parquet"))
    assert blocks, "SIGTERM wrote no block: the head was not flushed"
    server.start()
    assert_all_found(server, acked)
