"""The guide's example: one order handled with asyncio tasks and a ThreadPoolExecutor.

    python orders.py --variant fixed    # the context follows the work into the thread pool
    python orders.py --variant broken   # it does not: the invoice becomes a trace of its own

Prints the order's trace id (hex) on stdout. Spans go to Clew through tracing.init_tracing().
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import time
from concurrent.futures import ThreadPoolExecutor

from opentelemetry import context, trace

from tracing import init_tracing

tracer = trace.get_tracer("orders-example")
pool = ThreadPoolExecutor(max_workers=2)


# ANCHOR: tasks
async def reserve_stock(sku: str) -> None:
    with tracer.start_as_current_span("reserve-stock", attributes={"app.sku": sku}):
        await asyncio.sleep(0.01)


async def charge_card() -> None:
    with tracer.start_as_current_span("charge-card"):
        await asyncio.sleep(0.02)


async def prepare(skus: list[str]) -> None:
    # asyncio.create_task() / gather() copy the current contextvars.Context when the task is
    # created, so every task's span is a child of the span that was current here.
    await asyncio.gather(*(reserve_stock(s) for s in skus), charge_card())
# ANCHOR_END: tasks


def render_invoice(order_id: str) -> None:
    # Runs in a pool thread: its parent is whatever context is current *in that thread*.
    with tracer.start_as_current_span("render-invoice", attributes={"app.order_id": order_id}):
        time.sleep(0.01)


# ANCHOR: broken
async def invoice_broken(order_id: str) -> None:
    # Bug: a ThreadPoolExecutor does not carry contextvars into its threads. render-invoice starts
    # with an empty context and becomes the root of a new trace.
    await asyncio.wrap_future(pool.submit(render_invoice, order_id))
# ANCHOR_END: broken


# ANCHOR: fixed
async def invoice_fixed(order_id: str) -> None:
    # Fix 1: run the job inside a copy of the caller's context.
    ctx = contextvars.copy_context()
    await asyncio.wrap_future(pool.submit(ctx.run, render_invoice, order_id))


async def invoice_attached(order_id: str) -> None:
    # Fix 2: capture the OpenTelemetry context and attach it explicitly in the worker (also works
    # for threads you do not submit yourself, e.g. a callback a library calls from its own thread).
    parent = context.get_current()

    def job() -> None:
        token = context.attach(parent)
        try:
            render_invoice(order_id)
        finally:
            context.detach(token)

    await asyncio.wrap_future(pool.submit(job))
# ANCHOR_END: fixed


# ANCHOR: handle
async def handle_order(order_id: str, variant: str) -> str:
    with tracer.start_as_current_span("process-order", attributes={"app.order_id": order_id}) as span:
        await prepare(["sku-1", "sku-2"])
        if variant == "broken":
            await invoice_broken(order_id)
        else:
            await invoice_fixed(order_id)
            await invoice_attached(order_id)
        return format(span.get_span_context().trace_id, "032x")
# ANCHOR_END: handle


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--variant", choices=["broken", "fixed"], required=True)
    p.add_argument("--order-id", default="o-1001")
    a = p.parse_args()
    init_tracing()
    print(asyncio.run(handle_order(a.order_id, a.variant)), flush=True)
    pool.shutdown(wait=True)


if __name__ == "__main__":
    main()
