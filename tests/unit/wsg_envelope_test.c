/*
 * Unit tests of wsg_envelope, one executable of three files (tests/unit/meson.build): here round
 * trips of the connection kinds (msg, connect, disconnect, deliver, close), encoding validates like
 * decoding, wsg_buf growth and reuse, names and close codes; wsg_envelope_decode_test.c every
 * error code reached by a crafted input, bounds, forward compatibility and the allocation
 * guarantees; wsg_envelope_channel_test.c the channel kinds.
 *
 * Threads: Criterion's test workers only.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wsg_envelope_testutil.h"

/* ---- round trips ------------------------------------------------------------------------------
 */

Test(round_trip, msg) {
  wsg_envelope e = inbound(WSG_ENV_MSG);
  static const uint8_t frame[] = {0, 1, 2, 0xff};
  e.fields |= WSG_F_DATA | WSG_F_BINARY | WSG_F_META;
  e.data = frame;
  e.data_len = sizeof frame;
  e.binary = true;
  e.meta = test_meta;
  e.meta_len = sizeof test_meta;
  round_trip(&e);
  e.data_len = 0; /* empty frame */
  e.fields &= ~(unsigned)WSG_F_META;
  round_trip(&e);
}

Test(round_trip, connect_and_disconnect) {
  wsg_envelope e = inbound(WSG_ENV_CONNECT);
  e.fields |= WSG_F_META;
  e.meta = test_meta;
  e.meta_len = sizeof test_meta;
  round_trip(&e);
  e = inbound(WSG_ENV_DISCONNECT);
  e.fields |= WSG_F_CLOSE_CODE | WSG_F_CLOSE_REASON;
  e.close_code = 1006;
  e.close_reason = "";
  e.close_reason_len = 0;
  round_trip(&e);
}

Test(round_trip, deliver_every_target) {
  static const uint64_t ids[] = {7, 300, 70000, UINT64_MAX};
  wsg_envelope e = {0};
  e.kind = WSG_ENV_DELIVER;
  e.gateway = "gw-1";
  e.gateway_len = 4;
  e.slot = 1;
  e.data = (const uint8_t *)"hello";
  e.data_len = 5;
  e.user_seq = 12345678901;
  e.fields = WSG_F_GATEWAY | WSG_F_SLOT | WSG_F_DATA | WSG_F_USEQ | WSG_F_CONN;
  e.conn = 7;
  round_trip(&e);
  e.fields = WSG_F_GATEWAY | WSG_F_SLOT | WSG_F_DATA | WSG_F_USEQ | WSG_F_CONNS;
  e.conn_ids = ids;
  e.conns.count = 4;
  round_trip(&e);
  /* A fan-out across users: one q per connection. */
  static const uint64_t qs[] = {1, 1795602833455812, 0, UINT64_MAX};
  e.fields = WSG_F_GATEWAY | WSG_F_SLOT | WSG_F_DATA | WSG_F_CONNS | WSG_F_USEQS;
  e.useq_ids = qs;
  e.useqs.count = 4;
  round_trip(&e);
  e.useqs.count = 3; /* not one per connection: refused like the decoder refuses it */
  wsg_buf b;
  wsg_buf_init(&b, 0);
  cr_expect_eq(wsg_envelope_encode(&e, &b), WSG_ENV_BAD_VALUE);
  wsg_buf_finish(&b);
  e.useq_ids = NULL;
  e.useqs.count = 0;
  e.fields = WSG_F_GATEWAY | WSG_F_DATA | WSG_F_USER;
  e.user = "alice";
  e.user_len = 5;
  round_trip(&e);
}

Test(round_trip, close) {
  wsg_envelope e = {0};
  e.kind = WSG_ENV_CLOSE;
  e.fields = WSG_F_GATEWAY | WSG_F_CONN | WSG_F_CLOSE_CODE | WSG_F_CLOSE_REASON;
  e.gateway = "gw-1";
  e.gateway_len = 4;
  e.conn = 1;
  e.close_code = 4001;
  char reason[WSG_MAX_REASON_LEN];
  memset(reason, 'r', sizeof reason);
  e.close_reason = reason;
  e.close_reason_len = sizeof reason;
  round_trip(&e);
}

Test(round_trip, decoded_envelope_reencodes_to_the_same_bytes) {
  wsg_envelope e = inbound(WSG_ENV_MSG);
  e.fields |= WSG_F_META | WSG_F_DATA;
  e.meta = test_meta;
  e.meta_len = sizeof test_meta;
  e.data = (const uint8_t *)"x";
  e.data_len = 1;
  wsg_buf a, b;
  wsg_buf_init(&a, 0);
  wsg_buf_init(&b, 0);
  cr_assert_eq(wsg_envelope_encode(&e, &a), WSG_ENV_OK);
  wsg_envelope d;
  cr_assert_eq(wsg_envelope_decode(&d, a.data, a.len, NULL), WSG_ENV_OK);
  cr_assert_eq(wsg_envelope_encode(&d, &b), WSG_ENV_OK);
  cr_expect(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
  wsg_buf_finish(&a);
  wsg_buf_finish(&b);
}

/* ---- encoding validates like decoding ----------------------------------------------------------
 */

Test(encode, rejects_what_decode_rejects) {
  wsg_buf b;
  wsg_buf_init(&b, 0);
  wsg_envelope e;
  char long_user[WSG_MAX_USER_LEN + 1];
  memset(long_user, 'u', sizeof long_user);

#define EXPECT_ENCODE(mutation, code)                                                              \
  do {                                                                                             \
    e = inbound(WSG_ENV_MSG);                                                                      \
    mutation;                                                                                      \
    int rc_ = wsg_envelope_encode(&e, &b);                                                         \
    cr_expect_eq(rc_, code, "%s: got %s", #mutation, wsg_env_err_name(rc_));                       \
    cr_expect_eq(b.len, 0, "%s: output left behind", #mutation);                                   \
  } while (0)

  EXPECT_ENCODE(e.version = 2, WSG_ENV_BAD_VERSION);
  EXPECT_ENCODE(e.kind = (wsg_env_kind)0, WSG_ENV_BAD_KIND);
  EXPECT_ENCODE(e.kind = (wsg_env_kind)(WSG_ENV_KIND_LAST + 1), WSG_ENV_BAD_KIND);
  EXPECT_ENCODE(e.fields &= ~(unsigned)WSG_F_USER, WSG_ENV_MISSING);
  EXPECT_ENCODE(e.fields &= ~(unsigned)WSG_F_SLOT, WSG_ENV_MISSING);
  EXPECT_ENCODE((e.user = long_user, e.user_len = sizeof long_user), WSG_ENV_TOO_LONG);
  EXPECT_ENCODE((e.user = "\xc0\xaf", e.user_len = 2), WSG_ENV_BAD_UTF8);
  EXPECT_ENCODE(e.user_len = 0, WSG_ENV_BAD_VALUE);
  EXPECT_ENCODE((e.user = NULL, e.user_len = 3), WSG_ENV_BAD_VALUE);
  EXPECT_ENCODE(e.slot = 0x80000000u, WSG_ENV_BAD_VALUE);
  EXPECT_ENCODE((e.fields |= WSG_F_DATA, e.data = NULL, e.data_len = 1), WSG_ENV_BAD_VALUE);
  EXPECT_ENCODE((e.fields |= WSG_F_DATA, e.data = (const uint8_t *)"",
                 e.data_len = (size_t)WSG_MAX_PAYLOAD + 1),
                WSG_ENV_TOO_LONG);
  EXPECT_ENCODE((e.fields |= WSG_F_CLOSE_REASON, e.close_reason = "x", e.close_reason_len = 1),
                WSG_ENV_MISSING);
  EXPECT_ENCODE((e.fields |= WSG_F_CLOSE_CODE, e.close_code = 1006), WSG_ENV_BAD_VALUE);
  EXPECT_ENCODE((e.fields |= WSG_F_META, e.meta = (const uint8_t *)"\x91\x01", e.meta_len = 2),
                WSG_ENV_BAD_TYPE);
  EXPECT_ENCODE((e.fields |= WSG_F_META, e.meta = (const uint8_t *)"\x81\x01", e.meta_len = 2),
                WSG_ENV_TRUNCATED);
  EXPECT_ENCODE((e.fields |= WSG_F_META, e.meta = test_meta, e.meta_len = 0), WSG_ENV_BAD_VALUE);
  EXPECT_ENCODE((e.kind = WSG_ENV_DELIVER, e.fields = WSG_F_GATEWAY | WSG_F_CONN | WSG_F_CONNS,
                 e.conns.count = 1, e.conn_ids = &e.conn),
                WSG_ENV_BAD_VALUE);
  EXPECT_ENCODE((e.kind = WSG_ENV_DELIVER, e.fields = WSG_F_GATEWAY | WSG_F_CONNS,
                 e.conns.count = 0, e.conn_ids = &e.conn),
                WSG_ENV_BAD_VALUE);
  EXPECT_ENCODE((e.kind = WSG_ENV_DELIVER, e.fields = WSG_F_GATEWAY | WSG_F_CONNS,
                 e.conns.count = WSG_MAX_CONNS + 1, e.conn_ids = &e.conn),
                WSG_ENV_TOO_LONG);
  /* A raw list that is not `count` uints. */
  EXPECT_ENCODE((e.kind = WSG_ENV_DELIVER, e.fields = WSG_F_GATEWAY | WSG_F_CONNS,
                 e.conns.count = 2, e.conns.raw = (const uint8_t *)"\x01\xa1x",
                 e.conns.raw_len = 3),
                WSG_ENV_BAD_VALUE);
  EXPECT_ENCODE((e.kind = WSG_ENV_DELIVER, e.fields = WSG_F_GATEWAY | WSG_F_CONNS,
                 e.conns.count = 1, e.conns.raw = (const uint8_t *)"\x01\x02", e.conns.raw_len = 2),
                WSG_ENV_BAD_VALUE);
#undef EXPECT_ENCODE
  wsg_buf_finish(&b);
}

Test(encode, version_zero_means_current_and_key_order_is_fixed) {
  wsg_envelope e = {0};
  e.kind = WSG_ENV_CLOSE;
  e.fields = WSG_F_CONN | WSG_F_GATEWAY; /* set in any order: written in key order */
  e.gateway = "g";
  e.gateway_len = 1;
  e.conn = 5;
  wsg_buf b;
  wsg_buf_init(&b, 0);
  cr_assert_eq(wsg_envelope_encode(&e, &b), WSG_ENV_OK);
  static const uint8_t want[] = {0x84, 0xa1, 'v',  0x01, 0xa1, 't', 0xa5, 'c', 'l', 'o',
                                 's',  'e',  0xa1, 'g',  0xa1, 'g', 0xa1, 'c', 0x05};
  cr_expect_eq(b.len, sizeof want);
  cr_expect_arr_eq(b.data, want, sizeof want);
  wsg_buf_finish(&b);
}

Test(encode, nomem) {
  wsg_envelope e = inbound(WSG_ENV_MSG);
  wsg_buf b;
  wsg_buf_init(&b, 0);
  fail_allocs = true;
  int rc = wsg_envelope_encode(&e, &b);
  fail_allocs = false;
  cr_expect_eq(rc, WSG_ENV_NOMEM);
  cr_expect_eq(b.len, 0);
  cr_expect_eq(wsg_envelope_encode(&e, &b), WSG_ENV_OK, "recovers once memory is back");
  wsg_buf_finish(&b);
}

/* ---- buffers -----------------------------------------------------------------------------------
 */

Test(buf, grows_to_the_cap_then_too_long) {
  wsg_envelope e = inbound(WSG_ENV_MSG);
  static uint8_t payload[4096];
  e.fields |= WSG_F_DATA;
  e.data = payload;
  e.data_len = 900;
  wsg_buf b;
  wsg_buf_init(&b, 1024);
  cr_expect_eq(wsg_envelope_encode(&e, &b), WSG_ENV_OK);
  cr_expect_leq(b.alloc, 1024);
  e.data_len = 1024;
  cr_expect_eq(wsg_envelope_encode(&e, &b), WSG_ENV_TOO_LONG);
  cr_expect_eq(b.len, 0);
  cr_expect_leq(b.alloc, 1024);
  wsg_buf_finish(&b);
  wsg_buf_init(&b, 0);
  cr_expect_eq(b.cap, (size_t)WSG_MAX_PAYLOAD + 64 * 1024);
  wsg_buf_finish(&b);
}

Test(buf, reuse_allocates_only_for_the_first_message) {
  static uint8_t payload[1500];
  wsg_envelope e = inbound(WSG_ENV_MSG);
  e.fields |= WSG_F_DATA;
  e.data = payload;
  wsg_buf b;
  wsg_buf_init(&b, 0);

  e.data_len = sizeof payload;
  cr_assert_eq(wsg_envelope_encode(&e, &b), WSG_ENV_OK);
  cr_assert_gt(allocs, 0, "the counting allocator sees nothing: is --wrap linked?");
  size_t warm_alloc = b.alloc;
  unsigned long before = allocs;
  for (unsigned i = 0; i < 1000; i++) {
    e.seq = i;
    e.conn = (uint64_t)i * 0x9e3779b97f4a7c15u; /* every integer width */
    e.data_len = i % (sizeof payload + 1);
    payload[i % sizeof payload] = (uint8_t)i;
    cr_assert_eq(wsg_envelope_encode(&e, &b), WSG_ENV_OK);
  }
  cr_expect_eq(allocs, before, "%lu allocations after the first message", allocs - before);
  cr_expect_eq(b.alloc, warm_alloc);
  wsg_buf_finish(&b);
}

Test(buf, finish_null_and_reset) {
  wsg_buf_finish(NULL);
  wsg_buf b;
  wsg_buf_init(&b, 0);
  wsg_envelope e = inbound(WSG_ENV_MSG);
  cr_assert_eq(wsg_envelope_encode(&e, &b), WSG_ENV_OK);
  size_t alloc = b.alloc;
  wsg_buf_reset(&b);
  cr_expect_eq(b.len, 0);
  cr_expect_eq(b.alloc, alloc);
  wsg_buf_finish(&b);
  wsg_buf_finish(&b); /* twice is harmless */
  cr_expect_null(b.data);
}

/* ---- names ------------------------------------------------------------------------------------
 */

Test(names, errors_and_kinds) {
#define CHECK_NAME(name, value, msg)                                                               \
  cr_expect_str_eq(wsg_env_err_name(WSG_ENV_##name), #name);                                       \
  cr_expect_str_eq(wsg_env_strerror(WSG_ENV_##name), msg);
  WSG_ENV_ERRNO_MAP(CHECK_NAME)
#undef CHECK_NAME
  cr_expect_str_eq(wsg_env_err_name(-999), "UNKNOWN");
  cr_expect_str_eq(wsg_env_strerror(1), "unknown envelope error");
  cr_expect_str_eq(wsg_env_kind_name(WSG_ENV_MSG), "msg");
  cr_expect_str_eq(wsg_env_kind_name(WSG_ENV_CONNECT), "connect");
  cr_expect_str_eq(wsg_env_kind_name(WSG_ENV_DISCONNECT), "disconnect");
  cr_expect_str_eq(wsg_env_kind_name(WSG_ENV_DELIVER), "deliver");
  cr_expect_str_eq(wsg_env_kind_name(WSG_ENV_CLOSE), "close");
  cr_expect_str_eq(wsg_env_kind_name((wsg_env_kind)0), "unknown");
  cr_expect_str_eq(wsg_env_kind_name((wsg_env_kind)42), "unknown");
}

Test(close_codes, valid_codes_by_kind) {
  const unsigned sendable[] = {1000, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999};
  const unsigned never[] = {0, 999, 1004, 1016, 2999, 5000, 65535};
  const unsigned ended_only[] = {1005, 1006, 1015};
  for (size_t i = 0; i < sizeof(sendable) / sizeof(sendable[0]); i++) {
    cr_expect(wsg_close_code_valid(WSG_ENV_CLOSE, sendable[i]), "%u", sendable[i]);
    cr_expect(wsg_close_code_valid(WSG_ENV_DISCONNECT, sendable[i]), "%u", sendable[i]);
  }
  for (size_t i = 0; i < sizeof(never) / sizeof(never[0]); i++) {
    cr_expect_not(wsg_close_code_valid(WSG_ENV_CLOSE, never[i]), "%u", never[i]);
    cr_expect_not(wsg_close_code_valid(WSG_ENV_DISCONNECT, never[i]), "%u", never[i]);
  }
  for (size_t i = 0; i < sizeof(ended_only) / sizeof(ended_only[0]); i++) {
    cr_expect_not(wsg_close_code_valid(WSG_ENV_CLOSE, ended_only[i]), "%u", ended_only[i]);
    cr_expect(wsg_close_code_valid(WSG_ENV_DISCONNECT, ended_only[i]), "%u", ended_only[i]);
  }
}
