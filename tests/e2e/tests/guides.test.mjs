// Screenshots for the guides (docs/guides/*.md show them): runs a guide's own example code
// (examples/guides/python-sdk/orders.py with the repository's .venv; the Node.js guide's workflow.cjs
// with tests/guides-node's packages) against the real clew, checks
// that the UI shows what the guide says, and saves the PNGs into docs/images/guides/, so the
// pictures in the documentation are of the current UI.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { startClew, launchChromium, sleep, REPO } from '../lib/clew.mjs';

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
