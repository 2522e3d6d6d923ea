"""Authentication and tenant isolation with the OpenTelemetry Python SDK's own OTLP exporters.

The server runs examples/config/auth-tokens.yaml's settings (bearer tokens on every listener) with
a tokens file written here. The SDK sends `authorization: Bearer <token>` through the exporters'
`headers=`, over gRPC and HTTP/protobuf:

* the data lands in the token's tenant, also when the SDK sets an `X-Scope-OrgID` naming another of
  the token's tenants (the header chooses among them) or none;
* an `X-Scope-OrgID` naming a tenant the token may not use is refused (PERMISSION_DENIED / 403),
  and nothing lands there;
* no token or a wrong token is refused (UNAUTHENTICATED / 401);
* reads see only the token's tenant.
"""

from __future__ import annotations

import hashlib
import shutil
import uuid

import pytest
import requests
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from clew_helpers import REPO_ROOT, wait_until

# token → tenants; written hashed into the tokens file.
TOKENS = {
    "py-token-team-a": ["team-a", "team-a-staging"],
    "py-token-team-b": ["team-b"],
}
TOKEN_A, TOKEN_B = "py-token-team-a", "py-token-team-b"


def sha256(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`clew serve` with the example auth-tokens.yaml (copied next to a tokens file of our own)."""
    from clew_helpers import ClewServer

    base = tmp_path_factory.mktemp("clew-auth")
    (base / "auth").mkdir()
    lines = [f"- {{name: t{i}, sha256: {sha256(tok)}, tenants: [{', '.join(ts)}]}}" for i, (tok, ts) in enumerate(TOKENS.items())]
    (base / "auth" / "tokens.yaml").write_text("\n".join(lines) + "\n")
    shutil.copy(REPO_ROOT / "examples" / "config" / "auth-tokens.yaml", base / "clew.yaml")
    s = ClewServer(base / "data", base / "clew.log", ["--config", str(base / "clew.yaml")]).start()
    yield s
    assert s.stop() == 0, f"clew serve did not exit cleanly; log:\n{s.log_tail(40)}"


def spans_for(service: str):
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("pytest.auth")
    with tracer.start_as_current_span(f"GET /{service}") as root:
        root.set_attribute("marker", service)
        with tracer.start_as_current_span("child"):
            pass
    provider.shutdown()
    spans = memory.get_finished_spans()
    return spans, format(root.get_span_context().trace_id, "032x")


def exporter(server, transport: str, headers: dict):
    if transport == "grpc":
        return GrpcExporter(endpoint=server.grpc_endpoint, insecure=True, timeout=5, headers=headers)
    return HttpExporter(endpoint=f"{server.http_url}/v1/traces", timeout=5, headers=headers)


def services(server, token: str, tenant: str | None = None) -> list[str]:
    headers = {"Authorization": f"Bearer {token}"}
    if tenant:
        headers["X-Scope-OrgID"] = tenant
    r = requests.get(f"{server.query_url}/api/services", headers=headers, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["data"] or []


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_sdk_data_lands_in_the_token_tenant(server, transport):
    run = uuid.uuid4().hex[:8]
    cases = [
        # (SDK headers, tenant the data must land in)
        ({"authorization": f"Bearer {TOKEN_A}"}, "team-a"),
        # The SDK names the token's other tenant: the header chooses among the token's tenants.
        ({"authorization": f"Bearer {TOKEN_A}", "x-scope-orgid": "team-a-staging"}, "team-a-staging"),
        ({"authorization": f"Bearer {TOKEN_B}", "x-scope-orgid": "team-b"}, "team-b"),
    ]
    for i, (headers, tenant) in enumerate(cases):
        svc = f"py-{transport}-{run}-{i}"
        spans, trace_id = spans_for(svc)
        exp = exporter(server, transport, headers)
        assert exp.export(spans) == SpanExportResult.SUCCESS, f"{transport} export with {headers}"
        exp.shutdown()
        token = headers["authorization"].split()[1]
        wait_until(lambda: svc in services(server, token, tenant), 5, f"{svc} in {tenant}")
        # Nowhere else: not in the token's other tenant, not in another token's tenant.
        for other_token, others in TOKENS.items():
            for other in others:
                if other != tenant:
                    assert svc not in services(server, other_token, other), f"{svc} leaked into {other}"
        r = requests.get(
            f"{server.query_url}/api/traces/{trace_id}",
            headers={"Authorization": f"Bearer {TOKEN_B if tenant != 'team-b' else TOKEN_A}"},
            timeout=5,
        )
        assert r.status_code == 404 and svc not in r.text, "another tenant's token reads the trace"


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_sdk_cannot_write_into_another_tenant(server, transport):
    svc = f"py-intruder-{transport}-{uuid.uuid4().hex[:8]}"
    for headers in [
        # A tenant the token may not use: PERMISSION_DENIED / 403.
        {"authorization": f"Bearer {TOKEN_A}", "x-scope-orgid": "team-b"},
        # No token, a wrong token: UNAUTHENTICATED / 401.
        {"x-scope-orgid": "team-b"},
        {"authorization": "Bearer not-a-token", "x-scope-orgid": "team-b"},
    ]:
        spans, _ = spans_for(svc)
        exp = exporter(server, transport, headers)
        assert exp.export(spans) == SpanExportResult.FAILURE, f"{transport} export with {headers} accepted"
        exp.shutdown()
    for token, tenants in TOKENS.items():
        for t in tenants:
            assert svc not in services(server, token, t)


def test_refusals_have_the_right_status(server):
    url = f"{server.http_url}/v1/traces"
    body = b""
    h = {"Content-Type": "application/x-protobuf"}
    r = requests.post(url, data=body, headers=h, timeout=5)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == 'Bearer realm="clew"'
    r = requests.post(url, data=body, headers={**h, "Authorization": "Bearer nope"}, timeout=5)
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    r = requests.post(url, data=body, headers={**h, "Authorization": f"Bearer {TOKEN_A}", "X-Scope-OrgID": "team-b"}, timeout=5)
    assert r.status_code == 403 and "error" in r.json()
    # The query port: pages and readiness open, the API not.
    assert requests.get(f"{server.query_url}/ready", timeout=5).status_code == 200
    assert requests.get(f"{server.query_url}/", timeout=5).status_code == 200
    assert requests.get(f"{server.query_url}/api/services", timeout=5).status_code == 401
