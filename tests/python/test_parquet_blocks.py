"""Blocks are real Parquet: after a graceful shutdown (SIGTERM flushes), every span is in a `*.parquet`
file under the data dir that pyarrow can read — rows sorted by trace id, zstd-compressed — and a restart
serves the traces from those blocks."""

from __future__ import annotations

import os
import signal
import time
import uuid

import pyarrow.parquet as pq
import requests
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from clew_helpers import canon_from_otlp_json

RAW_ID_COLUMNS = {"trace_id", "span_id"}

TRACES = 60
SPANS_PER_TRACE = 4


def _kv(k, v):
    if isinstance(v, bool):
        val = common_pb2.AnyValue(bool_value=v)
    elif isinstance(v, int):
        val = common_pb2.AnyValue(int_value=v)
    else:
        val = common_pb2.AnyValue(string_value=v)
    return common_pb2.KeyValue(key=k, value=val)


def make_batch(service: str, traces: int) -> tuple[bytes, list[bytes]]:
    t0 = time.time_ns() - 5_000_000_000
    trace_ids, spans = [], []
    for i in range(traces):
        tid = os.urandom(16)
        trace_ids.append(tid)
        root = os.urandom(8)
        for j in range(SPANS_PER_TRACE):
            start = t0 + i * 1_000_000 + j * 10_000
            spans.append(
                trace_pb2.Span(
                    trace_id=tid,
                    span_id=root if j == 0 else os.urandom(8),
                    parent_span_id=b"" if j == 0 else root,
                    name="GET /items" if j == 0 else f"SELECT items {j}",
                    kind=trace_pb2.Span.SPAN_KIND_SERVER if j == 0 else trace_pb2.Span.SPAN_KIND_CLIENT,
                    start_time_unix_nano=start,
                    end_time_unix_nano=start + 1_000_000 - j * 1000,
                    attributes=[
                        _kv("http.request.method", "GET"),
                        _kv("http.response.status_code", 200),
                        _kv("custom.attr", f"value-{i}-{j}"),
                        _kv("custom.flag", j % 2 == 0),
                    ],
                )
            )
    req = trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource=resource_pb2.Resource(attributes=[_kv("service.name", service)]),
                scope_spans=[trace_pb2.ScopeSpans(scope=common_pb2.InstrumentationScope(name="blocks"), spans=spans)],
            )
        ]
    )
    return req.SerializeToString(), trace_ids


def _trace_id_bytes(v) -> bytes:
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    if isinstance(v, str):
        return bytes.fromhex(v)
    raise AssertionError(f"unexpected trace_id value type {type(v)}: {v!r}")


def test_sigterm_flushes_spans_into_readable_zstd_parquet(clew_factory):
    server = clew_factory()
    service = f"blocks-{uuid.uuid4().hex[:8]}"
    sent_ids: list[bytes] = []
    # Several requests, so the flushed block has to merge-sort them by trace id.
    for _ in range(3):
        body, ids = make_batch(service, TRACES // 3)
        r = requests.post(
            f"{server.http_url}/v1/traces", data=body, headers={"Content-Type": "application/x-protobuf"}, timeout=30
        )
        assert r.status_code == 200, (r.status_code, r.text[:300])
        sent_ids += ids
    server.wait_trace_v3(sent_ids[-1].hex(), spans=SPANS_PER_TRACE)

    code = server.stop(signal.SIGTERM, timeout=60)
    assert code == 0, f"clew serve exited with {code} after SIGTERM; log:\n{server.log_tail()}"

    files = sorted(server.data_dir.rglob("*.parquet"))
    assert files, f"no *.parquet under {server.data_dir} after SIGTERM: {sorted(map(str, server.data_dir.rglob('*')))[:50]}"

    total_rows = 0
    found: set[bytes] = set()
    for f in files:
        pf = pq.ParquetFile(f)
        table = pf.read()
        assert table.num_rows == pf.metadata.num_rows
        total_rows += table.num_rows
        assert "trace_id" in table.column_names, f"{f}: no trace_id column in {table.column_names}"
        col = table.column("trace_id")
        assert col.null_count == 0, f"{f}: null trace ids"
        ids = [_trace_id_bytes(v) for v in col.to_pylist()]
        assert all(len(i) == 16 for i in ids), f"{f}: trace ids are not 16 bytes"
        assert ids == sorted(ids), f"{f}: rows are not sorted by trace_id"
        found.update(ids)
        md = pf.metadata
        for rg in range(md.num_row_groups):
            for c in range(md.num_columns):
                chunk = md.row_group(rg).column(c)
                # Id columns are random bytes, stored uncompressed on purpose (ARCHITECTURE.md).
                want = "UNCOMPRESSED" if chunk.path_in_schema in RAW_ID_COLUMNS else "ZSTD"
                assert chunk.compression == want, f"{f}: column {chunk.path_in_schema} uses {chunk.compression}"
    assert total_rows == TRACES * SPANS_PER_TRACE, (
        f"{total_rows} rows in {len(files)} parquet files, expected {TRACES * SPANS_PER_TRACE} spans"
    )
    assert found == set(sent_ids)

    # A restart on the same data dir serves the traces from the blocks.
    server.start()
    for tid in (sent_ids[0], sent_ids[len(sent_ids) // 2], sent_ids[-1]):
        got = canon_from_otlp_json(server.wait_trace_v3(tid.hex(), spans=SPANS_PER_TRACE, timeout=5))
        assert len(got) == SPANS_PER_TRACE
        assert {s["resource"]["attributes"]["service.name"] for s in got.values()} == {("string", service)}


def test_blocks_are_partitioned_by_tenant(clew_factory):
    server = clew_factory()
    body_a, ids_a = make_batch("tenant-a-svc", 3)
    body_b, ids_b = make_batch("tenant-b-svc", 3)
    for body, tenant in ((body_a, "team-a"), (body_b, "team-b")):
        r = requests.post(
            f"{server.http_url}/v1/traces", data=body,
            headers={"Content-Type": "application/x-protobuf", "X-Scope-OrgID": tenant}, timeout=30,
        )
        assert r.status_code == 200, (r.status_code, r.text[:300])
    server.wait_trace_v3(ids_b[-1].hex(), spans=SPANS_PER_TRACE, headers={"X-Scope-OrgID": "team-b"})
    assert server.stop(signal.SIGTERM, timeout=60) == 0
    files = list(server.data_dir.rglob("*.parquet"))
    # The tenant names a directory on the block's path (e.g. blocks/team-a/... or tenant=team-a/...).
    def under(tenant):
        return [f for f in files if any(tenant in part for part in f.relative_to(server.data_dir).parts[:-1])]

    a, b = under("team-a"), under("team-b")
    assert a and b, f"expected tenant directories in block paths: {[str(f.relative_to(server.data_dir)) for f in files]}"
    ids_in = lambda fs: {_trace_id_bytes(v) for f in fs for v in pq.read_table(f, columns=["trace_id"]).column(0).to_pylist()}
    assert ids_in(a) == set(ids_a)
    assert ids_in(b) == set(ids_b)
