"""The guides' code (examples/guides/<name>/) run against a real Clew, asserting what each guide says.

Each guide page (docs/guides/*.md) includes its code from these files with mdBook's `{{#include}}`,
so the text and the tested code cannot drift apart. Every example is run as the reader would run
it: a separate Python process with the standard OTEL_* variables pointing at the Clew under test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import unquote

import pytest
import requests

from clew_helpers import REPO_ROOT, clew_bin, free_port, run_doctor

GUIDES = REPO_ROOT / "examples" / "guides"


# -- helpers ------------------------------------------------------------------------------------------

def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


def example_env(service: str, endpoint: str, **extra: str) -> dict:
    env = dict(os.environ)
    env.update(OTEL_SERVICE_NAME=service, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, **extra)
    return env


def run_example(guide: str, script: str, service: str, endpoint: str, *args: str, **extra_env: str) -> str:
    """Runs examples/guides/<guide>/<script> to completion; returns its stdout."""
    out = subprocess.run(
        [sys.executable, script, *args], cwd=GUIDES / guide, env=example_env(service, endpoint, **extra_env),
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, f"{guide}/{script} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
    return out.stdout


def jaeger_trace(clew, trace_id: str, min_spans: int, timeout: float = 15.0) -> dict:
    """The trace from the Jaeger API once it has at least `min_spans` spans."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        r = requests.get(f"{clew.query_url}/api/traces/{trace_id}", timeout=10)
        if r.status_code == 200:
            last = r.json()["data"][0]
            if len(last["spans"]) >= min_spans:
                return last
        time.sleep(0.2)
    raise AssertionError(f"trace {trace_id}: fewer than {min_spans} spans after {timeout}s: {last}")


def search(clew, service: str, **params) -> list[dict]:
    r = requests.get(f"{clew.query_url}/api/traces",
                     params={"service": service, "limit": 1000, "lookback": "1h", **params}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def parent_of(span: dict) -> str | None:
    refs = [r for r in span.get("references", []) if r["refType"] == "CHILD_OF"]
    return refs[0]["spanID"] if refs else None


def assert_whole(t: dict) -> dict:
    """Every span's parent is in the trace and there is exactly one root; returns the root."""
    ids = {s["spanID"] for s in t["spans"]}
    orphans = [s["operationName"] for s in t["spans"] if parent_of(s) and parent_of(s) not in ids]
    roots = [s for s in t["spans"] if parent_of(s) is None]
    assert not orphans, f"spans whose parent is missing: {orphans}"
    assert len(roots) == 1, f"roots: {[s['operationName'] for s in roots]}"
    return roots[0]


def services_of(t: dict) -> set[str]:
    return {t["processes"][s["processID"]]["serviceName"] for s in t["spans"]}


def by_name(t: dict, name: str) -> list[dict]:
    return [s for s in t["spans"] if s["operationName"] == name]


def tags(span: dict) -> dict:
    return {kv["key"]: kv["value"] for kv in span.get("tags", [])}


def doctor_findings(clew, service: str) -> list[dict]:
    """`clew doctor` (the CLI, JSON output) findings that involve `service`."""
    report = run_doctor(clew)
    return [f for f in report["findings"] if service in (f.get("from_service"), f.get("to_service"))]


def wait_findings(clew, service: str, count: int, timeout: float = 20.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    found: list[dict] = []
    while time.monotonic() < deadline:
        found = doctor_findings(clew, service)
        if sum(f["count"] for f in found) >= count:
            return found
        time.sleep(0.3)
    return found


# -- guide: OpenTelemetry Python SDK, asyncio and thread pools ----------------------------------------

def test_python_sdk_fixed_trace_is_whole(clew):
    service = unique("orders")
    trace_id = run_example("python-sdk", "orders.py", service, f"http://{clew.grpc_endpoint}",
                           "--variant", "fixed").strip()
    # process-order, 2 × reserve-stock, charge-card, 2 × render-invoice (copy_context and attach).
    t = jaeger_trace(clew, trace_id, 6)
    assert len(t["spans"]) == 6, [s["operationName"] for s in t["spans"]]
    root = assert_whole(t)
    assert root["operationName"] == "process-order"
    assert services_of(t) == {service}
    for name, n in (("reserve-stock", 2), ("charge-card", 1), ("render-invoice", 2)):
        spans = by_name(t, name)
        assert len(spans) == n, name
        assert all(parent_of(s) == root["spanID"] for s in spans), name
    assert doctor_findings(clew, service) == []


def test_python_sdk_broken_thread_pool_starts_a_new_trace(clew):
    service = unique("orders")
    trace_id = run_example("python-sdk", "orders.py", service, f"http://{clew.grpc_endpoint}",
                           "--variant", "broken").strip()
    t = jaeger_trace(clew, trace_id, 4)
    assert_whole(t)
    # The asyncio tasks kept their parent; the invoice did not make it into the order's trace.
    assert sorted(s["operationName"] for s in t["spans"]) == [
        "charge-card", "process-order", "reserve-stock", "reserve-stock"]
    orphaned = search(clew, service, operation="render-invoice")
    assert len(orphaned) == 1
    (invoice,) = orphaned[0]["spans"]
    assert parent_of(invoice) is None and orphaned[0]["traceID"] != trace_id

    # What the guide says `clew doctor` reports.
    found = wait_findings(clew, service, 1)
    assert [f["kind"] for f in found] == ["context_lost_in_service"], found
    f = found[0]
    assert (f["from_service"], f["to_service"], f["operation"], f["count"]) == (service, service, "process-order", 1)
    assert f["example_trace_ids"] == [trace_id]
    assert f["message"] == (f"context lost inside {service} on process-order: "
                            "new trace 'render-invoice' started while it ran, 1 occurrence")


# -- guide: dropped spans in async FastAPI routes -------------------------------------------------------

class FastApiApp:
    def __init__(self, service: str, otlp_http: str, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self.log = open(log, "wb")
        # Batches are sent only every 60 s: whatever arrives in Clew was sent by the lifespan's
        # shutdown flush, which is what the guide claims keeps the last requests' spans.
        env = example_env(service, otlp_http, OTEL_BSP_SCHEDULE_DELAY="60000")
        self.proc = subprocess.Popen(
            [sys.executable, "app.py", "--port", str(self.port)], cwd=GUIDES / "fastapi-dropped-spans",
            env=env, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"app exited: {log.read_text()[-2000:]}"
            try:
                if requests.get(f"{self.url}/docs", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"app did not start: {log.read_text()[-2000:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def test_fastapi_broken_and_fixed_routes(clew, tmp_path):
    service = unique("reports")
    app = FastApiApp(service, clew.http_url, tmp_path / "app.log")
    try:
        for _ in range(3):
            assert requests.get(f"{app.url}/report/broken", timeout=10).json() == {"report": "broken", "rows": 3}
            assert requests.get(f"{app.url}/report/fixed", timeout=10).json() == {"report": "fixed", "rows": 3}
        # Nothing was exported yet (60 s batch delay): the flush on shutdown sends it all.
        assert search(clew, service) == []
    finally:
        code = app.stop()
    # uvicorn shuts down gracefully (lifespan included), then re-raises the SIGTERM it caught.
    assert code in (0, -signal.SIGTERM), app.log_path.read_text()[-2000:]

    def traces_rooted_at(op: str) -> list[dict]:
        return [t for t in search(clew, service) if assert_whole(t)["operationName"] == op]

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and len(search(clew, service)) < 9:
        time.sleep(0.2)

    fixed = traces_rooted_at("GET /report/fixed")
    assert len(fixed) == 3
    for t in fixed:
        root = assert_whole(t)
        (build,) = by_name(t, "build-report")
        (rows,) = by_name(t, "load-rows")
        assert parent_of(build) == root["spanID"] and parent_of(rows) == build["spanID"]
        assert tags(build)["app.report"] == "fixed"
        # The SERVER span, the instrumentation's two `http send` spans, build-report, load-rows.
        assert len(t["spans"]) == 5, [s["operationName"] for s in t["spans"]]

    broken = traces_rooted_at("GET /report/broken")
    assert len(broken) == 3
    assert all(not by_name(t, "build-report") for t in broken)
    lost = traces_rooted_at("build-report")
    assert len(lost) == 3 and all(len(t["spans"]) == 2 for t in lost)

    found = wait_findings(clew, service, 3)
    assert [f["kind"] for f in found] == ["context_lost_in_service"], found
    f = found[0]
    assert (f["operation"], f["count"]) == ("GET /report/broken", 3)
    assert f["message"] == (f"context lost inside {service} on GET /report/broken: "
                            "new trace 'build-report' started while it ran, 3 occurrences")
    assert not any("fixed" in json.dumps(x) for x in found)


# -- guide: manual spans for business logic -------------------------------------------------------------

def v3_spans(clew, trace_id: str, n: int) -> list[dict]:
    deadline = time.monotonic() + 15
    spans: list[dict] = []
    while time.monotonic() < deadline:
        r = requests.get(f"{clew.query_url}/api/v3/traces/{trace_id}", timeout=10)
        if r.status_code == 200:
            spans = [s for rs in r.json()["result"]["resourceSpans"] for ss in rs["scopeSpans"]
                     for s in ss["spans"]]
            if len(spans) >= n:
                return spans
        time.sleep(0.2)
    raise AssertionError(f"trace {trace_id}: {len(spans)} spans, wanted {n}")


def attrs(obj: dict) -> dict:
    return {kv["key"]: next(iter(kv["value"].values()), None) for kv in obj.get("attributes", [])}


def test_manual_spans_python(clew):
    service = unique("shop")
    ids = json.loads(run_example("manual-spans", "checkout.py", service, f"http://{clew.grpc_endpoint}"))
    spans = {s["name"]: s for s in v3_spans(clew, ids["checkout"], 3)}
    assert sorted(spans) == ["apply-discount", "checkout", "validate-cart"]
    co = spans["checkout"]
    assert attrs(co)["app.cart.items"] in (2, "2")  # int64 is a string in OTLP JSON
    assert attrs(co)["app.cart.total_cents"] in (1749, "1749")
    assert [e["name"] for e in co.get("events", [])] == ["discount.skipped"]
    assert [e["name"] for e in spans["validate-cart"]["events"]] == ["cart.validated"]
    disc = spans["apply-discount"]
    assert disc["status"].get("code") in (2, "STATUS_CODE_ERROR")
    (exc,) = disc["events"]
    assert exc["name"] == "exception"
    assert attrs(exc)["exception.type"].endswith("CouponExpired")  # module-qualified
    assert co["status"].get("code") in (None, 0, "STATUS_CODE_UNSET")  # the checkout itself went on

    (settle,) = v3_spans(clew, ids["settlement"], 1)
    assert settle["name"] == "settle-payments"
    assert settle["status"]["code"] in (2, "STATUS_CODE_ERROR") and settle["status"]["message"] == "provider timeout"
    (link,) = settle["links"]
    assert link["traceId"].lower() == ids["checkout"] and link["spanId"].lower() == co["spanId"].lower()
    assert attrs(link)["app.link"] == "settles"
    assert [e["name"] for e in settle["events"]] == ["exception"]


def test_manual_spans_rust(clew):
    """examples/guides/manual-spans/checkout.rs, built by `cargo build --workspace --all-targets` as the
    clew-propagation example `manual_spans`, exporting OTLP/HTTP JSON to Clew."""
    exe = REPO_ROOT / "target" / "debug" / "examples" / "manual_spans"
    assert exe.exists(), f"{exe} missing: run `cargo build -p clew-propagation --example manual_spans`"
    service = unique("shop-rs")
    out = subprocess.run([str(exe)], env=example_env(service, clew.http_url), capture_output=True, text=True,
                         timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, f"manual_spans failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
    ids = json.loads(out.stdout)

    spans = {s["name"]: s for s in v3_spans(clew, ids["checkout"], 3)}
    assert sorted(spans) == ["apply-discount", "checkout", "validate-cart"]
    co, val, disc = spans["checkout"], spans["validate-cart"], spans["apply-discount"]
    assert co["kind"] in (2, "SPAN_KIND_SERVER")
    assert not co.get("parentSpanId")
    assert val["parentSpanId"].lower() == co["spanId"].lower() == disc["parentSpanId"].lower()
    # Typed values: integers stay integers (a string in OTLP JSON, but under intValue).
    a = {kv["key"]: kv["value"] for kv in co["attributes"]}
    assert a["app.cart.items"] == {"intValue": "2"} or a["app.cart.items"] == {"intValue": 2}
    assert a["app.cart.total_cents"] in ({"intValue": "1749"}, {"intValue": 1749})
    assert a["app.payment.method"] == {"stringValue": "card"}
    assert [(e["name"], attrs(e)) for e in co["events"]] == [("discount.skipped", {"app.coupon": "SPRING24"})]
    assert co["status"].get("code") in (None, 0, "STATUS_CODE_UNSET")  # the checkout itself went on

    (validated,) = val["events"]
    assert validated["name"] == "cart.validated"
    skus = {kv["key"]: kv["value"] for kv in validated["attributes"]}["app.cart.skus"]
    assert [v["stringValue"] for v in skus["arrayValue"]["values"]] == ["sku-1", "sku-2"]

    assert attrs(disc)["app.coupon"] == "SPRING24"
    assert disc["status"]["code"] in (2, "STATUS_CODE_ERROR") and disc["status"]["message"] == "coupon SPRING24 expired"
    (exc,) = disc["events"]
    assert exc["name"] == "exception"
    assert attrs(exc) == {"exception.type": "CouponExpired", "exception.message": "coupon SPRING24 expired"}

    (settle,) = v3_spans(clew, ids["settlement"], 1)
    assert settle["name"] == "settle-payments"
    assert settle["status"]["code"] in (2, "STATUS_CODE_ERROR") and settle["status"]["message"] == "provider timeout"
    (link,) = settle["links"]
    assert link["traceId"].lower() == ids["checkout"] and link["spanId"].lower() == co["spanId"].lower()
    assert attrs(link) == {"app.link": "settles"}
    (exc,) = settle["events"]
    assert exc["name"] == "exception"
    assert attrs(exc)["exception.message"] == "payment provider did not answer within 5s"

    # The resource (OTEL_SERVICE_NAME) and the instrumentation scope the SDK set up.
    (rs,) = requests.get(f"{clew.query_url}/api/v3/traces/{ids['checkout']}", timeout=10).json()["result"]["resourceSpans"]
    assert attrs(rs["resource"])["service.name"] == service
    assert [(ss["scope"]["name"], ss["scope"].get("version")) for ss in rs["scopeSpans"]] == [("shop.checkout", "1.0.0")]
    found = search(clew, service)
    assert {ids["checkout"], ids["settlement"]} <= {t["traceID"] for t in found}


# -- guide: when to use tail-based sampling --------------------------------------------------------------

TAIL_CONFIG = REPO_ROOT / "examples" / "config" / "tail-errors-slow-10pct.yaml"


@pytest.mark.slow
def test_tail_sampling_keeps_errors_slow_and_a_tenth(clew_factory):
    server = clew_factory(extra_args=["--config", str(TAIL_CONFIG)])
    service = unique("checkout")
    ids = json.loads(run_example("tail-sampling", "send_traces.py", service, f"http://{server.grpc_endpoint}",
                                 "--normal", "180", "--errors", "10", "--slow", "10"))

    def kept() -> dict[str, dict]:
        return {t["traceID"]: t for t in search(server, service)}

    # Decided root_send_delay (2 s) after each root arrived.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = kept()
        if all(i in got for i in ids["error"] + ids["slow"]):
            break
        time.sleep(0.5)
    time.sleep(3)  # every normal trace is decided by now too
    got = kept()
    for kind, policy in (("error", "errors"), ("slow", "slow")):
        for i in ids[kind]:
            assert i in got, f"{kind} trace {i} was not kept"
            t = got[i]
            assert len(t["spans"]) == 2
            assert {tags(s).get("sampling.policy") for s in t["spans"]} == {policy}
    normal_kept = [i for i in ids["normal"] if i in got]
    # 10 % of 180 is 18; the bounds are ~4 standard deviations wide, so a correct sampler never
    # fails here, and one that keeps everything or nothing always does.
    assert 4 <= len(normal_kept) <= 40, len(normal_kept)
    assert all({tags(s).get("sampling.policy") for s in got[i]["spans"]} == {"ten-percent"} for i in normal_kept)
    assert len(got) == len(ids["error"]) + len(ids["slow"]) + len(normal_kept)


# -- guide: safely propagating user ids via baggage ------------------------------------------------------

BAGGAGE_SECRET = "guide-baggage-secret-0123456789abcdef"


@pytest.mark.parametrize("leak", [False, True], ids=["pseudonym-in-baggage", "raw-id-leaked"])
def test_baggage_user_ids_are_stored_only_as_pseudonyms(clew_factory, monkeypatch, leak):
    # Clew reads the secret from the environment it starts in, as the guide's config says.
    monkeypatch.setenv("CLEW_BAGGAGE_SECRET", BAGGAGE_SECRET)
    server = clew_factory(extra_args=["--config", str(GUIDES / "baggage-user-ids" / "clew.yaml")])
    service = unique("web")
    args = ["--user-id", "user-4242"] + (["--leak-raw-id"] if leak else [])
    out = json.loads(run_example("baggage-user-ids", "service.py", service, f"http://{server.grpc_endpoint}",
                                 *args, CLEW_BAGGAGE_SECRET=BAGGAGE_SECRET))
    t = jaeger_trace(server, out["trace_id"], 2)
    assert_whole(t)
    for span in t["spans"]:
        a = tags(span)
        # Whether the service sent the pseudonym or leaked the raw id, Clew stores the same pseudonym
        # (the Python pseudonymize() equals Clew's), keeps the allowlisted plan, drops session.id.
        assert a["user.id"] == out["pseudonym"] and a["user.id"].startswith("h1:")
        assert a["tenant.plan"] == "gold"
        assert "session.id" not in a
    assert "user-4242" not in json.dumps(t)

    # Outbound: internal calls carry the baggage, third parties get none.
    assert "baggage" not in {k.lower() for k in out["external"]} and "traceparent" in out["external"]
    # W3C baggage values are percent-encoded (`h1%3A…`).
    internal_baggage = unquote(out["internal"]["baggage"])
    assert "tenant.plan=gold" in internal_baggage
    if not leak:
        assert f"user.id={out['pseudonym']}" in internal_baggage and "user-4242" not in internal_baggage


# -- guide: propagating trace context through Kafka consumers --------------------------------------------

PRODUCER, CONSUMER = (4, "SPAN_KIND_PRODUCER"), (5, "SPAN_KIND_CONSUMER")
KAFKA_ORDERS = REPO_ROOT / "target" / "debug" / "examples" / "kafka_orders"


def kafka_example(lang: str, clew, service: str, *args: str) -> dict:
    """Runs the guide's Python script (`producer.py` / `consumer.py`) or the Rust example
    (`kafka_orders produce|consume`, built by scripts/test) with the same arguments."""
    if lang == "python":
        script, rest = args[0], args[1:]
        return json.loads(run_example("kafka", f"{script}.py", service, f"http://{clew.grpc_endpoint}", *rest))
    if not KAFKA_ORDERS.exists():
        build = "cargo build -p clew-kafka --example kafka_orders"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{KAFKA_ORDERS} missing in CI: scripts/test builds it with `{build}`")
        pytest.skip(f"{KAFKA_ORDERS} not built (scripts/test builds it: `{build}`)")
    command = {"producer": "produce", "consumer": "consume"}[args[0]]
    # The Rust consumer has no broken mode; its batch mode is a flag.
    rest = ["--batch" if a == "batch" else a for a in args[1:] if a not in ("--mode", "each")]
    out = subprocess.run([str(KAFKA_ORDERS), command, *rest], env=example_env(service, clew.http_url),
                         capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, f"kafka_orders {command} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
    return json.loads(out.stdout)


def produce_and_consume(kafka_broker, clew, producer: str, consumer: str, mode: str, count: int = 3):
    """Creates a fresh topic, produces `count` orders, consumes them; returns (produced, consumed,
    producer service, consumer service, topic)."""
    topic, group = unique("orders"), unique("billing")
    kafka_broker.create_topic(topic)
    psvc, csvc = unique(f"orders-{producer[:2]}"), unique(f"billing-{consumer[:2]}")
    common = ("--bootstrap", kafka_broker.bootstrap, "--topic", topic, "--count", str(count))
    produced = kafka_example(producer, clew, psvc, "producer", *common)
    consumed = kafka_example(consumer, clew, csvc, "consumer", *common, "--group", group, "--mode", mode)
    assert len(produced["traces"]) == count and len(set(produced["traces"])) == count
    return produced, consumed, psvc, csvc, topic


def kafka_spans(clew, trace_id: str, n: int) -> dict[str, list[tuple[str, dict]]]:
    """The trace's spans by name, each with its service, once at least `n` are stored."""
    v3_spans(clew, trace_id, n)
    r = requests.get(f"{clew.query_url}/api/v3/traces/{trace_id}", timeout=10).json()
    out: dict[str, list[tuple[str, dict]]] = {}
    for rs in r["result"]["resourceSpans"]:
        service = attrs(rs["resource"])["service.name"]
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                out.setdefault(s["name"], []).append((service, s))
    return out


def links_of(span: dict) -> list[tuple[str, str]]:
    return [(l["traceId"].lower(), l["spanId"].lower()) for l in span.get("links", [])]


def graph_edge(clew, source: str, target: str, want: int, timeout: float = 10.0) -> dict | None:
    """The live service graph's `source` → `target` edge, once it has `want` requests (or at the
    timeout, whatever it has)."""
    deadline = time.monotonic() + timeout
    while True:
        g = requests.get(f"{clew.query_url}/api/doctor/service-graph", timeout=10).json()
        edge = next((e for e in g["edges"] if (e["source"], e["target"]) == (source, target)), None)
        if (edge and edge["requests"] >= want) or time.monotonic() > deadline:
            return edge
        time.sleep(0.3)


def assert_producer_trace(spans: dict, psvc: str, topic: str, send_id: str) -> None:
    """place-order → send {topic} (PRODUCER), both in the producer's service."""
    ((s1, order),) = spans["place-order"]
    ((s2, send),) = spans[f"send {topic}"]
    assert s1 == s2 == psvc
    assert not order.get("parentSpanId")
    assert send["kind"] in PRODUCER and send["spanId"].lower() == send_id
    assert send["parentSpanId"].lower() == order["spanId"].lower()
    a = attrs(send)
    assert (a["messaging.system"], a["messaging.destination.name"]) == ("kafka", topic)


@pytest.mark.parametrize("producer,consumer", [("python", "python"), ("rust", "rust"), ("python", "rust"),
                                               ("rust", "python")])
def test_kafka_consumer_continues_the_producer_trace(clew, kafka_broker, producer, consumer):
    """The per-message consumer: producer and consumer spans are one trace, the process span a child
    of the send span. W3C headers written by one language are read by the other."""
    produced, consumed, psvc, csvc, topic = produce_and_consume(kafka_broker, clew, producer, consumer, "each")
    # One partition: records are consumed in the order they were produced.
    assert consumed["traces"] == produced["traces"]
    for trace_id, send_id, process_id in zip(produced["traces"], produced["send_spans"], consumed["process_spans"]):
        spans = kafka_spans(clew, trace_id, 4)
        assert sorted(spans) == ["charge-card", "place-order", f"process {topic}", f"send {topic}"], spans.keys()
        assert_producer_trace(spans, psvc, topic, send_id)
        ((s, process),) = spans[f"process {topic}"]
        assert s == csvc and process["kind"] in CONSUMER and process["spanId"].lower() == process_id
        assert process["parentSpanId"].lower() == send_id
        # The semantic conventions' link to the creation context, besides the parent.
        assert links_of(process) == [(trace_id, send_id)]
        a = attrs(process)
        assert (a["messaging.system"], a["messaging.destination.name"]) == ("kafka", topic)
        assert a["messaging.operation.type"] == "process"
        ((s, charge),) = spans["charge-card"]
        assert s == csvc and charge["parentSpanId"].lower() == process_id
        t = jaeger_trace(clew, trace_id, 4)
        assert_whole(t)
        assert services_of(t) == {psvc, csvc}
    assert doctor_findings(clew, csvc) == []
    # The service graph pairs each send span with its process child: an orders → billing edge.
    edge = graph_edge(clew, psvc, csvc, 3)
    assert edge is not None and (edge["requests"], edge["errors"]) == (3, 0), edge


@pytest.mark.parametrize("producer,consumer", [("python", "python"), ("rust", "rust")])
def test_kafka_batch_consumer_links_every_message(clew, kafka_broker, producer, consumer):
    """The batch consumer: one process span in a trace of its own, with a link to each record's
    send span (its creation context); the producers' traces stay whole and the doctor is quiet."""
    produced, consumed, psvc, csvc, topic = produce_and_consume(kafka_broker, clew, producer, consumer, "batch")
    (batch_trace,) = consumed["traces"]
    (process_id,) = consumed["process_spans"]
    assert batch_trace not in produced["traces"]
    spans = kafka_spans(clew, batch_trace, 4)
    assert sorted(spans) == ["charge-card", f"process {topic}"], spans.keys()
    ((s, process),) = spans[f"process {topic}"]
    assert s == csvc and process["kind"] in CONSUMER and process["spanId"].lower() == process_id
    assert not process.get("parentSpanId")
    assert links_of(process) == list(zip(produced["traces"], produced["send_spans"]))
    # Each link says which record it came from.
    assert [str(attrs(l)["messaging.kafka.offset"]) for l in process["links"]] == ["0", "1", "2"]
    assert attrs(process)["messaging.batch.message_count"] in (3, "3")
    # The business logic runs under the batch's span.
    assert [c["parentSpanId"].lower() for _, c in spans["charge-card"]] == [process_id] * 3
    for trace_id, send_id in zip(produced["traces"], produced["send_spans"]):
        spans = kafka_spans(clew, trace_id, 2)
        assert sorted(spans) == ["place-order", f"send {topic}"]
        assert_producer_trace(spans, psvc, topic, send_id)
    # A new trace with links is deliberate: not a lost context, and no producer → consumer edge.
    assert doctor_findings(clew, csvc) == []
    assert graph_edge(clew, psvc, csvc, 1, timeout=1.0) is None


def test_kafka_consumer_ignoring_headers_splits_every_trace(clew, kafka_broker):
    """The broken consumer: each record gives two traces, and `clew doctor` names the topic's send span."""
    produced, consumed, psvc, csvc, topic = produce_and_consume(kafka_broker, clew, "python", "python", "ignore-headers")
    assert not set(consumed["traces"]) & set(produced["traces"])
    assert len(set(consumed["traces"])) == 3
    for trace_id, process_id in zip(consumed["traces"], consumed["process_spans"]):
        spans = kafka_spans(clew, trace_id, 2)
        assert sorted(spans) == ["charge-card", f"process {topic}"]
        ((s, process),) = spans[f"process {topic}"]
        assert s == csvc and process["kind"] in CONSUMER and process["spanId"].lower() == process_id
        assert not process.get("parentSpanId") and not process.get("links")
    for trace_id, send_id in zip(produced["traces"], produced["send_spans"]):
        spans = kafka_spans(clew, trace_id, 2)
        assert sorted(spans) == ["place-order", f"send {topic}"]
        assert_producer_trace(spans, psvc, topic, send_id)

    # What the guide says `clew doctor` reports.
    found = wait_findings(clew, csvc, 3)
    assert [f["kind"] for f in found] == ["context_lost_between_services"], found
    f = found[0]
    assert (f["from_service"], f["to_service"], f["operation"], f["count"]) == (psvc, csvc, f"send {topic}", 3)
    assert set(f["example_trace_ids"]) <= set(produced["traces"]) and f["example_trace_ids"]
    assert set(f["example_new_trace_ids"]) <= set(consumed["traces"]) and f["example_new_trace_ids"]
    assert f["message"] == f"context lost from {psvc} to {csvc} on send {topic}: 3 occurrences"
