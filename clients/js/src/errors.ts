// The client's errors: one class, each with a stable `code`: the client's own, or the code of a
// gateway's `error` answer to an op (docs/PROTOCOL.md, "Channels" and "Token refresh").

/** Raised by the client itself. */
export type ClientCode =
  | 'outbox_full'
  | 'closed'
  | 'not_connected'
  | 'timeout'
  | 'connection_lost'
  | 'protocol'
  | 'decode'
  | 'token'
  | 'listener';

/** Answered by the gateway to an op (its `code`); others may come from a newer gateway. */
export type GatewayCode =
  | 'bad_request'
  | 'unknown_op'
  | 'bad_channel'
  | 'unknown_namespace'
  | 'forbidden'
  | 'too_many_subscriptions'
  | 'too_many_channels'
  | 'unavailable'
  | 'publish_not_allowed'
  | 'not_subscribed'
  | 'presence_not_allowed'
  | 'invalid_token'
  | 'wrong_user'
  | (string & {});

export class WsgateError extends Error {
  constructor(
    readonly code: ClientCode | GatewayCode,
    message: string,
    /** The underlying error, or the gateway's `error` answer. */
    readonly cause?: unknown,
  ) {
    super(message);
    this.name = 'WsgateError';
  }
}
