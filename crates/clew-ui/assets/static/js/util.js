// Small helpers shared by every page: DOM building, formatting, colors, HTTP.

/** Creates an element: h('div.cls#id', {attrs}, ...children). */
export function h(tag, attrs, ...children) {
  const m = /^([a-z0-9]+)?((?:[.#][\w-]+)*)$/i.exec(tag);
  const el = document.createElement((m && m[1]) || 'div');
  if (m && m[2]) {
    for (const part of m[2].match(/[.#][\w-]+/g)) {
      if (part[0] === '.') el.classList.add(part.slice(1));
      else el.id = part.slice(1);
    }
  }
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v == null || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k === 'style' && typeof v === 'object') Object.assign(el.style, v);
      else if (k === 'text') el.textContent = v;
      else if (k === 'value') el.value = v;
      else el.setAttribute(k, v === true ? '' : v);
    }
  }
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  for (const c of children.flat(Infinity)) {
    if (c == null) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Human duration from microseconds: 850µs, 12.3ms, 4.56s, 2m 5s. */
export function fmtDur(us) {
  if (us == null || !isFinite(us)) return '–';
  const a = Math.abs(us);
  const sign = us < 0 ? '-' : '';
  if (a < 1000) return sign + trim(a, a < 10 ? 2 : a < 100 ? 1 : 0) + 'µs';
  if (a < 1e6) return sign + trim(a / 1e3, a < 1e4 ? 2 : a < 1e5 ? 1 : 0) + 'ms';
  if (a < 60e6) return sign + trim(a / 1e6, 2) + 's';
  const m = Math.floor(a / 60e6);
  if (m < 60) return `${sign}${m}m ${Math.round((a - m * 60e6) / 1e6)}s`;
  return `${sign}${Math.floor(m / 60)}h ${m % 60}m`;
}

function trim(v, digits) {
  return String(Number(v.toFixed(digits)));
}

/** Parses "150ms", "1.5s", "200us", "2m" into microseconds, or null. */
export function parseDur(text) {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h)?\s*$/.exec(text || '');
  if (!m) return null;
  const mult = { ns: 1e-3, us: 1, 'µs': 1, ms: 1e3, s: 1e6, m: 60e6, h: 3600e6 }[m[2] || 'ms'];
  return Number(m[1]) * mult;
}

const pad = (n, w = 2) => String(n).padStart(w, '0');

/** Local date-time from epoch microseconds, to the millisecond. */
export function fmtTime(us) {
  const d = new Date(us / 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

export function fmtClock(us) {
  const d = new Date(us / 1000);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtAgo(us) {
  const sec = (Date.now() * 1000 - us) / 1e6;
  if (sec < 60) return `${Math.max(0, Math.round(sec))}s ago`;
  if (sec < 3600) return `${Math.round(sec / 60)}m ago`;
  if (sec < 86400) return `${Math.round(sec / 3600)}h ago`;
  return `${Math.round(sec / 86400)}d ago`;
}

/** A stable color per service (golden-angle hues; lightness adapts to the theme via CSS vars). */
const colorCache = new Map();
export function serviceColor(name) {
  let c = colorCache.get(name);
  if (!c) {
    let hsh = 2166136261;
    for (let i = 0; i < name.length; i++) hsh = Math.imul(hsh ^ name.charCodeAt(i), 16777619);
    const hue = ((hsh >>> 0) % 360 + (colorCache.size * 137.5)) % 360;
    c = `hsl(${Math.round(hue)} 62% var(--svc-l))`;
    colorCache.set(name, c);
  }
  return c;
}

export class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// Authentication: when the server asks for credentials (401), the UI asks for a token once, keeps
// it for this tab (sessionStorage, never localStorage) and sends it as `Authorization: Bearer` with
// every API call. The tenant comes from the token on the server side.
const TOKEN_KEY = 'clew.token';

/** The token of this tab, or null. */
export function storedToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || null;
  } catch {
    return null;
  }
}

/** Stores (or, with null, forgets) the token; fires `clew:auth`. */
export function setToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    /* private mode: kept for this page only */
  }
  window.dispatchEvent(new Event('clew:auth'));
}

let tokenPrompt = null;

/** One "Token" dialog for every request that got a 401 meanwhile; resolves to the token or null. */
function askToken(message) {
  if (!tokenPrompt) {
    tokenPrompt = new Promise((resolve) => {
      const input = h('input#auth-token', {
        type: 'password',
        autocomplete: 'off',
        spellcheck: 'false',
        placeholder: 'Bearer token',
        'aria-label': 'Token',
        style: { width: '100%', boxSizing: 'border-box', margin: '8px 0 12px' },
      });
      const dlg = h(
        'dialog#auth-dialog',
        {
          'aria-labelledby': 'auth-title',
          style: {
            minWidth: '22rem',
            maxWidth: '90vw',
            background: 'var(--panel)',
            color: 'var(--fg)',
            border: '1px solid var(--border)',
            borderRadius: '8px',
            padding: '16px 20px',
          },
        },
        h(
          'form',
          { method: 'dialog' },
          h('h2#auth-title', { style: { marginTop: '0' } }, 'Token'),
          h('p.muted', null, message),
          input,
          h(
            'div',
            { style: { display: 'flex', gap: '8px', justifyContent: 'flex-end' } },
            h('button.btn.ghost#auth-cancel', { type: 'button', onclick: () => done(null) }, 'Cancel'),
            h('button.btn.primary#auth-submit', { type: 'submit' }, 'Sign in'),
          ),
        ),
      );
      function done(token) {
        if (dlg.open) dlg.close();
        dlg.remove();
        if (token) setToken(token);
        tokenPrompt = null;
        resolve(token);
      }
      dlg.querySelector('form').addEventListener('submit', (e) => {
        e.preventDefault();
        done(input.value.trim() || null);
      });
      dlg.addEventListener('cancel', (e) => {
        e.preventDefault();
        done(null);
      });
      document.body.append(dlg);
      if (dlg.showModal) dlg.showModal();
      else dlg.setAttribute('open', '');
      input.focus();
    });
  }
  return tokenPrompt;
}

/**
 * fetch() for Clew's APIs: adds `Authorization: Bearer <token>` when a token is stored; on a 401
 * asks for a token (one dialog for all requests) and retries. Every `/api/...` call goes through it.
 */
export async function apiFetch(url, opts = {}) {
  for (let attempt = 0; ; attempt++) {
    const token = storedToken();
    const headers = new Headers(opts.headers || {});
    if (token) headers.set('Authorization', `Bearer ${token}`);
    const res = await fetch(url, { ...opts, headers });
    if (res.status !== 401 || attempt >= 5) return res;
    // Another request stored a token meanwhile: retry with it before asking.
    if (storedToken() && storedToken() !== token) continue;
    const given = await askToken(
      token ? 'The token was not accepted (unknown, revoked or expired). Enter another one.' : 'This Clew requires a token.',
    );
    if (!given) return res;
  }
}

/** GETs JSON; non-2xx → HttpError with the server's message (Jaeger envelope or api_v3 shape). */
export async function getJSON(url, opts = {}) {
  let res;
  const request = () => apiFetch(url, { headers: { Accept: 'application/json' }, signal: opts.signal });
  try {
    res = await (opts.response || request());
    // A response fetched ahead without credentials (the trace page's prefetch): ask, retry.
    if (opts.response && res.status === 401) res = await request();
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new HttpError(0, `cannot reach the Clew server (${e.message})`);
  }
  let body = null;
  const text = await res.text();
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!res.ok) {
    const msg =
      (body && body.errors && body.errors[0] && body.errors[0].msg) ||
      (body && body.error && (body.error.message || body.error)) ||
      text.slice(0, 200) ||
      res.statusText;
    throw new HttpError(res.status, String(msg));
  }
  return body;
}

export function toast(msg) {
  const t = document.getElementById('toast');
  if (!t) return;
  t.textContent = msg;
  t.classList.add('show');
  clearTimeout(toast._t);
  toast._t = setTimeout(() => t.classList.remove('show'), 1400);
}

export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const ta = h('textarea', { style: { position: 'fixed', opacity: '0' } });
    ta.value = text;
    document.body.append(ta);
    ta.select();
    try {
      document.execCommand('copy');
    } catch {
      /* nothing more to try */
    }
    ta.remove();
  }
  toast(`Copied ${text.length > 40 ? text.slice(0, 40) + '…' : text}`);
}

/** An id shown in monospace that copies itself on click. */
export function copyable(text, label) {
  return h(
    'span.copy',
    {
      title: 'Click to copy',
      tabindex: '0',
      'data-copy': text,
      onclick: (e) => {
        e.preventDefault();
        e.stopPropagation();
        copyText(text);
      },
    },
    label || text,
  );
}

export function navigate(url, replace = false) {
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  window.dispatchEvent(new Event('clew:navigate'));
}

/** The "no data yet" explanation. */
export function howToSend() {
  const host = location.hostname || '127.0.0.1';
  return h(
    'div.empty',
    null,
    h('h2', null, 'No traces yet'),
    h('p', null, 'Clew has not received any spans. Point an OpenTelemetry SDK or collector at it:'),
    h(
      'ul',
      null,
      h('li', null, h('b', null, 'OTLP/gRPC'), ' on ', h('code', null, `${host}:4317`)),
      h('li', null, h('b', null, 'OTLP/HTTP'), ' on ', h('code', null, `http://${host}:4318/v1/traces`), ' (protobuf or JSON)'),
      h('li', null, h('b', null, 'Zipkin v2'), ' on ', h('code', null, `http://${host}:9411/api/v2/spans`)),
    ),
    h('pre', null, 'export OTEL_SERVICE_NAME=checkout\nexport OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317'),
    h('p', null, 'Or generate realistic multi-service demo traffic: ', h('code', null, 'clew demo')),
  );
}

export function errorBox(title, detail) {
  return h('div.error-state', { role: 'alert' }, h('h2', null, title), detail ? h('p', null, detail) : null);
}

export function debounce(fn, ms) {
  let t;
  return (...a) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...a), ms);
  };
}

export const LOOKBACKS = [
  ['15m', 'Last 15 minutes', 15 * 60e6],
  ['1h', 'Last hour', 3600e6],
  ['6h', 'Last 6 hours', 6 * 3600e6],
  ['24h', 'Last 24 hours', 24 * 3600e6],
  ['7d', 'Last 7 days', 7 * 24 * 3600e6],
];

export function lookbackMicros(key) {
  const l = LOOKBACKS.find((x) => x[0] === key);
  return l ? l[2] : 3600e6;
}
