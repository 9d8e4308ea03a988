/*
 * The commands topic end to end (docs/API.md, "Over Kafka"): commands produced as a backend
 * would, executed by a real wsgate-processor, delivered by a real wsgate-gateway to WebSocket
 * clients: send to a user (all connections), to a list of users, to one connection; disconnect a
 * connection and a user with a code and a reason; the queries and a publish to a bad channel
 * name are refused with a reason (dead-lettered), never silently. Publishing to channels through
 * this topic is tested end to end in api_test (wsgate-api is a thin producer onto it). With
 * WSGATE_TEST_REDIS_CLUSTER the daemons (and this test's reads) use that Redis Cluster.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <hiredis.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "harness_kafka.h"
#include "wsg_command.h"

#define RECV_MS 20000

static itest_cluster cl;
static itest_gateway gw;
static itest_processor proc;
static rd_kafka_t *prod;

static void setup(void) {
  itest_cluster_init(&cl, 2, 2, true);
  itest_cluster_add_commands(&cl, 2);
  itest_gateway_start(&gw, &cl, "cmd-gw", NULL);
  itest_processor_start(&proc, &cl, "cmd-proc", "echo", NULL);
  prod = itest_producer();
}

static void teardown(void) {
  if (prod)
    rd_kafka_destroy(prod);
  prod = NULL;
  itest_processor_cleanup(&proc);
  itest_gateway_cleanup(&gw);
  itest_fini();
}

TestSuite(commands, .init = setup, .fini = teardown, .timeout = 180);

/* Produces `cmd` to the commands topic, keyed as docs/PROTOCOL.md says. */
static void produce(const wsg_command *cmd) {
  wsg_buf b;
  wsg_buf_init(&b, 0);
  const char *field = "";
  int rc = wsg_command_encode(cmd, &b, &field);
  cr_assert_eq(rc, WSG_ENV_OK, "encode: %s (%s)", wsg_env_strerror(rc), field);
  size_t klen;
  const char *key = wsg_command_key(cmd, &klen);
  itest_produce_raw(prod, cl.cmd_topic, key, klen, b.data, b.len);
  itest_flush(prod);
  wsg_buf_finish(&b);
}

/* The ids of `user`'s connections in Redis (the shared node, or the Redis Cluster of
 * WSGATE_TEST_REDIS_CLUSTER where the daemons run then), once there are `want` of them. */
static size_t conns_of(const char *user, size_t want, uint64_t *ids) {
  size_t n = 0;
  for (int tries = 0; tries < 200 && n < want; tries++) {
    redisReply *r = itest_redis_key_command(0, "HKEYS %suser:%s", cl.prefix, user);
    cr_assert(r && r->type == REDIS_REPLY_ARRAY, "HKEYS user:%s: %s", user,
              r && r->type == REDIS_REPLY_ERROR ? r->str : "no reply");
    n = r->elements;
    for (size_t i = 0; i < n && i < want; i++)
      ids[i] = strtoull(r->element[i]->str, NULL, 10);
    freeReplyObject(r);
    if (n < want)
      usleep(50 * 1000);
  }
  cr_assert_eq(n, want, "user %s has %zu connections in Redis, want %zu", user, n, want);
  return n;
}

#define STR(x) ((wsg_cmd_str){x, strlen(x)})

Test(commands, every_command_end_to_end) {
  ws_client *a1 = itest_connect(&gw, "alice");
  ws_client *a2 = itest_connect(&gw, "alice");
  ws_client *b = itest_connect(&gw, "bob");
  uint64_t aids[2], bids[1];
  conns_of("alice", 2, aids);
  conns_of("bob", 1, bids);

  /* send to a user: every connection */
  const char *hello = "hello alice";
  produce(&(wsg_command){.kind = WSG_CMD_SEND,
                         .fields = WSG_CF_USER | WSG_CF_DATA | WSG_CF_ID,
                         .id = STR("t1"),
                         .user = STR("alice"),
                         .data = (const uint8_t *)hello,
                         .data_len = strlen(hello)});
  itest_expect_text(a1, hello, RECV_MS);
  itest_expect_text(a2, hello, RECV_MS);

  /* send to a list of users */
  const wsg_cmd_str users[] = {STR("alice"), STR("bob")};
  const char *all = "to both";
  produce(&(wsg_command){.kind = WSG_CMD_SEND,
                         .fields = WSG_CF_USERS | WSG_CF_DATA,
                         .users.count = 2,
                         .user_list = users,
                         .data = (const uint8_t *)all,
                         .data_len = strlen(all)});
  itest_expect_text(a1, all, RECV_MS);
  itest_expect_text(a2, all, RECV_MS);
  itest_expect_text(b, all, RECV_MS);

  /* send to one connection: only that one gets it (the next frame of the other is later) */
  const char *one = "just you";
  produce(&(wsg_command){.kind = WSG_CMD_SEND,
                         .fields = WSG_CF_USER | WSG_CF_CONN | WSG_CF_DATA,
                         .user = STR("alice"),
                         .conn = aids[0],
                         .data = (const uint8_t *)one,
                         .data_len = strlen(one)});
  const char *marker = "marker";
  produce(&(wsg_command){.kind = WSG_CMD_SEND,
                         .fields = WSG_CF_USER | WSG_CF_DATA,
                         .user = STR("alice"),
                         .data = (const uint8_t *)marker,
                         .data_len = strlen(marker)});
  /* Which client holds aids[0] is not known: the one that gets "just you" first. */
  ws_message m1, m2;
  itest_recv(a1, &m1, RECV_MS);
  itest_recv(a2, &m2, RECV_MS);
  bool a1_first = m1.len == strlen(one) && memcmp(m1.data, one, m1.len) == 0;
  bool a2_first = m2.len == strlen(one) && memcmp(m2.data, one, m2.len) == 0;
  cr_assert(a1_first != a2_first, "exactly one connection gets the connection's send");
  itest_expect_text(a1_first ? a1 : a2, marker, RECV_MS);
  ws_client *target = a1_first ? a1 : a2, *other = a1_first ? a2 : a1;

  /* disconnect one connection with a code and a reason */
  produce(
      &(wsg_command){.kind = WSG_CMD_DISCONNECT,
                     .fields = WSG_CF_USER | WSG_CF_CONN | WSG_CF_CLOSE_CODE | WSG_CF_CLOSE_REASON,
                     .user = STR("alice"),
                     .conn = aids[0],
                     .close_code = 4100,
                     .close_reason = STR("bye tab")});
  itest_expect_close(target, 4100, RECV_MS);

  /* disconnect a user: default code 1000 */
  produce(&(wsg_command){.kind = WSG_CMD_DISCONNECT, .fields = WSG_CF_USER, .user = STR("bob")});
  itest_expect_close(b, 1000, RECV_MS);

  /* the other connection of alice is still there */
  produce(&(wsg_command){.kind = WSG_CMD_SEND,
                         .fields = WSG_CF_USER | WSG_CF_DATA,
                         .user = STR("alice"),
                         .data = (const uint8_t *)marker,
                         .data_len = strlen(marker)});
  itest_expect_text(other, marker, RECV_MS);

  /* Everything executed: the commands topic's lag gauges come down to 0 (refreshed every
   * second; a transaction marker would count, but these were produced without one). */
  double lag0 = -1, lag1 = -1;
  for (int i = 0; i < 100 && (lag0 != 0 || lag1 != 0); i++) {
    usleep(100 * 1000);
    lag0 = itest_metric(proc.http_port, "wsgate_processor_commands_lag{partition=\"0\"}");
    lag1 = itest_metric(proc.http_port, "wsgate_processor_commands_lag{partition=\"1\"}");
  }
  cr_assert(lag0 == 0 && lag1 == 0, "commands lag %g and %g after every command ran", lag0, lag1);
  ws_client_destroy(a1);
  ws_client_destroy(a2);
  ws_client_destroy(b);
}

Test(commands, queries_and_bad_channels_are_refused_with_a_reason) {
  itest_reader dlq;
  itest_reader_open(&dlq, cl.dlq_topic, 1);
  produce(
      &(wsg_command){.kind = WSG_CMD_PRESENCE, .fields = WSG_CF_CHANNEL, .channel = STR("news")});
  produce(&(wsg_command){.kind = WSG_CMD_INFO});
  /* {"v":1,"t":"publish","ch":"a\x01","d":"x"}: written by hand, the encoder refuses it */
  static const uint8_t bad_ch[] = {0x84, 0xa1, 'v', 0x01, 0xa1, 't', 0xa7, 'p',
                                   'u',  'b',  'l', 'i',  's',  'h', 0xa2, 'c',
                                   'h',  0xa2, 'a', 0x01, 0xa1, 'd', 0xa1, 'x'};
  itest_produce_raw(prod, cl.cmd_topic, "a", 1, bad_ch, sizeof bad_ch);
  itest_flush(prod);
  /* Several partitions (keyed by channel, info by nothing): any order. */
  const char *want[] = {"presence is a query", "info is a query", "not a valid command: "};
  bool seen[3] = {false, false, false};
  for (int i = 0; i < 3; i++) {
    rd_kafka_message_t *msg = itest_reader_next(&dlq, RECV_MS);
    cr_assert_not_null(msg, "no dead letter for command %d", i);
    rd_kafka_headers_t *h = NULL;
    const void *v = NULL;
    size_t vlen = 0;
    cr_assert_eq(rd_kafka_message_headers(msg, &h), RD_KAFKA_RESP_ERR_NO_ERROR);
    cr_assert_eq(rd_kafka_header_get_last(h, "wsgate-error", &v, &vlen),
                 RD_KAFKA_RESP_ERR_NO_ERROR);
    int which = -1;
    for (int k = 0; k < 3; k++)
      if (vlen >= strlen(want[k]) && memcmp(v, want[k], strlen(want[k])) == 0)
        which = k;
    cr_assert(which >= 0 && !seen[which], "dead letter says %.*s", (int)vlen, (const char *)v);
    seen[which] = true;
    const void *t = NULL;
    size_t tlen = 0;
    cr_assert_eq(rd_kafka_header_get_last(h, "wsgate-source-topic", &t, &tlen),
                 RD_KAFKA_RESP_ERR_NO_ERROR);
    cr_assert(tlen == strlen(cl.cmd_topic) && memcmp(t, cl.cmd_topic, tlen) == 0);
    rd_kafka_message_destroy(msg);
  }
  itest_reader_close(&dlq);
  /* a garbage record is dead-lettered too, and the processor goes on */
  itest_produce_raw(prod, cl.cmd_topic, "k", 1, "\xc1", 1);
  itest_flush(prod);
  cr_assert_eq(itest_wait_http(proc.http_port, "/readyz", 200, 10000), 0);
}

/* At least once: a processor killed (SIGKILL) while commands stream in loses none of them; the
 * next processor re-executes what the dead one had not committed (duplicates, counted). */
Test(commands, processor_killed_mid_stream_loses_none) {
  enum { N = 300 };
  ws_client *b = itest_connect(&gw, "bob");
  uint64_t ids[1];
  conns_of("bob", 1, ids);
  static uint8_t seen[N + 1];
  memset(seen, 0, sizeof seen);
  int distinct = 0, dups = 0;
  char text[32];
  itest_processor second = {0};
  for (int i = 1; i <= N; i++) {
    snprintf(text, sizeof text, "%d", i);
    produce(&(wsg_command){.kind = WSG_CMD_SEND,
                           .fields = WSG_CF_USER | WSG_CF_DATA,
                           .user = STR("bob"),
                           .data = (const uint8_t *)text,
                           .data_len = strlen(text)});
    if (i == N / 3) {
      itest_processor_stop(&proc, SIGKILL, 10000);
      itest_processor_start(&second, &cl, "cmd-proc-2", "echo", NULL);
    }
  }
  uint64_t deadline = itest_now_ms() + 90000;
  while (distinct < N && itest_now_ms() < deadline) {
    ws_message m;
    itest_recv(b, &m, (int)(deadline - itest_now_ms()));
    int v = atoi((const char *)m.data);
    cr_assert(v >= 1 && v <= N, "unexpected frame %.*s", (int)m.len, (const char *)m.data);
    if (seen[v]++)
      dups++;
    else
      distinct++;
  }
  cr_assert_eq(distinct, N, "%d of %d commands delivered", distinct, N);
  cr_log_info("processor killed mid-stream: %d commands, all delivered, %d duplicates", N, dups);
  itest_processor_cleanup(&second);
  ws_client_destroy(b);
}
