/*
 * gw_clock: one clock reading per loop iteration, or one per call (see gw_clock.h).
 *
 * Threads: the loop thread only.
 */
#include "gw_clock.h"

#include <ev.h>

#include "wsg_time.h"

void gw_clock_init(gw_clock *c, struct ev_loop *loop, bool per_iteration) {
  c->loop = loop;
  c->per_iteration = per_iteration && loop;
}

uint64_t gw_clock_wall_us(const gw_clock *c) {
  /* ev_now() is libev's ev_rt_now: CLOCK_REALTIME read after the iteration's poll, in seconds as
   * a double (resolution well under a microsecond for today's epoch). */
  if (c->per_iteration)
    return (uint64_t)(ev_now(c->loop) * 1e6);
  return wsg_now_wall_us();
}
