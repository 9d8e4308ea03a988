/*
 * The presence scripts of common/wsg_chkeys (the one reading of the presence op, handlers'
 * wsgate_presence() and wsgate-api) against a real redis-server: counts and items in both modes,
 * the cap and the scan budget saying "more", and DROP deleting a dead gateway's entries and count
 * only. Needs WSGATE_TEST_REDIS_PORT.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "wsg_chkeys.h"

typedef struct {
  redisContext *c;
  char p[256], pc[256];
} fixture;

static fixture setup(void) {
  itest_require_redis();
  fixture f = {.c = itest_redis_connect()};
  char *u = itest_unique("itest-pres");
  cr_assert_gt(wsg_key_channel(f.p, sizeof f.p, u, "room:x", 6, "p"), 0);
  cr_assert_gt(wsg_key_channel(f.pc, sizeof f.pc, u, "room:x", 6, "pc"), 0);
  free(u);
  return f;
}

static void finish(fixture *f) {
  freeReplyObject(redisCommand(f->c, "DEL %s %s", f->p, f->pc));
  redisFree(f->c);
}

/* n entries of user u<i % users> on gateway gw (conn ids from first), and gw's count. */
static void fill(fixture *f, const char *gw, int first, int n, int users) {
  for (int i = 0; i < n; i++)
    freeReplyObject(
        redisCommand(f->c, "HSET %s %d u%d|%s", f->p, first + i, (first + i) % users, gw));
  freeReplyObject(redisCommand(f->c, "HSET %s %s %d", f->pc, gw, n));
}

static redisReply *read_(fixture *f, int cap, int budget, const char *mode) {
  redisReply *r = redisCommand(f->c, "EVAL %s 2 %s %s %d %d %s", WSG_LUA_PRESENCE_READ, f->p, f->pc,
                               cap, budget, mode);
  cr_assert(r && r->type == REDIS_REPLY_ARRAY && r->elements >= 2, "EVAL: %s",
            r && r->type == REDIS_REPLY_ERROR ? r->str : "no array");
  return r;
}

/* Two gateways' counts come back exactly; "u" gives distinct values, "e" (conn, value) pairs. */
Test(wsg_chkeys, presence_read_counts_and_items) {
  fixture f = setup();
  fill(&f, "gw-a", 1, 6, 2); /* u1, u0 x3 each */
  fill(&f, "gw-b", 100, 1, 1);
  redisReply *r = read_(&f, 100, 4000, "u");
  cr_expect_eq(r->element[0]->integer, 0, "read to the end");
  cr_assert_eq(r->element[1]->integer, 2);
  long long total = 0;
  for (int g = 0; g < 2; g++)
    total += r->element[3 + 2 * g]->integer;
  cr_expect_eq(total, 7);
  cr_expect_eq(r->elements, 2 + 4 + 3, "u0|gw-a, u1|gw-a, u0|gw-b: distinct");
  freeReplyObject(r);

  r = read_(&f, 100, 4000, "e");
  cr_expect_eq(r->elements, 2 + 4 + 2 * 7, "every entry, with its conn id");
  size_t ulen, gwlen;
  const char *gw;
  for (size_t i = 6; i + 1 < r->elements; i += 2) {
    cr_expect(strspn(r->element[i]->str, "0123456789") == r->element[i]->len);
    cr_expect(
        wsg_presence_split(r->element[i + 1]->str, r->element[i + 1]->len, &ulen, &gw, &gwlen));
  }
  freeReplyObject(r);
  finish(&f);
}

/* The cap and the budget bound the work and the reply, and both say "more". */
Test(wsg_chkeys, presence_read_is_bounded) {
  fixture f = setup();
  fill(&f, "gw-a", 1, 50, 50);
  redisReply *r = read_(&f, 10, 4000, "e");
  cr_expect_eq(r->element[0]->integer, 1, "stopped at the cap");
  cr_expect_eq(r->elements, 2 + 2 + 2 * 10);
  cr_expect_eq(r->element[3]->integer, 50, "the count stays exact");
  freeReplyObject(r);
  r = read_(&f, 10, 4000, "u");
  cr_expect_eq(r->element[0]->integer, 1);
  cr_expect_eq(r->elements, 2 + 2 + 10);
  freeReplyObject(r);
  r = read_(&f, 50, 4000, "e");
  cr_expect_eq(r->element[0]->integer, 0, "exactly the cap, nothing left out");
  freeReplyObject(r);
  /* The budget: past its first HSCAN page (about 200 entries) of 1,000, a read stops. */
  fill(&f, "gw-b", 1000, 1000, 1000);
  r = read_(&f, 4000, 1, "e");
  cr_expect_eq(r->element[0]->integer, 1, "stopped at the budget");
  cr_expect_lt(r->elements, 2 + 4 + 2 * 500, "%zu items", (r->elements - 6) / 2);
  cr_expect_eq(r->element[3]->integer + r->element[5]->integer, 1050, "the counts stay exact");
  freeReplyObject(r);
  finish(&f);
}

/* DROP deletes the named gateways' entries and counts, nobody else's. */
Test(wsg_chkeys, presence_drop_takes_only_the_dead) {
  fixture f = setup();
  fill(&f, "gw-a", 1, 3, 3);
  fill(&f, "gw-dead", 10, 4, 2);
  freeReplyObject(redisCommand(f.c, "HSET %s 99 odd|user|gw-dead", f.p)); /* '|' in a user */
  redisReply *r =
      redisCommand(f.c, "EVAL %s 2 %s %s %s", WSG_LUA_PRESENCE_DROP, f.p, f.pc, "gw-dead");
  cr_assert(r && r->type == REDIS_REPLY_INTEGER, "%s", r ? r->str : "");
  cr_expect_eq(r->integer, 5);
  freeReplyObject(r);
  r = redisCommand(f.c, "HLEN %s", f.p);
  cr_expect_eq(r->integer, 3);
  freeReplyObject(r);
  r = redisCommand(f.c, "HKEYS %s", f.pc);
  cr_expect(r->elements == 1 && strcmp(r->element[0]->str, "gw-a") == 0);
  freeReplyObject(r);
  finish(&f);
}

/* A value splits at its last '|'; an empty user or gateway is not one. */
Test(wsg_chkeys, presence_split) {
  size_t ulen, gwlen;
  const char *gw;
  cr_assert(wsg_presence_split("a|b|gw-1", 8, &ulen, &gw, &gwlen));
  cr_expect(ulen == 3 && gwlen == 4 && memcmp(gw, "gw-1", 4) == 0);
  cr_expect_not(wsg_presence_split("|gw", 3, &ulen, &gw, &gwlen));
  cr_expect_not(wsg_presence_split("alice|", 6, &ulen, &gw, &gwlen));
  cr_expect_not(wsg_presence_split("alice", 5, &ulen, &gw, &gwlen));
  cr_expect_not(wsg_presence_split("", 0, &ulen, &gw, &gwlen));
}
