// The pure parts: backoff, the close-code table, the +seq framing, stores, codecs, and the size
// budget of the bundle (issue 20: at most 12 KB minified and gzipped, without a MessagePack codec).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { test } from 'node:test';
import { backoffDelay, closeAction, jsonCodec, msgpack, msgpackCodec, parseSeqFrame, rawCodec, webStore } from '../lib.mjs';

const SIZE_BUDGET = 12 * 1024;

test('backoff: full jitter in [0, min(max, base * factor^attempt))', () => {
  const o = { baseMs: 100, maxMs: 1000, factor: 2 };
  assert.equal(backoffDelay(0, o, () => 0), 0);
  assert.equal(backoffDelay(0, o, () => 0.999999), 99);
  assert.equal(backoffDelay(3, o, () => 0.5), 400);
  assert.equal(backoffDelay(10, o, () => 0.999999), 999);
  assert.equal(backoffDelay(5000, o, () => 0.5), 500, 'huge attempt counts stay finite');
  // Uniform: 10,000 draws of the first window fill each tenth with about 10%.
  const tenths = new Array(10).fill(0);
  for (let i = 0; i < 10000; i++) tenths[Math.floor(backoffDelay(0, o, Math.random) / 10)]++;
  assert.ok(tenths.every((n) => n > 800 && n < 1200), `${tenths}`);
});

test('close codes: the documented table', () => {
  const stop = [1000, 1002, 1003, 1007, 4002, 4004, 3000, 3500, 3999, 4100, 4999];
  const retry = [1005, 1006, 1008, 1009, 1011, 1012, 1013, 1014, 1015, 4000, 4001, 4003, 4099];
  for (const c of stop) assert.equal(closeAction(c), 'stop', `${c}`);
  for (const c of retry) assert.equal(closeAction(c), 'retry', `${c}`);
  assert.equal(closeAction(1001), 'drain');
});

test('+seq framing: text and binary, every header kind, and malformed frames', () => {
  assert.deepEqual(parseSeqFrame('12\nab\ncd'), { kind: 'data', seq: 12, body: 'ab\ncd' });
  assert.deepEqual(parseSeqFrame('\n'), { kind: 'data', seq: null, body: '' });
  assert.deepEqual(parseSeqFrame('wsgate\n{"type":"gap","from":1,"to":2}'), { kind: 'control', control: { type: 'gap', from: 1, to: 2 } });
  const bin = parseSeqFrame(new Uint8Array([0x39, 0x0a, 0x00, 0x0a, 0xff]));
  assert.equal(bin.seq, 9);
  assert.deepEqual([...bin.body], [0x00, 0x0a, 0xff]);
  for (const bad of ['no header', '12a\nx', 'wsgate\nnot json', 'wsgate\n{"no":"type"}', '99999999999999999\nx',
    new Uint8Array([1, 2, 3])]) {
    assert.equal(parseSeqFrame(bad).kind, 'bad', String(bad));
  }
});

test('webStore: a Storage object, tolerant of a full one; ignores garbage', () => {
  const m = new Map();
  const s = { getItem: (k) => m.get(k) ?? null, setItem: (k, v) => m.set(k, v), removeItem: (k) => m.delete(k) };
  const st = webStore('k', s);
  assert.equal(st.get(), null);
  st.set(42);
  assert.equal(m.get('k'), '42');
  assert.equal(st.get(), 42);
  st.set(null);
  assert.equal(m.has('k'), false);
  m.set('k', 'garbage');
  assert.equal(st.get(), null);
  const full = webStore('k', { ...s, setItem: () => { throw new Error('QuotaExceededError'); } });
  full.set(1);
  assert.throws(() => webStore('k'), /no sessionStorage/);
});

test('codecs: JSON, raw, MessagePack', () => {
  assert.equal(jsonCodec.encode({ a: 1 }), '{"a":1}');
  assert.deepEqual(jsonCodec.decode(new TextEncoder().encode('{"a":1}')), { a: 1 });
  assert.equal(rawCodec.decode('x'), 'x');
  assert.throws(() => rawCodec.encode({}), TypeError);
  const mp = msgpackCodec(msgpack);
  const b = mp.encode({ op: 'join', room: 'r' });
  assert.ok(b instanceof Uint8Array);
  assert.deepEqual(mp.decode(b), { op: 'join', room: 'r' });
  assert.deepEqual(mp.decode('{"t":1}'), { t: 1 }, 'a text frame is JSON');
});

test(`size: the bundle is at most ${SIZE_BUDGET} bytes minified and gzipped`, () => {
  const min = readFileSync(new URL('../../dist/wsgate-client.min.js', import.meta.url));
  const gz = gzipSync(min, { level: 9 }).length;
  console.log(`# size: ${min.length} bytes minified, ${gz} bytes gzipped (budget ${SIZE_BUDGET})`);
  assert.ok(gz <= SIZE_BUDGET, `${gz} bytes gzipped`);
  assert.ok(!/msgpack/.test(min.toString().replace(/msgpackCodec|"msgpack"/g, '')), 'no MessagePack library bundled');
});
