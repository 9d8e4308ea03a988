/*
 * gw_chpresence: the presence op's script reply, tally (dead gateways left out, users distinct,
 * sorted and bounded) and answer frames as docs/PROTOCOL.md ("Presence") shows them.
 */
#include <criterion/criterion.h>
#include <hiredis/hiredis.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "gw_chpresence.h"
#include "wsg_chns.h"

/* A hand-built script reply: {more, ngws, gw, conns, ..., pairs...}. */
typedef struct {
  redisReply top, items[64];
  redisReply *ptrs[64];
} fake;

static void fake_int(fake *f, long long v) {
  redisReply *r = &f->items[f->top.elements];
  *r = (redisReply){.type = REDIS_REPLY_INTEGER, .integer = v};
  f->ptrs[f->top.elements++] = r;
}

static void fake_str(fake *f, const char *s) {
  redisReply *r = &f->items[f->top.elements];
  *r = (redisReply){.type = REDIS_REPLY_STRING, .str = (char *)s, .len = strlen(s)};
  f->ptrs[f->top.elements++] = r;
}

static void fake_init(fake *f, int more) {
  memset(f, 0, sizeof *f);
  f->top.type = REDIS_REPLY_ARRAY;
  f->top.element = f->ptrs;
  fake_int(f, more);
}

/* gw-a: alice twice (two connections), bob; gw-b (dead): carol; gw-c: alice. */
static gw_chpres_read *three_gateways(void) {
  static fake f;
  fake_init(&f, 0);
  fake_int(&f, 3);
  fake_str(&f, "gw-a");
  fake_int(&f, 3);
  fake_str(&f, "gw-b");
  fake_int(&f, 1);
  fake_str(&f, "gw-c");
  fake_int(&f, 1);
  fake_str(&f, "bob|gw-a");
  fake_str(&f, "alice|gw-a");
  fake_str(&f, "carol|gw-b");
  fake_str(&f, "alice|gw-c");
  gw_chpres_read *rd = gw_chpres_read_parse(&f.top);
  cr_assert_not_null(rd);
  cr_assert_eq(rd->ngws, 3);
  cr_assert_eq(rd->npairs, 4);
  rd->gw[1].dead = true;
  return rd;
}

static gw_chop presence_op(bool msgpack) {
  gw_chop op = {.kind = GW_CHOP_PRESENCE, .msgpack = msgpack, .has_id = true, .id = 7};
  strcpy(op.channel, "room:x");
  op.channel_len = 6;
  return op;
}

/* The three gateways tallied with `max` users, answered in JSON: must be `want`. */
static void expect_json_answer(uint32_t max, const char *want) {
  gw_chpres_read *rd = three_gateways();
  gw_chpres_result res;
  cr_assert_eq(gw_chpres_tally(rd, max, &res), 0);
  cr_expect_eq(res.connections, 4, "the count stays exact");
  gw_chop op = presence_op(false);
  uint8_t *out;
  size_t n = gw_chpres_answer(&op, &res, &out);
  cr_expect(n == strlen(want) && memcmp(out, want, n) == 0, "got %.*s", (int)n, out);
  free(out);
  gw_chpres_result_free(&res);
  gw_chpres_read_free(rd);
}

Test(gw_chpresence, tally_skips_dead_gateways_and_repeats) {
  gw_chpres_read *rd = three_gateways();
  gw_chpres_result res;
  cr_assert_eq(gw_chpres_tally(rd, 100, &res), 0);
  cr_expect_eq(res.connections, 4, "gw-a's 3 and gw-c's 1; gw-b is dead");
  cr_assert_eq(res.nusers, 2);
  cr_expect(res.user_lens[0] == 5 && memcmp(res.users[0], "alice", 5) == 0);
  cr_expect(res.user_lens[1] == 3 && memcmp(res.users[1], "bob", 3) == 0);
  cr_expect(!res.truncated);
  gw_chpres_result_free(&res);
  gw_chpres_read_free(rd);
}

Test(gw_chpresence, json_answer_bytes) {
  expect_json_answer(100, "{\"wsgate\":\"presence\",\"id\":7,\"channel\":\"room:x\","
                          "\"connections\":4,\"users\":[\"alice\",\"bob\"]}");
}

Test(gw_chpresence, truncated_past_max_users) {
  expect_json_answer(1, "{\"wsgate\":\"presence\",\"id\":7,\"channel\":\"room:x\","
                        "\"connections\":4,\"users\":[\"alice\"],\"truncated\":true}");
}

Test(gw_chpresence, script_cap_reported_as_truncated) {
  fake f;
  fake_init(&f, 1); /* the script left pairs out */
  fake_int(&f, 1);
  fake_str(&f, "gw-a");
  fake_int(&f, 9);
  fake_str(&f, "alice|gw-a");
  gw_chpres_read *rd = gw_chpres_read_parse(&f.top);
  cr_assert_not_null(rd);
  gw_chpres_result res;
  cr_assert_eq(gw_chpres_tally(rd, 100, &res), 0);
  cr_expect(res.truncated && res.nusers == 1 && res.connections == 9);
  gw_chpres_result_free(&res);
  gw_chpres_read_free(rd);
}

Test(gw_chpresence, msgpack_answer_same_keys) {
  gw_chpres_read *rd = three_gateways();
  gw_chpres_result res;
  cr_assert_eq(gw_chpres_tally(rd, 100, &res), 0);
  gw_chop op = presence_op(true);
  uint8_t *out;
  size_t n = gw_chpres_answer(&op, &res, &out);
  cr_assert_gt(n, 0);
  msgpack_unpacked u;
  msgpack_unpacked_init(&u);
  cr_assert_eq(msgpack_unpack_next(&u, (const char *)out, n, NULL), MSGPACK_UNPACK_SUCCESS);
  cr_assert_eq(u.data.type, MSGPACK_OBJECT_MAP);
  cr_assert_eq(u.data.via.map.size, 5);
  const char *keys[] = {"wsgate", "id", "channel", "connections", "users"};
  for (int i = 0; i < 5; i++) {
    const msgpack_object *k = &u.data.via.map.ptr[i].key;
    cr_expect(k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(keys[i]) &&
              memcmp(k->via.str.ptr, keys[i], k->via.str.size) == 0);
  }
  cr_expect_eq(u.data.via.map.ptr[3].val.via.u64, 4);
  const msgpack_object *users = &u.data.via.map.ptr[4].val;
  cr_assert_eq(users->type, MSGPACK_OBJECT_ARRAY);
  cr_expect_eq(users->via.array.size, 2);
  msgpack_unpacked_destroy(&u);
  free(out);
  gw_chpres_result_free(&res);
  gw_chpres_read_free(rd);
}

Test(gw_chpresence, bad_replies_refused) {
  fake f;
  fake_init(&f, 0);
  cr_expect_null(gw_chpres_read_parse(&f.top), "no gateway count");
  fake_int(&f, 2);
  fake_str(&f, "gw-a");
  fake_int(&f, 1);
  cr_expect_null(gw_chpres_read_parse(&f.top), "two gateways announced, one given");
  fake_init(&f, 0);
  fake_int(&f, WSG_PRESENCE_GWS_MAX + 1);
  cr_expect_null(gw_chpres_read_parse(&f.top), "too many gateways");
  cr_expect_null(gw_chpres_read_parse(NULL));
  redisReply err = {.type = REDIS_REPLY_ERROR, .str = "NOSCRIPT", .len = 8};
  cr_expect_null(gw_chpres_read_parse(&err));
}

Test(gw_chpresence, client_presence_needs_presence) {
  wsg_chns_opts o = {0};
  char err[128] = "";
  cr_expect_eq(wsg_chns_parse_opts("client_presence=true", &o, err, sizeof err), -1);
  cr_expect(strstr(err, "needs presence"), "%s", err);
  o = (wsg_chns_opts){0};
  cr_expect_eq(wsg_chns_parse_opts("presence=true,client_presence=true", &o, err, sizeof err), 0,
               "%s", err);
  cr_expect(o.presence && o.client_presence && !o.join_leave && !o.client_publish);
}
