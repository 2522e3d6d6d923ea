// The trace page's flame graph end to end: the Waterfall | Flame graph switch, the canvas, hover
// tooltips at span positions taken from the layout the page exposes (window.__clewFlame), click to
// select (the shared detail panel), zoom (double-click, wheel, reset), `?view=flame`, and sub-pixel
// culling on a 3,000-span trace.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startClew, ingest, launchChromium, artifactPath } from '../lib/clew.mjs';
import { IDS, traceA, spanId, largeTrace } from '../lib/traces.mjs';

const VIEWPORT = { width: 1280, height: 800 };
const LARGE_ID = 'f1a3e000000000000000000000003000';
const LARGE_SPANS = 3000;
const CHARGE = spanId(IDS.A, 6); // payment: charge, 42..108 ms, child fraud-check 44..60 ms
const FRAUD = spanId(IDS.A, 7);
const ROOT = spanId(IDS.A, 1);

async function waitReady(page) {
  await page.waitForFunction(() => document.body.dataset.ready === '1', null, { timeout: 20000 });
}

async function openPage(browser, url, colorScheme = 'light') {
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

const flameReady = (page) => page.waitForSelector('#flame-canvas[data-ready="1"]', { timeout: 20000 });
const rectOf = (page, id) => page.evaluate((i) => window.__clewFlame.rect(i), id);
const view = (page) => page.evaluate(() => window.__clewFlame.view);

/** Hovers the middle of a span's box and returns the tooltip's fields. */
async function hover(page, id) {
  const r = await rectOf(page, id);
  assert.ok(r && r.visible, `span ${id} visible in the flame graph: ${JSON.stringify(r)}`);
  await page.mouse.move(r.cx, r.cy);
  const tip = page.locator('#flame-tooltip');
  await tip.waitFor({ state: 'visible' });
  assert.equal(await tip.getAttribute('data-span-id'), id);
  return {
    r,
    svc: (await tip.locator('.tip-svc').textContent()).trim(),
    op: (await tip.locator('.tip-op').textContent()).trim(),
    dur: (await tip.locator('.tip-dur').textContent()).trim(),
    self: (await tip.locator('.tip-self').textContent()).trim(),
  };
}

let browser;
before(async () => {
  browser = await launchChromium();
});
after(async () => {
  if (browser) await browser.close();
});

describe('flame graph', () => {
  let server;
  let base;
  before(async () => {
    server = await startClew();
    base = server.query;
    const t0 = BigInt(Date.now() - 60_000) * 1_000_000n;
    await ingest(server, traceA(t0));
    for (const req of largeTrace(LARGE_ID, LARGE_SPANS, t0 + 5_000_000_000n, 1000)) await ingest(server, req);
  });
  after(async () => {
    if (server) await server.stop();
  });

  it('draws the trace on a canvas; hover shows the span, click selects it, zoom and reset work', async () => {
    const { ctx, page, errors } = await openPage(browser, `${base}/trace/${IDS.A}`);
    assert.equal(await page.getAttribute('#view-waterfall', 'aria-pressed'), 'true');
    assert.equal(await page.locator('#flame-canvas').count(), 0, 'the flame graph is built on first use');
    await page.click('#view-flame');
    await flameReady(page);
    assert.equal(await page.getAttribute('#view-flame', 'aria-pressed'), 'true');
    assert.equal(new URL(page.url()).searchParams.get('view'), 'flame');
    assert.ok(await page.locator('#flame-canvas').isVisible());
    assert.ok(!(await page.locator('#waterfall').isVisible()), 'waterfall hidden');
    assert.ok(!(await page.locator('#expand-all').isVisible()), 'waterfall-only tools hidden');
    // One canvas for all spans: no DOM node per span.
    assert.equal(await page.locator('#flame [data-span-id]').count(), 0);
    const size = await page.$eval('#flame-canvas', (c) => [c.width, c.height, c.clientWidth]);
    assert.ok(size[0] > 600 && size[1] > 80, `canvas size ${size}`);
    assert.match(await page.textContent('#flame-info'), /9 spans, depth 4/);

    // Hover: tooltip with service, operation, duration and self time.
    const t = await hover(page, CHARGE);
    assert.deepEqual([t.svc, t.op], ['payment', 'charge']);
    assert.match(t.dur, /^66ms/);
    assert.equal(t.self, '50ms');
    assert.equal(await page.evaluate(({ x, y }) => window.__clewFlame.spanAt(x, y), { x: t.r.cx, y: t.r.cy }), CHARGE);
    // The pixel under the span has the service's color.
    const px = await page.evaluate(({ x, y, id }) => {
      const c = document.getElementById('flame-canvas');
      const b = c.getBoundingClientRect();
      const d = window.devicePixelRatio || 1;
      const got = [...c.getContext('2d').getImageData(Math.round((x - b.left) * d), Math.round((y - b.top) * d), 1, 1).data].slice(0, 3);
      const owner = window.__clewFlame.owner;
      const k = owner.trace.byId.get(id).pos;
      const probe = document.createElement('canvas').getContext('2d');
      probe.fillStyle = owner.colors[owner.layout.svc[k]].fill;
      probe.fillRect(0, 0, 1, 1);
      return { got, want: [...probe.getImageData(0, 0, 1, 1).data].slice(0, 3) };
    }, { x: t.r.cx, y: t.r.y + 2, id: CHARGE }); // above the label, below the hover outline
    assert.ok(px.got.every((v, i) => Math.abs(v - px.want[i]) <= 3), `pixel ${px.got} vs service color ${px.want}`);

    const root = await hover(page, ROOT);
    assert.deepEqual([root.svc, root.op], ['frontend', 'GET /checkout']);
    assert.match(root.dur, /^120ms/);
    assert.ok(root.r.y < t.r.y, 'the root is above its descendants');
    await page.screenshot({ path: artifactPath('flame.png') });

    // Click selects the span in the trace page's detail panel (and the URL).
    await page.mouse.move(t.r.cx, t.r.cy);
    await page.mouse.down();
    await page.mouse.up();
    await page.waitForFunction((id) => new URL(location.href).searchParams.get('span') === id, CHARGE);
    assert.equal((await page.textContent('#detail-op')).trim(), 'charge');
    assert.ok(await page.locator('#span-detail').isVisible());

    // Double-click zooms to a span; Reset shows the whole trace again.
    const full = await view(page);
    assert.ok(await page.locator('#flame-reset').isDisabled());
    const f = await rectOf(page, FRAUD);
    await page.mouse.dblclick(f.cx, f.cy);
    await page.waitForFunction((w) => window.__clewFlame.view[1] - window.__clewFlame.view[0] < w, (full[1] - full[0]) / 2);
    const zoomed = await view(page);
    const fz = await rectOf(page, FRAUD);
    assert.ok(fz.w > f.w * 3 && fz.x >= -1 && fz.x + fz.w <= VIEWPORT.width, `zoomed to fraud-check: ${JSON.stringify({ f, fz, zoomed })}`);
    assert.ok(!(await page.locator('#flame-reset').isDisabled()));
    assert.equal((await hover(page, FRAUD)).op, 'fraud-check');
    await page.click('#flame-reset');
    await page.waitForFunction(([a, b]) => Math.abs(window.__clewFlame.view[0] - a) < 1e-6 && Math.abs(window.__clewFlame.view[1] - b) < 1e-6, full);

    // Wheel zooms around the cursor: the time under the pointer stays put.
    const c = await rectOf(page, CHARGE);
    await page.mouse.move(c.cx, c.cy);
    await page.mouse.wheel(0, -400);
    await page.waitForFunction((w) => window.__clewFlame.view[1] - window.__clewFlame.view[0] < w * 0.9, full[1] - full[0]);
    const c2 = await rectOf(page, CHARGE);
    assert.ok(c2.w > c.w * 1.5, `wider after zooming in: ${c.w} → ${c2.w}`);
    assert.equal(await page.evaluate(({ x, y }) => window.__clewFlame.spanAt(x, y), { x: c.cx, y: c.cy }), CHARGE);
    await page.screenshot({ path: artifactPath('flame-zoomed.png') });

    // Back to the waterfall: the selection (the last span clicked: the double-clicked fraud-check)
    // is kept.
    await page.click('#view-waterfall');
    assert.ok(await page.locator('#waterfall').isVisible());
    assert.ok(!(await page.locator('#flame').isVisible()));
    assert.equal(new URL(page.url()).searchParams.get('view'), null);
    assert.equal(await page.getAttribute('#waterfall .row.selected', 'data-span-id'), FRAUD);
    assert.equal((await page.textContent('#detail-op')).trim(), 'fraud-check');
    // Selecting in the waterfall and switching back: the flame graph still answers.
    await page.click(`#waterfall .row[data-span-id="${ROOT}"]`);
    await page.click('#view-flame');
    await flameReady(page);
    assert.equal((await hover(page, ROOT)).op, 'GET /checkout');
    assert.deepEqual(errors, []);
    await ctx.close();
  });

  it('opens from ?view=flame, culls sub-pixel spans of a 3,000-span trace and hovers a deep span (dark theme)', async () => {
    const { ctx, page, errors } = await openPage(browser, `${base}/trace/${LARGE_ID}?view=flame`, 'dark');
    await flameReady(page);
    assert.ok(await page.locator('#flame-canvas').isVisible());
    assert.match(await page.textContent('#flame-info'), /3,000 spans/);
    const stats = await page.evaluate(() => window.__clewFlame.stats);
    assert.ok(stats.culled > 0 && stats.drawn + stats.culled <= LARGE_SPANS, `culled sub-pixel spans: ${JSON.stringify(stats)}`);
    // A span at depth ≥ 4 wide enough to point at, and not overlapped there by a sibling that
    // starts later (spans of one depth can overlap in time; the pointer picks the later one).
    const target = await page.evaluate(() => {
      const o = window.__clewFlame.owner;
      const f = window.__clewFlame;
      const sp = o.trace.order.find((s) => {
        if (s.depth < 4) return false;
        const r = f.rect(s.id);
        return r.w >= 6 && r.visible && f.spanAt(r.cx, r.cy) === s.id;
      });
      return sp ? { id: sp.id, op: sp.op, svc: sp.svc, depth: sp.depth } : null;
    });
    assert.ok(target, 'a deep span wide enough to hover');
    const t = await hover(page, target.id);
    assert.deepEqual([t.svc, t.op], [target.svc, target.op]);
    // Zooming in draws fewer, wider spans.
    const r = await rectOf(page, target.id);
    await page.mouse.move(r.cx, r.cy);
    for (let i = 0; i < 4; i++) await page.mouse.wheel(0, -500);
    await page.waitForFunction((n) => window.__clewFlame.stats.culled < n, stats.culled);
    assert.equal(await page.evaluate(({ x, y }) => window.__clewFlame.spanAt(x, y), { x: r.cx, y: r.cy }), target.id);
    // Click selects it.
    await page.mouse.click(r.cx, r.cy);
    await page.waitForFunction((id) => new URL(location.href).searchParams.get('span') === id, target.id);
    assert.equal((await page.textContent('#detail-op')).trim(), target.op);
    await page.screenshot({ path: artifactPath('flame-3000-dark.png') });
    assert.deepEqual(errors, []);
    await ctx.close();
  });
});
