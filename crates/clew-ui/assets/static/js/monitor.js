// Monitor page (Jaeger's "Monitor" / SPM tab): request rate, error rate and p50/p95/p99 latency
// over time for one service, and a sortable per-operation table with sparklines. Data: Jaeger's
// metrics API (/api/metrics/calls|errors|latencies), served from the span metrics Clew computes
// from every span before sampling (per minute, kept 24 h). Clicking an operation or a chart point
// opens the Search page for that service/operation and time range.
import { h, s, fmtDur, fmtClock, fmtTime, getJSON, errorBox, navigate, serviceColor } from './util.js';

/** Time ranges: [key, label, lookback ms, step ms]. The step is also the rate window. */
export const RANGES = [
  ['15m', 'Last 15 minutes', 15 * 60e3, 60e3],
  ['1h', 'Last hour', 3600e3, 60e3],
  ['6h', 'Last 6 hours', 6 * 3600e3, 5 * 60e3],
  ['24h', 'Last 24 hours', 24 * 3600e3, 15 * 60e3],
];

const KINDS = [
  ['server', 'Server'],
  ['client', 'Client'],
  ['producer', 'Producer'],
  ['consumer', 'Consumer'],
  ['internal', 'Internal'],
  ['unspecified', 'Unspecified'],
];

const QUANTILES = [
  ['p50', 0.5],
  ['p95', 0.95],
  ['p99', 0.99],
];

/** Requests per second, readable at low and high traffic. */
export function fmtRate(perSec) {
  if (perSec == null || !isFinite(perSec)) return '–';
  if (perSec === 0) return '0';
  if (perSec >= 1) return `${num(perSec, perSec < 10 ? 2 : perSec < 100 ? 1 : 0)}/s`;
  if (perSec * 60 >= 0.01) return `${num(perSec * 60, perSec * 60 < 10 ? 2 : 1)}/min`;
  return `${num(perSec * 3600, 2)}/h`;
}

/** An error ratio (0..1) as a percentage. */
export function fmtPct(ratio) {
  if (ratio == null || !isFinite(ratio)) return '–';
  if (ratio === 0) return '0%';
  const p = ratio * 100;
  return `${p.toFixed(p < 0.1 ? 2 : 1)}%`;
}

function num(v, digits) {
  return String(Number(v.toFixed(digits)));
}

/** A Jaeger MetricFamily → Map(operation or '' → [[ms, value], ...]). */
export function seriesByOperation(family) {
  const out = new Map();
  for (const m of (family && family.metrics) || []) {
    const op = ((m.labels || []).find((l) => l.name === 'operation') || {}).value || '';
    const pts = (m.metricPoints || [])
      .map((p) => [Date.parse(p.timestamp), p.gaugeValue ? Number(p.gaugeValue.doubleValue) : NaN])
      .filter(([t, v]) => isFinite(t) && isFinite(v));
    out.set(op, pts);
  }
  return out;
}

function searchUrl(service, operation, lookback, range) {
  const p = new URLSearchParams();
  p.set('service', service);
  if (operation) p.set('operation', operation);
  if (range) {
    p.set('lookback', 'custom');
    p.set('start', String(Math.floor(range[0] * 1000)));
    p.set('end', String(Math.ceil(range[1] * 1000)));
  } else p.set('lookback', lookback);
  if (range && range[2]) p.set('tags', range[2]);
  return `/search?${p}`;
}

export function renderMonitor(app, params) {
  const ctl = new AbortController();
  const lb = RANGES.some((r) => r[0] === params.get('lookback')) ? params.get('lookback') : '1h';
  const [, , lookbackMs, stepMs] = RANGES.find((r) => r[0] === lb);
  const q = { service: params.get('service') || '', kind: params.get('spanKind') || '' };
  let sort = { key: 'requests', dir: -1 };

  const serviceSel = h('select#mon-service', { 'aria-label': 'Service' });
  const kindSel = h('select#mon-kind', { 'aria-label': 'Span kind' }, KINDS.map(([k, l]) => h('option', { value: k }, l)));
  const rangeSel = h('select#mon-lookback', { 'aria-label': 'Time range' }, RANGES.map(([k, l]) => h('option', { value: k }, l)));
  rangeSel.value = lb;
  const go = () => {
    const p = new URLSearchParams();
    if (serviceSel.value) p.set('service', serviceSel.value);
    p.set('lookback', rangeSel.value);
    if (kindSel.value) p.set('spanKind', kindSel.value);
    navigate(`/monitor?${p}`);
  };
  serviceSel.addEventListener('change', () => {
    kindSel.value = '';
    go();
  });
  kindSel.addEventListener('change', go);
  rangeSel.addEventListener('change', go);
  const refresh = h('button.btn#mon-refresh', { type: 'button', title: 'Reload the metrics', onclick: () => load() }, 'Refresh');
  const out = h('div.mon-out', null, h('p.muted.pad', null, 'Loading span metrics…'));
  app.append(
    h(
      'div.monitor-page',
      null,
      h(
        'div.mon-head',
        null,
        h('h1', null, 'Monitor'),
        h('label', null, 'Service', serviceSel),
        h('label', null, 'Span kind', kindSel),
        h('label', null, 'Time range', rangeSel),
        refresh,
        h('span.grow'),
        h('span.muted.mon-note', { title: 'Counted by the ingest pipeline from every span, before any sampling; per minute, kept 24 h in memory.' }, 'From every span, before sampling'),
      ),
      out,
    ),
  );

  const ready = () =>
    requestAnimationFrame(() => {
      document.body.dataset.ready = '1';
      window.__clewReady = true;
    });

  let services = [];

  async function load() {
    delete document.body.dataset.ready;
    window.__clewReady = false;
    const end = Date.now();
    let r;
    try {
      r = await getJSON(`/api/metrics/services?endTs=${end}&lookback=${lookbackMs}`, { signal: ctl.signal });
    } catch (e) {
      if (e.name === 'AbortError') return;
      out.replaceChildren(errorBox('Cannot load span metrics', e.message));
      ready();
      return;
    }
    services = (r && r.data) || [];
    if (!services.length && !q.service) {
      serviceSel.replaceChildren(h('option', { value: '' }, 'No services'));
      serviceSel.disabled = true;
      kindSel.disabled = true;
      out.replaceChildren(
        h(
          'div.empty#monitor-empty',
          null,
          h('h2', null, 'No span metrics in this time range'),
          h('p', null, 'The Monitor shows request rate, error rate and latency per service and operation, counted from every span Clew receives (before sampling), per minute, for the last 24 hours.'),
          h('p', null, 'Widen the time range, or send traces: point an OpenTelemetry SDK at ', h('code', null, `${location.hostname || '127.0.0.1'}:4317`), ', or run ', h('code', null, 'clew demo'), '.'),
        ),
      );
      ready();
      return;
    }
    const names = services.map((x) => x.name);
    if (q.service && !names.includes(q.service)) services.push({ name: q.service, spanKinds: [] });
    serviceSel.replaceChildren(...services.map((x) => h('option', { value: x.name }, x.name)));
    const pick = (x) => x.spanKinds.includes('server');
    const service = q.service || (services.find(pick) || services[0]).name;
    serviceSel.value = service;
    const info = services.find((x) => x.name === service);
    const kind = q.kind || (info.spanKinds.includes('server') || !info.spanKinds.length ? 'server' : info.spanKinds[0]);
    kindSel.value = kind;
    for (const o of kindSel.options) o.textContent = KINDS.find((k) => k[0] === o.value)[1] + (info.spanKinds.includes(o.value) ? '' : ' (no data)');

    const base = (extra) => {
      const p = new URLSearchParams({ service, endTs: String(end), lookback: String(lookbackMs), spanKind: kind });
      for (const [k, v] of Object.entries(extra)) p.set(k, String(v));
      return p;
    };
    const ts = { step: stepMs, ratePer: stepMs };
    const total = { step: lookbackMs, ratePer: lookbackMs };
    const fetchF = (what, extra) => getJSON(`/api/metrics/${what}?${base(extra)}`, { signal: ctl.signal }).then(seriesByOperation);
    const asks = [];
    const add = (what, extra) => asks.push(fetchF(what, extra)) - 1;
    const iRate = add('calls', ts);
    const iErr = add('errors', ts);
    const iLat = QUANTILES.map(([, qq]) => add('latencies', { ...ts, quantile: qq }));
    const iOpRate = add('calls', { ...ts, groupByOperation: true });
    const iOpErr = add('errors', { ...ts, groupByOperation: true });
    const iTotRate = add('calls', { ...total, groupByOperation: true });
    const iTotErr = add('errors', { ...total, groupByOperation: true });
    const iTotLat = QUANTILES.map(([, qq]) => add('latencies', { ...total, groupByOperation: true, quantile: qq }));
    const iAllRate = add('calls', total);
    const iAllErr = add('errors', total);
    const iAllLat = QUANTILES.map(([, qq]) => add('latencies', { ...total, quantile: qq }));
    let res;
    try {
      res = await Promise.all(asks);
    } catch (e) {
      if (e.name === 'AbortError') return;
      out.replaceChildren(errorBox('Cannot load span metrics', e.message));
      ready();
      return;
    }
    const one = (m, op = '') => {
      const pts = m.get(op);
      return pts && pts.length ? pts[pts.length - 1][1] : null;
    };
    const secs = lookbackMs / 1000;
    const ops = [...res[iTotRate].keys()].map((op) => {
      const rate = one(res[iTotRate], op) || 0;
      const err = one(res[iTotErr], op);
      return {
        op,
        requests: rate * secs,
        rate,
        errRate: err,
        p50: one(res[iTotLat[0]], op),
        p95: one(res[iTotLat[1]], op),
        p99: one(res[iTotLat[2]], op),
        spark: res[iOpRate].get(op) || [],
        sparkErr: res[iOpErr].get(op) || [],
      };
    });
    const all = {
      requests: (one(res[iAllRate]) || 0) * secs,
      rate: one(res[iAllRate]) || 0,
      errRate: one(res[iAllErr]),
      p50: one(res[iAllLat[0]]),
      p95: one(res[iAllLat[1]]),
      p99: one(res[iAllLat[2]]),
    };
    if (!ops.length) {
      const others = info.spanKinds.filter((k) => k !== kind);
      out.replaceChildren(
        h(
          'div.empty#monitor-nodata',
          null,
          h('h2', null, `No ${kind} spans of ${service} in this time range`),
          others.length
            ? h('p', null, `${service} has `, others.map((k, i) => [i ? ', ' : '', h('a', { href: `/monitor?service=${encodeURIComponent(service)}&lookback=${lb}&spanKind=${k}` }, k)]), ' spans.')
            : h('p', null, 'Widen the time range.'),
        ),
      );
      ready();
      return;
    }

    const tEnd = end;
    const tStart = end - lookbackMs;
    // The minutes a point aggregates: ceil(ratePer / 1 min) minutes up to the one holding `t`.
    const pointRange = (t, tags) => {
      const m = Math.floor(t / 60e3) * 60e3;
      return [m - (Math.ceil(stepMs / 60e3) - 1) * 60e3, m + 60e3, tags];
    };
    const charts = h(
      'div.mon-charts',
      null,
      chart({
        id: 'chart-rate',
        title: 'Request rate',
        headline: `${fmtRate(all.rate)} · ${fmtCount(all.requests)} requests`,
        series: [{ label: 'rate', cls: 's-rate', points: res[iRate].get('') || [] }],
        fmt: fmtRate,
        tStart,
        tEnd,
        onPoint: (t) => navigate(searchUrl(service, '', lb, pointRange(t))),
      }),
      chart({
        id: 'chart-errors',
        title: 'Error rate',
        headline: fmtPct(all.errRate),
        series: [{ label: 'errors', cls: 's-err', points: res[iErr].get('') || [] }],
        fmt: fmtPct,
        minMax: 0.01,
        tStart,
        tEnd,
        onPoint: (t) => navigate(searchUrl(service, '', lb, pointRange(t, 'error=true'))),
      }),
      chart({
        id: 'chart-latency',
        title: 'Latency',
        headline: QUANTILES.map(([k], i) => `${k} ${fmtMs([all.p50, all.p95, all.p99][i])}`).join(' · '),
        series: QUANTILES.map(([k], i) => ({ label: k, cls: `s-${k}`, points: res[iLat[i]].get('') || [] })),
        fmt: fmtMs,
        legend: true,
        tStart,
        tEnd,
        onPoint: (t) => navigate(searchUrl(service, '', lb, pointRange(t))),
      }),
    );

    const table = h('table.mon-ops#mon-ops');
    const renderTable = () => {
      const cols = [
        ['op', 'Operation', false],
        ['requests', 'Requests', true],
        ['rate', 'Rate', true],
        ['errRate', 'Errors', true],
        ['p50', 'P50', true],
        ['p95', 'P95', true],
        ['p99', 'P99', true],
      ];
      const val = (o, k) => (o[k] == null ? -1 : o[k]);
      const sorted = ops.slice().sort((a, b) => {
        const d = sort.key === 'op' ? a.op.localeCompare(b.op) : val(a, sort.key) - val(b, sort.key);
        return d * sort.dir || a.op.localeCompare(b.op);
      });
      const head = h(
        'tr',
        null,
        cols.map(([k, label, numeric]) =>
          h(
            numeric ? 'th.num' : 'th',
            { 'aria-sort': sort.key === k ? (sort.dir > 0 ? 'ascending' : 'descending') : 'none' },
            h(
              'button.sort',
              {
                type: 'button',
                dataset: { sort: k },
                onclick: () => {
                  sort = sort.key === k ? { key: k, dir: -sort.dir } : { key: k, dir: k === 'op' ? 1 : -1 };
                  renderTable();
                },
              },
              label,
              sort.key === k ? (sort.dir > 0 ? ' ▲' : ' ▼') : '',
            ),
          ),
        ),
        h('th', null, 'Trend'),
      );
      const rows = sorted.map((o) => {
        const href = searchUrl(service, o.op, lb);
        return h(
          'tr.op-row',
          {
            dataset: { operation: o.op },
            tabindex: '0',
            title: `Find traces of ${service}: ${o.op}`,
            onclick: (e) => {
              if (!e.target.closest('a')) navigate(href);
            },
            onkeydown: (e) => {
              if (e.key === 'Enter') navigate(href);
            },
          },
          h('td.op', null, h('a.op-link', { href }, o.op)),
          h('td.num.requests', null, fmtCount(o.requests)),
          h('td.num.rate', null, fmtRate(o.rate)),
          h('td.num.err-rate', { class: o.errRate ? 'num err-rate bad' : 'num err-rate' }, fmtPct(o.errRate)),
          h('td.num.p50', null, fmtMs(o.p50)),
          h('td.num.p95', null, fmtMs(o.p95)),
          h('td.num.p99', null, fmtMs(o.p99)),
          h('td.trend', null, sparkline(o.spark, o.sparkErr, tStart, tEnd)),
        );
      });
      const foot = h(
        'tr.op-total',
        null,
        h('td', null, `All ${kind} operations`),
        h('td.num', null, fmtCount(all.requests)),
        h('td.num', null, fmtRate(all.rate)),
        h('td.num', { class: all.errRate ? 'num bad' : 'num' }, fmtPct(all.errRate)),
        h('td.num', null, fmtMs(all.p50)),
        h('td.num', null, fmtMs(all.p95)),
        h('td.num', null, fmtMs(all.p99)),
        h('td'),
      );
      table.replaceChildren(h('thead', null, head), h('tbody', null, rows), h('tfoot', null, foot));
    };
    renderTable();
    out.replaceChildren(
      charts,
      h('div.mon-ops-head', null, h('h2', null, h('span.svc-dot', { style: { background: serviceColor(service) } }), `Operations of ${service}`), h('span.muted', null, `${ops.length} operation${ops.length === 1 ? '' : 's'} · ${RANGES.find((x) => x[0] === lb)[1].toLowerCase()} · click one to find its traces`)),
      table,
    );
    ready();
  }

  load();
  return () => ctl.abort();
}

function fmtMs(ms) {
  return ms == null || !isFinite(ms) ? '–' : fmtDur(ms * 1000);
}

function fmtCount(n) {
  if (n == null || !isFinite(n)) return '–';
  const r = Math.round(n);
  return Math.abs(n - r) < 0.01 ? String(r) : n.toFixed(1);
}

/** A line chart card: time on x, the series' values on y, clickable points. */
function chart({ id, title, headline, series, fmt, minMax = 0, legend = false, tStart, tEnd, onPoint }) {
  const W = 440;
  const H = 170;
  const padL = 62;
  const padR = 10;
  const padT = 10;
  const padB = 22;
  const all = series.flatMap((x) => x.points.map((p) => p[1]));
  const card = h('div.mon-chart', { id }, h('div.mon-chart-head', null, h('h3', null, title), h('span.mon-headline', null, headline)));
  if (!all.length) {
    card.append(h('div.mon-nodata', null, 'No data in this time range'));
    return card;
  }
  const yMax = niceMax(Math.max(minMax, ...all));
  const span = Math.max(1, tEnd - tStart);
  const x = (t) => padL + ((t - tStart) / span) * (W - padL - padR);
  const y = (v) => H - padB - (v / yMax) * (H - padB - padT);
  const svg = s('svg', { class: 'mon-svg', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `${title} over time` });
  for (const f of [0, 0.5, 1]) {
    const yy = y(yMax * f);
    svg.append(s('line', { x1: padL, x2: W - padR, y1: yy, y2: yy, class: 'grid' }), s('text', { x: padL - 6, y: yy + 4, 'text-anchor': 'end', class: 'axis' }, f ? fmt(yMax * f) : '0'));
  }
  svg.append(
    s('text', { x: padL, y: H - 5, class: 'axis' }, fmtClock(tStart * 1000)),
    s('text', { x: W - padR, y: H - 5, 'text-anchor': 'end', class: 'axis' }, fmtClock(tEnd * 1000)),
  );
  for (const sr of series) {
    if (!sr.points.length) continue;
    const d = sr.points.map(([t, v], i) => `${i ? 'L' : 'M'}${x(t).toFixed(1)} ${y(v).toFixed(1)}`).join(' ');
    svg.append(s('path', { d, class: `line ${sr.cls}` }));
    const g = s('g', { class: `pts ${sr.cls}` });
    const r = sr.points.length > 40 ? 2 : 3;
    for (const [t, v] of sr.points) {
      g.append(
        s(
          'circle',
          { cx: x(t).toFixed(1), cy: y(v).toFixed(1), r, class: v ? 'pt' : 'pt zero', 'data-ts': String(t), 'data-value': String(v), onclick: () => onPoint(t) },
          s('title', null, `${legend ? sr.label + ' ' : ''}${fmt(v)}\n${fmtTime(t * 1000)}\nClick to find traces of this interval`),
        ),
      );
    }
    svg.append(g);
  }
  card.append(svg);
  if (legend) card.append(h('div.mon-legend', null, series.map((sr) => h('span', { class: `key ${sr.cls}` }, h('i'), sr.label))));
  return card;
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const e = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * e >= v * 1.05) return m * e;
  return 10 * e;
}

/** Request rate of one operation over the range; error minutes marked red. */
function sparkline(points, errPoints, tStart, tEnd) {
  const W = 120;
  const H = 26;
  const svg = s('svg', { class: 'spark', viewBox: `0 0 ${W} ${H}`, width: W, height: H, 'aria-hidden': 'true' });
  if (!points.length) return svg;
  const max = Math.max(...points.map((p) => p[1])) || 1;
  const span = Math.max(1, tEnd - tStart);
  const x = (t) => 1 + ((t - tStart) / span) * (W - 2);
  const y = (v) => H - 2 - (v / max) * (H - 4);
  svg.append(s('path', { class: 'spark-line', d: points.map(([t, v], i) => `${i ? 'L' : 'M'}${x(t).toFixed(1)} ${y(v).toFixed(1)}`).join(' ') }));
  for (const [t, e] of errPoints) if (e > 0) svg.append(s('circle', { class: 'spark-err', cx: x(t).toFixed(1), cy: 3, r: 1.8 }));
  return svg;
}
