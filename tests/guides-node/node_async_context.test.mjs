// The Node.js guide's code (examples/guides/node-async-context/, docs/guides/node-async-context.md)
// run against the real clew binary, asserting what the guide says: the fixed workflow is one whole
// trace; the queue worker without the captured context starts a new trace, which the trace doctor
// names; without a context manager nothing after an await has a parent.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { startClew, sleep, REPO } from '../e2e/lib/clew.mjs';

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
const EXAMPLE = path.join(REPO, 'examples/guides/node-async-context/workflow.cjs');

let clew;
before(async () => {
  clew = await startClew();
});
after(async () => {
  const exit = await clew?.stop();
  assert.deepEqual(exit, { code: 0, sig: null }, 'clew must exit cleanly on SIGTERM');
});

async function workflow(variant) {
  const service = `orders-node-${randomBytes(3).toString('hex')}`;
  const { stdout } = await run(process.execPath, [EXAMPLE, '--variant', variant], {
    // The examples are CommonJS: NODE_PATH lets them find this package's node_modules, as a
    // reader's own project would have them installed.
    env: { ...process.env, NODE_PATH: path.join(here, 'node_modules'), OTEL_SERVICE_NAME: service,
      OTEL_EXPORTER_OTLP_ENDPOINT: clew.otlpHttp },
    timeout: 60000,
  });
  return { service, traceId: stdout.trim() };
}

async function getJson(url) {
  const r = await fetch(url);
  const body = await r.text();
  assert.equal(r.status, 200, `${url}: ${r.status} ${body}`);
  return JSON.parse(body);
}

async function traceWith(traceId, minSpans) {
  const deadline = Date.now() + 15000;
  for (;;) {
    const r = await fetch(`${clew.query}/api/traces/${traceId}`);
    if (r.ok) {
      const t = (await r.json()).data[0];
      if (t.spans.length >= minSpans) return t;
    }
    if (Date.now() > deadline) throw new Error(`trace ${traceId}: fewer than ${minSpans} spans`);
    await sleep(200);
  }
}

async function tracesOf(service) {
  const q = new URLSearchParams({ service, limit: '100', lookback: '1h' });
  return (await getJson(`${clew.query}/api/traces?${q}`)).data;
}

const parentOf = (s) => s.references.find((r) => r.refType === 'CHILD_OF')?.spanID ?? null;
const names = (t) => t.spans.map((s) => s.operationName).sort();

function assertWhole(t) {
  const ids = new Set(t.spans.map((s) => s.spanID));
  assert.deepEqual(t.spans.filter((s) => parentOf(s) && !ids.has(parentOf(s))).map((s) => s.operationName), [],
    'every parent present');
  const roots = t.spans.filter((s) => !parentOf(s));
  assert.equal(roots.length, 1, `one root, got ${roots.map((s) => s.operationName)}`);
  return roots[0];
}

async function findings(service, count) {
  const deadline = Date.now() + 20000;
  for (;;) {
    const report = await getJson(`${clew.query}/api/doctor/findings?since=10m&grace=0s`);
    const mine = report.findings.filter((f) => f.from_service === service || f.to_service === service);
    if (mine.reduce((n, f) => n + f.count, 0) >= count || Date.now() > deadline) return mine;
    await sleep(300);
  }
}

test('fixed: awaits, a detached promise, a timer and the queued job are one whole trace', async () => {
  const { service, traceId } = await workflow('fixed');
  const t = await traceWith(traceId, 5);
  const root = assertWhole(t);
  assert.equal(root.operationName, 'handle-order');
  assert.deepEqual(names(t), ['handle-order', 'load-cart', 'schedule-reminder', 'send-email', 'write-audit-log']);
  for (const s of t.spans.filter((s) => s !== root)) assert.equal(parentOf(s), root.spanID, s.operationName);
  assert.deepEqual(await findings(service, 0), []);
});

test('broken queue: the job runs in the worker\'s context and starts a new trace', async () => {
  const { service, traceId } = await workflow('broken-queue');
  const t = await traceWith(traceId, 4);
  assertWhole(t);
  assert.deepEqual(names(t), ['handle-order', 'load-cart', 'schedule-reminder', 'write-audit-log']);
  const others = (await tracesOf(service)).filter((x) => x.traceID !== traceId);
  assert.equal(others.length, 1);
  assert.deepEqual(names(others[0]), ['send-email']);

  const found = await findings(service, 1);
  assert.deepEqual(found.map((f) => f.kind), ['context_lost_in_service'], JSON.stringify(found));
  assert.equal(found[0].operation, 'handle-order');
  assert.equal(found[0].message,
    `context lost inside ${service} on handle-order: new trace 'send-email' started while it ran, 1 occurrence`);
});

test('no context manager: every span is a trace of its own', async () => {
  const { service } = await workflow('no-context-manager');
  let traces = [];
  const deadline = Date.now() + 15000;
  while (Date.now() < deadline && traces.length < 5) {
    traces = await tracesOf(service);
    await sleep(200);
  }
  assert.equal(traces.length, 5);
  assert.ok(traces.every((t) => t.spans.length === 1 && !parentOf(t.spans[0])));
});
