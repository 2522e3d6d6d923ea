// Search page: query form (kept in the URL), duration-over-time scatter plot, result rows.
import {
  h, s, fmtDur, fmtTime, fmtAgo, fmtClock, parseDur, getJSON, serviceColor, howToSend, errorBox,
  navigate, copyable, LOOKBACKS, lookbackMicros,
} from './util.js';
import { summarize } from './model.js';
import { traceqlBox } from './traceql.js';

/** Parses `k=v k2="v with spaces"` into [[k, v], ...]. */
export function parseTags(text) {
  const out = [];
  const re = /([^\s=]+)=("([^"]*)"|\S*)/g;
  let m;
  while ((m = re.exec(text || ''))) out.push([m[1], m[3] !== undefined ? m[3] : m[2]]);
  return out;
}

function toLocalInput(us) {
  const d = new Date(us / 1000);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

export function renderSearch(app, params) {
  const ctl = new AbortController();
  const q = {
    service: params.get('service') || '',
    operation: params.get('operation') || '',
    tags: params.get('tags') || '',
    minDuration: params.get('minDuration') || '',
    maxDuration: params.get('maxDuration') || '',
    lookback: params.get('lookback') || '1h',
    start: params.get('start') || '',
    end: params.get('end') || '',
    limit: params.get('limit') || '20',
    sort: params.get('sort') || 'recent',
    traceql: params.get('q') || '',
  };

  const service = h('select#f-service', { name: 'service', 'aria-label': 'Service' }, h('option', { value: '' }, 'All services'));
  const operation = h('select#f-operation', { name: 'operation', 'aria-label': 'Operation' }, h('option', { value: '' }, 'All operations'));
  const tags = h('input#f-tags', { name: 'tags', placeholder: 'http.status_code=500 error=true', value: q.tags, spellcheck: 'false' });
  const minD = h('input#f-min', { name: 'minDuration', placeholder: 'e.g. 100ms', value: q.minDuration, size: '8' });
  const maxD = h('input#f-max', { name: 'maxDuration', placeholder: 'e.g. 2s', value: q.maxDuration, size: '8' });
  const lookback = h(
    'select#f-lookback',
    { name: 'lookback', 'aria-label': 'Time range' },
    LOOKBACKS.map(([k, label]) => h('option', { value: k }, label)),
    h('option', { value: 'custom' }, 'Custom range…'),
  );
  lookback.value = q.lookback;
  const now = Date.now() * 1000;
  const startIn = h('input#f-start', { type: 'datetime-local', value: toLocalInput(q.start ? Number(q.start) : now - 3600e6) });
  const endIn = h('input#f-end', { type: 'datetime-local', value: toLocalInput(q.end ? Number(q.end) : now) });
  const custom = h('div.custom-range', null, h('label', null, 'From ', startIn), h('label', null, 'To ', endIn));
  const showCustom = () => (custom.hidden = lookback.value !== 'custom');
  lookback.addEventListener('change', showCustom);
  showCustom();
  const limit = h('input#f-limit', { name: 'limit', type: 'number', min: '1', max: '1500', value: q.limit, size: '5' });
  const formError = h('div.form-error', { role: 'alert' });

  const form = h(
    'form.search-form',
    { onsubmit: (e) => { e.preventDefault(); submit(); } },
    h('label', null, 'Service', service),
    h('label', null, 'Operation', operation),
    h('label.wide', null, 'Attributes (k=v, several)', tags),
    h('label', null, 'Min duration', minD),
    h('label', null, 'Max duration', maxD),
    h('label', null, 'Time range', lookback),
    custom,
    h('label', null, 'Limit', limit),
    h('button.btn.primary#f-submit', { type: 'submit' }, 'Find traces'),
    formError,
  );

  const results = h('section.results');
  const tql = traceqlBox({ value: q.traceql, ctl, onRun: (text) => submitTraceql(text) });
  app.append(h('div.search-page', null, h('aside.search-side', null, form), h('div.search-main', null, tql.el, results)));

  async function loadOperations() {
    operation.replaceChildren(h('option', { value: '' }, 'All operations'));
    if (!service.value) return;
    try {
      const r = await getJSON(`/api/operations?service=${encodeURIComponent(service.value)}`, ctl);
      for (const o of r.data || []) {
        if ([...operation.options].some((x) => x.value === o.name)) continue;
        operation.append(h('option', { value: o.name }, o.name));
      }
    } catch (e) {
      if (e.name !== 'AbortError') formError.textContent = `Cannot load operations: ${e.message}`;
    }
  }
  service.addEventListener('change', () => {
    loadOperations();
  });

  function currentQuery() {
    const out = new URLSearchParams();
    if (service.value) out.set('service', service.value);
    if (operation.value) out.set('operation', operation.value);
    if (tags.value.trim()) out.set('tags', tags.value.trim());
    if (minD.value.trim()) out.set('minDuration', minD.value.trim());
    if (maxD.value.trim()) out.set('maxDuration', maxD.value.trim());
    out.set('lookback', lookback.value);
    if (lookback.value === 'custom') {
      out.set('start', String(new Date(startIn.value).getTime() * 1000));
      out.set('end', String(new Date(endIn.value).getTime() * 1000));
    }
    out.set('limit', limit.value || '20');
    if (q.sort !== 'recent') out.set('sort', q.sort);
    return out;
  }

  // TraceQL runs with the form's time range and limit; the URL keeps the query (`q`).
  function submitTraceql(text) {
    tql.setError('');
    if (!text) {
      tql.setError('Write a TraceQL query, e.g. { status = error }.');
      return;
    }
    const p = currentQuery();
    for (const k of ['service', 'operation', 'tags', 'minDuration', 'maxDuration']) p.delete(k);
    p.set('q', text);
    const url = `/search?${p}`;
    if (url === location.pathname + location.search) run(p);
    else navigate(url);
  }

  function submit() {
    formError.textContent = '';
    for (const [el, name] of [[minD, 'Min duration'], [maxD, 'Max duration']]) {
      if (el.value.trim() && parseDur(el.value) === null) {
        formError.textContent = `${name}: "${el.value}" is not a duration (try 150ms, 2s, 500us).`;
        return;
      }
    }
    const bad = tags.value.trim() && parseTags(tags.value).length === 0;
    if (bad) {
      formError.textContent = 'Attributes: write key=value pairs separated by spaces.';
      return;
    }
    const url = `/search?${currentQuery()}`;
    if (url === location.pathname + location.search) run(currentQuery());
    else navigate(url);
  }

  function timeRange(p) {
    const lb = p.get('lookback') || '1h';
    let end = Date.now() * 1000;
    let start = end - lookbackMicros(lb);
    if (lb === 'custom' && p.get('start') && p.get('end')) {
      start = Number(p.get('start'));
      end = Number(p.get('end'));
    }
    return [start, end];
  }

  // TraceQL through the Tempo API, then the matching traces through the Jaeger API (one
  // multi-get), so the rows look like the form's.
  async function runTraceql(p) {
    const [start, end] = timeRange(p);
    const api = new URLSearchParams({
      q: p.get('q'),
      limit: p.get('limit') || '20',
      start: String(Math.floor(start / 1e6)),
      end: String(Math.ceil(end / 1e6)),
      spss: '3',
    });
    results.replaceChildren(h('p.muted.pad', null, 'Searching…'));
    const t0 = performance.now();
    let found;
    try {
      found = await getJSON(`/tempo/api/search?${api}`, ctl);
    } catch (e) {
      if (e.name === 'AbortError') return;
      if (e.status === 400) {
        tql.setError(e.message);
        results.replaceChildren(errorBox('The TraceQL query is not valid', e.message));
      } else {
        results.replaceChildren(errorBox('Search failed', e.message));
      }
      markReady();
      return;
    }
    const hits = found.traces || [];
    const matched = new Map(hits.map((t) => [t.traceID, (t.spanSets || (t.spanSet ? [t.spanSet] : [])).reduce((n, s) => n + (s.matched || 0), 0)]));
    let traces = [];
    if (hits.length) {
      const ids = new URLSearchParams();
      for (const t of hits) ids.append('traceID', t.traceID);
      try {
        const r = await getJSON(`/api/traces?${ids}`, ctl);
        traces = (r.data || []).map(summarize);
      } catch (e) {
        if (e.name === 'AbortError') return;
        results.replaceChildren(errorBox('Cannot load the matching traces', e.message));
        markReady();
        return;
      }
    }
    for (const t of traces) t.matched = matched.get(t.traceID) ?? matched.get(t.traceID.replace(/^0+/, ''));
    showResults(traces, performance.now() - t0);
  }

  async function run(p) {
    if (p.get('q')) return runTraceql(p);
    const api = new URLSearchParams();
    if (p.get('service')) api.set('service', p.get('service'));
    if (p.get('operation')) api.set('operation', p.get('operation'));
    for (const [k, v] of parseTags(p.get('tags') || '')) api.append('tag', `${k}:${v}`);
    for (const name of ['minDuration', 'maxDuration']) {
      const us = parseDur(p.get(name) || '');
      if (us !== null) api.set(name, `${Math.round(us)}us`);
    }
    const lb = p.get('lookback') || '1h';
    let end = Date.now() * 1000;
    let start = end - lookbackMicros(lb);
    if (lb === 'custom' && p.get('start') && p.get('end')) {
      start = Number(p.get('start'));
      end = Number(p.get('end'));
    }
    api.set('start', String(Math.floor(start)));
    api.set('end', String(Math.ceil(end)));
    api.set('limit', p.get('limit') || '20');
    results.replaceChildren(h('p.muted.pad', null, 'Searching…'));
    const t0 = performance.now();
    let r;
    try {
      r = await getJSON(`/api/traces?${api}`, ctl);
    } catch (e) {
      if (e.name === 'AbortError') return;
      results.replaceChildren(errorBox('Search failed', e.message));
      return;
    }
    const ms = performance.now() - t0;
    const traces = (r.data || []).map(summarize);
    showResults(traces, ms);
  }

  function showResults(traces, ms) {
    if (!traces.length) {
      results.replaceChildren(
        h('div.empty', { id: 'no-results' }, h('h2', null, 'No traces match'), h('p', null, 'Widen the time range, remove filters, or lower the minimum duration.')),
      );
      markReady();
      return;
    }
    const sorters = {
      recent: (a, b) => b.start - a.start,
      longest: (a, b) => b.duration - a.duration,
      shortest: (a, b) => a.duration - b.duration,
      spans: (a, b) => b.spanCount - a.spanCount,
      errors: (a, b) => b.errors - a.errors || b.start - a.start,
    };
    traces.sort(sorters[q.sort] || sorters.recent);
    const maxDur = Math.max(...traces.map((t) => t.duration), 1);
    const selected = new Set();
    const compareBtn = h('button.btn#compare-btn', { type: 'button', disabled: true, onclick: () => {
      const [a, b] = [...selected];
      navigate(`/compare?a=${a}&b=${b}`);
    } }, 'Compare 2 selected');
    const sortSel = h(
      'select#f-sort',
      { 'aria-label': 'Sort', onchange: () => { q.sort = sortSel.value; showResults(traces, ms); } },
      [['recent', 'Most recent'], ['longest', 'Longest first'], ['shortest', 'Shortest first'], ['spans', 'Most spans'], ['errors', 'Most errors']].map(([v, l]) => h('option', { value: v }, l)),
    );
    sortSel.value = q.sort;
    const rows = traces.map((t) => {
      const box = h('input', { type: 'checkbox', 'aria-label': 'Select for compare', onclick: (e) => {
        e.stopPropagation();
        if (box.checked) selected.add(t.traceID);
        else selected.delete(t.traceID);
        compareBtn.disabled = selected.size !== 2;
      } });
      return h(
        'tr.result',
        { dataset: { traceId: t.traceID }, tabindex: '0', onclick: (e) => { if (!e.target.closest('a,input,.copy')) navigate(`/trace/${t.traceID}`); }, onkeydown: (e) => { if (e.key === 'Enter') navigate(`/trace/${t.traceID}`); } },
        h('td.sel', null, box),
        h(
          'td.root',
          null,
          h('a.root-op', { href: `/trace/${t.traceID}` }, h('span.svc-dot', { style: { background: serviceColor(t.rootService) } }), h('b.root-svc', null, t.rootService), ': ', h('span.op-name', null, t.rootOperation)),
          h(
            'div.sub',
            null,
            copyable(t.traceID, t.traceID.slice(0, 16) + (t.traceID.length > 16 ? '…' : '')),
            t.matched ? h('span.matched-badge', { title: 'Spans that matched the TraceQL query' }, ` ${t.matched} matched`) : null,
            t.warned ? h('span.warn-badge', { title: `${t.warned} span${t.warned > 1 ? 's' : ''} with warnings (orphans, clock skew, …)` }, ` ⚠ ${t.warned}`) : null,
          ),
        ),
        h('td.services', null, t.services.map((sv) => h('span.chip', { title: `${sv.count} spans${sv.errors ? `, ${sv.errors} errors` : ''}`, style: { '--c': serviceColor(sv.name) } }, sv.name, h('small', null, ` ${sv.count}`)))),
        h('td.num.span-count', null, String(t.spanCount)),
        h('td.num.error-count', { class: t.errors ? 'num error-count has-errors' : 'num error-count' }, String(t.errors)),
        h('td.when', { title: fmtTime(t.start) }, fmtClock(t.start), h('div.sub', null, fmtAgo(t.start))),
        h('td.dur', null, h('div.durbar', null, h('span', { style: { width: `${Math.max(1, (t.duration / maxDur) * 100)}%` }, class: t.errors ? 'err' : '' })), h('span.dur-label', null, fmtDur(t.duration))),
      );
    });
    results.replaceChildren(
      h('div.results-head', null, h('h2', null, `${traces.length} trace${traces.length === 1 ? '' : 's'}`), h('span.muted', null, `in ${Math.round(ms)} ms`), h('span.grow'), sortSel, compareBtn),
      scatter(traces),
      h(
        'table.result-table',
        null,
        h('thead', null, h('tr', null, h('th'), h('th', null, 'Root'), h('th', null, 'Services'), h('th.num', null, 'Spans'), h('th.num', null, 'Errors'), h('th', null, 'Start'), h('th', null, 'Duration'))),
        h('tbody', null, rows),
      ),
    );
    markReady();
  }

  function scatter(traces) {
    const W = Math.max(400, Math.round(results.clientWidth || 1000) - 14);
    const H = 150;
    const padL = 56;
    const padB = 20;
    const t0 = Math.min(...traces.map((t) => t.start));
    const t1 = Math.max(...traces.map((t) => t.start));
    const dMax = Math.max(...traces.map((t) => t.duration), 1);
    const span = Math.max(t1 - t0, 1);
    const x = (t) => padL + ((t.start - t0) / span) * (W - padL - 12) + (t1 === t0 ? (W - padL - 12) / 2 : 0);
    const y = (t) => H - padB - (t.duration / dMax) * (H - padB - 10);
    const svg = s('svg', { class: 'scatter', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'Trace duration over time' });
    for (const f of [0, 0.5, 1]) {
      const yy = H - padB - f * (H - padB - 10);
      svg.append(s('line', { x1: padL, x2: W, y1: yy, y2: yy, class: 'grid' }), s('text', { x: padL - 6, y: yy + 4, 'text-anchor': 'end', class: 'axis' }, fmtDur(dMax * f)));
    }
    svg.append(
      s('text', { x: padL, y: H - 4, class: 'axis' }, fmtClock(t0)),
      s('text', { x: W - 4, y: H - 4, 'text-anchor': 'end', class: 'axis' }, fmtClock(t1)),
    );
    for (const t of traces) {
      const r = Math.min(9, 3 + Math.log2(t.spanCount + 1));
      svg.append(
        s(
          'circle',
          { cx: x(t), cy: y(t), r, class: t.errors ? 'dot err' : 'dot', 'data-trace-id': t.traceID, onclick: () => navigate(`/trace/${t.traceID}`) },
          s('title', null, `${t.rootService}: ${t.rootOperation}\n${fmtDur(t.duration)}, ${t.spanCount} spans, ${t.errors} errors\n${fmtTime(t.start)}`),
        ),
      );
    }
    return h('div.scatter-wrap', null, svg);
  }

  function markReady() {
    requestAnimationFrame(() => {
      document.body.dataset.ready = '1';
      window.__clewReady = true;
    });
  }

  (async () => {
    let services = [];
    try {
      const r = await getJSON('/api/services', ctl);
      services = (r.data || []).slice().sort();
    } catch (e) {
      if (e.name === 'AbortError') return;
      results.replaceChildren(errorBox('Cannot load services', e.message));
      return;
    }
    if (!services.length) {
      results.replaceChildren(howToSend());
      form.classList.add('disabled');
      markReady();
      return;
    }
    for (const sv of services) service.append(h('option', { value: sv }, sv));
    if (q.service && !services.includes(q.service)) service.append(h('option', { value: q.service }, q.service));
    service.value = q.service;
    await loadOperations();
    if (q.operation) {
      if (![...operation.options].some((o) => o.value === q.operation)) operation.append(h('option', { value: q.operation }, q.operation));
      operation.value = q.operation;
    }
    run(paramsWithDefaults());
  })();

  function paramsWithDefaults() {
    const p = new URLSearchParams(params);
    if (!p.get('lookback')) p.set('lookback', '1h');
    return p;
  }

  return () => ctl.abort();
}
