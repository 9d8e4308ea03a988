// @wsgate/client: wsgate's client for browsers and Node. See docs/CLIENTS.md.
export { WsgateClient } from './client.js';
export { WsgateError } from './errors.js';
export type { ClientCode, GatewayCode } from './errors.js';
export { Subscription } from './channels.js';
export type {
  SubscriptionState,
  SubscriptionEvents,
  SubscribeOptions,
  SubscribedEvent,
  PublicationEvent,
  ChannelGapEvent,
  ChannelResyncEvent,
  UnsubscribedEvent,
  PresenceChangeEvent,
  Presence,
} from './channels.js';
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
  TokenContext,
  WebSocketLike,
  WebSocketConstructor,
} from './client.js';
export { jsonCodec, rawCodec, msgpackCodec } from './codec.js';
export type { Codec, Frame, MsgpackLike } from './codec.js';
export { memoryStore, webStore, defaultStore, memoryChannelStore, webChannelStore, defaultChannelStore } from './storage.js';
export type { PositionStore, ChannelStore, ChannelPosition } from './storage.js';
export { CLOSE_ACTIONS, closeAction } from './policy.js';
export type { Action } from './policy.js';
export { backoffDelay } from './backoff.js';
export type { BackoffOptions } from './backoff.js';
export { parseSeqFrame } from './framing.js';
export { isOp, jwtExp } from './ops.js';
export type { Listener } from './emitter.js';
