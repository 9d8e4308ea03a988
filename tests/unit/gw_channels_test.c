/*
 * Unit tests of gw_chops (the op marker, parsing both formats, answers) and gw_channels (the
 * local subscription index: limits, O(1) removal, cleanup on disconnect, the hash table under
 * churn).
 */
#include <criterion/criterion.h>
#include <msgpack.h>
#include <stdio.h>
#include <string.h>

#include "gw_channels.h"
#include "gw_chops.h"

#define S(lit) (const uint8_t *)(lit), sizeof(lit) - 1

/* ---- the marker ------------------------------------------------------------------------------ */

Test(chops, marker_is_exact) {
  cr_expect(gw_chops_marked(S("{\"wsgate\":\"subscribe\"}"), false));
  cr_expect(!gw_chops_marked(S("{\"wsgate\":\"subscribe\"}"), true)); /* a binary frame */
  cr_expect(!gw_chops_marked(S("{ \"wsgate\":\"x\"}"), false));       /* a space: not an op */
  cr_expect(!gw_chops_marked(S("{\"type\":\"say\",\"wsgate\":\"x\"}"), false));
  cr_expect(!gw_chops_marked(S("{\"wsgate\""), false));
  cr_expect(!gw_chops_marked(S("hello"), false));
  cr_expect(!gw_chops_marked((const uint8_t *)"", 0, false));
  cr_expect(gw_chops_marked(S("\x82\xa6wsgate\xa9subscribe"), true));
  cr_expect(!gw_chops_marked(S("\x80\xa6wsgate"), true)); /* an empty map cannot hold the key */
  cr_expect(!gw_chops_marked(S("\x82\xa6wsgatf"), true));
  cr_expect(!gw_chops_marked(S("\x92\xa6wsgate"), true));
}

/* ---- parsing --------------------------------------------------------------------------------- */

static int parse_json(const char *s, gw_chop *op) {
  return gw_chops_parse((const uint8_t *)s, strlen(s), false, op);
}

Test(chops, json_subscribe) {
  gw_chop op;
  cr_assert_eq(parse_json("{\"wsgate\":\"subscribe\",\"id\":7,\"channel\":\"news:eu\"}", &op),
               GW_CHOP_OK);
  cr_expect_eq(op.kind, GW_CHOP_SUBSCRIBE);
  cr_expect(op.has_id);
  cr_expect_eq(op.id, 7);
  cr_expect_str_eq(op.channel, "news:eu");
  cr_expect_eq(op.channel_len, 7);
  cr_expect(!op.has_since);
  cr_assert_eq(parse_json("{\"wsgate\":\"subscribe\",\"channel\":\"a\",\"since\":{\"offset\":41,"
                          "\"epoch\":1795602833455812}}",
                          &op),
               GW_CHOP_OK);
  cr_expect(!op.has_id);
  cr_expect(op.has_since);
  cr_expect_eq(op.since_offset, 41);
  cr_expect_eq(op.since_epoch, 1795602833455812ull);
  cr_assert_eq(parse_json("{\"wsgate\":\"unsubscribe\",\"channel\":\"a\",\"extra\":[1]}", &op),
               GW_CHOP_OK);
  cr_expect_eq(op.kind, GW_CHOP_UNSUBSCRIBE);
}

Test(chops, json_errors) {
  static const struct {
    const char *in;
    int err;
  } cases[] = {
      {"{\"wsgate\":\"subscribe\"", GW_CHOP_BAD_REQUEST}, /* not JSON */
      {"{\"wsgate\":\"subscribe\",\"channel\":\"a\",\"channel\":\"b\"}", GW_CHOP_BAD_REQUEST},
      {"{\"wsgate\":\"subscribe\"}", GW_CHOP_BAD_REQUEST},
      {"{\"wsgate\":\"subscribe\",\"channel\":5}", GW_CHOP_BAD_REQUEST},
      {"{\"wsgate\":\"subscribe\",\"channel\":\"a\",\"id\":-1}", GW_CHOP_BAD_REQUEST},
      {"{\"wsgate\":\"subscribe\",\"channel\":\"a\",\"id\":9007199254740992}", GW_CHOP_BAD_REQUEST},
      {"{\"wsgate\":\"subscribe\",\"channel\":\"a\",\"since\":{\"offset\":1}}",
       GW_CHOP_BAD_REQUEST},
      {"{\"wsgate\":\"dance\",\"channel\":\"a\"}", GW_CHOP_UNKNOWN_OP},
      {"{\"wsgate\":\"subscribe\",\"channel\":\"\"}", GW_CHOP_BAD_CHANNEL},
      {"{\"wsgate\":\"subscribe\",\"channel\":\"a\\u0007b\"}", GW_CHOP_BAD_CHANNEL},
      {"{\"wsgate\":\"subscribe\",\"channel\":\"a\\u0000b\"}", GW_CHOP_BAD_REQUEST}, /* jansson */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    gw_chop op;
    cr_expect_eq(parse_json(cases[i].in, &op), cases[i].err, "%s", cases[i].in);
  }
  char big[512];
  snprintf(big, sizeof big, "{\"wsgate\":\"subscribe\",\"channel\":\"%0201d\"}", 0);
  gw_chop op;
  cr_expect_eq(parse_json(big, &op), GW_CHOP_BAD_CHANNEL);
  snprintf(big, sizeof big, "{\"wsgate\":\"subscribe\",\"channel\":\"%0200d\"}", 0);
  cr_expect_eq(parse_json(big, &op), GW_CHOP_OK);
}

/* A MessagePack op {wsgate: op, id: id, channel: ch[, since: {offset, epoch}]}. */
static size_t mp_op(const char *opname, uint64_t id, const char *ch, bool since, char *out) {
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, since ? 4 : 3);
  msgpack_pack_str_with_body(&pk, "wsgate", 6);
  msgpack_pack_str_with_body(&pk, opname, strlen(opname));
  msgpack_pack_str_with_body(&pk, "id", 2);
  msgpack_pack_uint64(&pk, id);
  msgpack_pack_str_with_body(&pk, "channel", 7);
  msgpack_pack_str_with_body(&pk, ch, strlen(ch));
  if (since) {
    msgpack_pack_str_with_body(&pk, "since", 5);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, "offset", 6);
    msgpack_pack_uint64(&pk, 3);
    msgpack_pack_str_with_body(&pk, "epoch", 5);
    msgpack_pack_uint64(&pk, 9);
  }
  memcpy(out, sb.data, sb.size);
  size_t n = sb.size;
  msgpack_sbuffer_destroy(&sb);
  return n;
}

Test(chops, msgpack_ops_and_answers) {
  char in[512];
  gw_chop op;
  size_t n = mp_op("subscribe", 12, "chat:lobby", true, in);
  cr_assert(gw_chops_marked((const uint8_t *)in, n, true));
  cr_assert_eq(gw_chops_parse((const uint8_t *)in, n, true, &op), GW_CHOP_OK);
  cr_expect(op.msgpack);
  cr_expect_eq(op.id, 12);
  cr_expect_str_eq(op.channel, "chat:lobby");
  cr_expect(op.has_since);
  cr_expect_eq(op.since_offset, 3);
  cr_expect_eq(op.since_epoch, 9);
  /* Every truncation is a clean bad_request. */
  for (size_t k = 0; k < n; k++)
    cr_expect_eq(gw_chops_parse((const uint8_t *)in, k, true, &op), GW_CHOP_BAD_REQUEST);
  n = mp_op("subscribe", 1, "a\x01", false, in);
  cr_expect_eq(gw_chops_parse((const uint8_t *)in, n, true, &op), GW_CHOP_BAD_CHANNEL);

  n = mp_op("subscribe", 12, "chat:lobby", false, in);
  gw_chops_parse((const uint8_t *)in, n, true, &op);
  uint8_t out[GW_CHOP_ANSWER_MAX];
  size_t alen = gw_chops_answer(&op, GW_CHOP_FORBIDDEN, out, sizeof out);
  cr_assert_gt(alen, 0);
  msgpack_unpacked u;
  msgpack_unpacked_init(&u);
  cr_assert_eq(msgpack_unpack_next(&u, (const char *)out, alen, NULL), MSGPACK_UNPACK_SUCCESS);
  cr_assert_eq(u.data.type, MSGPACK_OBJECT_MAP);
  cr_expect_eq(u.data.via.map.size, 5); /* wsgate, id, op, code, message */
  msgpack_object code = u.data.via.map.ptr[3].val;
  cr_expect(code.via.str.size == 9 && memcmp(code.via.str.ptr, "forbidden", 9) == 0);
  msgpack_unpacked_destroy(&u);
}

Test(chops, json_answers) {
  gw_chop op;
  parse_json("{\"wsgate\":\"subscribe\",\"id\":7,\"channel\":\"caf\xc3\xa9\\\"\"}", &op);
  uint8_t out[GW_CHOP_ANSWER_MAX];
  size_t n = gw_chops_answer(&op, GW_CHOP_OK, out, sizeof out);
  cr_expect_eq(n, strlen("{\"wsgate\":\"subscribed\",\"id\":7,\"channel\":\"caf\xc3\xa9\\\"\"}"));
  cr_expect(
      memcmp(out, "{\"wsgate\":\"subscribed\",\"id\":7,\"channel\":\"caf\xc3\xa9\\\"\"}", n) == 0,
      "%.*s", (int)n, out);
  parse_json("{\"wsgate\":\"nope\"}", &op);
  n = gw_chops_answer(&op, GW_CHOP_UNKNOWN_OP, out, sizeof out);
  const char *want = "{\"wsgate\":\"error\",\"code\":\"unknown_op\",\"message\":\"unknown op\"}";
  cr_expect(n == strlen(want) && memcmp(out, want, n) == 0, "%.*s", (int)n, out);
  cr_expect_eq(gw_chops_answer(&op, GW_CHOP_UNKNOWN_OP, out, 10), 0); /* does not fit */
  /* Every error has a code distinct from the others. */
  for (int a = -1; a > -GW_CHOP_ERR_COUNT; a--)
    for (int b = a - 1; b > -GW_CHOP_ERR_COUNT; b--)
      cr_expect_str_neq(gw_chop_code(a), gw_chop_code(b));
}

/* The presence op parses like a subscribe (a channel is required) in both formats; its refusals
 * are answered with their own codes. */
Test(chops, presence_op) {
  gw_chop op;
  cr_assert_eq(parse_json("{\"wsgate\":\"presence\",\"id\":7,\"channel\":\"room:x\"}", &op),
               GW_CHOP_OK);
  cr_expect_eq(op.kind, GW_CHOP_PRESENCE);
  cr_expect_eq(op.id, 7);
  cr_expect_str_eq(op.channel, "room:x");
  cr_expect_eq(parse_json("{\"wsgate\":\"presence\",\"id\":8}", &op), GW_CHOP_BAD_REQUEST);
  char in[512];
  size_t n = mp_op("presence", 9, "room:x", false, in);
  cr_assert_eq(gw_chops_parse((const uint8_t *)in, n, true, &op), GW_CHOP_OK);
  cr_expect_eq(op.kind, GW_CHOP_PRESENCE);
  cr_expect(op.msgpack);
  parse_json("{\"wsgate\":\"presence\",\"id\":7,\"channel\":\"room:x\"}", &op);
  uint8_t out[GW_CHOP_ANSWER_MAX];
  static const struct {
    int err;
    const char *want;
  } answers[] = {
      {GW_CHOP_NOT_SUBSCRIBED,
       "{\"wsgate\":\"error\",\"id\":7,\"op\":\"presence\",\"code\":\"not_subscribed\","
       "\"message\":\"only a connection subscribed to the channel may ask for its presence\"}"},
      {GW_CHOP_PRESENCE_NOT_ALLOWED,
       "{\"wsgate\":\"error\",\"id\":7,\"op\":\"presence\",\"code\":\"presence_not_allowed\","
       "\"message\":\"clients may not ask for presence in this channel's namespace "
       "(client_presence=false)\"}"},
      {GW_CHOP_PRESENCE_BUSY,
       "{\"wsgate\":\"error\",\"id\":7,\"op\":\"presence\",\"code\":\"presence_busy\","
       "\"message\":\"too many presence queries in flight (4 per connection, "
       "--channel-presence-inflight per gateway); retry when one is answered\"}"},
  };
  for (size_t i = 0; i < sizeof answers / sizeof answers[0]; i++) {
    size_t a = gw_chops_answer(&op, answers[i].err, out, sizeof out);
    cr_expect(a == strlen(answers[i].want) && memcmp(out, answers[i].want, a) == 0, "%.*s", (int)a,
              out);
  }
}

/* A handler's subscription (gw_chserve_server_op): no id, "server":true, and an error names the
 * channel; the exact frames the JS client relies on. */
Test(chops, server_answers) {
  gw_chop op = {.kind = GW_CHOP_SUBSCRIBE, .server = true, .channel_len = 6};
  memcpy(op.channel, "room:x", 7);
  uint8_t out[GW_CHOP_ANSWER_MAX];
  size_t n = gw_chops_answer(&op, GW_CHOP_OK, out, sizeof out);
  const char *want = "{\"wsgate\":\"subscribed\",\"channel\":\"room:x\",\"server\":true}";
  cr_expect(n == strlen(want) && memcmp(out, want, n) == 0, "%.*s", (int)n, out);
  op.kind = GW_CHOP_UNSUBSCRIBE;
  n = gw_chops_answer(&op, GW_CHOP_OK, out, sizeof out);
  want = "{\"wsgate\":\"unsubscribed\",\"channel\":\"room:x\",\"server\":true}";
  cr_expect(n == strlen(want) && memcmp(out, want, n) == 0, "%.*s", (int)n, out);
  op.kind = GW_CHOP_SUBSCRIBE;
  n = gw_chops_answer(&op, GW_CHOP_TOO_MANY_SUBS, out, sizeof out);
  want = "{\"wsgate\":\"error\",\"op\":\"subscribe\",\"channel\":\"room:x\",\"code\":"
         "\"too_many_subscriptions\",\"message\":\"the connection has as many subscriptions as "
         "--channel-max-per-conn allows\",\"server\":true}";
  cr_expect(n == strlen(want) && memcmp(out, want, n) == 0, "%.*s", (int)n, out);

  /* The same in MessagePack: {"wsgate":"subscribed","channel":"room:x","server":true}. */
  op.msgpack = true;
  n = gw_chops_answer(&op, GW_CHOP_OK, out, sizeof out);
  static const uint8_t mp[] = {0x83, 0xa6, 'w', 's', 'g', 'a',  't', 'e', 0xaa, 's', 'u',
                               'b',  's',  'c', 'r', 'i', 'b',  'e', 'd', 0xa7, 'c', 'h',
                               'a',  'n',  'n', 'e', 'l', 0xa6, 'r', 'o', 'o',  'm', ':',
                               'x',  0xa6, 's', 'e', 'r', 'v',  'e', 'r', 0xc3};
  cr_expect(n == sizeof mp && memcmp(out, mp, n) == 0);
  n = gw_chops_answer(&op, GW_CHOP_TOO_MANY_CHANNELS, out, sizeof out);
  msgpack_unpacked u;
  msgpack_unpacked_init(&u);
  cr_assert_eq(msgpack_unpack_next(&u, (const char *)out, n, NULL), MSGPACK_UNPACK_SUCCESS);
  cr_expect_eq(u.data.via.map.size, 6); /* wsgate, op, channel, code, message, server */
  msgpack_unpacked_destroy(&u);
}

/* A subscribe without `since` is answered with the position its stream starts after: epoch and
 * offset, no "recovered"; in MessagePack too (the map's size counts exactly the keys written). */
Test(chops, position_answers) {
  gw_chop op = {.kind = GW_CHOP_SUBSCRIBE, .server = true, .channel_len = 6};
  memcpy(op.channel, "room:x", 7);
  gw_chop_recovery at = {.fresh = true, .epoch = 5, .offset = 9};
  uint8_t out[GW_CHOP_ANSWER_MAX];
  size_t n = gw_chops_answer_recovery(&op, &at, out, sizeof out);
  const char *want =
      "{\"wsgate\":\"subscribed\",\"channel\":\"room:x\",\"epoch\":5,\"offset\":9,\"server\":true}";
  cr_expect(n == strlen(want) && memcmp(out, want, n) == 0, "%.*s", (int)n, out);
  for (int fresh = 0; fresh <= 1; fresh++) {
    op.msgpack = true;
    at.fresh = fresh;
    n = gw_chops_answer_recovery(&op, &at, out, sizeof out);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    cr_assert_eq(msgpack_unpack_next(&u, (const char *)out, n, &off), MSGPACK_UNPACK_SUCCESS);
    cr_expect_eq(off, n, "nothing after the map");
    /* wsgate, channel, epoch, offset, server; and recovered when not fresh */
    cr_expect_eq(u.data.via.map.size, fresh ? 5u : 6u);
    msgpack_unpacked_destroy(&u);
  }
}

/* ---- the index ------------------------------------------------------------------------------- */

static int emptied_calls;
static void on_empty(void *arg, const char *name, size_t len) {
  (void)arg;
  (void)name;
  (void)len;
  emptied_calls++;
}

Test(channels, subscribe_unsubscribe_and_limits) {
  gw_channels_limits lim = {.max_per_conn = 3, .max_channels = 4};
  gw_channels *c = gw_channels_create(&lim);
  gw_chsub *a = NULL, *b = NULL;
  bool created, emptied;
  cr_assert_eq(gw_channels_subscribe(c, &a, 1, "x", 1, 0, &created), GW_CHOP_OK);
  cr_expect(created);
  cr_assert_eq(gw_channels_subscribe(c, &a, 1, "x", 1, 0, &created), GW_CHOP_OK);
  cr_expect(!created, "a second subscribe changes nothing");
  cr_assert_eq(gw_channels_subscribe(c, &b, 2, "x", 1, 1, &created), GW_CHOP_OK);
  cr_expect(!created);
  cr_expect_eq(gw_channel_nsubs(gw_channels_find(c, "x", 1)), 2);
  gw_channel *x = gw_channels_find(c, "x", 1);
  cr_expect_eq(gw_channel_of(gw_channel_pos(x)), x, "a position leads back to its channel");
  cr_assert_eq(gw_channels_subscribe(c, &a, 1, "y", 1, 0, &created), GW_CHOP_OK);
  cr_assert_eq(gw_channels_subscribe(c, &a, 1, "z", 1, 0, &created), GW_CHOP_OK);
  cr_expect_eq(gw_channels_subscribe(c, &a, 1, "w", 1, 0, &created), GW_CHOP_TOO_MANY_SUBS);
  cr_assert_eq(gw_channels_subscribe(c, &b, 2, "v", 1, 0, &created), GW_CHOP_OK);
  cr_expect_eq(gw_channels_count(c), 4);
  cr_expect_eq(gw_channels_subscribe(c, &b, 2, "u", 1, 0, &created), GW_CHOP_TOO_MANY_CHANNELS);
  cr_expect_eq(gw_channels_conn_count(a), 3);
  cr_expect(gw_channels_unsubscribe(c, &a, "x", 1, &emptied));
  cr_expect(!emptied, "b still subscribes to x");
  cr_expect(!gw_channels_unsubscribe(c, &a, "x", 1, &emptied));
  cr_expect(gw_channels_unsubscribe(c, &b, "x", 1, &emptied));
  cr_expect(emptied);
  cr_expect_null(gw_channels_find(c, "x", 1));
  emptied_calls = 0;
  cr_expect_eq(gw_channels_drop_conn(c, &a, on_empty, NULL), 2);
  cr_expect_eq(emptied_calls, 2);
  cr_expect_null(a);
  cr_expect_eq(gw_channels_drop_conn(c, &b, on_empty, NULL), 1);
  cr_expect_eq(gw_channels_count(c), 0);
  cr_expect_eq(gw_channels_subs(c), 0);
  gw_channels_destroy(c);
}

/* Many connections on one channel, leaving in an order that exercises every list position; many
 * channels churned through the table (growth and backward-shift deletion). */
Test(channels, churn) {
  gw_channels_limits lim = {0};
  gw_channels *c = gw_channels_create(&lim);
  uint64_t base = gw_channels_bytes(c);
  enum { CONNS = 2000, CHANS = 40 };
  static gw_chsub *subs[CONNS];
  bool created, emptied;
  char name[32];
  for (int k = 0; k < CONNS; k++) {
    cr_assert_eq(gw_channels_subscribe(c, &subs[k], (uint64_t)k, "big", 3, 0, &created),
                 GW_CHOP_OK);
    for (int j = 0; j < 5; j++) {
      int n = snprintf(name, sizeof name, "ch-%d", (k * 7 + j) % CHANS);
      cr_assert_eq(gw_channels_subscribe(c, &subs[k], (uint64_t)k, name, (size_t)n, 0, &created),
                   GW_CHOP_OK);
    }
  }
  cr_expect_eq(gw_channel_nsubs(gw_channels_find(c, "big", 3)), CONNS);
  /* Every other connection leaves "big", then every channel is checked findable. */
  for (int k = 0; k < CONNS; k += 2)
    cr_assert(gw_channels_unsubscribe(c, &subs[k], "big", 3, &emptied));
  size_t seen = 0;
  for (const gw_chsub *s = gw_channel_first(gw_channels_find(c, "big", 3)); s;
       s = gw_chsub_next(s)) {
    cr_assert_eq(gw_chsub_conn(s) % 2, 1);
    seen++;
  }
  cr_expect_eq(seen, CONNS / 2);
  for (int j = 0; j < CHANS; j++) {
    int n = snprintf(name, sizeof name, "ch-%d", j);
    cr_expect_not_null(gw_channels_find(c, name, (size_t)n), "%s", name);
  }
  for (int k = CONNS - 1; k >= 0; k--)
    gw_channels_drop_conn(c, &subs[k], NULL, NULL);
  cr_expect_eq(gw_channels_count(c), 0);
  cr_expect_eq(gw_channels_subs(c), 0);
  /* Only the grown table remains. */
  cr_expect_geq(gw_channels_bytes(c), base);
  for (int j = 0; j < CHANS; j++) {
    int n = snprintf(name, sizeof name, "ch-%d", j);
    cr_expect_null(gw_channels_find(c, name, (size_t)n));
  }
  gw_channels_destroy(c);
}

/* The clock hand: between two visits of a channel every other channel held throughout is visited
 * once, whatever is created or removed meanwhile; a new channel comes after every older one. */
static char sweep_seen[64][8];
static size_t sweep_n;
static void on_sweep(void *arg, gw_channel *ch) {
  (void)arg;
  size_t len;
  const char *name = gw_channel_name(ch, &len);
  cr_assert_lt(sweep_n, 64);
  snprintf(sweep_seen[sweep_n++], sizeof sweep_seen[0], "%.*s", (int)len, name);
}

Test(channels, sweep_visits_each_channel_once_per_walk) {
  gw_channels_limits lim = {0};
  gw_channels *c = gw_channels_create(&lim);
  gw_chsub *subs[8] = {0};
  bool created, emptied;
  sweep_n = 0;
  cr_expect_eq(gw_channels_sweep(c, 5, on_sweep, NULL), 0, "nothing held: nothing visited");
  const char *names[] = {"a", "b", "c", "d"};
  for (int k = 0; k < 4; k++)
    cr_assert_eq(gw_channels_subscribe(c, &subs[k], (uint64_t)k, names[k], 1, 0, &created),
                 GW_CHOP_OK);
  cr_expect_eq(gw_channels_sweep(c, 2, on_sweep, NULL), 2);
  /* Mid-walk: e is created (behind the hand), the next channel due (c) and a visited one (a)
   * leave. Then d and b, each once, before e; then the same order again. */
  cr_assert_eq(gw_channels_subscribe(c, &subs[4], 4, "e", 1, 0, &created), GW_CHOP_OK);
  cr_assert(gw_channels_unsubscribe(c, &subs[2], "c", 1, &emptied));
  cr_assert(gw_channels_unsubscribe(c, &subs[0], "a", 1, &emptied));
  cr_expect_eq(gw_channels_sweep(c, 2, on_sweep, NULL), 2);
  cr_expect_eq(gw_channels_sweep(c, 99, on_sweep, NULL), 3, "at most every channel, once");
  const char *want[] = {"a", "b", "d", "b", "e", "d", "b"};
  cr_assert_eq(sweep_n, 7);
  for (size_t i = 0; i < 7; i++)
    cr_expect_str_eq(sweep_seen[i], want[i], "visit %zu", i);
  for (int k = 0; k < 5; k++)
    gw_channels_drop_conn(c, &subs[k], NULL, NULL);
  cr_expect_eq(gw_channels_sweep(c, 1, on_sweep, NULL), 0, "the last one gone, the hand too");
  cr_assert_eq(gw_channels_subscribe(c, &subs[0], 9, "f", 1, 0, &created), GW_CHOP_OK);
  cr_expect_eq(gw_channels_sweep(c, 3, on_sweep, NULL), 1);
  gw_channels_drop_conn(c, &subs[0], NULL, NULL);
  gw_channels_destroy(c);
}

/* ---- permissions from the token's claim ------------------------------------------------------ */

#include "gw_chperm.h"

Test(chperm, claim_patterns) {
  char perm[GW_CHPERM_MAX_BYTES];
  const char *claims = "{\"sub\":\"a\",\"channels\":[\"news:*\",\"lobby\",5,\"\",\"x\\u0000y\"]}";
  size_t n =
      gw_chperm_from_claims((const uint8_t *)claims, strlen(claims), "channels", perm, sizeof perm);
  cr_expect_eq(n, sizeof "news:*" + sizeof "lobby" + 1, "non-strings, empty and NUL dropped");
  cr_expect(gw_chperm_allows(perm, "news:eu", 7));
  cr_expect(gw_chperm_allows(perm, "news:", 5));
  cr_expect(!gw_chperm_allows(perm, "news", 4));
  cr_expect(gw_chperm_allows(perm, "lobby", 5));
  cr_expect(!gw_chperm_allows(perm, "lobby2", 6), "an exact name is not a prefix");
  cr_expect(!gw_chperm_allows(NULL, "lobby", 5));
  cr_expect(gw_chperm_allows(GW_CHPERM_ANY, "anything", 8));
  n = gw_chperm_from_claims((const uint8_t *)"{\"sub\":\"a\"}", 11, "channels", perm, sizeof perm);
  cr_expect_eq(n, 1);
  cr_expect(!gw_chperm_allows(perm, "lobby", 5), "no claim: nothing");
  n = gw_chperm_from_claims((const uint8_t *)"not json", 8, "channels", perm, sizeof perm);
  cr_expect_eq(n, 1);
}
