// The web UI's TraceQL autocomplete: what the cursor is typing decides what is suggested. Pure
// functions of crates/clew-ui/assets/static/js/traceql.js (the browser test in tests/e2e drives the
// widget against the real server).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cursorContext, namesFromTags, literal } from '../../crates/clew-ui/assets/static/js/traceql.js';

test('outside a filter: start, or pipeline after one', () => {
  assert.deepEqual(cursorContext(''), { kind: 'start' });
  assert.deepEqual(cursorContext('{ status = error } '), { kind: 'pipeline' });
  // Braces inside strings do not count.
  assert.deepEqual(cursorContext('{ name = "}" && '), { kind: 'attribute', prefix: '' });
});

test('attribute names, scoped and quoted', () => {
  assert.deepEqual(cursorContext('{ '), { kind: 'attribute', prefix: '' });
  assert.deepEqual(cursorContext('{ resource.serv'), { kind: 'attribute', prefix: 'resource.serv' });
  assert.deepEqual(cursorContext('{ .a = 1 && sta'), { kind: 'attribute', prefix: 'sta' });
  assert.deepEqual(cursorContext('{ span."a b'), { kind: 'attribute', prefix: 'span."a b' });
  assert.deepEqual(cursorContext('{ name = "x y" && '), { kind: 'attribute', prefix: '' });
  assert.deepEqual(cursorContext('{ (span:na'), { kind: 'attribute', prefix: 'span:na' });
});

test('operators after a complete attribute', () => {
  assert.deepEqual(cursorContext('{ resource.service.name '), { kind: 'operator', attribute: 'resource.service.name' });
  assert.deepEqual(cursorContext('{ span."a b" '), { kind: 'operator', attribute: 'span."a b"' });
});

test('values after an operator, the last comparison wins', () => {
  assert.deepEqual(cursorContext('{ resource.service.name = '), { kind: 'value', attribute: 'resource.service.name', prefix: '' });
  assert.deepEqual(cursorContext('{ resource.service.name = "ca'), { kind: 'value', attribute: 'resource.service.name', prefix: '"ca' });
  assert.deepEqual(cursorContext('{ span:status != e'), { kind: 'value', attribute: 'span:status', prefix: 'e' });
  assert.deepEqual(cursorContext('{ status = error && name =~ '), { kind: 'value', attribute: 'name', prefix: '' });
});

test('tag names from the v2 tags response, values as literals', () => {
  const names = namesFromTags({ scopes: [
    { name: 'span', tags: ['http.route'] },
    { name: 'resource', tags: ['service.name'] },
    { name: 'intrinsic', tags: ['duration', 'name'] },
  ] });
  assert.deepEqual(names, ['span.http.route', 'resource.service.name', 'duration', 'name']);
  assert.deepEqual(namesFromTags({}), []);
  assert.equal(literal({ type: 'string', value: 'say "hi"' }), '"say \\"hi\\""');
  assert.equal(literal({ type: 'int', value: '200' }), '200');
  assert.equal(literal({ type: 'keyword', value: 'error' }), 'error');
});
