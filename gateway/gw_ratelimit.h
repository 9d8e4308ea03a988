/*
 * gw_ratelimit: per-connection rate limits with the Generic Cell Rate Algorithm (GCRA, the
 * virtual-scheduling form of a token bucket).
 *
 * A connection keeps 8 bytes per limit: the theoretical arrival time (TAT) of its next unit, in
 * nanoseconds on the caller's monotonic clock; a zero TAT is a full bucket. The gw_rate spec is
 * computed once from the configuration and shared read-only by every connection.
 *
 * A unit costs `interval_ns`; an event of cost c is allowed when, after adding c intervals, the
 * TAT is at most `tolerance_ns` (= burst intervals) ahead of now. So from idle a connection may
 * send `burst` units at once, then one unit every interval. An event costing more than the whole
 * burst (a message larger than the byte burst) is allowed only from a full bucket and leaves the
 * TAT in the future by its full cost, so the long-run rate still holds.
 *
 * Time is passed in, so the logic is tested without sleeping. Threads: reentrant; the state
 * belongs to whoever owns the connection (the loop thread).
 */
#ifndef GW_RATELIMIT_H
#define GW_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
  uint64_t interval_ns;  /* cost of one unit; 0 = unlimited */
  uint64_t tolerance_ns; /* how far the TAT may run ahead of now: burst * interval */
} gw_rate;

/* per_second: units per second (messages or bytes), 0 = unlimited. burst: units allowed at once
 * from idle; 0 is taken as 1 (one event at the steady rate). */
void gw_rate_init(gw_rate *r, uint64_t per_second, uint64_t burst);

static inline bool gw_rate_unlimited(const gw_rate *r) {
  return r->interval_ns == 0;
}

/*
 * Returns true and advances *tat_ns if an event of `cost` units is allowed at `now_ns`; returns
 * false and leaves *tat_ns unchanged if it is refused. Unlimited: always true, *tat_ns untouched.
 * r: borrowed; tat_ns: the connection's state, borrowed.
 */
bool gw_rate_allow(const gw_rate *r, uint64_t *tat_ns, uint64_t now_ns, uint64_t cost);

/* Charges `cost` units that were already spent (bytes read and dropped): always advances *tat_ns,
 * past the tolerance if need be, so what was overdrawn is owed before anything else passes.
 * Unlimited: *tat_ns untouched. */
void gw_rate_charge(const gw_rate *r, uint64_t *tat_ns, uint64_t now_ns, uint64_t cost);

/* Nanoseconds from now_ns until an event of `cost` would be allowed (0 if it is now); for a
 * PAUSE action's timer. Saturates at UINT64_MAX. */
uint64_t gw_rate_wait_ns(const gw_rate *r, uint64_t tat_ns, uint64_t now_ns, uint64_t cost);

#endif
