// Deterministic OTLP JSON test traces.
//
// Trace A (checkout, with problems): frontend → cart (+ redis), frontend → payment (error,
// exception event, fraud-check with a link to trace B), an orphan span (inventory, parent not in
// the trace) and a clock-skewed span (shipping starts before its parent).
// Trace B (checkout, healthy): same shape without fraud-check, payment faster, cart slower, plus
// an added email span. Trace C: a batch job in another service, found by attribute.

export const IDS = {
  A: '5eed0000000000a10000000000000001',
  B: '5eed0000000000b20000000000000002',
  C: '5eed0000000000c30000000000000003',
};

const sid = (trace, n) => `${trace.slice(0, 4)}${trace.slice(-2)}${String(n).padStart(10, '0')}`;

const str = (key, v) => ({ key, value: { stringValue: v } });
const int = (key, v) => ({ key, value: { intValue: String(v) } });

/** One span; times in ms relative to `t0` (ns). */
function span(t0, trace, n, parent, name, kind, startMs, endMs, extra = {}) {
  const ms = (x) => String(BigInt(t0) + BigInt(Math.round(x * 1e6)));
  const o = {
    traceId: trace,
    spanId: typeof n === 'string' ? n : sid(trace, n),
    name,
    kind,
    startTimeUnixNano: ms(startMs),
    endTimeUnixNano: ms(endMs),
    attributes: extra.attributes || [],
  };
  if (parent) o.parentSpanId = typeof parent === 'string' ? parent : sid(trace, parent);
  if (extra.status) o.status = extra.status;
  if (extra.events) o.events = extra.events.map((e) => ({ timeUnixNano: ms(e.atMs), name: e.name, attributes: e.attributes || [] }));
  if (extra.links) o.links = extra.links;
  return o;
}

function resource(service, spans) {
  return {
    resource: { attributes: [str('service.name', service), str('service.version', '1.4.2'), str('deployment.environment', 'e2e')] },
    scopeSpans: [{ scope: { name: 'e2e-generator', version: '1.0.0' }, spans }],
  };
}

/** Groups spans by service into an ExportTraceServiceRequest. */
function request(byService) {
  return { resourceSpans: Object.entries(byService).map(([svc, spans]) => resource(svc, spans)) };
}

export function spanId(trace, n) {
  return sid(trace, n);
}

export function traceA(t0) {
  const T = IDS.A;
  return request({
    frontend: [
      span(t0, T, 1, null, 'GET /checkout', 2, 0, 120, { attributes: [str('http.request.method', 'GET'), str('http.route', '/checkout'), str('customer.tier', 'gold'), int('http.response.status_code', 500)] }),
      span(t0, T, 2, 1, 'POST cart', 3, 5, 35),
      span(t0, T, 4, 1, 'POST payment', 3, 40, 110),
    ],
    cart: [
      span(t0, T, 3, 2, 'POST /cart/items', 2, 6, 34, { events: [{ atMs: 7, name: 'cache miss', attributes: [str('cache.key', 'cart:42')] }] }),
      span(t0, T, 5, 3, 'redis GET', 3, 8, 12, { attributes: [str('db.system', 'redis')] }),
    ],
    payment: [
      span(t0, T, 6, 4, 'charge', 2, 42, 108, {
        attributes: [str('payment.provider', 'stripe'), int('payment.amount_cents', 4999)],
        status: { code: 2, message: 'card declined' },
        events: [{ atMs: 100, name: 'exception', attributes: [str('exception.type', 'CardError'), str('exception.message', 'card declined')] }],
      }),
      span(t0, T, 7, 6, 'fraud-check', 1, 44, 60, { links: [{ traceId: IDS.B, spanId: sid(IDS.B, 1) }] }),
    ],
    inventory: [span(t0, T, 8, 'deadbeefdeadbeef', 'reserve stock', 2, 20, 30)],
    shipping: [span(t0, T, 9, 1, 'quote', 3, -5, 15)],
  });
}
export const TRACE_A_SPANS = 9;

export function traceB(t0) {
  const T = IDS.B;
  return request({
    frontend: [
      span(t0, T, 1, null, 'GET /checkout', 2, 0, 90, { attributes: [str('http.request.method', 'GET'), str('http.route', '/checkout'), str('customer.tier', 'silver')] }),
      span(t0, T, 2, 1, 'POST cart', 3, 5, 55),
      span(t0, T, 4, 1, 'POST payment', 3, 60, 80),
      span(t0, T, 10, 1, 'send email', 4, 82, 88),
    ],
    cart: [
      span(t0, T, 3, 2, 'POST /cart/items', 2, 6, 54),
      span(t0, T, 5, 3, 'redis GET', 3, 8, 12, { attributes: [str('db.system', 'redis')] }),
    ],
    payment: [span(t0, T, 6, 4, 'charge', 2, 61, 79, { attributes: [str('payment.provider', 'adyen')] })],
    email: [span(t0, T, 11, 10, 'deliver', 5, 84, 87)],
  });
}
export const TRACE_B_SPANS = 8;

export function traceC(t0) {
  const T = IDS.C;
  return request({
    batch: [
      span(t0, T, 1, null, 'nightly-job', 1, 0, 2000, { attributes: [str('job.kind', 'nightly')] }),
      span(t0, T, 2, 1, 'export rows', 1, 10, 1900),
    ],
  });
}

/** A wide and deep synthetic trace of `n` spans, split into export requests of `batch` spans. */
export function* largeTrace(traceId, n, t0, batch = 5000) {
  const services = ['gateway', 'orders', 'inventory', 'pricing', 'users', 'search', 'db-proxy', 'cache', 'kafka-bridge', 'ledger'];
  const ops = ['GET /api/items', 'SELECT items', 'cache.get', 'compute price', 'publish event', 'rpc Lookup', 'render', 'auth check'];
  // Tree: a root, then each span's parent is a random earlier span, biased towards recent ones
  // (wide; depth capped at 10). Children start and end inside their parent.
  // Times are whole microseconds.
  const start = new Float64Array(n);
  const end = new Float64Array(n);
  const parent = new Int32Array(n);
  const depth = new Int32Array(n);
  let seed = 12345;
  const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 4294967296);
  start[0] = 0;
  end[0] = 30_000_000; // 30 s in µs
  parent[0] = -1;
  for (let i = 1; i < n; i++) {
    let p = i - 1 - Math.floor(rnd() ** 2 * Math.min(i, 5000));
    while (depth[p] >= 9) p = parent[p];
    parent[i] = p;
    depth[i] = depth[p] + 1;
    const len = end[p] - start[p];
    const s = start[p] + Math.floor(rnd() * len * 0.6);
    start[i] = s;
    end[i] = Math.min(end[p], s + Math.max(1, Math.floor((0.25 + 0.6 * rnd()) * (end[p] - s))));
  }
  const ids = (i) => (0x1000000000000 + i).toString(16).padStart(16, '0');
  for (let b = 0; b < n; b += batch) {
    const bySvc = {};
    for (let i = b; i < Math.min(n, b + batch); i++) {
      const svc = services[i % services.length];
      const o = {
        traceId,
        spanId: ids(i),
        name: ops[i % ops.length],
        kind: (i % 5) + 1,
        startTimeUnixNano: String(BigInt(t0) + BigInt(start[i]) * 1000n),
        endTimeUnixNano: String(BigInt(t0) + BigInt(end[i]) * 1000n),
        attributes: [str('http.route', `/api/items/${i % 97}`), int('item.index', i)],
      };
      if (parent[i] >= 0) o.parentSpanId = ids(parent[i]);
      if (i % 1000 === 7) o.status = { code: 2, message: 'synthetic failure' };
      (bySvc[svc] || (bySvc[svc] = [])).push(o);
    }
    yield request(bySvc);
  }
}

// Doctor test traces: two planted context breaks (web's CLIENT call to stock has no child, and a
// new trace rooted at a SERVER span of stock starts inside the call's window) and one orphan
// (billing-worker's span names a parent that never arrives); plus a healthy trace.
export const DOCTOR_IDS = {
  lost1: 'd0c700000000000000000000000000a1', // web, loses the context
  new1: 'd0c700000000000000000000000000b1', // stock, started without it
  lost2: 'd0c700000000000000000000000000a2',
  new2: 'd0c700000000000000000000000000b2',
  orphan: 'd0c700000000000000000000000000c1', // billing + an orphan in billing-worker
  healthy: 'd0c700000000000000000000000000e1',
};
export const DOCTOR_ORPHAN_PARENT = 'feedfacefeedface';

/** One break: web's trace `lost` (root + client span 2), stock's trace `fresh` (root + child). */
function contextBreak(t0, lost, fresh) {
  return request({
    web: [
      span(t0, lost, 1, null, 'GET /shop', 2, 0, 200, { attributes: [str('http.request.method', 'GET'), str('http.route', '/shop')] }),
      span(t0, lost, 2, 1, 'GET /api/stock', 3, 20, 120, { attributes: [str('http.request.method', 'GET'), str('peer.service', 'stock'), str('server.address', 'stock'), int('server.port', 8080)] }),
    ],
    stock: [
      span(t0, fresh, 1, null, 'GET /stock', 2, 30, 110, { attributes: [str('http.request.method', 'GET'), str('http.route', '/stock'), str('server.address', 'stock'), int('server.port', 8080)] }),
      span(t0, fresh, 2, 1, 'SELECT stock', 3, 40, 90, { attributes: [str('db.system', 'postgresql')] }),
    ],
  });
}

/** Export requests of the doctor scenario; `t0` (ns) should be minutes old so the doctor judges it. */
export function doctorTraces(t0) {
  const D = DOCTOR_IDS;
  const t = BigInt(t0);
  return [
    contextBreak(t, D.lost1, D.new1),
    contextBreak(t + 20_000_000_000n, D.lost2, D.new2),
    request({
      billing: [span(t + 40_000_000_000n, D.orphan, 1, null, 'POST /invoice', 2, 0, 50)],
      'billing-worker': [span(t + 40_000_000_000n, D.orphan, 2, DOCTOR_ORPHAN_PARENT, 'charge card', 1, 10, 40)],
    }),
  ];
}

/** A healthy two-span trace (for the doctor's empty state). */
export function healthyTrace(t0) {
  const T = DOCTOR_IDS.healthy;
  return request({
    web: [span(t0, T, 1, null, 'GET /', 2, 0, 30), span(t0, T, 2, 1, 'render', 1, 5, 25)],
  });
}
