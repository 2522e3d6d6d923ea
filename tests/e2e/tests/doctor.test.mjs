// The Doctor page end to end: traces with two planted context breaks (web → stock) and an orphan,
// minutes old so the doctor judges them; the page groups the findings by kind, shows counts, the
// service pair, coverage, what to do, and example links that open the trace with the break
// highlighted. Also: the time window selector, the empty state, the error state, and a server
// that does not send the newer report fields (example span ids, trend, coverage, remedy).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startClew, ingest, launchChromium, artifactPath } from '../lib/clew.mjs';
import { DOCTOR_IDS as D, doctorTraces, healthyTrace, spanId } from '../lib/traces.mjs';

const VIEWPORT = { width: 1280, height: 800 };
const LOST = 'context_lost_between_services';
const CLIENT_SPAN = { [D.lost1]: spanId(D.lost1, 2), [D.lost2]: spanId(D.lost2, 2) };
const ORPHAN_SPAN = spanId(D.orphan, 2);

async function waitReady(page) {
  await page.waitForFunction(() => document.body.dataset.ready === '1', null, { timeout: 20000 });
}

async function openPage(browser, url, { colorScheme = 'light', setup } = {}) {
  const ctx = await browser.newContext({ viewport: VIEWPORT, colorScheme });
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of (404|500)/.test(m.text())) errors.push(m.text());
  });
  if (setup) await setup(page);
  await page.goto(url);
  await waitReady(page);
  return { ctx, page, errors };
}

/** Follows an example link and checks that the trace page highlights `spanId` as the break. */
async function followAndCheckBreak(page, link, traceId, spanIdWanted) {
  await link.click();
  await page.waitForURL(new RegExp(`/trace/${traceId}\\?`));
  await waitReady(page);
  const brk = page.locator('#waterfall .row.doctor-break');
  await brk.waitFor();
  assert.equal(await brk.count(), 1, 'exactly one break row');
  assert.equal(await brk.getAttribute('data-span-id'), spanIdWanted);
  assert.match(await brk.locator('.badge.brk').textContent(), /break/);
  assert.ok(await brk.isVisible(), 'break row is visible');
  // Scrolled into view inside the waterfall.
  const [row, wf] = [await brk.boundingBox(), await page.locator('#waterfall').boundingBox()];
  assert.ok(row.y >= wf.y - 1 && row.y + row.height <= wf.y + wf.height + 1, `row ${JSON.stringify(row)} inside ${JSON.stringify(wf)}`);
  // The span is selected: the detail panel shows it, and a note explains the break.
  assert.equal(new URL(page.url()).searchParams.get('span'), spanIdWanted);
  assert.ok(await page.locator('#span-detail').isVisible());
  assert.match(await page.locator('#doctor-break-note').textContent(), /Doctor/);
}

let browser;
before(async () => {
  browser = await launchChromium();
});
after(async () => {
  if (browser) await browser.close();
});

describe('doctor page with planted problems', () => {
  let server;
  let base;
  let report;
  before(async () => {
    server = await startClew();
    base = server.query;
    const t0 = BigInt(Date.now() - 4 * 60_000) * 1_000_000n;
    for (const req of doctorTraces(t0)) await ingest(server, req);
    report = await (await fetch(`${base}/api/doctor/findings?since=1h`)).json();
    assert.equal(report.traces_examined, 5, JSON.stringify(report));
  });
  after(async () => {
    if (server) await server.stop();
  });

  it('shows findings grouped by kind with counts, the service pair, coverage, remedy and trend', async () => {
    const { ctx, page, errors } = await openPage(browser, `${base}/doctor`);
    assert.equal(await page.inputValue('#doctor-window'), '1h');
    assert.deepEqual(
      await page.$$eval('#doctor-window option', (os) => os.map((o) => o.value)),
      ['15m', '1h', '6h', '24h'],
    );
    const cov = await page.textContent('#doctor-coverage');
    assert.match(cov, /examined 5 (of ~\d+ traces \(\d+(\.\d+)? %\)|traces)/, cov);
    assert.match(cov, /last 1h/);
    if (report.traces_in_window != null) assert.match(cov, new RegExp(`of ~${Math.max(report.traces_in_window, 5)} traces`));

    // Kinds in order: lost context first, then orphans.
    const kinds = await page.$$eval('section.doctor-kind', (els) => els.map((e) => e.dataset.kind));
    assert.deepEqual(kinds, [LOST, 'orphan_spans']);

    const lost = page.locator(`section.doctor-kind[data-kind="${LOST}"]`);
    assert.match(await lost.locator('h2').textContent(), /Context lost between services\s*2/);
    const row = lost.locator('tr.finding');
    assert.equal(await row.count(), 1);
    assert.equal(await row.getAttribute('data-from'), 'web');
    assert.equal(await row.getAttribute('data-to'), 'stock');
    assert.equal(await row.getAttribute('data-operation'), 'GET /api/stock');
    assert.equal((await row.locator('td.count').textContent()).trim(), '2');
    assert.equal((await row.locator('td.where').textContent()).replace(/\s+/g, ' ').trim(), 'web → stock');
    assert.match(await row.locator('td.operation').textContent(), /GET \/api\/stock/);
    // What to do (server text, or the page's fallback), and the guide when the server names one.
    const remedy = (await lost.locator('.remedy-text').textContent()).trim();
    assert.ok(remedy.length > 40, remedy);
    const f = report.findings.find((x) => x.kind === LOST);
    if (f.remedy) assert.equal(remedy, f.remedy);
    else assert.match(remedy, /inject/i);
    assert.ok((await lost.locator('.guide').textContent()).includes(f.guide || 'docs/doctor.md#context-lost-between-services'));
    // Trend sparkline: the bars add up to the count.
    if (Array.isArray(f.trend)) {
      const trend = await row.locator('svg.spark').getAttribute('data-trend');
      assert.equal(trend.split(',').map(Number).reduce((a, b) => a + b, 0), 2);
      assert.equal(await row.locator('svg.spark rect').count(), f.trend.length);
    } else {
      assert.equal(await row.locator('.no-trend').count(), 1);
    }
    // Example traces: the traces that lost the context; the new traces are listed too.
    const links = row.locator('a.example-link');
    assert.equal(await links.count(), 2);
    const ids = await links.evaluateAll((as) => as.map((a) => a.dataset.traceId));
    assert.deepEqual(ids.slice().sort(), [D.lost1, D.lost2]);
    for (const a of await links.all()) {
      const href = await a.getAttribute('href');
      const u = new URL(href, base);
      const tid = await a.getAttribute('data-trace-id');
      assert.equal(u.pathname, `/trace/${tid}`);
      assert.equal(u.searchParams.get('break'), '1');
      if (u.searchParams.get('span')) assert.equal(u.searchParams.get('span'), CLIENT_SPAN[tid]);
      else assert.equal(u.searchParams.get('svc'), 'web');
    }
    assert.deepEqual((await row.locator('a.example-new').evaluateAll((as) => as.map((a) => a.dataset.traceId))).sort(), [D.new1, D.new2]);

    const orphan = page.locator('section.doctor-kind[data-kind="orphan_spans"] tr.finding');
    assert.equal(await orphan.count(), 1);
    assert.equal(await orphan.getAttribute('data-to'), 'billing-worker');
    assert.equal(await orphan.getAttribute('data-operation'), 'charge card');
    assert.equal((await orphan.locator('td.count').textContent()).trim(), '1');
    assert.equal((await orphan.locator('td.where').textContent()).trim(), 'billing-worker');
    assert.match(await page.locator('section.doctor-kind[data-kind="orphan_spans"] .remedy-text').textContent(), /\w/);

    // Summary chips per kind.
    assert.deepEqual(await page.$$eval('#doctor-summary .kind-chip', (els) => els.map((e) => e.textContent.replace(/\s+/g, ' ').trim())), [
      'Context lost between services 2',
      'Orphaned spans 1',
    ]);
    await page.screenshot({ path: artifactPath('doctor.png'), fullPage: true });

    // Following an example opens the trace with the client span that lost the context highlighted.
    const first = links.first();
    const tid = await first.getAttribute('data-trace-id');
    await followAndCheckBreak(page, first, tid, CLIENT_SPAN[tid]);
    assert.match(await page.textContent('#doctor-break-note'), /web: GET \/api\/stock/);
    await page.screenshot({ path: artifactPath('doctor-break.png') });

    // Back to the doctor, then the orphan's example.
    await page.goBack();
    await waitReady(page);
    const orphanLink = page.locator('section.doctor-kind[data-kind="orphan_spans"] a.example-link');
    assert.equal(await orphanLink.getAttribute('data-trace-id'), D.orphan);
    await followAndCheckBreak(page, orphanLink, D.orphan, ORPHAN_SPAN);
    assert.deepEqual(errors, []);
    await ctx.close();
  });

  it('changes the time window through the selector and the URL', async () => {
    const { ctx, page, errors } = await openPage(browser, `${base}/doctor`);
    const requests = [];
    page.on('request', (r) => {
      if (r.url().includes('/api/doctor/findings')) requests.push(new URL(r.url()).searchParams.get('since'));
    });
    await page.selectOption('#doctor-window', '15m');
    await page.waitForURL(/\/doctor\?since=15m$/);
    await waitReady(page);
    assert.deepEqual(requests, ['15m']);
    assert.match(await page.textContent('#doctor-coverage'), /last 15m/);
    assert.equal(await page.locator(`section.doctor-kind[data-kind="${LOST}"] tr.finding`).count(), 1);
    // The dark theme renders the same content.
    await page.reload();
    await waitReady(page);
    assert.equal(await page.inputValue('#doctor-window'), '15m');
    assert.deepEqual(errors, []);
    await ctx.close();
    const dark = await openPage(browser, `${base}/doctor?since=6h`, { colorScheme: 'dark' });
    assert.equal(await dark.page.evaluate(() => document.documentElement.dataset.theme), 'dark');
    assert.equal(await dark.page.locator('tr.finding').count(), 2);
    await dark.page.screenshot({ path: artifactPath('doctor-dark.png'), fullPage: true });
    assert.deepEqual(dark.errors, []);
    await dark.ctx.close();
  });

  it('degrades when the server sends the first report shape (no span ids, trend, coverage, remedy)', async () => {
    const strip = async (page) => {
      await page.route('**/api/doctor/findings**', async (route) => {
        const res = await route.fetch();
        const r = await res.json();
        for (const k of ['traces_in_window', 'coverage', 'window_start_unix_nano', 'window_end_unix_nano', 'trend_bucket_nanos']) delete r[k];
        for (const f of r.findings) for (const k of ['example_span_ids', 'trend', 'remedy', 'guide']) delete f[k];
        await route.fulfill({ response: res, json: r });
      });
    };
    const { ctx, page, errors } = await openPage(browser, `${base}/doctor`, { setup: strip });
    assert.match(await page.textContent('#doctor-coverage'), /examined 5 traces in the last 1h/);
    const row = page.locator(`section.doctor-kind[data-kind="${LOST}"] tr.finding`);
    assert.equal((await row.locator('td.count').textContent()).trim(), '2');
    assert.equal(await row.locator('.no-trend').count(), 1);
    assert.match(await page.locator(`section.doctor-kind[data-kind="${LOST}"] .remedy-text`).textContent(), /traceparent/);
    // Without span ids the link names service and operation; the trace page finds the span.
    const link = row.locator('a.example-link').first();
    const u = new URL(await link.getAttribute('href'), base);
    assert.equal(u.searchParams.get('span'), null);
    assert.equal(u.searchParams.get('svc'), 'web');
    assert.equal(u.searchParams.get('op'), 'GET /api/stock');
    const tid = await link.getAttribute('data-trace-id');
    await followAndCheckBreak(page, link, tid, CLIENT_SPAN[tid]);
    await page.goBack();
    await waitReady(page);
    const orphanLink = page.locator('section.doctor-kind[data-kind="orphan_spans"] a.example-link');
    await followAndCheckBreak(page, orphanLink, D.orphan, ORPHAN_SPAN);
    assert.deepEqual(errors, []);
    await ctx.close();
  });

  it('shows the error state when the findings cannot be loaded', async () => {
    const fail = async (page) => {
      await page.route('**/api/doctor/findings**', (route) => route.fulfill({ status: 500, contentType: 'application/json', body: JSON.stringify({ error: 'store unavailable: disk on fire' }) }));
    };
    const { ctx, page } = await openPage(browser, `${base}/doctor`, { setup: fail });
    const box = page.locator('#doctor-error');
    assert.match(await box.textContent(), /Cannot run the trace doctor/);
    assert.match(await box.textContent(), /disk on fire/);
    assert.equal(await page.locator('tr.finding').count(), 0);
    await page.screenshot({ path: artifactPath('doctor-error.png') });
    await ctx.close();
  });
});

describe('doctor page without problems', () => {
  let server;
  before(async () => {
    server = await startClew();
    await ingest(server, healthyTrace(BigInt(Date.now() - 3 * 60_000) * 1_000_000n));
  });
  after(async () => {
    if (server) await server.stop();
  });

  it('says nothing was found and how many traces were examined', async () => {
    const { ctx, page, errors } = await openPage(browser, `${server.query}/doctor`);
    const empty = page.locator('#doctor-empty');
    assert.match(await empty.textContent(), /No problems found in the last 1h/);
    assert.match(await empty.textContent(), /Examined 1 trace\b/);
    assert.match(await page.textContent('#doctor-coverage'), /examined 1 (of ~1 traces \(100 %\)|trace)/);
    assert.equal(await page.locator('section.doctor-kind').count(), 0);
    // The nav marks the page.
    assert.equal(await page.getAttribute('.topbar nav a.active', 'data-page'), 'doctor');
    await page.screenshot({ path: artifactPath('doctor-empty.png') });
    assert.deepEqual(errors, []);
    await ctx.close();
  });
});
