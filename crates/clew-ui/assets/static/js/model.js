// Trace model: Jaeger JSON → span tree, DFS ordering, warnings, critical path, statistics,
// summaries for search results and the structural diff used by the compare page. No DOM here.

function tagValue(tags, key) {
  for (let i = 0; i < tags.length; i++) if (tags[i].key === key) return tags[i].value;
  return undefined;
}

function isErrorSpan(tags) {
  for (let i = 0; i < tags.length; i++) {
    const t = tags[i];
    if (t.key === 'error' && (t.value === true || t.value === 'true')) return true;
    if (t.key === 'otel.status_code' && t.value === 'ERROR') return true;
  }
  return false;
}

/**
 * Builds the span tree of one Jaeger trace in O(n log n).
 * Spans get: idx, id, parentId, parent (span|null), children[], depth, start, dur, end (µs),
 * svc, op, error, orphan, warnings[] (Clew's own + the server's), subtreeEnd (DFS index after
 * the subtree), links [{traceID, spanID}].
 */
export function buildTrace(jt) {
  const procs = jt.processes || {};
  const raw = jt.spans || [];
  const n = raw.length;
  const spans = new Array(n);
  const byId = new Map();
  let tMin = Infinity;
  let tMax = -Infinity;
  for (let i = 0; i < n; i++) {
    const r = raw[i];
    const refs = r.references || [];
    let parentId = null;
    const links = [];
    for (let j = 0; j < refs.length; j++) {
      const ref = refs[j];
      if (ref.refType === 'CHILD_OF' && parentId === null && ref.traceID === r.traceID) parentId = ref.spanID;
      else links.push({ traceID: ref.traceID, spanID: ref.spanID, refType: ref.refType });
    }
    const proc = procs[r.processID] || { serviceName: 'unknown', tags: [] };
    const tags = r.tags || [];
    const sp = {
      idx: i,
      id: r.spanID,
      traceID: r.traceID,
      parentId,
      parent: null,
      children: [],
      depth: 0,
      start: r.startTime,
      dur: r.duration,
      end: r.startTime + r.duration,
      svc: proc.serviceName,
      process: proc,
      op: r.operationName,
      tags,
      logs: r.logs || [],
      links,
      error: isErrorSpan(tags),
      kind: tagValue(tags, 'span.kind') || '',
      orphan: false,
      skew: false,
      warnings: r.warnings && r.warnings.length ? r.warnings.slice() : [],
      serverWarnings: r.warnings && r.warnings.length ? r.warnings.length : 0,
      subtreeEnd: 0,
      pos: 0,
      selfTime: 0,
      critical: null,
    };
    spans[i] = sp;
    if (!byId.has(sp.id)) byId.set(sp.id, sp);
    if (sp.start < tMin) tMin = sp.start;
    if (sp.end > tMax) tMax = sp.end;
  }
  return assemble(spans, byId, tMin, tMax, jt.traceID, jt.warnings || []);
}

/**
 * Tags of the compact UI shape (`/api/ui/traces/{id}`): flat `[k, v, ...]`; k >= 0 → key S[k],
 * string value S[v]; k < 0 → key S[-k - 1], value v as is.
 */
function decodeTags(flat, S) {
  const out = new Array(flat.length >> 1);
  for (let i = 0, j = 0; i < flat.length; i += 2, j++) {
    const k = flat[i];
    out[j] = k >= 0 ? { key: S[k], value: S[flat[i + 1]] } : { key: S[-k - 1], value: flat[i + 1] };
  }
  return out;
}

/** A span of the compact shape: tags and logs are decoded when first read (detail panel, find). */
class UiSpan {
  constructor(idx, id, traceID, parentId, start, dur, svc, process, op, rawTags, rawLogs, base, S, links, warnings) {
    this.idx = idx;
    this.id = id;
    this.traceID = traceID;
    this.parentId = parentId;
    this.parent = null;
    this.children = [];
    this.depth = 0;
    this.start = start;
    this.dur = dur;
    this.end = start + dur;
    this.svc = svc;
    this.process = process;
    this.op = op;
    this._rt = rawTags;
    this._rl = rawLogs;
    this._base = base;
    this._S = S;
    this._tags = null;
    this._logs = null;
    this.links = links;
    this.error = false;
    this.kind = '';
    this.orphan = false;
    this.skew = false;
    this.warnings = warnings;
    this.serverWarnings = warnings.length;
    this.subtreeEnd = 0;
    this.pos = 0;
    this.selfTime = 0;
    this.critical = null;
  }

  get tags() {
    if (this._tags === null) this._tags = decodeTags(this._rt, this._S);
    return this._tags;
  }

  get logs() {
    if (this._logs === null) {
      const rl = this._rl || [];
      this._logs = rl.map((l) => ({ timestamp: this._base + l[0], fields: decodeTags(l[1], this._S) }));
    }
    return this._logs;
  }
}

/** Builds the span tree from the compact UI shape; the same result as buildTrace of its Jaeger JSON. */
export function buildTraceUi(ct) {
  const S = ct.strings || [];
  const base = ct.base || 0;
  const traceID = ct.traceID;
  const procs = (ct.processes || []).map((p) => ({ serviceName: S[p[0]], tags: decodeTags(p[1], S) }));
  const unknown = { serviceName: 'unknown', tags: [] };
  const kError = S.indexOf('error');
  const kStatus = S.indexOf('otel.status_code');
  const kKind = S.indexOf('span.kind');
  const vTrue = S.indexOf('true');
  const vError = S.indexOf('ERROR');
  const raw = ct.spans || [];
  const n = raw.length;
  const spans = new Array(n);
  const byId = new Map();
  let tMin = Infinity;
  let tMax = -Infinity;
  const noWarnings = [];
  for (let i = 0; i < n; i++) {
    const r = raw[i];
    const p = r[1];
    const parentId = p === -1 ? null : typeof p === 'number' ? raw[p][0] : p;
    const proc = procs[r[2]] || unknown;
    const rl = r[7] || null;
    const w = r[8] ? r[8].slice() : [];
    const lk = r[9] ? r[9].map((l) => ({ traceID: l[0], spanID: l[1], refType: l[2] })) : noWarnings;
    const sp = new UiSpan(i, r[0], traceID, parentId, base + r[4], r[5], proc.serviceName, proc, S[r[3]], r[6], rl, base, S, lk === noWarnings ? [] : lk, w);
    const t = r[6];
    let error = false;
    let kind = '';
    for (let j = 0; j < t.length; j += 2) {
      const k = t[j];
      if (k >= 0) {
        if (k === kKind) {
          if (!kind) kind = S[t[j + 1]];
        } else if ((k === kStatus && t[j + 1] === vError) || (k === kError && t[j + 1] === vTrue)) error = true;
      } else if (-k - 1 === kError && t[j + 1] === true) error = true;
    }
    sp.error = error;
    sp.kind = kind;
    spans[i] = sp;
    if (!byId.has(sp.id)) byId.set(sp.id, sp);
    if (sp.start < tMin) tMin = sp.start;
    if (sp.end > tMax) tMax = sp.end;
  }
  return assemble(spans, byId, tMin, tMax, traceID, ct.warnings || []);
}

function assemble(spans, byId, tMin, tMax, traceID, traceWarnings) {
  const n = spans.length;
  const roots = [];
  let orphans = 0;
  let skewed = 0;
  for (let i = 0; i < n; i++) {
    const sp = spans[i];
    if (sp.parentId !== null) {
      const p = byId.get(sp.parentId);
      if (p && p !== sp) {
        sp.parent = p;
        p.children.push(sp);
        const serverSkew = sp.warnings.some((w) => /clock skew/i.test(w));
        // 1 µs of slack: Jaeger JSON truncates nanoseconds to microseconds.
        if (sp.start < p.start - 1 || sp.end > p.end + 1 || serverSkew) {
          sp.skew = true;
          skewed++;
          // The server may already have detected (and adjusted) it; do not say it twice.
          if (!serverSkew) {
            const d = sp.start < p.start ? `starts ${fmtUs(p.start - sp.start)} before` : `ends ${fmtUs(sp.end - p.end)} after`;
            sp.warnings.push(`clock skew: this span ${d} its parent (${p.svc}: ${p.op})`);
          }
        }
        continue;
      }
      sp.orphan = true;
      orphans++;
      if (!sp.warnings.some((w) => /not in (this )?trace/i.test(w))) sp.warnings.push(`orphan: parent span ${sp.parentId} is not in this trace`);
    }
    roots.push(sp);
  }
  const byStart = (a, b) => a.start - b.start || a.idx - b.idx;
  roots.sort((a, b) => (a.orphan - b.orphan) || byStart(a, b));
  for (let i = 0; i < n; i++) if (spans[i].children.length > 1) spans[i].children.sort(byStart);
  // Iterative DFS pre-order (deep traces would overflow the stack with recursion).
  const order = new Array(n);
  let k = 0;
  const stack = [];
  for (let r = roots.length - 1; r >= 0; r--) stack.push(roots[r]);
  const seen = new Uint8Array(n);
  while (stack.length) {
    const sp = stack.pop();
    if (seen[sp.idx]) continue;
    seen[sp.idx] = 1;
    sp.pos = k;
    order[k++] = sp;
    for (let c = sp.children.length - 1; c >= 0; c--) {
      const ch = sp.children[c];
      ch.depth = sp.depth + 1;
      stack.push(ch);
    }
  }
  // Cycles (a parent chain that loops) never reach a root: append them as roots.
  if (k < n) {
    for (let i = 0; i < n; i++) {
      if (!seen[spans[i].idx]) {
        const sp = spans[i];
        sp.warnings.push('cycle: this span is its own ancestor');
        if (sp.parent) sp.parent.children = sp.parent.children.filter((c) => c !== sp);
        sp.parent = null;
        sp.depth = 0;
        sp.pos = k;
        order[k++] = sp;
        seen[sp.idx] = 1;
      }
    }
  }
  // Subtree ends, bottom-up over the pre-order.
  for (let i = n - 1; i >= 0; i--) {
    const sp = order[i];
    let end = i + 1;
    for (const ch of sp.children) if (ch.subtreeEnd > end && ch.pos > i) end = Math.max(end, ch.subtreeEnd);
    sp.subtreeEnd = end;
  }
  computeSelfTimes(spans);
  const services = new Map();
  let errors = 0;
  let serverWarnings = 0;
  let maxDepth = 0;
  for (const sp of spans) {
    services.set(sp.svc, (services.get(sp.svc) || 0) + 1);
    if (sp.error) errors++;
    if (sp.serverWarnings) {
      serverWarnings += sp.warnings
        .slice(0, sp.serverWarnings)
        .filter((w) => !(sp.skew && /clock skew/i.test(w)) && !(sp.orphan && /not in (this )?trace/i.test(w))).length;
    }
    if (sp.depth > maxDepth) maxDepth = sp.depth;
  }
  const root = roots[0] || null;
  const trace = {
    traceID,
    spans,
    order,
    roots,
    byId,
    start: n ? tMin : 0,
    end: n ? tMax : 0,
    duration: n ? tMax - tMin : 0,
    root,
    services,
    errors,
    orphans,
    skewed,
    serverWarnings,
    traceWarnings,
    maxDepth,
    critical: [],
  };
  trace.critical = criticalPath(trace);
  return trace;
}

function fmtUs(us) {
  if (us < 1000) return `${Math.round(us)}µs`;
  if (us < 1e6) return `${(us / 1000).toFixed(2)}ms`;
  return `${(us / 1e6).toFixed(2)}s`;
}

/** Self time: duration minus the union of the children's intervals (clipped to the span). */
function computeSelfTimes(spans) {
  for (const sp of spans) {
    const ch = sp.children;
    if (!ch.length) {
      sp.selfTime = sp.dur;
      continue;
    }
    // children are sorted by start
    let covered = 0;
    let curS = -Infinity;
    let curE = -Infinity;
    for (const c of ch) {
      const s = Math.max(c.start, sp.start);
      const e = Math.min(c.end, sp.end);
      if (e <= s) continue;
      if (s > curE) {
        if (curE > curS) covered += curE - curS;
        curS = s;
        curE = e;
      } else if (e > curE) curE = e;
    }
    if (curE > curS) covered += curE - curS;
    sp.selfTime = Math.max(0, sp.dur - covered);
  }
}

/**
 * The critical path, as the Jaeger UI computes it: from the root, repeatedly take the
 * last-finishing child (children clipped to their parent, follows-from links ignored) that
 * finished before the point we came back from, attribute the gap to the parent, descend; when a
 * span has no such child, attribute its remaining start..point to it and climb to its parent.
 * Returns sections [{span, start, end}] and marks span.critical = [[start, end], ...].
 */
export function criticalPath(trace) {
  const root = trace.root;
  if (!root) return [];
  // Children of each span sorted by (clipped) end time, descending; cursor per span.
  const sortedKids = new Map();
  const clipEnd = (c) => Math.min(c.end, c.parent ? c.parent.end : c.end);
  const kidsOf = (sp) => {
    let k = sortedKids.get(sp);
    if (!k) {
      k = { list: sp.children.slice().sort((a, b) => clipEnd(b) - clipEnd(a)), i: 0 };
      sortedKids.set(sp, k);
    }
    return k;
  };
  const out = [];
  let cur = root;
  let returning = null; // start time of the child we climbed back from
  let guard = trace.spans.length * 4 + 10;
  while (cur && guard-- > 0) {
    const limit = returning === null ? clipEnd(cur) : returning;
    const kids = kidsOf(cur);
    let next = null;
    while (kids.i < kids.list.length) {
      const c = kids.list[kids.i];
      const ce = clipEnd(c);
      if (ce <= limit && Math.max(c.start, cur.start) < ce) {
        next = c;
        kids.i++;
        break;
      }
      kids.i++;
    }
    if (next) {
      const s = clipEnd(next);
      if (limit > s) out.push({ span: cur, start: s, end: limit });
      cur = next;
      returning = null;
    } else {
      const s = cur.start;
      if (limit > s) out.push({ span: cur, start: s, end: limit });
      if (cur === root || !cur.parent) break;
      returning = Math.max(cur.start, cur.parent.start);
      cur = cur.parent;
    }
  }
  for (const sp of trace.spans) sp.critical = null;
  for (const sec of out) (sec.span.critical || (sec.span.critical = [])).push([sec.start, sec.end]);
  return out;
}

/** Per (service, operation): count, total duration, total self time, and the same per service. */
export function traceStats(trace) {
  const m = new Map();
  for (const sp of trace.spans) {
    const key = sp.svc + '\u0000' + sp.op;
    let e = m.get(key);
    if (!e) {
      e = { svc: sp.svc, op: sp.op, count: 0, total: 0, self: 0, errors: 0, max: 0 };
      m.set(key, e);
    }
    e.count++;
    e.total += sp.dur;
    e.self += sp.selfTime;
    if (sp.error) e.errors++;
    if (sp.dur > e.max) e.max = sp.dur;
  }
  return [...m.values()].sort((a, b) => b.self - a.self);
}

/** The one-line summary of a Jaeger trace for search results (cheap: no tree building). */
export function summarize(jt) {
  const procs = jt.processes || {};
  const ids = new Set();
  for (const sp of jt.spans) ids.add(sp.spanID);
  let root = null;
  let tMin = Infinity;
  let tMax = -Infinity;
  let errors = 0;
  let warned = 0;
  const services = new Map();
  for (const sp of jt.spans) {
    const refs = sp.references || [];
    const parent = refs.find((r) => r.refType === 'CHILD_OF');
    const isRoot = !parent || !ids.has(parent.spanID);
    if (isRoot && (!root || (!root.isTrueRoot && !parent) || (Boolean(!parent) === root.isTrueRoot && sp.startTime < root.startTime))) {
      root = { ...sp, isTrueRoot: !parent };
    }
    if (sp.startTime < tMin) tMin = sp.startTime;
    if (sp.startTime + sp.duration > tMax) tMax = sp.startTime + sp.duration;
    if (isErrorSpan(sp.tags || [])) errors++;
    if (sp.warnings && sp.warnings.length) warned++;
    const svc = (procs[sp.processID] || {}).serviceName || 'unknown';
    const e = services.get(svc) || { count: 0, errors: 0 };
    e.count++;
    if (isErrorSpan(sp.tags || [])) e.errors++;
    services.set(svc, e);
  }
  return {
    traceID: jt.traceID,
    rootService: root ? (procs[root.processID] || {}).serviceName || 'unknown' : 'unknown',
    rootOperation: root ? root.operationName : '',
    start: tMin,
    duration: jt.spans.length ? tMax - tMin : 0,
    spanCount: jt.spans.length,
    errors,
    warned,
    services: [...services.entries()].map(([name, v]) => ({ name, ...v })).sort((a, b) => a.name.localeCompare(b.name)),
  };
}

/**
 * Structural diff of two traces: spans matched by their path of (service, operation) from the
 * root. Rows in tree order (A's order, then paths only in B placed under their parent path).
 */
export function diffTraces(a, b) {
  const group = (trace) => {
    const m = new Map();
    const keyOf = new Map();
    for (const sp of trace.order) {
      const self = `${sp.svc}\u0001${sp.op}`;
      const key = sp.parent && keyOf.has(sp.parent) ? keyOf.get(sp.parent) + '\u0000' + self : self;
      keyOf.set(sp, key);
      let g = m.get(key);
      if (!g) {
        g = { key, svc: sp.svc, op: sp.op, depth: key.split('\u0000').length - 1, count: 0, total: 0, errors: 0, first: sp };
        m.set(key, g);
      }
      g.count++;
      g.total += sp.dur;
      if (sp.error) g.errors++;
    }
    return m;
  };
  const ga = group(a);
  const gb = group(b);
  const keys = [...ga.keys()];
  const inA = new Set(keys);
  // Insert B-only paths right after their parent's subtree position (or at the end).
  for (const k of gb.keys()) {
    if (inA.has(k)) continue;
    const parent = k.includes('\u0000') ? k.slice(0, k.lastIndexOf('\u0000')) : null;
    let at = keys.length;
    if (parent !== null) {
      const pi = keys.indexOf(parent);
      if (pi >= 0) {
        at = pi + 1;
        while (at < keys.length && keys[at].startsWith(parent + '\u0000')) at++;
      }
    }
    keys.splice(at, 0, k);
    inA.add(k);
  }
  const rows = keys.map((key) => {
    const x = ga.get(key);
    const y = gb.get(key);
    const g = x || y;
    const row = {
      key,
      svc: g.svc,
      op: g.op,
      depth: g.depth,
      countA: x ? x.count : 0,
      countB: y ? y.count : 0,
      durA: x ? x.total : 0,
      durB: y ? y.total : 0,
      errorsA: x ? x.errors : 0,
      errorsB: y ? y.errors : 0,
      spanA: x ? x.first.id : null,
      spanB: y ? y.first.id : null,
    };
    row.delta = row.durB - row.durA;
    if (!x) row.kind = 'added';
    else if (!y) row.kind = 'removed';
    else {
      const base = Math.max(row.durA, 1);
      const rel = row.delta / base;
      if (rel > 0.1 && row.delta >= 100) row.kind = 'slower';
      else if (rel < -0.1 && row.delta <= -100) row.kind = 'faster';
      else row.kind = 'same';
      if (row.countA !== row.countB && row.kind === 'same') row.kind = 'count';
    }
    return row;
  });
  const counts = { added: 0, removed: 0, slower: 0, faster: 0, same: 0, count: 0 };
  for (const r of rows) counts[r.kind]++;
  return { rows, counts };
}

/** Spans matching a find query: name, service, id, or any attribute/resource key/value ("k=v"). */
export function findMatches(trace, query) {
  const q = query.trim().toLowerCase();
  if (!q) return [];
  const eq = q.indexOf('=');
  const kq = eq > 0 ? q.slice(0, eq).trim() : null;
  const vq = eq > 0 ? q.slice(eq + 1).trim() : null;
  const out = [];
  for (const sp of trace.order) {
    let hit = false;
    if (kq !== null) {
      const test = (t) => String(t.key).toLowerCase() === kq && String(t.value).toLowerCase().includes(vq);
      hit = sp.tags.some(test) || sp.process.tags.some(test) || (kq === 'service.name' && sp.svc.toLowerCase() === vq);
    } else {
      hit =
        sp.op.toLowerCase().includes(q) ||
        sp.svc.toLowerCase().includes(q) ||
        sp.id === q ||
        sp.tags.some((t) => String(t.key).toLowerCase().includes(q) || String(t.value).toLowerCase().includes(q)) ||
        sp.logs.some((l) => l.fields.some((f) => String(f.value).toLowerCase().includes(q)));
    }
    if (hit) out.push(sp);
  }
  return out;
}
