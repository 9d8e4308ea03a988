/* gw_doorq: entries come due in push order at their deadline, each once; a full ring drops its
 * stale entries before it grows, so it stays within four times the live entries however many
 * stale ones are pushed; the order survives compactions across the ring's wrap. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "gw_doorq.h"

#define KEYS 100000

/* Which keys are live, and with which tag (0: not live). */
static uint32_t live_tag[KEYS];
static size_t live_calls;

static bool is_live(void *arg, uint64_t key, uint32_t tag) {
  (void)arg;
  live_calls++;
  return key < KEYS && live_tag[key] == tag;
}

static void reset(void) {
  memset(live_tag, 0, sizeof live_tag);
  live_calls = 0;
}

TestSuite(gw_doorq, .init = reset);

Test(gw_doorq, entries_come_due_in_order_at_their_deadline) {
  gw_doorq *q = gw_doorq_new(is_live, NULL);
  cr_assert_not_null(q);
  uint64_t at, key;
  uint32_t tag;
  cr_assert_not(gw_doorq_next(q, &at));
  for (uint64_t k = 1; k <= 10; k++)
    cr_assert_eq(gw_doorq_push(q, k, (uint32_t)k * 7, 1000 + k * 10), 0);
  /* A deadline earlier than the last one pushed is clamped up: the ring stays in order. */
  cr_assert_eq(gw_doorq_push(q, 11, 77, 500), 0);
  cr_assert(gw_doorq_next(q, &at));
  cr_assert_eq(at, 1010);
  cr_assert_not(gw_doorq_pop_due(q, 1009, &key, &tag), "popped before its deadline");
  for (uint64_t k = 1; k <= 10; k++) {
    cr_assert(gw_doorq_pop_due(q, 1000 + k * 10, &key, &tag));
    cr_assert_eq(key, k);
    cr_assert_eq(tag, (uint32_t)k * 7);
    cr_assert_not(gw_doorq_pop_due(q, 1000 + k * 10 + 9, &key, &tag) && key != 11);
  }
  cr_assert_eq(gw_doorq_len(q), 0, "the clamped entry was due with the last one");
  cr_assert_eq(key, 11);
  cr_assert_eq(tag, 77);
  gw_doorq_free(q);
}

Test(gw_doorq, stale_entries_do_not_grow_the_ring) {
  gw_doorq *q = gw_doorq_new(is_live, NULL);
  cr_assert_not_null(q);
  /* 100 sockets stay pending (live), 99,900 upgrade or close right after their push. */
  for (uint64_t k = 0; k < KEYS; k++) {
    bool stays = k % 1000 == 0;
    live_tag[k] = 1;
    cr_assert_eq(gw_doorq_push(q, k, 1, 5000), 0);
    if (!stays)
      live_tag[k] = 0;
  }
  size_t live = KEYS / 1000;
  cr_assert_leq(gw_doorq_cap(q), 4 * live + 64, "ring of %zu slots for %zu live entries",
                gw_doorq_cap(q), live);
  cr_assert_leq(live_calls, 4 * (size_t)KEYS, "compactions checked %zu entries for %d pushes",
                live_calls, KEYS);
  /* What is left to come due: every live entry, in order, and few stale ones. */
  uint64_t key, prev = 0;
  uint32_t tag;
  size_t seen_live = 0, n = 0;
  while (gw_doorq_pop_due(q, 5000, &key, &tag)) {
    cr_assert(n == 0 || key > prev, "out of order: %llu after %llu", (unsigned long long)key,
              (unsigned long long)prev);
    prev = key;
    n++;
    seen_live += live_tag[key] == tag;
  }
  cr_assert_eq(seen_live, live);
  gw_doorq_free(q);
}

Test(gw_doorq, compaction_keeps_the_order_across_the_wrap) {
  gw_doorq *q = gw_doorq_new(is_live, NULL);
  cr_assert_not_null(q);
  uint64_t key, next_due = 0, k = 0;
  uint32_t tag;
  /* Push and pop so that the head moves round the ring; every third entry is stale. */
  for (int round = 0; round < 2000; round++) {
    for (int i = 0; i < 3; i++, k++) {
      live_tag[k] = k % 3 == 1 ? 0 : 2;
      cr_assert_eq(gw_doorq_push(q, k, 2, k), 0);
    }
    cr_assert(gw_doorq_pop_due(q, UINT64_MAX, &key, &tag));
    cr_assert_geq(key, next_due, "key %llu after %llu", (unsigned long long)key,
                  (unsigned long long)next_due);
    next_due = key + 1;
  }
  uint64_t prev = 0;
  while (gw_doorq_pop_due(q, UINT64_MAX, &key, &tag)) {
    cr_assert_gt(key, prev);
    prev = key;
  }
  cr_assert_eq(prev, k - 1);
  gw_doorq_free(q);
}
