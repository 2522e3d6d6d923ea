"""TLS and mutual TLS with real clients against the real `clew serve`: the OpenTelemetry Python SDK's
OTLP gRPC exporter (`grpc.ssl_channel_credentials(root, key, chain)`) and OTLP HTTP exporter
(`certificate_file`, `client_key_file`, `client_certificate_file`), `requests`, and curl with
--cacert/--cert/--key. Every listener requires a client certificate signed by the test CA; a missing,
foreign or expired one is refused. Certificates are made at test time with `cryptography`."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import grpc
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from clew_helpers import ClewServer, count_spans, v3_resource_spans

# --------------------------------------------------------------------------------------------------
# Certificates


def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class Ca:
    def __init__(self, name: str):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.timezone.utc)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def leaf(self, cn: str, dns: list[str], ips: list[str] = (), client: bool = False, expired: bool = False):
        """(certificate PEM, key PEM)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        start, end = (
            (now - dt.timedelta(days=400), now - dt.timedelta(days=35)) if expired else (now - dt.timedelta(days=1), now + dt.timedelta(days=30))
        )
        sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


class Files:
    """The certificates of one test module, written to files."""

    def __init__(self, base: Path):
        self.dir = base
        self.ca = Ca("Clew pytest CA")
        self.ca_file = self._write("ca.pem", self.ca.pem)
        cert, key = self.ca.leaf("localhost", ["localhost"], ["127.0.0.1"])
        self.server_cert = self._write("server.pem", cert)
        self.server_key = self._write("server-key.pem", key)
        self.client_cert, self.client_key = self._pair("client", self.ca.leaf("python-sdk", ["python-sdk.test"], client=True))
        self.foreign_cert, self.foreign_key = self._pair(
            "foreign", Ca("Mallory CA").leaf("python-sdk", ["python-sdk.test"], client=True)
        )
        self.expired_cert, self.expired_key = self._pair(
            "expired", self.ca.leaf("python-sdk", ["python-sdk.test"], client=True, expired=True)
        )
        self.other_ca_file = self._write("other-ca.pem", Ca("Other CA").pem)

    def _write(self, name: str, data: bytes) -> str:
        p = self.dir / name
        p.write_bytes(data)
        return str(p)

    def _pair(self, name: str, pair) -> tuple[str, str]:
        return self._write(f"{name}.pem", pair[0]), self._write(f"{name}-key.pem", pair[1])


# --------------------------------------------------------------------------------------------------
# A server with mutual TLS on every listener


class TlsClewServer(ClewServer):
    """`clew serve` whose listeners all require client certificates; queried over HTTPS."""

    def __init__(self, data_dir: Path, log_path: Path, files: Files, config: Path):
        super().__init__(data_dir, log_path, ["--config", str(config)])
        self.files = files

    @property
    def query_url(self) -> str:
        return f"https://localhost:{self.query_port}"

    @property
    def http_url(self) -> str:
        return f"https://localhost:{self.http_port}"

    @property
    def zipkin_url(self) -> str:
        return f"https://localhost:{self.zipkin_port}"

    def tls_kw(self) -> dict:
        return {"verify": self.files.ca_file, "cert": (self.files.client_cert, self.files.client_key)}

    def get(self, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 10)
        for k, v in self.tls_kw().items():
            kw.setdefault(k, v)
        return requests.get(f"{self.query_url}{path}", **kw)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"clew serve exited with {self.proc.returncode}; log:\n{self.log_tail()}")
            try:
                if self.get("/ready", timeout=1).status_code == 200:
                    return
            except requests.RequestException as e:
                last = repr(e)
            time.sleep(0.05)
        raise TimeoutError(f"not ready over HTTPS after {timeout}s ({last}); log:\n{self.log_tail()}")


@pytest.fixture(scope="module")
def tls_clew(tmp_path_factory):
    base = tmp_path_factory.mktemp("clew-tls")
    files = Files(base)
    tls = (
        "{cert_file: server.pem, key_file: server-key.pem, client_ca_file: ca.pem}"
    )
    config = base / "clew.yaml"
    # Relative certificate paths: resolved against the config file's folder.
    config.write_text(
        f"""receivers:
  otlp:
    protocols:
      grpc: {{endpoint: 127.0.0.1:4317, tls: {tls}}}
      http: {{endpoint: 127.0.0.1:4318, tls: {tls}}}
  zipkin: {{endpoint: 127.0.0.1:9411, tls: {tls}}}
query: {{endpoint: 127.0.0.1:16686, tls: {tls}}}
extensions:
  jaeger_remote_sampling:
    http: {{endpoint: 127.0.0.1:5778, tls: {tls}}}
"""
    )
    server = TlsClewServer(base / "data", base / "clew.log", files, config).start()
    yield server
    server.stop()
    assert server.returncode == 0, server.log_tail()


def make_spans(service: str):
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("pytest.tls")
    with tracer.start_as_current_span("GET /secure") as root:
        with tracer.start_as_current_span("SELECT secrets"):
            pass
    provider.shutdown()
    return memory.get_finished_spans(), f"{root.get_span_context().trace_id:032x}"


def wait_spans(server: TlsClewServer, trace_id: str, n: int, timeout: float = 10.0) -> list:
    deadline = time.monotonic() + timeout
    while True:
        r = server.get(f"/api/v3/traces/{trace_id}")
        if r.status_code == 200 and count_spans(v3_resource_spans(r.json())) >= n:
            return v3_resource_spans(r.json())
        assert time.monotonic() < deadline, f"trace {trace_id} not found over HTTPS: {r.status_code} {r.text[:200]}"
        time.sleep(0.05)


def read(p: str) -> bytes:
    return Path(p).read_bytes()


# --------------------------------------------------------------------------------------------------


def test_grpc_exporter_with_client_certificate(tls_clew):
    f = tls_clew.files
    spans, trace_id = make_spans(f"py-grpc-mtls-{uuid.uuid4().hex[:6]}")
    exporter = GrpcExporter(
        endpoint=f"localhost:{tls_clew.grpc_port}",
        credentials=grpc.ssl_channel_credentials(
            root_certificates=read(f.ca_file),
            private_key=read(f.client_key),
            certificate_chain=read(f.client_cert),
        ),
        timeout=10,
    )
    try:
        assert exporter.export(spans) == SpanExportResult.SUCCESS, tls_clew.log_tail()
    finally:
        exporter.shutdown()
    rs = wait_spans(tls_clew, trace_id, 2)
    names = sorted(s["name"] for r in rs for ss in r["scopeSpans"] for s in ss["spans"])
    assert names == ["GET /secure", "SELECT secrets"]


def _grpc_export(server: TlsClewServer, root: str, key: str | None, chain: str | None):
    creds = grpc.ssl_channel_credentials(
        root_certificates=read(root),
        private_key=read(key) if key else None,
        certificate_chain=read(chain) if chain else None,
    )
    with grpc.secure_channel(f"localhost:{server.grpc_port}", creds) as ch:
        stub = trace_service_pb2_grpc.TraceServiceStub(ch)
        return stub.Export(trace_service_pb2.ExportTraceServiceRequest(), timeout=5)


@pytest.mark.parametrize("case", ["no-client-cert", "foreign-ca", "expired", "server-not-trusted"])
def test_grpc_refuses_bad_certificates(tls_clew, case):
    f = tls_clew.files
    root, key, chain = {
        "no-client-cert": (f.ca_file, None, None),
        "foreign-ca": (f.ca_file, f.foreign_key, f.foreign_cert),
        "expired": (f.ca_file, f.expired_key, f.expired_cert),
        "server-not-trusted": (f.other_ca_file, f.client_key, f.client_cert),
    }[case]
    with pytest.raises(grpc.RpcError) as e:
        _grpc_export(tls_clew, root, key, chain)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value
    # The good certificate on the same port works.
    _grpc_export(tls_clew, f.ca_file, f.client_key, f.client_cert)


def test_http_exporter_with_client_certificate(tls_clew, monkeypatch):
    f = tls_clew.files
    # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's `verify`, so with
    # either set the exporter's `certificate_file` would be ignored (psf/requests#3829).
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    spans, trace_id = make_spans(f"py-http-mtls-{uuid.uuid4().hex[:6]}")
    exporter = HttpExporter(
        endpoint=f"{tls_clew.http_url}/v1/traces",
        certificate_file=f.ca_file,
        client_key_file=f.client_key,
        client_certificate_file=f.client_cert,
        timeout=10,
    )
    try:
        assert exporter.export(spans) == SpanExportResult.SUCCESS, tls_clew.log_tail()
    finally:
        exporter.shutdown()
    wait_spans(tls_clew, trace_id, 2)


@pytest.mark.parametrize("case", ["no-client-cert", "foreign-ca", "expired"])
def test_https_refuses_bad_client_certificates(tls_clew, case):
    f = tls_clew.files
    cert = {
        "no-client-cert": None,
        "foreign-ca": (f.foreign_cert, f.foreign_key),
        "expired": (f.expired_cert, f.expired_key),
    }[case]
    for url in (f"{tls_clew.query_url}/api/services", f"{tls_clew.sampling_url.replace('http://', 'https://')}/sampling?service=a"):
        with pytest.raises(requests.exceptions.RequestException):
            requests.get(url, verify=f.ca_file, cert=cert, timeout=5)
    with pytest.raises(requests.exceptions.RequestException):
        requests.post(
            f"{tls_clew.http_url}/v1/traces", data=b"", verify=f.ca_file, cert=cert, timeout=5,
            headers={"content-type": "application/x-protobuf"},
        )


def _curl(*args: str) -> subprocess.CompletedProcess:
    curl = shutil.which("curl")
    assert curl, "curl is needed for this test (Debian: apt-get install curl)"
    return subprocess.run([curl, "-sS", "--max-time", "10", *args], capture_output=True, text=True)


def test_curl_over_mtls(tls_clew):
    f = tls_clew.files
    mtls = ["--cacert", f.ca_file, "--cert", f.client_cert, "--key", f.client_key]
    trace_id = uuid.uuid4().hex
    now = time.time_ns()
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "curl-mtls"}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": "0102030405060708",
                                "name": "curl span",
                                "kind": 2,
                                "startTimeUnixNano": str(now),
                                "endTimeUnixNano": str(now + 1_000_000),
                            }
                        ]
                    }
                ],
            }
        ]
    }
    r = _curl(
        *mtls, "-w", "%{http_code}", "-o", "/dev/null", "-H", "content-type: application/json",
        "--data-binary", json.dumps(body), f"{tls_clew.http_url}/v1/traces",
    )
    assert r.returncode == 0 and r.stdout == "200", (r.returncode, r.stdout, r.stderr)
    # Zipkin v2 over mutual TLS.
    zipkin = [{
        "traceId": uuid.uuid4().hex, "id": "0a0b0c0d0e0f0102", "name": "zipkin over curl",
        "timestamp": now // 1000, "duration": 1000, "localEndpoint": {"serviceName": "curl-zipkin"},
    }]
    r = _curl(
        *mtls, "-w", "%{http_code}", "-o", "/dev/null", "-H", "content-type: application/json",
        "--data-binary", json.dumps(zipkin), f"{tls_clew.zipkin_url}/api/v2/spans",
    )
    assert r.returncode == 0 and r.stdout == "202", (r.returncode, r.stdout, r.stderr)
    rs = wait_spans(tls_clew, trace_id, 1)
    assert rs[0]["scopeSpans"][0]["spans"][0]["name"] == "curl span"
    # The query API over HTTP/2 (ALPN) and HTTP/1.1.
    for version in ("--http2", "--http1.1"):
        r = _curl(*mtls, version, "-w", "\n%{http_version}", f"{tls_clew.query_url}/api/traces/{trace_id}")
        assert r.returncode == 0, r.stderr
        text, proto = r.stdout.rsplit("\n", 1)
        assert proto == ("2" if version == "--http2" else "1.1")
        assert json.loads(text)["data"][0]["traceID"] == trace_id
    # Refused without a client certificate (curl: 56, "certificate required" alert) and when the
    # server's CA is not trusted (60).
    r = _curl("--cacert", f.ca_file, f"{tls_clew.query_url}/api/services")
    assert r.returncode != 0, r.stdout
    r = _curl("--cacert", f.other_ca_file, "--cert", f.client_cert, "--key", f.client_key, f"{tls_clew.query_url}/api/services")
    assert r.returncode == 60, (r.returncode, r.stderr)
