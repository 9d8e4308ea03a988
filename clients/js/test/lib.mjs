// Shared by the tests: the toolchain's packages (ws, @msgpack/msgpack) from the cache where
// scripts/setup installs them, a scripted fake gateway, and waiting with deadlines.
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { toolchainDir } from '../build.mjs';

const require = createRequire(join(toolchainDir(), 'node_modules', 'x.js'));
export const WS = require('ws');
export const msgpack = require('@msgpack/msgpack');
import { WsgateClient, memoryStore } from '../dist/index.js';
export * from '../dist/index.js';

/**
 * A fake gateway: a `ws` server on a port from the kernel. `refuse(req)` may return
 * [status, bodyObject, headers] to refuse an upgrade; `onConnection(sock, req)` scripts the rest.
 * Records every upgrade's URL and offered subprotocols.
 */
export async function fakeGateway({ refuse, onConnection } = {}) {
  const upgrades = [];
  const sockets = new Set();
  const server = new WS.WebSocketServer({
    port: 0,
    host: '127.0.0.1',
    handleProtocols: (set) => set.values().next().value ?? false,
    verifyClient: (info, cb) => {
      const url = new URL(info.req.url, 'http://x');
      upgrades.push({ url, protocols: String(info.req.headers['sec-websocket-protocol'] || '') });
      const r = refuse && refuse(info.req, url, upgrades.length);
      if (r) cb(false, r[0], JSON.stringify(r[1]), { 'Content-Type': 'application/json', ...(r[2] || {}) });
      else cb(true);
    },
  });
  await new Promise((ok) => server.on('listening', ok));
  server.on('connection', (sock, req) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    if (onConnection) onConnection(sock, new URL(req.url, 'http://x'), upgrades.length);
  });
  return {
    url: `ws://127.0.0.1:${server.address().port}/`,
    upgrades,
    sockets,
    async close() {
      for (const s of sockets) s.terminate();
      await new Promise((ok) => server.close(ok));
    },
  };
}

/** Resolves with the next `type` event of `client` that satisfies `pred`, or rejects after ms. */
export function next(client, type, pred = () => true, ms = 5000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      off();
      reject(new Error(`no ${type} event within ${ms} ms`));
    }, ms);
    const off = client.on(type, (ev) => {
      if (!pred(ev)) return;
      clearTimeout(t);
      off();
      resolve(ev);
    });
  });
}

/** Waits until fn() is truthy, polling, or throws after ms. */
export async function until(fn, ms = 5000, what = 'condition') {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Client options for tests: ws, memory store, fast backoff. */
export function opts(url, more = {}) {
  return { url, WebSocket: WS, storage: memoryStore(), backoff: { baseMs: 20, maxMs: 100 }, ...more };
}

/** A client constructor that remembers its clients, and closes them all after the file's tests. */
export function clientFactory(after) {
  const made = [];
  after(() => made.forEach((c) => c.close()));
  return (o) => {
    const c = new WsgateClient(o);
    made.push(c);
    return c;
  };
}
