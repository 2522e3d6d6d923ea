"""Manual spans for business logic with the OpenTelemetry Python SDK: attributes, events, links,
errors. Two traces: a checkout whose discount step fails, and a settlement batch job that links to
the checkout it settles.

    OTEL_SERVICE_NAME=shop OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 python checkout.py

Prints {"checkout": TRACE_ID, "settlement": TRACE_ID} on stdout.
"""

from __future__ import annotations

import json
import os

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

provider = TracerProvider(resource=Resource.create())
provider.add_span_processor(BatchSpanProcessor(
    OTLPSpanExporter(endpoint=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
                     insecure=True)))
tracer = provider.get_tracer("shop.checkout", "1.0.0")


class CouponExpired(Exception):
    pass


# ANCHOR: checkout
def checkout(cart: list[dict], coupon: str) -> trace.SpanContext:
    with tracer.start_as_current_span("checkout", kind=SpanKind.SERVER) as span:
        # Attributes: what you will search and group by. Low-cardinality names, typed values.
        span.set_attribute("app.cart.items", len(cart))
        span.set_attribute("app.cart.total_cents", sum(i["cents"] for i in cart))
        span.set_attribute("app.payment.method", "card")

        with tracer.start_as_current_span("validate-cart") as v:
            # Events: things that happened at one instant inside the span.
            v.add_event("cart.validated", {"app.cart.skus": [i["sku"] for i in cart]})

        try:
            with tracer.start_as_current_span("apply-discount", attributes={"app.coupon": coupon}):
                raise CouponExpired(f"coupon {coupon} expired")
        except CouponExpired:
            # start_as_current_span already recorded the exception as an `exception` event and set
            # the discount span's status to ERROR on its way out; the checkout goes on without it.
            span.add_event("discount.skipped", {"app.coupon": coupon})
        return span.get_span_context()
# ANCHOR_END: checkout


# ANCHOR: settlement
def settle(orders: list[trace.SpanContext]) -> trace.SpanContext:
    # A batch job is its own trace; links tie it to every trace it works on.
    links = [Link(ctx, {"app.link": "settles"}) for ctx in orders]
    with tracer.start_as_current_span("settle-payments", links=links) as span:
        try:
            raise TimeoutError("payment provider did not answer within 5s")
        except TimeoutError as e:
            # Handled errors: record them yourself, and say what failed in the status.
            span.record_exception(e)
            span.set_status(Status(StatusCode.ERROR, "provider timeout"))
        return span.get_span_context()
# ANCHOR_END: settlement


def main() -> None:
    order = checkout([{"sku": "sku-1", "cents": 1250}, {"sku": "sku-2", "cents": 499}], "SPRING24")
    batch = settle([order])
    provider.shutdown()
    print(json.dumps({"checkout": format(order.trace_id, "032x"),
                      "settlement": format(batch.trace_id, "032x")}))


if __name__ == "__main__":
    main()
