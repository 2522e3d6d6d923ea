// Service graph: services as nodes, calls as edges (requests, error rate) over a time window.
// Data: /api/doctor/service-graph, falling back to Jaeger's /api/dependencies (no error rates).
// Layout: longest-path layers left → right, one barycenter pass to reduce crossings, SVG.
import { h, s, getJSON, serviceColor, errorBox, navigate, LOOKBACKS, lookbackMicros } from './util.js';

export async function loadGraph(lookback, signal) {
  const end = Date.now() * 1000;
  const start = end - lookbackMicros(lookback);
  try {
    const g = await getJSON(`/api/doctor/service-graph?start=${Math.floor(start)}&end=${Math.ceil(end)}`, { signal });
    if (g && Array.isArray(g.nodes) && Array.isArray(g.edges)) return { ...g, source: 'doctor' };
  } catch (e) {
    if (e.name === 'AbortError') throw e;
  }
  const d = await getJSON(`/api/dependencies?endTs=${Math.ceil(end / 1000)}&lookback=${Math.floor((end - start) / 1000)}`, { signal });
  const nodes = new Map();
  const edges = [];
  for (const x of d.data || []) {
    nodes.set(x.parent, { id: x.parent, virtual: false });
    nodes.set(x.child, { id: x.child, virtual: false });
    edges.push({ source: x.parent, target: x.child, requests: x.callCount, errors: null });
  }
  return { nodes: [...nodes.values()], edges, source: 'dependencies' };
}

/** Layers by longest path from the sources (back edges of cycles ignored). */
export function layout(nodes, edges) {
  const ids = nodes.map((n) => n.id);
  const out = new Map(ids.map((i) => [i, []]));
  const inc = new Map(ids.map((i) => [i, []]));
  for (const e of edges) {
    if (!out.has(e.source)) {
      out.set(e.source, []);
      inc.set(e.source, []);
      ids.push(e.source);
    }
    if (!out.has(e.target)) {
      out.set(e.target, []);
      inc.set(e.target, []);
      ids.push(e.target);
    }
    if (e.source !== e.target) out.get(e.source).push(e.target);
  }
  // DFS to find back edges; topological order of the rest.
  const state = new Map();
  const topo = [];
  const back = new Set();
  const roots = ids.filter((i) => !edges.some((e) => e.target === i && e.source !== i));
  const visit = (start) => {
    const stack = [[start, 0]];
    state.set(start, 1);
    while (stack.length) {
      const top = stack[stack.length - 1];
      const [v, i] = top;
      const kids = out.get(v);
      if (i < kids.length) {
        top[1]++;
        const w = kids[i];
        const st = state.get(w);
        if (st === 1) back.add(`${v}\u0000${w}`);
        else if (!st) {
          state.set(w, 1);
          stack.push([w, 0]);
        }
      } else {
        state.set(v, 2);
        topo.push(v);
        stack.pop();
      }
    }
  };
  for (const r of [...roots, ...ids]) if (!state.get(r)) visit(r);
  topo.reverse();
  const layer = new Map(ids.map((i) => [i, 0]));
  for (const v of topo) {
    for (const w of out.get(v)) {
      if (back.has(`${v}\u0000${w}`)) continue;
      inc.get(w).push(v);
      layer.set(w, Math.max(layer.get(w), layer.get(v) + 1));
    }
  }
  const layers = [];
  for (const v of topo) (layers[layer.get(v)] || (layers[layer.get(v)] = [])).push(v);
  const pos = new Map();
  layers.forEach((L, li) => {
    if (li > 0) {
      const bary = (v) => {
        const ps = inc.get(v).filter((p) => pos.has(p));
        return ps.length ? ps.reduce((a, p) => a + pos.get(p).row, 0) / ps.length : 1e9;
      };
      L.sort((x, y) => bary(x) - bary(y) || x.localeCompare(y));
    } else L.sort();
    L.forEach((v, row) => pos.set(v, { layer: li, row }));
  });
  return { layers, pos, back };
}

export function renderGraph(app, params) {
  const ctl = new AbortController();
  const lb = params.get('lookback') || '1h';
  const sel = h('select#graph-lookback', { 'aria-label': 'Time window' }, LOOKBACKS.map(([k, l]) => h('option', { value: k }, l)));
  sel.value = lb;
  sel.addEventListener('change', () => navigate(`/graph?lookback=${sel.value}`));
  const out = h('div.graph-out', null, h('p.muted.pad', null, 'Loading the service graph…'));
  app.append(h('div.graph-page', null, h('div.graph-head', null, h('h1', null, 'Service graph'), sel), out));
  const ready = () => {
    document.body.dataset.ready = '1';
    window.__clewReady = true;
  };
  (async () => {
    let g;
    try {
      g = await loadGraph(lb, ctl.signal);
    } catch (e) {
      if (e.name === 'AbortError') return;
      out.replaceChildren(errorBox('Cannot load the service graph', e.message));
      ready();
      return;
    }
    if (!g.edges.length && !g.nodes.length) {
      out.replaceChildren(
        h('div.empty#graph-empty', null, h('h2', null, 'No calls in this time window'), h('p', null, 'Widen the window, or send traces that cross services (try ', h('code', null, 'clew demo'), ').')),
      );
      ready();
      return;
    }
    const { layers, pos, back } = layout(g.nodes, g.edges);
    const virt = new Map(g.nodes.map((n) => [n.id, !!n.virtual]));
    const NW = 170;
    const NH = 38;
    const COL = 320;
    const ROW = 78;
    const maxRows = Math.max(...layers.map((L) => L.length));
    const W = 40 + (layers.length - 1) * COL + NW + 40;
    const H = 40 + (maxRows - 1) * ROW + NH + 40;
    const xy = (id) => {
      const p = pos.get(id);
      const L = layers[p.layer].length;
      const off = ((maxRows - L) * ROW) / 2;
      return { x: 40 + p.layer * COL, y: 40 + off + p.row * ROW };
    };
    const svg = s('svg', { class: 'graph', viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img', 'aria-label': 'Service graph' });
    svg.append(
      s('defs', null, s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: '9', refY: '5', markerWidth: '9', markerHeight: '9', markerUnits: 'userSpaceOnUse', orient: 'auto-start-reverse' }, s('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: 'arrowhead' }))),
    );
    const maxReq = Math.max(1, ...g.edges.map((e) => e.requests || 0));
    const edgeG = s('g', { class: 'edges' });
    const labelG = s('g', { class: 'labels' });
    for (const e of g.edges) {
      const a = xy(e.source);
      const b = xy(e.target);
      const rate = e.errors == null || !e.requests ? null : e.errors / e.requests;
      let d;
      let lx;
      let ly;
      if (e.source === e.target) {
        d = `M ${a.x + NW - 30} ${a.y} C ${a.x + NW} ${a.y - 50}, ${a.x + NW + 40} ${a.y}, ${a.x + NW} ${a.y + NH / 2}`;
        lx = a.x + NW + 20;
        ly = a.y - 24;
      } else if (back.has(`${e.source}\u0000${e.target}`) || pos.get(e.target).layer <= pos.get(e.source).layer) {
        const x1 = a.x + NW / 2;
        const x2 = b.x + NW / 2;
        const yTop = Math.min(a.y, b.y) - 30;
        d = `M ${x1} ${a.y} C ${x1} ${yTop}, ${x2} ${yTop}, ${x2} ${b.y}`;
        lx = (x1 + x2) / 2;
        ly = yTop + 4;
      } else {
        const x1 = a.x + NW;
        const y1 = a.y + NH / 2;
        const x2 = b.x;
        const y2 = b.y + NH / 2;
        const mx = (x1 + x2) / 2;
        d = `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2 - 2} ${y2}`;
        // Near the target, where fan-out edges have separated.
        lx = x2 - 70;
        ly = y2 + (y2 - y1 > 4 ? -8 : y2 - y1 < -4 ? 14 : -6);
      }
      const width = 1.2 + 3.5 * (Math.log(1 + (e.requests || 0)) / Math.log(1 + maxReq));
      const cls = rate != null && rate >= 0.05 ? 'edge bad' : rate != null && rate > 0 ? 'edge warn' : 'edge';
      edgeG.append(s('path', { d, class: cls, 'stroke-width': width.toFixed(2), 'marker-end': 'url(#arrow)', 'data-source': e.source, 'data-target': e.target }, s('title', null, `${e.source} → ${e.target}`)));
      const text = `${e.requests ?? 0} req${rate == null ? '' : ` · ${(rate * 100).toFixed(rate > 0 && rate < 0.01 ? 2 : 1)}% err`}`;
      labelG.append(s('text', { x: lx, y: ly, 'text-anchor': 'middle', class: 'edge-label' + (rate ? ' bad' : '') }, text));
    }
    const nodeG = s('g', { class: 'nodes' });
    for (const L of layers) {
      for (const id of L) {
        const { x, y } = xy(id);
        const v = virt.get(id);
        const label = id.length > 22 ? id.slice(0, 21) + '…' : id;
        nodeG.append(
          s(
            'g',
            {
              class: v ? 'node virtual' : 'node',
              'data-service': id,
              transform: `translate(${x},${y})`,
              onclick: v ? null : () => navigate(`/search?service=${encodeURIComponent(id)}&lookback=${lb}`),
            },
            s('title', null, v ? `${id} (not instrumented; seen from its callers)` : `${id} — click to search its traces`),
            s('rect', { width: NW, height: NH, rx: 8, style: v ? null : `--c:${serviceColor(id)}` }),
            s('circle', { cx: 14, cy: NH / 2, r: 5, fill: v ? 'none' : serviceColor(id), class: 'node-dot' }),
            s('text', { x: 26, y: NH / 2 + 4, class: 'node-label' }, label),
          ),
        );
      }
    }
    svg.append(edgeG, labelG, nodeG);
    const rows = g.edges
      .slice()
      .sort((x, y) => (y.requests || 0) - (x.requests || 0))
      .map((e) =>
        h(
          'tr.edge-row',
          { dataset: { source: e.source, target: e.target } },
          h('td', null, e.source),
          h('td', null, e.target),
          h('td.num', null, String(e.requests ?? '')),
          h('td.num', null, e.errors == null ? '–' : String(e.errors)),
          h('td.num', null, e.errors == null || !e.requests ? 'unknown' : `${((e.errors / e.requests) * 100).toFixed(1)}%`),
        ),
      );
    out.replaceChildren(
      ...[
      g.source === 'dependencies' ? h('p.muted.note#graph-fallback', null, 'Error rates unknown: the doctor service-graph API is not available, showing call counts from /api/dependencies.') : null,
      h('div.graph-scroll', null, svg),
      h(
        'table.edge-table#graph-edges',
        null,
        h('thead', null, h('tr', null, h('th', null, 'Caller'), h('th', null, 'Callee'), h('th.num', null, 'Requests'), h('th.num', null, 'Errors'), h('th.num', null, 'Error rate'))),
        h('tbody', null, rows),
      ),
      ].filter(Boolean),
    );
    ready();
  })();
  return () => ctl.abort();
}
