/*
 * Unit tests for gw_outbound_decode (gateway/gw_outdecode.c): what the Kafka consumer thread makes
 * of an outbound record. The regression of issue 16 item 9: a user id or a close reason holding a
 * NUL byte was copied up to the NUL (strndup) while the length kept the decoder's count, so the
 * loop thread read past the copy; every copy must hold exactly the decoder's bytes.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "gw_kafka.h"

static const char GW[] = "gw-1";

/* Encodes env (kind, gateway and version filled in here) into b. */
static void encode(wsg_envelope *env, wsg_buf *b) {
  env->gateway = GW;
  env->gateway_len = sizeof GW - 1;
  env->fields |= WSG_F_GATEWAY;
  wsg_buf_init(b, 0);
  cr_assert_eq(wsg_envelope_encode(env, b), WSG_ENV_OK);
}

static gw_outdec_result decode(const wsg_buf *b, gw_outbound *it) {
  wsg_envelope env;
  int rc;
  const char *field;
  return gw_outbound_decode(b->data, b->len, GW, sizeof GW - 1, it, &env, &rc, &field);
}

Test(gw_outdecode, user_id_with_a_nul_byte_is_copied_whole) {
  static const char user[] = "ab\0cdef"; /* 7 bytes, a NUL at 2 */
  wsg_envelope env = {.kind = WSG_ENV_DELIVER,
                      .fields = WSG_F_USER | WSG_F_DATA,
                      .user = user,
                      .user_len = sizeof user - 1,
                      .data = (const uint8_t *)"hi",
                      .data_len = 2};
  wsg_buf b;
  encode(&env, &b);
  gw_outbound it;
  cr_assert_eq(decode(&b, &it), GW_OUTDEC_OK);
  cr_assert_eq(it.target, GW_TARGET_USER);
  cr_assert_eq(it.user_len, sizeof user - 1);
  cr_assert_eq(memcmp(it.user, user, sizeof user - 1), 0, "every byte past the NUL is copied");
  cr_assert_eq(it.user[it.user_len], '\0');
  gw_outbound_finish(&it);
  wsg_buf_finish(&b);
}

Test(gw_outdecode, close_reason_with_a_nul_byte_is_copied_whole) {
  static const char reason[] = "x\0yz";
  wsg_envelope env = {.kind = WSG_ENV_CLOSE,
                      .fields = WSG_F_CONN | WSG_F_CLOSE_CODE | WSG_F_CLOSE_REASON,
                      .conn = 7,
                      .close_code = 4100,
                      .close_reason = reason,
                      .close_reason_len = sizeof reason - 1};
  wsg_buf b;
  encode(&env, &b);
  gw_outbound it;
  cr_assert_eq(decode(&b, &it), GW_OUTDEC_OK);
  cr_assert_eq(it.reason_len, sizeof reason - 1);
  cr_assert_eq(memcmp(it.reason, reason, sizeof reason - 1), 0);
  gw_outbound_finish(&it);
  wsg_buf_finish(&b);
}

Test(gw_outdecode, fenced_kind_and_utf8_are_refused_and_leave_nothing) {
  wsg_envelope env = {.kind = WSG_ENV_DELIVER,
                      .fields = WSG_F_CONN | WSG_F_DATA,
                      .conn = 9,
                      .data = (const uint8_t *)"\xff\xfe",
                      .data_len = 2};
  wsg_buf b;
  encode(&env, &b);
  gw_outbound it;
  cr_assert_eq(decode(&b, &it), GW_OUTDEC_NOT_UTF8);
  cr_assert_null(it.msg);
  wsg_envelope d;
  int rc;
  const char *field;
  cr_assert_eq(gw_outbound_decode(b.data, b.len, "gw-2", 4, &it, &d, &rc, &field),
               GW_OUTDEC_FENCED);
  cr_assert_eq(gw_outbound_decode(b.data, b.len - 1, GW, sizeof GW - 1, &it, &d, &rc, &field),
               GW_OUTDEC_INVALID);
  cr_assert_neq(rc, WSG_ENV_OK);
  wsg_buf_finish(&b);
}

/* Issue 15: a `publish` becomes a channel item with its offset and epoch and the raw payload; a
 * text one that is not UTF-8 is refused like a deliver. */
Test(gw_outdecode, publish_to_a_channel) {
  wsg_envelope env = {.kind = WSG_ENV_PUBLISH,
                      .fields = WSG_F_CHANNEL | WSG_F_CH_OFFSET | WSG_F_CH_EPOCH | WSG_F_DATA,
                      .channel = "news:eu",
                      .channel_len = 7,
                      .ch_offset = 42,
                      .ch_epoch = 1795602833455812,
                      .data = (const uint8_t *)"hi",
                      .data_len = 2};
  wsg_buf b;
  encode(&env, &b);
  gw_outbound it;
  cr_assert_eq(decode(&b, &it), GW_OUTDEC_OK);
  cr_expect_eq(it.kind, WSG_ENV_PUBLISH);
  cr_expect_eq(it.target, GW_TARGET_CHANNEL);
  cr_expect(it.user_len == 7 && strcmp(it.user, "news:eu") == 0);
  cr_expect_eq(it.ch_offset, 42);
  cr_expect_eq(it.ch_epoch, 1795602833455812);
  cr_expect(gw_msg_len(it.msg) == 2 && !gw_msg_binary(it.msg));
  gw_outbound_finish(&it);
  wsg_buf_finish(&b);

  env.data = (const uint8_t *)"\xff";
  env.data_len = 1;
  encode(&env, &b);
  cr_expect_eq(decode(&b, &it), GW_OUTDEC_NOT_UTF8);
  wsg_buf_finish(&b);
}

/* A handler's wsgate_subscribe: the channel and the target connections, no message. */
Test(gw_outdecode, subscribe_and_unsubscribe_targets) {
  const uint64_t ids[] = {5, 6};
  wsg_envelope env = {.kind = WSG_ENV_SUBSCRIBE,
                      .fields = WSG_F_CHANNEL | WSG_F_CONNS,
                      .channel = "room:x",
                      .channel_len = 6,
                      .conn_ids = ids,
                      .conns = {.count = 2}};
  wsg_buf b;
  encode(&env, &b);
  gw_outbound it;
  cr_assert_eq(decode(&b, &it), GW_OUTDEC_OK);
  cr_expect_eq(it.kind, WSG_ENV_SUBSCRIBE);
  cr_expect_eq(it.target, GW_TARGET_CONNS);
  cr_expect(it.nconns == 2 && it.conns[0] == 5 && it.conns[1] == 6);
  cr_expect(it.user_len == 6 && strcmp(it.user, "room:x") == 0);
  cr_expect_null(it.msg);
  gw_outbound_finish(&it);
  wsg_buf_finish(&b);

  env.kind = WSG_ENV_UNSUBSCRIBE;
  env.fields = WSG_F_CHANNEL | WSG_F_CONN;
  env.conn = 9;
  encode(&env, &b);
  cr_assert_eq(decode(&b, &it), GW_OUTDEC_OK);
  cr_expect_eq(it.kind, WSG_ENV_UNSUBSCRIBE);
  cr_expect(it.target == GW_TARGET_CONN && it.conn == 9);
  cr_expect(it.user_len == 6 && strcmp(it.user, "room:x") == 0);
  gw_outbound_finish(&it);
  wsg_buf_finish(&b);
}

/* The answer to a client's subscribe where the handler decides: rq and the refusal kept. */
Test(gw_outdecode, subscribe_answer_carries_request_and_refusal) {
  wsg_envelope env = {.kind = WSG_ENV_SUBSCRIBE,
                      .fields = WSG_F_CHANNEL | WSG_F_CONN | WSG_F_REQUEST | WSG_F_REFUSAL,
                      .channel = "room:x",
                      .channel_len = 6,
                      .conn = 9,
                      .request = 1ull << 40,
                      .refusal = "members only",
                      .refusal_len = 12};
  wsg_buf b;
  encode(&env, &b);
  gw_outbound it;
  cr_assert_eq(decode(&b, &it), GW_OUTDEC_OK);
  cr_expect(it.has_request && it.request == 1ull << 40 && it.refused);
  cr_expect(it.reason_len == 12 && strcmp(it.reason, "members only") == 0);
  gw_outbound_finish(&it);
  wsg_buf_finish(&b);
}
