/*
 * Integration tests of channel subscriptions at the gateway (issue 15, stage 2): ops answered by
 * the gateway and never produced to Kafka, the token's channels claim, refusals with their codes
 * and metrics, and the per-channel set of gateway ids in Redis kept by subscribe, unsubscribe
 * and disconnect. Needs Kafka and Redis (WSGATE_TEST_KAFKA, WSGATE_TEST_REDIS_PORT).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness_kafka.h"
#include "gw_jwt.h"
#include "harness.h"

static itest_gateway gw;
static itest_reader rd;

static void teardown(void) {
  itest_reader_close(&rd);
  itest_gateway_cleanup(&gw);
}

TestSuite(gateway_channels, .fini = teardown, .timeout = 120);

/* Connects `user` with a token whose channels claim is `claim_json` (a JSON array). */
static ws_client *connect_with_channels(const char *user, const char *claim_json) {
  char claims[512], tok[2048], auth[2200];
  snprintf(claims, sizeof claims, "{\"sub\":\"%s\",\"exp\":%ld,\"channels\":%s}", user,
           (long)time(NULL) + 300, claim_json);
  cr_assert_gt(gw_jwt_sign((const uint8_t *)ITEST_JWT_SECRET, strlen(ITEST_JWT_SECRET), claims, tok,
                           sizeof tok),
               0);
  snprintf(auth, sizeof auth, "Authorization: Bearer %s", tok);
  const char *headers[] = {auth, NULL};
  ws_client *c = NULL;
  ws_http_response resp;
  cr_assert_eq(itest_connect_raw(&gw, "/", headers, "wsgate.v1", &c, &resp), WS_CLIENT_OK);
  return c;
}

/* Sends an op and expects exactly `want` back. */
static void op_expect(ws_client *c, const char *op, const char *want) {
  cr_assert_eq(ws_client_send_text(c, op, strlen(op)), WS_CLIENT_OK);
  ws_message m;
  itest_expect_msg(c, WS_OP_TEXT, &m, ITEST_TIMEOUT_MS);
  cr_expect(m.len == strlen(want) && memcmp(m.data, want, m.len) == 0, "%s: got %.*s", op,
            (int)m.len, m.data);
}

/* Members of the channel's gateway set, waiting up to 10 s for the count to be `want`. On the
 * gateway's Redis: the shared node, or the node of WSGATE_TEST_REDIS_CLUSTER serving the key. */
static long gws_members(const char *channel, long want) {
  char key[256];
  snprintf(key, sizeof key, "%sch:{c:%s}:gws", gw.cluster.prefix, channel);
  long n = -1;
  for (int i = 0; i < 100; i++) {
    redisReply *rep = itest_redis_key_command(gw.redis_port, "SCARD %s%s", key, "");
    n = rep && rep->type == REDIS_REPLY_INTEGER ? (long)rep->integer : -1;
    freeReplyObject(rep);
    if (n == want)
      break;
    usleep(100 * 1000);
  }
  if (n == 1) {
    redisReply *rep = itest_redis_key_command(gw.redis_port, "SISMEMBER %s %s", key, gw.id);
    cr_expect(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 1,
              "the member is this gateway's id");
    freeReplyObject(rep);
  }
  return n;
}

Test(gateway_channels, subscribe_unsubscribe_and_refusals) {
  itest_gateway_start(&gw, NULL, "chan-ops", NULL);
  itest_reader_open(&rd, gw.cluster.in_topic, gw.cluster.in_partitions);
  ws_client *c = connect_with_channels("alice", "[\"news:*\",\"lobby\"]");
  wsg_envelope e;
  itest_reader_expect(&rd, WSG_ENV_CONNECT, "alice", &e, ITEST_TIMEOUT_MS);

  op_expect(c, "{\"wsgate\":\"subscribe\",\"id\":1,\"channel\":\"news:eu\"}",
            "{\"wsgate\":\"subscribed\",\"id\":1,\"channel\":\"news:eu\"}");
  cr_expect_eq(gws_members("news:eu", 1), 1);
  op_expect(c, "{\"wsgate\":\"subscribe\",\"id\":2,\"channel\":\"lobby\"}",
            "{\"wsgate\":\"subscribed\",\"id\":2,\"channel\":\"lobby\"}");
  op_expect(c, "{\"wsgate\":\"subscribe\",\"id\":3,\"channel\":\"lobby2\"}",
            "{\"wsgate\":\"error\",\"id\":3,\"op\":\"subscribe\",\"code\":\"forbidden\","
            "\"message\":\"the token does not allow this channel\"}");
  op_expect(c, "{\"wsgate\":\"subscribe\",\"channel\":\"news:\\u0001\"}",
            "{\"wsgate\":\"error\",\"op\":\"subscribe\",\"code\":\"bad_channel\",\"message\":\"a "
            "channel name is 1..200 bytes of UTF-8 without control characters\"}");
  op_expect(c, "{\"wsgate\":\"dance\"}",
            "{\"wsgate\":\"error\",\"code\":\"unknown_op\",\"message\":\"unknown op\"}");
  op_expect(c, "{\"wsgate\":\"unsubscribe\",\"id\":4,\"channel\":\"news:eu\"}",
            "{\"wsgate\":\"unsubscribed\",\"id\":4,\"channel\":\"news:eu\"}");
  cr_expect_eq(gws_members("news:eu", 0), 0, "the last subscriber left: SREM");

  /* None of the ops reached Kafka: the next inbound envelope is this application frame. */
  cr_assert_eq(ws_client_send_text(c, "hello", 5), WS_CLIENT_OK);
  itest_reader_expect(&rd, WSG_ENV_MSG, "alice", &e, ITEST_TIMEOUT_MS);
  cr_expect(e.data_len == 5 && memcmp(e.data, "hello", 5) == 0);
  cr_expect_eq(e.seq, 1, "ops take no inbound sequence number");

  cr_expect_eq(itest_metric(gw.http_port,
                            "wsgate_gateway_channel_ops_total{op=\"subscribe\",result="
                            "\"forbidden\"}"),
               1);
  cr_expect_eq(itest_metric(gw.http_port,
                            "wsgate_gateway_channel_ops_total{op=\"subscribe\",result="
                            "\"ok\"}"),
               2);
  cr_expect_eq(itest_metric(gw.http_port, "wsgate_gateway_channels"), 1);

  /* A disconnect drops the subscriptions: the channel's set empties. */
  cr_expect_eq(gws_members("lobby", 1), 1);
  ws_client_destroy(c);
  cr_expect_eq(gws_members("lobby", 0), 0);
}

Test(gateway_channels, limit_per_connection_and_no_claim) {
  static const char *const extra[] = {"--channel-max-per-conn", "2", NULL};
  itest_gateway_start(&gw, NULL, "chan-limit", &(itest_daemon_opts){.extra = extra});
  ws_client *c = connect_with_channels("bob", "[\"*\"]");
  op_expect(c, "{\"wsgate\":\"subscribe\",\"channel\":\"a\"}",
            "{\"wsgate\":\"subscribed\",\"channel\":\"a\"}");
  op_expect(c, "{\"wsgate\":\"subscribe\",\"channel\":\"b\"}",
            "{\"wsgate\":\"subscribed\",\"channel\":\"b\"}");
  op_expect(c, "{\"wsgate\":\"subscribe\",\"channel\":\"c\"}",
            "{\"wsgate\":\"error\",\"op\":\"subscribe\",\"code\":\"too_many_subscriptions\","
            "\"message\":\"the connection has as many subscriptions as --channel-max-per-conn "
            "allows\"}");
  /* A token without the claim allows nothing. */
  ws_client *d = itest_connect(&gw, "carol");
  op_expect(d, "{\"wsgate\":\"subscribe\",\"channel\":\"a\"}",
            "{\"wsgate\":\"error\",\"op\":\"subscribe\",\"code\":\"forbidden\",\"message\":\"the "
            "token does not allow this channel\"}");
  ws_client_destroy(c);
  ws_client_destroy(d);
}
