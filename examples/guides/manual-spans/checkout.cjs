// Manual spans for business logic with the OpenTelemetry JS API: attributes, events, links, errors.
// The same two traces as checkout.py: a checkout whose discount step fails, and a settlement batch
// job linked to it.
//   OTEL_SERVICE_NAME=shop OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 node checkout.cjs
// Prints {"checkout": TRACE_ID, "settlement": TRACE_ID}.
'use strict';

const { SpanKind, SpanStatusCode, trace } = require('@opentelemetry/api');
const { initTracing } = require('../node-async-context/tracing.cjs');

const provider = initTracing();
const tracer = trace.getTracer('shop.checkout', '1.0.0');

class CouponExpired extends Error {
  constructor(message) {
    super(message);
    this.name = 'CouponExpired';
  }
}

// ANCHOR: checkout
async function checkout(cart, coupon) {
  return tracer.startActiveSpan('checkout', { kind: SpanKind.SERVER }, async (span) => {
    // Attributes: typed values you will search and group by.
    span.setAttribute('app.cart.items', cart.length);
    span.setAttribute('app.cart.total_cents', cart.reduce((n, i) => n + i.cents, 0));

    tracer.startActiveSpan('validate-cart', (v) => {
      v.addEvent('cart.validated', { 'app.cart.skus': cart.map((i) => i.sku) });
      v.end();
    });

    await tracer.startActiveSpan('apply-discount', { attributes: { 'app.coupon': coupon } }, async (d) => {
      try {
        throw new CouponExpired(`coupon ${coupon} expired`);
      } catch (e) {
        // Unlike Python's context manager, JS records nothing by itself: record the exception
        // (an `exception` event) and set the status of the span that failed.
        d.recordException(e);
        d.setStatus({ code: SpanStatusCode.ERROR, message: e.message });
        span.addEvent('discount.skipped', { 'app.coupon': coupon });
      } finally {
        d.end();
      }
    });
    span.end();
    return span.spanContext();
  });
}
// ANCHOR_END: checkout

// ANCHOR: settlement
function settle(orders) {
  // A batch job is its own trace (root: true ignores any current span); links tie it to the
  // traces it works on.
  const links = orders.map((context) => ({ context, attributes: { 'app.link': 'settles' } }));
  return tracer.startActiveSpan('settle-payments', { root: true, links }, (span) => {
    span.recordException(new Error('payment provider did not answer within 5s'));
    span.setStatus({ code: SpanStatusCode.ERROR, message: 'provider timeout' });
    span.end();
    return span.spanContext();
  });
}
// ANCHOR_END: settlement

(async () => {
  const order = await checkout([{ sku: 'sku-1', cents: 1250 }, { sku: 'sku-2', cents: 499 }], 'SPRING24');
  const batch = settle([order]);
  await provider.shutdown();
  console.log(JSON.stringify({ checkout: order.traceId, settlement: batch.traceId }));
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
