/*
 * proc_offsets: an offset becomes committable only when it and everything before it completed;
 * stale reports never move anything; the ring grows and resets without losing order.
 */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "proc_offsets.h"

Test(proc_offsets, destroy_null_is_noop) {
  proc_offsets_destroy(NULL);
}

Test(proc_offsets, nothing_committable_until_complete) {
  proc_offsets *t = proc_offsets_create();
  cr_assert_not_null(t);
  uint64_t s;
  cr_assert_eq(proc_offsets_begin(t, 10, &s), 0);
  cr_assert_eq(proc_offsets_committable(t), -1);
  cr_assert_eq(proc_offsets_add(t, s), 0);  /* one output in flight */
  cr_assert_eq(proc_offsets_done(t, s), 0); /* guard released: output still pending */
  cr_assert_eq(proc_offsets_committable(t), -1);
  cr_assert_eq(proc_offsets_done(t, s), 1); /* output acknowledged */
  cr_assert_eq(proc_offsets_committable(t), 11);
  cr_assert_eq(proc_offsets_count(t), 0);
  proc_offsets_destroy(t);
}

Test(proc_offsets, later_completion_waits_for_earlier) {
  proc_offsets *t = proc_offsets_create();
  uint64_t a, b, c;
  proc_offsets_begin(t, 5, &a);
  proc_offsets_begin(t, 7, &b); /* offsets need not be contiguous (compaction, markers) */
  proc_offsets_begin(t, 8, &c);
  proc_offsets_add(t, a);
  cr_assert_eq(proc_offsets_done(t, a), 0); /* a: guard off, one output pending */
  cr_assert_eq(proc_offsets_done(t, b), 0); /* b complete but behind a */
  cr_assert_eq(proc_offsets_done(t, c), 0);
  cr_assert_eq(proc_offsets_committable(t), -1);
  cr_assert_eq(proc_offsets_count(t), 3);
  cr_assert_eq(proc_offsets_done(t, a), 1); /* a done: all three pop */
  cr_assert_eq(proc_offsets_committable(t), 9);
  cr_assert_eq(proc_offsets_count(t), 0);
  proc_offsets_destroy(t);
}

Test(proc_offsets, stale_and_duplicate_reports_are_refused) {
  proc_offsets *t = proc_offsets_create();
  uint64_t a;
  proc_offsets_begin(t, 1, &a);
  cr_assert_eq(proc_offsets_done(t, a), 1);
  cr_assert_eq(proc_offsets_done(t, a), -1, "an entry completes once");
  cr_assert_eq(proc_offsets_add(t, a), -1);
  cr_assert_eq(proc_offsets_done(t, a + 100), -1, "unknown seq");
  cr_assert_eq(proc_offsets_committable(t), 2);
  proc_offsets_destroy(t);
}

Test(proc_offsets, offsets_must_increase) {
  proc_offsets *t = proc_offsets_create();
  uint64_t s;
  cr_assert_eq(proc_offsets_begin(t, 4, &s), 0);
  cr_assert_eq(proc_offsets_begin(t, 4, &s), -1);
  cr_assert_eq(proc_offsets_begin(t, 3, &s), -1);
  cr_assert_eq(proc_offsets_begin(t, -1, &s), -1);
  proc_offsets_destroy(t);
}

Test(proc_offsets, reset_forgets_and_old_seqs_stay_stale) {
  proc_offsets *t = proc_offsets_create();
  uint64_t old;
  proc_offsets_begin(t, 100, &old);
  proc_offsets_add(t, old);
  proc_offsets_reset(t);
  cr_assert_eq(proc_offsets_committable(t), -1);
  cr_assert_eq(proc_offsets_count(t), 0);
  uint64_t fresh;
  cr_assert_eq(proc_offsets_begin(t, 50, &fresh), 0, "a new assignment may start lower");
  cr_assert_neq(fresh, old);
  cr_assert_eq(proc_offsets_done(t, old), -1, "a report from before the reset matches nothing");
  cr_assert_eq(proc_offsets_committable(t), -1);
  cr_assert_eq(proc_offsets_done(t, fresh), 1);
  cr_assert_eq(proc_offsets_committable(t), 51);
  proc_offsets_destroy(t);
}

/* Many entries with random completion order: the committable offset is always exactly one past
 * the longest completed prefix, across ring growth and wrap-around. */
Test(proc_offsets, random_order_matches_model) {
  enum { N = 5000 };
  proc_offsets *t = proc_offsets_create();
  static uint64_t seq[N];
  static int pending[N];
  static int order[N * 3];
  size_t norder = 0;
  srand(42);
  int64_t base = 1000;
  for (int i = 0; i < N; i++) {
    cr_assert_eq(proc_offsets_begin(t, base + i * 2, &seq[i]), 0);
    int outs = rand() % 3;
    pending[i] = 1 + outs;
    for (int k = 0; k < outs; k++)
      proc_offsets_add(t, seq[i]);
    for (int k = 0; k < pending[i]; k++)
      order[norder++] = i;
  }
  for (size_t i = norder - 1; i > 0; i--) {
    size_t j = (size_t)rand() % (i + 1);
    int tmp = order[i];
    order[i] = order[j];
    order[j] = tmp;
  }
  int prefix = 0;
  for (size_t k = 0; k < norder; k++) {
    int i = order[k];
    cr_assert_geq(proc_offsets_done(t, seq[i]), 0);
    pending[i]--;
    while (prefix < N && pending[prefix] == 0)
      prefix++;
    int64_t want = prefix == 0 ? -1 : base + (prefix - 1) * 2 + 1;
    cr_assert_eq(proc_offsets_committable(t), want, "after %zu reports", k);
  }
  cr_assert_eq(proc_offsets_count(t), 0);
  proc_offsets_destroy(t);
}
