"""A legacy HTTP service that knows nothing of OpenTelemetry (tests/python/test_proxy.py).

Standard library only, as an old service would be: it logs each request with its X-Request-ID,
echoes that header in the response, and on `GET /orders/<id>` calls `--downstream`/work with
urllib, passing the X-Request-ID on (the one habit that lets a sidecar correlate its calls).
No trace header is read or written here.

Run as `python app.py --port PORT --downstream URL`.
"""

from __future__ import annotations

import argparse
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    downstream = ""
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args) -> None:  # one line per request, like an access log
        sys.stderr.write("legacy-app %s rid=%s\n" % (fmt % args, self.headers.get("X-Request-ID", "-")))

    def _send(self, code: int, body: bytes) -> None:
        self.send_response(code)
        rid = self.headers.get("X-Request-ID")
        if rid:
            self.send_header("X-Request-ID", rid)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path.startswith("/orders/"):
            req = urllib.request.Request(f"{self.downstream}/work")
            rid = self.headers.get("X-Request-ID")
            if rid:
                req.add_header("X-Request-ID", rid)
            with urllib.request.urlopen(req, timeout=10) as r:
                status = r.status
            self._send(200, f"order ok, downstream {status}".encode())
        elif self.path == "/headers":
            # For the header translation tests: what reached the app.
            body = "".join(f"{k.lower()}: {v}\n" for k, v in self.headers.items())
            self._send(200, body.encode())
        else:
            self._send(404, b"not found")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--downstream", required=True)
    a = p.parse_args()
    Handler.downstream = a.downstream.rstrip("/")
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    srv.daemon_threads = True
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
