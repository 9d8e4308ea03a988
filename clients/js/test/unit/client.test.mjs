// The client against a scripted fake gateway (a `ws` server in this process): every state
// transition, every close code's action, refusals, resume framing, requests and the outbox.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, describe, test } from 'node:test';
import { CLOSE_ACTIONS, WsgateClient, clientFactory, fakeGateway, memoryStore, msgpack, msgpackCodec, next, opts, until } from '../lib.mjs';

const client = clientFactory(after);

function states(c) {
  const seen = [];
  c.on('state', (e) => seen.push(e.state));
  return seen;
}

describe('states', () => {
  test('closed -> connecting -> connected -> closed, with +seq offered and the token sent', async () => {
    const gw = await fakeGateway();
    const c = client(opts(gw.url, { token: 'T1', autoConnect: false, params: { user: 'u' } }));
    assert.equal(c.state, 'closed');
    const seen = states(c);
    c.connect();
    const ev = await next(c, 'connected');
    assert.equal(ev.protocol, 'wsgate.v1+seq');
    assert.equal(gw.upgrades[0].protocols, 'wsgate.v1+seq,wsgate.v1');
    assert.equal(gw.upgrades[0].url.searchParams.get('token'), 'T1');
    assert.equal(gw.upgrades[0].url.searchParams.get('user'), 'u');
    assert.equal(gw.upgrades[0].url.searchParams.get('resume'), null);
    const closed = next(c, 'closed');
    c.close();
    assert.equal((await closed).cause, 'client');
    assert.deepEqual(seen, ['connecting', 'connected', 'closed']);
    await gw.close();
  });

  test('resume: false offers wsgate.v1 only and delivers frames without a header', async () => {
    const gw = await fakeGateway({ onConnection: (s) => s.send('{"a":1}') });
    const c = client(opts(gw.url, { resume: false }));
    const m = await next(c, 'message');
    assert.equal(gw.upgrades[0].protocols, 'wsgate.v1');
    assert.deepEqual(m, { data: { a: 1 }, seq: null, binary: false });
    c.close();
    await gw.close();
  });

  test('connected -> disconnected -> connecting -> connected after a connection is lost', async () => {
    const gw = await fakeGateway({ onConnection: (s, url, n) => n === 1 && setTimeout(() => s.terminate(), 10) });
    let calls = 0;
    const c = client(opts(gw.url, { token: async () => `tok${++calls}`, autoConnect: false }));
    const seen = states(c);
    c.connect();
    const d = await next(c, 'disconnected');
    assert.equal(d.cause, 'closed');
    assert.equal(d.code, 1006);
    assert.ok(d.retryInMs >= 0 && d.retryInMs < 20, `first retry within the base window: ${d.retryInMs}`);
    await next(c, 'connected');
    assert.deepEqual(seen, ['connecting', 'connected', 'disconnected', 'connecting', 'connected']);
    assert.equal(calls, 2, 'the token function is called for every attempt');
    assert.equal(gw.upgrades[1].url.searchParams.get('token'), 'tok2');
    c.close();
    await gw.close();
  });

  test('connect() from disconnected retries at once', async () => {
    const gw = await fakeGateway({ onConnection: (s, url, n) => n === 1 && s.close(1011) });
    const c = client(opts(gw.url, { backoff: { baseMs: 60000, maxMs: 60000 }, random: () => 0.99 }));
    const d = await next(c, 'disconnected');
    assert.ok(d.retryInMs > 50000);
    c.connect();
    await next(c, 'connected');
    c.close();
    await gw.close();
  });

  test('an attempt to a port nobody listens on fails and is retried; maxAttempts gives up', async () => {
    const srv = net.createServer().listen(0, '127.0.0.1');
    await new Promise((ok) => srv.on('listening', ok));
    const port = srv.address().port;
    await new Promise((ok) => srv.close(ok));
    const c = client(opts(`ws://127.0.0.1:${port}/`, { maxAttempts: 3 }));
    const fails = [];
    c.on('disconnected', (e) => fails.push(e));
    const closed = await next(c, 'closed');
    assert.equal(fails.length, 3);
    assert.ok(fails.every((f) => f.cause === 'failed'));
    assert.deepEqual(fails.map((f) => f.attempt), [1, 2, 3]);
    assert.equal(closed.cause, 'failed');
  });

  test('an upgrade that never completes times out (connectTimeoutMs)', async () => {
    const held = [];
    const srv = net.createServer((s) => held.push(s)).listen(0, '127.0.0.1');
    await new Promise((ok) => srv.on('listening', ok));
    const c = client(opts(`ws://127.0.0.1:${srv.address().port}/`, { connectTimeoutMs: 100 }));
    const d = await next(c, 'disconnected');
    assert.equal(d.cause, 'timeout');
    c.close();
    held.forEach((s) => s.destroy());
    srv.close();
  });

  test('without any WebSocket the client closes with an error', async () => {
    const saved = globalThis.WebSocket;
    delete globalThis.WebSocket;
    const c = new WsgateClient({ url: 'ws://127.0.0.1:1/', storage: memoryStore(), autoConnect: false });
    const errs = [];
    c.on('error', (e) => errs.push(e));
    const closed = next(c, 'closed');
    c.connect();
    assert.equal((await closed).cause, 'failed');
    assert.match(errs[0].message, /no WebSocket here/);
    if (saved) globalThis.WebSocket = saved;
  });
});

describe('close codes', () => {
  // Each code once: what the gateway (or an application) sends, and what the client must do.
  const codes = [1000, 1002, 1003, 1007, 1008, 1009, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4001, 4002, 4004, 4099, 4100, 4999];
  for (const code of codes) {
    const expect = CLOSE_ACTIONS[code] || ((code >= 3000 && code <= 3999) || code >= 4100 ? 'stop' : 'retry');
    test(`${code} -> ${expect === 'stop' ? 'closed' : 'disconnected, then reconnects'}`, async () => {
      const gw = await fakeGateway({ onConnection: (s, url, n) => n === 1 && s.close(code, `reason ${code}`) });
      const c = client(opts(gw.url));
      const ev = await next(c, expect === 'stop' ? 'closed' : 'disconnected');
      assert.equal(ev.code, code);
      assert.equal(ev.reason, `reason ${code}`);
      assert.equal(ev.cause, 'closed');
      if (expect !== 'stop') await next(c, 'connected');
      c.close();
      await gw.close();
    });
  }

  test('1001 drain: reconnects after the reconnect_ms hint, without backoff', async () => {
    const gw = await fakeGateway({ onConnection: (s, url, n) => n === 1 && s.close(1001, 'draining; reconnect_ms=120') });
    const c = client(opts(gw.url));
    const d = await next(c, 'disconnected');
    assert.equal(d.cause, 'drain');
    assert.equal(d.retryInMs, 120);
    const t0 = Date.now();
    await next(c, 'connected');
    assert.ok(Date.now() - t0 >= 100);
    c.close();
    await gw.close();
  });

  test('1001 without a hint falls back to backoff', async () => {
    const gw = await fakeGateway({ onConnection: (s, url, n) => n === 1 && s.close(1001, 'going away') });
    const c = client(opts(gw.url));
    const d = await next(c, 'disconnected');
    assert.equal(d.cause, 'drain');
    assert.ok(d.retryInMs < 20);
    c.close();
    await gw.close();
  });

  test('reconnectOn overrides the table both ways', async () => {
    const gw = await fakeGateway({ onConnection: (s, url, n) => s.close(n === 1 ? 4100 : 1011) });
    const c = client(opts(gw.url, { reconnectOn: (code) => (code === 4100 ? true : code === 1011 ? false : undefined) }));
    await next(c, 'disconnected', (e) => e.code === 4100);
    const closed = await next(c, 'closed');
    assert.equal(closed.code, 1011);
    await gw.close();
  });

  test('a short-lived connection keeps growing the backoff; a stable one resets it', async () => {
    const gw = await fakeGateway({ onConnection: (s, url, n) => setTimeout(() => s.close(1011), n === 3 ? 150 : 0) });
    const c = client(opts(gw.url, { stableAfterMs: 100, backoff: { baseMs: 10, maxMs: 1000 }, random: () => 0.999 }));
    const d1 = await next(c, 'disconnected');
    const d2 = await next(c, 'disconnected');
    const d3 = await next(c, 'disconnected');
    assert.deepEqual([d1.retryInMs, d2.retryInMs, d3.retryInMs], [9, 19, 9]);
    c.close();
    await gw.close();
  });
});

describe('refused upgrades (Node with ws sees the status)', () => {
  test('503 with Retry-After: refused, retried after Retry-After plus jitter', async () => {
    const gw = await fakeGateway({ refuse: (req, url, n) => n === 1 && [503, { error: 'draining' }, { 'Retry-After': '1' }] });
    const c = client(opts(gw.url));
    const d = await next(c, 'disconnected');
    assert.equal(d.cause, 'refused');
    assert.equal(d.status, 503);
    assert.equal(d.error, 'draining');
    assert.ok(d.retryInMs >= 1000 && d.retryInMs < 1020, `${d.retryInMs}`);
    await next(c, 'connected', () => true, 3000);
    c.close();
    await gw.close();
  });

  test('401 with a string token: closed (the same token fails again)', async () => {
    const gw = await fakeGateway({ refuse: () => [401, { error: 'invalid_token' }] });
    const c = client(opts(gw.url, { token: 'expired' }));
    const ev = await next(c, 'closed');
    assert.deepEqual([ev.cause, ev.status, ev.error], ['refused', 401, 'invalid_token']);
    assert.equal(gw.upgrades.length, 1);
    await gw.close();
  });

  test('401 with a token function: retried with the new token', async () => {
    const gw = await fakeGateway({ refuse: (req, url) => url.searchParams.get('token') === 'old' && [401, { error: 'invalid_token' }] });
    const tokens = ['old', 'new'];
    const c = client(opts(gw.url, { token: async () => tokens.shift() }));
    const d = await next(c, 'disconnected');
    assert.equal(d.status, 401);
    await next(c, 'connected');
    assert.equal(gw.upgrades[1].url.searchParams.get('token'), 'new');
    c.close();
    await gw.close();
  });

  test('401 when the token function gives the same token again: closed', async () => {
    const gw = await fakeGateway({ refuse: () => [401, { error: 'invalid_token' }] });
    const c = client(opts(gw.url, { token: () => 'same' }));
    // The first attempt has a "new" token, so it retries once; the second repeats it and stops.
    const ev = await next(c, 'closed');
    assert.equal(ev.status, 401);
    assert.equal(gw.upgrades.length, 2);
    await gw.close();
  });

  test('403 forbidden origin: closed', async () => {
    const gw = await fakeGateway({ refuse: () => [403, { error: 'forbidden_origin' }] });
    const c = client(opts(gw.url));
    const ev = await next(c, 'closed');
    assert.deepEqual([ev.status, ev.error], [403, 'forbidden_origin']);
    await gw.close();
  });

  test('400 invalid_resume: the position is forgotten and the client retries without it', async () => {
    const gw = await fakeGateway({ refuse: (req, url) => url.searchParams.has('resume') && [400, { error: 'invalid_resume' }] });
    const store = memoryStore();
    store.set(12345);
    const c = client(opts(gw.url, { storage: store }));
    await next(c, 'connected');
    assert.equal(gw.upgrades[0].url.searchParams.get('resume'), '12345');
    assert.equal(gw.upgrades[1].url.searchParams.get('resume'), null);
    assert.equal(store.get(), null);
    c.close();
    await gw.close();
  });

  test('400 for another reason (unsupported_subprotocol): closed', async () => {
    const gw = await fakeGateway({ refuse: () => [400, { error: 'unsupported_subprotocol' }] });
    const c = client(opts(gw.url));
    assert.equal((await next(c, 'closed')).error, 'unsupported_subprotocol');
    await gw.close();
  });

  test('a failing token function: disconnected with cause token and an error event', async () => {
    const gw = await fakeGateway();
    let n = 0;
    const c = client(opts(gw.url, { token: async () => { if (++n === 1) throw new Error('auth server down'); return 't'; } }));
    const err = next(c, 'error');
    const d = await next(c, 'disconnected');
    assert.equal(d.cause, 'token');
    assert.match((await err).message, /auth server down/);
    await next(c, 'connected');
    c.close();
    await gw.close();
  });
});

describe('resume', () => {
  test('sequenced, unsequenced, control frames; duplicates dropped; position kept and sent back', async () => {
    const gw = await fakeGateway({
      onConnection: (s, url, n) => {
        if (n === 1) {
          s.send('wsgate\n{"type":"sync","resume":null,"last":100,"replayed":0,"complete":true}');
          s.send('101\n{"m":1}');
          s.send('\n{"reply":true}');
          s.send('102\n{"m":2}');
          s.send('102\n{"m":"dup"}');
          s.send(Buffer.concat([Buffer.from('103\n'), Buffer.from(msgpack.encode({ m: 3 }))]));
          s.send('wsgate\n{"type":"future","x":1}');
          s.send('nonsense');
          setTimeout(() => s.close(1011), 30);
        } else {
          s.send('wsgate\n{"type":"sync","resume":103,"last":103,"replayed":0,"complete":true}');
        }
      },
    });
    const store = memoryStore();
    const c = client(opts(gw.url, { storage: store, codec: msgpackCodec(msgpack) }));
    const msgs = [];
    const controls = [];
    const errors = [];
    c.on('message', (m) => msgs.push(m));
    c.on('control', (x) => controls.push(x));
    c.on('error', (e) => errors.push(e));
    const sync = await next(c, 'sync');
    assert.equal(sync.last, 100);
    await next(c, 'sync', (s) => s.resume === 103);
    assert.deepEqual(msgs, [
      { data: { m: 1 }, seq: 101, binary: false },
      { data: { reply: true }, seq: null, binary: false },
      { data: { m: 2 }, seq: 102, binary: false },
      { data: { m: 3 }, seq: 103, binary: true },
    ]);
    assert.deepEqual(controls, [{ type: 'future', x: 1 }]);
    assert.equal(errors.length, 1);
    assert.equal(errors[0].code, 'protocol');
    assert.equal(gw.upgrades[1].url.searchParams.get('resume'), '103');
    assert.equal(store.get(), 103);
    assert.equal(c.position, 103);
    c.close();
    await gw.close();
  });

  test('sync with complete: false and gap frames raise resync (event and hook); sync moves the position', async () => {
    const gw = await fakeGateway({
      onConnection: (s) => {
        s.send('wsgate\n{"type":"sync","resume":50,"last":40,"replayed":0,"complete":false}');
        s.send('41\n"a"');
        s.send('wsgate\n{"type":"gap","from":42,"to":44}');
        s.send('45\n"b"');
      },
    });
    const store = memoryStore();
    store.set(50);
    const hooked = [];
    const c = client(opts(gw.url, { storage: store, onResync: (e) => hooked.push(e.reason) }));
    const resyncs = [];
    c.on('resync', (e) => resyncs.push(e));
    const gap = next(c, 'gap');
    await next(c, 'message', (m) => m.data === 'b');
    assert.deepEqual(await gap, { type: 'gap', from: 42, to: 44 });
    assert.deepEqual(resyncs.map((r) => r.reason), ['incomplete', 'gap']);
    assert.equal(resyncs[0].sync.last, 40);
    await until(() => hooked.length === 2, 1000, 'the onResync hook');
    assert.equal(store.get(), 45);
    c.close();
    await gw.close();
  });

  test('?resume= comes before the token, and a sync that ignored it raises resync', async () => {
    // The gateway (libwebsockets 4.1.6) loses a query argument that follows a long one.
    const gw = await fakeGateway({ onConnection: (s) => s.send('wsgate\n{"type":"sync","resume":null,"last":9,"replayed":0,"complete":true}') });
    const store = memoryStore();
    store.set(7);
    const c = client(opts(gw.url, { storage: store, token: 't'.repeat(200), params: { user: 'u' } }));
    const r = await next(c, 'resync');
    assert.equal(r.reason, 'incomplete');
    assert.deepEqual([...gw.upgrades[0].url.searchParams.keys()], ['resume', 'user', 'token']);
    assert.equal(c.position, 9);
    c.close();
    await gw.close();
  });

  test('resetPosition() forgets the position', async () => {
    const store = memoryStore();
    store.set(9);
    const c = client(opts('ws://127.0.0.1:1/', { storage: store, autoConnect: false }));
    c.resetPosition();
    assert.equal(store.get(), null);
    assert.equal(c.position, null);
  });
});

describe('requests and the outbox', () => {
  const echo = (s) => s.on('message', (d) => {
    const m = JSON.parse(String(d));
    if (m.op === 'echo') s.send(`\n${JSON.stringify({ type: 'reply', id: m.id, v: m.v })}`);
    if (m.op === 'seq-with-id') s.send(`7\n${JSON.stringify({ type: 'broadcast', id: m.id })}`);
  });

  test('request() resolves with the reply that carries its id; others are messages', async () => {
    const gw = await fakeGateway({ onConnection: echo });
    const c = client(opts(gw.url));
    const msgs = [];
    c.on('message', (m) => msgs.push(m));
    const [a, b] = await Promise.all([c.request({ op: 'echo', v: 'a' }), c.request({ op: 'echo', v: 'b' })]);
    assert.deepEqual([a.v, b.v], ['a', 'b']);
    assert.equal(msgs.length, 0);
    // A sequenced message is never taken as a reply, whatever its id.
    const p = c.request({ op: 'seq-with-id' }, { timeoutMs: 100 });
    const m = await next(c, 'message');
    assert.equal(m.seq, 7);
    await assert.rejects(p, { code: 'timeout' });
    c.close();
    await gw.close();
  });

  test('a request whose connection is lost rejects with connection_lost; close() rejects with closed', async () => {
    const gw = await fakeGateway({ onConnection: (s, url, n) => n === 1 && s.on('message', () => s.terminate()) });
    const c = client(opts(gw.url));
    await next(c, 'connected');
    await assert.rejects(c.request({ op: 'x' }), { code: 'connection_lost' });
    await next(c, 'connected');
    const p = c.request({ op: 'x' });
    c.close();
    await assert.rejects(p, { code: 'closed' });
    assert.throws(() => c.send({}), { code: 'closed' });
    await gw.close();
  });

  test('frames and requests sent while connecting wait in the outbox and go in order on open', async () => {
    const got = [];
    const gw = await fakeGateway({ onConnection: (s) => { s.on('message', (d) => got.push(JSON.parse(String(d)))); echo(s); } });
    const c = client(opts(gw.url, { autoConnect: false }));
    c.connect();
    assert.equal(c.send({ n: 1 }), false);
    const r = c.request({ op: 'echo', v: 2 });
    assert.equal(c.send({ n: 3 }), false);
    const writable = next(c, 'writable');
    assert.equal((await r).v, 2);
    await writable;
    await until(() => got.length === 3);
    assert.deepEqual(got.map((m) => m.n ?? m.v), [1, 2, 3]);
    assert.equal(c.send({ n: 4 }), true);
    c.close();
    await gw.close();
  });

  test('a full outbox throws outbox_full (count and bytes)', async () => {
    const c = client(opts('ws://127.0.0.1:1/', { autoConnect: false, outboxMaxMessages: 2, outboxMaxBytes: 20 }));
    c.connect();
    c.send('a');
    c.send('b');
    assert.throws(() => c.send('c'), { code: 'outbox_full' });
    const d = client(opts('ws://127.0.0.1:1/', { autoConnect: false, outboxMaxBytes: 10 }));
    d.connect();
    assert.throws(() => d.send('x'.repeat(20)), { code: 'outbox_full' });
    assert.equal(d.bufferedAmount, 0);
    c.close();
    d.close();
  });

  test('backpressure: above highWaterMark frames wait; writable when the socket drained', async () => {
    // A WebSocket whose bufferedAmount the test controls.
    let sock;
    class Slow {
      constructor() {
        sock = this;
        this.readyState = 0;
        this.protocol = 'wsgate.v1+seq';
        this.bufferedAmount = 0;
        this.sent = [];
        setTimeout(() => { this.readyState = 1; this.onopen({}); }, 1);
      }
      send(d) { this.sent.push(d); this.bufferedAmount += d.length; }
      close() {}
    }
    const c = client({ url: 'ws://x/', WebSocket: Slow, storage: memoryStore(), highWaterMark: 10 });
    await next(c, 'connected');
    assert.equal(c.send('0123456789'), true);
    assert.equal(c.send('second'), false, 'over the high-water mark: queued');
    assert.equal(c.bufferedAmount, 12 + 8);
    const w = next(c, 'writable');
    sock.bufferedAmount = 0;
    await w;
    assert.deepEqual(sock.sent, ['"0123456789"', '"second"']);
    c.close();
  });
});
