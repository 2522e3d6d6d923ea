// Trace page: header, warnings, minimap (drag to zoom), virtualized waterfall with a collapsible
// span tree and the critical path, span detail panel, find-in-trace, keyboard navigation and the
// statistics table.
import { h, fmtDur, fmtTime, getJSON, serviceColor, copyable, errorBox, navigate, debounce } from './util.js';
import { buildTraceUi, traceStats, findMatches } from './model.js';
import { renderFlame } from './flame.js';

const ROW_H = 24;
const OVERSCAN = 8;

const esc = (v) =>
  String(v).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);

function fmtVal(v) {
  if (v === null || v === undefined) return '';
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}

export function renderTrace(app, rawId, params) {
  const ctl = new AbortController();
  const id = rawId.trim();
  let disposed = false;
  let page = null;
  app.append(h('p.muted.pad#trace-loading', null, `Loading trace ${id}…`));

  const t0 = window.__clewPrefetch ? 0 : performance.now();
  (async () => {
    let r;
    try {
      if (!/^[0-9a-fA-F]{1,32}$/.test(id)) {
        const e = new Error(`"${id}" is not a trace id: a trace id is 1 to 32 hexadecimal digits.`);
        e.status = 400;
        throw e;
      }
      // index.html may already have started this request.
      const pre = window.__clewPrefetch;
      window.__clewPrefetch = null;
      const response = pre && pre.id === id ? pre.res : null;
      // The compact shape of the trace (/api/ui/traces/{id}); the Jaeger JSON is /api/traces/{id}.
      r = await getJSON(`/api/ui/traces/${encodeURIComponent(id)}`, { signal: ctl.signal, response });
    } catch (e) {
      if (e.name === 'AbortError') return;
      const title = e.status === 404 ? 'Trace not found' : e.status === 400 ? 'Not a valid trace id' : 'Cannot load the trace';
      const detail =
        e.status === 404
          ? `No trace with id ${id} is stored in Clew (it may be older than the retention, or not sent yet). Server said: ${e.message}`
          : e.message;
      app.replaceChildren(h('div#trace-error', null, errorBox(title, detail), h('p.pad', null, h('a', { href: '/search' }, '← Search traces'))));
      document.body.dataset.ready = '1';
      window.__clewReady = true;
      return;
    }
    const fetched = performance.now();
    if (!r || !r.spans || !r.spans.length) {
      app.replaceChildren(errorBox('Trace not found', `The server returned no spans for ${id}.`));
      return;
    }
    const trace = buildTraceUi(r);
    window.__clewTiming = { fetchMs: fetched - t0, buildMs: performance.now() - fetched };
    if (disposed) return;
    page = new TracePage(app, trace, params);
  })();

  return {
    dispose() {
      disposed = true;
      ctl.abort();
      if (page) page.dispose();
    },
    onParams(p) {
      if (page) page.selectFromParams(p);
    },
  };
}

class TracePage {
  constructor(app, trace, params) {
    this.app = app;
    this.trace = trace;
    this.collapsed = new Set();
    this.visible = new Int32Array(0);
    this.selected = null;
    this.view = [trace.start, trace.end];
    this.matches = [];
    this.matchSet = new Set();
    this.matchIdx = -1;
    this.version = 0;
    this.pool = [];
    this.highlight = null;
    this.listeners = [];
    // Deep trees get a narrower indent so names stay visible in the name column.
    this.indentStep = trace.maxDepth <= 12 ? 14 : Math.max(2, Math.floor(170 / trace.maxDepth));
    this.build();
    this.rebuildVisible();
    this.render();
    this.drawMinimap();
    this.selectFromParams(params, true);
    requestAnimationFrame(() => {
      document.body.dataset.ready = '1';
      window.__clewReady = true;
      window.__clewReadyAt = performance.now();
    });
  }

  on(target, ev, fn, opts) {
    target.addEventListener(ev, fn, opts);
    this.listeners.push([target, ev, fn, opts]);
  }

  dispose() {
    for (const [t, ev, fn, opts] of this.listeners) t.removeEventListener(ev, fn, opts);
    this.listeners = [];
    if (this.ro) this.ro.disconnect();
    if (this.flame) this.flame.dispose();
  }

  build() {
    const t = this.trace;
    const root = t.root;
    const title = root ? [h('span.svc-dot', { style: { background: serviceColor(root.svc) } }), h('b', null, root.svc), ': ', root.op] : 'Trace';
    const stat = (label, value, cls) => h('div.stat' + (cls ? '.' + cls : ''), null, h('span.label', null, label), h('span.value', null, value));
    const header = h(
      'div.trace-header',
      null,
      h('h1#trace-title', null, title),
      h(
        'div.trace-stats',
        null,
        stat('Trace', copyable(t.traceID)),
        stat('Started', fmtTime(t.start)),
        stat('Duration', h('span#trace-duration', null, fmtDur(t.duration))),
        stat('Spans', h('span#trace-span-count', null, String(t.spans.length))),
        stat('Services', String(t.services.size)),
        stat('Depth', String(t.maxDepth + 1)),
        stat('Errors', h('span#trace-error-count', null, String(t.errors)), t.errors ? 'bad' : ''),
        h('a.btn.small', { href: `/compare?a=${t.traceID}`, title: 'Compare this trace with another' }, 'Compare…'),
        h('a.btn.small', { href: `/api/traces/${t.traceID}`, target: '_blank', title: 'Jaeger JSON of this trace' }, 'JSON'),
      ),
      h(
        'div.legend',
        null,
        [...t.services.entries()]
          .sort((a, b) => b[1] - a[1])
          .map(([name, count]) =>
            h(
              'button.chip.legend-chip',
              {
                type: 'button',
                title: `Find the spans of ${name}`,
                style: { '--c': serviceColor(name) },
                onclick: () => {
                  this.findInput.value = `service.name=${name}`;
                  this.find(this.findInput.value);
                },
              },
              name,
              h('small', null, ` ${count}`),
            ),
          ),
      ),
    );

    this.warnBox = this.buildWarnings();

    // Toolbar
    this.findInput = h('input#find', { type: 'search', placeholder: 'Find in trace (name, service, key=value)… press /', 'aria-label': 'Find in trace', spellcheck: 'false', autocomplete: 'off' });
    this.findCount = h('span#find-count.muted', null, '');
    const runFind = debounce(() => this.find(this.findInput.value), 120);
    this.findInput.addEventListener('input', runFind);
    this.findInput.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') {
        e.preventDefault();
        if (this.findInput.value !== this.lastQuery) this.find(this.findInput.value);
        else this.stepMatch(e.shiftKey ? -1 : 1);
      } else if (e.key === 'Escape') {
        this.findInput.value = '';
        this.find('');
        this.findInput.blur();
        this.wfScroll.focus({ preventScroll: true });
      }
    });
    this.cpToggle = h('input#cp-toggle', { type: 'checkbox', checked: true });
    this.cpToggle.addEventListener('change', () => this.root.classList.toggle('show-cp', this.cpToggle.checked));
    this.resetZoom = h('button.btn.small#reset-zoom', { type: 'button', hidden: true, onclick: () => this.setView(this.trace.start, this.trace.end) }, 'Reset zoom');
    // Waterfall | Flame graph (the flame graph is built on first use: flame.js).
    this.viewWf = h('button.seg.active#view-waterfall', { type: 'button', 'aria-pressed': 'true', onclick: () => this.setMode('waterfall') }, 'Waterfall');
    this.viewFlame = h('button.seg#view-flame', { type: 'button', 'aria-pressed': 'false', onclick: () => this.setMode('flame') }, 'Flame graph');
    const toolbar = h(
      'div.toolbar',
      null,
      h('div.findbox', null, this.findInput, this.findCount, h('button.btn.small#find-prev', { type: 'button', title: 'Previous match (Shift+Enter)', onclick: () => this.stepMatch(-1) }, '↑'), h('button.btn.small#find-next', { type: 'button', title: 'Next match (Enter)', onclick: () => this.stepMatch(1) }, '↓')),
      h('button.btn.small.wf-only#expand-all', { type: 'button', onclick: () => this.expandAll() }, 'Expand all'),
      h('button.btn.small.wf-only#collapse-all', { type: 'button', onclick: () => this.collapseAll() }, 'Collapse all'),
      h('label.check.wf-only', { title: 'Highlight the critical path: the chain of work that determined the trace duration' }, this.cpToggle, ' Critical path'),
      this.resetZoom,
      h('span.grow'),
      h('span.muted.keys', null, '↑↓ move · ←→ collapse/expand · Enter details · Esc close · / find'),
    );

    // Minimap
    this.mini = h('canvas.minimap-canvas');
    this.miniSel = h('div.minimap-sel');
    this.miniWin = h('div.minimap-win');
    this.minimap = h('div.minimap#minimap', { title: 'Drag to zoom into a time range' }, this.mini, this.miniWin, this.miniSel);
    this.setupMinimap();

    // Waterfall
    this.ruler = h('div.ruler');
    this.spacer = h('div.wf-spacer');
    this.wfScroll = h('div.wf-scroll#waterfall', { tabindex: '0', role: 'tree', 'aria-label': 'Span waterfall' }, this.spacer);
    this.detail = h('aside.detail#span-detail', { hidden: true });
    const splitter = h('div.splitter#name-splitter', { title: 'Drag to resize the name column' });
    const wf = h('div.wf', null, h('div.wf-head', null, h('div.name-h', null, 'Service & operation', splitter), this.ruler), this.wfScroll);
    try {
      const saved = Number(localStorage.getItem('clew.namePct'));
      if (saved >= 10 && saved <= 75) wf.style.setProperty('--name-w', `${saved}%`);
    } catch {
      /* no storage */
    }
    splitter.addEventListener('mousedown', (e) => {
      e.preventDefault();
      const left = wf.getBoundingClientRect().left;
      const width = this.wfScroll.clientWidth || wf.clientWidth;
      let last = null;
      const move = (ev) => {
        last = Math.round(Math.min(75, Math.max(10, ((ev.clientX - left) / width) * 100)) * 10) / 10;
        wf.style.setProperty('--name-w', `${last}%`);
      };
      const up = () => {
        window.removeEventListener('mousemove', move);
        window.removeEventListener('mouseup', up);
        try {
          if (last) localStorage.setItem('clew.namePct', String(last));
        } catch {
          /* no storage */
        }
      };
      window.addEventListener('mousemove', move);
      window.addEventListener('mouseup', up);
    });
    this.wf = wf;
    this.flameSlot = h('div.flame-slot', { hidden: true });
    this.timeline = h('div.timeline-view', null, toolbar, this.minimap, h('div.wf-wrap', null, wf, this.flameSlot, this.detail));

    this.statsView = h('div.stats-view#stats', { hidden: true });
    const tabT = h('button.tab.active#tab-timeline', { type: 'button' }, 'Timeline');
    const tabS = h('button.tab#tab-stats', { type: 'button' }, 'Statistics');
    tabT.onclick = () => {
      tabT.classList.add('active');
      tabS.classList.remove('active');
      this.timeline.hidden = false;
      this.statsView.hidden = true;
      this.render();
    };
    tabS.onclick = () => {
      tabS.classList.add('active');
      tabT.classList.remove('active');
      this.timeline.hidden = true;
      this.statsView.hidden = false;
      if (!this.statsView.firstChild) this.renderStats();
    };

    this.root = h('div.trace-page.show-cp', null, header, this.warnBox, h('div.tabs', null, tabT, tabS, h('div.segmented#view-switch', { role: 'group', 'aria-label': 'Timeline view' }, this.viewWf, this.viewFlame)), this.timeline, this.statsView);
    this.app.replaceChildren(this.root);
    // One layout read at start: pad the header by the rows' scrollbar so the name column (a
    // percentage) and the ruler line up with the rows.
    const sb = this.wfScroll.offsetWidth - this.wfScroll.clientWidth;
    if (sb > 0) wf.firstChild.style.paddingRight = `${sb}px`;

    this.on(this.wfScroll, 'scroll', () => this.schedule());
    this.on(this.wfScroll, 'click', (e) => this.onRowClick(e));
    this.on(document, 'keydown', (e) => this.onKey(e));
    this.ro = new ResizeObserver(() => {
      this.drawMinimap();
      this.schedule();
    });
    this.ro.observe(this.wfScroll);
    this.on(window, 'clew:theme', () => {
      this.drawMinimap();
      if (this.flame) this.flame.themeChanged();
    });
  }

  /** Switches the timeline between the waterfall and the flame graph (`?view=flame`). */
  setMode(mode, updateUrl = true) {
    const flame = mode === 'flame';
    if (this.timeline.hidden) this.root.querySelector('#tab-timeline').click();
    if (flame && !this.flame) {
      this.flame = renderFlame(this.trace, {
        onSelect: (sp) => this.select(sp),
        selected: () => this.selected,
        matches: () => (this.matches.length ? this.matchSet : null),
      });
      this.flameSlot.append(this.flame.el);
    }
    this.mode = flame ? 'flame' : 'waterfall';
    this.root.classList.toggle('flame-mode', flame);
    this.viewWf.classList.toggle('active', !flame);
    this.viewFlame.classList.toggle('active', flame);
    this.viewWf.setAttribute('aria-pressed', String(!flame));
    this.viewFlame.setAttribute('aria-pressed', String(flame));
    this.wf.hidden = flame;
    this.minimap.hidden = flame;
    this.flameSlot.hidden = !flame;
    if (flame) this.flame.show();
    else {
      if (this.flame) this.flame.hide();
      this.schedule();
    }
    if (updateUrl) {
      const u = new URL(location.href);
      if (flame) u.searchParams.set('view', 'flame');
      else u.searchParams.delete('view');
      history.replaceState(null, '', u.pathname + u.search);
    }
  }

  buildWarnings() {
    const t = this.trace;
    const items = [];
    for (const sp of t.order) if (sp.warnings.length) items.push(sp);
    if (!items.length && !t.traceWarnings.length) return h('div.no-warnings');
    const parts = [];
    if (t.orphans) parts.push(`${t.orphans} orphan span${t.orphans > 1 ? 's' : ''}`);
    if (t.skewed) parts.push(`${t.skewed} span${t.skewed > 1 ? 's' : ''} with clock skew`);
    if (t.serverWarnings) parts.push(`${t.serverWarnings} warning${t.serverWarnings > 1 ? 's' : ''} from the server`);
    if (t.traceWarnings.length) parts.push(`${t.traceWarnings.length} trace warning${t.traceWarnings.length > 1 ? 's' : ''}`);
    const list = h('ul.warn-list');
    for (const w of t.traceWarnings) list.append(h('li', null, w));
    for (const sp of items.slice(0, 300)) {
      for (const w of sp.warnings) {
        list.append(h('li', null, h('a', { href: `?span=${sp.id}`, 'data-span-id': sp.id, onclick: (e) => { e.preventDefault(); e.stopPropagation(); this.reveal(sp, true); } }, `${sp.svc}: ${sp.op}`), ' — ', w));
      }
    }
    if (items.length > 300) list.append(h('li.muted', null, `… and ${items.length - 300} more spans with warnings`));
    return h('details.warnings#trace-warnings', { open: items.length <= 5 }, h('summary', null, '⚠ ', parts.join(' · ')), list);
  }

  // ----- visible rows / virtualization -------------------------------------------------------

  rebuildVisible() {
    const order = this.trace.order;
    const n = order.length;
    const out = new Int32Array(n);
    let k = 0;
    let i = 0;
    const collapsed = this.collapsed;
    while (i < n) {
      out[k++] = i;
      const sp = order[i];
      i = collapsed.size && collapsed.has(sp) ? sp.subtreeEnd : i + 1;
    }
    this.visible = out.subarray(0, k);
    this.rowOf = null;
    this.spacer.style.height = `${k * ROW_H}px`;
    this.version++;
  }

  /** Visible row index of a span, or -1 (binary search: visible holds increasing DFS positions). */
  rowIndex(sp) {
    const v = this.visible;
    let lo = 0;
    let hi = v.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (v[mid] === sp.pos) return mid;
      if (v[mid] < sp.pos) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }

  schedule() {
    if (this.raf) return;
    this.raf = requestAnimationFrame(() => {
      this.raf = 0;
      this.render();
    });
  }

  render() {
    if (this.timeline.hidden) return;
    const scrollTop = this.wfScroll.scrollTop;
    const height = this.wfScroll.clientHeight || 600;
    const first = Math.max(0, Math.floor(scrollTop / ROW_H) - OVERSCAN);
    const last = Math.min(this.visible.length, Math.ceil((scrollTop + height) / ROW_H) + OVERSCAN);
    const need = last - first;
    while (this.pool.length < need) {
      const row = document.createElement('div');
      row.className = 'row';
      row.setAttribute('role', 'treeitem');
      this.spacer.append(row);
      this.pool.push(row);
    }
    const order = this.trace.order;
    for (let j = 0; j < this.pool.length; j++) {
      const row = this.pool[j];
      if (j >= need) {
        if (!row.hidden) row.hidden = true;
        row._key = null;
        continue;
      }
      const ri = first + j;
      const sp = order[this.visible[ri]];
      const key = `${sp.idx}:${this.version}`;
      if (row.hidden) row.hidden = false;
      if (row._key !== key) {
        row._key = key;
        this.fillRow(row, sp);
      }
      row.style.transform = `translateY(${ri * ROW_H}px)`;
    }
    this.renderRuler();
  }

  fillRow(row, sp) {
    const [v0, v1] = this.view;
    const w = Math.max(v1 - v0, 1);
    const left = ((sp.start - v0) / w) * 100;
    const width = Math.max((sp.dur / w) * 100, 0);
    const color = serviceColor(sp.svc);
    const collapsed = this.collapsed.has(sp);
    const hasKids = sp.children.length > 0;
    let cls = 'row';
    if (sp === this.selected) cls += ' selected';
    if (this.matchSet.has(sp)) cls += ' match';
    if (this.matchIdx >= 0 && this.matches[this.matchIdx] === sp) cls += ' match-current';
    if (sp === this.highlight) cls += ' linked';
    if (sp === this.breakSpan) cls += ' doctor-break';
    if (sp.error) cls += ' error';
    if (sp.critical) cls += ' crit';
    if (sp.warnings.length) cls += ' warned';
    row.className = cls;
    row.dataset.spanId = sp.id;
    row.setAttribute('aria-level', String(sp.depth + 1));
    row.title = `${sp.svc}: ${sp.op} (${fmtDur(sp.dur)}, depth ${sp.depth})`;
    if (hasKids) row.setAttribute('aria-expanded', String(!collapsed));
    else row.removeAttribute('aria-expanded');
    const indent = sp.depth * this.indentStep;
    const tog = hasKids ? `<span class="tog" title="${collapsed ? 'Expand' : 'Collapse'}">${collapsed ? '▸' : '▾'}</span>` : '<span class="tog none"></span>';
    let badges = '';
    if (sp === this.breakSpan) badges += '<span class="badge brk" title="The trace doctor found the break here">⚡ break</span>';
    if (sp.error) badges += '<span class="badge err" title="error">!</span>';
    if (sp.warnings.length) badges += `<span class="badge warn" title="${esc(sp.warnings.join('\n'))}">⚠</span>`;
    if (collapsed) badges += `<span class="badge n" title="hidden descendants">${sp.subtreeEnd - sp.pos - 1}</span>`;
    let inner = '';
    if (sp.critical && sp.dur > 0) {
      for (const [a, b] of sp.critical) {
        inner += `<i class="cp" style="left:${((a - sp.start) / sp.dur) * 100}%;width:${((b - a) / sp.dur) * 100}%"></i>`;
      }
    }
    if (sp.logs.length && sp.dur > 0) {
      for (const l of sp.logs.length > 50 ? sp.logs.slice(0, 50) : sp.logs) {
        const p = Math.min(100, Math.max(0, ((l.timestamp - sp.start) / sp.dur) * 100));
        inner += `<i class="ev" style="left:${p}%"></i>`;
      }
    }
    const end = left + width;
    // Duration label: right of the bar; left of it when the bar ends near the edge; inside it when
    // the bar spans nearly everything.
    let pos;
    if (end <= 80) pos = `left:${Math.max(end, 0)}%`;
    else if (left >= 12) pos = `right:${Math.max(0, 100 - left)}%`;
    else pos = `right:${Math.max(0, 100 - Math.min(end, 100))}%" data-inside="1`;
    const label = `<span class="dur-label" style="${pos}">${fmtDur(sp.dur)}</span>`;
    row.innerHTML =
      `<div class="name" style="padding-left:${indent + 4}px">${tog}<span class="svc-dot" style="background:${color}"></span>` +
      `<span class="svc">${esc(sp.svc)}</span><span class="op">${esc(sp.op)}</span>${badges}</div>` +
      `<div class="tl"><div class="bar" style="left:${left}%;width:${width}%;background:${color}">${inner}</div>${label}</div>`;
  }

  renderRuler() {
    const [v0, v1] = this.view;
    const key = `${v0}:${v1}`;
    if (this.rulerKey === key) return;
    this.rulerKey = key;
    const t0 = this.trace.start;
    let html = '';
    for (let i = 0; i <= 4; i++) {
      const f = i / 4;
      const style = i === 4 ? 'right:0;text-align:right' : `left:${f * 100}%`;
      html += `<span class="tick" style="${style}">${fmtDur(v0 - t0 + f * (v1 - v0))}</span>`;
    }
    this.ruler.innerHTML = html;
  }

  refresh() {
    this.version++;
    this.render();
    if (this.flame) this.flame.redraw();
  }

  // ----- minimap --------------------------------------------------------------------------------

  drawMinimap() {
    const c = this.mini;
    const wpx = this.minimap.clientWidth || 800;
    const hpx = this.minimap.clientHeight || 56;
    const dpr = window.devicePixelRatio || 1;
    c.width = Math.round(wpx * dpr);
    c.height = Math.round(hpx * dpr);
    c.style.width = `${wpx}px`;
    c.style.height = `${hpx}px`;
    const ctx = c.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, wpx, hpx);
    const t = this.trace;
    const dur = Math.max(t.duration, 1);
    const n = t.order.length;
    const light = getComputedStyle(document.documentElement).getPropertyValue('--svc-l').trim() || '55%';
    const rowH = Math.max(hpx / Math.max(n, 1), 0.5);
    let lastColor = '';
    for (let i = 0; i < n; i++) {
      const sp = t.order[i];
      const col = serviceColor(sp.svc).replace('var(--svc-l)', light);
      if (col !== lastColor) {
        ctx.fillStyle = col;
        lastColor = col;
      }
      const x = ((sp.start - t.start) / dur) * wpx;
      const w = Math.max((sp.dur / dur) * wpx, 1);
      ctx.fillRect(x, (i / n) * hpx, w, Math.max(rowH, 1));
    }
    this.drawMiniWindow();
  }

  drawMiniWindow() {
    const t = this.trace;
    const dur = Math.max(t.duration, 1);
    const zoomed = this.view[0] > t.start || this.view[1] < t.end;
    this.miniWin.hidden = !zoomed;
    this.resetZoom.hidden = !zoomed;
    if (zoomed) {
      this.miniWin.style.left = `${((this.view[0] - t.start) / dur) * 100}%`;
      this.miniWin.style.width = `${((this.view[1] - this.view[0]) / dur) * 100}%`;
    }
  }

  setupMinimap() {
    let x0 = null;
    const frac = (e) => {
      const r = this.minimap.getBoundingClientRect();
      return Math.min(1, Math.max(0, (e.clientX - r.left) / r.width));
    };
    const move = (e) => {
      if (x0 === null) return;
      const x1 = frac(e);
      this.miniSel.hidden = false;
      this.miniSel.style.left = `${Math.min(x0, x1) * 100}%`;
      this.miniSel.style.width = `${Math.abs(x1 - x0) * 100}%`;
    };
    const up = (e) => {
      if (x0 === null) return;
      const x1 = frac(e);
      const a = Math.min(x0, x1);
      const b = Math.max(x0, x1);
      x0 = null;
      this.miniSel.hidden = true;
      if (b - a > 0.003) {
        const t = this.trace;
        this.setView(t.start + a * t.duration, t.start + b * t.duration);
      }
    };
    this.minimap.addEventListener('mousedown', (e) => {
      e.preventDefault();
      x0 = frac(e);
      move(e);
    });
    this.on(window, 'mousemove', move);
    this.on(window, 'mouseup', up);
    this.minimap.addEventListener('dblclick', () => this.setView(this.trace.start, this.trace.end));
    this.miniSel.hidden = true;
  }

  setView(a, b) {
    this.view = [a, Math.max(b, a + 1)];
    this.drawMiniWindow();
    this.refresh();
  }

  // ----- tree operations ------------------------------------------------------------------------

  toggle(sp, collapse) {
    if (!sp.children.length) return;
    const want = collapse === undefined ? !this.collapsed.has(sp) : collapse;
    if (want) this.collapsed.add(sp);
    else this.collapsed.delete(sp);
    this.rebuildVisible();
    this.render();
  }

  expandAll() {
    this.collapsed.clear();
    this.rebuildVisible();
    this.render();
  }

  collapseAll() {
    this.collapsed.clear();
    // Keep the roots' first level visible.
    for (const sp of this.trace.order) if (sp.children.length && sp.depth >= 1) this.collapsed.add(sp);
    if (this.selected) this.expandTo(this.selected);
    this.rebuildVisible();
    this.render();
  }

  expandTo(sp) {
    for (let p = sp.parent; p; p = p.parent) this.collapsed.delete(p);
  }

  /** Expands ancestors, scrolls the span into view and selects it. */
  reveal(sp, select = true, center = false) {
    let hidden = false;
    for (let p = sp.parent; p; p = p.parent) if (this.collapsed.has(p)) hidden = true;
    if (hidden) {
      this.expandTo(sp);
      this.rebuildVisible();
    }
    const ri = this.rowIndex(sp);
    if (ri >= 0) {
      const top = ri * ROW_H;
      const st = this.wfScroll.scrollTop;
      const hgt = this.wfScroll.clientHeight;
      if (center || top < st || top + ROW_H > st + hgt) this.wfScroll.scrollTop = Math.max(0, top - hgt / 2);
    }
    if (select) this.select(sp);
    else this.refresh();
  }

  select(sp, updateUrl = true) {
    this.selected = sp;
    if (updateUrl) {
      const u = new URL(location.href);
      if (sp) u.searchParams.set('span', sp.id);
      else u.searchParams.delete('span');
      history.replaceState(null, '', u.pathname + u.search);
    }
    this.showDetail(sp);
    this.refresh();
  }

  selectFromParams(params, initial = false) {
    const id = params.get('span');
    let sp = id ? this.trace.byId.get(id) : null;
    // From the doctor page: `break=1` marks the span where the trace broke (found by service and
    // operation when the server did not name it).
    const brk = params.get('break') === '1';
    if (brk && !sp && params.get('svc')) sp = this.findBreak(params.get('svc'), params.get('op'));
    this.showBreak(brk ? sp : null, params.get('kind'));
    if (initial && params.get('view') === 'flame') this.setMode('flame', false);
    if (sp) {
      this.highlight = sp;
      this.reveal(sp, false, true);
      // A break found by service and operation gets its span id into the URL.
      this.select(sp, brk && !id);
    } else if (!initial) {
      this.select(null, false);
    }
  }

  /** The span of `svc`/`op` most likely to be a doctor finding's break: orphans, skew, leaves first. */
  findBreak(svc, op) {
    let best = null;
    let bestScore = -1;
    for (const sp of this.trace.order) {
      if (sp.svc !== svc || (op && sp.op !== op)) continue;
      const score = (sp.orphan ? 4 : 0) + (sp.skew ? 4 : 0) + (!sp.parent && sp !== this.trace.root ? 2 : 0) + (sp.children.length ? 0 : 1);
      if (score > bestScore) {
        best = sp;
        bestScore = score;
      }
    }
    return best;
  }

  showBreak(sp, kind) {
    this.breakSpan = sp || null;
    if (this.breakNote) this.breakNote.remove();
    this.breakNote = null;
    if (!sp) return;
    const what = {
      context_lost_between_services: 'this call lost the trace context: the service it called started a new trace',
      context_lost_in_service: 'a new trace started while this span ran: work inside the service lost the context',
      orphan_spans: 'the parent of this span never arrived',
      multiple_roots: 'this span started a second root in the trace',
      clock_skew: 'this span lies outside its parent because of clock skew',
    }[kind] || 'the trace doctor found a problem at this span';
    this.breakNote = h(
      'div.doctor-break-note#doctor-break-note',
      { role: 'note' },
      h('b', null, '⚡ Doctor: '),
      h('a', { href: `?span=${sp.id}`, onclick: (e) => { e.preventDefault(); this.reveal(sp, true, true); } }, `${sp.svc}: ${sp.op}`),
      ` — ${what}. `,
      h('a', { href: '/doctor' }, 'All findings'),
    );
    this.warnBox.after(this.breakNote);
  }

  // ----- events ---------------------------------------------------------------------------------

  onRowClick(e) {
    const row = e.target.closest('.row');
    if (!row) return;
    const sp = this.trace.byId.get(row.dataset.spanId);
    if (!sp) return;
    if (e.target.closest('.tog')) {
      this.toggle(sp);
      return;
    }
    this.select(this.selected === sp ? null : sp);
  }

  onKey(e) {
    if (this.timeline.hidden || e.altKey || e.ctrlKey || e.metaKey) return;
    const tag = (e.target.tagName || '').toLowerCase();
    const typing = tag === 'input' || tag === 'textarea' || tag === 'select';
    if (e.key === '/' && !typing) {
      e.preventDefault();
      this.findInput.focus();
      this.findInput.select();
      return;
    }
    if (typing) return;
    const cur = this.selected;
    const move = (delta) => {
      let ri = cur ? this.rowIndex(cur) : -1;
      ri = ri < 0 ? 0 : Math.min(this.visible.length - 1, Math.max(0, ri + delta));
      const sp = this.trace.order[this.visible[ri]];
      if (sp) this.reveal(sp, true);
    };
    switch (e.key) {
      case 'ArrowDown':
        move(1);
        break;
      case 'ArrowUp':
        move(-1);
        break;
      case 'ArrowLeft':
        if (!cur) return;
        if (cur.children.length && !this.collapsed.has(cur)) this.toggle(cur, true);
        else if (cur.parent) this.reveal(cur.parent, true);
        break;
      case 'ArrowRight':
        if (!cur) return;
        if (this.collapsed.has(cur)) this.toggle(cur, false);
        else if (cur.children.length) this.reveal(cur.children[0], true);
        break;
      case 'Enter':
        if (!cur) return;
        this.detailOpen = this.detail.hidden;
        this.detail.hidden = !this.detailOpen;
        this.schedule();
        break;
      case 'Escape':
        if (this.matches.length) {
          this.findInput.value = '';
          this.find('');
        } else if (cur) this.select(null);
        break;
      default:
        return;
    }
    e.preventDefault();
  }

  // ----- find -----------------------------------------------------------------------------------

  find(q) {
    this.lastQuery = q;
    this.matches = findMatches(this.trace, q);
    this.matchSet = new Set(this.matches);
    this.matchIdx = this.matches.length ? 0 : -1;
    this.root.classList.toggle('finding', this.matches.length > 0);
    if (this.matches.length) this.reveal(this.matches[0], true);
    else this.refresh();
    this.updateFindCount();
  }

  stepMatch(d) {
    if (!this.matches.length) return;
    this.matchIdx = (this.matchIdx + d + this.matches.length) % this.matches.length;
    this.reveal(this.matches[this.matchIdx], true);
    this.updateFindCount();
  }

  updateFindCount() {
    const q = this.findInput.value.trim();
    this.findCount.textContent = !q ? '' : this.matches.length ? `${this.matchIdx + 1}/${this.matches.length}` : 'no match';
  }

  // ----- detail panel ---------------------------------------------------------------------------

  showDetail(sp) {
    const d = this.detail;
    if (!sp) {
      d.hidden = true;
      d.replaceChildren();
      return;
    }
    d.hidden = false;
    const t = this.trace;
    const tag = (k) => {
      const x = sp.tags.find((tt) => tt.key === k);
      return x ? x.value : undefined;
    };
    const kvTable = (rows, cls) =>
      h(
        'table.kv' + (cls ? '.' + cls : ''),
        null,
        rows.map(([k, v]) => h('tr', null, h('th', null, k), h('td', null, v))),
      );
    const status = tag('otel.status_code');
    const statusMsg = tag('otel.status_description');
    const section = (title, count, body, cls) =>
      h('section.dsec' + (cls ? '.' + cls : ''), null, h('h4', null, title, count != null ? h('span.count', null, ` ${count}`) : null), body);
    const parentRow = sp.parent
      ? h('a', { href: `?span=${sp.parent.id}`, onclick: (e) => { e.preventDefault(); this.reveal(sp.parent, true); } }, `${sp.parent.svc}: ${sp.parent.op}`)
      : sp.parentId
        ? h('span.bad', null, `${sp.parentId} (not in trace)`)
        : h('span.muted', null, 'none (root)');
    const hiddenKeys = new Set(['otel.status_code', 'otel.status_description']);
    const attrs = sp.tags.filter((x) => !hiddenKeys.has(x.key));
    const parts = [
      h(
        'div.dhead',
        null,
        h('div', null, h('span.chip', { style: { '--c': serviceColor(sp.svc) } }, sp.svc), h('h3#detail-op', null, sp.op)),
        h('button.btn.ghost.small#detail-close', { type: 'button', title: 'Close (Esc)', onclick: () => this.select(null) }, '✕'),
      ),
      kvTable([
        ['Span ID', copyable(sp.id)],
        ['Parent', parentRow],
        ['Start', `+${fmtDur(sp.start - t.start)}  (${fmtTime(sp.start)})`],
        ['Duration', h('b', null, fmtDur(sp.dur))],
        ['Self time', fmtDur(sp.selfTime)],
        ['Kind', sp.kind || '–'],
        [
          'Status',
          h(
            'span#detail-status',
            { class: status === 'ERROR' || sp.error ? 'bad' : '' },
            status || (sp.error ? 'ERROR' : 'UNSET'),
            statusMsg ? h('span.status-msg', null, ` — ${statusMsg}`) : null,
          ),
        ],
        ['Critical path', sp.critical ? fmtDur(sp.critical.reduce((a, [x, y]) => a + y - x, 0)) + ' on the critical path' : 'no'],
      ]),
      sp.warnings.length ? section('Warnings', sp.warnings.length, h('ul.detail-warnings', null, sp.warnings.map((w) => h('li', null, w))), 'warn-sec') : null,
      section('Attributes', attrs.length, attrs.length ? kvTable(attrs.map((x) => [x.key, fmtVal(x.value)]), 'attrs') : h('p.muted', null, 'none')),
      section(
        'Events',
        sp.logs.length,
        sp.logs.length
          ? h(
              'ol.events',
              null,
              sp.logs.map((l) => {
                const name = (l.fields.find((f) => f.key === 'event') || {}).value || 'event';
                const rest = l.fields.filter((f) => f.key !== 'event');
                return h('li', null, h('span.ev-time', null, `+${fmtDur(l.timestamp - sp.start)}`), ' ', h('b.ev-name', null, name), rest.length ? kvTable(rest.map((f) => [f.key, fmtVal(f.value)])) : null);
              }),
            )
          : h('p.muted', null, 'none'),
      ),
      section(
        'Links',
        sp.links.length,
        sp.links.length
          ? h(
              'ul.links',
              null,
              sp.links.map((l) => {
                const same = l.traceID === t.traceID;
                return h(
                  'li',
                  null,
                  h('a.link-target', { href: `/trace/${l.traceID}?span=${l.spanID}`, 'data-trace-id': l.traceID, 'data-span-id': l.spanID }, same ? `this trace / span ${l.spanID}` : `trace ${l.traceID} / span ${l.spanID}`),
                  h('span.muted', null, ` ${l.refType === 'FOLLOWS_FROM' ? 'follows from' : l.refType || ''}`),
                );
              }),
            )
          : h('p.muted', null, 'none'),
      ),
      section('Resource', sp.process.tags.length + 1, kvTable([['service.name', sp.svc], ...sp.process.tags.map((x) => [x.key, fmtVal(x.value)])], 'resource')),
    ];
    d.replaceChildren(...parts.filter(Boolean));
  }

  // ----- statistics -----------------------------------------------------------------------------

  renderStats() {
    const stats = traceStats(this.trace);
    const totalSelf = stats.reduce((a, s) => a + s.self, 0) || 1;
    let sortKey = 'self';
    const body = h('tbody');
    const cols = [
      ['svc', 'Service'],
      ['op', 'Operation'],
      ['count', 'Count'],
      ['total', 'Total time'],
      ['avg', 'Avg'],
      ['max', 'Max'],
      ['self', 'Self time'],
      ['pct', '% self'],
      ['errors', 'Errors'],
    ];
    for (const s of stats) {
      s.avg = s.total / s.count;
      s.pct = s.self / totalSelf;
    }
    const fill = () => {
      const sorted = stats.slice().sort((a, b) => (typeof a[sortKey] === 'string' ? a[sortKey].localeCompare(b[sortKey]) : b[sortKey] - a[sortKey]));
      body.replaceChildren(
        ...sorted.map((s) =>
          h(
            'tr',
            null,
            h('td', null, h('span.svc-dot', { style: { background: serviceColor(s.svc) } }), s.svc),
            h('td', null, s.op),
            h('td.num', null, String(s.count)),
            h('td.num', null, fmtDur(s.total)),
            h('td.num', null, fmtDur(s.avg)),
            h('td.num', null, fmtDur(s.max)),
            h('td.num', null, fmtDur(s.self)),
            h('td.num', null, h('span.pct', { style: { '--p': `${(s.pct * 100).toFixed(1)}%` } }, `${(s.pct * 100).toFixed(1)}%`)),
            h('td.num', { class: s.errors ? 'num bad' : 'num' }, String(s.errors)),
          ),
        ),
      );
    };
    const head = h(
      'tr',
      null,
      cols.map(([k, label]) => h('th', { class: ['svc', 'op'].includes(k) ? '' : 'num', title: 'Sort', onclick: () => { sortKey = k; fill(); } }, label)),
    );
    fill();
    this.statsView.replaceChildren(
      h('p.muted', null, 'Per service and operation. Self time = span duration minus time covered by its children.'),
      h('table.stats-table', null, h('thead', null, head), body),
    );
  }
}

export { navigate };
