/*
 * gw_ratelimit: GCRA arithmetic (see gw_ratelimit.h for the model).
 *
 * Threads: reentrant, no state of its own; the loop thread calls it for each connection.
 */
#include "gw_ratelimit.h"

#define NS_PER_S 1000000000ull

static uint64_t sat_mul(uint64_t a, uint64_t b) {
  uint64_t r;
  return __builtin_mul_overflow(a, b, &r) ? UINT64_MAX : r;
}

static uint64_t sat_add(uint64_t a, uint64_t b) {
  uint64_t r;
  return __builtin_add_overflow(a, b, &r) ? UINT64_MAX : r;
}

void gw_rate_init(gw_rate *r, uint64_t per_second, uint64_t burst) {
  if (per_second == 0) {
    r->interval_ns = 0;
    r->tolerance_ns = 0;
    return;
  }
  /* Rounded up, so truncation can only make the limit slightly stricter than configured, never
   * looser; above 10^9 units/s the interval bottoms out at 1 ns. */
  r->interval_ns = per_second >= NS_PER_S ? 1 : (NS_PER_S + per_second - 1) / per_second;
  r->tolerance_ns = sat_mul(r->interval_ns, burst == 0 ? 1 : burst);
}

bool gw_rate_allow(const gw_rate *r, uint64_t *tat_ns, uint64_t now_ns, uint64_t cost) {
  if (gw_rate_unlimited(r))
    return true;
  bool full = *tat_ns <= now_ns;
  uint64_t start = full ? now_ns : *tat_ns;
  uint64_t next = sat_add(start, sat_mul(r->interval_ns, cost));
  /* From a full bucket anything goes (an event larger than the burst would otherwise never
   * pass); its whole cost is then owed before the next event. */
  if (!full && next - now_ns > r->tolerance_ns)
    return false;
  *tat_ns = next;
  return true;
}

void gw_rate_charge(const gw_rate *r, uint64_t *tat_ns, uint64_t now_ns, uint64_t cost) {
  if (gw_rate_unlimited(r))
    return;
  uint64_t start = *tat_ns <= now_ns ? now_ns : *tat_ns;
  *tat_ns = sat_add(start, sat_mul(r->interval_ns, cost));
}

uint64_t gw_rate_wait_ns(const gw_rate *r, uint64_t tat_ns, uint64_t now_ns, uint64_t cost) {
  if (gw_rate_unlimited(r) || tat_ns <= now_ns)
    return 0;
  uint64_t inc = sat_mul(r->interval_ns, cost);
  /* Allowed once now >= tat + inc - tolerance, or once the bucket is full (now >= tat) for an
   * event larger than the burst. */
  uint64_t slack = inc > r->tolerance_ns ? 0 : r->tolerance_ns - inc;
  if (tat_ns - now_ns <= slack)
    return 0;
  return tat_ns - slack - now_ns;
}
