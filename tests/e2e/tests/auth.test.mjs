// The web UI with authentication on: the real `clew serve` with bearer tokens on the query port,
// two tenants' traces ingested over OTLP/HTTP, headless Chromium. The pages load without a token;
// the first API call gets a 401, the UI asks for a token, stores it for the tab and retries; then
// it shows the token's tenant's traces and never the other tenant's.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startClew, launchChromium, artifactPath } from '../lib/clew.mjs';

const TOKENS = { 'team-a': 'e2e-token-team-a', 'team-b': 'e2e-token-team-b' };
const TRACE_A = 'a0a0000000000000000000000000a001';
const TRACE_B = 'b0b0000000000000000000000000b002';
// Planted only in team-b's data: must never appear on team-a's pages.
const MARKER_B = 'zz-bravo-secret';

const sha256 = (s) => createHash('sha256').update(s).digest('hex');

function trace(traceId, service, op, t0) {
  const ns = (ms) => String(BigInt(t0) + BigInt(ms) * 1_000_000n);
  const span = (n, parent, name, s, e) => ({
    traceId,
    spanId: `${traceId.slice(0, 6)}${String(n).padStart(10, '0')}`,
    ...(parent ? { parentSpanId: `${traceId.slice(0, 6)}${String(parent).padStart(10, '0')}` } : {}),
    name,
    kind: 2,
    startTimeUnixNano: ns(s),
    endTimeUnixNano: ns(e),
    attributes: [{ key: 'owner', value: { stringValue: service } }],
  });
  return {
    resourceSpans: [
      {
        resource: { attributes: [{ key: 'service.name', value: { stringValue: service } }] },
        scopeSpans: [{ scope: { name: 'e2e-auth' }, spans: [span(1, null, op, 0, 50), span(2, 1, `${op} child`, 5, 30)] }],
      },
    ],
  };
}

async function ingest(server, tenant, body) {
  const r = await fetch(`${server.otlpHttp}/v1/traces`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-Scope-OrgID': tenant },
    body: JSON.stringify(body),
  });
  assert.equal(r.status, 200, `ingest for ${tenant}: ${await r.text()}`);
}

let browser;
let server;
let dir;

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'clew-e2e-auth-'));
  const tokens = path.join(dir, 'tokens.yaml');
  writeFileSync(
    tokens,
    Object.entries(TOKENS)
      .map(([tenant, tok]) => `- {name: ${tenant}, sha256: ${sha256(tok)}, tenants: [${tenant}]}\n`)
      .join(''),
  );
  const config = path.join(dir, 'clew.yaml');
  // Auth on the query port only: the receivers stay open (loopback) so the test can ingest.
  writeFileSync(config, `query:\n  auth:\n    bearer_tokens: {file: ${JSON.stringify(tokens)}}\n`);
  server = await startClew({ extraArgs: ['--config', config] });
  const t0 = BigInt(Date.now() - 60_000) * 1_000_000n;
  await ingest(server, 'team-a', trace(TRACE_A, 'alpha-shop', 'GET /alpha', t0));
  await ingest(server, 'team-b', trace(TRACE_B, MARKER_B, `GET /${MARKER_B}`, t0));
  // The API itself: 401 without a token, each token sees its own tenant.
  assert.equal((await fetch(`${server.query}/api/services`)).status, 401);
  const svc = async (tok) =>
    (await (await fetch(`${server.query}/api/services`, { headers: { Authorization: `Bearer ${tok}` } })).json()).data;
  assert.deepEqual(await svc(TOKENS['team-a']), ['alpha-shop']);
  assert.deepEqual(await svc(TOKENS['team-b']), [MARKER_B]);
  browser = await launchChromium();
});

after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function signIn(page, token) {
  await page.waitForSelector('#auth-dialog[open]', { timeout: 15000 });
  await page.fill('#auth-token', token);
  await page.click('#auth-submit');
  await page.waitForFunction(() => document.body.dataset.ready === '1', null, { timeout: 15000 });
}

describe('web UI with bearer-token authentication', () => {
  it('asks for the token, then shows only the token tenant’s traces', async () => {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await ctx.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    const apiStatuses = [];
    page.on('response', (r) => {
      if (new URL(r.url()).pathname.startsWith('/api/')) apiStatuses.push(r.status());
    });
    await page.goto(`${server.query}/search?lookback=1h`);
    // The page itself loaded without credentials; its first API call asked for them.
    assert.equal(await page.textContent('#auth-title'), 'Token');
    await page.screenshot({ path: artifactPath('auth-dialog.png') });
    await signIn(page, TOKENS['team-a']);
    assert.ok(apiStatuses.includes(401), 'the first API call was refused');
    const options = await page.$$eval('#f-service option', (els) => els.map((e) => e.value).filter(Boolean));
    assert.deepEqual(options, ['alpha-shop']);
    await page.waitForSelector('tr.result');
    const rows = await page.$$eval('tr.result', (els) => els.map((e) => e.dataset.traceId));
    assert.deepEqual(rows, [TRACE_A]);
    const text = await page.evaluate(() => document.body.innerText);
    assert.ok(text.includes('alpha-shop'), 'team-a data shown');
    assert.ok(!text.includes(MARKER_B), 'no team-b data shown');
    await page.screenshot({ path: artifactPath('auth-search.png') });

    // The token is kept for the tab: other pages need no new prompt.
    await page.goto(`${server.query}/trace/${TRACE_A}`);
    await page.waitForSelector('#waterfall .row', { timeout: 15000 });
    assert.equal(await page.locator('#auth-dialog').count(), 0);
    // The other tenant's trace does not exist for this token.
    await page.goto(`${server.query}/trace/${TRACE_B}`);
    await page.waitForFunction(() => document.body.innerText.match(/not found|no trace|404/i), null, { timeout: 15000 });
    assert.ok(!(await page.evaluate(() => document.body.innerText)).includes(MARKER_B));
    // Sign out forgets the token; the next load asks again and a bad token is asked again.
    await page.goto(`${server.query}/search`);
    await page.waitForFunction(() => document.body.dataset.ready === '1');
    await page.click('#auth-signout');
    await page.waitForSelector('#auth-dialog[open]', { timeout: 15000 });
    await page.fill('#auth-token', 'not-a-token');
    await page.click('#auth-submit');
    await page.waitForFunction(() => /not accepted/.test(document.querySelector('#auth-dialog')?.innerText || ''), null, {
      timeout: 15000,
    });
    await page.fill('#auth-token', TOKENS['team-b']);
    await page.click('#auth-submit');
    await page.waitForFunction(() => document.body.dataset.ready === '1', null, { timeout: 15000 });
    await page.waitForSelector('tr.result');
    const rowsB = await page.$$eval('tr.result', (els) => els.map((e) => e.dataset.traceId));
    assert.deepEqual(rowsB, [TRACE_B]);
    assert.ok(!(await page.evaluate(() => document.body.innerText)).includes('alpha-shop'));
    assert.deepEqual(errors, []);
    await ctx.close();
  });
});
