/* Unit tests of gw_conns: the connection map against a reference under random inserts and
 * deletions (backward-shift deletion keeps every key reachable), iteration, the user map, the
 * SipHash reference vector and the deadline heap's order. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_conns.h"

#define N 5000

static uint64_t rng_state = 88172645463325252ULL;
static uint64_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

Test(gw_conns, conn_map_matches_a_reference) {
  gw_conn_map m;
  gw_conn_map_init(&m);
  static uint64_t keys[N];
  static bool live[N];
  /* Ids like the gateway's: one prefix, a counter; plus random ones. */
  for (int i = 0; i < N; i++)
    keys[i] = (i % 2) ? (0xabcdef01ULL << 32 | (uint64_t)(i + 1)) : (rnd() | 1);
  for (int round = 0; round < 20 * N; round++) {
    int i = (int)(rnd() % N);
    if (live[i]) {
      cr_assert_eq(gw_conn_map_del(&m, keys[i]), &keys[i]);
      live[i] = false;
    } else {
      cr_assert_eq(gw_conn_map_put(&m, keys[i], &keys[i]), 0);
      live[i] = true;
    }
    if (round % 997 == 0) {
      size_t count = 0;
      for (int j = 0; j < N; j++) {
        void *v = gw_conn_map_get(&m, keys[j]);
        cr_assert_eq(v, live[j] ? &keys[j] : NULL, "key %d (%s)", j, live[j] ? "live" : "gone");
        count += live[j];
      }
      cr_assert_eq(m.count, count);
    }
  }
  size_t pos = 0, seen = 0;
  uint64_t k;
  void *v;
  while (gw_conn_map_next(&m, &pos, &k, &v)) {
    cr_assert_eq(*(uint64_t *)v, k);
    seen++;
  }
  cr_assert_eq(seen, m.count);
  cr_assert_null(gw_conn_map_get(&m, 0));
  cr_assert_eq(gw_conn_map_put(&m, 0, &seen), -1, "key 0 marks empty slots");
  gw_conn_map_finish(&m);
  cr_assert_null(gw_conn_map_get(&m, keys[1]));
}

Test(gw_conns, conn_map_put_replaces) {
  gw_conn_map m;
  gw_conn_map_init(&m);
  int a, b;
  cr_assert_eq(gw_conn_map_put(&m, 7, &a), 0);
  cr_assert_eq(gw_conn_map_put(&m, 7, &b), 0);
  cr_assert_eq(m.count, 1);
  cr_assert_eq(gw_conn_map_get(&m, 7), &b);
  cr_assert_null(gw_conn_map_del(&m, 8));
  gw_conn_map_finish(&m);
}

Test(gw_conns, user_map) {
  gw_user_map m;
  cr_assert_eq(gw_user_map_init(&m), 0);
  char id[32];
  for (int i = 0; i < 1000; i++) {
    int n = snprintf(id, sizeof id, "user-%d", i);
    gw_user *u = gw_user_map_intern(&m, id, (size_t)n);
    cr_assert(u);
    cr_assert_eq(u->len, (uint32_t)n);
    cr_assert_str_eq(u->id, id);
    u->nconns = (uint32_t)i;
    cr_assert_eq(gw_user_map_intern(&m, id, (size_t)n), u, "interning twice gives one entry");
  }
  cr_assert_eq(m.count, 1000);
  /* Ids are bytes, not C strings. */
  gw_user *z = gw_user_map_intern(&m, "a\0b", 3);
  cr_assert(z && z->len == 3);
  cr_assert_neq(gw_user_map_get(&m, "a", 1), z);
  for (int i = 0; i < 1000; i += 2) {
    int n = snprintf(id, sizeof id, "user-%d", i);
    gw_user_map_remove(&m, gw_user_map_get(&m, id, (size_t)n));
  }
  for (int i = 0; i < 1000; i++) {
    int n = snprintf(id, sizeof id, "user-%d", i);
    gw_user *u = gw_user_map_get(&m, id, (size_t)n);
    if (i % 2)
      cr_assert(u && u->nconns == (uint32_t)i, "user-%d lost", i);
    else
      cr_assert_null(u, "user-%d not removed", i);
  }
  gw_user_map_finish(&m);
}

Test(gw_conns, siphash_reference_vector) {
  /* SipHash-2-4, key 00..0f, message 00..0e: the paper's Appendix A. */
  uint8_t msg[15];
  for (int i = 0; i < 15; i++)
    msg[i] = (uint8_t)i;
  uint64_t k0 = 0x0706050403020100ULL, k1 = 0x0f0e0d0c0b0a0908ULL;
  cr_assert_eq(gw_siphash(k0, k1, msg, sizeof msg), 0xa129ca6149be45e5ULL);
}

Test(gw_conns, deadline_heap_orders_by_time) {
  gw_deadline_heap h = {0};
  gw_deadline d;
  cr_assert(!gw_deadline_peek(&h, &d));
  gw_deadline_pop(&h); /* no-op when empty */
  for (uint64_t i = 0; i < 1000; i++)
    cr_assert_eq(gw_deadline_push(&h, rnd() % 100000, i), 0);
  uint64_t last = 0;
  for (int i = 0; i < 1000; i++) {
    cr_assert(gw_deadline_peek(&h, &d));
    cr_assert_geq(d.at, last);
    last = d.at;
    gw_deadline_pop(&h);
  }
  cr_assert(!gw_deadline_peek(&h, &d));
  gw_deadline_heap_finish(&h);
}
