// Channels and in-band token refresh against a scripted fake gateway: every op the client sends,
// every answer, publication, gap, presence and server-made subscription frame it can get, in
// JSON and MessagePack, with and without the +seq framing.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { clientFactory, fakeGateway, memoryChannelStore, msgpack, msgpackCodec, next, opts, until } from '../lib.mjs';

const client = clientFactory(after);

/**
 * A fake gateway that decodes every op the client sends (JSON text or MessagePack binary) into
 * `ops` ({n: connection number, op}) and calls `answer(op, reply, sock, n)`; `reply(obj)` answers
 * in the op's format. `seq`: frames get the empty +seq header line.
 */
async function opGateway(answer, { seq = false, onConnection } = {}) {
  const ops = [];
  const gw = await fakeGateway({
    onConnection: (sock, url, n) => {
      const out = (obj, binary) => {
        const body = binary ? Buffer.from(msgpack.encode(obj)) : JSON.stringify(obj);
        if (!seq) return sock.send(body);
        sock.send(binary ? Buffer.concat([Buffer.from('\n'), body]) : `\n${body}`);
      };
      sock.out = out;
      sock.on('message', (data, isBinary) => {
        const op = isBinary ? msgpack.decode(data) : JSON.parse(String(data));
        ops.push({ n, op, binary: isBinary });
        answer(op, (obj) => out(obj, isBinary), sock, n);
      });
      if (onConnection) onConnection(sock, url, n);
    },
  });
  gw.ops = ops;
  return gw;
}

/** Answers every subscribe `subscribed` (with `more` fields), the rest as `others` says. */
const subscribing = (more = () => ({}), others = () => {}) => (op, reply, sock, n) => {
  if (op.wsgate === 'subscribe') reply({ wsgate: 'subscribed', id: op.id, channel: op.channel, ...more(op, n) });
  else others(op, reply, sock, n);
};

function collect(sub, ...types) {
  const seen = Object.fromEntries(types.map((t) => [t, []]));
  for (const t of types) sub.on(t, (e) => seen[t].push(e));
  return seen;
}

const pub = (channel, offset, epoch, data) => ({ wsgate: 'pub', channel, offset, epoch, data });

describe('channels', () => {
  test('subscribe, publications in order, duplicates dropped, the position kept', async () => {
    const gw = await opGateway(
      subscribing(() => ({}), () => {}),
      {
        onConnection: (s) =>
          s.once('message', () =>
            setTimeout(() => {
              s.out(pub('news:eu', 41, 7, 'a'));
              s.out(pub('news:eu', 42, 7, 'b'));
              s.out(pub('news:eu', 42, 7, 'dup'));
              s.out(pub('news:eu', 40, 7, 'old'));
              s.out({ wsgate: 'pub', channel: 'news:eu', offset: 43, epoch: 7, data_b64: 'AAEC' });
              s.out(pub('other', 1, 1, 'not ours'));
            }, 20),
          ),
      },
    );
    const store = memoryChannelStore();
    const c = client(opts(gw.url, { resume: false, channelStorage: store }));
    let early;
    c.once('connected', () => (early = c.subscribe('news:eu'))); // before the client re-makes its own
    const sub = c.subscribe('news:eu');
    assert.equal(sub.state, 'subscribing');
    assert.equal(c.subscribe('news:eu'), sub, 'one Subscription per channel');
    const seen = collect(sub, 'subscribed', 'publication');
    await until(() => seen.publication.length === 3, 3000, 'three publications');
    assert.equal(sub.state, 'subscribed');
    assert.equal(early, sub);
    assert.equal(gw.ops.length, 1, 'one subscribe op');
    assert.deepEqual(seen.subscribed, [{ channel: 'news:eu', recovered: null }]);
    assert.deepEqual(gw.ops[0].op, { wsgate: 'subscribe', channel: 'news:eu', id: gw.ops[0].op.id });
    assert.deepEqual(Object.keys(gw.ops[0].op)[0], 'wsgate', 'the marker key comes first');
    assert.deepEqual(seen.publication.map((p) => [p.data, p.offset, p.binary]), [['a', 41, false], ['b', 42, false], [new Uint8Array([0, 1, 2]), 43, true]]);
    assert.deepEqual(store.get('news:eu'), { offset: 43, epoch: 7 });
    assert.deepEqual(sub.position, { offset: 43, epoch: 7 });
    assert.deepEqual(c.subscriptions, [sub]);
    await gw.close();
  });

  test('reconnect: resubscribes with since; recovered replay overlapping the live ones is deduplicated', async () => {
    const gw = await opGateway(
      subscribing((op, n) => (n === 2 ? { recovered: true, epoch: 7, offset: 12 } : {})),
      {
        onConnection: (s, url, n) =>
          s.once('message', () =>
            setTimeout(() => {
              if (n === 1) {
                s.out(pub('ch', 10, 7, 'x10'));
                setTimeout(() => s.terminate(), 20);
              } else for (const o of [10, 11, 12]) s.out(pub('ch', o, 7, `x${o}`));
            }, 20),
          ),
      },
    );
    const c = client(opts(gw.url, { resume: false }));
    const sub = c.subscribe('ch');
    const seen = collect(sub, 'subscribed', 'publication', 'resync');
    await until(() => seen.publication.length === 3, 3000, 'publications after the reconnect');
    assert.deepEqual(gw.ops[1].op.since, { offset: 10, epoch: 7 });
    assert.deepEqual(seen.subscribed.map((e) => e.recovered), [null, true]);
    assert.deepEqual(seen.publication.map((p) => p.data), ['x10', 'x11', 'x12']);
    assert.equal(seen.resync.length, 0);
    await gw.close();
  });

  test('recovered: false raises resync (event and hook) and moves to the answer position', async () => {
    const gw = await opGateway(subscribing(() => ({ recovered: false, epoch: 9, offset: 100 })));
    const store = memoryChannelStore();
    store.set('ch', { offset: 5, epoch: 8 });
    const hooked = [];
    const c = client(opts(gw.url, { resume: false, channelStorage: store }));
    const sub = c.subscribe('ch', { onResync: (e) => hooked.push(e) });
    const seen = collect(sub, 'subscribed', 'resync');
    await until(() => hooked.length === 1, 3000, 'the resync hook');
    assert.deepEqual(gw.ops[0].op.since, { offset: 5, epoch: 8 }, 'a stored position is used on the first subscribe too');
    assert.deepEqual(seen.subscribed, [{ channel: 'ch', recovered: false }]);
    assert.deepEqual(seen.resync, [{ channel: 'ch', reason: 'not_recovered' }]);
    assert.deepEqual(store.get('ch'), { offset: 100, epoch: 9 });
    await gw.close();
  });

  test('an answer without recovered to a subscribe with since (the server made it first) is not recovered', async () => {
    const gw = await opGateway(subscribing());
    const store = memoryChannelStore();
    store.set('ch', { offset: 5, epoch: 8 });
    const c = client(opts(gw.url, { resume: false, channelStorage: store }));
    const sub = c.subscribe('ch');
    const r = await next(sub, 'resync');
    assert.equal(r.reason, 'not_recovered');
    assert.equal(store.get('ch'), null, 'no position in the answer: the next publication starts anew');
    await gw.close();
  });

  test('gap and a new epoch raise gap and resync; recover: false sends no since', async () => {
    const gw = await opGateway(subscribing(), {
      onConnection: (s) =>
        s.once('message', () =>
          setTimeout(() => {
            s.out(pub('ch', 1, 3, 'a'));
            s.out({ wsgate: 'gap', channel: 'ch', from: 2, to: 4 });
            s.out(pub('ch', 4, 3, 'dropped: in the gap'));
            s.out(pub('ch', 5, 3, 'b'));
            s.out(pub('ch', 1, 4, 'new epoch'));
          }, 20),
        ),
    });
    const store = memoryChannelStore();
    store.set('ch', { offset: 99, epoch: 1 });
    const c = client(opts(gw.url, { resume: false, channelStorage: store }));
    const sub = c.subscribe('ch', { recover: false });
    const seen = collect(sub, 'publication', 'gap', 'resync');
    await until(() => seen.publication.length === 3, 3000, 'publications');
    assert.equal(gw.ops[0].op.since, undefined);
    assert.deepEqual(seen.gap, [{ channel: 'ch', from: 2, to: 4 }]);
    assert.deepEqual(seen.resync.map((r) => r.reason), ['gap', 'epoch']);
    assert.deepEqual(seen.publication.map((p) => p.data), ['a', 'b', 'new epoch']);
    assert.deepEqual(store.get('ch'), { offset: 99, epoch: 1 }, 'recover: false leaves the store alone');
    await gw.close();
  });

  test('a refused subscribe: error with the gateway code, then unsubscribed (refused)', async () => {
    const gw = await opGateway((op, reply) =>
      reply({ wsgate: 'error', id: op.id, op: 'subscribe', code: 'forbidden', message: 'the token does not allow this channel' }),
    );
    const c = client(opts(gw.url, { resume: false }));
    const sub = c.subscribe('secret');
    const seen = collect(sub, 'error', 'unsubscribed');
    await until(() => seen.unsubscribed.length === 1, 3000, 'unsubscribed');
    assert.equal(seen.error[0].name, 'WsgateError');
    assert.equal(seen.error[0].code, 'forbidden');
    assert.match(seen.error[0].message, /subscribe: the token does not allow/);
    assert.deepEqual(seen.unsubscribed, [{ channel: 'secret', reason: 'refused' }]);
    assert.equal(sub.state, 'unsubscribed');
    assert.deepEqual(c.subscriptions, []);
    await gw.close();
  });

  test('an unanswered subscribe times out (error timeout) and is made again on the next connection', async () => {
    const gw = await opGateway((op, reply, sock, n) => {
      if (n === 2) reply({ wsgate: 'subscribed', id: op.id, channel: op.channel });
      else setTimeout(() => sock.close(1011), 150);
    });
    const c = client(opts(gw.url, { resume: false, requestTimeoutMs: 50 }));
    const sub = c.subscribe('ch');
    const err = await next(sub, 'error');
    assert.equal(err.code, 'timeout');
    await next(sub, 'subscribed');
    assert.equal(gw.ops.filter((o) => o.op.wsgate === 'subscribe').length, 2);
    await gw.close();
  });

  test('unsubscribe: the op, the position forgotten, later frames ignored; bad names throw', async () => {
    const gw = await opGateway(subscribing(() => ({}), (op, reply, s) => {
      reply({ wsgate: 'unsubscribed', id: op.id, channel: op.channel });
      s.out(pub('ch', 2, 1, 'late'));
    }), { onConnection: (s) => s.once('message', () => setTimeout(() => s.out(pub('ch', 1, 1, 'a')), 20)) });
    const store = memoryChannelStore();
    const c = client(opts(gw.url, { resume: false, channelStorage: store }));
    const sub = c.subscribe('ch');
    const seen = collect(sub, 'publication', 'unsubscribed');
    await until(() => seen.publication.length === 1, 3000, 'a publication');
    sub.unsubscribe();
    sub.unsubscribe();
    await until(() => gw.ops.length === 2, 3000, 'the unsubscribe op');
    assert.equal(gw.ops[1].op.wsgate, 'unsubscribe');
    assert.deepEqual(seen.unsubscribed, [{ channel: 'ch', reason: 'client' }]);
    assert.equal(store.get('ch'), null);
    assert.throws(() => sub.publish('x'), { code: 'closed' });
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(seen.publication.length, 1);
    assert.throws(() => c.subscribe(''), { code: 'bad_channel' });
    assert.throws(() => c.subscribe('a\u0001'), { code: 'bad_channel' });
    assert.throws(() => c.subscribe('x'.repeat(201)), { code: 'bad_channel' });
    assert.throws(() => c.subscribe('é'.repeat(101)), { code: 'bad_channel' }, '202 bytes of UTF-8');
    await gw.close();
  });

  test('publish: the op with the data; a refusal goes to its subscription; bytes only with MessagePack', async () => {
    const gw = await opGateway(subscribing(() => ({}), (op, reply) => {
      if (op.data === 'no') reply({ wsgate: 'error', id: op.id, op: 'publish', code: 'publish_not_allowed', message: 'clients may not publish' });
    }));
    const c = client(opts(gw.url, { resume: false }));
    const sub = c.subscribe('talk:x');
    await next(sub, 'subscribed');
    assert.equal(sub.publish('hi "all"'), true);
    sub.publish('no');
    const err = await next(sub, 'error');
    assert.equal(err.code, 'publish_not_allowed');
    assert.deepEqual(gw.ops[1].op, { wsgate: 'publish', channel: 'talk:x', data: 'hi "all"', id: gw.ops[1].op.id });
    assert.throws(() => sub.publish(new Uint8Array([1])), TypeError);
    await gw.close();
  });

  test('presence resolves with the list; its refusals reject with the code; presence_change events', async () => {
    const gw = await opGateway(subscribing(() => ({}), (op, reply, s) => {
      if (op.channel === 'room:x') {
        reply({ wsgate: 'presence', id: op.id, channel: op.channel, connections: 3, users: ['alice', 'bob'], truncated: true });
        s.out({ wsgate: 'presence_change', channel: 'room:x', joined: ['carol'], left: [], joined_count: 4 });
      } else reply({ wsgate: 'error', id: op.id, op: 'presence', code: 'presence_not_allowed', message: 'no presence here' });
    }));
    const c = client(opts(gw.url, { resume: false }));
    const sub = c.subscribe('room:x');
    const other = c.subscribe('news');
    await next(sub, 'subscribed');
    const change = next(sub, 'presence_change');
    assert.deepEqual(await sub.presence(), { connections: 3, users: ['alice', 'bob'], truncated: true });
    assert.deepEqual(await change, { channel: 'room:x', joined: ['carol'], left: [], joined_count: 4 });
    await assert.rejects(other.presence(), { code: 'presence_not_allowed' });
    c.close();
    await assert.rejects(sub.presence(), { code: 'not_connected' });
    await gw.close();
  });

  test('server-made subscriptions: created and ended by unsolicited frames, resubscribed with since', async () => {
    const gw = await opGateway(subscribing(), {
      onConnection: (s, url, n) => {
        if (n !== 1) return;
        s.out({ wsgate: 'subscribed', channel: 'room:x', server: true });
        s.out(pub('room:x', 5, 2, 'hello'));
        s.out({ wsgate: 'subscribed', channel: 'room:y', server: true });
        s.out({ wsgate: 'unsubscribed', channel: 'room:y', server: true });
        setTimeout(() => s.terminate(), 50);
      },
    });
    const store = memoryChannelStore();
    store.set('room:y', { offset: 1, epoch: 1 });
    const c = client(opts(gw.url, { resume: false, channelStorage: store }));
    const made = [];
    const ended = [];
    const pubs = [];
    c.on('serverSubscribed', (e) => {
      made.push(e.channel);
      e.subscription.on('publication', (p) => pubs.push(p.data));
    });
    c.on('serverUnsubscribed', (e) => ended.push(e.channel));
    await until(() => gw.ops.length === 1, 3000, 'the resubscribe after the reconnect');
    assert.deepEqual(made, ['room:x', 'room:y']);
    assert.deepEqual(ended, ['room:y']);
    assert.deepEqual(pubs, ['hello']);
    assert.deepEqual(gw.ops[0].op.since, { offset: 5, epoch: 2 });
    assert.deepEqual(c.subscriptions.map((s) => [s.channel, s.server]), [['room:x', true]]);
    assert.equal(store.get('room:y'), null, 'the position of a subscription the server ended is forgotten');
    await gw.close();
  });

  test('the server re-making a subscription during our resubscribe: our answer (by id) says if it recovered', async () => {
    const gw = await opGateway((op, reply, s, n) => {
      if (n === 1) return reply({ wsgate: 'subscribed', id: op.id, channel: op.channel });
      s.out({ wsgate: 'subscribed', channel: op.channel, server: true });
      setTimeout(() => {
        reply({ wsgate: 'subscribed', id: op.id, channel: op.channel, recovered: true, epoch: 1, offset: 3 });
        s.out(pub('ch', 3, 1, 'replayed'));
      }, 30);
    }, {
      onConnection: (s, url, n) =>
        n === 1 && s.once('message', () => setTimeout(() => (s.out(pub('ch', 2, 1, 'a')), setTimeout(() => s.terminate(), 20)), 20)),
    });
    const c = client(opts(gw.url, { resume: false }));
    const made = [];
    c.on('serverSubscribed', (e) => made.push(e));
    const sub = c.subscribe('ch');
    const seen = collect(sub, 'subscribed', 'publication', 'resync');
    await until(() => seen.publication.length === 2, 3000, 'the replayed publication');
    assert.deepEqual(seen.subscribed.map((e) => e.recovered), [null, true]);
    assert.deepEqual(seen.resync, []);
    assert.deepEqual(made, [], 'not a new subscription');
    await gw.close();
  });

  test('live publications of a server-made subscription before our recovered answer are dropped: the replay brings them', async () => {
    // The chat handler re-makes the subscription at connect; the live stream reaches the client
    // before the answer to its own subscribe with `since`, which replays from there.
    const gw = await opGateway((op, reply, s, n) => {
      if (n === 1) return reply({ wsgate: 'subscribed', id: op.id, channel: op.channel });
      s.out({ wsgate: 'subscribed', channel: op.channel, server: true });
      s.out(pub('ch', 5, 1, 'live5'));
      s.out({ wsgate: 'gap', channel: 'ch', from: 6, to: 6 });
      s.out(pub('ch', 7, 1, 'live7'));
      setTimeout(() => {
        // In one turn: the answer and the replay may come in the same read.
        reply({ wsgate: 'subscribed', id: op.id, channel: op.channel, recovered: true, epoch: 1, offset: 7 });
        for (const o of [3, 4, 5, 6, 7]) s.out(pub('ch', o, 1, `r${o}`));
      }, 30);
    }, {
      onConnection: (s, url, n) =>
        n === 1 && s.once('message', () => setTimeout(() => (s.out(pub('ch', 2, 1, 'a')), setTimeout(() => s.terminate(), 20)), 20)),
    });
    const c = client(opts(gw.url, { resume: false }));
    const sub = c.subscribe('ch');
    const seen = collect(sub, 'publication', 'gap', 'resync');
    await until(() => seen.publication.length === 6, 3000, 'the replayed publications');
    assert.deepEqual(seen.publication.map((p) => p.data), ['a', 'r3', 'r4', 'r5', 'r6', 'r7']);
    assert.deepEqual([seen.gap, seen.resync], [[], []]);
    assert.deepEqual(sub.position, { offset: 7, epoch: 1 });
    await gw.close();
  });

  test('the position in a plain subscribed answer is recovered from before the first publication', async () => {
    const gw = await opGateway(
      subscribing((op, n) => (n === 1 ? { epoch: 0, offset: 0 } : { recovered: true, epoch: 4, offset: 1 })),
      {
        onConnection: (s, url, n) => {
          if (n === 1) {
            s.out({ wsgate: 'subscribed', channel: 'room:x', server: true, epoch: 3, offset: 10 });
            s.once('message', () => setTimeout(() => s.terminate(), 20));
          } else s.on('message', () => setTimeout(() => s.out(pub('ch', 1, 4, 'first')), 10));
        },
      },
    );
    const c = client(opts(gw.url, { resume: false }));
    const sub = c.subscribe('ch');
    const seen = collect(sub, 'publication', 'resync');
    await until(() => seen.publication.length === 1, 3000, 'the first publication');
    const since = Object.fromEntries(gw.ops.filter((o) => o.n === 2).map((o) => [o.op.channel, o.op.since]));
    assert.deepEqual(since, { ch: { offset: 0, epoch: 0 }, 'room:x': { offset: 10, epoch: 3 } });
    assert.deepEqual(seen.resync, [], 'epoch 0 is no epoch: the first one is not a new epoch');
    assert.deepEqual(sub.position, { offset: 1, epoch: 4 });
    await gw.close();
  });

  test('other op frames: unknown ones are control events, unclaimed errors and undecodable ones error events', async () => {
    const gw = await fakeGateway({
      onConnection: (s) => {
        s.send('{"wsgate":"future","x":1}');
        s.send('{"wsgate":"error","code":"unknown_op","message":"unknown op"}');
        s.send(Buffer.from(msgpack.encode({ wsgate: 'pub', channel: 'c' })));
        s.send('{"wsgate":"pub" broken');
      },
    });
    const c = client(opts(gw.url, { resume: false }));
    const controls = [];
    const errors = [];
    const msgs = [];
    c.on('control', (x) => controls.push(x));
    c.on('error', (e) => errors.push(e.code));
    c.on('message', (m) => msgs.push(m));
    await until(() => errors.length === 3, 3000, 'three errors');
    assert.deepEqual(controls, [{ wsgate: 'future', x: 1 }]);
    assert.deepEqual(errors, ['unknown_op', 'decode', 'decode'], 'a MessagePack op with the JSON codec, bad JSON');
    assert.deepEqual(msgs, [], 'op frames are never messages');
    await gw.close();
  });

  test('MessagePack: ops are binary maps with the marker key first; bin publications are bytes', async () => {
    const gw = await opGateway(subscribing(), {
      onConnection: (s) =>
        s.once('message', () => setTimeout(() => s.out({ wsgate: 'pub', channel: 'b', offset: 1, epoch: 1, data: new Uint8Array([9, 8]) }, true), 20)),
    });
    const c = client(opts(gw.url, { resume: false, codec: msgpackCodec(msgpack) }));
    const sub = c.subscribe('b');
    const p = await next(sub, 'publication');
    assert.deepEqual(p.data, new Uint8Array([9, 8]));
    assert.equal(p.binary, true);
    assert.equal(gw.ops[0].binary, true);
    assert.equal(sub.publish(new Uint8Array([1, 2])), true);
    await until(() => gw.ops.length === 2, 3000, 'the publish op');
    assert.deepEqual([...gw.ops[1].op.data], [1, 2]);
    await gw.close();
  });

  test('+seq: op answers and publications come with the empty header line', async () => {
    const gw = await opGateway(subscribing(), {
      seq: true,
      onConnection: (s) => {
        s.send('wsgate\n{"type":"sync","resume":null,"last":1,"replayed":0,"complete":true}');
        s.once('message', () => setTimeout(() => s.out(pub('ch', 1, 1, 'a')), 20));
      },
    });
    const c = client(opts(gw.url));
    const msgs = [];
    c.on('message', (m) => msgs.push(m));
    const sub = c.subscribe('ch');
    assert.equal((await next(sub, 'publication')).data, 'a');
    assert.deepEqual(msgs, [], 'ops are not messages');
    await gw.close();
  });
});

describe('token refresh', () => {
  const jwt = (exp) => `h.${Buffer.from(JSON.stringify({ sub: 'u', exp })).toString('base64url')}.s`;

  test('refresh_required: a new token from the function, a refusal retried, then refreshed', async () => {
    const gw = await opGateway((op, reply) => {
      if (op.token === 'T2') reply({ wsgate: 'error', id: op.id, op: 'refresh', code: 'wrong_user', message: 'another user' });
      else reply({ wsgate: 'refreshed', id: op.id, exp: 1765116000 });
    }, { onConnection: (s) => s.out({ wsgate: 'refresh_required', exp: 1765112400, grace_s: 30 }) });
    const reasons = [];
    let n = 0;
    const c = client(opts(gw.url, { resume: false, token: (ctx) => (reasons.push(ctx.reason), `T${++n}`) }));
    const errors = [];
    c.on('error', (e) => errors.push(e));
    const r = await next(c, 'refreshed', () => true, 5000);
    assert.deepEqual(r, { exp: 1765116000 });
    assert.deepEqual(reasons, ['connect', 'refresh', 'refresh']);
    assert.deepEqual(gw.ops.map((o) => [o.op.wsgate, o.op.token]), [['refresh', 'T2'], ['refresh', 'T3']]);
    assert.deepEqual(errors.map((e) => e.code), ['wrong_user']);
    await gw.close();
  });

  test('a string token cannot be refreshed: an error event; 4003 then reconnects with the function', async () => {
    const gw = await opGateway(() => {}, { onConnection: (s) => s.out({ wsgate: 'refresh_required', exp: 1, grace_s: 1 }) });
    const c = client(opts(gw.url, { resume: false, token: 'fixed' }));
    const err = await next(c, 'error');
    assert.equal(err.code, 'token');
    c.close();
    const gw2 = await fakeGateway({ onConnection: (s, url, k) => k === 1 && s.close(4003, 'token expired') });
    const c2 = client(opts(gw2.url, { resume: false, token: () => `fresh${gw2.upgrades.length}` }));
    const d = await next(c2, 'disconnected');
    assert.equal(d.code, 4003);
    await next(c2, 'connected');
    assert.equal(gw2.upgrades[1].url.searchParams.get('token'), 'fresh1');
    await gw.close();
    await gw2.close();
  });

  test('refreshAheadMs: refreshes a JWT before its exp without being asked', async () => {
    const gw = await opGateway((op, reply) => reply({ wsgate: 'refreshed', id: op.id, exp: Math.floor(Date.now() / 1000) + 3600 }));
    const exp = Math.floor(Date.now() / 1000) + 2;
    const c = client(opts(gw.url, { resume: false, token: (ctx) => (ctx.reason === 'connect' ? jwt(exp) : jwt(exp + 3600)), refreshAheadMs: 1500 }));
    const t0 = Date.now();
    await next(c, 'refreshed', () => true, 5000);
    const waited = Date.now() - t0;
    assert.ok(waited >= 900 && waited < 2500, `refreshed after ${waited} ms`);
    assert.equal(gw.ops[0].op.token, jwt(exp + 3600));
    await gw.close();
  });
});
