// Cross-implementation propagation tests: Clew (clew-propagation) vs the OpenTelemetry JS SDK
// (@opentelemetry/core W3CTraceContextPropagator + W3CBaggagePropagator,
// @opentelemetry/propagator-b3 B3Propagator, single and multi header).
//
// Headers injected by the Node propagators are extracted by Clew to the exact same context, and
// headers injected by Clew are extracted by Node to the exact same context. Clew is driven through
// the `interop` example of clew-propagation, a JSON-lines filter (see
// crates/clew-propagation/examples/interop.rs), found next to $CLEW_BIN:
//
//   cargo build -p clew-propagation --examples
//   CLEW_BIN=/abs/path/to/target/debug/clew npm test
//
// CLEW_INTEROP_BIN overrides the driver's path. Random contexts come from a fixed seed
// (CLEW_INTEROP_SEED to change it), so a failure is reproducible.
//
// Differences between the implementations are pinned by explicit assertions (see the
// "known differences" tests), not hidden by the generators:
//   * tracestate: Clew drops the whole header when it is invalid (a bad member, more than 32
//     members); Node drops only the bad members and keeps the first 32 members. A duplicated key
//     is not invalid (the spec makes uniqueness the sender's duty; a receiver MAY discard
//     duplicates): Clew keeps the left-most entry (position and value), Node the first position
//     with the last value. Node validates keys with the Level 1 grammar (`tenant@system`, simple
//     keys starting with a letter), so Level 2 keys such as `foo@@bar` or `1abc` are bad members
//     to Node; Clew follows the Level 2 grammar. Over 512 characters, Node keeps members in order while
//     they fit; it does not remove over-128-character members first as Clew (and the spec) do.
//   * traceparent flags: Node passes every flag bit through and writes the flags as
//     `0${flags.toString(16)}`, so flags >= 0x10 come out as three digits ("0ff"), an invalid
//     traceparent. Clew keeps only sampled (0x01) and random (0x02).
//   * baggage: Node drops members with an empty value and members with a malformed
//     percent-escape; Clew keeps them (the value grammar allows both; Clew leaves a malformed
//     escape literal). Node percent-encodes and -decodes keys; Clew keeps keys as raw tokens.
//     Node keeps properties as one opaque string (OWS included); Clew parses them.
//     Node extracts up to 180 members, Clew up to 64 (the spec's minimum).
//   * B3: Node's single-header regex is not anchored (junk before the ids is ignored); Clew
//     rejects it. A lone `b3: 0` deny decision has no representation in Node (no span context).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  ROOT_CONTEXT,
  baggageEntryMetadataFromString,
  createContextKey,
  defaultTextMapGetter,
  defaultTextMapSetter,
  isSpanContextValid,
  propagation,
  trace,
} from '@opentelemetry/api';
import { TraceState, W3CBaggagePropagator, W3CTraceContextPropagator } from '@opentelemetry/core';
import { B3InjectEncoding, B3Propagator } from '@opentelemetry/propagator-b3';

const N = 150; // random contexts per direction and format
const SEED = Number(process.env.CLEW_INTEROP_SEED ?? 20261121);

const TC = new W3CTraceContextPropagator();
const BAG = new W3CBaggagePropagator();
const B3S = new B3Propagator({ injectEncoding: B3InjectEncoding.SINGLE_HEADER });
const B3M = new B3Propagator({ injectEncoding: B3InjectEncoding.MULTI_HEADER });
// Where the B3 propagator keeps the debug flag ('d' from a single header, '1' from X-B3-Flags);
// createContextKey is Symbol.for(description), so this is the propagator's own key.
const B3_DEBUG = createContextKey('OpenTelemetry Context Key B3 Debug Flag');

const T = '0af7651916cd43dd8448eb211c80319c';
const S = 'b7ad6b7169203331';

// ------------------------------------------------------------------------------------------------
// The Clew side

function interopBinary() {
  if (process.env.CLEW_INTEROP_BIN) return process.env.CLEW_INTEROP_BIN;
  // <target>/debug/clew -> <target>/debug/examples/interop; else <repo>/target/debug/examples/interop.
  const bin = process.env.CLEW_BIN
    ? join(dirname(process.env.CLEW_BIN), 'examples', 'interop')
    : fileURLToPath(new URL('../../target/debug/examples/interop', import.meta.url));
  assert.ok(
    existsSync(bin),
    `Clew interop driver not found at ${bin}: run \`cargo build -p clew-propagation --examples\``,
  );
  return bin;
}

const BIN = interopBinary();

/** Send requests to the driver (one process per batch); answers in order. */
function clewBatch(reqs) {
  if (reqs.length === 0) return [];
  const r = spawnSync(BIN, [], {
    input: reqs.map((q) => JSON.stringify(q)).join('\n') + '\n',
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
  });
  assert.equal(r.status, 0, `interop driver failed: ${r.error ?? r.stderr}`);
  const lines = r.stdout.split('\n').filter((l) => l.length > 0);
  assert.equal(lines.length, reqs.length, 'one answer per request');
  return lines.map((l, i) => {
    const a = JSON.parse(l);
    assert.ok(a.ok, `request ${JSON.stringify(reqs[i])}: ${a.error}`);
    return a;
  });
}

const clewExtractAll = (fmt, headersList) =>
  clewBatch(headersList.map((headers) => ({ op: 'extract', format: fmt, headers }))).map(
    (a) => a.context,
  );
const clewInjectAll = (fmt, contexts) =>
  clewBatch(contexts.map((context) => ({ op: 'inject', format: fmt, context }))).map(
    (a) => a.headers,
  );
const clewExtract = (fmt, headers) => clewExtractAll(fmt, [headers])[0];
const clewInject = (fmt, context) => clewInjectAll(fmt, [context])[0];

// ------------------------------------------------------------------------------------------------
// Random contexts (mulberry32: small, seedable)

function rng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)); // inclusive
  const choice = (xs) => xs[Math.floor(next() * xs.length)];
  const str = (chars, lo, hi) => {
    let s = '';
    for (let n = int(lo, hi); n > 0; n--) s += choice(chars);
    return s;
  };
  return { next, int, choice, str };
}

const LCALPHA = [...'abcdefghijklmnopqrstuvwxyz'];
const DIGITS = [...'0123456789'];
const KEYCHARS = [...LCALPHA, ...DIGITS, ...'_-*/'];
// tracestate value: printable ASCII but ',' and '=', not ending in a space.
const TS_VALUE_CHARS = [];
for (let c = 0x20; c < 0x7f; c++) if (c !== 0x2c && c !== 0x3d) TS_VALUE_CHARS.push(String.fromCharCode(c));
// Baggage keys both send unchanged: RFC 7230 tokens that encodeURIComponent leaves alone.
const ALPHA = [...'ABCDEFGHIJKLMNOPQRSTUVWXYZ', ...LCALPHA];
const BAG_KEY_CHARS = [...ALPHA, ...DIGITS, ...".-_~!'*"];
// Baggage values: space, reserved characters, '%', '+', '=', non-ASCII (BMP and astral).
const BAG_VALUE_CHARS = [
  ...ALPHA,
  ...DIGITS,
  ...' ,;=%"\\/:+?&#!$\'()*@[]^`{|}~<>',
  'é',
  'ü',
  '中',
  '😀',
];

function randHex(r, nbytes) {
  for (;;) {
    let s = '';
    for (let i = 0; i < nbytes * 2; i++) s += '0123456789abcdef'[r.int(0, 15)];
    if (/[^0]/.test(s)) return s;
  }
}

function randTsKey(r, used) {
  for (;;) {
    const k =
      r.next() < 0.3
        ? r.choice([...LCALPHA, ...DIGITS]) + r.str(KEYCHARS, 0, 12) + '@' + r.choice(LCALPHA) + r.str(KEYCHARS, 0, 8)
        : r.choice(LCALPHA) + r.str(KEYCHARS, 0, 20);
    if (!used.has(k)) {
      used.add(k);
      return k;
    }
  }
}

function randTracestate(r) {
  const used = new Set();
  const n = r.choice([0, 0, 1, 2, 3, 5, 8, 16, 32]);
  const out = [];
  for (let i = 0; i < n; i++) {
    out.push([randTsKey(r, used), r.str(TS_VALUE_CHARS, 0, 30) + r.choice(TS_VALUE_CHARS.filter((c) => c !== ' '))]);
  }
  return out;
}

function randSpan(r, flagsChoices = [0, 1, 2, 3], withTs = true) {
  const flags = r.choice(flagsChoices);
  return {
    trace_id: randHex(r, 16),
    span_id: randHex(r, 8),
    flags,
    sampled: (flags & 1) === 1,
    tracestate: withTs ? randTracestate(r) : [],
  };
}

/** Baggage entries in Clew's JSON form; kept well inside 64 members / 8192 bytes. */
function randBaggage(r) {
  const n = r.choice([0, 1, 2, 4, 8, 20, 64]);
  const out = [];
  const used = new Set();
  let size = 0;
  for (let i = 0; i < n; i++) {
    const key = r.choice(ALPHA) + r.str(BAG_KEY_CHARS, 0, 15);
    if (used.has(key)) continue;
    const value = r.str(BAG_VALUE_CHARS, 1, 16);
    const properties = [];
    if (r.next() < 0.4) {
      for (let j = r.int(1, 3) - 1; j >= 0; j--) {
        properties.push([`p${j}` + r.choice(['', 'meta', 'x-y']), r.choice([null, '1', 'v%20x', 'abc'])]);
      }
    }
    // Upper bound of the encoded member (encodeURIComponent encodes at least what Clew does).
    size += key.length + 2 + encodeURIComponent(value).length + propsString(properties).length + 1;
    if (size > 7000) break;
    used.add(key);
    out.push({ key, value, properties });
  }
  return out;
}

// ------------------------------------------------------------------------------------------------
// The Node side

const tsString = (members) => members.map(([k, v]) => `${k}=${v}`).join(',');
const tsMembers = (s) =>
  s ? s.split(',').map((m) => [m.slice(0, m.indexOf('=')), m.slice(m.indexOf('=') + 1)]) : [];
/** Clew properties as Node's opaque metadata string (what both put after the first ';'). */
const propsString = (props) => props.map(([k, v]) => (v === null ? k : `${k}=${v}`)).join(';');

function nodeContext(span, bag = []) {
  let ctx = ROOT_CONTEXT;
  if (span) {
    ctx = trace.setSpanContext(ctx, {
      traceId: span.trace_id,
      spanId: span.span_id,
      traceFlags: span.flags,
      isRemote: false,
      traceState: span.tracestate.length ? new TraceState(tsString(span.tracestate)) : undefined,
    });
  }
  if (bag.length) {
    const entries = {};
    for (const e of bag) {
      entries[e.key] = e.properties.length
        ? { value: e.value, metadata: baggageEntryMetadataFromString(propsString(e.properties)) }
        : { value: e.value };
    }
    ctx = propagation.setBaggage(ctx, propagation.createBaggage(entries));
  }
  return ctx;
}

function nodeSpan(ctx) {
  const sc = trace.getSpanContext(ctx);
  if (!sc || !isSpanContextValid(sc)) return null;
  return {
    trace_id: sc.traceId,
    span_id: sc.spanId,
    flags: sc.traceFlags,
    sampled: (sc.traceFlags & 1) === 1,
    tracestate: sc.traceState ? tsMembers(sc.traceState.serialize()) : [],
  };
}

/** Node baggage as [key, value, metadata string | undefined], in order. */
function nodeBaggage(ctx) {
  const b = propagation.getBaggage(ctx);
  return b ? b.getAllEntries().map(([k, e]) => [k, e.value, e.metadata?.toString()]) : [];
}

/** How Node represents Clew baggage. */
const clewBagAsNode = (bag) =>
  bag.map((e) => [e.key, e.value, e.properties.length ? propsString(e.properties) : undefined]);

function nodeInject(props, ctx) {
  const carrier = {};
  for (const p of props) p.inject(ctx, carrier, defaultTextMapSetter);
  return carrier;
}

function nodeExtract(props, headers) {
  let ctx = ROOT_CONTEXT;
  for (const p of props) ctx = p.extract(ctx, headers, defaultTextMapGetter);
  return ctx;
}

// ------------------------------------------------------------------------------------------------
// W3C trace context + baggage, random contexts

test('w3c: Node injects, Clew extracts', () => {
  const r = rng(SEED);
  const cases = [];
  for (let i = 0; i < N; i++) {
    const span = randSpan(r);
    const bag = randBaggage(r);
    cases.push({ span, bag, headers: nodeInject([TC, BAG], nodeContext(span, bag)) });
  }
  const got = clewExtractAll('w3c', cases.map((c) => c.headers));
  let truncated = 0;
  cases.forEach(({ span, bag, headers }, i) => {
    const where = `case ${i}: headers=${JSON.stringify(headers)}`;
    const g = got[i];
    assert.ok(g.span, where);
    assert.equal(g.span.trace_id, span.trace_id, where);
    assert.equal(g.span.span_id, span.span_id, where);
    assert.equal(g.span.flags, span.flags, where); // incl. the random flag 0x02
    assert.equal(g.span.sampled, span.sampled, where);
    let want = span.tracestate;
    if (tsString(span.tracestate).length > 512) {
      // Node's TraceState keeps at most 512 characters: it skips the members that do not fit.
      truncated++;
      want = tsMembers(headers.tracestate);
      assert.ok(headers.tracestate.length <= 512 && want.length < span.tracestate.length, where);
      const all = span.tracestate.map((m) => m.join('='));
      let j = 0;
      for (const m of want) {
        j = all.indexOf(m.join('='), j) + 1;
        assert.ok(j > 0, `${where}: Node sent a member out of order`);
      }
    }
    assert.deepEqual(g.span.tracestate, want, where);
    assert.deepEqual(g.baggage, bag, where);
    assert.equal(g.sampling, null, where);
  });
  assert.ok(truncated > 0 && truncated < N, `generator: ${truncated} tracestates over 512 chars`);
});

test('w3c: Clew injects, Node extracts', () => {
  const r = rng(SEED + 1);
  const cases = [];
  for (let i = 0; i < N; i++) cases.push({ span: randSpan(r), bag: randBaggage(r) });
  const headers = clewInjectAll('w3c', cases.map(({ span, bag }) => ({ span, baggage: bag })));
  let truncated = 0;
  cases.forEach(({ span, bag }, i) => {
    const h = headers[i];
    const where = `case ${i}: headers=${JSON.stringify(h)}`;
    const ctx = nodeExtract([TC, BAG], h);
    const g = nodeSpan(ctx);
    assert.ok(g, where);
    if (tsString(span.tracestate).length > 512) {
      // Clew truncates tracestate to 512 characters on injection (members < 128 characters
      // here, so from the right); Node reads every member that was sent.
      truncated++;
      assert.ok(h.tracestate.length <= 512, where);
      assert.ok(g.tracestate.length > 0 && g.tracestate.length < span.tracestate.length, where);
      assert.deepEqual(g.tracestate, span.tracestate.slice(0, g.tracestate.length), where);
      g.tracestate = span.tracestate;
    }
    assert.deepEqual(g, span, where);
    assert.deepEqual(nodeBaggage(ctx), clewBagAsNode(bag), where);
  });
  assert.ok(truncated > 0, 'generator: no tracestate over 512 chars');
});

// ------------------------------------------------------------------------------------------------
// traceparent by hand

test('traceparent: sampled and unsampled give identical headers both ways', () => {
  for (const flags of [0, 1]) {
    const span = { trace_id: T, span_id: S, flags, sampled: flags === 1, tracestate: [] };
    const node = nodeInject([TC, BAG], nodeContext(span));
    assert.deepEqual(node, { traceparent: `00-${T}-${S}-0${flags}` });
    assert.deepEqual(clewInject('w3c', { span, baggage: [] }), node);
    assert.deepEqual(clewExtract('w3c', node).span, span);
    assert.deepEqual(nodeSpan(nodeExtract([TC], node)), span);
  }
});

test('traceparent: the random flag (0x02) survives both ways; unknown bits', () => {
  for (const flags of [0x02, 0x03]) {
    const span = { trace_id: T, span_id: S, flags, sampled: flags === 3, tracestate: [] };
    const node = nodeInject([TC], nodeContext(span));
    assert.equal(node.traceparent, `00-${T}-${S}-0${flags}`);
    assert.equal(clewExtract('w3c', node).span.flags, flags); // Level 2: random is kept
    const clew = clewInject('w3c', { span, baggage: [] });
    assert.deepEqual(clew, node);
    assert.equal(nodeSpan(nodeExtract([TC], clew)).flags, flags);
  }
  // Unknown bits: Clew zeroes them (Level 2: only sampled and random are defined); Node passes
  // them through.
  const span0b = { trace_id: T, span_id: S, flags: 0x0b, sampled: true, tracestate: [] };
  const node0b = nodeInject([TC], nodeContext(span0b));
  assert.equal(node0b.traceparent, `00-${T}-${S}-0b`);
  assert.equal(clewExtract('w3c', node0b).span.flags, 0x03);
  assert.equal(nodeSpan(nodeExtract([TC], node0b)).flags, 0x0b);
  // Known Node bug: flags >= 0x10 are written as `0` + hex, i.e. three digits, so a valid
  // `...-ff` traceparent that Node extracts is re-injected as an invalid `...-0ff`; both reject it.
  const ff = `00-${T}-${S}-ff`;
  const nodeCtx = nodeExtract([TC], { traceparent: ff });
  assert.equal(nodeSpan(nodeCtx).flags, 0xff);
  const bad = nodeInject([TC], nodeCtx);
  assert.equal(bad.traceparent, `00-${T}-${S}-0ff`);
  assert.equal(clewExtract('w3c', bad).span, null);
  assert.equal(nodeSpan(nodeExtract([TC], bad)), null);
  // Clew reads the same valid header as 0x03 and re-injects `-03`, which Node reads.
  const clewSpan = clewExtract('w3c', { traceparent: ff }).span;
  assert.equal(clewSpan.flags, 0x03);
  const again = clewInject('w3c', { span: clewSpan, baggage: [] });
  assert.equal(again.traceparent, `00-${T}-${S}-03`);
  assert.equal(nodeSpan(nodeExtract([TC], again)).flags, 0x03);
});

test('traceparent: hand-written headers are accepted or rejected alike', () => {
  const cases = [
    [`00-${T}-${S}-01`, 1],
    [` 00-${T}-${S}-01`, 1], // OWS
    [`00-${T}-${S}-01\t`, 1],
    [`01-${T}-${S}-01`, 1], // future version
    [`cc-${T}-${S}-01-what-the-future-holds`, 1], // future version, more fields
    [`ff-${T}-${S}-01`, null], // version ff is invalid
    [`00-${T}-${S}-01-x`, null], // version 00 has exactly 4 fields
    [`00-${T.toUpperCase()}-${S}-01`, null], // uppercase hex
    [`00-${'0'.repeat(32)}-${S}-01`, null], // zero trace id
    [`00-${T}-${'0'.repeat(16)}-01`, null], // zero span id
    [`00-${T}-${S}-1`, null],
    [`00-${T.slice(1)}-${S}-01`, null],
  ];
  const clew = clewExtractAll('w3c', cases.map(([tp]) => ({ traceparent: tp, tracestate: 'a=1' })));
  cases.forEach(([tp, flags], i) => {
    const n = nodeSpan(nodeExtract([TC], { traceparent: tp, tracestate: 'a=1' }));
    if (flags === null) {
      assert.equal(clew[i].span, null, tp);
      assert.equal(n, null, tp);
    } else {
      const want = { trace_id: T, span_id: S, flags, sampled: true, tracestate: [['a', '1']] };
      assert.deepEqual(clew[i].span, want, tp);
      assert.deepEqual(n, want, tp);
    }
  });
});

// ------------------------------------------------------------------------------------------------
// tracestate by hand

function bothTracestate(tracestate) {
  const headers = { traceparent: `00-${T}-${S}-01`, tracestate };
  return {
    clew: clewExtract('w3c', headers).span.tracestate,
    node: nodeSpan(nodeExtract([TC], headers)).tracestate,
  };
}

test('tracestate: several members, OWS, empty members, several fields', () => {
  const want = [['rojo', '00f067aa0ba902b7'], ['congo', 't61rcWkgMzE'], ['a@b', 'x yz']];
  for (const ts of [
    'rojo=00f067aa0ba902b7,congo=t61rcWkgMzE,a@b=x yz',
    'rojo=00f067aa0ba902b7 ,\tcongo=t61rcWkgMzE , a@b=x yz\t',
    ',,rojo=00f067aa0ba902b7,, ,congo=t61rcWkgMzE,a@b=x yz,',
    ['rojo=00f067aa0ba902b7', 'congo=t61rcWkgMzE,a@b=x yz'],
  ]) {
    const { clew, node } = bothTracestate(ts);
    assert.deepEqual(clew, want, JSON.stringify(ts));
    assert.deepEqual(node, want, JSON.stringify(ts));
  }
  // Node re-serializes what it read without OWS, exactly as Clew does.
  const ows = { traceparent: `00-${T}-${S}-01`, tracestate: 'a=1 , b=2' };
  assert.equal(nodeInject([TC], nodeExtract([TC], ows)).tracestate, 'a=1,b=2');
  assert.equal(clewInject('w3c', clewExtract('w3c', ows)).tracestate, 'a=1,b=2');
});

test("tracestate: Clew's truncation (32 members, 512 characters) is accepted by Node", () => {
  const span = (members) => ({ trace_id: T, span_id: S, flags: 1, sampled: true, tracestate: members });
  // 33 members: Clew keeps the 32 left-most (the right-most is dropped), Node reads all 32.
  const m33 = Array.from({ length: 33 }, (_, i) => [`k${i}`, `v${i}`]);
  const h32 = clewInject('w3c', { span: span(m33), baggage: [] });
  assert.equal(h32.tracestate, tsString(m33.slice(0, 32)));
  assert.deepEqual(nodeSpan(nodeExtract([TC], h32)).tracestate, m33.slice(0, 32));
  // Over 512 characters: whole members are dropped, over-128-character members first, then from
  // the right; Node reads exactly what was sent.
  const long = ['long', 'x'.repeat(200)];
  const m20 = Array.from({ length: 20 }, (_, i) => [`key${String(i).padStart(2, '0')}`, 'v'.repeat(30)]);
  const h = clewInject('w3c', { span: span([m20[0], long, ...m20.slice(1)]), baggage: [] });
  const kept = m20.slice(0, 13); // 13 * 36 + 12 = 480 <= 512 < 517
  assert.equal(h.tracestate, tsString(kept));
  assert.deepEqual(nodeSpan(nodeExtract([TC], h)).tracestate, kept);
  // Known difference: Node, given the same over-long list, keeps members while reading them as
  // long as they fit in 512 characters, in order; it does not remove the over-128-character member
  // first (the spec's SHOULD), so it keeps `long` and fewer short members. Clew reads that header
  // exactly as sent.
  const nodeHeaders = nodeInject([TC], nodeContext(span([m20[0], long, ...m20.slice(1)])));
  const nodeKept = [m20[0], long, ...m20.slice(1, 8)]; // 36 + 206 + 7 * 37 = 501 <= 512
  assert.equal(nodeHeaders.tracestate, tsString(nodeKept));
  assert.deepEqual(clewExtract('w3c', nodeHeaders).span.tracestate, nodeKept);
});

test('tracestate: known differences on invalid lists', () => {
  // A member with an invalid key: Clew drops the whole header; Node drops only that member.
  assert.deepEqual(bothTracestate('a=1,B=2,c=3'), { clew: [], node: [['a', '1'], ['c', '3']] });
  // A duplicated key is the sender's fault, not an invalid header (W3C Trace Context, "Mutating
  // the tracestate Field"; the official suite's test_tracestate_duplicated_keys accepts either
  // entry): Clew keeps the left-most entry, position and value (the most recent one); Node keeps
  // the first position with the last value.
  assert.deepEqual(bothTracestate('a=1,b=2,a=3'), {
    clew: [['a', '1'], ['b', '2']],
    node: [['a', '3'], ['b', '2']],
  });
  // Keys valid under the Level 2 grammar only (`key = ( lcalpha / DIGIT ) 0*255 ( keychar )`,
  // `@` an ordinary keychar): Clew keeps them; Node still validates the Level 1 grammar
  // (`tenant@system`, a simple key starting with a letter) and drops those members.
  for (const k of ['foo@', 'foo@@bar', 'foo@bar@baz', '1abc', `t@${'v'.repeat(15)}`]) {
    assert.deepEqual(bothTracestate(`${k}=1,b=2`), { clew: [[k, '1'], ['b', '2']], node: [['b', '2']] }, k);
  }
  // 33 members: Clew drops the whole header (over the 32-member limit); Node keeps the first 32.
  const m33 = Array.from({ length: 33 }, (_, i) => [`k${i}`, 'v']);
  assert.deepEqual(bothTracestate(tsString(m33)), { clew: [], node: m33.slice(0, 32) });
  // An invalid value ('=' in it): Clew drops the whole header; Node drops only that member.
  assert.deepEqual(bothTracestate('a=1,b=x=y,c=3'), { clew: [], node: [['a', '1'], ['c', '3']] });
  // Trailing OWS is not part of a value: both read 'x'.
  assert.deepEqual(bothTracestate('a=1,b=x \t,c=3'), {
    clew: [['a', '1'], ['b', 'x'], ['c', '3']],
    node: [['a', '1'], ['b', 'x'], ['c', '3']],
  });
});

// ------------------------------------------------------------------------------------------------
// Baggage by hand

test('baggage: percent-encoding, `=` in values, unicode, spaces and `+`', () => {
  const value = ' a b+c=d%e/f;g,h"中😀 ';
  const bag = [{ key: 'k.1_~', value, properties: [] }];
  // Node encodes with encodeURIComponent; Clew only what is outside baggage-octet (plus % and +).
  const node = nodeInject([BAG], nodeContext(null, bag));
  assert.deepEqual(node, {
    baggage: 'k.1_~=%20a%20b%2Bc%3Dd%25e%2Ff%3Bg%2Ch%22%E4%B8%AD%F0%9F%98%80%20',
  });
  const clew = clewInject('w3c', { baggage: bag });
  assert.deepEqual(clew, {
    baggage: 'k.1_~=%20a%20b%2Bc=d%25e/f%3Bg%2Ch%22%E4%B8%AD%F0%9F%98%80%20',
  });
  // Each reads the other's header back exactly, leading and trailing spaces included.
  assert.deepEqual(clewExtract('w3c', node).baggage, bag);
  assert.deepEqual(nodeBaggage(nodeExtract([BAG], clew)), [['k.1_~', value, undefined]]);
  // Hand-written: raw '=' and '+' in values, lowercase escapes, OWS; read alike.
  const raw = { baggage: 'a=b=c=, p = 1+1 ,u=%e4%b8%ad, sp=%20x%20' };
  assert.deepEqual(clewExtract('w3c', raw).baggage, [
    { key: 'a', value: 'b=c=', properties: [] },
    { key: 'p', value: '1+1', properties: [] },
    { key: 'u', value: '中', properties: [] },
    { key: 'sp', value: ' x ', properties: [] },
  ]);
  assert.deepEqual(nodeBaggage(nodeExtract([BAG], raw)), [
    ['a', 'b=c=', undefined],
    ['p', '1+1', undefined],
    ['u', '中', undefined],
    ['sp', ' x ', undefined],
  ]);
});

test('baggage: properties', () => {
  const bag = [
    { key: 'k', value: 'v', properties: [['p', '1'], ['q', null]] },
    { key: 'u', value: 'w', properties: [] },
  ];
  const node = nodeInject([BAG], nodeContext(null, bag));
  assert.deepEqual(node, { baggage: 'k=v;p=1;q,u=w' });
  assert.deepEqual(clewInject('w3c', { baggage: bag }), node);
  assert.deepEqual(clewExtract('w3c', node).baggage, bag);
  // Node has no property model: everything after the first ';' is one opaque metadata string.
  assert.deepEqual(nodeBaggage(nodeExtract([BAG], node)), [['k', 'v', 'p=1;q'], ['u', 'w', undefined]]);
  // Known difference: with OWS, Clew parses and normalizes the properties, Node keeps the raw
  // string (spaces included) and forwards it as is.
  const ows = { baggage: 'k = v ; p=1;q , u=%E4%B8%AD' };
  const c = clewExtract('w3c', ows);
  assert.deepEqual(c.baggage, [
    { key: 'k', value: 'v', properties: [['p', '1'], ['q', null]] },
    { key: 'u', value: '中', properties: [] },
  ]);
  assert.equal(clewInject('w3c', c).baggage, 'k=v;p=1;q,u=%E4%B8%AD');
  const n = nodeExtract([BAG], ows);
  assert.deepEqual(nodeBaggage(n), [['k', 'v', ' p=1;q '], ['u', '中', undefined]]);
  assert.equal(nodeInject([BAG], n).baggage, 'k=v; p=1;q ,u=%E4%B8%AD');
  // ... which Clew reads with the same properties.
  assert.deepEqual(clewExtract('w3c', nodeInject([BAG], n)).baggage, c.baggage);
});

test('baggage: known differences (empty values, bad escapes, keys, member limit)', () => {
  // Empty value (allowed by the grammar): Clew keeps it, Node drops the member on extraction
  // (it still sends one it holds).
  const empty = [{ key: 'e', value: '', properties: [] }, { key: 'k', value: 'v', properties: [] }];
  assert.deepEqual(clewInject('w3c', { baggage: empty }), { baggage: 'e=,k=v' });
  assert.deepEqual(nodeInject([BAG], nodeContext(null, empty)), { baggage: 'e=,k=v' });
  assert.deepEqual(clewExtract('w3c', { baggage: 'e=,k=v' }).baggage, empty);
  assert.deepEqual(nodeBaggage(nodeExtract([BAG], { baggage: 'e=,k=v' })), [['k', 'v', undefined]]);
  // Malformed escape: Clew keeps it literally; Node's decodeURIComponent throws, member dropped.
  assert.deepEqual(clewExtract('w3c', { baggage: 'k=%zz,j=1' }).baggage, [
    { key: 'k', value: '%zz', properties: [] },
    { key: 'j', value: '1', properties: [] },
  ]);
  assert.deepEqual(nodeBaggage(nodeExtract([BAG], { baggage: 'k=%zz,j=1' })), [['j', '1', undefined]]);
  // Keys: Node percent-encodes (and decodes) keys, Clew treats them as raw tokens. A token with
  // '#' goes out of Node as 'a%23b' and Clew reads the key 'a%23b'.
  const hash = nodeInject([BAG], nodeContext(null, [{ key: 'a#b', value: '1', properties: [] }]));
  assert.deepEqual(hash, { baggage: 'a%23b=1' });
  assert.deepEqual(clewExtract('w3c', hash).baggage, [{ key: 'a%23b', value: '1', properties: [] }]);
  assert.deepEqual(clewInject('w3c', { baggage: [{ key: 'a#b', value: '1', properties: [] }] }), {
    baggage: 'a#b=1',
  });
  assert.deepEqual(nodeBaggage(nodeExtract([BAG], { baggage: 'a#b=1' })), [['a#b', '1', undefined]]);
  // Members: the spec asks for at least 64; Clew keeps exactly the first 64, Node up to 180.
  const many = Array.from({ length: 100 }, (_, i) => ({ key: `m${i}`, value: `${i}`, properties: [] }));
  const h = nodeInject([BAG], nodeContext(null, many));
  assert.equal(h.baggage.split(',').length, 100);
  assert.deepEqual(clewExtract('w3c', h).baggage, many.slice(0, 64));
  assert.equal(nodeBaggage(nodeExtract([BAG], h)).length, 100);
  assert.equal(clewInject('w3c', { baggage: many }).baggage, h.baggage.split(',').slice(0, 64).join(','));
});

// ------------------------------------------------------------------------------------------------
// B3

for (const [fmt, prop, names] of [
  ['b3', B3S, ['b3']],
  ['b3multi', B3M, ['x-b3-sampled', 'x-b3-spanid', 'x-b3-traceid']],
]) {
  test(`${fmt}: Node injects, Clew extracts`, () => {
    const r = rng(SEED + 3);
    const spans = Array.from({ length: N }, () => randSpan(r, [0, 1], false));
    const headers = spans.map((s) => nodeInject([prop], nodeContext(s)));
    const got = clewExtractAll(fmt, headers);
    spans.forEach((span, i) => {
      const where = `case ${i}: ${JSON.stringify(headers[i])}`;
      assert.deepEqual(Object.keys(headers[i]).sort(), names, where);
      assert.deepEqual(got[i].span, span, where);
      assert.equal(got[i].sampling, span.sampled ? 'accept' : 'deny', where);
      assert.deepEqual(got[i].baggage, [], where);
    });
  });

  test(`${fmt}: Clew injects, Node extracts`, () => {
    const r = rng(SEED + 4);
    const spans = Array.from({ length: N }, () => randSpan(r, [0, 1, 2, 3], false));
    const headers = clewInjectAll(fmt, spans.map((span) => ({ span })));
    spans.forEach((span, i) => {
      const where = `case ${i}: ${JSON.stringify(headers[i])}`;
      assert.deepEqual(Object.keys(headers[i]).sort(), names, where);
      // B3 has no random flag: only the sampled bit goes across.
      assert.deepEqual(nodeSpan(nodeExtract([prop], headers[i])), { ...span, flags: span.flags & 1 }, where);
    });
  });
}

test('b3 single: debug (d), deny (0), 64-bit ids, parent span id', () => {
  const span = { trace_id: T, span_id: S, flags: 1, sampled: true, tracestate: [] };
  // Debug from Node: what Node extracted from `-d` it injects again as `-d`.
  const nd = nodeInject([B3S], nodeExtract([B3S], { b3: `${T}-${S}-d` }));
  assert.deepEqual(nd, { b3: `${T}-${S}-d` });
  const cd = clewExtract('b3', nd);
  assert.deepEqual(cd.span, span);
  assert.equal(cd.sampling, 'debug');
  // Debug from Clew: Node reads it as sampled with its debug flag 'd'.
  const fromClew = clewInject('b3', { span, sampling: 'debug' });
  assert.deepEqual(fromClew, { b3: `${T}-${S}-d` });
  const n = nodeExtract([B3S], fromClew);
  assert.deepEqual(nodeSpan(n), span);
  assert.equal(n.getValue(B3_DEBUG), 'd');
  // Deny with ids.
  const unsampled = { ...span, flags: 0, sampled: false };
  const n0 = nodeInject([B3S], nodeContext(unsampled));
  assert.deepEqual(n0, { b3: `${T}-${S}-0` });
  assert.deepEqual(clewInject('b3', { span: unsampled }), n0);
  assert.deepEqual(clewExtract('b3', n0), { span: unsampled, sampling: 'deny', baggage: [] });
  assert.deepEqual(nodeSpan(nodeExtract([B3S], n0)), unsampled);
  // Known difference: a lone deny decision `b3: 0` is a Sampling::Deny in Clew; Node has nothing
  // to put it in (no span context) and does not propagate it.
  assert.deepEqual(clewInject('b3', { span: null, sampling: 'deny' }), { b3: '0' });
  assert.deepEqual(clewExtract('b3', { b3: '0' }), { span: null, sampling: 'deny', baggage: [] });
  assert.equal(nodeSpan(nodeExtract([B3S], { b3: '0' })), null);
  assert.deepEqual(nodeInject([B3S], nodeExtract([B3S], { b3: '0' })), {});
  // 64-bit trace ids are left-padded by both; a parent span id is accepted (and not re-sent).
  const short = 'a3ce929d0e0e4736';
  for (const b3 of [`${short}-${S}-1`, `${short}-${S}-1-00f067aa0ba902b7`]) {
    const want = { ...span, trace_id: '0'.repeat(16) + short };
    assert.deepEqual(clewExtract('b3', { b3 }).span, want, b3);
    assert.deepEqual(nodeSpan(nodeExtract([B3S], { b3 })), want, b3);
  }
  // No sampling state: unsampled for both, and Clew records no decision.
  assert.deepEqual(clewExtract('b3', { b3: `${T}-${S}` }), { span: unsampled, sampling: null, baggage: [] });
  assert.deepEqual(nodeSpan(nodeExtract([B3S], { b3: `${T}-${S}` })), unsampled);
  // Known difference: Node's b3 regex is not anchored, so junk before the ids is ignored; Clew
  // rejects the header.
  assert.equal(clewExtract('b3', { b3: `x${T}-${S}-1` }).span, null);
  assert.deepEqual(nodeSpan(nodeExtract([B3S], { b3: `x${T}-${S}-1` })), span);
});

test('b3 multi: debug (X-B3-Flags), deny, 64-bit ids', () => {
  const span = { trace_id: T, span_id: S, flags: 1, sampled: true, tracestate: [] };
  const debugHeaders = { 'x-b3-traceid': T, 'x-b3-spanid': S, 'x-b3-flags': '1' };
  // Debug: both send X-B3-Flags: 1 and no X-B3-Sampled.
  const nd = nodeInject([B3M], nodeExtract([B3M], debugHeaders));
  assert.deepEqual(nd, debugHeaders);
  assert.deepEqual(clewInject('b3multi', { span, sampling: 'debug' }), debugHeaders);
  assert.deepEqual(clewExtract('b3multi', nd), { span, sampling: 'debug', baggage: [] });
  const n = nodeExtract([B3M], debugHeaders);
  assert.deepEqual(nodeSpan(n), span);
  assert.equal(n.getValue(B3_DEBUG), '1');
  // Deny.
  const unsampled = { ...span, flags: 0, sampled: false };
  const n0 = nodeInject([B3M], nodeContext(unsampled));
  assert.deepEqual(n0, { 'x-b3-traceid': T, 'x-b3-spanid': S, 'x-b3-sampled': '0' });
  assert.deepEqual(clewInject('b3multi', { span: unsampled }), n0);
  assert.deepEqual(clewExtract('b3multi', n0), { span: unsampled, sampling: 'deny', baggage: [] });
  // 64-bit trace id, 'true' for sampled.
  const short = { 'x-b3-traceid': 'a3ce929d0e0e4736', 'x-b3-spanid': S, 'x-b3-sampled': 'true' };
  const want = { ...span, trace_id: '0000000000000000a3ce929d0e0e4736' };
  assert.deepEqual(clewExtract('b3multi', short).span, want);
  assert.deepEqual(nodeSpan(nodeExtract([B3M], short)), want);
});
