// A small real cluster for the client's integration tests: gateways and a chat processor started
// from the build (WSGATE_GATEWAY_BIN, WSGATE_PROCESSOR_BIN) on the shared Kafka and Redis
// (WSGATE_TEST_KAFKA, WSGATE_TEST_REDIS_PORT) with topics and a Redis prefix of their own, ports
// from the kernel, and an in-process TCP balancer in front of the gateways that the test takes
// gateways out of (as HAProxy would after a failed /readyz).
import { execFileSync, spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdirSync, openSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const SECRET = 'clients-js-integration-secret-0123456789abcdef';
const env = process.env;

export const logDir = env.WSGATE_JS_LOG_DIR || join(tmpdir(), `wsgate-js-${process.pid}`);
mkdirSync(logDir, { recursive: true });

/** An HS256 JWT for `user`, valid `ttlS` seconds (an hour), with more `claims` (e.g. channels). */
export function token(user, { ttlS = 3600, claims = {} } = {}) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub: user, exp: Math.floor(Date.now() / 1000) + ttlS, ...claims })}`;
  return `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`;
}

export async function freePort() {
  const s = net.createServer().listen(0, '127.0.0.1');
  await new Promise((ok) => s.on('listening', ok));
  const { port } = s.address();
  await new Promise((ok) => s.close(ok));
  return port;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function httpStatus(port, path) {
  try {
    const r = await fetch(`http://127.0.0.1:${port}${path}`);
    return r.status;
  } catch {
    return 0;
  }
}

export class Cluster {
  constructor(name) {
    this.run = `${name}-${randomBytes(4).toString('hex')}`;
    this.inTopic = `jsc-in-${this.run}`;
    this.outTopic = `jsc-out-${this.run}`;
    this.prefix = `jsc:${this.run}:`;
    this.procs = [];
    this.gateways = new Map();
    execFileSync(env.WSGATE_ADMIN_BIN, ['topics', 'ensure', '--brokers', env.WSGATE_TEST_KAFKA, '--timeout', '30000',
      '--topic', this.inTopic, '--partitions', '4', '--topic', this.outTopic, '--partitions', '8'], { stdio: 'inherit' });
  }

  spawn(name, bin, args) {
    const log = openSync(join(logDir, `${this.run}-${name}.log`), 'a');
    const p = spawn(bin, args, { stdio: ['ignore', log, log] });
    p.exited = new Promise((ok) => p.on('exit', ok));
    this.procs.push(p);
    return p;
  }

  async ready(name, port, p, ms = 30000) {
    const end = Date.now() + ms;
    while ((await httpStatus(port, '/readyz')) !== 200) {
      if (p.exitCode !== null || Date.now() > end) throw new Error(`${name} not ready (log ${logDir}/${this.run}-${name}.log)`);
      await sleep(100);
    }
  }

  common() {
    return ['--kafka-brokers', env.WSGATE_TEST_KAFKA, '--redis-port', env.WSGATE_TEST_REDIS_PORT, '--redis-prefix', this.prefix,
      '--inbound-topic', this.inTopic, '--outbound-topic', this.outTopic, '--http-addr', '127.0.0.1', '--log-level', 'info'];
  }

  async processor(handler = 'chat', extra = []) {
    const http = await freePort();
    const p = this.spawn('proc', env.WSGATE_PROCESSOR_BIN, [...this.common(), '--http-port', String(http),
      '--group-id', `jsc-${this.run}`, '--handler', handler, '--commit-interval', '200ms', ...extra]);
    await this.ready('proc', http, p);
  }

  /** Starts gateway `name`; returns {name, port, proc}. */
  async gateway(name, extra = []) {
    const [port, http] = [await freePort(), await freePort()];
    const p = this.spawn(name, env.WSGATE_GATEWAY_BIN, [...this.common(), '--gateway-id', `${this.run}-${name}`,
      '--listen-addr', '127.0.0.1', '--listen-port', String(port), '--http-port', String(http),
      '--jwt-secret', SECRET, '--drain-window', '2s', '--drain-grace', '15s',
      // Every test client comes from 127.0.0.1, like clients behind one NAT: the per-address caps
      // (docs/GATEWAY.md) would refuse the 500-client reconnect test's own herd.
      '--max-conns-per-addr', '0', '--max-pending-per-addr', '0', '--max-upgrades-per-addr', '0',
      ...extra]);
    await this.ready(name, http, p);
    const g = { name, port, proc: p };
    this.gateways.set(name, g);
    return g;
  }

  /** A TCP balancer over the gateways named in `up` (round robin); returns its ws:// URL. */
  async balancer() {
    this.up = [];
    let rr = 0;
    this.lb = net.createServer((c) => {
      if (this.up.length === 0) return c.destroy();
      const g = this.gateways.get(this.up[rr++ % this.up.length]);
      const u = net.connect(g.port, '127.0.0.1');
      c.pipe(u);
      u.pipe(c);
      const both = () => {
        c.destroy();
        u.destroy();
      };
      c.on('error', both).on('close', both);
      u.on('error', both).on('close', both);
    });
    this.lb.listen(0, '127.0.0.1');
    await new Promise((ok) => this.lb.on('listening', ok));
    return `ws://127.0.0.1:${this.lb.address().port}/`;
  }

  /** SIGTERM: the gateway drains (1001 with a reconnect hint, over --drain-window). */
  drain(name) {
    this.up = this.up.filter((n) => n !== name);
    this.gateways.get(name).proc.kill('SIGTERM');
    return this.gateways.get(name).proc.exited;
  }

  /** kill -9: connections end without a close frame (1006). */
  crash(name) {
    this.up = this.up.filter((n) => n !== name);
    this.gateways.get(name).proc.kill('SIGKILL');
    return this.gateways.get(name).proc.exited;
  }

  async stop() {
    if (this.lb) this.lb.close();
    for (const p of this.procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGTERM');
    const all = Promise.all(this.procs.map((p) => p.exited));
    const t = setTimeout(() => this.procs.forEach((p) => p.exitCode === null && p.kill('SIGKILL')), 20000);
    await all;
    clearTimeout(t);
  }
}
