"""A small instrumented FastAPI service for the trace-doctor tests (tests/python/test_doctor.py).

Run as `python service.py --name NAME --port PORT --otlp URL [--downstream URL]`. Instrumented with
the OpenTelemetry SDK, opentelemetry-instrumentation-fastapi and -requests; spans go to `--otlp`
over OTLP/HTTP as soon as they end.

Routes:
- `GET /work`: a leaf.
- `GET /broken`: calls `<downstream>/work` from a ThreadPoolExecutor *without* carrying the context
  (the classic thread-pool bug): the outgoing call starts a new trace.
- `GET /ok`: the same, with the context carried into the worker (`contextvars.copy_context().run`).
- `GET /attached`: the same, with the context carried by hand (`context.attach` in the worker).
- `GET /manual`: a hand-made CLIENT span around an uninstrumented `urllib` call that never injects
  `traceparent`: the downstream service starts a new trace (context lost between services).
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import requests
import uvicorn
from fastapi import FastAPI
from opentelemetry import context, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor


def build(name: str, otlp: str, downstream: str | None) -> FastAPI:
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{otlp}/v1/traces")))
    trace.set_tracer_provider(provider)
    RequestsInstrumentor().instrument()
    tracer = trace.get_tracer("doctor-test-app")
    pool = ThreadPoolExecutor(max_workers=4)
    app = FastAPI()

    def call_downstream() -> int:
        return requests.get(f"{downstream}/work", timeout=10).status_code

    @app.get("/work")
    async def work():
        await asyncio.sleep(0.02)
        return {"ok": True}

    @app.get("/broken")
    async def broken():
        # Bug under test: the worker thread does not see the request's context.
        status = await asyncio.wrap_future(pool.submit(call_downstream))
        return {"downstream": status}

    @app.get("/ok")
    async def ok():
        ctx = contextvars.copy_context()
        status = await asyncio.wrap_future(pool.submit(ctx.run, call_downstream))
        return {"downstream": status}

    @app.get("/attached")
    async def attached():
        current = context.get_current()

        def job() -> int:
            token = context.attach(current)
            try:
                return call_downstream()
            finally:
                context.detach(token)

        status = await asyncio.wrap_future(pool.submit(job))
        return {"downstream": status}

    @app.get("/manual")
    async def manual():
        url = f"{downstream}/work"
        parts = urlsplit(url)

        def job() -> int:
            # A hand-instrumented client that forgets to inject the trace context.
            with tracer.start_as_current_span(
                "GET /work",
                kind=trace.SpanKind.CLIENT,
                attributes={
                    "http.request.method": "GET",
                    "url.full": url,
                    "server.address": parts.hostname,
                    "server.port": parts.port,
                },
            ):
                with urllib.request.urlopen(url, timeout=10) as r:
                    return r.status

        ctx = contextvars.copy_context()
        status = await asyncio.wrap_future(pool.submit(ctx.run, job))
        return {"downstream": status}

    FastAPIInstrumentor.instrument_app(app)
    return app


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--otlp", required=True, help="OTLP/HTTP base URL, e.g. http://127.0.0.1:4318")
    p.add_argument("--downstream", default=None)
    a = p.parse_args()
    app = build(a.name, a.otlp, a.downstream)
    uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="warning")


if __name__ == "__main__":
    main()
