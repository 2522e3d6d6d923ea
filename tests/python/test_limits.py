"""Per-tenant limits against the real OpenTelemetry Python SDK: the OTLP HTTP exporter, sending
faster than its tenant's span rate, gets 429 with Retry-After, waits and retries (the SDK retries
429, honouring Retry-After), and in the end every span is stored."""

from __future__ import annotations

import re
import uuid

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult

TENANT = "small"
HEADERS = {"X-Scope-OrgID": TENANT}
TRACES = 40
SPANS_PER_TRACE = 10


def _metric(text: str, series: str) -> float:
    m = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


def test_sdk_retries_429_until_every_span_is_delivered(clew_factory, tmp_path):
    # 100 spans/s with a bucket of 100: the 400 spans below need about three seconds.
    (tmp_path / "overrides.yml").write_text(
        f"overrides:\n  {TENANT}: {{ingestion_rate_spans: 100, ingestion_burst_spans: 100}}\n"
    )
    config = tmp_path / "clew.yaml"
    config.write_text("limits:\n  per_tenant_file: overrides.yml\n")
    clew = clew_factory(extra_args=["--config", str(config)])

    results: list[SpanExportResult] = []

    class RecordingExporter(HttpExporter):
        def export(self, spans):
            result = super().export(spans)
            results.append(result)
            return result

    exporter = RecordingExporter(endpoint=f"{clew.http_url}/v1/traces", headers=HEADERS, timeout=30)
    provider = TracerProvider(resource=Resource.create({"service.name": f"limits-{uuid.uuid4().hex[:8]}"}))
    provider.add_span_processor(
        BatchSpanProcessor(exporter, max_queue_size=10_000, max_export_batch_size=50, schedule_delay_millis=50)
    )
    tracer = provider.get_tracer("test_limits")

    trace_ids = []
    for t in range(TRACES):
        with tracer.start_as_current_span(f"root-{t}") as root:
            trace_ids.append(format(root.get_span_context().trace_id, "032x"))
            for i in range(SPANS_PER_TRACE - 1):
                with tracer.start_as_current_span(f"child-{i}"):
                    pass
    assert provider.force_flush(timeout_millis=120_000), "the SDK could not flush"
    provider.shutdown()

    assert results and all(r == SpanExportResult.SUCCESS for r in results), results

    metrics = clew.get("/metrics").text
    refused = _metric(metrics, f'clew_tenant_refused_requests_total{{tenant="{TENANT}",reason="rate_spans"}}')
    assert refused >= 1, f"the rate limit never refused a request, so the test proved nothing:\n{metrics}"
    assert _metric(metrics, 'clew_receiver_requests_total{protocol="otlp_http",outcome="rate_limited"}') == refused

    for tid in trace_ids:
        clew.wait_trace_v3(tid, SPANS_PER_TRACE, timeout=10, headers=HEADERS)
    accepted = _metric(metrics, 'clew_receiver_spans_accepted_total{protocol="otlp_http"}')
    assert accepted == TRACES * SPANS_PER_TRACE, "each span stored once"
