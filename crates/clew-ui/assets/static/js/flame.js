// Flame graph of one trace, next to the waterfall on the trace page: x = time, y = depth (roots on
// top), one canvas for all spans. The layout (per depth: spans sorted by start, running maximum of
// their ends) is computed once, on first show; a frame then visits only the spans of the visible
// rows that overlap the visible time range (two binary searches per row), draws spans narrower than
// a pixel as at most one 1-px mark per pixel column and row, and fills one path per service color.
// Hover: tooltip (service, operation, duration, self time). Click: selects the span (the trace
// page's detail panel). Wheel: zoom around the cursor; drag: pan; double-click: zoom to a span,
// double-click on empty space or "Reset zoom": whole trace.
import { h, fmtDur, serviceColor } from './util.js';

const ROW = 20; // px per depth level
const AXIS = 22; // px of time axis at the top
const LABEL_MIN = 28; // px: narrower spans get no label

/** `hsl(H S% L)` → [r, g, b] in 0..1. */
function hslRgb(hh, ss, ll) {
  const a = ss * Math.min(ll, 1 - ll);
  const f = (n) => {
    const k = (n + hh / 30) % 12;
    return ll - a * Math.max(-1, Math.min(k - 3, 9 - k, 1));
  };
  return [f(0), f(8), f(4)];
}

/** Resolved canvas color and readable label color of a service, for the current theme. */
function resolveColor(svc, light) {
  const css = serviceColor(svc).replace('var(--svc-l)', light);
  const m = /hsl\((\d+(?:\.\d+)?)\s+(\d+(?:\.\d+)?)%\s+(\d+(?:\.\d+)?)%\)/.exec(css);
  let text = '#fff';
  if (m) {
    const lin = (c) => (c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4);
    const [r, g, b] = hslRgb(Number(m[1]), Number(m[2]) / 100, Number(m[3]) / 100);
    const lum = 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
    // Contrast against black vs white: pick the larger.
    text = (lum + 0.05) / 0.05 > 1.05 / (lum + 0.05) ? '#111' : '#fff';
  }
  return { fill: css, text };
}

/** First index i in sorted `arr[list[i]]` (by key) with key > value (or >= when `eq`). */
function bound(list, keys, value, eq) {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    const k = keys[list[mid]];
    if (eq ? k < value : k <= value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** First index with pme[i] >= value (pme is non-decreasing). */
function boundPme(pme, value) {
  let lo = 0;
  let hi = pme.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (pme[mid] < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * The layout of a trace, computed once: per span (by DFS position) start/end relative to the trace
 * start and depth; per depth, the span positions sorted by start and the running maximum of ends.
 */
export function flameLayout(trace) {
  const order = trace.order;
  const n = order.length;
  const x0 = new Float64Array(n);
  const x1 = new Float64Array(n);
  const depth = new Int32Array(n);
  const svc = new Uint16Array(n);
  const err = new Uint8Array(n);
  const services = [];
  const svcIdx = new Map();
  let maxDepth = 0;
  const t0 = trace.start;
  const counts = [];
  for (let i = 0; i < n; i++) {
    const sp = order[i];
    x0[i] = sp.start - t0;
    x1[i] = sp.end - t0;
    const d = sp.depth;
    depth[i] = d;
    if (d > maxDepth) maxDepth = d;
    counts[d] = (counts[d] || 0) + 1;
    let si = svcIdx.get(sp.svc);
    if (si === undefined) {
      si = services.length;
      services.push(sp.svc);
      svcIdx.set(sp.svc, si);
    }
    svc[i] = si;
    err[i] = sp.error ? 1 : 0;
  }
  const byDepth = [];
  const fill = new Int32Array(maxDepth + 1);
  for (let d = 0; d <= maxDepth; d++) byDepth.push(new Int32Array(counts[d] || 0));
  for (let i = 0; i < n; i++) byDepth[depth[i]][fill[depth[i]]++] = i;
  const pme = [];
  for (let d = 0; d <= maxDepth; d++) {
    const list = byDepth[d];
    // DFS order is already sorted by start within one parent; sort across parents.
    let sorted = true;
    for (let j = 1; j < list.length; j++) {
      if (x0[list[j]] < x0[list[j - 1]]) {
        sorted = false;
        break;
      }
    }
    if (!sorted) list.sort((a, b) => x0[a] - x0[b] || a - b);
    const m = new Float64Array(list.length);
    let run = -Infinity;
    for (let j = 0; j < list.length; j++) {
      if (x1[list[j]] > run) run = x1[list[j]];
      m[j] = run;
    }
    pme.push(m);
  }
  return { n, x0, x1, depth, svc, err, services, byDepth, pme, maxDepth, total: Math.max(trace.duration, 1e-3) };
}

export class FlameGraph {
  /**
   * @param trace   the trace model (model.js)
   * @param opts    { onSelect(span|null), selected(): span|null, matches(): Set|null }
   */
  constructor(trace, opts = {}) {
    this.trace = trace;
    this.opts = opts;
    this.layout = null;
    this.view = [0, 1];
    this.hover = -1;
    this.raf = 0;
    this.listeners = [];
    this.canvas = h('canvas.flame-canvas#flame-canvas', { role: 'img', 'aria-label': 'Flame graph of the trace: time left to right, call depth top to bottom' });
    this.spacer = h('div.flame-spacer');
    this.scroller = h('div.flame-scroll#flame-scroll', { tabindex: '0' }, this.canvas, this.spacer);
    this.tip = h('div.flame-tip#flame-tooltip', { hidden: true, role: 'tooltip' });
    this.info = h('span.muted.flame-info#flame-info');
    this.resetBtn = h('button.btn.small#flame-reset', { type: 'button', title: 'Show the whole trace (double-click on empty space)', onclick: () => this.reset() }, 'Reset zoom');
    this.el = h(
      'div.flame#flame',
      { hidden: true },
      h('div.flame-head', null, this.resetBtn, this.info, h('span.grow'), h('span.muted.keys', null, 'wheel zoom · drag pan · click select · double-click zoom to span')),
      this.scroller,
      this.tip,
    );
    this.timing = null;
  }

  on(target, ev, fn, opts) {
    target.addEventListener(ev, fn, opts);
    this.listeners.push([target, ev, fn, opts]);
  }

  /** Computes the layout on first use and wires the events. */
  ensure() {
    if (this.layout) return;
    const t = performance.now();
    this.layout = flameLayout(this.trace);
    this.view = [0, this.layout.total];
    this.resolveColors();
    this.layoutMs = performance.now() - t;
    this.ctx = this.canvas.getContext('2d', { alpha: false });
    this.rects = this.layout.services.map(() => ({ a: new Float32Array(256), n: 0 }));
    this.dimRects = { a: new Float32Array(256), n: 0 };
    this.setupEvents();
    this.ro = new ResizeObserver(() => this.resize());
    this.ro.observe(this.scroller);
  }

  resolveColors() {
    const cs = getComputedStyle(document.documentElement);
    const light = cs.getPropertyValue('--svc-l').trim() || '50%';
    this.colors = this.layout.services.map((s) => resolveColor(s, light));
    const v = (k, d) => cs.getPropertyValue(k).trim() || d;
    this.theme = { bg: v('--panel', '#fff'), fg: v('--fg', '#111'), muted: v('--muted', '#888'), border: v('--border', '#ddd'), accent: v('--accent', '#2f6fdb'), bad: v('--bad', '#d92d20'), panel2: v('--panel2', '#eee') };
    this.font = `11px ${getComputedStyle(document.body).fontFamily || 'sans-serif'}`;
    this.charW = 0;
  }

  /** Shows the flame graph: layout (first time), size, synchronous first draw. */
  show() {
    const t = performance.now();
    this.el.hidden = false;
    this.ensure();
    this.resize(true);
    const drawn = performance.now();
    this.timing = { layoutMs: this.layoutMs, drawMs: this.lastDrawMs, showMs: drawn - t, shownAt: drawn, paintedAt: null };
    // Cost of the layout is paid once; later shows only draw.
    this.layoutMs = 0;
    requestAnimationFrame(() => {
      this.timing.paintedAt = performance.now();
      this.canvas.dataset.ready = '1';
    });
  }

  hide() {
    this.el.hidden = true;
    this.tip.hidden = true;
    delete this.canvas.dataset.ready;
  }

  get visible() {
    return !this.el.hidden;
  }

  dispose() {
    for (const [tg, ev, fn, opts] of this.listeners) tg.removeEventListener(ev, fn, opts);
    this.listeners = [];
    if (this.ro) this.ro.disconnect();
    if (this.raf) cancelAnimationFrame(this.raf);
    if (window.__clewFlame && window.__clewFlame.owner === this) delete window.__clewFlame;
  }

  resize(sync = false) {
    if (!this.layout || this.el.hidden) return;
    const W = this.scroller.clientWidth;
    const Hv = this.scroller.clientHeight;
    if (!W || !Hv) return;
    const total = AXIS + (this.layout.maxDepth + 1) * ROW + 4;
    const ch = Math.min(Hv, total);
    this.W = W;
    this.H = ch;
    this.tip.hidden = true;
    this.spacer.style.height = `${Math.max(0, total - ch)}px`;
    const dpr = window.devicePixelRatio || 1;
    this.dpr = dpr;
    this.canvas.width = Math.round(W * dpr);
    this.canvas.height = Math.round(ch * dpr);
    this.canvas.style.width = `${W}px`;
    this.canvas.style.height = `${ch}px`;
    if (sync) this.draw();
    else this.schedule();
  }

  schedule() {
    if (this.raf || !this.layout) return;
    this.raf = requestAnimationFrame(() => {
      this.raf = 0;
      this.draw();
    });
  }

  /** Redraws (selection, find matches or theme changed). */
  redraw() {
    if (!this.layout || this.el.hidden) return;
    this.schedule();
  }

  themeChanged() {
    if (!this.layout) return;
    this.resolveColors();
    this.redraw();
  }

  pxPerUs() {
    return this.W / Math.max(this.view[1] - this.view[0], 1e-9);
  }

  draw() {
    const L = this.layout;
    if (!L || this.el.hidden || !this.W) return;
    const t = performance.now();
    const ctx = this.ctx;
    const W = this.W;
    const H = this.H;
    const th = this.theme;
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    ctx.fillStyle = th.bg;
    ctx.fillRect(0, 0, W, H);
    const [v0, v1] = this.view;
    const scale = this.pxPerUs();
    const top = this.scroller.scrollTop;
    const d0 = Math.max(0, Math.floor(top / ROW));
    const d1 = Math.min(L.maxDepth, Math.floor((top + H - AXIS) / ROW));
    const matches = this.opts.matches ? this.opts.matches() : null;
    const selected = this.opts.selected ? this.opts.selected() : null;
    const order = this.trace.order;
    const rects = this.rects;
    for (const r of rects) r.n = 0;
    const dim = this.dimRects;
    dim.n = 0;
    const push = (buf, x, y, w) => {
      if (buf.n + 4 > buf.a.length) {
        const b = new Float32Array(buf.a.length * 2);
        b.set(buf.a);
        buf.a = b;
      }
      const a = buf.a;
      a[buf.n] = x;
      a[buf.n + 1] = y;
      a[buf.n + 2] = w;
      a[buf.n + 3] = ROW - 2;
      buf.n += 4;
    };
    const labels = [];
    const errs = [];
    let drawn = 0;
    let culled = 0;
    let selRect = null;
    let hovRect = null;
    for (let d = d0; d <= d1; d++) {
      const list = L.byDepth[d];
      if (!list.length) continue;
      const y = AXIS + d * ROW - top + 1;
      const lo = boundPme(L.pme[d], v0);
      const hi = bound(list, L.x0, v1, false);
      let lastCol = -2;
      let lastLabel = -1; // index in `labels` of this row's previous label
      for (let j = lo; j < hi; j++) {
        const k = list[j];
        const e = L.x1[k];
        if (e < v0) continue;
        let px0 = (L.x0[k] - v0) * scale;
        let px1 = (e - v0) * scale;
        if (px0 < -2) px0 = -2;
        if (px1 > W + 2) px1 = W + 2;
        const w = px1 - px0;
        const sp = order[k];
        const buf = matches && !matches.has(sp) ? dim : rects[L.svc[k]];
        // Spans of one depth may overlap (async children, several roots): a label stops where
        // the next span of its row starts.
        if (lastLabel >= 0 && labels[lastLabel + 1] + labels[lastLabel + 3] > px0) labels[lastLabel + 3] = px0 - labels[lastLabel + 1];
        if (w < 1) {
          // Narrower than a pixel: one mark per pixel column is all the eye can see.
          const col = Math.floor(px0);
          if (col === lastCol) {
            culled++;
            if (sp === selected) selRect = [col, y, 1];
            continue;
          }
          lastCol = col;
          push(buf, col, y, 1);
          drawn++;
          if (sp === selected) selRect = [col, y, 1];
          if (k === this.hover) hovRect = [col, y, 1];
          continue;
        }
        const gap = w > 4 ? 1 : 0;
        push(buf, px0, y, w - gap);
        drawn++;
        lastCol = Math.floor(px1);
        if (L.err[k]) errs.push(px0, y, w - gap);
        if (sp === selected) selRect = [px0, y, w - gap];
        if (k === this.hover) hovRect = [px0, y, w - gap];
        if (w >= LABEL_MIN) {
          lastLabel = labels.length;
          labels.push(k, px0, y, w - gap);
        }
      }
    }
    // One path per color.
    for (let si = 0; si < rects.length; si++) {
      const r = rects[si];
      if (!r.n) continue;
      ctx.fillStyle = this.colors[si].fill;
      ctx.beginPath();
      const a = r.a;
      for (let i = 0; i < r.n; i += 4) ctx.rect(a[i], a[i + 1], a[i + 2], a[i + 3]);
      ctx.fill();
    }
    if (dim.n) {
      ctx.fillStyle = th.border;
      ctx.beginPath();
      for (let i = 0; i < dim.n; i += 4) ctx.rect(dim.a[i], dim.a[i + 1], dim.a[i + 2], dim.a[i + 3]);
      ctx.fill();
    }
    if (errs.length) {
      ctx.fillStyle = th.bad;
      ctx.beginPath();
      for (let i = 0; i < errs.length; i += 3) ctx.rect(errs[i], errs[i + 1] + ROW - 5, errs[i + 2], 3);
      ctx.fill();
    }
    // Labels: the operation (and the service when there is room), truncated by an average char width.
    ctx.font = this.font;
    ctx.textBaseline = 'middle';
    if (!this.charW) this.charW = ctx.measureText('abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOP/0123456789').width / 53;
    const cw = this.charW;
    for (let i = 0; i < labels.length; i += 4) {
      const k = labels[i];
      const sp = order[k];
      const x = Math.max(labels[i + 1], 0);
      const w = Math.min(labels[i + 1] + labels[i + 3], W) - x;
      const max = Math.floor((w - 6) / cw);
      if (max < 2) continue;
      let text = sp.op;
      if (text.length + sp.svc.length + 3 <= max) text = `${sp.op} · ${sp.svc}`;
      else if (text.length > max) text = text.slice(0, max - 1) + '…';
      const dimmed = matches && !matches.has(sp);
      ctx.fillStyle = dimmed ? th.muted : this.colors[L.svc[k]].text;
      ctx.fillText(text, x + 3, labels[i + 2] + (ROW - 2) / 2);
    }
    const outline = (r, color, lw) => {
      if (!r) return;
      ctx.strokeStyle = color;
      ctx.lineWidth = lw;
      ctx.strokeRect(r[0] - lw / 2, r[1] - lw / 2, Math.max(r[2], 1) + lw, ROW - 2 + lw);
    };
    outline(hovRect, th.fg, 1);
    outline(selRect, th.accent, 2);
    this.drawAxis(ctx, W, v0, v1);
    this.lastDrawMs = performance.now() - t;
    this.stats = { drawn, culled, labels: labels.length / 4, drawMs: this.lastDrawMs, rows: d1 - d0 + 1 };
    this.canvas.dataset.view = `${v0.toFixed(3)},${v1.toFixed(3)}`;
    this.canvas.dataset.drawn = String(drawn);
    const zoomed = v0 > 0 || v1 < L.total;
    this.resetBtn.disabled = !zoomed;
    this.info.textContent = `${L.n.toLocaleString('en-US')} spans, depth ${L.maxDepth + 1} · showing ${fmtDur(v1 - v0)}${zoomed ? ` from +${fmtDur(v0)}` : ''}`;
  }

  drawAxis(ctx, W, v0, v1) {
    const th = this.theme;
    ctx.fillStyle = th.bg;
    ctx.fillRect(0, 0, W, AXIS);
    ctx.fillStyle = th.border;
    ctx.fillRect(0, AXIS - 1, W, 1);
    const span = v1 - v0;
    // A "nice" tick step giving ~ one tick per 110 px.
    const raw = (span / Math.max(W, 1)) * 110;
    const p = 10 ** Math.floor(Math.log10(Math.max(raw, 1e-9)));
    const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) || raw;
    ctx.font = this.font;
    ctx.textBaseline = 'middle';
    ctx.fillStyle = th.muted;
    const first = Math.ceil(v0 / step) * step;
    for (let v = first; v <= v1 + 1e-9; v += step) {
      const x = Math.round((v - v0) * (W / span)) + 0.5;
      ctx.fillRect(x, AXIS - 6, 1, 5);
      const label = fmtDur(v);
      if (x + 4 + label.length * 6 < W) ctx.fillText(label, x + 3, AXIS / 2 - 1);
    }
  }

  /** The span position (DFS index) under canvas-relative CSS pixel (x, y), or -1. */
  hitTest(x, y) {
    const L = this.layout;
    if (!L || y < AXIS || x < 0 || x > this.W) return -1;
    const d = Math.floor((y - AXIS + this.scroller.scrollTop) / ROW);
    if (d < 0 || d > L.maxDepth) return -1;
    const scale = this.pxPerUs();
    const t = this.view[0] + x / scale;
    const tol = 0.75 / scale; // sub-pixel spans are drawn 1 px wide
    const list = L.byDepth[d];
    const pme = L.pme[d];
    let j = bound(list, L.x0, t + tol, false) - 1;
    for (; j >= 0; j--) {
      if (pme[j] < t - tol) break;
      const k = list[j];
      if (L.x1[k] >= t - tol) return k;
    }
    return -1;
  }

  /** Canvas-relative CSS rect of a span in the current view, or null when off screen. */
  rectOf(sp) {
    const L = this.layout;
    if (!L || !sp) return null;
    const k = sp.pos;
    const scale = this.pxPerUs();
    const x = (L.x0[k] - this.view[0]) * scale;
    const w = Math.max((L.x1[k] - L.x0[k]) * scale, 1);
    const y = AXIS + L.depth[k] * ROW - this.scroller.scrollTop + 1;
    return { x, y, w, h: ROW - 2, visible: x + w > 0 && x < this.W && y >= AXIS && y + ROW - 2 <= this.H };
  }

  setView(a, b) {
    const L = this.layout;
    const total = L.total;
    const minW = Math.max(total / 1e6, 1e-3);
    let w = Math.min(Math.max(b - a, minW), total);
    let s = Math.max(0, Math.min(a, total - w));
    if (!(w > 0)) {
      s = 0;
      w = total;
    }
    this.view = [s, s + w];
    this.schedule();
  }

  reset() {
    if (!this.layout) return;
    this.setView(0, this.layout.total);
  }

  /** Zooms by `factor` (< 1 = in) keeping the time under canvas x fixed. */
  zoomAt(x, factor) {
    const [v0, v1] = this.view;
    const w = v1 - v0;
    const t = v0 + (x / this.W) * w;
    const nw = w * factor;
    this.setView(t - (x / this.W) * nw, t - (x / this.W) * nw + nw);
  }

  /** Zooms to a span with a little margin. */
  zoomTo(sp) {
    const L = this.layout;
    const k = sp.pos;
    const w = Math.max(L.x1[k] - L.x0[k], L.total / 1e6);
    this.setView(L.x0[k] - w * 0.03, L.x1[k] + w * 0.03);
  }

  local(e) {
    const r = this.canvas.getBoundingClientRect();
    return [e.clientX - r.left, e.clientY - r.top];
  }

  showTip(k, e) {
    if (k < 0) {
      this.tip.hidden = true;
      return;
    }
    const sp = this.trace.order[k];
    const pct = this.trace.duration > 0 ? ` · ${((sp.dur / this.trace.duration) * 100).toFixed(1)}% of the trace` : '';
    this.tip.replaceChildren(
      h('div.tip-head', null, h('span.svc-dot', { style: { background: this.colors[this.layout.svc[k]].fill } }), h('b.tip-svc', null, sp.svc)),
      h('div.tip-op', null, sp.op),
      h(
        'table.kv',
        null,
        h('tr', null, h('th', null, 'Duration'), h('td.tip-dur', null, fmtDur(sp.dur), h('span.muted', null, pct))),
        h('tr', null, h('th', null, 'Self time'), h('td.tip-self', null, fmtDur(sp.selfTime))),
        h('tr', null, h('th', null, 'Start'), h('td', null, `+${fmtDur(sp.start - this.trace.start)}`)),
        sp.error ? h('tr', null, h('th', null, 'Status'), h('td.bad', null, 'error')) : null,
      ),
    );
    this.tip.dataset.spanId = sp.id;
    this.tip.hidden = false;
    const host = this.el.getBoundingClientRect();
    const tw = this.tip.offsetWidth;
    const thh = this.tip.offsetHeight;
    let x = e.clientX - host.left + 14;
    let y = e.clientY - host.top + 14;
    if (x + tw > host.width - 4) x = Math.max(4, e.clientX - host.left - tw - 10);
    if (y + thh > host.height - 4) y = Math.max(4, e.clientY - host.top - thh - 10);
    this.tip.style.transform = `translate(${x}px, ${y}px)`;
  }

  setupEvents() {
    const c = this.canvas;
    let drag = null;
    this.on(c, 'mousemove', (e) => {
      if (drag) return;
      const [x, y] = this.local(e);
      const k = this.hitTest(x, y);
      c.style.cursor = k >= 0 ? 'pointer' : 'default';
      if (k !== this.hover) {
        this.hover = k;
        this.schedule();
      }
      this.showTip(k, e);
    });
    this.on(c, 'mouseleave', () => {
      this.tip.hidden = true;
      if (this.hover !== -1) {
        this.hover = -1;
        this.schedule();
      }
    });
    this.on(c, 'mousedown', (e) => {
      if (e.button !== 0) return;
      e.preventDefault();
      this.scroller.focus({ preventScroll: true });
      drag = { x: e.clientX, y: e.clientY, v0: this.view[0], v1: this.view[1], top: this.scroller.scrollTop, moved: false };
    });
    this.on(window, 'mousemove', (e) => {
      if (!drag) return;
      const dx = e.clientX - drag.x;
      const dy = e.clientY - drag.y;
      if (!drag.moved && Math.abs(dx) + Math.abs(dy) < 4) return;
      drag.moved = true;
      this.tip.hidden = true;
      c.style.cursor = 'grabbing';
      const us = (dx / this.W) * (drag.v1 - drag.v0);
      this.setView(drag.v0 - us, drag.v1 - us);
      this.scroller.scrollTop = drag.top - dy;
    });
    this.on(window, 'mouseup', (e) => {
      if (!drag) return;
      const moved = drag.moved;
      drag = null;
      c.style.cursor = 'default';
      if (moved || e.target !== c) return;
      const [x, y] = this.local(e);
      const k = this.hitTest(x, y);
      const sp = k >= 0 ? this.trace.order[k] : null;
      if (this.opts.onSelect) this.opts.onSelect(sp);
      this.schedule();
    });
    this.on(c, 'dblclick', (e) => {
      const [x, y] = this.local(e);
      const k = this.hitTest(x, y);
      if (k >= 0) this.zoomTo(this.trace.order[k]);
      else this.reset();
    });
    this.on(
      c,
      'wheel',
      (e) => {
        e.preventDefault();
        const [x] = this.local(e);
        if (e.shiftKey || Math.abs(e.deltaX) > Math.abs(e.deltaY)) {
          const d = e.shiftKey ? e.deltaY || e.deltaX : e.deltaX;
          const us = (d / this.W) * (this.view[1] - this.view[0]);
          this.setView(this.view[0] + us, this.view[1] + us);
          return;
        }
        const unit = e.deltaMode === 1 ? 16 : e.deltaMode === 2 ? 400 : 1;
        this.zoomAt(x, Math.exp(Math.max(-300, Math.min(300, e.deltaY * unit)) * 0.002));
        this.tip.hidden = true;
      },
      { passive: false },
    );
    this.on(this.scroller, 'scroll', () => this.schedule());
    this.on(this.scroller, 'keydown', (e) => {
      if (e.key === '+' || e.key === '=') this.zoomAt(this.W / 2, 0.8);
      else if (e.key === '-') this.zoomAt(this.W / 2, 1.25);
      else if (e.key === '0') this.reset();
      else return;
      e.preventDefault();
    });
    // Test and benchmark hook: positions in the current view, in viewport coordinates.
    const self = this;
    window.__clewFlame = {
      owner: this,
      get view() {
        return self.view.slice();
      },
      get timing() {
        return self.timing;
      },
      get stats() {
        return self.stats;
      },
      rect(spanId) {
        const sp = self.trace.byId.get(spanId);
        const r = sp && self.rectOf(sp);
        if (!r) return null;
        const b = self.canvas.getBoundingClientRect();
        return { x: b.left + r.x, y: b.top + r.y, w: r.w, h: r.h, cx: b.left + Math.max(r.x, 0) + Math.min(r.w, self.W - Math.max(r.x, 0)) / 2, cy: b.top + r.y + r.h / 2, visible: r.visible };
      },
      spanAt(clientX, clientY) {
        const b = self.canvas.getBoundingClientRect();
        const k = self.hitTest(clientX - b.left, clientY - b.top);
        return k >= 0 ? self.trace.order[k].id : null;
      },
      zoomAt: (x, f) => self.zoomAt(x, f),
      zoomTo: (id) => self.zoomTo(self.trace.byId.get(id)),
      reset: () => self.reset(),
      drawNow: () => {
        self.draw();
        return self.lastDrawMs;
      },
    };
  }
}

/** Creates the flame graph of `trace` (hidden until `show()`); `el` is its element. */
export function renderFlame(trace, opts) {
  return new FlameGraph(trace, opts);
}
