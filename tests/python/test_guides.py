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

from clew_helpers import REPO_ROOT, clew_bin, free_port

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
    out = subprocess.run(
        [str(clew_bin()), "doctor", "--endpoint", clew.query_url, "--since", "10m", "--grace", "0s",
         "--format", "json"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
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
