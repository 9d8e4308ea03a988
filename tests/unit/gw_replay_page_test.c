/*
 * gw_replay_page: a replay read's reply is accepted only with the script's shape, and entries are
 * read back from it. Replies are built by hand: no server needed.
 */
#include <criterion/criterion.h>
#include <hiredis/hiredis.h>
#include <string.h>

#include "gw_replay_page.h"

static redisReply integer(long long v) {
  return (redisReply){.type = REDIS_REPLY_INTEGER, .integer = v};
}

static redisReply string(const char *s) {
  return (redisReply){.type = REDIS_REPLY_STRING, .str = (char *)s, .len = strlen(s)};
}

static redisReply array(redisReply **items, size_t n) {
  return (redisReply){.type = REDIS_REPLY_ARRAY, .element = items, .elements = n};
}

Test(gw_replay_page, position_only) {
  redisReply counter = integer(41), extra = integer(0);
  redisReply *items[] = {&counter, &extra};
  redisReply rep = array(items, 1);
  gw_replay_page page;
  cr_assert(gw__replay_page_parse(&rep, true, &page));
  cr_assert_eq(page.counter, 41);
  cr_assert_eq(page.count, 0);
  rep = array(items, 2);
  cr_assert_not(gw__replay_page_parse(&rep, true, &page), "a position is one element");
}

Test(gw_replay_page, entries) {
  redisReply counter = integer(9), more = integer(1);
  redisReply q1 = integer(8), b1 = integer(0), d1 = string("hi");
  redisReply q2 = integer(9), b2 = integer(1), d2 = string("\x01\x02");
  redisReply *items[] = {&counter, &more, &q1, &b1, &d1, &q2, &b2, &d2};
  redisReply rep = array(items, 8);
  gw_replay_page page;
  cr_assert(gw__replay_page_parse(&rep, false, &page));
  cr_assert_eq(page.counter, 9);
  cr_assert(page.more);
  cr_assert_eq(page.count, 2);
  gw_replay_entry e;
  gw_replay_page_entry(&page, 1, &e);
  cr_assert_eq(e.q, 9);
  cr_assert(e.binary);
  cr_assert_eq(e.len, 2);
  cr_assert_eq(memcmp(e.data, "\x01\x02", 2), 0);
}

Test(gw_replay_page, wrong_shapes) {
  redisReply counter = integer(9), more = integer(0), q = integer(0), b = integer(0),
             d = string("x"), bad = string("7");
  gw_replay_page page;
  redisReply not_array = integer(3);
  cr_assert_not(gw__replay_page_parse(&not_array, true, &page));
  redisReply *short_entry[] = {&counter, &more, &q, &b};
  redisReply rep = array(short_entry, 4);
  cr_assert_not(gw__replay_page_parse(&rep, false, &page), "an entry has three elements");
  redisReply *zero_q[] = {&counter, &more, &q, &b, &d};
  rep = array(zero_q, 5);
  cr_assert_not(gw__replay_page_parse(&rep, false, &page), "q starts at 1");
  redisReply *bad_counter[] = {&bad};
  rep = array(bad_counter, 1);
  cr_assert_not(gw__replay_page_parse(&rep, true, &page), "the counter is an integer");
}
