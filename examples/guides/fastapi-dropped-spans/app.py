"""The guide's FastAPI service: the same report built two ways, and a lifespan that flushes spans.

    OTEL_SERVICE_NAME=reports OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 \
        python app.py --port 8000

- `GET /report/broken`: blocking work sent to `loop.run_in_executor()`, which does not carry the
  request's context: the work's spans become traces of their own.
- `GET /report/fixed`: the same work through `asyncio.to_thread()`, which does.

Spans go over OTLP/HTTP to `$OTEL_EXPORTER_OTLP_ENDPOINT/v1/traces` through a BatchSpanProcessor
that the app's lifespan shuts down (flushes) when uvicorn stops.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

tracer = trace.get_tracer("reports-example")


# ANCHOR: lifespan
def init_tracing() -> TracerProvider:
    provider = TracerProvider(resource=Resource.create())  # service.name from OTEL_SERVICE_NAME
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces")))
    trace.set_tracer_provider(provider)
    return provider


@asynccontextmanager
async def lifespan(app: FastAPI):
    provider = init_tracing()
    yield
    # uvicorn runs this on SIGTERM/Ctrl-C. Without it, the spans still waiting in the batch
    # processor (up to OTEL_BSP_SCHEDULE_DELAY, 5 s by default) die with the process: the last
    # requests before every deploy lose their spans, and their children show up as orphans.
    provider.shutdown()
# ANCHOR_END: lifespan


app = FastAPI(lifespan=lifespan)


def build_report(name: str) -> dict:
    # Blocking work (a database driver, a PDF library): it must not run on the event loop.
    with tracer.start_as_current_span("build-report", attributes={"app.report": name}):
        with tracer.start_as_current_span("load-rows"):
            time.sleep(0.01)
        return {"report": name, "rows": 3}


# ANCHOR: broken
@app.get("/report/broken")
async def report_broken():
    loop = asyncio.get_running_loop()
    # Bug: run_in_executor() runs the function in a pool thread *without* the caller's
    # contextvars, so build-report starts with no parent and becomes a new trace.
    return await loop.run_in_executor(None, build_report, "broken")
# ANCHOR_END: broken


# ANCHOR: fixed
@app.get("/report/fixed")
async def report_fixed():
    # asyncio.to_thread() copies the current context into the thread (contextvars.copy_context),
    # so build-report is a child of the request's SERVER span.
    return await asyncio.to_thread(build_report, "fixed")
# ANCHOR_END: fixed


FastAPIInstrumentor.instrument_app(app)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=8000)
    a = p.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="warning")


if __name__ == "__main__":
    main()
