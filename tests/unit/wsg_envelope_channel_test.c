/*
 * Unit tests of wsg_envelope's channel kinds: publish, channel names, a handler's subscribe and
 * unsubscribe, and subscribe=handler's request and answers. Part of the wsg_envelope executable
 * (see wsg_envelope_test.c).
 *
 * Threads: Criterion's test workers only.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wsg_envelope_testutil.h"

/* A record of `kind` about `channel` to slot 7 of gateway gw-1, stamped; `fields` are the others.
 */
static wsg_envelope to_gateway(wsg_env_kind kind, const char *channel, uint32_t fields) {
  wsg_envelope e = {0};
  e.kind = kind;
  e.fields = WSG_F_GATEWAY | WSG_F_SLOT | WSG_F_CHANNEL | WSG_F_TS | fields;
  e.gateway = "gw-1";
  e.gateway_len = 4;
  e.slot = 7;
  e.channel = channel;
  e.channel_len = strlen(channel);
  e.ts_us = 1700000000000000;
  return e;
}

Test(round_trip, publish) {
  wsg_envelope e = to_gateway(WSG_ENV_PUBLISH, "chat:lobby",
                              WSG_F_CH_OFFSET | WSG_F_CH_EPOCH | WSG_F_DATA | WSG_F_BINARY);
  e.ch_offset = 1;
  e.ch_epoch = (1ull << 53) - 1;
  e.data = (const uint8_t *)"hi";
  e.data_len = 2;
  round_trip(&e);
  /* The encoder refuses what the decoder would: a name over the limit. */
  char longname[WSG_MAX_CHANNEL_LEN + 1];
  memset(longname, 'x', sizeof longname);
  e.channel = longname;
  e.channel_len = sizeof longname;
  wsg_buf b;
  wsg_buf_init(&b, 0);
  cr_expect_eq(wsg_envelope_encode(&e, &b), WSG_ENV_TOO_LONG);
  e.channel_len = WSG_MAX_CHANNEL_LEN;
  cr_expect_eq(wsg_envelope_encode(&e, &b), WSG_ENV_OK);
  wsg_buf_finish(&b);
}

Test(channel_name, rules) {
  cr_expect(wsg_channel_name_valid("a", 1));
  cr_expect(wsg_channel_name_valid("news:eu", 7));
  cr_expect(wsg_channel_name_valid("match:\xe6\x97\xa5", 9)); /* U+65E5 */
  cr_expect(wsg_channel_name_valid("\xc2\xa0", 2));           /* U+00A0 is not a control */
  cr_expect(!wsg_channel_name_valid("", 0));
  cr_expect(!wsg_channel_name_valid(NULL, 3));
  cr_expect(!wsg_channel_name_valid("a\tb", 3));
  cr_expect(!wsg_channel_name_valid("a\x7f", 2));
  cr_expect(!wsg_channel_name_valid("\xc2\x9f", 2)); /* U+009F */
  cr_expect(!wsg_channel_name_valid("\xc0\xaf", 2)); /* overlong */
  char name[WSG_MAX_CHANNEL_LEN + 1];
  memset(name, 'x', sizeof name);
  cr_expect(wsg_channel_name_valid(name, WSG_MAX_CHANNEL_LEN));
  cr_expect(!wsg_channel_name_valid(name, WSG_MAX_CHANNEL_LEN + 1));
}

/* A handler's wsgate_subscribe / wsgate_unsubscribe: channel and target connections, no payload. */
Test(round_trip, subscribe_and_unsubscribe) {
  const uint64_t ids[] = {1, 1ull << 40, UINT64_MAX};
  wsg_envelope e = to_gateway(WSG_ENV_SUBSCRIBE, "room:x", WSG_F_CONNS);
  e.conn_ids = ids;
  e.conns.count = 3;
  round_trip(&e);
  e.kind = WSG_ENV_UNSUBSCRIBE;
  e.fields = WSG_F_GATEWAY | WSG_F_CHANNEL | WSG_F_CONN;
  e.conn = 9;
  round_trip(&e);
  cr_expect_str_eq(wsg_env_kind_name(WSG_ENV_SUBSCRIBE), "subscribe");
  cr_expect_str_eq(wsg_env_kind_name(WSG_ENV_UNSUBSCRIBE), "unsubscribe");
}

/* What a gateway could not act on is refused by both sides, with the field named. */
Test(decode, subscribe_requires_channel_and_one_target) {
  const uint64_t ids[] = {1, 2};
  wsg_buf b;
  wsg_buf_init(&b, 0);
  wsg_envelope e = {.kind = WSG_ENV_SUBSCRIBE,
                    .fields = WSG_F_GATEWAY | WSG_F_CHANNEL | WSG_F_CONN,
                    .gateway = "gw",
                    .gateway_len = 2,
                    .channel = "a",
                    .channel_len = 1,
                    .conn = 5};
  cr_assert_eq(wsg_envelope_encode(&e, &b), WSG_ENV_OK);
  /* Without a target: encode refuses, and so does decode of bytes written by another writer. */
  e.fields = WSG_F_GATEWAY | WSG_F_CHANNEL;
  cr_expect_eq(wsg_envelope_encode(&e, &b), WSG_ENV_MISSING);
  /* {"v":1,"t":"subscribe","g":"gw","ch":"a"} */
  static const uint8_t no_target[] = {0x84, 0xa1, 'v', 0x01, 0xa1, 't', 0xa9, 's',  'u',
                                      'b',  's',  'c', 'r',  'i',  'b', 'e',  0xa1, 'g',
                                      0xa2, 'g',  'w', 0xa2, 'c',  'h', 0xa1, 'a'};
  wsg_envelope d;
  const char *field = NULL;
  cr_expect_eq(wsg_envelope_decode(&d, no_target, sizeof no_target, &field), WSG_ENV_MISSING);
  cr_expect_str_eq(field, "c|cs");
  /* Without a channel. */
  e.fields = WSG_F_GATEWAY | WSG_F_CONN;
  cr_expect_eq(wsg_envelope_encode(&e, &b), WSG_ENV_MISSING);
  /* Both c and cs. */
  e.fields = WSG_F_GATEWAY | WSG_F_CHANNEL | WSG_F_CONN | WSG_F_CONNS;
  e.conn_ids = ids;
  e.conns.count = 2;
  cr_expect_eq(wsg_envelope_encode(&e, &b), WSG_ENV_BAD_VALUE);
  /* A channel name with a control character. */
  e.fields = WSG_F_GATEWAY | WSG_F_CHANNEL | WSG_F_CONN;
  e.channel = "a\x01";
  e.channel_len = 2;
  cr_expect_eq(wsg_envelope_encode(&e, &b), WSG_ENV_BAD_VALUE);
  /* Without a gateway (fencing needs it). */
  e.channel = "a";
  e.channel_len = 1;
  e.fields = WSG_F_CHANNEL | WSG_F_CONN;
  cr_expect_eq(wsg_envelope_encode(&e, &b), WSG_ENV_MISSING);
  wsg_buf_finish(&b);
}

/* subscribe=handler: the request and its answer, allowed or refused. */
Test(round_trip, subscribe_request_and_answers) {
  wsg_envelope e = {0};
  e.kind = WSG_ENV_SUB_REQUEST;
  e.fields = WSG_F_GATEWAY | WSG_F_SLOT | WSG_F_USER | WSG_F_CONN | WSG_F_CHANNEL | WSG_F_REQUEST;
  e.gateway = "gw";
  e.gateway_len = 2;
  e.user = "u";
  e.user_len = 1;
  e.conn = 3;
  e.channel = "room:x";
  e.channel_len = 6;
  e.request = UINT64_MAX;
  round_trip(&e);
  wsg_buf b;
  wsg_buf_init(&b, 0);
  e.fields &= ~(uint32_t)WSG_F_REQUEST;
  cr_expect_eq(wsg_envelope_encode(&e, &b), WSG_ENV_MISSING, "a request without its token");
  e.fields = WSG_F_GATEWAY | WSG_F_SLOT | WSG_F_USER | WSG_F_CONN | WSG_F_REQUEST;
  cr_expect_eq(wsg_envelope_encode(&e, &b), WSG_ENV_MISSING, "a request without its channel");

  e.kind = WSG_ENV_SUBSCRIBE;
  e.fields = WSG_F_GATEWAY | WSG_F_CONN | WSG_F_CHANNEL | WSG_F_REQUEST | WSG_F_REFUSAL;
  e.refusal = "no";
  e.refusal_len = 2;
  round_trip(&e);
  char longer[WSG_MAX_REASON_LEN + 1];
  memset(longer, 'x', sizeof longer);
  e.refusal = longer;
  e.refusal_len = sizeof longer;
  cr_expect_eq(wsg_envelope_encode(&e, &b), WSG_ENV_TOO_LONG);
  e.refusal_len = 2;
  e.fields &= ~(uint32_t)WSG_F_REQUEST;
  cr_expect_eq(wsg_envelope_encode(&e, &b), WSG_ENV_BAD_VALUE, "a refusal answers a request");
  const uint64_t ids[] = {1, 2};
  e.fields = WSG_F_GATEWAY | WSG_F_CONNS | WSG_F_CHANNEL | WSG_F_REQUEST;
  e.conn_ids = ids;
  e.conns.count = 2;
  cr_expect_eq(wsg_envelope_encode(&e, &b), WSG_ENV_BAD_VALUE, "an answer goes to one connection");
  e.kind = WSG_ENV_UNSUBSCRIBE;
  e.fields = WSG_F_GATEWAY | WSG_F_CONN | WSG_F_CHANNEL | WSG_F_REQUEST | WSG_F_REFUSAL;
  cr_expect_eq(wsg_envelope_encode(&e, &b), WSG_ENV_BAD_VALUE, "only a subscribe is refused");
  wsg_buf_finish(&b);
}
