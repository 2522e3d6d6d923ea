// Starts the real `clew serve` on free loopback ports with a temporary data dir, and launches
// headless Chromium. Used by the e2e tests and the large-trace benchmark.
import { spawn } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, rmSync, existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(here, '../../..');
export const ARTIFACTS = path.join(REPO, 'tests/artifacts/e2e');

export function clewBin() {
  const bin = process.env.CLEW_BIN ? path.resolve(process.env.CLEW_BIN) : path.join(REPO, 'target/debug/clew');
  if (!existsSync(bin)) throw new Error(`clew binary not found at ${bin}: run \`cargo build -p clew\` or set CLEW_BIN`);
  return bin;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Starts `clew serve` on free ports. A port found free can be taken by a parallel test before
 * clew binds it: a start that fails with "Address already in use" is retried on new ports.
 */
export async function startClew(opts = {}) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startClewOnce(opts);
    } catch (e) {
      if (attempt >= 4 || !/Address already in use/.test(String(e.message))) throw e;
    }
  }
}

async function startClewOnce({ extraArgs = [] } = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), 'clew-e2e-'));
  const [g, h, z, q, sp, tp] = [await freePort(), await freePort(), await freePort(), await freePort(), await freePort(), await freePort()];
  const logPath = path.join(dir, 'clew.log');
  const log = openSync(logPath, 'w');
  const proc = spawn(
    clewBin(),
    [
      'serve',
      '--data-dir', path.join(dir, 'data'),
      '--otlp-grpc-endpoint', `127.0.0.1:${g}`,
      '--otlp-http-endpoint', `127.0.0.1:${h}`,
      '--zipkin-endpoint', `127.0.0.1:${z}`,
      '--query-endpoint', `127.0.0.1:${q}`,
      '--sampling-endpoint', `127.0.0.1:${sp}`,
      '--tempo-endpoint', `127.0.0.1:${tp}`,
      ...extraArgs,
    ],
    { stdio: ['ignore', log, log] },
  );
  let exited = null;
  proc.on('exit', (code, sig) => (exited = { code, sig }));
  const server = {
    proc,
    dir,
    logPath,
    query: `http://127.0.0.1:${q}`,
    tempo: `http://127.0.0.1:${tp}`,
    otlpHttp: `http://127.0.0.1:${h}`,
    logTail: (n = 40) => {
      try {
        return readFileSync(logPath, 'utf8').split('\n').slice(-n).join('\n');
      } catch {
        return '';
      }
    },
    async stop() {
      if (exited) return exited;
      proc.kill('SIGTERM');
      const deadline = Date.now() + 30000;
      while (!exited && Date.now() < deadline) await sleep(50);
      if (!exited) proc.kill('SIGKILL');
      try {
        rmSync(dir, { recursive: true, force: true });
      } catch {
        /* best effort */
      }
      return exited;
    },
  };
  const deadline = Date.now() + 30000;
  for (;;) {
    if (exited) {
      // The whole log: with RUST_BACKTRACE set, the error's backtrace pushes the message out of the tail.
      let full = '';
      try {
        full = readFileSync(logPath, 'utf8');
      } catch {
        /* none */
      }
      const i = full.indexOf('Error: ');
      const error = i >= 0 ? full.slice(i, i + 1500) : '';
      const message = `clew serve exited early (${JSON.stringify(exited)}); error: ${error}\nlog:\n${server.logTail()}`;
      rmSync(dir, { recursive: true, force: true });
      throw new Error(message);
    }
    try {
      const r = await fetch(`${server.query}/ready`);
      if (r.ok) break;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) throw new Error(`clew serve not ready after 30 s; log:\n${server.logTail()}`);
    await sleep(50);
  }
  return server;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** POSTs an OTLP/HTTP JSON ExportTraceServiceRequest. */
export async function ingest(server, body) {
  const r = await fetch(`${server.otlpHttp}/v1/traces`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`ingest failed: ${r.status} ${text.slice(0, 300)}`);
  const parsed = text ? JSON.parse(text) : {};
  if (parsed.partialSuccess && parsed.partialSuccess.rejectedSpans) throw new Error(`spans rejected: ${text}`);
  return parsed;
}

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-quic',
  '--no-first-run',
  '--disable-sync',
];

export async function launchChromium() {
  const { chromium } = await import('playwright-core');
  const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
  if (!existsSync(executablePath)) throw new Error(`Chromium not found at ${executablePath} (apt-get install chromium, or set CHROMIUM)`);
  return chromium.launch({ executablePath, args: CHROMIUM_ARGS });
}

export function artifactPath(name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  return path.join(ARTIFACTS, name);
}
