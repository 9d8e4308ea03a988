/*
 * The presence scripts of common/wsg_chkeys (the one reading of the presence op, handlers'
 * wsgate_presence() and wsgate-api) against a real redis-server: counts and items in both modes,
 * the cap and the scan budget saying "more", DROP deleting a dead member's hash and count only,
 * in a time that does not grow with the channel. Needs WSGATE_TEST_REDIS_PORT.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "wsg_chkeys.h"

#define GW_A    "gw-a#00000000000000a1"
#define GW_B    "gw-b#00000000000000b1"
#define GW_DEAD "gw-dead#000000000000dead"

typedef struct {
  redisContext *c;
  char p[256], pc[256];
  char members[4][320]; /* the members' hashes filled, deleted at the end */
  int nmembers;
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
  freeReplyObject(redisCommand(f->c, "DEL %s", f->pc));
  for (int i = 0; i < f->nmembers; i++)
    freeReplyObject(redisCommand(f->c, "DEL %s", f->members[i]));
  redisFree(f->c);
}

/* n entries of user u<i % users> in member m's hash (conn ids from first), and m's count. */
static void fill(fixture *f, const char *m, int first, int n, int users) {
  cr_assert_lt(f->nmembers, 4);
  char *k = f->members[f->nmembers++];
  snprintf(k, sizeof f->members[0], "%s:%s", f->p, m);
  for (int i = 0; i < n; i++)
    freeReplyObject(redisCommand(f->c, "HSET %s %d u%d", k, first + i, (first + i) % users));
  freeReplyObject(redisCommand(f->c, "HSET %s %s %d", f->pc, m, n));
}

static redisReply *read_(fixture *f, int cap, int budget, const char *mode) {
  redisReply *r = redisCommand(f->c, "EVAL %s 2 %s %s %d %d %s", WSG_LUA_PRESENCE_READ, f->p, f->pc,
                               cap, budget, mode);
  cr_assert(r && r->type == REDIS_REPLY_ARRAY && r->elements >= 2, "EVAL: %s",
            r && r->type == REDIS_REPLY_ERROR ? r->str : "no array");
  return r;
}

/* Two members' counts come back exactly; "u" gives distinct values, "e" (conn, value) pairs, each
 * value <user>|<member>. */
Test(wsg_chkeys, presence_read_counts_and_items) {
  fixture f = setup();
  fill(&f, GW_A, 1, 6, 2); /* u1, u0 x3 each */
  fill(&f, GW_B, 100, 1, 1);
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
  int on_b = 0;
  for (size_t i = 6; i + 1 < r->elements; i += 2) {
    cr_expect(strspn(r->element[i]->str, "0123456789") == r->element[i]->len);
    cr_assert(
        wsg_presence_split(r->element[i + 1]->str, r->element[i + 1]->len, &ulen, &gw, &gwlen));
    on_b += strcmp(gw, GW_B) == 0 && strcmp(r->element[i]->str, "100") == 0 && ulen == 2;
  }
  cr_expect_eq(on_b, 1, "conn 100 of u0 is named with its member");
  freeReplyObject(r);
  finish(&f);
}

/* The cap and the budget bound the work and the reply, and both say "more". */
Test(wsg_chkeys, presence_read_is_bounded) {
  fixture f = setup();
  fill(&f, GW_A, 1, 50, 50);
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
  fill(&f, GW_B, 1000, 1000, 1000);
  r = read_(&f, 4000, 1, "e");
  cr_expect_eq(r->element[0]->integer, 1, "stopped at the budget");
  cr_expect_lt(r->elements, 2 + 4 + 2 * 500, "%zu items", (r->elements - 6) / 2);
  cr_expect_eq(r->element[3]->integer + r->element[5]->integer, 1050, "the counts stay exact");
  freeReplyObject(r);
  finish(&f);
}

/* More members than a read returns (WSG_PRESENCE_GWS_MAX): 300 lives with no entries. A read
 * gives 256 distinct ones and says "more" (it once returned all, and every reader refused the
 * reply); the pick is random, so reads that drop what they were given reach every member. */
Test(wsg_chkeys, presence_read_caps_members) {
  fixture f = setup();
  for (int i = 0; i < 300; i++)
    redisAppendCommand(f.c, "HSET %s gw-%d#%016x 1", f.pc, i, i);
  for (int i = 0; i < 300; i++) {
    redisReply *x = NULL;
    cr_assert_eq(redisGetReply(f.c, (void **)&x), REDIS_OK);
    freeReplyObject(x);
  }
  int reads = 0;
  for (long left = 300; left > 0; reads++) {
    cr_assert_lt(reads, 3, "300 members: two reads drop them all");
    redisReply *r = read_(&f, 100, 4000, "u");
    long n = (long)r->element[1]->integer;
    cr_expect_eq(n, left > WSG_PRESENCE_GWS_MAX ? WSG_PRESENCE_GWS_MAX : left);
    cr_expect_eq(r->element[0]->integer, left > WSG_PRESENCE_GWS_MAX, "more: members left out");
    cr_assert_eq(r->elements, 2 + 2 * (size_t)n, "no entries, no items");
    for (long g = 0; g < n; g++) /* what a reader does with the dead: DEL the fields */
      freeReplyObject(redisCommand(f.c, "HDEL %s %s", f.pc, r->element[2 + 2 * g]->str));
    freeReplyObject(r);
    r = redisCommand(f.c, "HLEN %s", f.pc);
    cr_expect_eq(r->integer, left - n, "the members returned were distinct");
    left = (long)r->integer;
    freeReplyObject(r);
  }
  finish(&f);
}

/* DROP deletes the named members' hashes and counts, nobody else's. */
Test(wsg_chkeys, presence_drop_takes_only_the_dead) {
  fixture f = setup();
  fill(&f, GW_A, 1, 3, 3);
  fill(&f, GW_DEAD, 10, 4, 2);
  freeReplyObject(redisCommand(f.c, "HSET %s 99 odd|user", f.members[1])); /* '|' in a user */
  redisReply *r =
      redisCommand(f.c, "EVAL %s 2 %s %s %s", WSG_LUA_PRESENCE_DROP, f.p, f.pc, GW_DEAD);
  cr_assert(r && r->type == REDIS_REPLY_INTEGER, "%s", r ? r->str : "");
  cr_expect_eq(r->integer, 5);
  freeReplyObject(r);
  r = redisCommand(f.c, "EXISTS %s", f.members[1]);
  cr_expect_eq(r->integer, 0, "the dead member's hash is gone");
  freeReplyObject(r);
  r = redisCommand(f.c, "HLEN %s", f.members[0]);
  cr_expect_eq(r->integer, 3);
  freeReplyObject(r);
  r = redisCommand(f.c, "HKEYS %s", f.pc);
  cr_expect(r->elements == 1 && strcmp(r->element[0]->str, GW_A) == 0);
  freeReplyObject(r);
  finish(&f);
}

/* Dropping a dead member costs Redis the same whatever the channel holds: 50,000 entries of a
 * live member and one dead subscriber (the old whole-hash walk: 188 ms for 25,000 entries). */
Test(wsg_chkeys, presence_drop_is_bounded) {
  fixture f = setup();
  fill(&f, GW_A, 0, 0, 1);
  char *k = f.members[0];
  for (int b = 0; b < 50000; b += 1000) {
    redisAppendCommand(f.c, "EVAL %s 1 %s %d",
                       "for i = tonumber(ARGV[1]), tonumber(ARGV[1]) + 999 do "
                       "redis.call('HSET', KEYS[1], i, 'u' .. i) end",
                       k, b);
  }
  for (int b = 0; b < 50000; b += 1000) {
    redisReply *x = NULL;
    cr_assert_eq(redisGetReply(f.c, (void **)&x), REDIS_OK);
    freeReplyObject(x);
  }
  freeReplyObject(redisCommand(f.c, "HSET %s %s 50000", f.pc, GW_A));
  fill(&f, GW_DEAD, 1, 1, 1);
  uint64_t t0 = itest_now_ms();
  redisReply *r =
      redisCommand(f.c, "EVAL %s 2 %s %s %s", WSG_LUA_PRESENCE_DROP, f.p, f.pc, GW_DEAD);
  uint64_t ms = itest_now_ms() - t0;
  cr_assert(r && r->type == REDIS_REPLY_INTEGER && r->integer == 1);
  freeReplyObject(r);
  cr_expect_lt(ms, 50, "a drop took %llu ms", (unsigned long long)ms);
  r = redisCommand(f.c, "HLEN %s", k);
  cr_expect_eq(r->integer, 50000, "the live member untouched");
  freeReplyObject(r);
  /* And a member of 50,000 goes whole: UNLINK frees it off Redis' main thread. */
  t0 = itest_now_ms();
  r = redisCommand(f.c, "EVAL %s 2 %s %s %s", WSG_LUA_PRESENCE_DROP, f.p, f.pc, GW_A);
  ms = itest_now_ms() - t0;
  cr_assert(r && r->type == REDIS_REPLY_INTEGER && r->integer == 50000);
  freeReplyObject(r);
  cr_expect_lt(ms, 50, "dropping 50,000 entries took %llu ms", (unsigned long long)ms);
  finish(&f);
}

/* A member is <gw id>#<boot>: built only from a boot of WSG_GW_BOOT_LEN hex digits, split by the
 * boot's length whatever the id holds. */
Test(wsg_chkeys, presence_member) {
  char m[WSG_PRESENCE_MEMBER_MAX + 1];
  cr_assert_eq(wsg_presence_member(m, sizeof m, "gw#1", "0123456789abcdef"), 21);
  cr_expect_str_eq(m, "gw#1#0123456789abcdef");
  size_t gl;
  const char *boot;
  cr_assert(wsg_presence_member_split(m, strlen(m), &gl, &boot));
  cr_expect(gl == 4 && memcmp(boot, "0123456789abcdef", 16) == 0);
  cr_expect_lt(wsg_presence_member(m, sizeof m, "gw", "0123456789ABCDEF"), 0, "upper case");
  cr_expect_lt(wsg_presence_member(m, sizeof m, "gw", "0123"), 0, "short");
  cr_expect_lt(wsg_presence_member(m, sizeof m, "", "0123456789abcdef"), 0, "no id");
  cr_expect_lt(wsg_presence_member(m, 8, "gw", "0123456789abcdef"), 0, "does not fit");
  cr_expect_not(wsg_presence_member_split("gw-a", 4, &gl, &boot), "a bare id (old layout)");
  cr_expect_not(wsg_presence_member_split("#0123456789abcdef", 17, &gl, &boot), "no id");
  cr_expect_not(wsg_presence_member_split("gw-0123456789abcdef", 19, &gl, &boot), "no #");
  cr_expect_not(wsg_presence_member_split("gw#0123456789abcdeg", 19, &gl, &boot), "not hex");
  char k[256];
  cr_assert_gt(wsg_key_presence(k, sizeof k, "w:", "room:x", 6, "gw#0123456789abcdef"), 0);
  cr_expect_str_eq(k, "w:ch:{c:room:x}:p:gw#0123456789abcdef");
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
