/*
 * gw_clock: the loop thread's clocks for the inbound path: the wall clock for timestamps (an
 * inbound envelope's `ts`, the hop histograms) and the monotonic clock for the rate limits, read
 * once per loop iteration or at every call.
 *
 * libev already reads the clock once per loop iteration, right after its poll returns (ev_now).
 * With `per_iteration` (--loop-clock) the gateway reuses that reading for the wall clock, and
 * reads the monotonic clock once per iteration (an ev_check watcher at the highest priority, so
 * it runs before any I/O callback of that iteration) instead of reading both per frame. What it
 * costs: every reading taken in one iteration is that iteration's start, so a stamp is early by
 * as much as the iteration has run (microseconds at light load; up to the length of a busy
 * iteration); the order of a connection's frames is the envelope's `n`, never `ts`, so nothing
 * depends on stamps being distinct. A rate limit that reads an early `now` sees less time passed:
 * it can only be stricter, never looser.
 *
 * Threads: the loop thread only.
 */
#ifndef GW_CLOCK_H
#define GW_CLOCK_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct {
  struct ev_loop *loop; /* borrowed; NULL: always read the clock */
  bool per_iteration;
  bool started;
  ev_check check;   /* per_iteration: refreshes mono_ns after each poll */
  uint64_t mono_ns; /* per_iteration: the iteration's monotonic reading */
} gw_clock;

/* With per_iteration (and a loop) starts the check watcher; it does not keep the loop alive. */
void gw_clock_init(gw_clock *c, struct ev_loop *loop, bool per_iteration);

/* Stops the watcher (safe on a clock never started). */
void gw_clock_finish(gw_clock *c);

/* Microseconds since the Unix epoch (wsg_now_wall_us's scale). */
uint64_t gw_clock_wall_us(const gw_clock *c);

/* Monotonic nanoseconds (CLOCK_MONOTONIC's scale, as the rate limits count). */
uint64_t gw_clock_mono_ns(const gw_clock *c);

#endif
