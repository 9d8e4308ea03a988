/*
 * Unit tests for gw_ratelimit: GCRA with injected time (no sleeping).
 */
#include <criterion/criterion.h>

#include "gw_ratelimit.h"

#define MS 1000000ull
#define S  1000000000ull
/* A realistic monotonic origin, so "tat == 0 is a full bucket" is exercised as in production. */
#define T0 (1000 * S)

Test(gw_ratelimit, steady_rate_is_allowed) {
  gw_rate r;
  gw_rate_init(&r, 10, 1); /* 10/s, no burst: one every 100 ms */
  cr_assert_eq(r.interval_ns, 100 * MS);
  uint64_t tat = 0;
  for (int i = 0; i < 1000; i++)
    cr_assert(gw_rate_allow(&r, &tat, T0 + (uint64_t)i * 100 * MS, 1), "event %d at the rate", i);
  /* Slightly faster than the rate is refused. */
  cr_assert_not(gw_rate_allow(&r, &tat, T0 + 999 * 100 * MS + 99 * MS, 1));
}

Test(gw_ratelimit, burst_then_refused_then_recovers) {
  gw_rate r;
  gw_rate_init(&r, 10, 5);
  uint64_t tat = 0;
  for (int i = 0; i < 5; i++)
    cr_assert(gw_rate_allow(&r, &tat, T0, 1), "burst event %d", i);
  uint64_t before = tat;
  cr_assert_not(gw_rate_allow(&r, &tat, T0, 1), "the 6th at once is refused");
  cr_assert_eq(tat, before, "a refusal does not consume");
  cr_assert_eq(gw_rate_wait_ns(&r, tat, T0, 1), 100 * MS);
  cr_assert_not(gw_rate_allow(&r, &tat, T0 + 100 * MS - 1, 1));
  /* One interval later, exactly one more. */
  cr_assert(gw_rate_allow(&r, &tat, T0 + 100 * MS, 1));
  cr_assert_not(gw_rate_allow(&r, &tat, T0 + 100 * MS, 1));
  /* After a long pause the whole burst is back, and no more than it. */
  uint64_t later = T0 + 60 * S;
  cr_assert_eq(gw_rate_wait_ns(&r, tat, later, 1), 0);
  for (int i = 0; i < 5; i++)
    cr_assert(gw_rate_allow(&r, &tat, later, 1), "recovered burst event %d", i);
  cr_assert_not(gw_rate_allow(&r, &tat, later, 1));
}

Test(gw_ratelimit, long_run_average_holds) {
  gw_rate r;
  gw_rate_init(&r, 100, 20);
  uint64_t tat = 0, allowed = 0;
  /* Offered 1000/s for 10 s: expect 100/s * 10 s + the burst. */
  for (uint64_t t = 0; t < 10 * S; t += MS)
    allowed += gw_rate_allow(&r, &tat, T0 + t, 1);
  cr_assert(allowed >= 1000 + 20 - 1 && allowed <= 1000 + 20, "allowed %lu",
            (unsigned long)allowed);
}

Test(gw_ratelimit, byte_cost) {
  gw_rate r;
  gw_rate_init(&r, 1000, 4000); /* 1000 B/s, 4000 B burst */
  uint64_t tat = 0;
  cr_assert(gw_rate_allow(&r, &tat, T0, 3000));
  cr_assert(gw_rate_allow(&r, &tat, T0, 1000));
  cr_assert_not(gw_rate_allow(&r, &tat, T0, 1), "burst spent");
  /* 500 ms later 500 bytes are back: 500 fit, 501 do not. */
  cr_assert_not(gw_rate_allow(&r, &tat, T0 + 500 * MS, 501));
  cr_assert_eq(gw_rate_wait_ns(&r, tat, T0 + 500 * MS, 501), MS);
  cr_assert(gw_rate_allow(&r, &tat, T0 + 500 * MS, 500));
  /* Cost 0 is always allowed. */
  cr_assert(gw_rate_allow(&r, &tat, T0 + 500 * MS, 0));
}

Test(gw_ratelimit, cost_larger_than_burst) {
  gw_rate r;
  gw_rate_init(&r, 1000, 1000);
  uint64_t tat = 0;
  /* From a full bucket a 5000-byte message passes, and 5 s of debt follow. */
  cr_assert(gw_rate_allow(&r, &tat, T0, 5000));
  cr_assert_not(gw_rate_allow(&r, &tat, T0 + 4 * S, 1));
  cr_assert_eq(gw_rate_wait_ns(&r, tat, T0 + 4 * S, 5000), S);
  cr_assert_not(gw_rate_allow(&r, &tat, T0 + 4 * S, 5000), "not again before the bucket is full");
  cr_assert(gw_rate_allow(&r, &tat, T0 + 5 * S, 5000));
}

Test(gw_ratelimit, unlimited) {
  gw_rate r;
  gw_rate_init(&r, 0, 100);
  cr_assert(gw_rate_unlimited(&r));
  uint64_t tat = 0;
  for (int i = 0; i < 100000; i++)
    cr_assert(gw_rate_allow(&r, &tat, T0, UINT64_MAX));
  cr_assert_eq(tat, 0, "unlimited keeps no state");
  cr_assert_eq(gw_rate_wait_ns(&r, tat, T0, 1), 0);
}

Test(gw_ratelimit, extremes_saturate) {
  gw_rate r;
  gw_rate_init(&r, 3, 0); /* burst 0 is 1; 1/3 s rounds up, never looser */
  cr_assert_eq(r.interval_ns, 333333334);
  cr_assert_eq(r.tolerance_ns, r.interval_ns);
  gw_rate_init(&r, UINT64_MAX, UINT64_MAX);
  cr_assert_eq(r.interval_ns, 1);
  uint64_t tat = 0;
  cr_assert(gw_rate_allow(&r, &tat, T0, 1000));
  gw_rate_init(&r, 1, UINT64_MAX); /* tolerance saturates: never refused */
  cr_assert_eq(r.tolerance_ns, UINT64_MAX);
  tat = 0;
  for (int i = 0; i < 10; i++)
    cr_assert(gw_rate_allow(&r, &tat, T0, UINT64_MAX / 4));
  gw_rate_init(&r, 1, 10);
  tat = 0;
  cr_assert(gw_rate_allow(&r, &tat, T0, UINT64_MAX), "huge cost from full: allowed, saturated");
  cr_assert_eq(tat, UINT64_MAX);
  cr_assert_not(gw_rate_allow(&r, &tat, T0 + S, 1));
  cr_assert_eq(gw_rate_wait_ns(&r, tat, T0 + S, UINT64_MAX), UINT64_MAX - T0 - S);
}

/* Bytes already read and dropped are charged even past the burst; the overdraft is owed. */
Test(gw_ratelimit, charge_overdraws_and_is_owed) {
  gw_rate r;
  gw_rate_init(&r, 1000, 100); /* 1000 bytes/s, burst 100: 1 ms per byte */
  uint64_t tat = 0;
  gw_rate_charge(&r, &tat, T0, 600);
  cr_assert_eq(tat, T0 + 600 * MS, "charged from a full bucket");
  cr_assert_not(gw_rate_allow(&r, &tat, T0, 1));
  gw_rate_charge(&r, &tat, T0, 400);
  cr_assert_eq(tat, T0 + 1000 * MS, "a second charge adds to the debt");
  /* 100 more bytes pass once the debt is paid down to the tolerance. */
  cr_assert_eq(gw_rate_wait_ns(&r, tat, T0, 100), 1000 * MS);
  cr_assert(gw_rate_allow(&r, &tat, T0 + 1000 * MS, 100));
  gw_rate_init(&r, 0, 100);
  tat = 0;
  gw_rate_charge(&r, &tat, T0, UINT64_MAX);
  cr_assert_eq(tat, 0, "unlimited keeps no state");
}
