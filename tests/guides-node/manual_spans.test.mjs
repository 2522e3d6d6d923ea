// The manual-spans guide's Node.js code (examples/guides/manual-spans/checkout.cjs) against the real
// clew: attributes, events, the recorded exception, error statuses and the link, read back through
// the api_v3 API (OTLP JSON).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startClew, sleep, REPO } from '../e2e/lib/clew.mjs';

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));

let clew;
before(async () => {
  clew = await startClew();
});
after(async () => {
  const exit = await clew?.stop();
  assert.deepEqual(exit, { code: 0, sig: null }, 'clew must exit cleanly on SIGTERM');
});

async function spans(traceId, n) {
  const deadline = Date.now() + 15000;
  for (;;) {
    const r = await fetch(`${clew.query}/api/v3/traces/${traceId}`);
    if (r.ok) {
      const all = (await r.json()).result.resourceSpans.flatMap((rs) => rs.scopeSpans.flatMap((ss) => ss.spans));
      if (all.length >= n) return all;
    }
    if (Date.now() > deadline) throw new Error(`trace ${traceId}: fewer than ${n} spans`);
    await sleep(200);
  }
}

const attrs = (o) => Object.fromEntries((o.attributes ?? []).map((kv) => [kv.key, Object.values(kv.value)[0]]));
const isError = (s) => s.status?.code === 2 || s.status?.code === 'STATUS_CODE_ERROR';

test('checkout and settlement: attributes, events, errors and a link as the guide describes', async () => {
  const { stdout } = await run(process.execPath, [path.join(REPO, 'examples/guides/manual-spans/checkout.cjs')], {
    env: { ...process.env, NODE_PATH: path.join(here, 'node_modules'), OTEL_SERVICE_NAME: 'shop-node',
      OTEL_EXPORTER_OTLP_ENDPOINT: clew.otlpHttp },
    timeout: 60000,
  });
  const ids = JSON.parse(stdout);
  const byName = Object.fromEntries((await spans(ids.checkout, 3)).map((s) => [s.name, s]));
  assert.deepEqual(Object.keys(byName).sort(), ['apply-discount', 'checkout', 'validate-cart']);
  const co = byName.checkout;
  assert.equal(String(attrs(co)['app.cart.items']), '2');
  assert.equal(String(attrs(co)['app.cart.total_cents']), '1749');
  assert.deepEqual(co.events.map((e) => e.name), ['discount.skipped']);
  assert.ok(!isError(co), 'the checkout itself went on');
  assert.deepEqual(byName['validate-cart'].events.map((e) => e.name), ['cart.validated']);
  const d = byName['apply-discount'];
  assert.ok(isError(d));
  assert.equal(d.status.message, 'coupon SPRING24 expired');
  assert.deepEqual(d.events.map((e) => e.name), ['exception']);
  assert.equal(attrs(d.events[0])['exception.type'], 'CouponExpired');

  assert.notEqual(ids.settlement, ids.checkout, 'the batch job is a trace of its own');
  const [settle] = await spans(ids.settlement, 1);
  assert.equal(settle.name, 'settle-payments');
  assert.ok(isError(settle) && settle.status.message === 'provider timeout');
  assert.equal(settle.links.length, 1);
  assert.equal(settle.links[0].traceId.toLowerCase(), ids.checkout);
  assert.equal(settle.links[0].spanId.toLowerCase(), co.spanId.toLowerCase());
  assert.equal(attrs(settle.links[0])['app.link'], 'settles');
});
