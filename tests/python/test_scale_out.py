"""Clew scaled out on Kafka and a bucket (`clew serve --target ...`), every process real: one
collector exporting to a Tansu broker keyed by trace id, three ingesters consuming the topic as one
consumer group and writing blocks into a moto S3 bucket, one compactor merging them under leases,
and one querier answering from the bucket plus the ingesters' unflushed spans.

* every trace sent to the collector comes back whole (every span once) through the querier: first
  from the ingesters' heads (the bucket is still empty), then from the bucket after the ingesters
  flushed and the compactor merged their blocks (a `meta.json` with `compacted_from` appears);
* kill -9 one ingester while traces are being sent, start it again: every acknowledged trace is
  whole through the querier.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import requests
import yaml

from test_zipkin_and_json import rand_hex

TOPIC = "otlp_spans"
BUCKET = "traces"
SPANS_PER_TRACE = 4


def _wait(pred, timeout: float, describe, every: float = 1.0) -> None:
    """Polls `pred` every `every` s; on timeout fails with `describe()` (what is still wrong)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout}s: {describe()}")
        time.sleep(every)


def _write(tmp_path: Path, name: str, cfg: dict) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _storage(s3_server) -> dict:
    return {"s3": {"bucket": BUCKET, "endpoint": s3_server.endpoint, "force_path_style": True}}


def _trace_requests(service: str, trace_id: str, t0: int) -> list[dict]:
    """A trace of 4 spans from two services, sent as two requests (as two SDKs would)."""
    root, call, server, db = (rand_hex(8) for _ in range(4))

    def span(span_id, parent, name, kind, start, end):
        return {"traceId": trace_id, "spanId": span_id, "parentSpanId": parent, "name": name,
                "kind": kind, "startTimeUnixNano": str(start), "endTimeUnixNano": str(end)}

    def request(svc, spans):
        return {"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": svc}}]},
            "scopeSpans": [{"scope": {"name": "scale-out-test"}, "spans": spans}],
        }]}

    ms = 1_000_000
    return [
        request(f"{service}-front", [span(root, "", "GET /checkout", 2, t0, t0 + 50 * ms),
                                     span(call, root, "POST /pay", 3, t0 + 5 * ms, t0 + 40 * ms)]),
        request(f"{service}-pay", [span(server, call, "POST /pay", 2, t0 + 6 * ms, t0 + 39 * ms),
                                   span(db, server, "INSERT payments", 3, t0 + 10 * ms, t0 + 30 * ms)]),
    ]


def _send(collector, service: str, count: int, acked: list[str]) -> None:
    """Sends `count` traces to the collector over OTLP/HTTP; appends each fully acked trace id."""
    session = requests.Session()
    for _ in range(count):
        trace_id = rand_hex(16)
        ok = True
        for body in _trace_requests(service, trace_id, time.time_ns() - 1_000_000_000):
            r = session.post(f"{collector.http_url}/v1/traces", json=body, timeout=30)
            ok = ok and r.status_code == 200
        if ok:
            acked.append(trace_id)


def _span_count(querier, trace_id: str) -> int:
    r = querier.get(f"/api/traces/{trace_id}")
    if r.status_code == 404:
        return 0
    assert r.status_code == 200, f"{r.status_code}: {r.text[:300]}"
    return sum(len(t["spans"]) for t in r.json()["data"])


def _all_whole(querier, trace_ids: list[str]) -> list[str]:
    """The traces that are not whole (exactly 4 spans) through the querier."""
    return [t for t in trace_ids if _span_count(querier, t) != SPANS_PER_TRACE]


def _block_count(s3_server) -> int:
    return sum(1 for k in s3_server.keys(BUCKET, "tenants/") if k.endswith("/meta.json"))


def _ingester_span_count(ingester, trace_id: str) -> int:
    """Spans of a trace an ingester holds, through the read API a querier uses (OTLP protobuf)."""
    from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

    r = requests.post(f"{ingester.query_url}/api/internal/v1/read",
                      json={"op": "trace", "trace_id": trace_id}, timeout=10)
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-protobuf", r.text[:300]
    data = TracesData.FromString(r.content)
    return sum(len(ss.spans) for rs in data.resource_spans for ss in rs.scope_spans)


def _where(querier, ingesters, trace_ids: list[str]) -> str:
    """For the traces not whole: their spans through the querier and on each ingester."""
    lines = []
    for t in _all_whole(querier, trace_ids)[:5]:
        held = [_ingester_span_count(i, t) if i.alive() else "down" for i in ingesters]
        lines.append(f"{t}: querier {_span_count(querier, t)}, ingesters {held}")
    return "traces not whole:\n" + "\n".join(lines) + "\n" + _group_state(ingesters)


def _group_state(ingesters) -> str:
    """The ingesters' consumer group as the broker sees it: per partition the committed offset
    and the end of the log, and each member's assignment."""
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient

    bootstrap = _BROKER[0]
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "clew-ingesters", "enable.auto.commit": False})
    parts = [TopicPartition(TOPIC, p) for p in range(6)]
    committed = c.committed(parts, timeout=10)
    ends = [c.get_watermark_offsets(tp, timeout=10)[1] for tp in parts]
    c.close()
    out = [f"partition {tp.partition}: committed {tp.offset}, end {end}" for tp, end in zip(committed, ends)]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        desc = admin.describe_consumer_groups(["clew-ingesters"])["clew-ingesters"].result(timeout=10)
        out.append(f"group state {desc.state}")
        for m in desc.members:
            out.append(f"member {m.member_id} {m.host}: {[tp.partition for tp in m.assignment.topic_partitions]}")
    except Exception as e:  # noqa: BLE001 - diagnostics only
        out.append(f"describe group: {e!r}")
    out.append("ingester metrics: " + ", ".join(
        str(_metric(i, "clew_kafka_receiver_messages_total")) if i.alive() else "down" for i in ingesters))
    return "\n".join(out)


_BROKER: list[str] = []


def _metric(server, name: str) -> float:
    text = requests.get(f"{server.query_url}/metrics", timeout=10).text
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith(name + "{") or l.startswith(name + " "))


def _merged_blocks(s3_server) -> int:
    metas = [k for k in s3_server.keys(BUCKET, "tenants/") if k.endswith("/meta.json")]
    return sum(1 for k in metas if s3_server.json(BUCKET, k).get("compacted_from"))


def test_collector_ingesters_compactor_and_querier_share_kafka_and_a_bucket(
    kafka_broker, s3_server, clew_factory, tmp_path, monkeypatch
):
    # (Fixture order matters: the Clews stop first, while the broker and the bucket still run.)
    for k, v in s3_server.aws_env().items():
        monkeypatch.setenv(k, v)
    s3_server.create_bucket(BUCKET)
    kafka_broker.create_topic(TOPIC, partitions=6)
    _BROKER[:] = [kafka_broker.bootstrap]
    storage = _storage(s3_server)

    ingester_cfg = _write(tmp_path, "ingester", {
        "receivers": {"kafka": {
            "brokers": [kafka_broker.bootstrap], "topic": TOPIC, "group_id": "clew-ingesters",
            "initial_offset": "earliest", "session_timeout": "6s", "heartbeat_interval": "500ms",
        }},
        "service": {"pipelines": {"traces": {"receivers": ["kafka"], "exporters": ["clew_store"]}}},
        # Flushed 15 s after a head's oldest span arrived: long enough to see answers come from
        # the heads while the bucket is still empty.
        "storage": {**storage, "block": {"max_age": "15s"}},
        "cluster": {"blocklist_poll": "1s", "recent_blocks_for": "20s"},
    })
    ingesters = [clew_factory(extra_args=["--config", str(ingester_cfg), "--target", "ingester"]) for _ in range(3)]
    querier = clew_factory(extra_args=["--config", str(_write(tmp_path, "querier", {
        "storage": storage,
        "cluster": {"blocklist_poll": "1s", "ingesters": [i.query_url for i in ingesters]},
    })), "--target", "querier"])
    compactor = clew_factory(extra_args=["--config", str(_write(tmp_path, "compactor", {
        "storage": {**storage, "compaction": {"interval": "1s", "min_blocks": 2}},
        "cluster": {"blocklist_poll": "1s"},
    })), "--target", "compactor"])
    collector = clew_factory(extra_args=["--config", str(_write(tmp_path, "collector", {
        "exporters": {"kafka": {"brokers": [kafka_broker.bootstrap], "topic": TOPIC,
                                "partition_traces_by_id": True}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["kafka"]}}},
    })), "--target", "collector"])

    # Each role serves what it is for, and nothing else.
    assert collector.get("/api/services").status_code == 404
    assert ingesters[0].get("/api/services").status_code == 404
    assert compactor.get("/ready").status_code == 200
    assert querier.get("/api/services").status_code == 200

    service = f"shop-{uuid.uuid4().hex[:6]}"
    acked: list[str] = []
    _send(collector, service, 30, acked)
    assert len(acked) == 30
    _wait(lambda: not _all_whole(querier, acked), 60,
          lambda: f"traces not whole through the querier: {_all_whole(querier, acked)[:5]}", every=0.2)
    # Nothing is in the bucket yet: every answer came from the ingesters' heads.
    assert _block_count(s3_server) == 0
    found = querier.get_json(f"/api/traces?service={service}-pay&limit=100&lookback=1h")["data"]
    assert {t["traceID"] for t in found} == set(acked)
    assert set(querier.get_json("/api/services")["data"]) >= {f"{service}-front", f"{service}-pay"}
    # The ingesters' read API, as the querier calls it: together they hold every trace once.
    holders = [_ingester_span_count(i, acked[0]) for i in ingesters]
    assert sorted(holders) == [0, 0, SPANS_PER_TRACE], holders

    # The heads are flushed into the bucket (block.max_age); the compactor merges the blocks;
    # the querier's answers stay exact (every span once), now from the bucket. (The ingesters
    # are not restarted for this: Tansu's group coordinator sometimes stops the whole group
    # after members leave and rejoin, which a kill -9 below does not trigger.)
    _wait(lambda: _merged_blocks(s3_server) > 0, 90,
          lambda: f"no merged block in the bucket; keys: {s3_server.keys(BUCKET)[:20]}\n{compactor.log_tail(30)}")
    _wait(lambda: not _all_whole(querier, acked), 30,
          lambda: f"traces not whole after the merge: {_all_whole(querier, acked)[:5]}")

    # kill -9 one ingester while traces are being sent, then start it again.
    more: list[str] = []
    sender = threading.Thread(target=_send, args=(collector, service, 40, more))
    sender.start()
    time.sleep(1.0)
    ingesters[1].kill9()
    # Restarted after the group has dropped the dead member (session timeout 6 s): the other two
    # take its partitions meanwhile, and give some back when it rejoins.
    time.sleep(8.0)
    ingesters[1].start()
    sender.join(timeout=120)
    assert not sender.is_alive()
    assert len(more) == 40, f"the collector refused {40 - len(more)} traces"
    everything = acked + more
    _wait(lambda: not _all_whole(querier, everything), 90, lambda: _where(querier, ingesters, everything))
    found = querier.get_json(f"/api/traces?service={service}-front&limit=200&lookback=1h")["data"]
    assert {t["traceID"] for t in found} == set(everything)


def test_the_scale_out_example_runs(tmp_path):
    """examples/scale-out/run.sh --check: the broker, the bucket and the six Clews of the example
    on their documented loopback ports, `clew demo` traffic, services visible through the querier."""
    import os
    import subprocess

    from clew_helpers import clew_bin

    script = Path(__file__).resolve().parents[2] / "examples" / "scale-out" / "run.sh"
    env = dict(os.environ, CLEW_BIN=str(clew_bin()), TMPDIR=str(tmp_path))
    out = subprocess.run([str(script), "--check"], capture_output=True, text=True, timeout=240, env=env,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    assert "the querier shows" in out.stdout
