/*
 * Unit tests for gw_sendq: message sharing and refcounts, queue order, hard and soft limits with
 * injected time. A release hook counts frees so "freed exactly once" is asserted, not assumed
 * (the sanitizer build also catches double frees and leaks).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "gw_sendq.h"

static int freed;
static void count_free(void *arg, const gw_msg *m) {
  (void)m;
  (*(int *)arg)++;
}

static gw_msg *msg(const char *s) {
  gw_msg *m = gw_msg_create(s, strlen(s), false);
  cr_assert_not_null(m);
  gw_msg_set_release_hook(m, count_free, &freed);
  return m;
}

static void init(void) {
  freed = 0;
}

static const gw_sendq_limits NOLIMIT = {0, 0, 0};

Test(gw_sendq, message_basics, .init = init) {
  gw_msg *m = gw_msg_create("hello", 5, true);
  cr_assert_not_null(m);
  cr_assert_eq(gw_msg_len(m), 5);
  cr_assert(gw_msg_binary(m));
  cr_assert_eq(memcmp(gw_msg_payload(m), "hello", 5), 0);
  /* The headroom in front of the payload is writable scratch (lws writes its header there). */
  memset(gw_msg_payload(m) - GW_MSG_HEADROOM, 0xAB, GW_MSG_HEADROOM);
  cr_assert_eq(memcmp(gw_msg_payload(m), "hello", 5), 0);
  cr_assert_eq(gw_msg_refcount(m), 1);
  gw_msg_unref(m);
  gw_msg_unref(NULL);

  gw_msg *e = gw_msg_create(NULL, 0, false);
  cr_assert_not_null(e);
  cr_assert_eq(gw_msg_len(e), 0);
  gw_msg_unref(e);
  cr_assert_null(gw_msg_create("x", SIZE_MAX, false));

  /* NULL payload: filled in place by the creator. */
  gw_msg *f = gw_msg_create(NULL, 3, false);
  memcpy(gw_msg_payload(f), "abc", 3);
  cr_assert_eq(memcmp(gw_msg_payload(f), "abc", 3), 0);
  gw_msg_unref(f);
}

Test(gw_sendq, fifo_order, .init = init) {
  gw_sendq q;
  gw_sendq_init(&q);
  cr_assert(gw_sendq_empty(&q));
  cr_assert_null(gw_sendq_peek(&q));
  gw_sendq_pop(&q); /* no-op when empty */
  gw_msg *m[5];
  for (int i = 0; i < 5; i++) {
    char s[8];
    snprintf(s, sizeof(s), "m%d", i);
    m[i] = msg(s);
    cr_assert_eq(gw_sendq_push(&q, m[i], &NOLIMIT, 0), GW_SENDQ_OK);
    cr_assert_eq(gw_msg_refcount(m[i]), 2);
  }
  cr_assert_eq(gw_sendq_bytes(&q), 5 * (2 + GW_SENDQ_MSG_OVERHEAD));
  for (int i = 0; i < 5; i++) {
    gw_msg_unref(m[i]); /* the queue keeps the message alive */
  }
  cr_assert_eq(freed, 0);
  for (int i = 0; i < 5; i++) {
    gw_msg *p = gw_sendq_peek(&q);
    cr_assert_eq(p, m[i], "message %d out of order", i);
    cr_assert_eq(gw_sendq_peek(&q), p, "peek does not consume");
    gw_sendq_pop(&q);
    cr_assert_eq(freed, i + 1);
  }
  cr_assert(gw_sendq_empty(&q));
  cr_assert_eq(gw_sendq_bytes(&q), 0);

  /* Interleaved push and pop keep the order across the wrap of the circular list. */
  for (int round = 0; round < 50; round++) {
    gw_msg *a = msg("a"), *b = msg("b");
    cr_assert_eq(gw_sendq_push(&q, a, &NOLIMIT, 0), 0);
    cr_assert_eq(gw_sendq_push(&q, b, &NOLIMIT, 0), 0);
    gw_msg_unref(a);
    gw_msg_unref(b);
    cr_assert_eq(gw_sendq_peek(&q), a);
    gw_sendq_pop(&q);
    cr_assert_eq(gw_sendq_peek(&q), b);
    gw_sendq_pop(&q);
  }
  cr_assert_eq(freed, 5 + 100);
}

Test(gw_sendq, tags_travel_with_their_entry, .init = init) {
  gw_sendq a, b;
  gw_sendq_init(&a);
  gw_sendq_init(&b);
  cr_assert_eq(gw_sendq_peek_tag(&a), 0, "an empty queue has no tag");
  gw_msg *m = msg("shared");
  /* One message, a different tag in each queue (a q per recipient). */
  cr_assert_eq(gw_sendq_push_tagged(&a, m, 1795602833455812, &NOLIMIT, 0), GW_SENDQ_OK);
  cr_assert_eq(gw_sendq_push_tagged(&b, m, 42, &NOLIMIT, 0), GW_SENDQ_OK);
  cr_assert_eq(gw_sendq_push(&a, m, &NOLIMIT, 0), GW_SENDQ_OK);
  gw_msg_unref(m);
  cr_assert_eq(gw_sendq_peek_tag(&a), 1795602833455812);
  cr_assert_eq(gw_sendq_peek_tag(&b), 42);
  gw_sendq_pop(&a);
  cr_assert_eq(gw_sendq_peek(&a), m);
  cr_assert_eq(gw_sendq_peek_tag(&a), 0, "gw_sendq_push stores tag 0");
  gw_sendq_clear(&a);
  gw_sendq_clear(&b);
  cr_assert_eq(freed, 1);
}

/* The coalesced write (gw_outbound) lists the oldest messages without consuming them. */
Test(gw_sendq, peek_n_lists_the_oldest_in_order, .init = init) {
  gw_sendq q;
  gw_sendq_init(&q);
  gw_sendq_item items[8];
  cr_assert_eq(gw_sendq_peek_n(&q, items, 8), 0);
  gw_msg *m[4];
  for (int i = 0; i < 4; i++) {
    m[i] = msg("x");
    cr_assert_eq(gw_sendq_push_tagged(&q, m[i], (uint64_t)(10 + i), &NOLIMIT, 0), GW_SENDQ_OK);
    gw_msg_unref(m[i]);
  }
  cr_assert_eq(gw_sendq_peek_n(&q, items, 0), 0);
  cr_assert_eq(gw_sendq_peek_n(&q, items, 3), 3, "stops at max");
  cr_assert_eq(gw_sendq_peek_n(&q, items, 8), 4, "stops at the tail");
  for (int i = 0; i < 4; i++) {
    cr_assert_eq(items[i].msg, m[i], "message %d out of order", i);
    cr_assert_eq(items[i].tag, (uint64_t)(10 + i));
  }
  cr_assert_eq(freed, 0, "peek_n takes no reference and drops none");
  gw_sendq_pop(&q);
  cr_assert_eq(gw_sendq_peek_n(&q, items, 8), 3);
  cr_assert_eq(items[0].msg, m[1]);
  gw_sendq_clear(&q);
  cr_assert_eq(freed, 4);
}

Test(gw_sendq, zeroed_queue_is_valid, .init = init) {
  gw_sendq q;
  memset(&q, 0, sizeof(q));
  gw_msg *m = msg("x");
  cr_assert_eq(gw_sendq_push(&q, m, &NOLIMIT, 0), 0);
  gw_msg_unref(m);
  gw_sendq_clear(&q);
  cr_assert_eq(freed, 1);
  cr_assert_leq(sizeof(gw_sendq), 24, "an idle connection's queue stays small");
}

Test(gw_sendq, fan_out_shares_one_message, .init = init) {
  enum { N = 64 };
  gw_sendq qs[N];
  gw_msg *m = msg("broadcast");
  for (int i = 0; i < N; i++) {
    gw_sendq_init(&qs[i]);
    cr_assert_eq(gw_sendq_push(&qs[i], m, &NOLIMIT, 0), GW_SENDQ_OK);
  }
  cr_assert_eq(gw_msg_refcount(m), N + 1);
  gw_msg_unref(m); /* the producer's reference */
  cr_assert_eq(freed, 0);
  /* Queues drain in any order; by pop and by clear. */
  for (int i = N - 1; i >= 0; i -= 2) {
    cr_assert_eq(gw_sendq_peek(&qs[i]), m);
    gw_sendq_pop(&qs[i]);
  }
  cr_assert_eq(freed, 0);
  cr_assert_eq(gw_msg_refcount(m), N / 2);
  for (int i = 0; i < N; i += 2) {
    cr_assert_eq(freed, 0, "freed while queue %d still holds it", i);
    gw_sendq_clear(&qs[i]);
  }
  cr_assert_eq(freed, 1, "freed exactly once");
}

Test(gw_sendq, hard_limit, .init = init) {
  gw_sendq q;
  gw_sendq_init(&q);
  const uint64_t per = 100 + GW_SENDQ_MSG_OVERHEAD;
  gw_sendq_limits lim = {.hard_bytes = 3 * per};
  char payload[100];
  memset(payload, 'x', sizeof(payload));
  gw_msg *m = gw_msg_create(payload, sizeof(payload), false);
  gw_msg_set_release_hook(m, count_free, &freed);
  for (int i = 0; i < 3; i++)
    cr_assert_eq(gw_sendq_push(&q, m, &lim, 0), GW_SENDQ_OK);
  cr_assert_eq(gw_sendq_bytes(&q), 3 * per);
  cr_assert_eq(gw_sendq_push(&q, m, &lim, 0), GW_SENDQ_OVER_HARD);
  cr_assert_eq(gw_msg_refcount(m), 4, "a refused push takes no reference");
  cr_assert_eq(gw_sendq_bytes(&q), 3 * per);
  gw_sendq_pop(&q);
  cr_assert_eq(gw_sendq_push(&q, m, &lim, 0), GW_SENDQ_OK, "room again after a pop");

  /* A message bigger than the hard limit is refused even on an empty queue. */
  gw_sendq e;
  gw_sendq_init(&e);
  gw_sendq_limits tiny = {.hard_bytes = GW_SENDQ_MSG_OVERHEAD + 99};
  cr_assert_eq(gw_sendq_push(&e, m, &tiny, 0), GW_SENDQ_OVER_HARD);
  cr_assert(gw_sendq_empty(&e));

  /* Empty messages are accounted too: a flood of them hits the limit. */
  gw_sendq_limits small = {.hard_bytes = 10 * GW_SENDQ_MSG_OVERHEAD};
  gw_msg *z = msg("");
  int pushed = 0;
  while (gw_sendq_push(&e, z, &small, 0) == GW_SENDQ_OK)
    cr_assert_lt(++pushed, 1000);
  cr_assert_eq(pushed, 10);
  gw_msg_unref(z);
  gw_sendq_clear(&e);

  gw_msg_unref(m);
  gw_sendq_clear(&q);
  cr_assert_eq(freed, 2);
}

Test(gw_sendq, soft_limit_over_time, .init = init) {
  gw_sendq q;
  gw_sendq_init(&q);
  const uint64_t per = 10 + GW_SENDQ_MSG_OVERHEAD;
  gw_sendq_limits lim = {.hard_bytes = 100 * per, .soft_bytes = 2 * per, .soft_ms = 1000};
  gw_msg *m = gw_msg_create("0123456789", 10, false);
  const uint64_t t0 = 5000;
  cr_assert_eq(gw_sendq_push(&q, m, &lim, t0), GW_SENDQ_OK);
  cr_assert_eq(gw_sendq_push(&q, m, &lim, t0), GW_SENDQ_OK);
  cr_assert_eq(gw_sendq_check(&q, &lim, t0 + 100000), GW_SENDQ_OK, "at the soft limit, not over");
  /* Over the soft limit from t0 + 10: tolerated for 1000 ms. */
  cr_assert_eq(gw_sendq_push(&q, m, &lim, t0 + 10), GW_SENDQ_OK);
  cr_assert_eq(gw_sendq_push(&q, m, &lim, t0 + 500), GW_SENDQ_OK);
  cr_assert_eq(gw_sendq_check(&q, &lim, t0 + 1009), GW_SENDQ_OK);
  cr_assert_eq(gw_sendq_check(&q, &lim, t0 + 1010), GW_SENDQ_OVER_SOFT);
  cr_assert_eq(gw_sendq_push(&q, m, &lim, t0 + 1010), GW_SENDQ_OVER_SOFT);
  cr_assert_eq(gw_msg_refcount(m), 5, "refused push takes no reference");

  /* Draining under the limit ends the period; a new one starts at the next crossing. */
  gw_sendq_pop(&q);
  gw_sendq_pop(&q);
  cr_assert_eq(gw_sendq_check(&q, &lim, t0 + 5000), GW_SENDQ_OK);
  cr_assert_eq(gw_sendq_push(&q, m, &lim, t0 + 5000), GW_SENDQ_OK, "crossing again restarts");
  cr_assert_eq(gw_sendq_check(&q, &lim, t0 + 5999), GW_SENDQ_OK);
  cr_assert_eq(gw_sendq_check(&q, &lim, t0 + 6000), GW_SENDQ_OVER_SOFT);

  /* soft_ms 0: over the soft limit is refused at once. */
  gw_sendq_clear(&q);
  gw_sendq_limits now = {.soft_bytes = per, .soft_ms = 0};
  cr_assert_eq(gw_sendq_push(&q, m, &now, 0), GW_SENDQ_OK);
  cr_assert_eq(gw_sendq_push(&q, m, &now, 0), GW_SENDQ_OVER_SOFT);

  /* The soft period survives now_ms == 0 (stored + 1 internally). */
  gw_sendq_clear(&q);
  gw_sendq_limits l2 = {.soft_bytes = per, .soft_ms = 10};
  cr_assert_eq(gw_sendq_push(&q, m, &l2, 0), GW_SENDQ_OK);
  cr_assert_eq(gw_sendq_push(&q, m, &l2, 0), GW_SENDQ_OK);
  cr_assert_eq(gw_sendq_check(&q, &l2, 9), GW_SENDQ_OK);
  cr_assert_eq(gw_sendq_check(&q, &l2, 10), GW_SENDQ_OVER_SOFT);

  gw_sendq_clear(&q);
  cr_assert_eq(gw_msg_refcount(m), 1);
  gw_msg_unref(m);
}

Test(gw_sendq, clear_frees_everything, .init = init) {
  gw_sendq q;
  gw_sendq_init(&q);
  for (int i = 0; i < 100; i++) {
    gw_msg *m = msg("payload");
    cr_assert_eq(gw_sendq_push(&q, m, &NOLIMIT, 0), 0);
    gw_msg_unref(m);
  }
  cr_assert_eq(freed, 0);
  gw_sendq_clear(&q);
  cr_assert_eq(freed, 100);
  cr_assert(gw_sendq_empty(&q));
  cr_assert_eq(gw_sendq_bytes(&q), 0);
  cr_assert_eq(q.soft_over_at, 0);
  gw_sendq_clear(&q); /* idempotent */
}

Test(gw_sendq, error_strings) {
#define CHECK(name, value, msg)                                                                    \
  cr_assert_str_eq(gw_sendq_strerror(value), msg);                                                 \
  cr_assert_str_eq(gw_sendq_err_name(value), "GW_SENDQ_" #name);
  GW_SENDQ_ERRNO_MAP(CHECK)
#undef CHECK
  cr_assert_str_eq(gw_sendq_err_name(42), "GW_SENDQ_UNKNOWN");
}
