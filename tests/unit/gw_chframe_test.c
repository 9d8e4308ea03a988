/*
 * gw_chframe: publication and gap frames, byte for byte as docs/PROTOCOL.md ("Channels") shows
 * them, in JSON and MessagePack (decoded back with jansson and msgpack-c).
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <msgpack.h>
#include <string.h>

#include "gw_chframe.h"
#include "wsg_chns.h"

static void expect_text(gw_msg *m, const char *want) {
  cr_assert_not_null(m);
  cr_expect(!gw_msg_binary(m));
  cr_expect(gw_msg_len(m) == strlen(want) && memcmp(gw_msg_payload(m), want, strlen(want)) == 0,
            "got %.*s", (int)gw_msg_len(m), (const char *)gw_msg_payload(m));
  gw_msg_unref(m);
}

Test(gw_chframe, json_text_escaped) {
  const char *d = "a\"b\\c\n\x01 é";
  expect_text(gw_chframe_pub("news:\"eu\"", 9, 42, 1795602833455812, (const uint8_t *)d, strlen(d),
                             false, false),
              "{\"wsgate\":\"pub\",\"channel\":\"news:\\\"eu\\\"\",\"offset\":42,"
              "\"epoch\":1795602833455812,\"data\":\"a\\\"b\\\\c\\u000a\\u0001 é\"}");
}

Test(gw_chframe, json_binary_base64) {
  const uint8_t d[] = {0, 1, 2, 0xff};
  expect_text(
      gw_chframe_pub("x", 1, 1, 7, d, sizeof d, true, false),
      "{\"wsgate\":\"pub\",\"channel\":\"x\",\"offset\":1,\"epoch\":7,\"data_b64\":\"AAEC/w==\"}");
  expect_text(gw_chframe_pub("x", 1, 2, 7, NULL, 0, false, false),
              "{\"wsgate\":\"pub\",\"channel\":\"x\",\"offset\":2,\"epoch\":7,\"data\":\"\"}");
}

Test(gw_chframe, json_parses) {
  gw_msg *m = gw_chframe_pub("c", 1, 3, 9, (const uint8_t *)"\t\"", 2, false, false);
  json_error_t e;
  json_t *j = json_loadb((const char *)gw_msg_payload(m), gw_msg_len(m), 0, &e);
  cr_assert_not_null(j, "%s", e.text);
  cr_expect_str_eq(json_string_value(json_object_get(j, "data")), "\t\"");
  json_decref(j);
  gw_msg_unref(m);
}

Test(gw_chframe, msgpack_roundtrip) {
  uint8_t big[300];
  memset(big, 'z', sizeof big);
  for (int bin = 0; bin < 2; bin++) {
    gw_msg *m = gw_chframe_pub("news:eu", 7, 5, 1795602833455812, big, sizeof big, bin, true);
    cr_assert_not_null(m);
    cr_expect(gw_msg_binary(m));
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    cr_assert_eq(msgpack_unpack_next(&u, (const char *)gw_msg_payload(m), gw_msg_len(m), &off),
                 MSGPACK_UNPACK_SUCCESS);
    cr_expect_eq(off, gw_msg_len(m), "no trailing bytes");
    msgpack_object_map map = u.data.via.map;
    cr_assert_eq(map.size, 5);
    cr_expect(map.ptr[0].val.via.str.size == 3 && !memcmp(map.ptr[0].val.via.str.ptr, "pub", 3));
    cr_expect_eq(map.ptr[2].val.via.u64, 5);
    cr_expect_eq(map.ptr[3].val.via.u64, 1795602833455812);
    cr_expect_eq(map.ptr[4].val.type, bin ? MSGPACK_OBJECT_BIN : MSGPACK_OBJECT_STR);
    msgpack_unpacked_destroy(&u);
    gw_msg_unref(m);
  }
}

Test(gw_chframe, gap) {
  expect_text(gw_chframe_gap("news:eu", 7, 43, 45, false),
              "{\"wsgate\":\"gap\",\"channel\":\"news:eu\",\"from\":43,\"to\":45}");
  gw_msg *m = gw_chframe_gap("news:eu", 7, 43, 45, true);
  cr_assert_not_null(m);
  cr_expect(gw_msg_binary(m) && gw_msg_payload(m)[0] == 0x84);
  gw_msg_unref(m);
}

/* --- namespaces (common/wsg_chns, used by both daemons) ----------------------------------------
 */

Test(wsg_chns, rows_default_and_lookup) {
  char *keys[] = {"news", "default"};
  char *vals[] = {"history_size=100,history_ttl=10m,client_publish=true", "history_size=5"};
  wsg_chns_options o = {.rows = {2, keys, vals}};
  wsg_chns *t;
  char err[256];
  cr_assert_eq(wsg_chns_resolve(&o, &t, err, sizeof err), 0, "%s", err);
  const wsg_chns_opts *n = wsg_chns_of(t, "news:eu", 7);
  cr_expect_eq(n->history_size, 100);
  cr_expect_eq(n->history_ttl_ms, 600000);
  cr_expect(n->client_publish && !n->presence);
  const wsg_chns_opts *d = wsg_chns_of(t, "lobby", 5);
  cr_expect_eq(d->history_size, 5, "the default row");
  cr_expect_eq(wsg_chns_of(t, "other:x", 7), d, "an unlisted namespace gets the defaults");
  cr_expect_eq(wsg_chns_of(t, "news", 4), d, "no ':' is no namespace");
  wsg_chns_destroy(t);
}

Test(wsg_chns, refusals_say_what) {
  struct {
    const char *key, *val, *want;
  } bad[] = {
      {"news", "history_size=100001", "history_size"},
      {"news", "history_ttl=1ms", "history_ttl"},
      {"news", "presence=maybe", "presence"},
      {"news", "join_leave=true", "needs presence"},
      {"news", "colour=red", "unknown option colour"},
      {"a:b", "presence=true", "without ':'"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char *k = (char *)bad[i].key, *v = (char *)bad[i].val;
    wsg_chns_options o = {.rows = {1, &k, &v}};
    wsg_chns *t = NULL;
    char err[256] = "";
    cr_expect_eq(wsg_chns_resolve(&o, &t, err, sizeof err), -1, "%s=%s", k, v);
    cr_expect(strstr(err, bad[i].want), "%s=%s: %s", k, v, err);
    cr_expect_null(t);
  }
}
