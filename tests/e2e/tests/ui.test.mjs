// The web UI end to end: the real `clew serve`, traces ingested over OTLP/HTTP JSON, headless
// Chromium driving every page. Screenshots go to tests/artifacts/e2e/.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startClew, ingest, launchChromium, artifactPath, sleep } from '../lib/clew.mjs';
import { IDS, traceA, traceB, traceC, spanId, largeTrace, TRACE_A_SPANS, TRACE_B_SPANS } from '../lib/traces.mjs';

const LARGE_ID = '1a7e0000000000000000000000003000';
const LARGE_SPANS = 3000;

const VIEWPORT = { width: 1280, height: 800 };

async function waitReady(page) {
  await page.waitForFunction(() => document.body.dataset.ready === '1', null, { timeout: 15000 });
}

async function openPage(browser, url, opts = {}) {
  const ctx = await browser.newContext({ viewport: VIEWPORT, colorScheme: opts.colorScheme || 'light' });
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

let browser;
before(async () => {
  browser = await launchChromium();
});
after(async () => {
  if (browser) await browser.close();
});

describe('empty server', () => {
  let server;
  before(async () => {
    server = await startClew();
  });
  after(async () => {
    if (server) await server.stop();
  });

  it('explains how to send data', async () => {
    const { ctx, page, errors } = await openPage(browser, `${server.query}/`);
    const text = await page.textContent('#app');
    assert.match(text, /No traces yet/);
    assert.match(text, /4317/);
    assert.match(text, /4318/);
    assert.match(text, /clew demo/);
    await page.screenshot({ path: artifactPath('empty.png') });
    assert.deepEqual(errors, []);
    await ctx.close();
  });
});

describe('with traces', () => {
  let server;
  let base;
  before(async () => {
    server = await startClew();
    base = server.query;
    const t0 = BigInt(Date.now() - 60_000) * 1_000_000n;
    await ingest(server, traceA(t0));
    await ingest(server, traceB(t0 + 5_000_000_000n));
    await ingest(server, traceC(t0 + 10_000_000_000n));
    for (const req of largeTrace(LARGE_ID, LARGE_SPANS, t0 + 20_000_000_000n, 1000)) await ingest(server, req);
    for (const [id, n] of [[IDS.A, TRACE_A_SPANS], [IDS.B, TRACE_B_SPANS]]) {
      const r = await fetch(`${base}/api/traces/${id}`);
      assert.equal(r.status, 200, `trace ${id} stored`);
      assert.equal((await r.json()).data[0].spans.length, n);
      // The compact shape the trace page loads: same spans, strings interned.
      const u = await fetch(`${base}/api/ui/traces/${id}`);
      assert.equal(u.status, 200, `ui trace ${id}`);
      const ut = await u.json();
      assert.equal(ut.traceID, id);
      assert.equal(ut.spans.length, n);
      assert.ok(ut.strings.includes('frontend') && ut.strings.includes('GET /checkout'));
    }
    assert.equal((await fetch(`${base}/api/ui/traces/0123456789abcdef0123456789abcdef`)).status, 404);
    assert.equal((await fetch(`${base}/api/ui/traces/xyz`)).status, 400);
  });
  after(async () => {
    if (server) await server.stop();
  });

  it('searches by service, shows rows and the scatter plot, and restores the query from the URL', async () => {
    const { ctx, page, errors } = await openPage(browser, `${base}/search?service=frontend&lookback=1h`);
    await page.waitForSelector('tr.result');
    assert.equal(await page.locator('tr.result').count(), 2);
    const rowA = page.locator(`tr.result[data-trace-id="${IDS.A}"]`);
    const rowB = page.locator(`tr.result[data-trace-id="${IDS.B}"]`);
    assert.equal((await rowA.locator('.root-op').textContent()).trim(), 'frontend: GET /checkout');
    assert.equal(await rowA.locator('.span-count').textContent(), String(TRACE_A_SPANS));
    assert.equal(await rowA.locator('.error-count').textContent(), '1');
    assert.equal(await rowB.locator('.span-count').textContent(), String(TRACE_B_SPANS));
    assert.equal(await rowB.locator('.error-count').textContent(), '0');
    // Spans with server-side warnings (orphan, clock skew) are flagged; B has none.
    assert.equal(await rowB.locator('.warn-badge').count(), 0);
    const warned = await rowA.locator('.warn-badge').count();
    if (warned) assert.match(await rowA.locator('.warn-badge').textContent(), /⚠ 2/);
    const svcs = await rowA.locator('td.services').textContent();
    for (const s of ['cart', 'payment', 'inventory', 'shipping']) assert.ok(svcs.includes(s), `${s} in ${svcs}`);
    assert.equal(await page.locator('svg.scatter circle.dot').count(), 2);
    assert.equal(await page.locator('svg.scatter circle.dot.err').count(), 1);
    await page.screenshot({ path: artifactPath('search.png') });
    // Reload: the form comes back from the URL.
    await page.reload();
    await waitReady(page);
    await page.waitForSelector('tr.result');
    assert.equal(await page.inputValue('#f-service'), 'frontend');
    assert.equal(await page.inputValue('#f-lookback'), '1h');
    // Tick two rows → compare.
    assert.ok(await page.locator('#compare-btn').isDisabled());
    await page.check(`tr.result[data-trace-id="${IDS.A}"] td.sel input`);
    await page.check(`tr.result[data-trace-id="${IDS.B}"] td.sel input`);
    await page.click('#compare-btn');
    await page.waitForURL(/\/compare\?a=/);
    await page.waitForSelector('#diff tr.diff-row');
    await page.goBack();
    await waitReady(page);
    await page.waitForSelector('svg.scatter circle.dot');
    // A dot opens its trace.
    await page.click(`svg.scatter circle.dot[data-trace-id="${IDS.A}"]`);
    await page.waitForURL(`**/trace/${IDS.A}`);
    await page.waitForSelector('#waterfall .row');
    assert.deepEqual(errors, []);
    await ctx.close();
  });

  it('searches through the form: service + operation, then by attribute', async () => {
    const { ctx, page } = await openPage(browser, `${base}/`);
    await page.selectOption('#f-service', 'batch');
    await page.waitForFunction(() => [...document.querySelectorAll('#f-operation option')].some((o) => o.value === 'nightly-job'));
    await page.selectOption('#f-operation', 'nightly-job');
    await page.click('#f-submit');
    await page.waitForURL(/service=batch/);
    await page.waitForFunction(() => document.querySelectorAll('tr.result').length === 1 && document.querySelector('tr.result .op-name').textContent === 'nightly-job');
    assert.match(page.url(), /operation=nightly-job/);
    await page.fill('#f-tags', 'payment.provider=stripe');
    await page.selectOption('#f-service', '');
    await page.click('#f-submit');
    await page.waitForURL(/tags=payment.provider/);
    await page.waitForFunction((id) => {
      const rows = document.querySelectorAll('tr.result');
      return rows.length === 1 && rows[0].dataset.traceId === id;
    }, IDS.A);
    // Bad input is explained, not sent.
    await page.fill('#f-min', 'fast');
    await page.click('#f-submit');
    assert.match(await page.textContent('.form-error'), /not a duration/);
    await ctx.close();
  });

  it('searches with TraceQL: autocomplete from the tag endpoints, results, and parse errors', async () => {
    const { ctx, page, errors } = await openPage(browser, `${base}/`);
    const box = '#f-traceql';
    await page.click(box);
    await page.type(box, '{ resource.serv');
    // Names come from /tempo/api/v2/search/tags.
    await page.waitForFunction(() => [...document.querySelectorAll('#traceql-suggest li')].some((li) => li.textContent === 'resource.service.name'));
    await page.keyboard.press('Enter');
    assert.equal(await page.inputValue(box), '{ resource.service.name ');
    await page.waitForFunction(() => [...document.querySelectorAll('#traceql-suggest li')].some((li) => li.textContent.trim() === '='));
    await page.keyboard.press('Enter'); // `=` is the first operator
    // Values come from /tempo/api/v2/search/tag/resource.service.name/values.
    await page.waitForFunction(() => [...document.querySelectorAll('#traceql-suggest li')].some((li) => li.textContent === '"payment"'));
    await page.type(box, '"paym');
    await page.waitForFunction(() => {
      const items = [...document.querySelectorAll('#traceql-suggest li')].map((li) => li.textContent);
      return items.length === 1 && items[0] === '"payment"';
    });
    await page.keyboard.press('Enter');
    await page.type(box, '&& status = error }');
    assert.equal(await page.inputValue(box), '{ resource.service.name = "payment" && status = error }');
    await page.keyboard.press('Escape');
    await page.click('#f-traceql-run');
    await page.waitForURL(/[?&]q=/);
    await page.waitForFunction((id) => {
      const rows = document.querySelectorAll('tr.result');
      return rows.length === 1 && rows[0].dataset.traceId === id && /1 matched/.test(rows[0].textContent);
    }, IDS.A);
    await page.screenshot({ path: artifactPath('traceql-search.png') });
    // Reloading the URL runs the same query.
    await page.reload();
    await waitReady(page);
    assert.equal(await page.inputValue(box), '{ resource.service.name = "payment" && status = error }');
    assert.equal(await page.$$eval('tr.result', (rows) => rows.length), 1);
    // A structural query across services.
    await page.fill(box, '{ resource.service.name = "frontend" } >> { name = "fraud-check" }');
    await page.keyboard.press('Escape');
    await page.click('#f-traceql-run');
    await page.waitForFunction((id) => {
      const rows = document.querySelectorAll('tr.result');
      return rows.length === 1 && rows[0].dataset.traceId === id;
    }, IDS.A);
    // The server's parse error, with its position, is shown as it is.
    await page.fill(box, '{ status = }');
    await page.keyboard.press('Escape');
    await page.click('#f-traceql-run');
    await page.waitForFunction(() => /1:1[0-9]/.test(document.querySelector('#traceql-error').textContent));
    assert.deepEqual(errors.filter((e) => !/status of 400/.test(e)), []);
    await ctx.close();
  });

  it('shows the trace waterfall, warnings, critical path and span details', async () => {
    const { ctx, page, errors } = await openPage(browser, `${base}/trace/${IDS.A}`);
    assert.equal(await page.locator('#waterfall .row:not([hidden])').count(), TRACE_A_SPANS);
    assert.equal(await page.textContent('#trace-span-count'), String(TRACE_A_SPANS));
    assert.equal(await page.textContent('#trace-error-count'), '1');
    // The page loads the compact trace shape, not the Jaeger JSON.
    const api = await page.evaluate(() => performance.getEntriesByType('resource').map((e) => new URL(e.name).pathname).filter((p) => p.startsWith('/api/')));
    assert.ok(api.includes(`/api/ui/traces/${IDS.A}`), api.join(','));
    assert.ok(!api.includes(`/api/traces/${IDS.A}`), api.join(','));
    // 125ms as sent; 120ms when the server corrects the skewed child for display.
    assert.ok(['120ms', '125ms'].includes(await page.textContent('#trace-duration')));
    const warn = await page.textContent('#trace-warnings');
    assert.match(warn, /1 orphan span/);
    assert.match(warn, /1 span with clock skew/);
    assert.match(warn, /parent span deadbeefdeadbeef (is )?not in (this )?trace/);
    assert.match(warn, /inventory: reserve stock/);
    assert.match(warn, /shipping: quote/);
    // Critical path (Jaeger's algorithm): the sequential cart then payment calls and their last
    // finishing descendants; not the skewed shipping quote (overlaps cart) nor the orphan.
    const crit = await texts(page, '#waterfall .row.crit .op');
    assert.deepEqual(crit, ['GET /checkout', 'POST cart', 'POST /cart/items', 'redis GET', 'POST payment', 'charge', 'fraud-check']);
    assert.ok((await page.locator('#waterfall .row.crit .bar .cp').count()) >= 7);
    // Tree order: the child follows its parent.
    const ops = await texts(page, '#waterfall .row .op');
    assert.ok(ops.indexOf('charge') === ops.indexOf('POST payment') + 1, ops.join(','));
    // Details of the error span.
    await page.click(`#waterfall .row[data-span-id="${spanId(IDS.A, 6)}"]`);
    await page.waitForSelector('#span-detail:not([hidden])');
    assert.equal(await page.textContent('#detail-op'), 'charge');
    const detail = await page.textContent('#span-detail');
    assert.match(detail, /payment\.provider\s*stripe/);
    assert.match(detail, /payment\.amount_cents\s*4999/);
    assert.match(await page.textContent('#detail-status'), /ERROR — card declined/);
    assert.match(await page.textContent('#span-detail .events'), /exception[\s\S]*card declined/);
    assert.match(await page.textContent('#span-detail .resource'), /deployment\.environment\s*e2e/);
    assert.equal(await page.locator(`#waterfall .row[data-span-id="${spanId(IDS.A, 6)}"] .ev`).count(), 1, 'event mark on the bar');
    assert.match(page.url(), new RegExp(`span=${spanId(IDS.A, 6)}`));
    await page.screenshot({ path: artifactPath('trace.png') });
    // The name column can be resized by dragging its edge.
    const before = (await page.locator('#waterfall .row .name').first().boundingBox()).width;
    const sp = await page.locator('#name-splitter').boundingBox();
    await page.mouse.move(sp.x + 4, sp.y + 10);
    await page.mouse.down();
    await page.mouse.move(sp.x + 84, sp.y + 10, { steps: 3 });
    await page.mouse.up();
    const afterW = (await page.locator('#waterfall .row .name').first().boundingBox()).width;
    assert.ok(Math.abs(afterW - before - 80) < 6, `name column ${before} → ${afterW}`);
    // The link goes to trace B and highlights the linked span.
    await page.click(`#waterfall .row[data-span-id="${spanId(IDS.A, 7)}"]`);
    const link = page.locator('#span-detail a.link-target');
    assert.equal(await link.getAttribute('data-trace-id'), IDS.B);
    assert.equal(await link.getAttribute('href'), `/trace/${IDS.B}?span=${spanId(IDS.B, 1)}`);
    await link.click();
    await page.waitForURL(`**/trace/${IDS.B}?span=${spanId(IDS.B, 1)}`);
    await page.waitForSelector(`#waterfall .row.selected.linked[data-span-id="${spanId(IDS.B, 1)}"]`);
    assert.equal(await page.textContent('#detail-op'), 'GET /checkout');
    // Statistics tab.
    await page.click('#tab-stats');
    assert.equal(await page.locator('#stats tbody tr').count(), TRACE_B_SPANS);
    assert.deepEqual(errors, []);
    await ctx.close();
  });

  it('finds in the trace, navigates with the keyboard, expands and collapses', async () => {
    const { ctx, page } = await openPage(browser, `${base}/trace/${IDS.A}`);
    await page.click('#trace-title');
    await page.keyboard.press('/');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'find');
    await page.keyboard.type('redis');
    await page.waitForFunction(() => document.querySelector('#find-count').textContent === '1/1');
    assert.deepEqual(await texts(page, '#waterfall .row.match .op'), ['redis GET']);
    await page.fill('#find', 'customer.tier=gold');
    await page.waitForFunction(() => document.querySelector('#find-count').textContent === '1/1');
    await page.fill('#find', 'POST');
    await page.waitForFunction(() => document.querySelector('#find-count').textContent === '1/3');
    await page.keyboard.press('Enter');
    assert.equal(await page.textContent('#find-count'), '2/3');
    assert.equal(await page.locator('#waterfall .row.match').count(), 3);
    await page.screenshot({ path: artifactPath('find.png') });
    await page.keyboard.press('Escape');
    assert.equal(await page.locator('#waterfall .row.match').count(), 0);
    // A service in the legend finds its spans.
    await page.click('.legend .legend-chip:has-text("payment")');
    assert.equal(await page.textContent('#find-count'), '1/2');
    assert.deepEqual(await texts(page, '#waterfall .row.match .svc'), ['payment', 'payment']);
    await page.fill('#find', '');
    await page.keyboard.press('Escape');
    // Keyboard: select the root, move down, collapse/expand.
    await page.click(`#waterfall .row[data-span-id="${spanId(IDS.A, 1)}"] .op`);
    await page.keyboard.press('ArrowDown');
    const second = await page.getAttribute('#waterfall .row.selected', 'data-span-id');
    assert.notEqual(second, spanId(IDS.A, 1));
    await page.keyboard.press('ArrowUp');
    assert.equal(await page.getAttribute('#waterfall .row.selected', 'data-span-id'), spanId(IDS.A, 1));
    await page.keyboard.press('ArrowLeft');
    assert.equal(await page.locator('#waterfall .row:not([hidden])').count(), 2, 'root collapsed: root + orphan');
    await page.keyboard.press('ArrowRight');
    assert.equal(await page.locator('#waterfall .row:not([hidden])').count(), TRACE_A_SPANS);
    await page.keyboard.press('Escape');
    assert.ok(await page.locator('#span-detail').isHidden());
    await page.click('#collapse-all');
    const collapsed = await page.locator('#waterfall .row:not([hidden])').count();
    assert.ok(collapsed < TRACE_A_SPANS && collapsed >= 2, `collapse all leaves ${collapsed}`);
    await page.click('#expand-all');
    assert.equal(await page.locator('#waterfall .row:not([hidden])').count(), TRACE_A_SPANS);
    await ctx.close();
  });

  it('virtualizes a large trace, zooms with the minimap and finds spans off screen', async () => {
    const { ctx, page, errors } = await openPage(browser, `${base}/trace/${LARGE_ID}`);
    assert.equal(await page.textContent('#trace-span-count'), String(LARGE_SPANS));
    const inDom = await page.locator('#waterfall .row').count();
    assert.ok(inDom > 5 && inDom < 120, `only visible rows are in the DOM: ${inDom}`);
    const height = await page.$eval('#waterfall .wf-spacer', (e) => e.getBoundingClientRect().height);
    assert.equal(height, LARGE_SPANS * 24);
    // Scroll to the bottom: rows are re-used, the last one is rendered.
    await page.$eval('#waterfall', (e) => (e.scrollTop = e.scrollHeight));
    await page.waitForFunction(() => {
      const el = document.getElementById('waterfall');
      return [...el.querySelectorAll('.row:not([hidden])')].some((r) => parseFloat(r.style.transform.slice(11)) >= el.scrollHeight - 24 * 2);
    });
    assert.ok((await page.locator('#waterfall .row').count()) < 120);
    // Find a span that is far away.
    await page.fill('#find', 'item.index=1234');
    await page.waitForFunction(() => document.querySelector('#find-count').textContent === '1/1');
    await page.waitForSelector('#waterfall .row.selected.match-current');
    assert.match(await page.textContent('#span-detail'), /item\.index\s*1234/);
    // Drag on the minimap from 10 % to 20 % of the trace: the ruler shows 3 s .. 6 s.
    const box = await page.locator('#minimap').boundingBox();
    await page.mouse.move(box.x + box.width * 0.1, box.y + 20);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width * 0.15, box.y + 20);
    await page.mouse.move(box.x + box.width * 0.2, box.y + 20);
    await page.mouse.up();
    await page.waitForSelector('#reset-zoom:not([hidden])');
    const ticks = await texts(page, '.ruler .tick');
    assert.match(ticks[0], /^(2\.9\d|3|3\.0\d)s$/, ticks.join(','));
    assert.match(ticks[4], /^(5\.9\d|6|6\.0\d)s$/, ticks.join(','));
    await page.screenshot({ path: artifactPath('large-trace-zoomed.png') });
    await page.click('#reset-zoom');
    assert.equal((await texts(page, '.ruler .tick'))[0], '0µs');
    assert.deepEqual(errors, []);
    await ctx.close();
  });

  it('compares two traces structurally', async () => {
    const { ctx, page, errors } = await openPage(browser, `${base}/compare?a=${IDS.A}&b=${IDS.B}`);
    const kind = async (path) => page.getAttribute(`#diff tr.diff-row[data-path="${path}"]`, 'data-kind');
    assert.equal(await kind('frontend: GET /checkout'), 'faster');
    assert.equal(await kind('frontend: GET /checkout > shipping: quote'), 'removed');
    assert.equal(await kind('frontend: GET /checkout > frontend: send email'), 'added');
    assert.equal(await kind('frontend: GET /checkout > frontend: send email > email: deliver'), 'added');
    assert.equal(await kind('frontend: GET /checkout > frontend: POST payment > payment: charge > payment: fraud-check'), 'removed');
    assert.equal(await kind('inventory: reserve stock'), 'removed');
    assert.equal(await kind('frontend: GET /checkout > frontend: POST cart > cart: POST /cart/items'), 'slower');
    assert.equal(await kind('frontend: GET /checkout > frontend: POST payment > payment: charge'), 'faster');
    assert.equal(await kind('frontend: GET /checkout > frontend: POST cart > cart: POST /cart/items > cart: redis GET'), 'same');
    const delta = await page.textContent('#diff tr.diff-row[data-path="frontend: GET /checkout > frontend: POST payment > payment: charge"] .delta');
    assert.match(delta, /^-48ms \(-73%\)$/);
    const summary = await page.textContent('#diff-summary');
    assert.match(summary, /2 added/);
    assert.match(summary, /3 removed/);
    await page.screenshot({ path: artifactPath('compare.png') });
    // Only A given: traces with the same root operation are offered as B.
    await page.goto(`${base}/compare?a=${IDS.A}`);
    await waitReady(page);
    await page.waitForSelector('#cmp-candidates tr.candidate');
    assert.deepEqual(await page.$$eval('#cmp-candidates tr.candidate', (rs) => rs.map((r) => r.dataset.traceId)), [IDS.B]);
    await page.click('#cmp-candidates tr.candidate a');
    await page.waitForURL(/b=/);
    await page.waitForSelector('#diff tr.diff-row');
    assert.deepEqual(errors, []);
    await ctx.close();
  });

  it('draws the service graph', async () => {
    const { ctx, page, errors } = await openPage(browser, `${base}/graph?lookback=1h`);
    for (const s of ['frontend', 'cart', 'payment']) {
      assert.equal(await page.locator(`svg.graph g.node[data-service="${s}"]`).count(), 1, `node ${s}`);
    }
    assert.ok((await page.locator('svg.graph path.edge[data-source="frontend"][data-target="cart"]').count()) === 1, 'edge frontend → cart');
    const row = page.locator('#graph-edges tr.edge-row[data-source="frontend"][data-target="payment"]');
    assert.equal(await row.count(), 1);
    assert.match(await row.locator('td').nth(2).textContent(), /^[1-9]\d*$/);
    const labels = await texts(page, 'svg.graph text.edge-label');
    assert.ok(labels.every((l) => /^\d+ req/.test(l)), labels.join(','));
    // Frontend is left of cart (longest-path layers).
    const x = (s) => page.$eval(`g.node[data-service="${s}"]`, (g) => g.getBoundingClientRect().x);
    assert.ok((await x('frontend')) < (await x('cart')));
    await page.screenshot({ path: artifactPath('graph.png'), fullPage: true });
    assert.deepEqual(errors, []);
    await ctx.close();
  });

  it('falls back to /api/dependencies when the doctor service graph is unavailable', async () => {
    const ctx = await browser.newContext({ viewport: VIEWPORT });
    const page = await ctx.newPage();
    await page.route('**/api/doctor/service-graph*', (route) => route.fulfill({ status: 404, contentType: 'text/plain', body: 'not found' }));
    await page.goto(`${base}/graph?lookback=15m`);
    await waitReady(page);
    assert.match(await page.textContent('#graph-fallback'), /Error rates unknown/);
    const row = page.locator('#graph-edges tr.edge-row[data-source="frontend"][data-target="cart"]');
    assert.equal(await row.count(), 1);
    assert.equal((await row.locator('td').nth(4).textContent()).trim(), 'unknown');
    const labels = await texts(page, 'svg.graph text.edge-label');
    assert.ok(labels.length > 0 && labels.every((l) => /^\d+ req$/.test(l)), labels.join(','));
    await ctx.close();
  });

  it('copies ids on click and explains empty search results', async () => {
    const { ctx, page } = await openPage(browser, `${base}/search?service=frontend&minDuration=1h`);
    await page.waitForSelector('#no-results');
    assert.match(await page.textContent('#no-results'), /No traces match/);
    await page.goto(`${base}/trace/${IDS.A}`);
    await waitReady(page);
    await page.click(`.trace-stats .copy[data-copy="${IDS.A}"]`);
    await page.waitForFunction(() => document.getElementById('toast').textContent.startsWith('Copied'));
    await ctx.close();
  });

  it('says so for a bad or unknown trace id', async () => {
    const { ctx, page } = await openPage(browser, `${base}/trace/not-a-trace`);
    assert.match(await page.textContent('#trace-error'), /Not a valid trace id/);
    await page.goto(`${base}/trace/0123456789abcdef0123456789abcdef`);
    await waitReady(page);
    assert.match(await page.textContent('#trace-error'), /Trace not found[\s\S]*0123456789abcdef0123456789abcdef/);
    await page.screenshot({ path: artifactPath('not-found.png') });
    await ctx.close();
  });

  it('toggles and remembers the dark theme', async () => {
    const { ctx, page } = await openPage(browser, `${base}/trace/${IDS.A}`, { colorScheme: 'light' });
    assert.equal(await page.getAttribute('html', 'data-theme'), 'light');
    const bgLight = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    await page.click('#theme-toggle');
    assert.equal(await page.getAttribute('html', 'data-theme'), 'dark');
    const bgDark = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert.notEqual(bgLight, bgDark);
    await page.reload();
    await waitReady(page);
    assert.equal(await page.getAttribute('html', 'data-theme'), 'dark', 'remembered in localStorage');
    await page.screenshot({ path: artifactPath('trace-dark.png') });
    await ctx.close();
    // Without a stored choice, the system preference wins.
    const dark = await openPage(browser, `${base}/`, { colorScheme: 'dark' });
    assert.equal(await dark.page.getAttribute('html', 'data-theme'), 'dark');
    await dark.ctx.close();
  });

  it('serves assets with validators', async () => {
    const r = await fetch(`${base}/static/js/main.js`);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /^text\/javascript/);
    const etag = r.headers.get('etag');
    assert.ok(etag);
    const again = await fetch(`${base}/static/js/main.js`, { headers: { 'If-None-Match': etag } });
    assert.equal(again.status, 304);
    await sleep(0);
  });
});
