// Channels and in-band token refresh against real gateways, a processor, Kafka and Redis:
// publications across two gateways (the processor's `publish` built-in and a client's publish
// op), presence, recovery of every publication exactly once and in order across a kill -9 of the
// subscribers' gateway, and a 3-second token refreshed in-band (then one that is not: 4003 and a
// reconnect with a new token).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { WS, WsgateClient, memoryChannelStore, memoryStore, msgpack, msgpackCodec, next, rawCodec, until } from '../lib.mjs';
import { Cluster, token } from './cluster.mjs';

const cluster = new Cluster('channels');
const NS = ['--channel-namespace', 'live=history_size=10000', '--channel-namespace', 'talk=client_publish=true,presence=true,client_presence=true,history_size=100'];
const clients = [];
let lb;
before(async () => {
  await cluster.processor('publish', NS);
  await cluster.gateway('gw1', NS);
  await cluster.gateway('gw2', NS);
  await cluster.gateway('exp', [...NS, '--token-refresh-grace', '3s', '--jwt-leeway', '0s']);
  lb = await cluster.balancer();
});
after(() => {
  clients.forEach((c) => c.close());
  return cluster.stop();
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function client(url, user, more = {}) {
  const c = new WsgateClient({
    url,
    WebSocket: WS,
    storage: memoryStore(),
    channelStorage: memoryChannelStore(),
    token: () => token(user, { claims: { channels: ['live:*', 'talk:*'] } }),
    backoff: { baseMs: 200, maxMs: 1000 },
    ...more,
  });
  clients.push(c);
  return c;
}
const direct = (name) => `ws://127.0.0.1:${cluster.gateways.get(name).port}/`;

test('publications reach subscribers on another gateway: the publish built-in, client publish, JSON and MessagePack', { timeout: 60000 }, async () => {
  const a = client(direct('gw1'), `a-${cluster.run}`);
  const b = client(direct('gw2'), `b-${cluster.run}`, { codec: rawCodec }); // frames as they are
  const m = client(direct('gw1'), `m-${cluster.run}`, { codec: msgpackCodec(msgpack) });
  const subA = a.subscribe('talk:x');
  const subB = b.subscribe('talk:x');
  const subM = m.subscribe('talk:x');
  await Promise.all([subA, subB, subM].map((s) => next(s, 'subscribed', () => true, 10000)));
  const got = [];
  const gotM = [];
  subA.on('publication', (p) => got.push(p));
  subM.on('publication', (p) => gotM.push(p));
  b.send('talk:x\nfrom the handler'); // the processor's `publish` built-in: <channel>\n<payload>
  await until(() => got.length === 1, 15000, 'the built-in publication');
  assert.equal(subB.publish('from a client'), true);
  await until(() => got.length === 2, 15000, 'the client publication');
  subM.publish(new Uint8Array([0, 255, 10])); // binary: JSON subscribers get it as data_b64
  await until(() => got.length === 3 && gotM.length === 3, 15000, 'the binary publication');
  assert.deepEqual(got.map((p) => p.data), ['from the handler', 'from a client', new Uint8Array([0, 255, 10])]);
  assert.deepEqual(got.map((p) => p.binary), [false, false, true]);
  assert.equal(got[1].offset, got[0].offset + 1);
  assert.equal(got[1].epoch, got[0].epoch);
  assert.ok(got[0].epoch > 2 ** 32, `the epoch (${got[0].epoch}) is a time in microseconds, exact as a number`);
  // MessagePack subscribers get the same publications, offsets and epoch (uint 64 in the map).
  assert.deepEqual(gotM.map((p) => [p.offset, p.epoch, p.binary]), got.map((p) => [p.offset, p.epoch, p.binary]));
  assert.deepEqual([...gotM[2].data], [0, 255, 10]);
  assert.equal(gotM[0].data, 'from the handler');
  // A namespace without client_publish: refused with the gateway's code, on the Subscription.
  const subL = a.subscribe('live:nopub');
  await next(subL, 'subscribed', () => true, 10000);
  subL.publish('x');
  assert.equal((await next(subL, 'error', () => true, 10000)).code, 'publish_not_allowed');
});

test('presence across gateways; refused where the namespace has none', { timeout: 60000 }, async () => {
  const a = client(direct('gw1'), `pa-${cluster.run}`);
  const b = client(direct('gw2'), `pb-${cluster.run}`);
  const subA = a.subscribe('talk:p');
  const subB = b.subscribe('talk:p');
  await Promise.all([next(subA, 'subscribed', () => true, 10000), next(subB, 'subscribed', () => true, 10000)]);
  const pres = await subA.presence();
  assert.equal(pres.connections, 2);
  assert.deepEqual([...pres.users].sort(), [`pa-${cluster.run}`, `pb-${cluster.run}`].sort());
  const subL = a.subscribe('live:nopres');
  await next(subL, 'subscribed', () => true, 10000);
  await assert.rejects(subL.presence(), { code: 'presence_not_allowed' });
});

test('recovery: every publication exactly once and in order across a kill -9 of the subscribers\' gateway', { timeout: 120000 }, async (t) => {
  const N = 600;
  const SUBSCRIBERS = 8;
  const channel = `live:${cluster.run}`;
  cluster.up = ['gw1'];
  const subs = [];
  for (let i = 0; i < SUBSCRIBERS; i++) {
    const c = client(lb, `s${i}-${cluster.run}`);
    const rec = { c, got: [], resyncs: 0, gaps: 0, causes: [], recovered: [] };
    const sub = c.subscribe(channel);
    sub.on('subscribed', (e) => rec.recovered.push(e.recovered));
    sub.on('publication', (p) => rec.got.push(p));
    sub.on('resync', () => rec.resyncs++);
    sub.on('gap', () => rec.gaps++);
    c.on('disconnected', (d) => rec.causes.push(`${d.cause}:${d.code}`));
    rec.sub = sub;
    subs.push(rec);
  }
  await Promise.all(subs.map((r) => next(r.sub, 'subscribed', () => true, 15000)));
  const pub = client(direct('gw2'), `pub-${cluster.run}`, { codec: rawCodec });
  await next(pub, 'connected', () => true, 10000);
  let crashed;
  for (let i = 0; i < N; i++) {
    if (i === N / 3) {
      cluster.up = ['gw2'];
      crashed = cluster.crash('gw1');
    }
    pub.send(`${channel}\np${i}`);
    await sleep(10);
  }
  await crashed;
  const end = Date.now() + 30000;
  while (subs.some((r) => r.got.length < N) && Date.now() < end) await sleep(200);
  await sleep(1000); // a duplicate would arrive now
  t.diagnostic(`per subscriber: ${subs.map((r) => r.got.length).join(' ')}; disconnects: ${subs.map((r) => r.causes.join('+') || '-').join(' ')}`);
  const want = Array.from({ length: N }, (_, i) => `p${i}`);
  subs.forEach((r, i) => {
    assert.equal(r.resyncs + r.gaps, 0, `subscriber ${i}: resync or gap`);
    assert.deepEqual(r.got.map((p) => p.data), want, `subscriber ${i}: every publication once, in order`);
    for (let k = 1; k < N; k++) assert.equal(r.got[k].offset, r.got[k - 1].offset + 1, `subscriber ${i}: consecutive offsets`);
    assert.ok(r.causes.includes('closed:1006'), `subscriber ${i} lost its gateway`);
    assert.deepEqual(r.recovered, [null, true], `subscriber ${i}: resubscribed with since, recovered`);
  });
});

test('a 3-second token is refreshed in-band; one that is not ends with 4003 and a reconnect', { timeout: 60000 }, async () => {
  const user = `r-${cluster.run}`;
  const reasons = [];
  const c = client(direct('exp'), user, { token: (ctx) => (reasons.push(ctx.reason), token(user, { ttlS: 3 })) });
  const lost = [];
  c.on('disconnected', (d) => lost.push(d.code));
  await next(c, 'connected', () => true, 10000);
  const r1 = await next(c, 'refreshed', () => true, 10000);
  assert.ok(r1.exp > Date.now() / 1000, `the new exp ${r1.exp} is ahead`);
  await next(c, 'refreshed', () => true, 10000); // and again when that one expires
  assert.deepEqual(lost, [], 'the connection stayed up');
  assert.deepEqual(reasons, ['connect', 'refresh', 'refresh']);

  // The refresh gives another user's token: refused (wrong_user), then closed with 4003 after the
  // grace; the reconnect asks the function again, for a connection.
  const other = `o-${cluster.run}`;
  let n = 0;
  const errors = [];
  const d = client(direct('exp'), other, { token: (ctx) => (ctx.reason === 'refresh' ? token(`x${n++}`, { ttlS: 60 }) : token(other, { ttlS: 3 })) });
  d.on('error', (e) => errors.push(e.code));
  await next(d, 'connected', () => true, 10000);
  const gone = await next(d, 'disconnected', () => true, 15000);
  assert.equal(gone.code, 4003);
  assert.ok(errors.includes('wrong_user'), `errors: ${errors.join(' ')}`);
  await next(d, 'connected', () => true, 10000);
});
