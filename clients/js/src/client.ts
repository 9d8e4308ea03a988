// The connection: a state machine (connecting, connected, disconnected, closed) around one
// WebSocket at a time, that reconnects with backoff as the gateway asks, resumes its user's
// sequenced messages (`wsgate.v1+seq`, `?resume=`), matches replies to requests, and queues what
// is sent while it cannot be written. docs/CLIENTS.md is the user's manual of this file.

import { backoffDelay, type BackoffOptions } from './backoff.js';
import { Channels, opError, Subscription, type SubscribeOptions } from './channels.js';
import { jsonCodec, type Codec, type Frame } from './codec.js';
import { Emitter } from './emitter.js';
import { WsgateError } from './errors.js';
import { parseSeqFrame } from './framing.js';
import { decodeOp, encodeOp, isOp, jwtExp, type Op } from './ops.js';
import { closeAction, drainDelay, refusalAction, type Action, type Refusal } from './policy.js';
import { defaultChannelStore, defaultStore, type ChannelStore, type PositionStore } from './storage.js';

export type State = 'connecting' | 'connected' | 'disconnected' | 'closed';

/** The part of the WebSocket API the client uses (browsers', Node 22's, the `ws` package's). */
export interface WebSocketLike {
  readonly readyState: number;
  readonly protocol: string;
  readonly bufferedAmount: number;
  binaryType: string;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** Why a connection ended, or an attempt failed. */
export type Cause =
  | 'closed' // the gateway (or the network) closed an open connection; see `code`
  | 'drain' // the gateway is draining (1001): reconnect after its hint
  | 'refused' // the upgrade was answered with an HTTP error (`status`; seen in Node with `ws` only)
  | 'failed' // the connection never opened and the platform does not say why (browsers)
  | 'timeout' // the connection did not open within `connectTimeoutMs`
  | 'token' // the token function failed or gave no token
  | 'client'; // close() was called

export interface DisconnectEvent {
  cause: Cause;
  /** The close code (1006 when there was no close frame, 1005 when it had no code). */
  code: number;
  reason: string;
  /** For `refused`: the HTTP status, and the body's error code when it could be read. */
  status?: number;
  error?: string;
  /** In `disconnected`: the delay before the next attempt, in ms. */
  retryInMs?: number;
  /** Failed attempts in a row so far (0 after a connection that was up). */
  attempt: number;
}

export interface SyncEvent {
  resume: number | null;
  last: number;
  replayed: number;
  complete: boolean;
}
export interface GapEvent {
  from: number;
  to: number;
}
export interface ResyncEvent {
  /** `incomplete`: the catch-up after a reconnect missed messages; `gap`: messages were lost live. */
  reason: 'incomplete' | 'gap';
  sync?: SyncEvent;
  gap?: GapEvent;
}

export interface MessageEvent {
  /** The decoded payload (the codec's work). */
  data: unknown;
  /** The message's number in its user's sequence, null for a reply to this connection. */
  seq: number | null;
  binary: boolean;
}

export interface ClientEvents {
  state: { state: State; previous: State };
  connecting: { attempt: number };
  connected: { protocol: string; resumeFrom: number | null };
  disconnected: DisconnectEvent;
  closed: DisconnectEvent;
  message: MessageEvent;
  sync: SyncEvent;
  gap: GapEvent;
  resync: ResyncEvent;
  /** A control frame or gateway op this version does not know (forward compatibility). */
  control: Record<string, unknown>;
  /** The gateway accepted a new token in-band; the connection now expires at `exp` (seconds). */
  refreshed: { exp: number };
  /** The application's server subscribed this connection to a channel, or ended one. */
  serverSubscribed: { channel: string; subscription: Subscription };
  serverUnsubscribed: { channel: string; subscription: Subscription };
  /** The outbox emptied and the socket's buffer is below `highWaterMark` again. */
  writable: Record<string, never>;
  error: Error;
}

/** Why the token function is called: before a connection attempt, or to refresh an open one. */
export interface TokenContext {
  reason: 'connect' | 'refresh';
}
export type TokenSource = string | ((ctx: TokenContext) => string | Promise<string>);

export interface ClientOptions {
  /** The gateway (usually its balancer), `ws://` or `wss://`. */
  url: string;
  /** A token, or a function called before every connection attempt and for every in-band
   * refresh (may be async). */
  token?: TokenSource;
  /** Refresh in-band this long before the token's `exp` (a JWT's, read without verifying), besides
   * when the gateway asks (`refresh_required`). Default 0: only when asked. */
  refreshAheadMs?: number;
  /** More query parameters (e.g. `user` for a development gateway with --insecure-dev-user). */
  params?: Record<string, string>;
  /** The WebSocket constructor; default `globalThis.WebSocket` (Node 20: pass `ws`). */
  WebSocket?: WebSocketConstructor;
  /** The gateway's subprotocol (default `wsgate.v1`). */
  subprotocol?: string;
  /** Resumable delivery with `<subprotocol>+seq` (default true). */
  resume?: boolean;
  /** Where the resume position is kept (default: sessionStorage in browsers, else memory). */
  storage?: PositionStore;
  /** Where each channel's last offset and epoch are kept (default: sessionStorage in browsers, else memory). */
  channelStorage?: ChannelStore;
  codec?: Codec;
  backoff?: BackoffOptions;
  /** Failed attempts in a row before giving up (default Infinity). */
  maxAttempts?: number;
  /** An attempt that has not opened after this long is abandoned (default 10000 ms). */
  connectTimeoutMs?: number;
  /** A connection that lived this long resets the backoff (default 2000 ms). */
  stableAfterMs?: number;
  /** Default timeout of request() (default 10000 ms). */
  requestTimeoutMs?: number;
  /** The key of the request id in requests and replies (default `id`). */
  idKey?: string;
  /** Bounds of the outbox: frames sent while disconnected or backpressured. */
  outboxMaxMessages?: number;
  outboxMaxBytes?: number;
  /** Frames wait in the outbox while the socket buffers more than this (default 1 MiB). */
  highWaterMark?: number;
  /** Overrides the close-code table: true reconnects, false stops, undefined keeps the table. */
  reconnectOn?: (code: number, reason: string) => boolean | undefined;
  /** Called on `resync` (after its event); the application reloads from its source of truth. */
  onResync?: (ev: ResyncEvent) => void | Promise<void>;
  /** Connect at construction (default true). */
  autoConnect?: boolean;
  /** For tests: the random source of the jitter. */
  random?: () => number;
}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
  sent: boolean;
  /** A gateway op: answered by an op frame, not by an application reply. */
  op?: boolean;
}

interface Queued {
  frame: Frame;
  size: number;
  id?: unknown;
}

const OPEN = 1;
const POLL_MS = 20;

export class WsgateClient extends Emitter<ClientEvents> {
  private o: Required<Omit<ClientOptions, 'token' | 'params' | 'WebSocket' | 'storage' | 'channelStorage' | 'reconnectOn' | 'onResync' | 'backoff'>> &
    ClientOptions & { backoff: Required<BackoffOptions> };
  private ws: WebSocketLike | null = null;
  private st: State = 'closed';
  private attempt = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private poll: ReturnType<typeof setInterval> | null = null;
  private openedAt = 0;
  private last: number | null;
  private store: PositionStore;
  private seqMode = false;
  private outbox: Queued[] = [];
  private outboxBytes = 0;
  private blocked = false;
  private pending = new Map<unknown, Pending>();
  private nextId = 1;
  private lastToken: string | undefined;
  private generation = 0;
  private sentResume: number | null = null;
  private channels: Channels;
  private refreshTimer: ReturnType<typeof setTimeout> | null = null;
  private refreshing = false;

  constructor(options: ClientOptions) {
    super((err) => this.emit('error', new WsgateError('listener', 'an event listener threw', err)));
    const o = options;
    this.o = {
      subprotocol: 'wsgate.v1',
      resume: true,
      codec: jsonCodec,
      maxAttempts: Infinity,
      connectTimeoutMs: 10000,
      stableAfterMs: 2000,
      requestTimeoutMs: 10000,
      idKey: 'id',
      outboxMaxMessages: 1000,
      outboxMaxBytes: 1 << 20,
      highWaterMark: 1 << 20,
      autoConnect: true,
      refreshAheadMs: 0,
      random: Math.random,
      ...o,
      backoff: { baseMs: 1000, maxMs: 30000, factor: 2, ...o.backoff },
    };
    this.store = o.storage || defaultStore(`wsgate.resume:${o.url}`);
    this.last = this.store.get();
    this.channels = new Channels({
      codec: this.o.codec,
      store: o.channelStorage || defaultChannelStore(`wsgate.channel:${o.url}:`),
      connected: () => this.st === 'connected',
      op: (x) => this.op(x),
      post: (x) => {
        const id = this.nextId++;
        return { id, sent: this.sendFrame(encodeOp(this.o.codec, { ...x, id })) };
      },
      error: (e) => this.emit('error', e),
      server: (made, sub) => this.emit(made ? 'serverSubscribed' : 'serverUnsubscribed', { channel: sub.channel, subscription: sub }),
    });
    if (this.o.autoConnect) this.connect();
  }

  get state(): State {
    return this.st;
  }

  /** The resume position: the last sequence number received (or given by a sync frame). */
  get position(): number | null {
    return this.last;
  }

  /** Bytes waiting: in the socket's buffer and in the outbox. */
  get bufferedAmount(): number {
    return (this.ws ? this.ws.bufferedAmount : 0) + this.outboxBytes;
  }

  /**
   * The channel's Subscription (the existing one if already subscribed): subscribed now if
   * connected, else on connecting, and again on every reconnect, recovering what was missed.
   * Throws WsgateError `bad_channel` for a name the gateway would refuse.
   */
  subscribe(channel: string, opts?: SubscribeOptions): Subscription {
    return this.channels.subscribe(channel, opts);
  }

  /** The current subscriptions (the client's and the server's). */
  get subscriptions(): Subscription[] {
    return this.channels.all;
  }

  /** Forgets the resume position: the next connection starts from now (e.g. a new user). */
  resetPosition(): void {
    this.savePosition(null);
  }

  /** Starts connecting (from `closed`), or retries at once (from `disconnected`). */
  connect(): void {
    if (this.st === 'connecting' || this.st === 'connected') return;
    if (this.st === 'closed') this.attempt = 0;
    this.clearTimer();
    void this.open();
  }

  /** Closes for good (until connect()): pending requests and the outbox are dropped. */
  close(code = 1000, reason = ''): void {
    const ws = this.ws;
    this.detach();
    if (ws) {
      try {
        ws.close(code, reason);
      } catch {
        /* already closing */
      }
    }
    this.finish({ cause: 'client', code, reason, attempt: this.attempt });
  }

  /**
   * Sends a value (encoded by the codec). Returns true if it went to the socket, false if it waits
   * in the outbox (disconnected, or the socket buffers more than `highWaterMark`). Throws
   * WsgateError `outbox_full` when the outbox is full, `closed` in the closed state.
   */
  send(value: unknown): boolean {
    return this.sendFrame(this.o.codec.encode(value));
  }

  /**
   * Sends `message` with a fresh id under `idKey` and resolves with the reply carrying that id
   * (a reply to this connection, not a sequenced message). Rejects with WsgateError `timeout`,
   * `connection_lost` (sent, then the connection ended: the reply can no longer come; resend it
   * if it is safe), or `closed`. A request still in the outbox is sent after a reconnect.
   */
  request<T = unknown>(message: Record<string, unknown>, opts: { timeoutMs?: number } = {}): Promise<T> {
    const id = this.nextId++;
    const frame = this.o.codec.encode({ ...message, [this.o.idKey]: id });
    const ms = opts.timeoutMs ?? this.o.requestTimeoutMs;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        this.dropQueued(id);
        reject(new WsgateError('timeout', `no reply to request ${id} within ${ms} ms`));
      }, ms);
      const p: Pending = { resolve: resolve as (v: unknown) => void, reject, timer, sent: false };
      this.pending.set(id, p);
      try {
        p.sent = this.sendFrame(frame, id);
      } catch (err) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(err as Error);
      }
    });
  }

  // --- sending ----------------------------------------------------------------------------------

  /**
   * Sends a gateway op with a fresh id now (not through the outbox: ops are re-made on every
   * connection) and resolves with its answer. Rejects with the gateway's code (an `error`
   * answer), `timeout`, `connection_lost` or `not_connected`.
   */
  private op(o: Op): Promise<Op> {
    if (this.st !== 'connected' || !this.ws) return Promise.reject(new WsgateError('not_connected', `${o.wsgate}: not connected`));
    const id = this.nextId++;
    const frame = encodeOp(this.o.codec, { ...o, id });
    const ms = this.o.requestTimeoutMs;
    return new Promise<Op>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new WsgateError('timeout', `no answer to ${o.wsgate} ${id} within ${ms} ms`));
      }, ms);
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer, sent: true, op: true });
      this.ws!.send(frame);
    });
  }

  private sendFrame(frame: Frame, id?: unknown): boolean {
    if (this.st === 'closed') throw new WsgateError('closed', 'the client is closed: call connect() first');
    if (this.st === 'connected' && this.outbox.length === 0 && this.writable()) {
      this.ws!.send(frame);
      return true;
    }
    const size = typeof frame === 'string' ? frame.length : frame.byteLength;
    if (this.outbox.length >= this.o.outboxMaxMessages || this.outboxBytes + size > this.o.outboxMaxBytes) {
      throw new WsgateError('outbox_full', `outbox full (${this.outbox.length} frames, ${this.outboxBytes} bytes)`);
    }
    this.outbox.push({ frame, size, id });
    this.outboxBytes += size;
    this.blocked = true;
    this.startPoll();
    return false;
  }

  private writable(): boolean {
    return !!this.ws && this.ws.readyState === OPEN && this.ws.bufferedAmount < this.o.highWaterMark;
  }

  /** Writes what the outbox holds while the socket accepts it; says `writable` when empty. */
  private flush(): void {
    while (this.st === 'connected' && this.outbox.length && this.writable()) {
      const q = this.outbox.shift()!;
      this.outboxBytes -= q.size;
      this.ws!.send(q.frame);
      const p = q.id !== undefined ? this.pending.get(q.id) : undefined;
      if (p) p.sent = true;
    }
    if (this.st !== 'connected') return;
    if (this.outbox.length === 0) {
      this.stopPoll();
      if (this.blocked && this.writable()) {
        this.blocked = false;
        this.emit('writable', {});
      } else if (this.blocked) this.startPoll();
    }
  }

  private dropQueued(id: unknown): void {
    const i = this.outbox.findIndex((q) => q.id === id);
    if (i >= 0) this.outboxBytes -= this.outbox.splice(i, 1)[0].size;
  }

  // Browsers give no event when bufferedAmount goes down: poll while something waits.
  private startPoll(): void {
    if (!this.poll && this.st === 'connected') this.poll = setInterval(() => this.flush(), POLL_MS);
  }

  private stopPoll(): void {
    if (this.poll) clearInterval(this.poll);
    this.poll = null;
  }

  // --- connecting -------------------------------------------------------------------------------

  private setState(state: State): void {
    if (state === this.st) return;
    const previous = this.st;
    this.st = state;
    this.emit('state', { state, previous });
  }

  private async open(): Promise<void> {
    const gen = ++this.generation;
    this.setState('connecting');
    this.emit('connecting', { attempt: this.attempt });
    let token: string | undefined;
    try {
      token = typeof this.o.token === 'function' ? await this.o.token({ reason: 'connect' }) : this.o.token;
      if (this.o.token !== undefined && !token) throw new Error('the token function gave no token');
    } catch (err) {
      if (gen !== this.generation) return;
      this.emit('error', new WsgateError('token', `could not get a token: ${(err as Error).message}`, err));
      this.ended({ cause: 'token', code: 1006, reason: '' }, 'retry');
      return;
    }
    if (gen !== this.generation) return; // close() or connect() meanwhile
    const tokenChanged = token !== this.lastToken;
    this.lastToken = token;
    const url = new URL(this.o.url);
    const protocols = this.o.resume ? [`${this.o.subprotocol}+seq`, this.o.subprotocol] : [this.o.subprotocol];
    // The token goes last: the gateway (libwebsockets 4.1.6) misses an argument after it.
    this.sentResume = this.o.resume ? this.last : null;
    if (this.sentResume !== null) url.searchParams.set('resume', String(this.sentResume));
    for (const [k, v] of Object.entries(this.o.params || {})) url.searchParams.set(k, v);
    if (token) url.searchParams.set('token', token);
    const Ctor = this.o.WebSocket || (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    let ws: WebSocketLike;
    try {
      if (!Ctor) throw new Error('no WebSocket here: pass options.WebSocket (in Node 20: the `ws` package)');
      ws = new Ctor(url.toString(), protocols);
    } catch (err) {
      this.emit('error', err as Error);
      this.ended({ cause: 'failed', code: 1006, reason: String(err) }, 'stop');
      return;
    }
    this.ws = ws;
    ws.binaryType = 'arraybuffer';
    let refusal: Refusal | null = null;
    this.watchRefusal(ws, (r) => (refusal = r));
    this.timer = setTimeout(() => {
      this.detach();
      try {
        ws.close();
      } catch {
        /* not open yet */
      }
      this.ended({ cause: 'timeout', code: 1006, reason: 'connect timeout' }, 'retry');
    }, this.o.connectTimeoutMs);
    ws.onopen = () => this.opened(ws);
    ws.onmessage = (ev) => this.received(ev.data);
    ws.onerror = () => {
      /* the close event follows and says more */
    };
    ws.onclose = (ev) => {
      this.detach();
      const r = refusal as Refusal | null;
      if (r) {
        const act = refusalAction(r);
        const d: Omit<DisconnectEvent, 'attempt'> = { cause: 'refused', code: ev.code, reason: ev.reason, status: r.status, error: r.error };
        if (act === 'token') {
          // Only a new token can help: a function may give one on the next attempt.
          this.ended(d, typeof this.o.token === 'function' && tokenChanged ? 'retry' : 'stop');
        } else if (act === 'reset') {
          this.savePosition(null);
          this.ended(d, 'retry');
        } else this.ended(d, act, r.retryAfterMs);
        return;
      }
      if (!this.openedAt) {
        this.ended({ cause: 'failed', code: ev.code, reason: ev.reason }, 'retry');
        return;
      }
      const lived = Date.now() - this.openedAt;
      if (lived >= this.o.stableAfterMs) this.attempt = 0;
      let act: Action = closeAction(ev.code);
      const override = this.o.reconnectOn?.(ev.code, ev.reason);
      if (override !== undefined) act = override ? (act === 'drain' ? act : 'retry') : 'stop';
      const hint = act === 'drain' ? drainDelay(ev.reason) : null;
      this.ended({ cause: act === 'drain' ? 'drain' : 'closed', code: ev.code, reason: ev.reason }, act, hint ?? undefined);
    };
  }

  /**
   * In Node with the `ws` package, a refused upgrade's status, Retry-After and JSON body can be
   * read ('unexpected-response'); browsers and Node's built-in WebSocket show only a close 1006.
   */
  private watchRefusal(ws: WebSocketLike, found: (r: Refusal) => void): void {
    const node = ws as unknown as {
      on?: (ev: string, fn: (req: unknown, res: NodeResponse) => void) => void;
      terminate?: () => void;
    };
    if (typeof node.on !== 'function' || typeof node.terminate !== 'function') return;
    node.on('unexpected-response', (_req, res) => {
      const r: Refusal = { status: res.statusCode || 0 };
      const ra = Number(res.headers['retry-after']);
      if (ra > 0) r.retryAfterMs = Math.min(ra, 300) * 1000;
      let body = '';
      let done = false;
      const end = () => {
        if (done) return;
        done = true;
        try {
          r.error = JSON.parse(body).error;
        } catch {
          /* not JSON */
        }
        found(r);
        node.terminate!();
      };
      res.on('data', (c: unknown) => {
        body += String(c);
        if (body.length > 4096) end();
      });
      res.on('end', end);
      res.on('error', end);
      setTimeout(end, 1000);
    });
  }

  private opened(ws: WebSocketLike): void {
    if (ws !== this.ws) return;
    this.clearTimer();
    this.openedAt = Date.now();
    this.seqMode = ws.protocol === `${this.o.subprotocol}+seq`;
    this.setState('connected');
    this.emit('connected', { protocol: ws.protocol, resumeFrom: this.seqMode ? this.last : null });
    // The gateway reads nothing from us before its sync frame, but holds it in TCP: no need to wait.
    this.channels.opened();
    this.flush();
    this.refreshAhead(this.lastToken ? jwtExp(this.lastToken) : null);
  }

  /** After an attempt failed or a connection ended: retry later, or stop. */
  private ended(d: Omit<DisconnectEvent, 'attempt'>, act: Action, delayMs?: number): void {
    this.openedAt = 0;
    this.stopPoll();
    this.stopRefresh();
    this.channels.lost();
    // Sent requests cannot be answered on another connection (replies are not sequenced).
    for (const [id, p] of this.pending) {
      if (!p.sent) continue;
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.reject(new WsgateError('connection_lost', `connection lost before the reply to request ${id}`));
    }
    if (act === 'stop' || this.attempt + 1 > this.o.maxAttempts) {
      this.finish({ ...d, attempt: this.attempt });
      return;
    }
    let wait: number;
    if (act === 'drain' && delayMs !== undefined) wait = delayMs;
    else {
      wait = backoffDelay(this.attempt, this.o.backoff, this.o.random);
      // Retry-After is a floor; the jitter on top spreads the clients it was sent to.
      if (delayMs !== undefined) wait += delayMs;
      this.attempt++;
    }
    this.setState('disconnected');
    this.emit('disconnected', { ...d, retryInMs: wait, attempt: this.attempt });
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.open();
    }, wait);
  }

  private finish(d: DisconnectEvent): void {
    if (this.st === 'closed') return;
    this.generation++;
    this.clearTimer();
    this.stopPoll();
    this.stopRefresh();
    this.channels.lost();
    this.outbox = [];
    this.outboxBytes = 0;
    this.blocked = false;
    for (const [, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new WsgateError('closed', `the client closed (${d.cause}${d.status ? ` ${d.status}` : ` ${d.code}`})`));
    }
    this.pending.clear();
    this.setState('closed');
    this.emit('closed', d);
  }

  /** Forgets the current socket: its late events are ignored. */
  private detach(): void {
    this.clearTimer();
    const ws = this.ws;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      // Not null: `ws` throws an 'error' event that has no listener (closing while connecting).
      ws.onerror = () => {};
    }
    this.ws = null;
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  // --- receiving --------------------------------------------------------------------------------

  private received(raw: unknown): void {
    const binary = typeof raw !== 'string';
    const data: Frame = binary ? new Uint8Array(raw as ArrayBuffer) : (raw as string);
    if (!this.seqMode) return this.deliver(data, null, binary);
    const p = parseSeqFrame(data);
    if (p.kind === 'bad') {
      this.emit('error', new WsgateError('protocol', `gateway frame: ${p.why}`));
    } else if (p.kind === 'control') {
      this.control(p.control);
    } else if (p.seq === null) {
      this.deliver(p.body, null, binary);
    } else if (this.last === null || p.seq > this.last) {
      // The gateway delivers each message once; the check also drops one replayed twice.
      this.savePosition(p.seq);
      this.deliver(p.body, p.seq, binary);
    }
  }

  private control(c: Record<string, unknown>): void {
    if (c.type === 'sync') {
      const s = c as unknown as SyncEvent;
      // A gateway that did not see our ?resume= replayed nothing: say so rather than lose silently.
      if (this.sentResume !== null && s.resume !== this.sentResume) s.complete = false;
      // The gateway's word on where we are, also when it is lower (a position it did not know).
      if (typeof s.last === 'number') this.savePosition(s.last);
      this.emit('sync', s);
      if (s.complete === false) this.resync({ reason: 'incomplete', sync: s });
    } else if (c.type === 'gap') {
      const g = c as unknown as GapEvent;
      if (typeof g.to === 'number' && (this.last === null || g.to > this.last)) this.savePosition(g.to);
      this.emit('gap', g);
      this.resync({ reason: 'gap', gap: g });
    } else this.emit('control', c);
  }

  private resync(ev: ResyncEvent): void {
    this.emit('resync', ev);
    if (this.o.onResync) {
      Promise.resolve()
        .then(() => this.o.onResync!(ev))
        .catch((err) => this.emit('error', err));
    }
  }

  private deliver(body: Frame, seq: number | null, binary: boolean): void {
    if (seq === null && isOp(body)) return this.gatewayOp(body);
    let value: unknown;
    try {
      value = this.o.codec.decode(body);
    } catch (err) {
      this.emit('error', new WsgateError('decode', `cannot decode a frame with ${this.o.codec.name}`, err));
      return;
    }
    // Replies come unsequenced: a sequenced message never answers our request, whatever its id.
    if (seq === null && value && typeof value === 'object') {
      const id = (value as Record<string, unknown>)[this.o.idKey];
      const p = id !== undefined ? this.pending.get(id) : undefined;
      if (p && p.op) return this.emit('message', { data: value, seq, binary });
      if (p) {
        clearTimeout(p.timer);
        this.pending.delete(id);
        p.resolve(value);
        return;
      }
    }
    this.emit('message', { data: value, seq, binary });
  }

  // --- gateway ops: answers, channels, token refresh --------------------------------------------

  private gatewayOp(body: Frame): void {
    const f = decodeOp(this.o.codec, body);
    if (!f) {
      this.emit('error', new WsgateError('decode', `cannot decode a gateway op frame with ${this.o.codec.name}`));
      return;
    }
    const p = typeof f.id === 'number' ? this.pending.get(f.id) : undefined;
    if (p && p.op) {
      clearTimeout(p.timer);
      this.pending.delete(f.id);
      if (f.wsgate === 'error') p.reject(opError(f));
      else {
        p.resolve(f);
        // Now, not in the promise's turn: the replay that follows may be in this same read.
        if (f.wsgate === 'subscribed') this.channels.handle(f);
      }
    } else if (f.wsgate === 'refresh_required') void this.refresh();
    else if (!this.channels.handle(f)) {
      if (f.wsgate === 'error') this.emit('error', opError(f));
      else this.emit('control', f);
    }
  }

  /**
   * Gets a new token and sends it in-band (PROTOCOL.md "Token refresh"), up to 3 tries a second
   * apart while refused (within the gateway's grace); without a new token the gateway closes with
   * 4003 and the reconnect asks the token function again.
   */
  private async refresh(): Promise<void> {
    const fn = this.o.token;
    if (typeof fn !== 'function') {
      this.emit('error', new WsgateError('token', 'the gateway asks for a new token, but `token` is a string: pass a function'));
      return;
    }
    if (this.refreshing) return;
    this.refreshing = true;
    this.stopRefresh();
    const gen = this.generation;
    try {
      for (let tries = 0; tries < 3 && gen === this.generation; tries++) {
        if (tries) await new Promise((r) => setTimeout(r, 1000));
        let token: string;
        try {
          token = await fn({ reason: 'refresh' });
          if (!token) throw new Error('the token function gave no token');
        } catch (err) {
          this.emit('error', new WsgateError('token', `could not get a token to refresh: ${(err as Error).message}`, err));
          continue;
        }
        if (gen !== this.generation) return;
        try {
          const a = await this.op({ wsgate: 'refresh', token });
          this.lastToken = token;
          const exp = Number(a.exp);
          this.emit('refreshed', { exp });
          this.refreshAhead(exp);
          return;
        } catch (err) {
          this.emit('error', err as Error);
          const code = (err as WsgateError).code;
          if (code === 'not_connected' || code === 'connection_lost') return;
        }
      }
    } finally {
      this.refreshing = false;
    }
  }

  /** With `refreshAheadMs`, schedules a refresh that long before `exp` (seconds), at least 1 s on. */
  private refreshAhead(exp: number | null): void {
    this.stopRefresh();
    if (!exp || this.o.refreshAheadMs <= 0 || typeof this.o.token !== 'function') return;
    const wait = Math.max(1000, exp * 1000 - Date.now() - this.o.refreshAheadMs);
    this.refreshTimer = setTimeout(() => void this.refresh(), Math.min(wait, 2 ** 31 - 1));
  }

  private stopRefresh(): void {
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
  }

  private savePosition(q: number | null): void {
    this.last = q;
    this.store.set(q);
  }
}

interface NodeResponse {
  statusCode?: number;
  headers: Record<string, string | string[] | undefined>;
  on(ev: string, fn: (chunk?: unknown) => void): void;
}
