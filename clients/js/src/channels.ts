// Channel subscriptions (docs/PROTOCOL.md, "Channels"): one Subscription per channel, kept across
// reconnects and re-made on every new connection with `since` (the last publication's offset and
// epoch, kept in a ChannelStore), so that the gateway replays what was missed. Publications at
// or below the last offset of the same epoch are dropped: a replay may overlap what came live.
// docs/CLIENTS.md ("Channels") is the user's manual of this file.

import type { Codec } from './codec.js';
import { Emitter } from './emitter.js';
import { WsgateError, type GatewayCode } from './errors.js';
import { fromBase64, type Op } from './ops.js';
import type { ChannelPosition, ChannelStore } from './storage.js';

export type SubscriptionState = 'subscribing' | 'subscribed' | 'unsubscribed';

export interface SubscribedEvent {
  channel: string;
  /** true: what was missed since the last position was replayed; false: it could not be (see
   * `resync`); null: nothing to recover (no position yet, or `recover: false`). */
  recovered: boolean | null;
}
export interface PublicationEvent {
  channel: string;
  /** The payload as published: a string for a text publication, bytes for a binary one. */
  data: string | Uint8Array;
  binary: boolean;
  offset: number;
  epoch: number;
}
export interface ChannelGapEvent {
  channel: string;
  from: number;
  to: number;
}
export interface ChannelResyncEvent {
  channel: string;
  /** `not_recovered`: the resubscribe could not replay what was missed; `gap`: publications
   * were lost live; `epoch`: the channel's history was lost (a new epoch). */
  reason: 'not_recovered' | 'gap' | 'epoch';
}
export interface UnsubscribedEvent {
  channel: string;
  /** `client`: unsubscribe(); `server`: the application ended it; `refused`: the subscribe was
   * refused (the `error` event before says why). */
  reason: 'client' | 'server' | 'refused';
}
export interface PresenceChangeEvent {
  channel: string;
  joined: string[];
  left: string[];
  /** When the gateway coalesced many changes: how many joined or left in all. */
  joined_count?: number;
  left_count?: number;
}
export interface Presence {
  connections: number;
  users: string[];
  /** The list was cut at the gateway's bound; `connections` still counts all. */
  truncated: boolean;
}

export interface SubscriptionEvents {
  subscribed: SubscribedEvent;
  publication: PublicationEvent;
  gap: ChannelGapEvent;
  resync: ChannelResyncEvent;
  unsubscribed: UnsubscribedEvent;
  presence_change: PresenceChangeEvent;
  error: Error;
}

export interface SubscribeOptions {
  /** Resubscribe with `since` from the stored position (default true). */
  recover?: boolean;
  /** Called after each `resync` event: reload the channel from the application's source of truth. */
  onResync?: (ev: ChannelResyncEvent) => void | Promise<void>;
}

/** What the channels need of their client. */
export interface ChannelHost {
  readonly codec: Codec;
  readonly store: ChannelStore;
  connected(): boolean;
  /** Sends an op now with a fresh id; resolves with the answer, rejects with a WsgateError. */
  op(o: Op): Promise<Op>;
  /** Sends an op through the outbox with a fresh id (returned) and no answer expected. */
  post(o: Op): { id: number; sent: boolean };
  error(e: Error): void;
  /** A subscription the server made or ended (the client's serverSubscribed/serverUnsubscribed). */
  server(made: boolean, sub: Subscription): void;
}

// Errors after which the subscribe is made again on the next connection, not given up.
const TRANSIENT = ['connection_lost', 'not_connected', 'closed', 'timeout'];
// Publish ids remembered to route a refusal (it names no channel) to its Subscription.
const PUBLISH_IDS_MAX = 256;

export class Subscription extends Emitter<SubscriptionEvents> {
  private st: SubscriptionState = 'subscribing';
  private pos: ChannelPosition | null;
  private since: ChannelPosition | null = null;
  // A subscribe awaits its answer: a `connected` listener that subscribes and the re-making of
  // every subscription on open must not send it twice.
  private inflight = false;
  private h: ChannelHost;

  constructor(
    readonly channel: string,
    private set: Channels,
    private o: SubscribeOptions,
    /** Made by the application's server (an unsolicited `subscribed`), not by subscribe(). */
    readonly server: boolean,
  ) {
    super((err) => set.h.error(new WsgateError('listener', 'a subscription listener threw', err)));
    this.h = set.h;
    this.pos = o.recover === false ? null : this.h.store.get(channel);
  }

  get state(): SubscriptionState {
    return this.st;
  }

  /** The last publication received: what the next resubscribe recovers from. */
  get position(): ChannelPosition | null {
    return this.pos;
  }

  /** Leaves the channel and forgets its position. The Subscription is done; subscribe() anew. */
  unsubscribe(): void {
    if (this.st === 'unsubscribed') return;
    this.h.store.set(this.channel, null);
    if (this.h.connected()) this.h.op({ wsgate: 'unsubscribe', channel: this.channel }).catch(() => {});
    this.end('client');
  }

  /**
   * Publishes to the channel, where its namespace has `client_publish=true` and the token allows
   * it. Text as a string; bytes only with the MessagePack codec. Returns true if written, false if
   * it waits in the outbox. No answer on success (subscribers, this one too, get the publication);
   * a refusal comes as an `error` event with the gateway's code.
   */
  publish(data: string | Uint8Array): boolean {
    if (this.st === 'unsubscribed') throw new WsgateError('closed', `not subscribed to ${this.channel}`);
    if (typeof data !== 'string' && !(data instanceof Uint8Array && this.h.codec.name === 'msgpack'))
      throw new TypeError('publish: a string, or a Uint8Array with the MessagePack codec');
    return this.set.post({ wsgate: 'publish', channel: this.channel, data }, this);
  }

  /** Who is subscribed now (namespaces with presence), across gateways. */
  async presence(): Promise<Presence> {
    const a = await this.h.op({ wsgate: 'presence', channel: this.channel });
    return { connections: Number(a.connections) || 0, users: Array.isArray(a.users) ? a.users : [], truncated: a.truncated === true };
  }

  // --- called by Channels -------------------------------------------------------------------

  /** Subscribes on the current connection, with `since` when a position is known. */
  send(): void {
    if (this.inflight) return;
    this.inflight = true;
    this.st = 'subscribing';
    this.since = this.pos;
    const o: Op = { wsgate: 'subscribe', channel: this.channel };
    if (this.since) o.since = { offset: this.since.offset, epoch: this.since.epoch };
    this.h.op(o).then(
      (a) => {
        this.inflight = false;
        this.answered(a);
      },
      (e: WsgateError) => {
        this.inflight = false;
        if (this.st === 'unsubscribed') return;
        if (e.code === 'timeout') this.emit('error', e);
        if (!TRANSIENT.includes(e.code)) this.refused(e);
      },
    );
  }

  /** The connection ended: the next one subscribes again. */
  lost(): void {
    if (this.st === 'subscribed') this.st = 'subscribing';
  }

  answered(a: Op): void {
    this.inflight = false;
    if (this.st !== 'subscribing') return; // a duplicate (the server re-made it too): nothing new
    this.st = 'subscribed';
    // A gateway that subscribed us before our `since` arrived answers without `recovered`.
    const recovered = this.since ? a.recovered === true : null;
    if (recovered === false) {
      const e = a.epoch;
      this.save(typeof e === 'number' && e > 0 ? { offset: Number(a.offset) || 0, epoch: e } : null);
    } else if (!this.since && !this.pos && typeof a.epoch === 'number' && typeof a.offset === 'number') {
      // Where the stream starts (epoch 0: before the channel's first publication): a reconnect
      // before the first publication recovers from here.
      this.save({ offset: a.offset, epoch: a.epoch });
    }
    this.emit('subscribed', { channel: this.channel, recovered });
    if (recovered === false) this.resync('not_recovered');
  }

  refused(e: WsgateError): void {
    this.failed(e);
    this.end('refused');
  }

  failed(e: Error): void {
    this.emit('error', e);
  }

  end(reason: UnsubscribedEvent['reason']): void {
    if (this.st === 'unsubscribed') return;
    this.st = 'unsubscribed';
    this.set.ended(this);
    this.emit('unsubscribed', { channel: this.channel, reason });
  }

  frame(f: Op): void {
    if (this.st === 'unsubscribed') return;
    // A subscribe with `since` is in flight: what comes before its answer is the live stream of a
    // subscription the server re-made first (chat's on_connect), ahead of the replay the answer
    // starts. Taken, it would move the position past the replay; the replay brings it again.
    if (this.inflight && this.since && f.wsgate !== 'presence_change') return;
    if (f.wsgate === 'pub') this.publication(f);
    else if (f.wsgate === 'gap') {
      const g = { channel: this.channel, from: Number(f.from), to: Number(f.to) };
      if (this.pos && g.to > this.pos.offset) this.save({ offset: g.to, epoch: this.pos.epoch });
      this.emit('gap', g);
      this.resync('gap');
    } else if (f.wsgate === 'presence_change') {
      const { wsgate: _, ...ev } = f;
      this.emit('presence_change', ev as unknown as PresenceChangeEvent);
    }
  }

  private publication(f: Op): void {
    const { offset, epoch } = f;
    if (typeof offset !== 'number' || typeof epoch !== 'number') {
      this.h.error(new WsgateError('protocol', `publication on ${this.channel} without offset and epoch`));
      return;
    }
    const p = this.pos;
    if (p && epoch === p.epoch && offset <= p.offset) return; // replayed twice
    const newEpoch = !!p && p.epoch !== 0 && epoch !== p.epoch;
    let data: string | Uint8Array;
    if (typeof f.data === 'string' || f.data instanceof Uint8Array) data = f.data;
    else if (typeof f.data_b64 === 'string') {
      try {
        data = fromBase64(f.data_b64);
      } catch (err) {
        this.h.error(new WsgateError('decode', `bad data_b64 in a publication on ${this.channel}`, err));
        return;
      }
    } else {
      this.h.error(new WsgateError('protocol', `publication on ${this.channel} without data`));
      return;
    }
    this.save({ offset, epoch });
    if (newEpoch) this.resync('epoch');
    this.emit('publication', { channel: this.channel, data, binary: typeof data !== 'string', offset, epoch });
  }

  private save(p: ChannelPosition | null): void {
    this.pos = p;
    if (this.o.recover !== false) this.h.store.set(this.channel, p);
  }

  private resync(reason: ChannelResyncEvent['reason']): void {
    const ev = { channel: this.channel, reason };
    this.emit('resync', ev);
    if (this.o.onResync) {
      Promise.resolve()
        .then(() => this.o.onResync!(ev))
        .catch((err) => this.emit('error', err));
    }
  }
}

/** The client's subscriptions, and the routing of channel frames to them. */
export class Channels {
  private subs = new Map<string, Subscription>();
  private pubIds = new Map<number, Subscription>();

  constructor(readonly h: ChannelHost) {}

  get all(): Subscription[] {
    return [...this.subs.values()];
  }

  /** The channel's Subscription: the existing one, or a new one subscribed now or on connecting. */
  subscribe(channel: string, o: SubscribeOptions = {}, server = false): Subscription {
    const had = this.subs.get(channel);
    if (had) return had;
    checkName(channel);
    const sub = new Subscription(channel, this, o, server);
    this.subs.set(channel, sub);
    if (this.h.connected()) sub.send();
    return sub;
  }

  /** A new connection is open: every subscription is made again, recovering from its position. */
  opened(): void {
    for (const s of this.subs.values()) s.send();
  }

  lost(): void {
    for (const s of this.subs.values()) s.lost();
  }

  ended(sub: Subscription): void {
    if (this.subs.get(sub.channel) === sub) this.subs.delete(sub.channel);
  }

  post(o: Op, sub: Subscription): boolean {
    const r = this.h.post(o);
    this.pubIds.set(r.id, sub);
    if (this.pubIds.size > PUBLISH_IDS_MAX) this.pubIds.delete(this.pubIds.keys().next().value!);
    return r.sent;
  }

  /** Takes a channel frame (or an answer no pending op claimed); false if it is none of ours. */
  handle(f: Op): boolean {
    const sub = typeof f.channel === 'string' ? this.subs.get(f.channel) : undefined;
    switch (f.wsgate) {
      case 'pub':
      case 'gap':
      case 'presence_change':
        sub?.frame(f); // none: a late frame for a channel just left
        return true;
      case 'subscribed':
        // The server re-making one we have (a reconnect): our own answer, by id, says if it recovered.
        if (sub) {
          if (f.server !== true) sub.answered(f); // late, after its timeout
        } else if (f.server === true && typeof f.channel === 'string') {
          const s = new Subscription(f.channel, this, {}, true);
          this.subs.set(f.channel, s);
          s.answered(f);
          this.h.server(true, s);
        }
        return true;
      case 'unsubscribed':
        if (sub && f.server === true) {
          this.h.store.set(sub.channel, null); // as unsubscribe(): a later one starts afresh
          sub.end('server');
          this.h.server(false, sub);
        }
        return true;
      case 'error': {
        const p = typeof f.id === 'number' ? this.pubIds.get(f.id) : undefined;
        if (!p) return false;
        this.pubIds.delete(f.id as number);
        p.failed(opError(f));
        return true;
      }
    }
    return false;
  }
}

const utf8 = /* @__PURE__ */ new TextEncoder();

/** The gateway's rule (1..200 bytes of UTF-8, no C0, DEL or C1 control), checked before sending. */
function checkName(ch: string): void {
  // eslint-disable-next-line no-control-regex
  if (!ch || utf8.encode(ch).length > 200 || /[\x00-\x1f\x7f-\x9f]/.test(ch))
    throw new WsgateError('bad_channel', `bad channel name ${JSON.stringify(ch.slice(0, 40))}: 1..200 bytes of UTF-8 without control characters`);
}

/** An `error` answer as a WsgateError carrying the gateway's code. */
export function opError(f: Op): WsgateError {
  return new WsgateError(String(f.code) as GatewayCode, `${f.op ? `${String(f.op)}: ` : ''}${String(f.message ?? f.code)}`, f);
}
