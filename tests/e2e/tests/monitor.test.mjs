// The Monitor page end to end: known spans sent over OTLP/HTTP JSON (checkout-api: GET /x 10 calls
// with 2 errors, POST /y 5 calls; plus a second service), then /monitor shows one row per
// operation with its request count, error percentage and latency quantiles, three charts with
// points, sorts by column, switches range, and clicking an operation or a chart point opens the
// Search page with that service/operation and time range. Also: the empty state and dark theme.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startClew, ingest, launchChromium, artifactPath } from '../lib/clew.mjs';

const VIEWPORT = { width: 1280, height: 860 };
const SERVICE = 'checkout-api';

async function waitReady(page) {
  await page.waitForFunction(() => document.body.dataset.ready === '1', null, { timeout: 20000 });
}

async function openPage(browser, url, { colorScheme = 'light' } = {}) {
  const ctx = await browser.newContext({ viewport: VIEWPORT, colorScheme });
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 404/.test(m.text())) errors.push(m.text());
  });
  await page.goto(url);
  await waitReady(page);
  return { ctx, page, errors };
}

const texts = (page, sel) => page.$$eval(sel, (els) => els.map((e) => e.textContent.trim()));

const hex = (n, width) => n.toString(16).padStart(width, '0');

/** `n` root SERVER spans named `name`, each its own trace; the first `errors` fail. */
function spans(prefix, name, n, errors, t0, durMs) {
  return Array.from({ length: n }, (_, i) => {
    const start = t0 + BigInt(i) * 1_000_000n;
    const o = {
      traceId: `${prefix}${hex(i + 1, 32 - prefix.length)}`,
      spanId: `${prefix.slice(0, 4)}${hex(i + 1, 12)}`,
      name,
      kind: 2,
      startTimeUnixNano: String(start),
      endTimeUnixNano: String(start + BigInt(Math.round(durMs(i) * 1e6))),
      attributes: [{ key: 'http.route', value: { stringValue: name.split(' ')[1] } }],
    };
    if (i < errors) o.status = { code: 2, message: 'boom' };
    return o;
  });
}

function request(service, list) {
  return { resourceSpans: [{ resource: { attributes: [{ key: 'service.name', value: { stringValue: service } }] }, scopeSpans: [{ scope: { name: 'e2e-monitor' }, spans: list }] }] };
}

let browser;
before(async () => {
  browser = await launchChromium();
});
after(async () => {
  if (browser) await browser.close();
});

describe('monitor', () => {
  let server;
  let base;
  before(async () => {
    server = await startClew();
    base = server.query;
    const t0 = BigInt(Date.now() - 20_000) * 1_000_000n;
    await ingest(
      server,
      request(SERVICE, [
        // GET /x: 10 calls, 10..100 ms, the first 2 fail.
        ...spans('a0a0', 'GET /x', 10, 2, t0, (i) => (i + 1) * 10),
        // POST /y: 5 calls of 20 ms.
        ...spans('b0b0', 'POST /y', 5, 0, t0, () => 20),
      ]),
    );
    await ingest(server, request('ledger', spans('c0c0', 'POST /entries', 3, 0, t0, () => 5)));
  });
  after(async () => {
    if (server) await server.stop();
  });

  it('shows per-operation rates, error percentages, latency and charts; sorts; clicks through to search', async () => {
    const { ctx, page, errors } = await openPage(browser, `${base}/monitor?service=${SERVICE}&lookback=1h`);
    assert.equal(await page.inputValue('#mon-service'), SERVICE);
    assert.deepEqual((await texts(page, '#mon-service option')).sort(), ['checkout-api', 'ledger']);
    assert.equal(await page.inputValue('#mon-kind'), 'server');
    assert.equal(await page.inputValue('#mon-lookback'), '1h');

    // One row per operation, busiest first.
    const rows = page.locator('#mon-ops tbody tr.op-row');
    assert.equal(await rows.count(), 2);
    assert.deepEqual(await rows.evaluateAll((rs) => rs.map((r) => r.dataset.operation)), ['GET /x', 'POST /y']);
    const x = page.locator('tr.op-row[data-operation="GET /x"]');
    const y = page.locator('tr.op-row[data-operation="POST /y"]');
    assert.equal(await x.locator('td.op').textContent(), 'GET /x');
    assert.equal(await x.locator('td.requests').textContent(), '10');
    assert.equal(await y.locator('td.requests').textContent(), '5');
    assert.equal(await x.locator('td.err-rate').textContent(), '20.0%');
    assert.equal(await y.locator('td.err-rate').textContent(), '0%');
    assert.match(await x.locator('td.err-rate').getAttribute('class'), /\bbad\b/);
    // 10 calls over an hour: 10/60 per minute.
    assert.equal(await x.locator('td.rate').textContent(), '0.17/min');
    // Latency quantiles, within a histogram bucket (±9 %): POST /y is 20 ms throughout.
    for (const q of ['p50', 'p95', 'p99']) {
      const ms = parseFloat(await y.locator(`td.${q}`).textContent());
      assert.ok(ms >= 18.3 && ms <= 21.8, `${q} of POST /y: ${ms}`);
    }
    const p99x = parseFloat(await x.locator('td.p99').textContent());
    assert.ok(p99x >= 91 && p99x <= 110, `p99 of GET /x: ${p99x}`);
    assert.equal(await x.locator('svg.spark path.spark-line').count(), 1);
    // Footer: every server operation of the service.
    assert.deepEqual((await texts(page, '#mon-ops tfoot td')).slice(0, 4), ['All server operations', '15', '0.25/min', '13.3%']);

    // Charts rendered points; the rate chart's points add up to the 15 calls (1-minute steps).
    assert.ok((await page.locator('#chart-rate circle.pt').count()) >= 1);
    assert.ok((await page.locator('#chart-errors circle.pt').count()) >= 1);
    assert.ok((await page.locator('#chart-latency circle.pt').count()) >= 3);
    assert.equal(await page.locator('#chart-latency .line').count(), 3);
    const perMinute = await page.$$eval('#chart-rate circle.pt', (cs) => cs.map((c) => Number(c.dataset.value) * 60));
    assert.ok(Math.abs(perMinute.reduce((a, b) => a + b, 0) - 15) < 1e-6, `rate points: ${perMinute}`);
    const errPoints = await page.$$eval('#chart-errors circle.pt', (cs) => cs.map((c) => Number(c.dataset.value)));
    assert.ok(errPoints.some((v) => Math.abs(v - 2 / 15) < 1e-9), `error points: ${errPoints}`);
    assert.match(await page.textContent('#chart-errors .mon-headline'), /13\.3%/);
    await page.screenshot({ path: artifactPath('monitor.png'), fullPage: true });

    // Sorting by column: error rate descending, then ascending; by name.
    const order = () => rows.evaluateAll((rs) => rs.map((r) => r.dataset.operation));
    await page.click('#mon-ops th button[data-sort="errRate"]');
    assert.deepEqual(await order(), ['GET /x', 'POST /y']);
    assert.equal(await page.getAttribute('#mon-ops th:has(button[data-sort="errRate"])', 'aria-sort'), 'descending');
    await page.click('#mon-ops th button[data-sort="errRate"]');
    assert.deepEqual(await order(), ['POST /y', 'GET /x']);
    await page.click('#mon-ops th button[data-sort="p99"]');
    assert.deepEqual(await order(), ['GET /x', 'POST /y']);
    await page.click('#mon-ops th button[data-sort="op"]');
    assert.deepEqual(await order(), ['GET /x', 'POST /y']);
    await page.click('#mon-ops th button[data-sort="op"]');
    assert.deepEqual(await order(), ['POST /y', 'GET /x']);

    // Click an operation → Search with the service, operation and range filled in.
    await page.locator('tr.op-row[data-operation="GET /x"] td.requests').click();
    await page.waitForURL(/\/search\?/);
    let url = new URL(page.url());
    assert.equal(url.searchParams.get('service'), SERVICE);
    assert.equal(url.searchParams.get('operation'), 'GET /x');
    assert.equal(url.searchParams.get('lookback'), '1h');
    await waitReady(page);
    assert.equal(await page.inputValue('#f-service'), SERVICE);
    assert.equal(await page.inputValue('#f-operation'), 'GET /x');
    await page.waitForSelector('tr.result');
    assert.equal(await page.locator('tr.result').count(), 10);

    // Back to the Monitor; a point of the error chart → Search for errors in that interval.
    await page.goBack();
    await page.waitForURL(/\/monitor\?/);
    await waitReady(page);
    const pt = page.locator('#chart-errors circle.pt').first();
    const ts = Number(await pt.getAttribute('data-ts'));
    await pt.click();
    await page.waitForURL(/\/search\?/);
    url = new URL(page.url());
    assert.equal(url.searchParams.get('service'), SERVICE);
    assert.equal(url.searchParams.get('lookback'), 'custom');
    assert.equal(url.searchParams.get('tags'), 'error=true');
    // The minute the point aggregates (1-minute steps over the last hour).
    const minute = Math.floor(ts / 60_000) * 60_000;
    assert.equal(Number(url.searchParams.get('start')), minute * 1000);
    assert.equal(Number(url.searchParams.get('end')), (minute + 60_000) * 1000);
    await waitReady(page);
    await page.waitForSelector('tr.result');
    assert.equal(await page.locator('tr.result').count(), 2, 'the two failed GET /x calls');
    assert.deepEqual(errors, []);
    await ctx.close();
  });

  it('switches the time range and the service, keeps them in the URL; dark theme', async () => {
    const { ctx, page, errors } = await openPage(browser, `${base}/monitor`, { colorScheme: 'dark' });
    // Default: the first service with server spans, last hour.
    assert.equal(await page.inputValue('#mon-service'), SERVICE);
    await page.selectOption('#mon-lookback', '15m');
    await page.waitForURL(/lookback=15m/);
    await waitReady(page);
    assert.equal(await page.locator('#mon-ops tbody tr.op-row').count(), 2);
    assert.equal(await page.locator('#chart-rate circle.pt').count(), 15);
    await page.selectOption('#mon-service', 'ledger');
    await page.waitForURL(/service=ledger/);
    await waitReady(page);
    assert.deepEqual(await texts(page, '#mon-ops tbody td.op'), ['POST /entries']);
    assert.equal(await page.textContent('#mon-ops tbody td.requests'), '3');
    assert.equal(await page.textContent('#mon-ops tbody td.err-rate'), '0%');
    assert.equal(new URL(page.url()).searchParams.get('lookback'), '15m');
    await page.screenshot({ path: artifactPath('monitor-dark.png'), fullPage: true });
    // A span kind without data explains itself.
    await page.selectOption('#mon-kind', 'client');
    await page.waitForURL(/spanKind=client/);
    await waitReady(page);
    assert.match(await page.textContent('#monitor-nodata'), /No client spans of ledger/);
    assert.match(await page.inputValue('#mon-kind'), /client/);
    assert.match(await page.textContent('#mon-kind option[value="client"]'), /no data/);
    assert.deepEqual(errors, []);
    await ctx.close();
  });
});

describe('monitor without data', () => {
  let server;
  before(async () => {
    server = await startClew();
  });
  after(async () => {
    if (server) await server.stop();
  });

  it('explains that there are no span metrics yet', async () => {
    const { ctx, page, errors } = await openPage(browser, `${server.query}/monitor`);
    const text = await page.textContent('#monitor-empty');
    assert.match(text, /No span metrics/);
    assert.match(text, /before sampling/);
    assert.match(text, /clew demo/);
    assert.equal(await page.locator('#mon-ops').count(), 0);
    assert.deepEqual(errors, []);
    await ctx.close();
  });
});
