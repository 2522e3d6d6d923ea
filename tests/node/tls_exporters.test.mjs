// The OpenTelemetry JS SDK's OTLP exporters over mutual TLS against the real `clew` binary:
// @opentelemetry/exporter-trace-otlp-grpc (createSslCredentials(ca, key, cert)) and
// @opentelemetry/exporter-trace-otlp-http (httpAgentOptions {ca, cert, key}); the spans are then
// read back from the query API over HTTPS with the same client certificate, and a client without
// one is refused. Uses the example certificates of examples/config/certs (long-lived, public).
//
//   CLEW_BIN=/abs/path/to/target/debug/clew npm test
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import https from 'node:https';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { context, trace } from '@opentelemetry/api';
import { OTLPTraceExporter as GrpcExporter } from '@opentelemetry/exporter-trace-otlp-grpc';
import { OTLPTraceExporter as HttpExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { createSslCredentials } from '@opentelemetry/otlp-grpc-exporter-base';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';

const BIN = process.env.CLEW_BIN;
const CERTS = join(dirname(fileURLToPath(import.meta.url)), '../../examples/config/certs');
const CA = readFileSync(join(CERTS, 'ca.pem'));
const CLIENT_CERT = readFileSync(join(CERTS, 'client.pem'));
const CLIENT_KEY = readFileSync(join(CERTS, 'client-key.pem'));

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

/** GET over HTTPS; `cert` false = no client certificate. Resolves {status, body} or rejects. */
function httpsGet(url, { cert = true } = {}) {
  return new Promise((resolve, reject) => {
    const req = https.get(
      url,
      {
        ca: CA,
        ...(cert ? { cert: CLIENT_CERT, key: CLIENT_KEY } : {}),
        agent: false,
        timeout: 5000,
      },
      (res) => {
        let body = '';
        res.on('data', (d) => { body += d; });
        res.on('end', () => resolve({ status: res.statusCode, body }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
  });
}

let child;
let dir;
let log = '';
const urls = {};

before(async () => {
  assert.ok(BIN, 'set CLEW_BIN to the clew binary');
  dir = mkdtempSync(join(tmpdir(), 'clew-tls-'));
  const [grpc, http, zipkin, query, sampling, tempo] = await Promise.all([0, 0, 0, 0, 0, 0].map(() => freePort()));
  const tls = `{cert_file: ${join(CERTS, 'server.pem')}, key_file: ${join(CERTS, 'server-key.pem')}, client_ca_file: ${join(CERTS, 'ca.pem')}}`;
  const cfg = join(dir, 'clew.yaml');
  writeFileSync(
    cfg,
    `receivers:
  otlp:
    protocols:
      grpc: {endpoint: 127.0.0.1:${grpc}, tls: ${tls}}
      http: {endpoint: 127.0.0.1:${http}, tls: ${tls}}
  zipkin: {endpoint: 127.0.0.1:${zipkin}, tls: ${tls}}
query: {endpoint: 127.0.0.1:${query}, tls: ${tls}}
tempo: {endpoint: 127.0.0.1:${tempo}, tls: ${tls}}
extensions:
  jaeger_remote_sampling:
    http: {endpoint: 127.0.0.1:${sampling}, tls: ${tls}}
`,
  );
  child = spawn(BIN, ['serve', '--config', cfg, '--data-dir', join(dir, 'data')], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  child.stderr.on('data', (d) => { log += d; });
  Object.assign(urls, {
    grpc: `https://localhost:${grpc}`,
    http: `https://localhost:${http}/v1/traces`,
    query: `https://localhost:${query}`,
  });
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      if ((await httpsGet(`${urls.query}/ready`)).status === 200) break;
    } catch { /* not up yet */ }
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`clew did not start:\n${log}`);
    await sleep(100);
  }
});

after(async () => {
  if (child && child.exitCode === null) {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    assert.equal(child.exitCode, 0, log);
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Two finished spans of one trace for `service`; returns {spans, traceId}. */
function makeSpans(service) {
  const memory = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': service }),
    spanProcessors: [new SimpleSpanProcessor(memory)],
  });
  const tracer = provider.getTracer('node-tls-test');
  const root = tracer.startSpan('GET /secure');
  const ctx = root.spanContext();
  tracer.startSpan('SELECT secrets', {}, trace.setSpan(context.active(), root)).end();
  root.end();
  return { spans: memory.getFinishedSpans(), traceId: ctx.traceId };
}

function exportWith(exporter, spans) {
  return new Promise((resolve) => exporter.export(spans, resolve));
}

async function waitTrace(traceId, spans) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const r = await httpsGet(`${urls.query}/api/traces/${traceId}`);
    if (r.status === 200) {
      const data = JSON.parse(r.body).data;
      if (data?.[0]?.spans?.length >= spans) return data[0];
    }
    assert.ok(Date.now() < deadline, `trace ${traceId} not found over HTTPS (${r.status})`);
    await sleep(50);
  }
}

test('OTLP/gRPC exporter with a client certificate', async () => {
  const service = `node-grpc-mtls-${randomBytes(3).toString('hex')}`;
  const { spans, traceId } = makeSpans(service);
  const exporter = new GrpcExporter({
    url: urls.grpc,
    credentials: createSslCredentials(CA, CLIENT_KEY, CLIENT_CERT),
    timeoutMillis: 10_000,
  });
  const result = await exportWith(exporter, spans);
  await exporter.shutdown();
  assert.equal(result.code, 0, `export failed: ${result.error}\n${log}`);
  const trace = await waitTrace(traceId, 2);
  assert.equal(Object.values(trace.processes)[0].serviceName, service);
});

test('OTLP/HTTP exporter with a client certificate', async () => {
  const service = `node-http-mtls-${randomBytes(3).toString('hex')}`;
  const { spans, traceId } = makeSpans(service);
  const exporter = new HttpExporter({
    url: urls.http,
    httpAgentOptions: { ca: CA, cert: CLIENT_CERT, key: CLIENT_KEY },
    timeoutMillis: 10_000,
  });
  const result = await exportWith(exporter, spans);
  await exporter.shutdown();
  assert.equal(result.code, 0, `export failed: ${result.error}\n${log}`);
  const trace = await waitTrace(traceId, 2);
  assert.equal(trace.spans.length, 2);
});

test('clients without a certificate are refused', async () => {
  await assert.rejects(httpsGet(`${urls.query}/api/services`, { cert: false }));
  const { spans } = makeSpans('node-no-cert');
  const exporter = new HttpExporter({
    url: urls.http,
    httpAgentOptions: { ca: CA },
    timeoutMillis: 3000,
  });
  const result = await exportWith(exporter, spans);
  await exporter.shutdown();
  assert.notEqual(result.code, 0, 'an export without a client certificate was accepted');
});
