/*
 * harness_channels: helpers of the channel tests (see harness_channels.h).
 *
 * Threads: the test's.
 */
#include "harness_channels.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gw_jwt.h"
#include "harness_kafka.h"

unsigned long long itest_expect_pub(ws_client *c, const char *channel, unsigned offset,
                                    const char *data_json) {
  ws_message m;
  itest_expect_msg(c, WS_OP_TEXT, &m, ITEST_TIMEOUT_MS);
  char head[256], tail[256];
  snprintf(head, sizeof head,
           "{\"wsgate\":\"pub\",\"channel\":\"%s\",\"offset\":%u,\"epoch\":", channel, offset);
  snprintf(tail, sizeof tail, ",\"data\":%s}", data_json);
  cr_assert(m.len > strlen(head) + strlen(tail) && memcmp(m.data, head, strlen(head)) == 0 &&
                memcmp(m.data + m.len - strlen(tail), tail, strlen(tail)) == 0,
            "got %.*s", (int)m.len, m.data);
  return strtoull((const char *)m.data + strlen(head), NULL, 10);
}

long itest_gws_members(const itest_gateway *g, const char *channel, long want) {
  char key[256];
  snprintf(key, sizeof key, "%sch:{c:%s}:gws", g->cluster.prefix, channel);
  long n = -1;
  for (int i = 0; i < 100; i++) {
    redisReply *rep = itest_redis_key_command(g->redis_port, "SCARD %s%s", key, "");
    n = rep && rep->type == REDIS_REPLY_INTEGER ? (long)rep->integer : -1;
    freeReplyObject(rep);
    if (n == want)
      break;
    usleep(100 * 1000);
  }
  if (n == 1) {
    redisReply *rep = itest_redis_key_command(g->redis_port, "SISMEMBER %s %s", key, g->id);
    cr_expect(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 1,
              "the member is this gateway's id");
    freeReplyObject(rep);
  }
  return n;
}

void itest_op_expect(ws_client *c, const char *op, const char *want) {
  cr_assert_eq(ws_client_send_text(c, op, strlen(op)), WS_CLIENT_OK);
  ws_message m;
  itest_expect_msg(c, WS_OP_TEXT, &m, ITEST_TIMEOUT_MS);
  cr_expect(m.len == strlen(want) && memcmp(m.data, want, m.len) == 0, "%s: got %.*s", op,
            (int)m.len, m.data);
}

void itest_subscribe_new(ws_client *c, const char *channel) {
  char op[256], want[256];
  snprintf(op, sizeof op, "{\"wsgate\":\"subscribe\",\"channel\":\"%s\"}", channel);
  snprintf(want, sizeof want,
           "{\"wsgate\":\"subscribed\",\"channel\":\"%s\",\"epoch\":0,\"offset\":0}", channel);
  itest_op_expect(c, op, want);
}

void itest_send_pub(const itest_gateway *g, const char *channel, uint64_t offset, uint64_t epoch,
                    const char *data) {
  wsg_envelope env = {.kind = WSG_ENV_PUBLISH,
                      .fields = WSG_F_GATEWAY | WSG_F_SLOT | WSG_F_CHANNEL | WSG_F_CH_OFFSET |
                                WSG_F_CH_EPOCH | WSG_F_DATA,
                      .gateway = g->id,
                      .gateway_len = strlen(g->id),
                      .slot = (uint32_t)g->slot,
                      .channel = channel,
                      .channel_len = strlen(channel),
                      .ch_offset = offset,
                      .ch_epoch = epoch,
                      .data = (const uint8_t *)data,
                      .data_len = strlen(data)};
  itest_send_outbound(g, g->slot, &env);
}

void itest_presence_member(const itest_gateway *g, const char *channel, char *member, char *key,
                           size_t len) {
  char rec[300];
  snprintf(rec, sizeof rec, "%sgw:%s", g->cluster.prefix, g->id);
  redisReply *rep = NULL;
  for (int i = 0; i < 100; i++) {
    rep = itest_redis_key_command(g->redis_port, "HGET %s %s", rec, "boot");
    if (rep && rep->type == REDIS_REPLY_STRING)
      break;
    freeReplyObject(rep);
    rep = NULL;
    usleep(100 * 1000);
  }
  cr_assert(rep && rep->len == 16, "%s has no boot", rec);
  snprintf(member, len, "%s#%s", g->id, rep->str);
  freeReplyObject(rep);
  if (key)
    snprintf(key, len, "%sch:{c:%s}:p:%s", g->cluster.prefix, channel, member);
}
