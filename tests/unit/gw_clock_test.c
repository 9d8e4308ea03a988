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
