// Screenshots for the guides (docs/guides/*.md show them): runs a guide's own example code
// (the Python examples under examples/guides/ with the repository's .venv; the Node.js guide's
// workflow.cjs with tests/guides-node's packages) against the real clew, checks
// that the UI shows what the guide says, and saves the PNGs into docs/images/guides/, so the
// pictures in the documentation are of the current UI.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { startClew, launchChromium, sleep, freePort, REPO } from '../lib/clew.mjs';

const run = promisify(execFile);
const VIEWPORT = { width: 1280, height: 720 };
const IMAGES = path.join(REPO, 'docs/images/guides');
const PYTHON = path.join(REPO, '.venv/bin/python');

async function orders(server, variant, service) {
  const { stdout } = await run(PYTHON, ['orders.py', '--variant', variant], {
    cwd: path.join(REPO, 'examples/guides/python-sdk'),
    env: { ...process.env, OTEL_SERVICE_NAME: service, OTEL_EXPORTER_OTLP_ENDPOINT: server.otlpGrpcUrl },
    timeout: 60000,
  });
  return stdout.trim();
}

// Runs examples/guides/<guide>/<script> with the .venv's Python to completion; returns its stdout.
async function example(guide, script, args, env) {
  const { stdout } = await run(PYTHON, [script, ...args], {
    cwd: path.join(REPO, 'examples/guides', guide),
    env: { ...process.env, ...env },
    timeout: 60000,
  });
  return stdout.trim();
}

function grpcUrl(server) {
  // The examples export over OTLP/gRPC; startClew names the HTTP port only.
  return `http://${server.proc.spawnargs[server.proc.spawnargs.indexOf('--otlp-grpc-endpoint') + 1]}`;
}

async function jaegerTrace(server, traceId) {
  const r = await fetch(`${server.query}/api/traces/${traceId}`);
  assert.equal(r.status, 200);
  return (await r.json()).data[0];
}

// The Doctor page leaves out traces younger than 30 s (they may still be receiving spans). Rather
// than wait, the tests ask for grace=0s, which is the same report 30 s early.
const doctorNow = (page) => page.route('**/api/doctor/findings?*', (route) => {
  const url = new URL(route.request().url());
  url.searchParams.set('grace', '0s');
  return route.continue({ url: url.toString() });
});

async function waitTrace(server, traceId, spans) {
  const deadline = Date.now() + 15000;
  for (;;) {
    const r = await fetch(`${server.query}/api/traces/${traceId}`);
    if (r.ok && (await r.json()).data[0].spans.length >= spans) return;
    if (Date.now() > deadline) throw new Error(`trace ${traceId} did not reach ${spans} spans`);
    await sleep(200);
  }
}

async function open(browser, url, setup) {
  const ctx = await browser.newContext({ viewport: VIEWPORT, colorScheme: 'light' });
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  if (setup) await setup(page);
  await page.goto(url);
  await page.waitForFunction(() => document.body.dataset.ready === '1', null, { timeout: 20000 });
  return { ctx, page, errors };
}

describe('guide screenshots: OpenTelemetry Python SDK', () => {
  let server;
  let browser;
  before(async () => {
    assert.ok(existsSync(PYTHON), `${PYTHON} missing: run scripts/setup-test-deps`);
    mkdirSync(IMAGES, { recursive: true });
    server = await startClew();
    // The example exports over OTLP/gRPC like the guide; startClew names the HTTP port only.
    const grpcPort = server.proc.spawnargs[server.proc.spawnargs.indexOf('--otlp-grpc-endpoint') + 1];
    server.otlpGrpcUrl = `http://${grpcPort}`;
    browser = await launchChromium();
  });
  after(async () => {
    if (browser) await browser.close();
    if (server) await server.stop();
  });

  it('the fixed trace is one waterfall: process-order over its tasks and both invoices', async () => {
    const service = 'orders';
    const traceId = await orders(server, 'fixed', service);
    await waitTrace(server, traceId, 6);
    const { ctx, page, errors } = await open(browser, `${server.query}/trace/${traceId}`);
    await page.waitForSelector('#waterfall .row');
    const ops = await page.locator('#waterfall .row .op').allTextContents();
    assert.equal(ops.length, 6, ops.join(', '));
    assert.match(ops[0], /process-order/);
    assert.equal(ops.filter((o) => /render-invoice/.test(o)).length, 2);
    await page.screenshot({ path: path.join(IMAGES, 'python-sdk-trace.png') });
    assert.deepEqual(errors, []);
    await ctx.close();
  });

  it('the broken variant is named on the Doctor page', async () => {
    const service = 'orders';
    await orders(server, 'broken', service);
    // The Doctor page leaves out traces younger than 30 s (they may still be receiving spans).
    // Rather than wait, the test asks for grace=0s, which is the same report 30 s early.
    const setup = (page) => page.route('**/api/doctor/findings?*', (route) => {
      const url = new URL(route.request().url());
      url.searchParams.set('grace', '0s');
      return route.continue({ url: url.toString() });
    });
    const deadline = Date.now() + 20000;
    for (;;) {
      const { ctx, page, errors } = await open(browser, `${server.query}/doctor`, setup);
      const row = page.locator('section.doctor-kind[data-kind="context_lost_in_service"] tr.finding');
      if ((await row.count()) === 1) {
        const text = await row.textContent();
        assert.match(text, /process-order/);
        assert.match(text, /render-invoice/);
        await page.screenshot({ path: path.join(IMAGES, 'python-sdk-doctor.png') });
        assert.deepEqual(errors, []);
        await ctx.close();
        break;
      }
      await ctx.close();
      if (Date.now() > deadline) throw new Error('no context_lost_in_service finding on the Doctor page');
      await sleep(500);
    }
  });
});

describe('guide screenshots: orphaned spans in async Node.js', () => {
  let server;
  let browser;
  before(async () => {
    mkdirSync(IMAGES, { recursive: true });
    server = await startClew();
    browser = await launchChromium();
  });
  after(async () => {
    if (browser) await browser.close();
    if (server) await server.stop();
  });

  it('the fixed workflow: detached work extends past the request span in one trace', async () => {
    // The example's packages are installed by tests/guides-node (scripts/setup-test-deps).
    const modules = path.join(REPO, 'tests/guides-node/node_modules');
    assert.ok(existsSync(modules), `${modules} missing: run scripts/setup-test-deps`);
    const { stdout } = await run(process.execPath, ['workflow.cjs', '--variant', 'fixed'], {
      cwd: path.join(REPO, 'examples/guides/node-async-context'),
      env: { ...process.env, NODE_PATH: modules, OTEL_SERVICE_NAME: 'orders', OTEL_EXPORTER_OTLP_ENDPOINT: server.otlpHttp },
      timeout: 60000,
    });
    const traceId = stdout.trim();
    await waitTrace(server, traceId, 5);
    const { ctx, page, errors } = await open(browser, `${server.query}/trace/${traceId}`);
    await page.waitForSelector('#waterfall .row');
    const ops = await page.locator('#waterfall .row .op').allTextContents();
    assert.equal(ops.length, 5, ops.join(', '));
    assert.match(ops[0], /handle-order/);
    await page.screenshot({ path: path.join(IMAGES, 'node-async-context-trace.png') });
    assert.deepEqual(errors, []);
    await ctx.close();
  });
});

describe('guide screenshots: dropped spans in async FastAPI routes', () => {
  let server;
  let browser;
  before(async () => {
    assert.ok(existsSync(PYTHON), `${PYTHON} missing: run scripts/setup-test-deps`);
    mkdirSync(IMAGES, { recursive: true });
    server = await startClew();
    browser = await launchChromium();
  });
  after(async () => {
    if (browser) await browser.close();
    if (server) await server.stop();
  });

  it('the Doctor page names GET /report/broken and nothing about /report/fixed', async () => {
    const service = 'reports';
    const port = await freePort();
    const app = spawn(PYTHON, ['app.py', '--port', String(port)], {
      cwd: path.join(REPO, 'examples/guides/fastapi-dropped-spans'),
      env: { ...process.env, OTEL_SERVICE_NAME: service, OTEL_EXPORTER_OTLP_ENDPOINT: server.otlpHttp },
      stdio: 'ignore',
    });
    let exited = null;
    const done = new Promise((resolve) => app.on('exit', (code, sig) => resolve((exited = { code, sig }))));
    try {
      const deadline = Date.now() + 30000;
      for (;;) {
        assert.equal(exited, null, 'app.py exited before serving');
        try {
          if ((await fetch(`http://127.0.0.1:${port}/docs`)).ok) break;
        } catch {
          /* not listening yet */
        }
        if (Date.now() > deadline) throw new Error('app.py did not start');
        await sleep(100);
      }
      for (let i = 0; i < 3; i++) {
        for (const variant of ['broken', 'fixed']) {
          const r = await fetch(`http://127.0.0.1:${port}/report/${variant}`);
          assert.deepEqual(await r.json(), { report: variant, rows: 3 });
        }
      }
    } finally {
      // The app exports on shutdown (the guide's lifespan flush).
      if (!exited) app.kill('SIGTERM');
      await done;
    }
    const deadline = Date.now() + 20000;
    for (;;) {
      const { ctx, page, errors } = await open(browser, `${server.query}/doctor`, doctorNow);
      const rows = page.locator('tr.finding');
      const row = page.locator('section.doctor-kind[data-kind="context_lost_in_service"] tr.finding');
      if ((await row.count()) === 1 && (await rows.count()) === 1) {
        const text = await row.textContent();
        assert.match(text, /GET \/report\/broken/);
        assert.match(text, /build-report/);
        assert.doesNotMatch(await page.textContent('body'), /report\/fixed/);
        await page.screenshot({ path: path.join(IMAGES, 'fastapi-dropped-spans-doctor.png') });
        assert.deepEqual(errors, []);
        await ctx.close();
        break;
      }
      await ctx.close();
      if (Date.now() > deadline) throw new Error('no single context_lost_in_service finding on the Doctor page');
      await sleep(500);
    }
  });
});

describe('guide screenshots: tail-based sampling', () => {
  let server;
  let browser;
  before(async () => {
    assert.ok(existsSync(PYTHON), `${PYTHON} missing: run scripts/setup-test-deps`);
    mkdirSync(IMAGES, { recursive: true });
    server = await startClew({
      extraArgs: ['--config', path.join(REPO, 'examples/config/tail-errors-slow-10pct.yaml')],
    });
    browser = await launchChromium();
  });
  after(async () => {
    if (browser) await browser.close();
    if (server) await server.stop();
  });

  it('search shows only kept traces: every error and slow trace, a tenth of the rest', async () => {
    const service = 'checkout';
    const ids = JSON.parse(await example('tail-sampling', 'send_traces.py', ['--normal', '40', '--errors', '3', '--slow', '3'],
      { OTEL_SERVICE_NAME: service, OTEL_EXPORTER_OTLP_ENDPOINT: grpcUrl(server) }));
    const must = [...ids.error, ...ids.slow];
    // Decided root_send_delay (2 s) after each root arrived.
    const deadline = Date.now() + 30000;
    for (;;) {
      const r = await fetch(`${server.query}/api/traces?service=${service}&limit=1000&lookback=1h`);
      const got = new Set((await r.json()).data.map((t) => t.traceID));
      if (must.every((i) => got.has(i))) break;
      if (Date.now() > deadline) throw new Error('error and slow traces were not all kept');
      await sleep(500);
    }
    await sleep(3000); // the ordinary traces are decided by now too
    const { ctx, page, errors } = await open(browser, `${server.query}/search?service=${service}&lookback=1h&limit=100`);
    await page.waitForSelector('tr.result');
    const shown = await page.locator('tr.result').evaluateAll((rows) => rows.map((r) => r.dataset.traceId));
    for (const i of must) assert.ok(shown.includes(i), `kept trace ${i} not in the results`);
    const normal = shown.filter((i) => ids.normal.includes(i));
    assert.equal(shown.length, must.length + normal.length);
    assert.ok(normal.length < ids.normal.length, `all ${ids.normal.length} ordinary traces were kept`);
    assert.ok((await page.locator('svg.scatter circle.dot.err').count()) >= ids.error.length);
    await page.screenshot({ path: path.join(IMAGES, 'tail-sampling-search.png') });
    assert.deepEqual(errors, []);
    await ctx.close();
  });
});

describe('guide screenshots: user ids in baggage', () => {
  const SECRET = 'guide-baggage-secret-0123456789abcdef';
  let server;
  let browser;
  let saved;
  before(async () => {
    assert.ok(existsSync(PYTHON), `${PYTHON} missing: run scripts/setup-test-deps`);
    mkdirSync(IMAGES, { recursive: true });
    // Clew reads the secret from the environment it starts in, as the guide's config says.
    saved = process.env.CLEW_BAGGAGE_SECRET;
    process.env.CLEW_BAGGAGE_SECRET = SECRET;
    server = await startClew({
      extraArgs: ['--config', path.join(REPO, 'examples/guides/baggage-user-ids/clew.yaml')],
    });
    browser = await launchChromium();
  });
  after(async () => {
    if (saved === undefined) delete process.env.CLEW_BAGGAGE_SECRET;
    else process.env.CLEW_BAGGAGE_SECRET = saved;
    if (browser) await browser.close();
    if (server) await server.stop();
  });

  it('span detail shows the pseudonym and the allowlisted plan, not the raw id or session.id', async () => {
    // --leak-raw-id: the service puts the raw id in baggage; Clew still stores only the pseudonym.
    const out = JSON.parse(await example('baggage-user-ids', 'service.py', ['--user-id', 'user-4242', '--leak-raw-id'],
      { OTEL_SERVICE_NAME: 'web', OTEL_EXPORTER_OTLP_ENDPOINT: grpcUrl(server), CLEW_BAGGAGE_SECRET: SECRET }));
    await waitTrace(server, out.trace_id, 2);
    const t = await jaegerTrace(server, out.trace_id);
    const root = t.spans.find((s) => !s.references.some((r) => r.refType === 'CHILD_OF'));
    const { ctx, page, errors } = await open(browser, `${server.query}/trace/${out.trace_id}`);
    await page.waitForSelector('#waterfall .row');
    await page.click(`#waterfall .row[data-span-id="${root.spanID}"]`);
    await page.waitForSelector('#span-detail:not([hidden])');
    const detail = await page.textContent('#span-detail');
    assert.ok(detail.includes(out.pseudonym), detail);
    assert.match(detail, /tenant\.plan\s*gold/);
    assert.doesNotMatch(detail, /session\.id/);
    assert.doesNotMatch(await page.textContent('body'), /user-4242/);
    await page.screenshot({ path: path.join(IMAGES, 'baggage-user-ids-span.png') });
    assert.deepEqual(errors, []);
    await ctx.close();
  });
});

describe('guide screenshots: manual spans', () => {
  let server;
  let browser;
  before(async () => {
    assert.ok(existsSync(PYTHON), `${PYTHON} missing: run scripts/setup-test-deps`);
    mkdirSync(IMAGES, { recursive: true });
    server = await startClew();
    browser = await launchChromium();
  });
  after(async () => {
    if (browser) await browser.close();
    if (server) await server.stop();
  });

  it('the checkout: apply-discount failed with its exception event, checkout went on', async () => {
    const ids = JSON.parse(await example('manual-spans', 'checkout.py', [],
      { OTEL_SERVICE_NAME: 'shop', OTEL_EXPORTER_OTLP_ENDPOINT: grpcUrl(server) }));
    await waitTrace(server, ids.checkout, 3);
    const t = await jaegerTrace(server, ids.checkout);
    const disc = t.spans.find((s) => s.operationName === 'apply-discount');
    const { ctx, page, errors } = await open(browser, `${server.query}/trace/${ids.checkout}`);
    await page.waitForSelector('#waterfall .row');
    const ops = await page.locator('#waterfall .row .op').allTextContents();
    assert.equal(ops.length, 3, ops.join(', '));
    assert.match(ops[0], /checkout/);
    await page.click(`#waterfall .row[data-span-id="${disc.spanID}"]`);
    await page.waitForSelector('#span-detail:not([hidden])');
    assert.equal(await page.textContent('#detail-op'), 'apply-discount');
    assert.match(await page.textContent('#detail-status'), /ERROR/);
    assert.match(await page.textContent('#span-detail .events'), /exception[\s\S]*coupon SPRING24 expired/);
    assert.match(await page.textContent('#span-detail'), /app\.coupon\s*SPRING24/);
    await page.screenshot({ path: path.join(IMAGES, 'manual-spans-trace.png') });
    assert.deepEqual(errors, []);
    await ctx.close();
  });
});
