// Compare page: two traces as a structural diff. Spans are matched by their path of
// (service, operation) from the root; rows show added / removed / slower / faster with deltas.
import { h, fmtDur, getJSON, serviceColor, errorBox, navigate, copyable } from './util.js';
import { buildTrace, diffTraces, summarize } from './model.js';

export function renderCompare(app, params) {
  const ctl = new AbortController();
  const a = (params.get('a') || '').trim();
  const b = (params.get('b') || '').trim();
  const inA = h('input#cmp-a', { value: a, placeholder: 'Trace A id (baseline)', spellcheck: 'false' });
  const inB = h('input#cmp-b', { value: b, placeholder: 'Trace B id', spellcheck: 'false' });
  const form = h(
    'form.compare-form',
    { onsubmit: (e) => {
      e.preventDefault();
      navigate(`/compare?a=${encodeURIComponent(inA.value.trim())}&b=${encodeURIComponent(inB.value.trim())}`);
    } },
    h('label', null, 'A ', inA),
    h('label', null, 'B ', inB),
    h('button.btn.primary', { type: 'submit' }, 'Compare'),
  );
  const out = h('div.compare-out');
  app.append(h('div.compare-page', null, h('h1', null, 'Compare traces'), form, out));
  const ready = () => {
    document.body.dataset.ready = '1';
    window.__clewReady = true;
  };
  if (!a || !b) {
    out.append(h('p.muted.pad', null, 'Enter two trace ids, or tick two traces in the search results and press “Compare 2 selected”.'));
    if (a && !b) suggest(a, out, ctl).finally(ready);
    else ready();
    return () => ctl.abort();
  }
  out.append(h('p.muted.pad', null, 'Loading both traces…'));
  (async () => {
    let ta;
    let tb;
    try {
      const load = async (id, label) => {
        try {
          const r = await getJSON(`/api/traces/${encodeURIComponent(id)}`, ctl);
          return buildTrace(r.data[0]);
        } catch (e) {
          if (e.name === 'AbortError') throw e;
          e.message = `Trace ${label} (${id}): ${e.status === 404 ? 'not found' : e.message}`;
          throw e;
        }
      };
      [ta, tb] = await Promise.all([load(a, 'A'), load(b, 'B')]);
    } catch (e) {
      if (e.name === 'AbortError') return;
      out.replaceChildren(errorBox('Cannot compare', e.message));
      ready();
      return;
    }
    const diff = diffTraces(ta, tb);
    const head = (t, label) =>
      h(
        'div.cmp-card',
        null,
        h('div.muted', null, label),
        h('a', { href: `/trace/${t.traceID}` }, t.root ? `${t.root.svc}: ${t.root.op}` : t.traceID),
        h('div', null, copyable(t.traceID)),
        h('div', null, `${fmtDur(t.duration)} · ${t.spans.length} spans · ${t.errors} errors`),
      );
    const dd = tb.duration - ta.duration;
    const c = diff.counts;
    const rows = diff.rows.map((r) =>
      h(
        'tr.diff-row',
        { class: `diff-row ${r.kind}`, dataset: { kind: r.kind, path: r.key.replace(/\u0000/g, ' > ').replace(/\u0001/g, ': ') } },
        h('td.kind', null, { added: '+ added', removed: '− removed', slower: '▲ slower', faster: '▼ faster', same: '=', count: '≠ count' }[r.kind]),
        h('td.path', null, h('span', { style: { paddingLeft: `${Math.min(r.depth, 30) * 14}px` } }), h('span.svc-dot', { style: { background: serviceColor(r.svc) } }), h('b', null, r.svc), ': ', h('span.op-name', null, r.op)),
        h('td.num', null, r.countA ? `${r.countA}×` : '–'),
        h('td.num', null, r.countA ? fmtDur(r.durA) : '–'),
        h('td.num', null, r.countB ? `${r.countB}×` : '–'),
        h('td.num', null, r.countB ? fmtDur(r.durB) : '–'),
        h('td.num.delta', null, r.countA && r.countB ? `${r.delta > 0 ? '+' : ''}${fmtDur(r.delta)}${r.durA ? ` (${r.delta > 0 ? '+' : ''}${Math.round((r.delta / r.durA) * 100)}%)` : ''}` : ''),
        h('td.num', null, r.errorsA || r.errorsB ? `${r.errorsA} → ${r.errorsB}` : ''),
      ),
    );
    const onlyChanges = h('input#cmp-only-changes', { type: 'checkbox' });
    const table = h(
      'table.diff-table#diff',
      null,
      h('thead', null, h('tr', null, h('th', null, ''), h('th', null, 'Path (service: operation)'), h('th.num', null, 'A spans'), h('th.num', null, 'A time'), h('th.num', null, 'B spans'), h('th.num', null, 'B time'), h('th.num', null, 'Δ time'), h('th.num', null, 'Errors'))),
      h('tbody', null, rows),
    );
    onlyChanges.addEventListener('change', () => table.classList.toggle('only-changes', onlyChanges.checked));
    out.replaceChildren(
      h('div.cmp-cards', null, head(ta, 'A (baseline)'), h('div.cmp-arrow', null, `${dd > 0 ? '+' : ''}${fmtDur(dd)}`), head(tb, 'B')),
      h(
        'div.diff-summary#diff-summary',
        null,
        h('span.added', null, `${c.added} added`),
        h('span.removed', null, `${c.removed} removed`),
        h('span.slower', null, `${c.slower} slower`),
        h('span.faster', null, `${c.faster} faster`),
        h('span', null, `${c.same + c.count} unchanged`),
        h('label.check', null, onlyChanges, ' only changes'),
      ),
      table,
    );
    ready();
  })();
  return () => ctl.abort();
}

/** With only A given: traces with the same root service and operation around A's time, as B. */
async function suggest(a, out, ctl) {
  let sa;
  try {
    const r = await getJSON(`/api/traces/${encodeURIComponent(a)}`, ctl);
    sa = summarize(r.data[0]);
  } catch (e) {
    if (e.name !== 'AbortError') out.replaceChildren(errorBox('Cannot compare', `Trace A (${a}): ${e.status === 404 ? 'not found' : e.message}`));
    return;
  }
  const q = new URLSearchParams({
    service: sa.rootService,
    operation: sa.rootOperation,
    start: String(Math.floor(sa.start - 6 * 3600e6)),
    end: String(Math.ceil(sa.start + 6 * 3600e6)),
    limit: '21',
  });
  let list = [];
  try {
    const r = await getJSON(`/api/traces?${q}`, ctl);
    list = (r.data || []).map(summarize).filter((t) => t.traceID !== sa.traceID);
  } catch (e) {
    if (e.name === 'AbortError') return;
  }
  if (!list.length) {
    out.append(h('p.muted.pad', null, `No other “${sa.rootService}: ${sa.rootOperation}” traces within 6 hours of A to suggest.`));
    return;
  }
  list.sort((x, y) => Math.abs(x.duration - sa.duration) - Math.abs(y.duration - sa.duration));
  out.append(
    h('h2', null, `Pick B: other “${sa.rootService}: ${sa.rootOperation}” traces (A took ${fmtDur(sa.duration)})`),
    h(
      'table.result-table#cmp-candidates',
      null,
      h('thead', null, h('tr', null, h('th', null, 'Trace'), h('th.num', null, 'Duration'), h('th.num', null, 'Δ vs A'), h('th.num', null, 'Spans'), h('th.num', null, 'Errors'))),
      h(
        'tbody',
        null,
        list.map((t) =>
          h(
            'tr.candidate',
            { dataset: { traceId: t.traceID } },
            h('td', null, h('a', { href: `/compare?a=${encodeURIComponent(a)}&b=${t.traceID}` }, t.traceID)),
            h('td.num', null, fmtDur(t.duration)),
            h('td.num', null, `${t.duration > sa.duration ? '+' : ''}${fmtDur(t.duration - sa.duration)}`),
            h('td.num', null, String(t.spanCount)),
            h('td.num', { class: t.errors ? 'num bad' : 'num' }, String(t.errors)),
          ),
        ),
      ),
    ),
  );
}
