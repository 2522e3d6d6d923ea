// Benchmark (not a test): time to interactive of the trace page for one 50,000-span trace, and
// scrolling smoothness of the virtualized waterfall, in headless Chromium against the real binary.
//
//   cd tests/e2e && npm ci && CLEW_BIN=$PWD/../../target/debug/clew node bench-large-trace.mjs
//   options: --spans 50000 --runs 5 --batch 5000
//
// TTI = navigation start → the page sets window.__clewReady after the first paint of rows
// (window.__clewReadyAt, a performance.now() timestamp). Also reported: the in-page fetch time of
// /api/ui/traces/{id} (the compact shape the trace page loads: server + transfer + JSON parse) and
// the tree-building time, and the server time of that request and of the Jaeger JSON
// /api/traces/{id} measured from Node.
//
// Flame graph (flame.js): time from clicking "Flame graph" on a loaded trace page to the first
// animation frame after its first complete draw (the layout is computed on that first switch), and
// frame times while zooming in and out with the mouse wheel (one wheel event per frame).
import { startClew, ingest, launchChromium, artifactPath } from './lib/clew.mjs';
import { largeTrace } from './lib/traces.mjs';
import os from 'node:os';
import http from 'node:http';

const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
const SPANS = arg('spans', 50000);
const RUNS = arg('runs', 5);
const BATCH = arg('batch', 5000);
const TRACE_ID = 'b16b00b5000000000000000000050000';

const median = (xs) => {
  const s = xs.slice().sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const fmt = (x) => `${Math.round(x)}`;

const server = await startClew();
let browser;
try {
  const t0 = BigInt(Date.now() - 120_000) * 1_000_000n;
  let t = performance.now();
  for (const req of largeTrace(TRACE_ID, SPANS, t0, BATCH)) await ingest(server, req);
  const ingestMs = performance.now() - t;
  console.log(`ingested ${SPANS} spans in batches of ${BATCH}: ${fmt(ingestMs)} ms`);

  const api = [];
  let bytes = 0;
  for (let i = 0; i < 3; i++) {
    t = performance.now();
    const r = await fetch(`${server.query}/api/traces/${TRACE_ID}`);
    const body = await r.text();
    api.push(performance.now() - t);
    bytes = body.length;
    const n = JSON.parse(body).data[0].spans.length;
    if (n !== SPANS) throw new Error(`trace has ${n} spans, expected ${SPANS}`);
  }
  console.log(`GET /api/traces/{id} from Node: ${api.map(fmt).join(', ')} ms (${(bytes / 1e6).toFixed(1)} MB)`);
  const uiApi = [];
  let uiBytes = 0;
  for (let i = 0; i < 3; i++) {
    t = performance.now();
    const r = await fetch(`${server.query}/api/ui/traces/${TRACE_ID}`);
    const body = await r.text();
    uiApi.push(performance.now() - t);
    uiBytes = body.length;
    const n = JSON.parse(body).spans.length;
    if (n !== SPANS) throw new Error(`ui trace has ${n} spans, expected ${SPANS}`);
  }
  console.log(`GET /api/ui/traces/{id} from Node: ${uiApi.map(fmt).join(', ')} ms (${(uiBytes / 1e6).toFixed(1)} MB)`);

  browser = await launchChromium();
  const cached = await (await fetch(`${server.query}/api/ui/traces/${TRACE_ID}`)).text();

  // Client-only series: a small Node server answers /api/ui/traces/{id} from memory (everything
  // else is proxied to clew), to separate the UI's own cost from the server's.
  const mem = http.createServer(async (req, res) => {
    if (req.url.startsWith(`/api/ui/traces/${TRACE_ID}`)) {
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(cached) });
      res.end(cached);
      return;
    }
    const r = await fetch(`${server.query}${req.url}`);
    const body = Buffer.from(await r.arrayBuffer());
    res.writeHead(r.status, { 'Content-Type': r.headers.get('content-type') || 'application/octet-stream' });
    res.end(body);
  });
  await new Promise((r) => mem.listen(0, '127.0.0.1', r));
  const memUrl = `http://127.0.0.1:${mem.address().port}`;
  const clientOnly = [];
  for (let i = 0; i < RUNS; i++) {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await ctx.newPage();
    await page.goto(`${memUrl}/trace/${TRACE_ID}`);
    await page.waitForFunction(() => window.__clewReady === true, null, { timeout: 60000 });
    const m = await page.evaluate(() => ({ tti: window.__clewReadyAt, fetch: window.__clewTiming.fetchMs, build: window.__clewTiming.buildMs }));
    clientOnly.push(m);
    console.log(`client-only run ${i + 1}: TTI ${fmt(m.tti)} ms (fetch+parse ${fmt(m.fetch)} ms, tree ${fmt(m.build)} ms)`);
    await ctx.close();
  }
  mem.close();

  const runs = [];
  for (let i = 0; i < RUNS; i++) {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await ctx.newPage();
    await page.goto(`${server.query}/trace/${TRACE_ID}`);
    await page.waitForFunction(() => window.__clewReady === true, null, { timeout: 60000 });
    const m = await page.evaluate(() => ({
      tti: window.__clewReadyAt,
      fetch: window.__clewTiming.fetchMs,
      build: window.__clewTiming.buildMs,
      rows: document.querySelectorAll('#waterfall .row:not([hidden])').length,
      domNodes: document.getElementsByTagName('*').length,
    }));
    let scroll = null;
    if (i === 0) {
      // Scroll to the bottom in 150 steps, one per animation frame; count long frames.
      scroll = await page.evaluate(
        () =>
          new Promise((resolve) => {
            const el = document.getElementById('waterfall');
            const steps = 150;
            const max = el.scrollHeight - el.clientHeight;
            const frames = [];
            let k = 0;
            let last = performance.now();
            const tick = (now) => {
              frames.push(now - last);
              last = now;
              if (k > steps) {
                const lastRow = [...document.querySelectorAll('#waterfall .row:not([hidden])')].pop();
                resolve({
                  frames: frames.length,
                  long: frames.filter((f) => f > 50).length,
                  over33: frames.filter((f) => f > 33.4).length,
                  max: Math.max(...frames),
                  median: frames.slice().sort((a, b) => a - b)[frames.length >> 1],
                  scrollTop: el.scrollTop,
                  max_: max,
                  lastRowVisible: !!lastRow,
                  rowsInDom: document.querySelectorAll('#waterfall .row').length,
                });
                return;
              }
              el.scrollTop = Math.round((max * k) / steps);
              k++;
              requestAnimationFrame(tick);
            };
            requestAnimationFrame((now) => {
              last = now;
              requestAnimationFrame(tick);
            });
          }),
      );
    }
    runs.push({ ...m, scroll });
    console.log(
      `run ${i + 1}: TTI ${fmt(m.tti)} ms (fetch+parse ${fmt(m.fetch)} ms, tree ${fmt(m.build)} ms), rows in DOM ${m.rows}, DOM nodes ${m.domNodes}` +
        (scroll ? `; scroll: ${scroll.frames} frames, ${scroll.long} > 50 ms, ${scroll.over33} > 33 ms, median ${scroll.median.toFixed(1)} ms, max ${fmt(scroll.max)} ms, rows in DOM ${scroll.rowsInDom}` : ''),
    );
    if (i === 0) await page.screenshot({ path: artifactPath('large-trace-50k.png') });
    await ctx.close();
  }
  // Flame graph: switch time (layout + first draw) and frames while zooming.
  const flame = [];
  for (let i = 0; i < RUNS; i++) {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await ctx.newPage();
    await page.goto(`${server.query}/trace/${TRACE_ID}`);
    await page.waitForFunction(() => window.__clewReady === true, null, { timeout: 60000 });
    const m = await page.evaluate(
      () =>
        new Promise((resolve) => {
          const t = performance.now();
          document.getElementById('view-flame').click();
          requestAnimationFrame(() => {
            const f = window.__clewFlame;
            resolve({ switchMs: performance.now() - t, layoutMs: f.timing.layoutMs, drawMs: f.timing.drawMs, drawn: f.stats.drawn, culled: f.stats.culled });
          });
        }),
    );
    let zoom = null;
    if (i === 0) {
      // 60 wheel events zooming in around the middle of the canvas, then 60 zooming out.
      zoom = await page.evaluate(
        () =>
          new Promise((resolve) => {
            const c = document.getElementById('flame-canvas');
            const b = c.getBoundingClientRect();
            const frames = [];
            const draws = [];
            let k = 0;
            let last = performance.now();
            let narrowest = Infinity;
            const tick = (now) => {
              frames.push(now - last);
              last = now;
              const v = window.__clewFlame.view;
              narrowest = Math.min(narrowest, v[1] - v[0]);
              if (k > 0) draws.push(window.__clewFlame.stats.drawMs);
              if (k >= 120) {
                const sorted = frames.slice().sort((a, b) => a - b);
                const ds = draws.slice().sort((a, b) => a - b);
                resolve({
                  frames: frames.length,
                  long: frames.filter((f) => f > 50).length,
                  over33: frames.filter((f) => f > 33.4).length,
                  median: sorted[sorted.length >> 1],
                  max: sorted[sorted.length - 1],
                  drawMedian: ds[ds.length >> 1],
                  drawMax: ds[ds.length - 1],
                  narrowestViewUs: Math.round(narrowest),
                });
                return;
              }
              c.dispatchEvent(new WheelEvent('wheel', { deltaY: k < 60 ? -60 : 60, clientX: b.left + b.width / 2, clientY: b.top + 60, bubbles: true, cancelable: true }));
              k++;
              requestAnimationFrame(tick);
            };
            requestAnimationFrame((now) => {
              last = now;
              requestAnimationFrame(tick);
            });
          }),
      );
    }
    flame.push({ ...m, zoom });
    console.log(
      `flame run ${i + 1}: switch ${fmt(m.switchMs)} ms (layout ${fmt(m.layoutMs)} ms, first draw ${fmt(m.drawMs)} ms; ${m.drawn} boxes drawn, ${m.culled} sub-pixel spans merged)` +
        (zoom ? `; zoom: ${zoom.frames} frames, median ${zoom.median.toFixed(1)} ms, ${zoom.over33} > 33 ms, ${zoom.long} > 50 ms, max ${fmt(zoom.max)} ms, draw median ${zoom.drawMedian.toFixed(1)} ms, max ${zoom.drawMax.toFixed(1)} ms, narrowest view ${fmt(zoom.narrowestViewUs)} µs` : ''),
    );
    if (i === 0) await page.screenshot({ path: artifactPath('large-trace-50k-flame.png') });
    await ctx.close();
  }
  const tti = runs.map((r) => r.tti);
  console.log(
    JSON.stringify(
      {
        spans: SPANS,
        cores: os.cpus().length,
        ttiMs: tti.map(Math.round),
        ttiMedianMs: Math.round(median(tti)),
        fetchMedianMs: Math.round(median(runs.map((r) => r.fetch))),
        buildMedianMs: Math.round(median(runs.map((r) => r.build))),
        serverApiMs: api.map(Math.round),
        serverUiApiMs: uiApi.map(Math.round),
        uiResponseMB: Number((uiBytes / 1e6).toFixed(1)),
        clientOnlyTtiMs: clientOnly.map((r) => Math.round(r.tti)),
        clientOnlyTtiMedianMs: Math.round(median(clientOnly.map((r) => r.tti))),
        responseMB: Number((bytes / 1e6).toFixed(1)),
        scroll: runs[0].scroll,
        flameSwitchMs: flame.map((f) => Math.round(f.switchMs)),
        flameSwitchMedianMs: Math.round(median(flame.map((f) => f.switchMs))),
        flameLayoutMedianMs: Math.round(median(flame.map((f) => f.layoutMs))),
        flameDrawMedianMs: Math.round(median(flame.map((f) => f.drawMs))),
        flameZoom: flame[0].zoom,
      },
      null,
      1,
    ),
  );
} finally {
  if (browser) await browser.close();
  await server.stop();
}
