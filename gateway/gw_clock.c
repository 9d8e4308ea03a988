/*
 * gw_clock: one clock reading per loop iteration, or one per call (see gw_clock.h).
 *
 * Threads: the loop thread only.
 */
#include "gw_clock.h"

#include <time.h>

#include "wsg_time.h"

static uint64_t read_mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void on_check(struct ev_loop *loop, ev_check *w, int revents) {
  (void)loop;
  (void)revents;
  gw_clock *c = w->data;
  c->mono_ns = read_mono_ns();
}

void gw_clock_init(gw_clock *c, struct ev_loop *loop, bool per_iteration) {
  c->loop = loop;
  c->per_iteration = per_iteration && loop;
  c->started = false;
  c->mono_ns = read_mono_ns();
  if (!c->per_iteration)
    return;
  ev_check_init(&c->check, on_check);
  c->check.data = c;
  /* Highest priority: libev runs pending watchers by priority, so the reading is taken before any
   * I/O callback of the iteration uses it. */
  ev_set_priority(&c->check, EV_MAXPRI);
  ev_check_start(loop, &c->check);
  ev_unref(loop); /* a clock is no reason for the loop to keep running */
  c->started = true;
}

void gw_clock_finish(gw_clock *c) {
  if (!c->started)
    return;
  ev_ref(c->loop);
  ev_check_stop(c->loop, &c->check);
  c->started = false;
}

uint64_t gw_clock_wall_us(const gw_clock *c) {
  /* ev_now() is libev's ev_rt_now: CLOCK_REALTIME read after the iteration's poll, in seconds as
   * a double (resolution well under a microsecond for today's epoch). */
  if (c->per_iteration)
    return (uint64_t)(ev_now(c->loop) * 1e6);
  return wsg_now_wall_us();
}

uint64_t gw_clock_mono_ns(const gw_clock *c) {
  return c->per_iteration ? c->mono_ns : read_mono_ns();
}
