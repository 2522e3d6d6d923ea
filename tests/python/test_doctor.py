"""`clew doctor` against real instrumented services (FastAPI + requests, OpenTelemetry SDK).

Two uvicorn processes (tests/python/doctor_apps/service.py) export OTLP/HTTP to the clew under test.
The front service calls the back service from a ThreadPoolExecutor:
- `/broken` does not carry the context into the worker thread: the outgoing `requests` call starts a
  new trace (a root CLIENT span in the *front* service, with the back service's SERVER span as its
  child). The context is lost inside the front service, while `GET /broken` runs — so the accurate
  finding is `context_lost_in_service` on front / `GET /broken`, not a break between services (the
  front → back hop itself propagates fine inside the new trace).
- `/ok` (`contextvars.copy_context().run`) and `/attached` (`context.attach`) carry it: nothing.
- `/manual` wraps an uninstrumented `urllib` call in a CLIENT span that never injects `traceparent`:
  the back service starts a new trace inside that span's window, at the address the span names:
  `context_lost_between_services` from front to back on `GET /work`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from clew_helpers import clew_bin, free_port, run_doctor

APPS = Path(__file__).resolve().parent / "doctor_apps"
CALLS = 3


class App:
    def __init__(self, name: str, otlp: str, log: Path, downstream: str | None = None):
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, str(APPS / "service.py"), "--name", name, "--port", str(self.port), "--otlp", otlp]
        if downstream:
            cmd += ["--downstream", downstream]
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"{name} exited: {log.read_text()[-2000:]}"
            try:
                if requests.get(f"{self.url}/docs", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{name} did not start: {log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def apps(clew, tmp_path):
    suffix = uuid.uuid4().hex[:6]
    back = App(f"doctor-back-{suffix}", clew.http_url, tmp_path / "back.log")
    front = App(f"doctor-front-{suffix}", clew.http_url, tmp_path / "front.log", downstream=back.url)
    yield front, back
    front.stop()
    back.stop()


doctor = run_doctor


def mine(report: dict, front, back) -> list[dict]:
    names = {front.name, back.name}
    return [f for f in report["findings"] if f.get("from_service") in names or f.get("to_service") in names]


def settle(clew, front, back, want: int) -> list[dict]:
    """Polls until `want` findings about these services appear (spans arrive asynchronously)."""
    deadline = time.monotonic() + 20
    found: list[dict] = []
    while time.monotonic() < deadline:
        found = mine(doctor(clew), front, back)
        if len(found) >= want and sum(f["count"] for f in found) >= want * CALLS:
            time.sleep(0.5)  # and then nothing more arrives
            return mine(doctor(clew), front, back)
        time.sleep(0.3)
    return found


def wait_for_traces(clew, service: str, n: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        r = requests.get(f"{clew.query_url}/api/traces", params={"service": service, "limit": 100, "lookback": "10m"})
        if r.ok and len(r.json()["data"]) >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"fewer than {n} traces of {service} arrived")


def test_thread_pool_without_context_is_named(clew, apps):
    front, back = apps
    for _ in range(CALLS):
        assert requests.get(f"{front.url}/broken", timeout=30).json() == {"downstream": 200}
        assert requests.get(f"{front.url}/manual", timeout=30).json() == {"downstream": 200}
        assert requests.get(f"{front.url}/ok", timeout=30).json() == {"downstream": 200}
        assert requests.get(f"{front.url}/attached", timeout=30).json() == {"downstream": 200}

    found = settle(clew, front, back, want=2)
    by_kind = {f["kind"]: f for f in found}
    assert sorted(by_kind) == ["context_lost_between_services", "context_lost_in_service"], json.dumps(found, indent=1)
    assert len(found) == 2, json.dumps(found, indent=1)

    inside = by_kind["context_lost_in_service"]
    assert inside["from_service"] == front.name
    assert inside["to_service"] == front.name
    assert inside["operation"] == "GET /broken"
    assert inside["count"] == CALLS
    assert 1 <= len(inside["example_trace_ids"]) <= CALLS
    assert "GET /broken" in inside["message"]

    between = by_kind["context_lost_between_services"]
    assert between["from_service"] == front.name
    assert between["to_service"] == back.name
    assert between["operation"] == "GET /work"
    assert between["count"] == CALLS
    assert between["message"] == f"context lost from {front.name} to {back.name} on GET /work: {CALLS} occurrences"

    # Nothing about the routes that carry the context.
    assert not any("/ok" in json.dumps(f) or "/attached" in json.dumps(f) for f in found)

    # The example trace of the in-service break shows the orphaned work is elsewhere: the /broken
    # trace holds no call to the back service, and the Jaeger API of a healthy trace has no warnings.
    example = inside["example_trace_ids"][0]
    t = requests.get(f"{clew.query_url}/api/traces/{example}").json()["data"][0]
    services = {p["serviceName"] for p in t["processes"].values()}
    assert services == {front.name}

    # The per-trace analysis of the new trace: its critical path runs through both services.
    new_trace = inside["example_new_trace_ids"][0]
    a = requests.get(f"{clew.query_url}/api/doctor/traces/{new_trace}").json()
    assert {c["service"] for c in a["critical_path"]} == {front.name, back.name}
    assert a["warnings"] == {}
    assert {s["service"] for s in a["services"]} == {front.name, back.name}

    # The live service graph pairs front's CLIENT spans with back's SERVER spans (the /broken,
    # /ok and /attached calls: the new traces of /broken still hold that hop).
    deadline = time.monotonic() + 10
    edge = None
    while time.monotonic() < deadline:
        g = requests.get(f"{clew.query_url}/api/doctor/service-graph").json()
        edge = next((e for e in g["edges"] if e["source"] == front.name and e["target"] == back.name), None)
        if edge and edge["requests"] >= 3 * CALLS:
            break
        time.sleep(0.3)
    assert edge is not None and edge["requests"] == 3 * CALLS, g
    assert edge["errors"] == 0
    assert {"id": front.name, "virtual": False} in g["nodes"]


def test_context_carried_reports_nothing(clew, apps):
    front, back = apps
    for _ in range(CALLS):
        assert requests.get(f"{front.url}/ok", timeout=30).json() == {"downstream": 200}
        assert requests.get(f"{front.url}/attached", timeout=30).json() == {"downstream": 200}
    wait_for_traces(clew, front.name, 2 * CALLS)
    time.sleep(1.0)
    report = doctor(clew)
    assert mine(report, front, back) == [], json.dumps(report, indent=1)
    assert report["traces_examined"] >= 2 * CALLS

    # Text output is readable.
    out = subprocess.run(
        [str(clew_bin()), "doctor", "--endpoint", clew.query_url, "--since", "10m", "--grace", "0s"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("examined ")
