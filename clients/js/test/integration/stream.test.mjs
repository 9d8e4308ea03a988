// Issue 20: a stream of 2,000 room messages to 20 clients survives a gateway drain (SIGTERM) and
// a kill -9 of another gateway: every client gets every message exactly once and in order, with
// the library's defaults (resume on, +seq, backoff). The publisher is on a gateway of its own that
// stays up, so what is tested is delivery to the clients, not the publisher's own reconnects.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { WS, WsgateClient, memoryStore } from '../lib.mjs';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Cluster, logDir, token } from './cluster.mjs';

const RECEIVERS = 20;
// WSGATE_JS_STREAM_MESSAGES scales the run down for debugging (the drain and the crash move along).
const MESSAGES = Number(process.env.WSGATE_JS_STREAM_MESSAGES || 2000);
const RATE_PER_S = 100;
const DRAIN_AT = Math.floor(MESSAGES / 4);
const CRASH_AT = Math.floor((MESSAGES * 3) / 5);
const DEADLINE_MS = Number(process.env.WSGATE_JS_STREAM_DEADLINE_MS || 180000);

const cluster = new Cluster('stream');
const all = [];
after(() => {
  all.forEach((c) => c.close());
  return cluster.stop();
});

function client(url, user) {
  const c = new WsgateClient({ url, WebSocket: WS, token: async () => token(user), storage: memoryStore() });
  all.push(c);
  return c;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test(`${MESSAGES} messages to ${RECEIVERS} clients survive a drain and a kill -9, exactly once and in order`, { timeout: 300000 }, async (t) => {
  await cluster.processor();
  const g0 = await cluster.gateway('gw0');
  await cluster.gateway('gw1');
  await cluster.gateway('gw2');
  await cluster.gateway('gw3');
  const lb = await cluster.balancer();
  cluster.up = ['gw1', 'gw2'];
  const room = `room-${cluster.run}`;

  const receivers = [];
  for (let i = 0; i < RECEIVERS; i++) {
    const c = client(lb, `r${i}-${cluster.run}`);
    const r = { c, texts: [], seqs: [], resyncs: 0, causes: [], log: [] };
    c.on('sync', (s) => r.log.push(`sync ${JSON.stringify(s)} at ${r.texts.length}`));
    c.on('connected', (e) => r.log.push(`connected resume=${e.resumeFrom} at ${r.texts.length}`));
    // Room messages are publications of channel room:<room> (docs/HANDLERS.md, "The chat
    // handler"): a client with the channel API hands them to the subscription the handler made
    // (recovered after a reconnect); an older one passes the raw `pub` frames to 'message'.
    const onRoom = (text, seq) => {
      const m = JSON.parse(text);
      if (m.type === 'message') {
        r.texts.push(m.text);
        r.seqs.push(seq);
      }
    };
    c.on('serverSubscribed', ({ subscription }) => subscription.on('publication', (p) => onRoom(p.data, p.offset)));
    c.on('message', (m) => {
      if (m.data && m.data.wsgate === 'pub') onRoom(m.data.data, m.data.offset);
    });
    c.on('resync', () => r.resyncs++);
    c.on('disconnected', (e) => r.causes.push(`${e.cause}:${e.code}`));
    receivers.push(r);
  }
  const pub = client(`ws://127.0.0.1:${g0.port}/`, `pub-${cluster.run}`);
  const joined = await Promise.all([pub, ...receivers.map((r) => r.c)].map((c) => c.request({ op: 'join', room })));
  assert.ok(joined.every((j) => j.type === 'joined'), JSON.stringify(joined.find((j) => j.type !== 'joined')));

  const t0 = Date.now();
  let drained = null;
  let crashed = null;
  for (let i = 0; i < MESSAGES; i++) {
    if (i === DRAIN_AT) {
      cluster.up = ['gw2', 'gw3'];
      drained = cluster.drain('gw1');
    }
    if (i === CRASH_AT) crashed = cluster.crash('gw2');
    // Backpressure: send() queues when the socket is full; wait for room rather than overflow.
    while (pub.bufferedAmount > 256 * 1024) await sleep(10);
    pub.send({ op: 'say', room, text: `m${i}` });
    const ahead = t0 + ((i + 1) * 1000) / RATE_PER_S - Date.now();
    if (ahead > 0) await sleep(ahead);
  }
  await Promise.all([drained, crashed]);

  const end = Date.now() + DEADLINE_MS;
  while (receivers.some((r) => r.texts.length < MESSAGES) && Date.now() < end) await sleep(200);
  const counts = receivers.map((r) => r.texts.length);
  t.diagnostic(`delivered in ${Date.now() - t0} ms; per client: ${counts.join(' ')}`);
  t.diagnostic(`disconnects: ${receivers.map((r) => r.causes.join('+') || '-').join(' ')}`);
  await sleep(1000); // anything extra (a duplicate) would arrive now

  const missing = receivers.map((r) => {
    const have = new Set(r.texts);
    const gone = [];
    for (let i = 0; i < MESSAGES; i++) if (!have.has(`m${i}`)) gone.push(i);
    return gone.length ? `${gone[0]}..${gone[gone.length - 1]}(${gone.length})` : '-';
  });
  t.diagnostic(`missing: ${missing.join(' ')}`);
  writeFileSync(join(logDir, `${cluster.run}-received.json`), JSON.stringify(receivers.map((r) => ({ texts: r.texts, seqs: r.seqs, causes: r.causes, log: r.log }))));
  const want = Array.from({ length: MESSAGES }, (_, i) => `m${i}`);
  receivers.forEach((r, i) => {
    assert.equal(r.resyncs, 0, `receiver ${i}: resync (messages lost beyond the window)`);
    assert.deepEqual(r.texts, want, `receiver ${i}: every message once, in order`);
    for (let k = 1; k < r.seqs.length; k++) assert.equal(r.seqs[k], r.seqs[k - 1] + 1, `receiver ${i}: consecutive q`);
  });
  const drainedClients = receivers.filter((r) => r.causes.some((c) => c.startsWith('drain:1001'))).length;
  const crashedClients = receivers.filter((r) => r.causes.some((c) => c === 'closed:1006')).length;
  t.diagnostic(`${drainedClients} clients drained (1001), ${crashedClients} lost their gateway (1006)`);
  assert.ok(drainedClients > 0 && crashedClients > 0, 'both the drain and the crash hit some clients');
});
