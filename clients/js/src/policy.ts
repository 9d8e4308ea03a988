// What the client does after each way a connection can end: one table, mirrored in
// docs/CLIENTS.md ("Close codes") from the gateway's own table (docs/PROTOCOL.md).

/** `retry`: reconnect with backoff; `drain`: reconnect after the gateway's hint; `stop`: give up. */
export type Action = 'retry' | 'drain' | 'stop';

/** Close codes with their action; codes not listed are retried, except application ranges. */
export const CLOSE_ACTIONS: Readonly<Record<number, Action>> = {
  1000: 'stop', // the application closed the connection on purpose
  1001: 'drain', // the gateway is draining: "draining; reconnect_ms=<N>"
  1002: 'stop', // protocol error: a client bug, retrying repeats it
  1003: 'stop', // unsupported data
  1007: 'stop', // invalid UTF-8 in a text frame: a client bug
  1008: 'retry', // over the message rate (--rate-action close): slow down
  1009: 'retry', // a message over --max-message: it is not sent again
  1011: 'retry', // Kafka or Redis failed for this connection
  1013: 'retry', // transient overload
  4001: 'retry', // slow consumer: what was queued for us is dropped, resume fetches it again
  4002: 'stop', // closed by the application without a usable code
  4003: 'retry', // token expired without an in-band refresh: the token function gives a new one
  4004: 'stop', // the user has --max-conns-per-user connections: a retry loop only adds load
};

/** The action for a close code. 3000-3999 and 4100-4999 are the application's: stop. */
export function closeAction(code: number): Action {
  const a = CLOSE_ACTIONS[code];
  if (a) return a;
  if ((code >= 3000 && code <= 3999) || (code >= 4100 && code <= 4999)) return 'stop';
  return 'retry';
}

/** The reconnect delay a draining gateway asks for (ms), or null without a hint. */
export function drainDelay(reason: string): number | null {
  const m = /reconnect_ms=(\d+)/.exec(reason);
  return m ? Math.min(Number(m[1]), 60000) : null;
}

/** A refused upgrade, as far as the WebSocket implementation lets us see it. */
export interface Refusal {
  status: number;
  /** The body's `error` code (`draining`, `invalid_token`, ...), when it could be read. */
  error?: string;
  /** Retry-After in ms. */
  retryAfterMs?: number;
}

/** The action for a refused upgrade (HTTP status), see docs/PROTOCOL.md "Refused upgrades". */
export function refusalAction(r: Refusal): Action | 'token' | 'reset' {
  if (r.status === 503 || r.status >= 500) return 'retry';
  if (r.status === 401) return 'token'; // only with a new token
  if (r.status === 400 && r.error === 'invalid_resume') return 'reset';
  return 'stop'; // 400, 403, 426 and the rest: retrying cannot help
}
