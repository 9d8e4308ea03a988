// Reconnect delays: "full jitter" (a uniform draw between 0 and a capped exponential), so that
// many clients that lost the same gateway at the same instant come back spread over the whole
// window instead of in waves.

export interface BackoffOptions {
  /** The window of the first retry, in ms (default 1000): the delay is uniform in [0, baseMs). */
  baseMs?: number;
  /** The window never grows beyond this, in ms (default 30000). */
  maxMs?: number;
  /** Growth of the window per failed attempt (default 2). */
  factor?: number;
}

/** The delay before retry number `attempt` (0 for the first retry after a loss). */
export function backoffDelay(attempt: number, o: Required<BackoffOptions>, random: () => number): number {
  const window = Math.min(o.maxMs, o.baseMs * Math.pow(o.factor, Math.min(attempt, 64)));
  return Math.floor(random() * window);
}
