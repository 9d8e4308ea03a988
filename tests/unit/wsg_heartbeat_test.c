/* Unit tests of wsg_heartbeat: the /healthz verdict of every daemon, with time passed in. */
#include <criterion/criterion.h>

#include <string.h>

#include "wsg_heartbeat.h"

Test(wsg_heartbeat, unwatched_is_alive) {
  wsg_heartbeat h = {0};
  char why[128] = "";
  cr_assert_eq(wsg_heartbeat_check(&h, 1000000, 1, "event loop", why, sizeof why), 0);
  cr_assert_str_empty(why);
}

Test(wsg_heartbeat, fresh_beat_is_alive_until_the_stall) {
  wsg_heartbeat h = {0};
  atomic_store(&h.ms, 5000);
  char why[128] = "";
  cr_assert_eq(wsg_heartbeat_check(&h, 5000, 2000, "main loop", why, sizeof why), 0);
  cr_assert_eq(wsg_heartbeat_check(&h, 6999, 2000, "main loop", why, sizeof why), 0);
  cr_assert_eq(wsg_heartbeat_check(&h, 7000, 2000, "main loop", why, sizeof why), -1);
  cr_assert_str_eq(why,
                   "main loop stalled: it has not turned for 2000 ms (--liveness-stall 2000 ms)");
}

Test(wsg_heartbeat, a_beat_after_now_was_read_is_fresh) {
  wsg_heartbeat h = {0};
  atomic_store(&h.ms, 5001); /* beat between the caller's clock read and the check */
  char why[128] = "";
  cr_assert_eq(wsg_heartbeat_check(&h, 5000, 10, "consumer loop", why, sizeof why), 0);
}

Test(wsg_heartbeat, clear_stops_watching_and_beat_reads_the_clock) {
  wsg_heartbeat h = {0};
  char why[128];
  wsg_heartbeat_beat(&h);
  uint64_t t = atomic_load(&h.ms);
  cr_assert_gt(t, 0);
  cr_assert_leq(t, wsg_now_mono_ms());
  cr_assert_eq(wsg_heartbeat_check(&h, t + 100, 50, "event loop", why, sizeof why), -1);
  cr_assert(strstr(why, "event loop stalled: it has not turned for 100 ms") == why, "%s", why);
  wsg_heartbeat_clear(&h);
  cr_assert_eq(wsg_heartbeat_check(&h, t + 100, 50, "event loop", why, sizeof why), 0);
}

Test(wsg_heartbeat, reason_is_truncated_to_the_buffer) {
  wsg_heartbeat h = {0};
  atomic_store(&h.ms, 1);
  char why[8];
  cr_assert_eq(wsg_heartbeat_check(&h, 100000, 1, "event loop", why, sizeof why), -1);
  cr_assert_str_eq(why, "event l");
}
