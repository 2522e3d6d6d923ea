// Doctor page: what silently breaks traces over a time window — context lost between services or
// inside one, orphaned spans, several roots, clock skew — grouped by kind, with counts, a trend
// sparkline per finding, example traces that open with the break highlighted, and what to do.
// Data: GET /api/doctor/findings?since=1h (report fields newer than the first version — coverage,
// trend, example span ids, remedy, guide — are optional: the page degrades when they are absent).
import { h, s, getJSON, errorBox, navigate, fmtClock, fmtDur, serviceColor } from './util.js';

export const WINDOWS = [
  ['15m', 'Last 15 minutes'],
  ['1h', 'Last hour'],
  ['6h', 'Last 6 hours'],
  ['24h', 'Last 24 hours'],
];

/**
 * Per kind, in display order: title, what it means, which span to highlight in an example trace
 * when the server does not name it (`hint`: the service/operation fields the span carries), and
 * the fallback advice when the server sends no `remedy`.
 */
export const KINDS = {
  context_lost_between_services: {
    title: 'Context lost between services',
    what: 'A call left the caller (a CLIENT or PRODUCER span with no child) and the called service started a new trace instead of continuing this one: the trace context did not arrive, or was not read.',
    hint: (f) => ({ svc: f.from_service, op: f.operation }),
    remedy:
      'Inject the trace context into the outgoing request on the caller (use the instrumented HTTP/gRPC/messaging client, or call the propagator’s inject on the headers you send) and extract it on the callee (its server or consumer instrumentation must run before the handler). Both sides must use the same propagation format (W3C traceparent, or B3/Jaeger on both), and every proxy, gateway or broker between them must forward the traceparent and tracestate headers.',
  },
  context_lost_in_service: {
    title: 'Context lost inside a service',
    what: 'A new trace started while a span of the same service instance was running: work handed to a thread pool, executor, detached task, callback or queue ran without the current context.',
    hint: (f) => ({ svc: f.from_service, op: f.operation }),
    remedy:
      'Capture the context where the work is submitted and make it current where the work runs: wrap the task (Context.current().wrap(...) / a context-propagating executor in Java, contextvars.copy_context() in Python, context.with() or AsyncLocalStorage in Node.js, .in_current_span() / Instrument in Rust, pass ctx in Go) instead of starting the background work with an empty context.',
  },
  orphan_spans: {
    title: 'Orphaned spans',
    what: 'These spans name a parent span that never reached Clew, so the trace has a gap above them.',
    hint: (f) => ({ svc: f.to_service, op: f.operation }),
    remedy:
      'Find the service that should have sent the parent span: check that it exports spans at all, that it follows the caller’s sampling decision (a ParentBased sampler) instead of dropping the parent, that its exporter queue does not overflow and is flushed on shutdown, and that no processor on the way filters those spans out.',
  },
  multiple_roots: {
    title: 'Several roots in one trace',
    what: 'A span without a parent joined an existing trace id: the trace id was passed on, but not the parent span id.',
    hint: (f) => ({ svc: f.to_service, op: f.operation }),
    remedy:
      'Propagate the whole context (trace id and parent span id, e.g. the full traceparent header) rather than only the trace id, and do not start root spans with a trace id taken from a log field or a custom header.',
  },
  clock_skew: {
    title: 'Clock skew',
    what: 'A child span starts before its parent or ends after it because the hosts’ clocks disagree.',
    hint: (f) => ({ svc: f.to_service, op: f.operation }),
    remedy:
      'Synchronize the clocks of every host with NTP or chrony (containers use the host’s clock). Clew shifts skewed subtrees for display, but durations across hosts stay approximate until the clocks agree.',
  },
};
const KIND_ORDER = Object.keys(KINDS);

const num = (n) => Number(n || 0).toLocaleString('en-US');
const plural = (n, one, many) => `${num(n)} ${n === 1 ? one : many || one + 's'}`;

/** Link to an example trace with the broken span highlighted (`?span=&break=1`). */
export function exampleHref(f, traceId, spanId) {
  const q = new URLSearchParams();
  if (spanId) q.set('span', spanId);
  q.set('break', '1');
  q.set('kind', f.kind);
  if (!spanId) {
    // Older servers do not name the span: let the trace page find it by service and operation.
    const k = KINDS[f.kind];
    const hint = k ? k.hint(f) : {};
    if (hint.svc) q.set('svc', hint.svc);
    if (hint.op) q.set('op', hint.op);
  }
  return `/trace/${encodeURIComponent(traceId)}?${q}`;
}

/** Inline SVG bars of counts per time bucket (oldest first). */
export function sparkline(trend, bucketNanos, startNanos) {
  if (!Array.isArray(trend) || !trend.length) return h('span.muted.no-trend', { title: 'No trend from this server' }, '–');
  const n = trend.length;
  const max = Math.max(1, ...trend);
  const W = 96;
  const H = 20;
  const bw = W / n;
  const bucketUs = bucketNanos ? bucketNanos / 1000 : 0;
  const bars = trend.map((c, i) => {
    const bh = c ? Math.max(2, (c / max) * (H - 2)) : 1;
    const when = bucketUs && startNanos ? `${fmtClock(startNanos / 1000 + i * bucketUs)}: ` : '';
    return s('rect', { x: (i * bw + 0.5).toFixed(2), y: (H - bh).toFixed(2), width: Math.max(0.8, bw - 1).toFixed(2), height: bh.toFixed(2), class: c ? 'spark-bar' : 'spark-bar zero' }, s('title', null, `${when}${c}`));
  });
  const title = `occurrences per ${bucketUs ? fmtDur(bucketUs) : 'bucket'}, oldest → newest (max ${max})`;
  return s('svg', { class: 'spark', width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title, 'data-trend': trend.join(',') }, s('title', null, title), bars);
}

function serviceTag(name) {
  if (!name) return h('span.muted', null, '?');
  return h('span.svc-name', null, h('span.svc-dot', { style: { background: serviceColor(name) } }), name);
}

/** Where the problem is: caller → callee for context losses and skew, else the one service. */
function where(f) {
  switch (f.kind) {
    case 'context_lost_between_services':
    case 'clock_skew':
      return h('span.pair', null, serviceTag(f.from_service), h('span.arrow', { 'aria-label': 'to' }, ' → '), serviceTag(f.to_service));
    case 'context_lost_in_service':
      return serviceTag(f.from_service || f.to_service);
    default:
      return serviceTag(f.to_service || f.from_service);
  }
}

function operationCell(f) {
  const op = h('span.op-name', null, f.operation || '?');
  if (f.kind === 'context_lost_in_service' && f.new_root_operation) {
    return [op, h('div.sub', null, 'new trace started: ', h('b', null, f.new_root_operation))];
  }
  if (f.kind === 'context_lost_between_services') return [op, h('div.sub', null, 'client call with no server child')];
  return op;
}

const shortId = (id) => (id.length > 14 ? `${id.slice(0, 8)}…${id.slice(-4)}` : id);

function examples(f) {
  const ids = f.example_trace_ids || [];
  const spans = Array.isArray(f.example_span_ids) ? f.example_span_ids : [];
  const links = ids.map((id, i) =>
    h(
      'a.example-link',
      { href: exampleHref(f, id, spans[i]), 'data-trace-id': id, 'data-span-id': spans[i] || null, title: spans[i] ? `Open trace ${id} at span ${spans[i]}` : `Open trace ${id}` },
      shortId(id),
    ),
  );
  const news = (f.example_new_trace_ids || []).map((id) =>
    h('a.example-new', { href: `/trace/${encodeURIComponent(id)}`, 'data-trace-id': id, title: `The trace that started without the context: ${id}` }, shortId(id)),
  );
  return [
    links.length ? h('div.examples', null, links) : h('span.muted', null, 'none'),
    news.length ? h('div.examples.new', null, h('span.muted', null, 'new: '), news) : null,
  ];
}

function guideEl(guide) {
  if (!guide) return null;
  const link = /^(https?:)?\//.test(guide) ? h('a', { href: guide, target: '_blank', rel: 'noopener' }, guide) : h('code', null, guide);
  return h('p.guide', null, 'Guide: ', link);
}

function kindSection(kind, list, report) {
  const meta = KINDS[kind] || { title: kind, what: '', remedy: '' };
  const total = list.reduce((a, f) => a + (f.count || 0), 0);
  const remedy = (list.find((f) => f.remedy) || {}).remedy || meta.remedy;
  // docs/doctor.md has one section per kind, named like the kind.
  const guide = (list.find((f) => f.guide) || {}).guide || (KINDS[kind] ? `docs/doctor.md#${kind.replace(/_/g, '-')}` : null);
  const rows = list.map((f) => {
    const own = f.remedy && f.remedy !== remedy ? h('div.sub.finding-remedy', null, f.remedy) : null;
    return h(
      'tr.finding',
      { dataset: { kind: f.kind, from: f.from_service || '', to: f.to_service || '', operation: f.operation || '', count: String(f.count || 0) } },
      h('td.where', null, where(f)),
      h('td.operation', null, operationCell(f), own),
      h('td.num.count', null, num(f.count)),
      h('td.trend', null, sparkline(f.trend, report.trend_bucket_nanos, report.window_start_unix_nano)),
      h('td.example-cell', null, examples(f)),
      h('td.message.muted', null, f.message || ''),
    );
  });
  const whereHead = kind === 'context_lost_between_services' || kind === 'clock_skew' ? 'From → to' : 'Service';
  return h(
    'section.doctor-kind',
    { id: `kind-${kind}`, dataset: { kind } },
    h('h2', null, meta.title, h('span.kind-count', { title: 'occurrences' }, num(total)), h('span.muted.kind-patterns', null, plural(list.length, 'pattern'))),
    h('p.kind-what.muted', null, meta.what),
    h('div.remedy', null, h('b', null, 'What to do: '), h('span.remedy-text', null, remedy), guideEl(guide)),
    h(
      'table.finding-table',
      null,
      h('thead', null, h('tr', null, h('th', null, whereHead), h('th', null, 'Operation'), h('th.num', null, 'Count'), h('th', null, 'Trend'), h('th', null, 'Example traces'), h('th', null, 'Message'))),
      h('tbody', null, rows),
    ),
  );
}

/** "examined N of ~M traces (x %)", from whatever the server sent. */
export function coverageText(r) {
  const ex = r.traces_examined || 0;
  let total = r.traces_in_window;
  let cov = r.coverage;
  if (cov == null && total) cov = ex / total;
  if (total != null && total >= 0) {
    const pct = cov == null ? '' : ` (${(Math.min(1, cov) * 100).toFixed(cov > 0 && cov < 0.01 ? 2 : cov < 1 ? 1 : 0)} %)`;
    return `examined ${num(ex)} of ~${num(Math.max(total, ex))} traces${pct}`;
  }
  return `examined ${plural(ex, 'trace')}`;
}

export function renderDoctor(app, params) {
  const ctl = new AbortController();
  const sinceParam = params.get('since') || '1h';
  const since = WINDOWS.some((w) => w[0] === sinceParam) ? sinceParam : '1h';
  const limit = params.get('limit');
  const sel = h('select#doctor-window', { 'aria-label': 'Time window' }, WINDOWS.map(([k, l]) => h('option', { value: k }, l)));
  sel.value = since;
  const go = () => navigate(`/doctor?since=${sel.value}${limit ? `&limit=${encodeURIComponent(limit)}` : ''}`);
  sel.addEventListener('change', go);
  const refresh = h('button.btn.small#doctor-refresh', { type: 'button', title: 'Analyze the window again', onclick: () => load() }, 'Refresh');
  const coverage = h('div.doctor-coverage#doctor-coverage', { role: 'status' });
  const out = h('div.doctor-out#doctor-out', null, h('p.muted.pad', null, 'Examining traces…'));
  app.append(
    h(
      'div.doctor-page',
      null,
      h('div.doctor-head', null, h('h1', null, 'Trace doctor'), sel, refresh, h('span.grow'), h('span.muted.doctor-about', null, 'Finds where traces break: lost context, orphans, split traces, clock skew.')),
      coverage,
      out,
    ),
  );
  const ready = () => {
    document.body.dataset.ready = '1';
    window.__clewReady = true;
  };

  let seq = 0;
  async function load() {
    const my = ++seq;
    delete document.body.dataset.ready;
    window.__clewReady = false;
    refresh.disabled = true;
    let r;
    try {
      const q = new URLSearchParams({ since });
      if (limit) q.set('limit', limit);
      r = await getJSON(`/api/doctor/findings?${q}`, { signal: ctl.signal });
      if (!r || !Array.isArray(r.findings)) throw new Error('the server answered without a findings list');
    } catch (e) {
      if (e.name === 'AbortError' || my !== seq) return;
      refresh.disabled = false;
      coverage.replaceChildren();
      out.replaceChildren(h('div#doctor-error', null, errorBox('Cannot run the trace doctor', e.message)));
      ready();
      return;
    }
    if (my !== seq) return;
    refresh.disabled = false;
    showCoverage(r);
    showFindings(r);
    ready();
  }

  function showCoverage(r) {
    const parts = [h('b#doctor-coverage-text', null, coverageText(r)), ` in the last ${since}`];
    if (r.traces_too_recent) parts.push(h('span.muted', null, ` · ${plural(r.traces_too_recent, 'trace')} too recent to judge (younger than 30 s)`));
    if (r.window_start_unix_nano && r.window_end_unix_nano) {
      parts.push(h('span.muted.doctor-window', null, ` · window ${fmtClock(r.window_start_unix_nano / 1000)} – ${fmtClock(r.window_end_unix_nano / 1000)}`));
    }
    const cov = r.coverage != null ? r.coverage : r.traces_in_window ? (r.traces_examined || 0) / r.traces_in_window : null;
    if (cov != null && cov < 0.999 && r.traces_in_window) {
      parts.push(h('div.muted.sub', null, 'The doctor judged a sample of the window (the newest traces); counts cover the examined traces only.'));
    }
    coverage.replaceChildren(...parts);
    coverage.dataset.examined = String(r.traces_examined || 0);
    if (r.traces_in_window != null) coverage.dataset.inWindow = String(r.traces_in_window);
  }

  function showFindings(r) {
    const findings = r.findings;
    if (!findings.length) {
      const ex = r.traces_examined || 0;
      out.replaceChildren(
        h(
          'div.empty#doctor-empty',
          null,
          h('h2', null, `No problems found in the last ${since}`),
          h('p', null, `Examined ${plural(ex, 'trace')}: no lost context, orphaned spans, split traces or clock skew.`),
          ex === 0 && !r.traces_too_recent ? h('p.muted', null, 'No traces were stored in this window: widen it, or send traces (try ', h('code', null, 'clew demo'), ').') : null,
          r.traces_too_recent ? h('p.muted', null, `${plural(r.traces_too_recent, 'trace')} ended less than 30 s ago and will be judged once their late spans had time to arrive.`) : null,
        ),
      );
      return;
    }
    const groups = new Map();
    for (const f of findings) {
      if (!groups.has(f.kind)) groups.set(f.kind, []);
      groups.get(f.kind).push(f);
    }
    const kinds = [...KIND_ORDER.filter((k) => groups.has(k)), ...[...groups.keys()].filter((k) => !KINDS[k])];
    const total = findings.reduce((a, f) => a + (f.count || 0), 0);
    const summary = h(
      'nav.doctor-summary#doctor-summary',
      { 'aria-label': 'Findings by kind' },
      h('span.muted', null, `${plural(total, 'occurrence')} in ${plural(findings.length, 'pattern')}: `),
      kinds.map((k) =>
        h(
          'a.chip.kind-chip',
          { href: `#kind-${k}`, dataset: { kind: k }, onclick: (e) => { e.preventDefault(); document.getElementById(`kind-${k}`)?.scrollIntoView({ block: 'start' }); } },
          (KINDS[k] || { title: k }).title,
          h('small', null, ` ${num(groups.get(k).reduce((a, f) => a + (f.count || 0), 0))}`),
        ),
      ),
    );
    out.replaceChildren(summary, ...kinds.map((k) => kindSection(k, groups.get(k).slice().sort((a, b) => (b.count || 0) - (a.count || 0)), r)));
  }

  load();
  return () => {
    seq++;
    ctl.abort();
  };
}
