/*
 * Unit tests of gw_clock (--loop-clock): per iteration, every reading inside one loop iteration is
 * libev's reading of that iteration and moves only when the loop does; per call, it follows the
 * real clock.
 *
 * Threads: Criterion's worker.
 */
#include <criterion/criterion.h>
#include <ev.h>
#include <time.h>

#include "gw_clock.h"
#include "wsg_time.h"

static void sleep_ms(long ms) {
  struct timespec ts = {0, ms * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

Test(gw_clock, per_iteration_reuses_the_loops_reading) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  cr_assert_not_null(loop);
  ev_now_update(loop);
  gw_clock c;
  gw_clock_init(&c, loop, true);
  uint64_t a = gw_clock_wall_us(&c);
  sleep_ms(5);
  uint64_t b = gw_clock_wall_us(&c);
  cr_assert_eq(a, b, "no new reading inside one iteration");
  cr_assert_eq(a, (uint64_t)(ev_now(loop) * 1e6));
  /* Within a few ms of the real clock (it was read 5 ms ago). */
  uint64_t now = wsg_now_wall_us();
  cr_assert(now >= a && now - a < 1000000, "%llu vs %llu", (unsigned long long)now,
            (unsigned long long)a);
  /* The next iteration reads again. */
  ev_run(loop, EVRUN_NOWAIT);
  uint64_t d = gw_clock_wall_us(&c);
  cr_assert_geq(d, a + 5000, "the next iteration's reading is after the sleep");
  ev_loop_destroy(loop);
}

Test(gw_clock, per_call_reads_the_clock_every_time) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  gw_clock c;
  gw_clock_init(&c, loop, false);
  uint64_t a = gw_clock_wall_us(&c);
  sleep_ms(5);
  uint64_t b = gw_clock_wall_us(&c);
  cr_assert_geq(b, a + 5000);
  ev_loop_destroy(loop);
}

Test(gw_clock, without_a_loop_per_iteration_falls_back_to_per_call) {
  gw_clock c;
  gw_clock_init(&c, NULL, true);
  cr_assert_eq(c.per_iteration, false);
  uint64_t a = gw_clock_wall_us(&c);
  sleep_ms(2);
  cr_assert_geq(gw_clock_wall_us(&c), a + 2000);
}

static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

Test(gw_clock, per_iteration_monotonic_moves_once_per_iteration) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  cr_assert_not_null(loop);
  gw_clock c;
  gw_clock_init(&c, loop, true);
  uint64_t a = gw_clock_mono_ns(&c);
  sleep_ms(5);
  cr_assert_eq(gw_clock_mono_ns(&c), a, "no new reading inside one iteration");
  cr_assert_geq(mono_ns(), a + 5000000u);
  /* The watcher is unreferenced: with nothing else active, ev_run returns at once. */
  ev_run(loop, 0);
  uint64_t b = gw_clock_mono_ns(&c);
  cr_assert_geq(b, a + 5000000u, "the next iteration reads again");
  cr_assert_leq(b, mono_ns());
  gw_clock_finish(&c);
  gw_clock_finish(&c); /* twice is harmless */
  ev_run(loop, EVRUN_NOWAIT);
  cr_assert_eq(gw_clock_mono_ns(&c), b, "stopped: no more readings");
  ev_loop_destroy(loop);
}

Test(gw_clock, per_call_monotonic_reads_the_clock_every_time) {
  gw_clock c;
  gw_clock_init(&c, NULL, true);
  uint64_t a = gw_clock_mono_ns(&c);
  sleep_ms(2);
  cr_assert_geq(gw_clock_mono_ns(&c), a + 2000000u);
  gw_clock_finish(&c); /* never started: harmless */
}
