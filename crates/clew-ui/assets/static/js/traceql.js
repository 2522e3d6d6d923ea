// TraceQL query box with autocomplete. Suggestions come from the Tempo API that Clew serves under
// `/tempo` on the query port (the same routes Grafana uses on :3200): tag names from
// `/api/v2/search/tags`, values from `/api/v2/search/tag/{scope.tag}/values`.
import { h, getJSON } from './util.js';

const INTRINSICS = ['name', 'status', 'statusMessage', 'kind', 'duration', 'rootName', 'rootServiceName', 'traceDuration'];
const OPERATORS = ['=', '!=', '>', '>=', '<', '<=', '=~', '!~'];
const ENUM_VALUES = {
  status: ['ok', 'error', 'unset'],
  'span:status': ['ok', 'error', 'unset'],
  kind: ['server', 'client', 'producer', 'consumer', 'internal', 'unspecified'],
  'span:kind': ['server', 'client', 'producer', 'consumer', 'internal', 'unspecified'],
};
const PIPELINE = ['| count() > 1', '| avg(duration) > 100ms', '| by(resource.service.name)', '| select(span.http.route)'];

// Attribute names: scoped (`span.x`, `resource.x`), unscoped (`.x`), intrinsics (`name`,
// `span:name`), with quoted segments allowed (`span."a b"`).
const ATTR_RE = /^(?:(?:span|resource|event|link|instrumentation)\.|\.|span:|trace:)?(?:[\w.\-/]+|"[^"]*")+$/;

/**
 * What the cursor is typing, from the text before it:
 *   {kind: 'start'}                       outside any spanset filter
 *   {kind: 'attribute', prefix}           an attribute or intrinsic name
 *   {kind: 'operator', attribute}         after a complete attribute name
 *   {kind: 'value', attribute, prefix}    after a comparison operator
 *   {kind: 'pipeline'}                    after a closed filter
 * The parser on the server is the authority; this only has to guess well enough to suggest.
 */
export function cursorContext(before) {
  let depth = 0;
  let inString = null;
  for (const c of before) {
    if (inString) {
      if (c === inString) inString = null;
      continue;
    }
    if (c === '"' || c === '`') inString = c;
    else if (c === '{') depth++;
    else if (c === '}') depth = Math.max(0, depth - 1);
  }
  if (depth === 0) {
    return /}\s*$/.test(before) ? { kind: 'pipeline' } : { kind: 'start' };
  }
  const inner = before.slice(before.lastIndexOf('{') + 1);
  // A value being typed: `attr op partial` (partial may be an open string).
  const value = /((?:[\w.:\-/]|"[^"]*")+)\s*(=~|!~|!=|>=|<=|=|>|<)\s*("[^"]*|[\w.\-]*)$/.exec(inner);
  if (value && ATTR_RE.test(value[1])) return { kind: 'value', attribute: value[1], prefix: value[3] };
  // A complete attribute followed by a space: an operator comes next.
  const op = /(?:^|[\s(!&|])((?:[\w.:\-/]|"[^"]*")+)\s+$/.exec(inner);
  if (op && ATTR_RE.test(op[1]) && !/^(&&|\|\|)$/.test(op[1])) return { kind: 'operator', attribute: op[1] };
  // An open quote only right after a scope dot (`span."a b`), never a string literal's quote.
  const attr = /(?:^|[\s(!&|{])((?:[\w.:\-/]|"[^"]*")*(?:\."[^"]*)?)$/.exec(inner);
  return { kind: 'attribute', prefix: attr ? attr[1] : '' };
}

/** Scope-qualified names from a v2 tags response: `span.x`, `resource.x`, intrinsics bare. */
export function namesFromTags(resp) {
  const out = [];
  for (const scope of resp.scopes || []) {
    for (const tag of scope.tags || []) {
      if (scope.name === 'intrinsic') out.push(tag);
      else if (scope.name === 'span' || scope.name === 'resource') out.push(`${scope.name}.${tag}`);
      else out.push(`.${tag}`);
    }
  }
  return [...new Set(out)];
}

/** A value as TraceQL literal text: strings quoted (with escapes), the rest as is. */
export function literal(v) {
  if (v.type === 'string') return JSON.stringify(String(v.value));
  return String(v.value);
}

/**
 * The query box. `onRun(query)` runs a search; `tempoBase` is the prefix of the Tempo routes.
 * Returns {el, input, setError}.
 */
export function traceqlBox({ value = '', onRun, tempoBase = '/tempo', ctl }) {
  const input = h('input#f-traceql', {
    name: 'q',
    value,
    placeholder: '{ resource.service.name = "cart" && status = error }',
    spellcheck: 'false',
    autocomplete: 'off',
    role: 'combobox',
    'aria-label': 'TraceQL query',
    'aria-autocomplete': 'list',
    'aria-controls': 'traceql-suggest',
    'aria-expanded': 'false',
  });
  const list = h('ul#traceql-suggest.suggest', { role: 'listbox', hidden: true });
  const error = h('div.form-error#traceql-error', { role: 'alert' });
  const run = h('button.btn.primary#f-traceql-run', { type: 'button', onclick: () => onRun(input.value.trim()) }, 'Run TraceQL');
  const el = h(
    'div.traceql-bar',
    null,
    h('label.traceql-label', { for: 'f-traceql' }, 'TraceQL'),
    h('div.traceql-field', null, input, list),
    run,
    h('a.muted.traceql-help', { href: 'https://grafana.com/docs/tempo/latest/traceql/', target: '_blank', rel: 'noopener' }, 'syntax'),
    error,
  );

  let names = null; // loaded once, on first need
  const valueCache = new Map();
  let items = [];
  let active = -1;
  let seq = 0;

  async function tagNames() {
    if (names) return names;
    try {
      names = [...INTRINSICS, ...namesFromTags(await getJSON(`${tempoBase}/api/v2/search/tags`, ctl))];
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      names = [...INTRINSICS];
    }
    names = [...new Set(names)];
    return names;
  }

  async function tagValues(attribute) {
    const bare = attribute.replace(/^span:/, '');
    if (ENUM_VALUES[attribute]) return ENUM_VALUES[attribute];
    if (ENUM_VALUES[bare]) return ENUM_VALUES[bare];
    if (valueCache.has(attribute)) return valueCache.get(attribute);
    let out = [];
    try {
      // Unscoped `.x` asks Tempo for `x` in any scope.
      const tag = attribute.startsWith('.') ? attribute.slice(1) : attribute;
      const r = await getJSON(`${tempoBase}/api/v2/search/tag/${encodeURIComponent(tag)}/values`, ctl);
      out = (r.tagValues || []).map(literal);
    } catch (e) {
      if (e.name === 'AbortError') throw e;
    }
    valueCache.set(attribute, out);
    return out;
  }

  async function suggestionsFor(before) {
    const c = cursorContext(before);
    switch (c.kind) {
      case 'start':
        return { replace: /\S*$/.exec(before)[0], items: before.trim() ? [] : ['{ }', '{ status = error }', '{ duration > 1s }'] };
      case 'pipeline':
        return { replace: '', items: PIPELINE };
      case 'operator':
        return { replace: '', items: OPERATORS.map((o) => `${o} `) };
      case 'value': {
        const vals = await tagValues(c.attribute);
        const p = c.prefix.toLowerCase();
        return { replace: c.prefix, items: vals.filter((v) => v.toLowerCase().startsWith(p) || v.toLowerCase().startsWith(`"${p.replace(/^"/, '')}`)).slice(0, 50) };
      }
      default: {
        const all = await tagNames();
        const p = c.prefix.toLowerCase();
        const hits = all.filter((n) => n.toLowerCase().startsWith(p) || (p && n.toLowerCase().includes(`.${p}`)));
        return { replace: c.prefix, items: hits.slice(0, 50) };
      }
    }
  }

  function close() {
    list.hidden = true;
    input.setAttribute('aria-expanded', 'false');
    items = [];
    active = -1;
  }

  function highlight(i) {
    active = i;
    [...list.children].forEach((li, j) => li.setAttribute('aria-selected', String(j === i)));
  }

  let pending = null;
  async function refresh() {
    const my = ++seq;
    const before = input.value.slice(0, input.selectionStart ?? input.value.length);
    let s;
    try {
      s = await suggestionsFor(before);
    } catch (e) {
      if (e.name === 'AbortError') return;
      throw e;
    }
    if (my !== seq) return; // a newer keystroke won
    pending = s;
    items = s.items;
    if (!items.length) return close();
    list.replaceChildren(
      ...items.map((text, i) =>
        h('li.suggestion', { role: 'option', 'aria-selected': 'false', dataset: { index: String(i) }, onmousedown: (e) => { e.preventDefault(); accept(i); } }, text),
      ),
    );
    list.hidden = false;
    input.setAttribute('aria-expanded', 'true');
    highlight(0);
  }

  function accept(i) {
    if (!pending || !items[i]) return;
    const pos = input.selectionStart ?? input.value.length;
    const start = pos - pending.replace.length;
    let text = items[i];
    if (text === '{ }') text = '{ ';
    const after = input.value.slice(pos);
    const needsSpace = /^(?:[\w".\-]+|\S+ )$/.test(text) && !/[ .:]$/.test(text) && !after.startsWith(' ');
    input.value = input.value.slice(0, start) + text + (needsSpace ? ' ' : '') + after;
    const caret = start + text.length + (needsSpace ? 1 : 0);
    input.setSelectionRange(caret, caret);
    close();
    input.focus();
    refresh();
  }

  input.addEventListener('input', () => refresh());
  input.addEventListener('focus', () => refresh());
  input.addEventListener('blur', () => setTimeout(close, 100));
  input.addEventListener('keydown', (e) => {
    const open = !list.hidden && items.length;
    if (e.key === 'ArrowDown' && open) {
      e.preventDefault();
      highlight((active + 1) % items.length);
    } else if (e.key === 'ArrowUp' && open) {
      e.preventDefault();
      highlight((active - 1 + items.length) % items.length);
    } else if ((e.key === 'Tab' || (e.key === 'Enter' && !e.ctrlKey && !e.metaKey)) && open && active >= 0) {
      e.preventDefault();
      accept(active);
    } else if (e.key === 'Enter') {
      e.preventDefault();
      close();
      onRun(input.value.trim());
    } else if (e.key === 'Escape') {
      close();
    }
  });

  return {
    el,
    input,
    setError: (msg) => {
      error.textContent = msg || '';
    },
  };
}
