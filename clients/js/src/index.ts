// @wsgate/client: wsgate's client for browsers and Node. See docs/CLIENTS.md.
export { WsgateClient, WsgateError } from './client.js';
export type {
  State,
  Cause,
  ClientOptions,
  ClientEvents,
  DisconnectEvent,
  MessageEvent,
  SyncEvent,
  GapEvent,
  ResyncEvent,
  TokenSource,
  WebSocketLike,
  WebSocketConstructor,
} from './client.js';
export { jsonCodec, rawCodec, msgpackCodec } from './codec.js';
export type { Codec, Frame, MsgpackLike } from './codec.js';
export { memoryStore, webStore, defaultStore } from './storage.js';
export type { PositionStore } from './storage.js';
export { CLOSE_ACTIONS, closeAction } from './policy.js';
export type { Action } from './policy.js';
export { backoffDelay } from './backoff.js';
export type { BackoffOptions } from './backoff.js';
export { parseSeqFrame } from './framing.js';
export type { Listener } from './emitter.js';
