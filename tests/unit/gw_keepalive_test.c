/* gw_keepalive: every id comes due exactly once, at its second (clamped to the horizon), in
 * the order of its second; rescheduling from inside the callback; a stall runs every bucket. */
#include <criterion/criterion.h>
#include <stdint.h>

#include "gw_keepalive.h"

#define MAX_SEEN 4096

typedef struct {
  uint64_t ids[MAX_SEEN];
  uint32_t at[MAX_SEEN];
  size_t n;
  uint32_t now;
  gw_keepalive *k;
  uint32_t again_in; /* reschedule every id this many seconds later (0: not) */
  int again_left;
} seen;

static void record(void *arg, uint64_t id) {
  seen *s = arg;
  cr_assert_lt(s->n, MAX_SEEN);
  s->ids[s->n] = id;
  s->at[s->n] = s->now;
  s->n++;
  if (s->again_in && s->again_left-- > 0)
    cr_assert_eq(gw_keepalive_schedule(s->k, id, s->now + s->again_in), 0);
}

static void run_until(seen *s, uint32_t to) {
  while (s->now < to) {
    s->now++;
    gw_keepalive_run(s->k, s->now, record, s);
  }
}

Test(gw_keepalive, ids_come_due_once_at_their_second) {
  seen s = {.now = 1000};
  s.k = gw_keepalive_new(60, s.now);
  cr_assert_not_null(s.k);
  for (uint64_t id = 1; id <= 300; id++)
    cr_assert_eq(gw_keepalive_schedule(s.k, id, s.now + 1 + (uint32_t)(id % 30)), 0);
  cr_assert_eq(gw_keepalive_pending(s.k), 300);
  run_until(&s, 1000 + 29);
  cr_assert_eq(s.n, 290, "ids due in the first 29 seconds: %zu", s.n);
  run_until(&s, 1000 + 100);
  cr_assert_eq(s.n, 300);
  cr_assert_eq(gw_keepalive_pending(s.k), 0);
  for (size_t i = 0; i < s.n; i++) {
    cr_assert_eq(s.at[i], 1000 + 1 + (uint32_t)(s.ids[i] % 30), "id %llu at %u",
                 (unsigned long long)s.ids[i], s.at[i]);
    if (i > 0)
      cr_assert_geq(s.at[i], s.at[i - 1], "out of order");
  }
  gw_keepalive_free(s.k);
}

Test(gw_keepalive, due_times_are_clamped_to_the_horizon) {
  seen s = {.now = 50};
  s.k = gw_keepalive_new(10, s.now);
  cr_assert_eq(gw_keepalive_schedule(s.k, 1, 40), 0);   /* in the past: next second */
  cr_assert_eq(gw_keepalive_schedule(s.k, 2, 5000), 0); /* beyond: the horizon */
  run_until(&s, 70);
  cr_assert_eq(s.n, 2);
  cr_assert_eq(s.ids[0], 1);
  cr_assert_eq(s.at[0], 51);
  cr_assert_eq(s.ids[1], 2);
  cr_assert_eq(s.at[1], 60);
  gw_keepalive_free(s.k);
}

Test(gw_keepalive, callbacks_reschedule_into_later_seconds) {
  seen s = {.now = 0, .again_in = 10, .again_left = 1000};
  s.k = gw_keepalive_new(10, s.now);
  for (uint64_t id = 0; id < 100; id++)
    cr_assert_eq(gw_keepalive_schedule(s.k, id, 1), 0);
  run_until(&s, 35);
  /* Due at 1, 11, 21 and 31: four rounds of 100. */
  cr_assert_eq(s.n, 400);
  for (size_t i = 0; i < s.n; i++)
    cr_assert_eq(s.at[i] % 10, 1, "id %llu at %u", (unsigned long long)s.ids[i], s.at[i]);
  cr_assert_eq(gw_keepalive_pending(s.k), 100);
  gw_keepalive_free(s.k);
}

Test(gw_keepalive, a_stall_runs_every_bucket_once) {
  seen s = {.now = 100};
  s.k = gw_keepalive_new(30, s.now);
  for (uint64_t id = 0; id < 90; id++)
    cr_assert_eq(gw_keepalive_schedule(s.k, id, s.now + 1 + (uint32_t)(id % 30)), 0);
  /* The loop was stopped for 10 minutes (SIGSTOP): one run sees everything. */
  s.now += 600;
  gw_keepalive_run(s.k, s.now, record, &s);
  cr_assert_eq(s.n, 90);
  cr_assert_eq(gw_keepalive_pending(s.k), 0);
  /* And the wheel goes on from there. */
  cr_assert_eq(gw_keepalive_schedule(s.k, 7, s.now + 5), 0);
  run_until(&s, s.now + 4);
  cr_assert_eq(s.n, 90);
  run_until(&s, s.now + 1);
  cr_assert_eq(s.n, 91);
  gw_keepalive_free(s.k);
}

Test(gw_keepalive, a_burst_in_one_second_is_released) {
  seen s = {.now = 0};
  s.k = gw_keepalive_new(5, s.now);
  for (uint64_t id = 0; id < 4000; id++)
    cr_assert_eq(gw_keepalive_schedule(s.k, id, 3), 0);
  run_until(&s, 3);
  cr_assert_eq(s.n, 4000);
  cr_assert_eq(gw_keepalive_pending(s.k), 0);
  cr_assert_null(gw_keepalive_new(0, 0));
  gw_keepalive_free(s.k);
}
