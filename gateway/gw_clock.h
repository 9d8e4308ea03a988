/*
 * gw_clock: the loop thread's wall clock for timestamps (an inbound envelope's `ts`, the hop
 * histograms), read once per loop iteration or at every call.
 *
 * libev already reads the clock once per loop iteration, right after its poll returns (ev_now).
 * With `per_iteration` (--loop-clock) the gateway reuses that reading instead of calling
 * clock_gettime() for every frame (3.4 % of the gateway's samples while ingesting, docs/
 * BENCHMARKS.md, "Where the time and the memory go"). What it costs: every timestamp taken in one
 * iteration is that iteration's start, so a stamp is early by as much as the iteration has run
 * (microseconds at light load; up to the length of a busy iteration); the order of a connection's
 * frames is the envelope's `n`, never `ts`, so nothing depends on stamps being distinct.
 *
 * Threads: the loop thread only.
 */
#ifndef GW_CLOCK_H
#define GW_CLOCK_H

#include <stdbool.h>
#include <stdint.h>

struct ev_loop;

typedef struct {
  struct ev_loop *loop; /* borrowed; NULL: always read the clock */
  bool per_iteration;
} gw_clock;

void gw_clock_init(gw_clock *c, struct ev_loop *loop, bool per_iteration);

/* Microseconds since the Unix epoch (wsg_now_wall_us's scale). */
uint64_t gw_clock_wall_us(const gw_clock *c);

#endif
