"""Helpers for the real-client integration tests: run the `clew` binary, talk to it, and normalise
OTLP data (protobuf or OTLP JSON) into one canonical form so that round trips can be compared exactly.
"""

from __future__ import annotations

import base64
import json
import os
import select
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]

# How long a span may take to become queryable after its export was acknowledged (issue: 1 s).
READ_YOUR_WRITES_S = 1.0


def clew_bin() -> Path:
    """The binary under test: $CLEW_BIN (relative to the repo root if relative), else target/debug/clew."""
    raw = os.environ.get("CLEW_BIN", "target/debug/clew")
    path = Path(raw)
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path


def run_doctor(clew, *extra: str) -> dict:
    """`clew doctor` (the CLI) over the last 10 minutes of `clew`, JSON report; no grace period, so
    traces are judged as soon as they are stored."""
    out = subprocess.run(
        [str(clew_bin()), "doctor", "--endpoint", clew.query_url, "--since", "10m", "--grace", "0s",
         "--format", "json", *extra],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_listening(cmd: list[str], log_path, port: int, what: str, timeout: float):
    """Starts `cmd` (output appended to `log_path`) and waits until it accepts connections on
    127.0.0.1:`port`; returns the process. Raises if it exits first or never listens."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} (log: {log_path})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise TimeoutError(f"{what} did not listen on 127.0.0.1:{port} within {timeout}s")


class ServerDied(RuntimeError):
    pass


class ClewServer:
    """One `clew serve` process on free loopback ports with its own data dir and log file."""

    def __init__(self, data_dir: Path, log_path: Path, extra_args: Iterable[str] = ()):
        self.data_dir = Path(data_dir)
        self.log_path = Path(log_path)
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None
        self.starts = 0
        self._pick_ports()

    def _pick_ports(self) -> None:
        ports: set[int] = set()
        while len(ports) < 6:
            ports.add(free_port())
        (self.grpc_port, self.http_port, self.zipkin_port, self.query_port, self.sampling_port,
         self.tempo_port) = sorted(ports)

    # -- addresses ---------------------------------------------------------------------------------
    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def zipkin_url(self) -> str:
        return f"http://127.0.0.1:{self.zipkin_port}"

    @property
    def query_url(self) -> str:
        return f"http://127.0.0.1:{self.query_port}"

    @property
    def sampling_url(self) -> str:
        return f"http://127.0.0.1:{self.sampling_port}"

    @property
    def tempo_url(self) -> str:
        """The Tempo HTTP API (Grafana's Tempo data source)."""
        return f"http://127.0.0.1:{self.tempo_port}"

    # -- lifecycle ---------------------------------------------------------------------------------
    def command(self) -> list[str]:
        return [
            str(clew_bin()),
            "serve",
            "--data-dir", str(self.data_dir),
            "--otlp-grpc-endpoint", self.grpc_endpoint,
            "--otlp-http-endpoint", f"127.0.0.1:{self.http_port}",
            "--zipkin-endpoint", f"127.0.0.1:{self.zipkin_port}",
            "--query-endpoint", f"127.0.0.1:{self.query_port}",
            "--sampling-endpoint", f"127.0.0.1:{self.sampling_port}",
            "--tempo-endpoint", f"127.0.0.1:{self.tempo_port}",
            *self.extra_args,
        ]

    def start(self, timeout: float = 30.0) -> "ClewServer":
        binary = clew_bin()
        if not binary.exists():
            raise FileNotFoundError(f"clew binary not found at {binary} (set CLEW_BIN or run cargo build)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(f"\n===== start #{self.starts}: {' '.join(self.command())}\n".encode())
        log.flush()
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        env.setdefault("RUST_BACKTRACE", "1")
        env.setdefault("NO_COLOR", "1")  # plain log files
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=self.data_dir.parent, env=env,
        )
        log.close()
        self.returncode = None
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerDied(
                    f"clew serve exited with code {self.proc.returncode} before /ready; log:\n{self.log_tail()}"
                )
            try:
                r = requests.get(f"{self.query_url}/ready", timeout=1)
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}: {r.text[:200]}"
            except requests.RequestException as e:
                last = repr(e)
            time.sleep(0.05)
        raise TimeoutError(f"clew serve not ready after {timeout}s (last: {last}); log:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Sends `sig` and waits for exit; returns the exit code (negative: killed by that signal)."""
        assert self.proc is not None, "server not started"
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.returncode = self.proc.returncode
                raise TimeoutError(
                    f"clew serve did not exit within {timeout}s of signal {sig}; killed. log:\n{self.log_tail()}"
                )
        self.returncode = self.proc.returncode
        return self.returncode

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.returncode = self.proc.returncode

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- queries -----------------------------------------------------------------------------------
    def get(self, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 10)
        return requests.get(f"{self.query_url}{path}", **kw)

    def get_json(self, path: str, expect: int = 200, **kw) -> Any:
        r = self.get(path, **kw)
        assert r.status_code == expect, f"GET {path} -> {r.status_code}: {r.text[:500]}"
        try:
            return r.json()
        except ValueError:
            raise AssertionError(f"GET {path}: body is not JSON: {r.text[:500]!r}")

    def trace_v3(self, trace_id_hex: str, headers: dict | None = None) -> requests.Response:
        return self.get(f"/api/v3/traces/{trace_id_hex}", headers=headers or {})

    def wait_trace_v3(
        self,
        trace_id_hex: str,
        spans: int,
        timeout: float = 10.0,
        headers: dict | None = None,
    ) -> list[dict]:
        """Polls api_v3 until the trace has at least `spans` spans; returns its resourceSpans."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            r = self.trace_v3(trace_id_hex, headers)
            last = f"HTTP {r.status_code}: {r.text[:300]}"
            if r.status_code == 200:
                rs = v3_resource_spans(r.json())
                if count_spans(rs) >= spans:
                    return rs
                last = f"{count_spans(rs)} of {spans} spans"
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"trace {trace_id_hex} not complete via GET /api/v3/traces/{trace_id_hex} after {timeout}s "
                    f"(last: {last})"
                )
            time.sleep(0.05)

    def wait_jaeger_trace(self, trace_id_hex: str, spans: int, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            r = self.get(f"/api/traces/{trace_id_hex}")
            last = f"HTTP {r.status_code}: {r.text[:300]}"
            if r.status_code == 200:
                data = r.json().get("data") or []
                if data and len(data[0].get("spans", [])) >= spans:
                    assert len(data) == 1, f"/api/traces/{trace_id_hex} returned {len(data)} traces"
                    return data[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"trace {trace_id_hex} not found via GET /api/traces/{trace_id_hex}: {last}")
            time.sleep(0.05)


def v3_resource_spans(body: Any) -> list[dict]:
    assert isinstance(body, dict) and "result" in body, f"api_v3 body lacks 'result': {str(body)[:300]}"
    result = body["result"]
    assert isinstance(result, dict), f"api_v3 result is not an object: {str(result)[:300]}"
    return result.get("resourceSpans") or []


def count_spans(resource_spans: list[dict]) -> int:
    return sum(len(ss.get("spans") or []) for rs in resource_spans for ss in rs.get("scopeSpans") or [])


def wait_until(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------------------------------
# Canonical form of OTLP data.
#
# canonical value:    ("string", s) | ("bool", b) | ("int", i) | ("double", f) | ("bytes", hex)
#                     | ("array", [values]) | ("kvlist", {key: value}) | ("empty", None)
# canonical span:     dict with every OTLP Span field (ids as lowercase hex, defaults filled in),
#                     plus "resource" {attributes, dropped_attributes_count} and "scope" {name,
#                     version, attributes, dropped_attributes_count}.
# --------------------------------------------------------------------------------------------------


def _canon_value_pb(v) -> tuple:
    kind = v.WhichOneof("value")
    if kind is None:
        return ("empty", None)
    if kind == "string_value":
        return ("string", v.string_value)
    if kind == "bool_value":
        return ("bool", v.bool_value)
    if kind == "int_value":
        return ("int", v.int_value)
    if kind == "double_value":
        return ("double", v.double_value)
    if kind == "bytes_value":
        return ("bytes", v.bytes_value.hex())
    if kind == "array_value":
        return ("array", [_canon_value_pb(x) for x in v.array_value.values])
    if kind == "kvlist_value":
        return ("kvlist", _canon_attrs_pb(v.kvlist_value.values))
    raise ValueError(f"unsupported AnyValue kind {kind}")


def _canon_attrs_pb(kvs) -> dict:
    out = {}
    for kv in kvs:
        assert kv.key not in out, f"duplicate attribute key {kv.key!r}"
        out[kv.key] = _canon_value_pb(kv.value)
    return out


def canon_from_proto(resource_spans) -> dict[str, dict]:
    """span_id hex → canonical span, from protobuf ResourceSpans messages."""
    out = {}
    for rs in resource_spans:
        resource = {
            "attributes": _canon_attrs_pb(rs.resource.attributes),
            "dropped_attributes_count": rs.resource.dropped_attributes_count,
        }
        for ss in rs.scope_spans:
            scope = {
                "name": ss.scope.name,
                "version": ss.scope.version,
                "attributes": _canon_attrs_pb(ss.scope.attributes),
                "dropped_attributes_count": ss.scope.dropped_attributes_count,
            }
            for s in ss.spans:
                sid = s.span_id.hex()
                out[sid] = {
                    "resource": resource,
                    "scope": scope,
                    "trace_id": s.trace_id.hex(),
                    "span_id": sid,
                    "parent_span_id": s.parent_span_id.hex(),
                    "trace_state": s.trace_state,
                    "flags": s.flags,
                    "name": s.name,
                    "kind": s.kind,
                    "start_time_unix_nano": s.start_time_unix_nano,
                    "end_time_unix_nano": s.end_time_unix_nano,
                    "attributes": _canon_attrs_pb(s.attributes),
                    "dropped_attributes_count": s.dropped_attributes_count,
                    "events": [
                        {
                            "time_unix_nano": e.time_unix_nano,
                            "name": e.name,
                            "attributes": _canon_attrs_pb(e.attributes),
                            "dropped_attributes_count": e.dropped_attributes_count,
                        }
                        for e in s.events
                    ],
                    "dropped_events_count": s.dropped_events_count,
                    "links": [
                        {
                            "trace_id": l.trace_id.hex(),
                            "span_id": l.span_id.hex(),
                            "trace_state": l.trace_state,
                            "attributes": _canon_attrs_pb(l.attributes),
                            "dropped_attributes_count": l.dropped_attributes_count,
                            "flags": l.flags,
                        }
                        for l in s.links
                    ],
                    "dropped_links_count": s.dropped_links_count,
                    "status": {"code": s.status.code, "message": s.status.message},
                }
    return out


_VALUE_KEYS = {"stringValue", "boolValue", "intValue", "doubleValue", "arrayValue", "kvlistValue", "bytesValue"}


def _json_int(v: Any, what: str) -> int:
    """OTLP JSON int64/uint64/fixed64: a decimal string (or, leniently for readers, a JSON number)."""
    if isinstance(v, bool):
        raise AssertionError(f"{what}: expected an integer, got {v!r}")
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        try:
            return int(v, 10)
        except ValueError:
            pass
    raise AssertionError(f"{what}: expected an integer (or decimal string), got {v!r}")


def _json_hex(v: Any, nbytes: int, what: str) -> str:
    if v in (None, ""):
        return ""
    assert isinstance(v, str), f"{what}: expected a hex string, got {v!r}"
    try:
        raw = bytes.fromhex(v)
    except ValueError:
        raise AssertionError(f"{what}: not hex (OTLP JSON encodes ids as hex): {v!r}")
    assert len(raw) == nbytes, f"{what}: expected {nbytes} bytes, got {len(raw)}: {v!r}"
    return raw.hex()


def _canon_value_json(v: Any, what: str) -> tuple:
    assert isinstance(v, dict), f"{what}: AnyValue must be an object, got {v!r}"
    keys = set(v) & _VALUE_KEYS
    unknown = set(v) - _VALUE_KEYS
    assert not unknown, f"{what}: unknown AnyValue keys {sorted(unknown)} in {v!r}"
    if not keys:
        return ("empty", None)
    assert len(keys) == 1, f"{what}: more than one value in {v!r}"
    (k,) = keys
    x = v[k]
    if k == "stringValue":
        assert isinstance(x, str), f"{what}: stringValue {x!r}"
        return ("string", x)
    if k == "boolValue":
        assert isinstance(x, bool), f"{what}: boolValue {x!r}"
        return ("bool", x)
    if k == "intValue":
        return ("int", _json_int(x, what))
    if k == "doubleValue":
        if isinstance(x, str) and x in ("NaN", "Infinity", "-Infinity"):
            return ("double", float(x.replace("Infinity", "inf")))
        assert isinstance(x, (int, float)) and not isinstance(x, bool), f"{what}: doubleValue {x!r}"
        return ("double", float(x))
    if k == "bytesValue":
        return ("bytes", base64.b64decode(x).hex())
    if k == "arrayValue":
        values = (x or {}).get("values") or []
        return ("array", [_canon_value_json(e, f"{what}[{i}]") for i, e in enumerate(values)])
    if k == "kvlistValue":
        return ("kvlist", canon_attrs_json((x or {}).get("values") or [], what))
    raise AssertionError(k)


def canon_attrs_json(kvs: list | None, what: str = "attributes") -> dict:
    out = {}
    for kv in kvs or []:
        key = kv.get("key")
        assert isinstance(key, str), f"{what}: attribute without key: {kv!r}"
        assert key not in out, f"{what}: duplicate attribute key {key!r}"
        out[key] = _canon_value_json(kv.get("value") or {}, f"{what}.{key}")
    return out


def _kind_json(v: Any, what: str) -> int:
    assert isinstance(v, int) and not isinstance(v, bool), f"{what}: OTLP JSON enums are integers, got {v!r}"
    return v


def canon_from_otlp_json(resource_spans: list[dict]) -> dict[str, dict]:
    """span_id hex → canonical span, from OTLP JSON resourceSpans (e.g. an api_v3 response)."""
    out = {}
    for rs in resource_spans:
        res = rs.get("resource") or {}
        resource = {
            "attributes": canon_attrs_json(res.get("attributes"), "resource.attributes"),
            "dropped_attributes_count": _json_int(res.get("droppedAttributesCount", 0), "resource.dropped"),
        }
        for ss in rs.get("scopeSpans") or []:
            sc = ss.get("scope") or {}
            scope = {
                "name": sc.get("name", ""),
                "version": sc.get("version", ""),
                "attributes": canon_attrs_json(sc.get("attributes"), "scope.attributes"),
                "dropped_attributes_count": _json_int(sc.get("droppedAttributesCount", 0), "scope.dropped"),
            }
            for s in ss.get("spans") or []:
                sid = _json_hex(s.get("spanId"), 8, "spanId")
                w = f"span {sid}"
                status = s.get("status") or {}
                out[sid] = {
                    "resource": resource,
                    "scope": scope,
                    "trace_id": _json_hex(s.get("traceId"), 16, f"{w}.traceId"),
                    "span_id": sid,
                    "parent_span_id": _json_hex(s.get("parentSpanId"), 8, f"{w}.parentSpanId"),
                    "trace_state": s.get("traceState", ""),
                    "flags": _json_int(s.get("flags", 0), f"{w}.flags"),
                    "name": s.get("name", ""),
                    "kind": _kind_json(s.get("kind", 0), f"{w}.kind"),
                    "start_time_unix_nano": _json_int(s.get("startTimeUnixNano", 0), f"{w}.startTimeUnixNano"),
                    "end_time_unix_nano": _json_int(s.get("endTimeUnixNano", 0), f"{w}.endTimeUnixNano"),
                    "attributes": canon_attrs_json(s.get("attributes"), f"{w}.attributes"),
                    "dropped_attributes_count": _json_int(s.get("droppedAttributesCount", 0), f"{w}.dropped"),
                    "events": [
                        {
                            "time_unix_nano": _json_int(e.get("timeUnixNano", 0), f"{w}.event.time"),
                            "name": e.get("name", ""),
                            "attributes": canon_attrs_json(e.get("attributes"), f"{w}.event.attributes"),
                            "dropped_attributes_count": _json_int(e.get("droppedAttributesCount", 0), f"{w}.event"),
                        }
                        for e in s.get("events") or []
                    ],
                    "dropped_events_count": _json_int(s.get("droppedEventsCount", 0), f"{w}.droppedEvents"),
                    "links": [
                        {
                            "trace_id": _json_hex(l.get("traceId"), 16, f"{w}.link.traceId"),
                            "span_id": _json_hex(l.get("spanId"), 8, f"{w}.link.spanId"),
                            "trace_state": l.get("traceState", ""),
                            "attributes": canon_attrs_json(l.get("attributes"), f"{w}.link.attributes"),
                            "dropped_attributes_count": _json_int(l.get("droppedAttributesCount", 0), f"{w}.link"),
                            "flags": _json_int(l.get("flags", 0), f"{w}.link.flags"),
                        }
                        for l in s.get("links") or []
                    ],
                    "dropped_links_count": _json_int(s.get("droppedLinksCount", 0), f"{w}.droppedLinks"),
                    "status": {
                        "code": _kind_json(status.get("code", 0), f"{w}.status.code"),
                        "message": status.get("message", ""),
                    },
                }
    return out


def assert_same_spans(expected: dict[str, dict], actual: dict[str, dict]) -> None:
    """Exact comparison of canonical spans, one span at a time for readable diffs."""
    assert sorted(actual) == sorted(expected), (
        f"span ids differ: missing {sorted(set(expected) - set(actual))}, "
        f"unexpected {sorted(set(actual) - set(expected))}"
    )
    for sid, exp in expected.items():
        got = actual[sid]
        for field in exp:
            assert got[field] == exp[field], f"span {sid} ({exp['name']}): field {field!r} differs"


# --------------------------------------------------------------------------------------------------
# Raw HTTP helpers (for requests that `requests` cannot make, e.g. an oversized body).
# --------------------------------------------------------------------------------------------------


def post_oversized(url_host: str, port: int, path: str, size: int, content_type: str) -> tuple[int, bytes]:
    """POSTs a body of `size` bytes announced by Content-Length, sending it only as long as the server
    has not answered yet; returns (status, body) of the server's answer."""
    sock = socket.create_connection((url_host, port), timeout=30)
    try:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {url_host}:{port}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {size}\r\nConnection: close\r\n\r\n"
        ).encode()
        sock.sendall(head)
        chunk = b"\x00" * 65536
        sent = 0
        deadline = time.monotonic() + 60
        while sent < size and time.monotonic() < deadline:
            r, _, _ = select.select([sock], [], [], 0.2 if sent == 0 else 0)
            if r:
                break  # the server has answered (or closed)
            try:
                n = min(len(chunk), size - sent)
                sock.sendall(chunk[:n])
                sent += n
            except (BrokenPipeError, ConnectionResetError):
                break
        data = b""
        try:
            while True:
                part = sock.recv(65536)
                if not part:
                    break
                data += part
                if b"\r\n\r\n" in data and _complete(data):
                    break
        except (ConnectionResetError, socket.timeout):
            pass
    finally:
        sock.close()
    if not data:
        raise AssertionError(f"POST {path} with a {size}-byte body: connection closed without a response")
    status_line = data.split(b"\r\n", 1)[0].decode(errors="replace")
    parts = status_line.split(" ")
    assert len(parts) >= 2 and parts[0].startswith("HTTP/"), f"bad status line {status_line!r}"
    body = data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else b""
    return int(parts[1]), body


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            return len(body) >= int(v.strip())
    return False


def jdump(x: Any) -> str:
    return json.dumps(x, indent=1, sort_keys=True)[:3000]
