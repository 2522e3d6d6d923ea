// Jaeger remote sampling with a real OpenTelemetry JS SDK sampler
// (@opentelemetry/sampler-jaeger-remote) against the real `clew` binary: strategies from a
// Jaeger strategies.json, and adaptive per-operation probabilities computed from observed traffic.
//
//   CLEW_BIN=/abs/path/to/target/debug/clew npm test
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { JaegerRemoteSampler } from '@opentelemetry/sampler-jaeger-remote';
import {
  AlwaysOffSampler,
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';

const BIN = process.env.CLEW_BIN;

// The sampler polls with setInterval and never stops; unref its timers so the test process ends.
const realSetInterval = globalThis.setInterval;
globalThis.setInterval = (...args) => {
  const t = realSetInterval(...args);
  t.unref?.();
  return t;
};

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const servers = [];
const dirs = [];

async function startClew(configBody, files = {}) {
  assert.ok(BIN, 'set CLEW_BIN to the clew binary');
  const dir = mkdtempSync(join(tmpdir(), 'clew-sampling-'));
  dirs.push(dir);
  for (const [name, body] of Object.entries(files)) writeFileSync(join(dir, name), body);
  const [grpc, http, zipkin, query, sampling, tempo] = await Promise.all(
    [0, 0, 0, 0, 0, 0].map(() => freePort()),
  );
  // No config body: Clew's defaults, only the listen addresses moved to free ports.
  const configArgs = [];
  if (configBody === null) {
    configArgs.push('--sampling-endpoint', `127.0.0.1:${sampling}`);
  } else {
    const cfg = join(dir, 'clew.yaml');
    writeFileSync(cfg, configBody.replaceAll('SAMPLING_PORT', String(sampling)));
    configArgs.push('--config', cfg);
  }
  const child = spawn(
    BIN,
    [
      'serve', ...configArgs, '--data-dir', join(dir, 'data'),
      '--otlp-grpc-endpoint', `127.0.0.1:${grpc}`,
      '--otlp-http-endpoint', `127.0.0.1:${http}`,
      '--zipkin-endpoint', `127.0.0.1:${zipkin}`,
      '--query-endpoint', `127.0.0.1:${query}`,
      '--tempo-endpoint', `127.0.0.1:${tempo}`,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  child.stderr.on('data', (d) => { log += d; });
  servers.push(child);
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      const r = await fetch(`http://127.0.0.1:${sampling}/sampling?service=x`);
      if (r.ok) break;
    } catch { /* not up yet */ }
    if (Date.now() > deadline || child.exitCode !== null) {
      throw new Error(`clew did not start:\n${log}`);
    }
    await sleep(100);
  }
  return {
    sampling: `http://127.0.0.1:${sampling}`,
    otlp: `http://127.0.0.1:${http}`,
    query: `http://127.0.0.1:${query}`,
  };
}

after(async () => {
  for (const c of servers) {
    if (c.exitCode === null) {
      c.kill('SIGTERM');
      await new Promise((r) => c.once('exit', r));
    }
  }
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A provider whose sampler is the remote one; returns how many of `n` spans named `name` were sampled. */
function sampledCount(sampler, name, n) {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({
    sampler,
    spanProcessors: [new SimpleSpanProcessor(exporter)],
  });
  const tracer = provider.getTracer('clew-test');
  for (let i = 0; i < n; i++) tracer.startSpan(name).end();
  return exporter.getFinishedSpans().length;
}

async function remoteSampler(endpoint, serviceName) {
  const sampler = new JaegerRemoteSampler({
    endpoint,
    serviceName,
    poolingInterval: 100,
    initialSampler: new AlwaysOffSampler(),
  });
  // Wait for the first poll to replace the initial (always-off) sampler.
  const deadline = Date.now() + 10_000;
  while (sampledCount(sampler, 'POST /pay', 20) === 0 && sampledCount(sampler, 'any', 200) === 0) {
    assert.ok(Date.now() < deadline, 'sampler never adopted the remote strategy');
    await sleep(100);
  }
  return sampler;
}

const STRATEGIES = JSON.stringify({
  service_strategies: [
    {
      service: 'checkout',
      type: 'probabilistic',
      param: 0.5,
      operation_strategies: [
        { operation: 'GET /health', type: 'probabilistic', param: 0.0 },
        { operation: 'POST /pay', type: 'probabilistic', param: 1.0 },
      ],
    },
  ],
  default_strategy: {
    type: 'probabilistic',
    param: 0.1,
    operation_strategies: [{ operation: 'GET /metrics', type: 'probabilistic', param: 0.0 }],
  },
});

test('with no configuration, an SDK pointed at Clew gets the default strategy (keep everything)', async () => {
  const clew = await startClew(null);
  const raw = await (await fetch(`${clew.sampling}/sampling?service=checkout`)).json();
  assert.deepEqual(raw, { strategyType: 'PROBABILISTIC', probabilisticSampling: { samplingRate: 1 } });
  const q = await (await fetch(`${clew.query}/api/sampling?service=checkout`)).json();
  assert.deepEqual(q, raw, 'the query port answers the same');
  const sampler = await remoteSampler(clew.sampling, 'checkout');
  assert.equal(sampledCount(sampler, 'GET /cart', 500), 500);
});

test('the default probability is configurable without a strategies file', async () => {
  const clew = await startClew(`extensions:
  jaeger_remote_sampling:
    http: {endpoint: 127.0.0.1:SAMPLING_PORT}
    source: {default_sampling_probability: 0.25}
`);
  const raw = await (await fetch(`${clew.sampling}/sampling?service=anything`)).json();
  assert.equal(raw.probabilisticSampling.samplingRate, 0.25);
  const sampler = await remoteSampler(clew.sampling, 'anything');
  const n = sampledCount(sampler, 'GET /x', 4000);
  assert.ok(n > 850 && n < 1150, `default 0.25: ${n} of 4000`);
});

test('SDK adopts per-operation strategies from a Jaeger strategies file', async () => {
  const clew = await startClew(
    `extensions:
  jaeger_remote_sampling:
    http: {endpoint: 127.0.0.1:SAMPLING_PORT}
    source: {file: strategies.json}
service:
  extensions: [jaeger_remote_sampling]
`,
    { 'strategies.json': STRATEGIES },
  );
  const raw = await (await fetch(`${clew.sampling}/sampling?service=checkout`)).json();
  assert.equal(raw.strategyType, 'PROBABILISTIC');
  assert.equal(raw.operationSampling.defaultSamplingProbability, 0.5);

  const sampler = await remoteSampler(clew.sampling, 'checkout');
  assert.equal(sampledCount(sampler, 'POST /pay', 300), 300, 'per-operation 1.0');
  assert.equal(sampledCount(sampler, 'GET /health', 300), 0, 'per-operation 0.0');
  assert.equal(sampledCount(sampler, 'GET /metrics', 300), 0, 'default operation strategy');
  const other = sampledCount(sampler, 'GET /cart', 4000);
  assert.ok(other > 1700 && other < 2300, `service default 0.5: ${other} of 4000`);

  // Another service gets the default strategy (0.1).
  const s2 = await remoteSampler(clew.sampling, 'inventory');
  const n = sampledCount(s2, 'GET /stock', 4000);
  assert.ok(n > 300 && n < 500, `default 0.1: ${n} of 4000`);
  // The query port serves the same strategies.
  const q = await (await fetch(`${clew.query}/api/sampling?service=checkout`)).json();
  assert.deepEqual(q, raw);
});

function otlpRoots(service, name, count) {
  const now = BigInt(Date.now()) * 1_000_000n;
  const spans = [];
  for (let i = 0; i < count; i++) {
    spans.push({
      traceId: randomBytes(16).toString('hex'),
      spanId: randomBytes(8).toString('hex'),
      name,
      kind: 2,
      startTimeUnixNano: String(now),
      endTimeUnixNano: String(now + 1_000_000n),
    });
  }
  return {
    resourceSpans: [{
      resource: { attributes: [{ key: 'service.name', value: { stringValue: service } }] },
      scopeSpans: [{ spans }],
    }],
  };
}

test('adaptive sampling lowers the probability of hot operations and raises cold ones', async () => {
  const clew = await startClew(`extensions:
  jaeger_remote_sampling:
    http: {endpoint: 127.0.0.1:SAMPLING_PORT}
    source:
      adaptive:
        target_samples_per_second: 5
        initial_sampling_probability: 0.2
        min_sampling_probability: 0.001
        max_sampling_probability: 1.0
        calculation_interval_secs: 1
service:
  extensions: [jaeger_remote_sampling]
`);
  // ~400 sampled root spans/s of GET /hot, a trickle of GET /cold.
  const deadline = Date.now() + 20_000;
  let strategy;
  for (;;) {
    for (const [name, n] of [['GET /hot', 100], ['GET /cold', 1]]) {
      const r = await fetch(`${clew.otlp}/v1/traces`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(otlpRoots('shop', name, n)),
      });
      assert.ok(r.ok, `export: ${r.status}`);
    }
    strategy = await (await fetch(`${clew.sampling}/sampling?service=shop`)).json();
    const ops = Object.fromEntries(
      (strategy.operationSampling?.perOperationStrategies ?? []).map((o) => [o.operation, o.probabilisticSampling.samplingRate]),
    );
    if (ops['GET /hot'] !== undefined && ops['GET /hot'] < 0.05 && ops['GET /cold'] > 0.2) break;
    assert.ok(Date.now() < deadline, `adaptive never converged: ${JSON.stringify(strategy)}`);
    await sleep(250);
  }
  assert.equal(strategy.operationSampling.defaultSamplingProbability, 0.2);
  // Strategies are per tenant: another tenant's SDKs learn nothing of this tenant's operations.
  const otherTenant = await (await fetch(`${clew.sampling}/sampling?service=shop`, {
    headers: { 'X-Scope-OrgID': 'other-team' },
  })).json();
  assert.deepEqual(otherTenant.operationSampling.perOperationStrategies, [], JSON.stringify(otherTenant));

  const sampler = await remoteSampler(clew.sampling, 'shop');
  const hot = sampledCount(sampler, 'GET /hot', 4000);
  const cold = sampledCount(sampler, 'GET /cold', 4000);
  const other = sampledCount(sampler, 'GET /new', 4000);
  assert.ok(hot < 200, `hot operation sampled down: ${hot} of 4000`);
  assert.ok(cold > 900, `cold operation sampled up: ${cold} of 4000`);
  assert.ok(other > 650 && other < 950, `unknown operation at the initial 0.2: ${other} of 4000`);
});
