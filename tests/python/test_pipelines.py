"""Pipelines with the real OpenTelemetry Python SDK as the client:

* redaction + the server-side baggage policy (examples/config/redaction.yaml): PII markers sent by
  the SDK are found in no byte of the data dir (WAL and blocks), and the API shows masked values,
  keyed pseudonyms and the Collector's summary attributes;
* routing (examples/config/routing.yaml): tenant `eu-*` goes to a second Clew over OTLP (its data
  dir holds the EU marker, not the other tenant's), `deployment.environment.name=dev` keeps ~1 %.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import yaml
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from clew_helpers import wait_until

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "config"


def _provider(clew, service: str, tenant: str | None = None, env: str | None = None) -> TracerProvider:
    attrs = {"service.name": service}
    if env:
        attrs["deployment.environment.name"] = env
    provider = TracerProvider(resource=Resource.create(attrs))
    headers = {"x-scope-orgid": tenant} if tenant else None
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=clew.grpc_endpoint, insecure=True, headers=headers))
    )
    return provider


def _files_with(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_redaction_and_baggage_policy_keep_pii_out_of_storage(clew_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("CLEW_REDACTION_KEY", "test-redaction-key-0123456789abcdef")
    monkeypatch.setenv("CLEW_BAGGAGE_SECRET", "test-baggage-secret-0123456789abcdef")
    config = tmp_path / "redaction.yaml"
    config.write_text((EXAMPLES / "redaction.yaml").read_text())
    clew = clew_factory(extra_args=["--config", str(config)])

    provider = _provider(clew, "checkout")
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("pay") as span:
        span.set_attribute("customer.email", "marker.7f3a@example.com")
        span.set_attribute("payment.card", "card 4111 1111 1111 1111 ok")
        span.set_attribute("api_key", "sk-MARKERSECRET-123")
        span.set_attribute("user.id", "raw-user-7f3a")  # from baggage (BaggageSpanProcessor)
        span.set_attribute("session.id", "sess-MARKER-drop")  # baggage, not allowed
        span.set_attribute("db.statement", "SELECT * FROM users WHERE email = 'marker.7f3a@example.com'")
        trace_id = format(span.get_span_context().trace_id, "032x")
    provider.shutdown()

    body = clew.wait_jaeger_trace(trace_id, 1)
    tags = {t["key"]: t["value"] for t in body["spans"][0]["tags"]}
    assert tags["customer.email"] == "****", tags
    assert "4111" not in tags["payment.card"]
    assert tags["api_key"] == "****"
    assert tags["user.id"].startswith("h1:") and "raw-user" not in tags["user.id"]
    assert "session.id" not in tags
    assert tags["db.statement"] == "SELECT * FROM users WHERE email = ?"
    assert int(tags["redaction.masked.count"]) >= 3

    assert clew.stop() == 0  # flush into blocks
    for marker in [b"marker.7f3a", b"4111 1111", b"MARKERSECRET", b"raw-user-7f3a", b"sess-MARKER"]:
        assert _files_with(clew.data_dir, marker) == [], marker


def test_routing_by_tenant_and_environment(clew_factory, tmp_path):
    eu_back = clew_factory()
    cfg = yaml.safe_load((EXAMPLES / "routing.yaml").read_text())
    cfg["exporters"]["otlp/eu"]["endpoint"] = eu_back.grpc_endpoint.replace("http://", "")
    config = tmp_path / "routing.yaml"
    config.write_text(yaml.safe_dump(cfg))
    front = clew_factory(extra_args=["--config", str(config)])

    eu_marker, us_marker = f"eu-{uuid.uuid4().hex[:8]}", f"us-{uuid.uuid4().hex[:8]}"
    ids = {}
    for tenant, marker in [("eu-west", eu_marker), ("us-east", us_marker)]:
        provider = _provider(front, f"svc-{marker}", tenant=tenant)
        with provider.get_tracer("t").start_as_current_span(f"op-{marker}") as span:
            ids[tenant] = format(span.get_span_context().trace_id, "032x")
        provider.shutdown()
    dev = _provider(front, "devsvc", tenant="us-east", env="dev")
    tracer = dev.get_tracer("t")
    for _ in range(300):
        with tracer.start_as_current_span("dev-op"):
            pass
    dev.shutdown()

    def found(server, tenant, trace_id) -> bool:
        r = server.get(f"/api/traces/{trace_id}", headers={"X-Scope-OrgID": tenant})
        return r.status_code == 200

    wait_until(lambda: found(eu_back, "eu-west", ids["eu-west"]), 30, "EU trace at the EU backend")
    assert found(front, "eu-west", ids["eu-west"]), "EU route also stores locally"
    assert found(front, "us-east", ids["us-east"])
    assert not found(eu_back, "us-east", ids["us-east"]), "other tenants never reach the EU backend"
    dev_traces = front.get_json(
        "/api/traces?service=devsvc&limit=1000&lookback=1h", headers={"X-Scope-OrgID": "us-east"}
    )["data"]
    assert len(dev_traces) <= 15, f"dev keeps about 1 %: {len(dev_traces)} of 300"

    # In storage, not only in API answers: the EU backend's files hold the EU marker only.
    assert eu_back.stop() == 0
    assert _files_with(eu_back.data_dir, eu_marker.encode())
    assert not _files_with(eu_back.data_dir, us_marker.encode())
