"""`clew proxy` retrofitting W3C Trace Context onto a legacy service, end to end on loopback.

- client: the Python OpenTelemetry SDK (a CLIENT span, `traceparent` injected by the SDK);
- legacy app: tests/python/legacy_app/app.py — standard library only, knows nothing of tracing,
  passes `X-Request-ID` on to its downstream call;
- downstream: tests/python/doctor_apps/service.py — FastAPI instrumented with the SDK;
- `clew proxy` in front of the legacy app (ingress) and on its outgoing call (egress route);
- `clew serve` storing everything (the client, downstream and proxy all export to it).

With the sidecar the stored trace is whole — client → sidecar SERVER → sidecar CLIENT →
downstream SERVER, one trace id — and `clew doctor` finds nothing; without it the trace breaks
and the doctor reports it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from clew_helpers import clew_bin, free_port, run_doctor, wait_until

HERE = Path(__file__).resolve().parent


class Proc:
    """A subprocess that must open `port` (HTTP `probe` answered) before the test goes on."""

    def __init__(self, name: str, cmd: list[str], log: Path, port: int, probe: str = "/"):
        self.name = name
        self.log_path = log
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"{name} exited: {log.read_text()[-3000:]}"
            try:
                requests.get(f"http://127.0.0.1:{port}{probe}", timeout=1)
                return
            except requests.RequestException:
                time.sleep(0.1)
        raise TimeoutError(f"{name} did not start: {log.read_text()[-3000:]}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.log.close()
        return code


class Stack:
    """Downstream + legacy app (+ the sidecar when `proxied`)."""

    def __init__(self, clew, tmp: Path, proxied: bool, forward: str = "keep"):
        suffix = uuid.uuid4().hex[:6]
        self.down_name = f"proxy-down-{suffix}"
        self.legacy_name = f"legacy-{suffix}"
        self.client_name = f"proxy-client-{suffix}"
        self.procs: list[Proc] = []
        down_port = free_port()
        self.procs.append(Proc(
            "downstream",
            [sys.executable, str(HERE / "doctor_apps" / "service.py"), "--name", self.down_name,
             "--port", str(down_port), "--otlp", clew.http_url],
            tmp / f"down-{suffix}.log", down_port, "/docs",
        ))
        self.down_url = f"http://127.0.0.1:{down_port}"
        legacy_port = free_port()
        if proxied:
            self.ingress, egress = free_port(), free_port()
            downstream_for_app = f"http://127.0.0.1:{egress}"
        else:
            self.ingress, egress = legacy_port, None
            downstream_for_app = self.down_url
        self.procs.append(Proc(
            "legacy",
            [sys.executable, str(HERE / "legacy_app" / "app.py"), "--port", str(legacy_port),
             "--downstream", downstream_for_app],
            tmp / f"legacy-{suffix}.log", legacy_port,
        ))
        self.legacy_port = legacy_port
        if proxied:
            cfg = tmp / f"proxy-{suffix}.yaml"
            cfg.write_text(
                f"""
service: {{name: {self.legacy_name}}}
ingress:
  endpoint: 127.0.0.1:{self.ingress}
  upstream: {{endpoint: "http://127.0.0.1:{legacy_port}"}}
  forward: {{format: {forward}}}
  routes: ["/orders/{{id}}"]
egress:
  routes:
    - endpoint: 127.0.0.1:{egress}
      upstream: {{endpoint: "{self.down_url}"}}
exporters:
  otlp: {{endpoint: "{clew.grpc_endpoint}", tls: {{insecure: true}}}}
batch: {{timeout: 100ms}}
"""
            )
            self.procs.append(Proc("proxy", [str(clew_bin()), "proxy", "--config", str(cfg)],
                                   tmp / f"proxy-{suffix}.log", self.ingress))
        provider = TracerProvider(resource=Resource.create({"service.name": self.client_name}))
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{clew.http_url}/v1/traces")))
        self.provider = provider
        self.tracer = provider.get_tracer("proxy-test-client")

    def call(self, path: str) -> tuple[str, requests.Response]:
        """One instrumented client call; returns (trace id, response)."""
        url = f"http://127.0.0.1:{self.ingress}{path}"
        with self.tracer.start_as_current_span(
            "GET", kind=trace.SpanKind.CLIENT,
            attributes={"http.request.method": "GET", "url.full": url,
                        "server.address": "127.0.0.1", "server.port": self.ingress},
        ) as span:
            headers: dict[str, str] = {}
            TraceContextTextMapPropagator().inject(headers)
            r = requests.get(url, headers=headers, timeout=30)
            span.set_attribute("http.response.status_code", r.status_code)
            tid = format(span.get_span_context().trace_id, "032x")
        return tid, r

    def close(self) -> None:
        self.provider.shutdown()
        codes = {p.name: p.stop() for p in reversed(self.procs)}
        if "proxy" in codes:
            assert codes["proxy"] == 0, f"proxy exit {codes['proxy']}"


def _kind(s: dict) -> str:
    return next((x["value"] for x in s["tags"] if x["key"] == "span.kind"), "internal")


def jaeger_trace(clew, tid: str, n: int) -> dict:
    """The trace once it has `n` spans that are not INTERNAL (FastAPI adds internal ones)."""
    def get():
        r = requests.get(f"{clew.query_url}/api/traces/{tid}", timeout=5)
        if not r.ok:
            return None
        t = r.json()["data"][0]
        if sum(1 for s in t["spans"] if _kind(s) != "internal") >= n:
            return t
        return None
    return wait_until(get, 20, f"trace {tid} with {n} spans")


doctor = run_doctor


def findings_about(report: dict, names: set[str]) -> list[dict]:
    return [f for f in report["findings"]
            if f.get("from_service") in names or f.get("to_service") in names]


def test_sidecar_makes_the_trace_whole(clew, tmp_path):
    stack = Stack(clew, tmp_path, proxied=True)
    try:
        tids = []
        for _ in range(3):
            tid, r = stack.call("/orders/7")
            assert r.status_code == 200 and r.text == "order ok, downstream 200"
            # The legacy app echoes the request id the sidecar gave it: the trace id.
            assert r.headers["X-Request-ID"] == tid
            tids.append(tid)
        for tid in tids:
            t = jaeger_trace(clew, tid, 4)
            svc = {pid: p["serviceName"] for pid, p in t["processes"].items()}
            by_id = {s["spanID"]: s for s in t["spans"]}

            kind = _kind

            def parent(s):
                return next((r["spanID"] for r in s["references"] if r["refType"] == "CHILD_OF"), None)

            spans = sorted((s for s in t["spans"] if kind(s) != "internal"), key=lambda s: s["startTime"])
            chain = [(svc[s["processID"]], kind(s)) for s in spans]
            assert chain == [
                (stack.client_name, "client"),
                (stack.legacy_name, "server"),
                (stack.legacy_name, "client"),
                (stack.down_name, "server"),
            ], chain
            # Each span is the child of the one before it.
            for a, b in zip(spans, spans[1:]):
                assert parent(b) == a["spanID"], (a["operationName"], b["operationName"])
            assert by_id[spans[1]["spanID"]]["operationName"] == "GET /orders/{id}"
        names = {stack.client_name, stack.legacy_name, stack.down_name}
        time.sleep(1.0)
        report = doctor(clew)
        assert findings_about(report, names) == [], json.dumps(report, indent=1)
    finally:
        stack.close()


def _windows(clew, stack) -> str:
    """The client calls' and the downstream roots' time windows (µs), for a failure message: the
    doctor pairs them by time alone."""
    lines = []
    for name in (stack.client_name, stack.down_name):
        r = requests.get(f"{clew.query_url}/api/traces",
                         params={"service": name, "limit": 50, "lookback": "10m"}, timeout=5)
        for t in r.json()["data"] if r.ok else []:
            for s in t["spans"]:
                if _kind(s) in ("client", "server") and not s["references"]:
                    lines.append((s["startTime"], s["startTime"] + s["duration"], name, _kind(s), t["traceID"]))
    return "\n".join(f"{a} .. {b}  {n} {k} {tid}" for a, b, n, k, tid in sorted(lines))


def test_without_the_sidecar_the_trace_breaks(clew, tmp_path):
    """The same calls straight to the legacy app: the client's trace ends at its own span, the
    downstream starts traces of its own, and `clew doctor` names the break: context lost from the
    client to the downstream at the uninstrumented hop (the legacy app's address) in between."""
    stack = Stack(clew, tmp_path, proxied=False)
    try:
        tids = []
        for _ in range(3):
            tid, r = stack.call("/orders/7")
            assert r.status_code == 200
            tids.append(tid)
        for tid in tids:
            t = jaeger_trace(clew, tid, 1)
            assert {p["serviceName"] for p in t["processes"].values()} == {stack.client_name}

        def down_roots():
            r = requests.get(f"{clew.query_url}/api/traces",
                             params={"service": stack.down_name, "limit": 50, "lookback": "10m"}, timeout=5)
            data = r.json()["data"] if r.ok else []
            # Spans arrive one by one (the SDK exports each as it ends): wait for the roots.
            complete = [t for t in data if any(_kind(s) == "server" for s in t["spans"])]
            return complete if len(complete) >= 3 else None
        for t in wait_until(down_roots, 20, "the downstream's own traces"):
            assert t["traceID"] not in tids
            roots = [s for s in t["spans"] if not s["references"]]
            assert len(roots) == 1 and _kind(roots[0]) == "server", roots
        # The client's spans also arrive one by one: the doctor's count reaches 3 once the last
        # call span is stored, so poll it rather than judging the first answer.
        last = {}

        def three_breaks():
            report = doctor(clew)
            lost = [f for f in findings_about(report, {stack.client_name, stack.down_name})
                    if f["kind"] == "context_lost_between_services"]
            last["report"] = report
            return lost if len(lost) == 1 and lost[0]["count"] == 3 else None
        try:
            lost = wait_until(three_breaks, 20, "the doctor to name the break 3 times")
        except AssertionError:
            raise AssertionError(json.dumps(last.get("report"), indent=1) + "\n" + _windows(clew, stack))
        f = lost[0]
        assert (f["from_service"], f["to_service"]) == (stack.client_name, stack.down_name), f
        assert f["via"] == f"127.0.0.1:{stack.legacy_port}", f
        assert f["count"] == 3 and set(f["example_trace_ids"]) == set(tids), f
    finally:
        stack.close()


@pytest.mark.parametrize(
    "name,headers,expect_header",
    [
        ("w3c", {"traceparent": "00-{tid}-00f067aa0ba902b7-01"}, "traceparent"),
        ("b3", {"b3": "{tid}-00f067aa0ba902b7-1"}, "b3"),
        ("b3multi", {"X-B3-TraceId": "{tid}", "X-B3-SpanId": "00f067aa0ba902b7", "X-B3-Sampled": "1"}, "x-b3-traceid"),
        ("jaeger", {"uber-trace-id": "{tid}:00f067aa0ba902b7:0:1"}, "uber-trace-id"),
    ],
)
def test_each_format_in_and_out(clew, tmp_path, name, headers, expect_header):
    stack = Stack(clew, tmp_path, proxied=True, forward="keep")
    try:
        tid = uuid.uuid4().hex
        sent = {k: v.format(tid=tid) for k, v in headers.items()}
        r = requests.get(f"http://127.0.0.1:{stack.ingress}/headers", headers=sent, timeout=10)
        seen = dict(line.split(": ", 1) for line in r.text.splitlines() if ": " in line)
        assert tid in seen[expect_header], seen
        # The parent the app sees is the sidecar's SERVER span, itself a child of the caller.
        t = jaeger_trace(clew, tid, 1)
        server = t["spans"][0]
        assert server["references"][0]["spanID"] == "00f067aa0ba902b7"
        span_header = "x-b3-spanid" if expect_header == "x-b3-traceid" else expect_header
        assert server["spanID"] in seen[span_header], seen
        # Malformed: a new trace; the broken value never reaches the app.
        bad = {k: "not-a-" + k for k in sent}
        r = requests.get(f"http://127.0.0.1:{stack.ingress}/headers", headers=bad, timeout=10)
        assert "not-a-" not in r.text, r.text
        assert "traceparent: 00-" in r.text
    finally:
        stack.close()
