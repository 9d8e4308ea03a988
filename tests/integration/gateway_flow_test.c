/*
 * The gateway's data path against the real binary, Kafka and Redis: a client frame becomes a
 * `msg` envelope on the inbound topic (key = user, murmur2 partition, connect before it,
 * disconnect after it); deliver envelopes on the gateway's slot partition reach their connection,
 * every connection of a user, or a list; a deliver for another gateway id is dropped (fencing); a
 * close envelope closes with its code; oversized messages close with 1009.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "harness_kafka.h"
#include "harness.h"
#include "wsg_kafka.h"

static itest_gateway gw;
static itest_reader rd;

static void teardown(void) {
  itest_reader_close(&rd);
  itest_gateway_cleanup(&gw);
}

TestSuite(gateway_flow, .fini = teardown, .timeout = 120);

/* Connects `user` and returns its connection id, read from its `connect` envelope. */
static uint64_t connect_user(ws_client **c, const char *user) {
  *c = itest_connect(&gw, user);
  wsg_envelope e;
  itest_reader_expect(&rd, WSG_ENV_CONNECT, user, &e, ITEST_TIMEOUT_MS);
  cr_assert(e.fields & WSG_F_CONN);
  return e.conn;
}

Test(gateway_flow, frame_becomes_envelope_on_inbound_topic) {
  itest_gateway_start(&gw, NULL, "flow-in", NULL);
  itest_reader_open(&rd, gw.cluster.in_topic, gw.cluster.in_partitions);
  int32_t slot = itest_gateway_slot(&gw);

  ws_client *c = itest_connect(&gw, "alice");
  wsg_envelope e;
  int32_t part = -1;
  cr_assert(itest_reader_next_envelope(&rd, &e, ITEST_TIMEOUT_MS, &part), "no connect envelope");
  cr_assert_eq(e.kind, WSG_ENV_CONNECT, "the first envelope is %s", wsg_env_kind_name(e.kind));
  cr_assert(e.user_len == 5 && memcmp(e.user, "alice", 5) == 0);
  cr_assert(e.gateway_len == strlen(gw.id) && memcmp(e.gateway, gw.id, e.gateway_len) == 0);
  cr_assert_eq((int32_t)e.slot, slot);
  cr_assert_eq(part, wsg_kafka_murmur2_partition("alice", 5, ITEST_PARTITIONS));
  uint64_t conn = e.conn;

  cr_assert_eq(ws_client_send_text(c, "hello", 5), WS_CLIENT_OK);
  cr_assert(itest_reader_next_envelope(&rd, &e, ITEST_TIMEOUT_MS, &part), "no msg envelope");
  cr_assert_eq(e.kind, WSG_ENV_MSG);
  cr_assert_eq(e.conn, conn);
  cr_assert_eq(e.seq, 1);
  cr_assert(e.fields & WSG_F_TS);
  cr_assert(e.data_len == 5 && memcmp(e.data, "hello", 5) == 0);
  cr_assert(!e.binary);
  cr_assert_eq(part, wsg_kafka_murmur2_partition("alice", 5, ITEST_PARTITIONS));

  const uint8_t bin[4] = {0, 1, 2, 255};
  cr_assert_eq(ws_client_send(c, WS_OP_BINARY, bin, sizeof bin), WS_CLIENT_OK);
  cr_assert(itest_reader_next_envelope(&rd, &e, ITEST_TIMEOUT_MS, NULL));
  cr_assert_eq(e.kind, WSG_ENV_MSG);
  cr_assert_eq(e.seq, 2);
  cr_assert(e.binary);
  cr_assert(e.data_len == 4 && memcmp(e.data, bin, 4) == 0);

  /* A message in fragments, larger than the 512-byte receive buffer: reassembled as one. */
  char big[5000];
  for (size_t i = 0; i < sizeof big; i++)
    big[i] = (char)('a' + i % 26);
  cr_assert_eq(ws_client_send_fragmented(c, WS_OP_TEXT, big, sizeof big, 700), WS_CLIENT_OK);
  cr_assert(itest_reader_next_envelope(&rd, &e, ITEST_TIMEOUT_MS, NULL));
  cr_assert_eq(e.kind, WSG_ENV_MSG);
  cr_assert_eq(e.seq, 3);
  cr_assert(e.data_len == sizeof big && memcmp(e.data, big, sizeof big) == 0);

  ws_message m;
  cr_assert_eq(ws_client_close(c, 1000, "bye", &m, 5000), WS_CLIENT_OK);
  ws_client_destroy(c);
  cr_assert(itest_reader_next_envelope(&rd, &e, ITEST_TIMEOUT_MS, NULL));
  cr_assert_eq(e.kind, WSG_ENV_DISCONNECT);
  cr_assert_eq(e.conn, conn);
  cr_assert_eq(e.close_code, 1000);

  /* The connection's Redis entry went with it. */
  redisContext *r = itest_redis_connect();
  redisReply *rep = redisCommand(r, "HLEN %suser:alice", gw.cluster.prefix);
  cr_assert(rep && rep->type == REDIS_REPLY_INTEGER);
  cr_assert_eq(rep->integer, 0, "alice still has %lld Redis entries", rep->integer);
  freeReplyObject(rep);
  redisFree(r);
}

Test(gateway_flow, connection_is_registered_in_redis) {
  itest_gateway_start(&gw, NULL, "flow-reg", NULL);
  itest_reader_open(&rd, gw.cluster.in_topic, gw.cluster.in_partitions);
  ws_client *c;
  uint64_t conn = connect_user(&c, "rita");
  redisContext *r = itest_redis_connect();
  redisReply *rep =
      redisCommand(r, "HGET %suser:rita %llu", gw.cluster.prefix, (unsigned long long)conn);
  cr_assert(rep && rep->type == REDIS_REPLY_STRING, "rita's connection is not in Redis");
  cr_assert_str_eq(rep->str, gw.id);
  freeReplyObject(rep);
  redisFree(r);
  ws_client_destroy(c);
}

Test(gateway_flow, deliver_reaches_its_connection_and_fencing_drops_others) {
  itest_gateway_start(&gw, NULL, "flow-out", NULL);
  itest_reader_open(&rd, gw.cluster.in_topic, gw.cluster.in_partitions);
  int32_t slot = itest_gateway_slot(&gw);
  ws_client *c;
  uint64_t conn = connect_user(&c, "bob");

  itest_deliver(&gw, slot, "some-other-gateway", conn, "not for you");
  itest_deliver(&gw, slot, NULL, conn, "for you");
  ws_message m;
  itest_expect_msg(c, WS_OP_TEXT, &m, ITEST_TIMEOUT_MS);
  cr_assert_str_eq((const char *)m.data, "for you");
  cr_assert_eq(
      itest_metric(gw.http_port, "wsgate_gateway_outbound_records_total{result=\"other_gateway\"}"),
      1);

  /* A text deliver that is not UTF-8 would make the client fail the connection: dropped. */
  itest_deliver(&gw, slot, NULL, conn, "bad \xff text");
  itest_deliver(&gw, slot, NULL, conn, "good text");
  itest_expect_msg(c, WS_OP_TEXT, &m, ITEST_TIMEOUT_MS);
  cr_assert_str_eq((const char *)m.data, "good text");
  cr_assert_eq(
      itest_metric(gw.http_port, "wsgate_gateway_outbound_records_total{result=\"invalid\"}"), 1);

  /* A deliver to a connection that does not exist here is counted, not fatal. */
  itest_deliver(&gw, slot, NULL, conn + 12345, "nobody");
  itest_deliver(&gw, slot, NULL, conn, "still here");
  itest_expect_msg(c, WS_OP_TEXT, &m, ITEST_TIMEOUT_MS);
  cr_assert_str_eq((const char *)m.data, "still here");
  cr_assert_geq(
      itest_metric(gw.http_port,
                   "wsgate_gateway_outbound_dropped_total{reason=\"no_such_connection\"}"),
      1);
  ws_client_destroy(c);
}

Test(gateway_flow, deliver_to_a_user_and_to_a_list) {
  itest_gateway_start(&gw, NULL, "flow-fan", NULL);
  itest_reader_open(&rd, gw.cluster.in_topic, gw.cluster.in_partitions);
  int32_t slot = itest_gateway_slot(&gw);
  ws_client *b1, *b2, *c1;
  uint64_t id_b1 = connect_user(&b1, "bob");
  uint64_t id_b2 = connect_user(&b2, "bob");
  uint64_t id_c1 = connect_user(&c1, "carol");
  cr_assert_neq(id_b1, id_b2);

  wsg_envelope e = {0};
  e.kind = WSG_ENV_DELIVER;
  e.version = WSG_ENVELOPE_VERSION;
  e.fields = WSG_F_GATEWAY | WSG_F_USER | WSG_F_DATA | WSG_F_BINARY;
  e.gateway = gw.id;
  e.gateway_len = strlen(gw.id);
  e.user = "bob";
  e.user_len = 3;
  e.data = (const uint8_t *)"to bob";
  e.data_len = 6;
  e.binary = true;
  itest_send_outbound(&gw, slot, &e);

  ws_message m;
  itest_expect_msg(b1, WS_OP_BINARY, &m, ITEST_TIMEOUT_MS);
  cr_assert(m.len == 6 && memcmp(m.data, "to bob", 6) == 0);
  itest_expect_msg(b2, WS_OP_BINARY, &m, ITEST_TIMEOUT_MS);
  cr_assert(m.len == 6 && memcmp(m.data, "to bob", 6) == 0);

  uint64_t list[2] = {id_b2, id_c1};
  memset(&e, 0, sizeof e);
  e.kind = WSG_ENV_DELIVER;
  e.version = WSG_ENVELOPE_VERSION;
  e.fields = WSG_F_GATEWAY | WSG_F_CONNS | WSG_F_DATA;
  e.gateway = gw.id;
  e.gateway_len = strlen(gw.id);
  e.conn_ids = list;
  e.conns.count = 2;
  e.data = (const uint8_t *)"to the list";
  e.data_len = 11;
  itest_send_outbound(&gw, slot, &e);
  /* carol's first message is the list's: the user deliver did not reach her. */
  itest_expect_msg(c1, WS_OP_TEXT, &m, ITEST_TIMEOUT_MS);
  cr_assert_str_eq((const char *)m.data, "to the list");
  itest_expect_msg(b2, WS_OP_TEXT, &m, ITEST_TIMEOUT_MS);
  cr_assert_str_eq((const char *)m.data, "to the list");
  /* b1 was not on the list: its next message is this one. */
  itest_deliver(&gw, slot, NULL, id_b1, "b1 only");
  itest_expect_msg(b1, WS_OP_TEXT, &m, ITEST_TIMEOUT_MS);
  cr_assert_str_eq((const char *)m.data, "b1 only");
  ws_client_destroy(b1);
  ws_client_destroy(b2);
  ws_client_destroy(c1);
}

static void send_close(int32_t slot, uint64_t conn, int code, const char *reason) {
  itest_send_close(&gw, slot, conn, code, reason);
}

Test(gateway_flow, close_envelope_closes_with_its_code_after_queued_messages) {
  itest_gateway_start(&gw, NULL, "flow-close", NULL);
  itest_reader_open(&rd, gw.cluster.in_topic, gw.cluster.in_partitions);
  int32_t slot = itest_gateway_slot(&gw);
  ws_client *a, *b;
  uint64_t ida = connect_user(&a, "dave");
  uint64_t idb = connect_user(&b, "erin");

  itest_deliver(&gw, slot, NULL, ida, "last words");
  send_close(slot, ida, 4100, "kicked");
  ws_message m;
  itest_expect_msg(a, WS_OP_TEXT, &m, ITEST_TIMEOUT_MS);
  cr_assert_str_eq((const char *)m.data, "last words");
  itest_expect_msg(a, WS_OP_CLOSE, &m, ITEST_TIMEOUT_MS);
  cr_assert_eq(m.close_code, 4100);
  cr_assert_str_eq(m.close_reason, "kicked");
  wsg_envelope e;
  itest_reader_expect(&rd, WSG_ENV_DISCONNECT, "dave", &e, ITEST_TIMEOUT_MS);
  cr_assert_eq(e.close_code, 4100);

  /* No code, or one an application may not send (1011 is the gateway's): 4002. */
  send_close(slot, idb, 1011, NULL);
  itest_expect_msg(b, WS_OP_CLOSE, &m, ITEST_TIMEOUT_MS);
  cr_assert_eq(m.close_code, 4002);
  ws_client_destroy(a);
  ws_client_destroy(b);
}

Test(gateway_flow, oversized_message_closes_with_1009) {
  const char *extra[] = {"--max-message", "1k", NULL};
  itest_gateway_start(&gw, NULL, "flow-big", &(itest_daemon_opts){.extra = extra});
  itest_reader_open(&rd, gw.cluster.in_topic, gw.cluster.in_partitions);
  ws_client *c;
  connect_user(&c, "frank");
  char ok[1024], big[1025];
  memset(ok, 'x', sizeof ok);
  memset(big, 'y', sizeof big);
  cr_assert_eq(ws_client_send(c, WS_OP_TEXT, ok, sizeof ok), WS_CLIENT_OK);
  wsg_envelope e;
  itest_reader_expect(&rd, WSG_ENV_MSG, "frank", &e, ITEST_TIMEOUT_MS);
  cr_assert_eq(e.data_len, sizeof ok);
  cr_assert_eq(ws_client_send(c, WS_OP_TEXT, big, sizeof big), WS_CLIENT_OK);
  ws_message m;
  itest_expect_msg(c, WS_OP_CLOSE, &m, ITEST_TIMEOUT_MS);
  cr_assert_eq(m.close_code, 1009);
  /* The oversized message never reached Kafka: the next envelope is the disconnect. */
  cr_assert(itest_reader_next_envelope(&rd, &e, ITEST_TIMEOUT_MS, NULL));
  cr_assert_eq(e.kind, WSG_ENV_DISCONNECT, "got %s", wsg_env_kind_name(e.kind));
  cr_assert_eq(e.close_code, 1009);
  ws_client_destroy(c);

  /* The same limit holds for a message sent in small fragments. */
  connect_user(&c, "frank");
  cr_assert_eq(ws_client_send_fragmented(c, WS_OP_BINARY, big, sizeof big, 100), WS_CLIENT_OK);
  itest_expect_msg(c, WS_OP_CLOSE, &m, ITEST_TIMEOUT_MS);
  cr_assert_eq(m.close_code, 1009);
  ws_client_destroy(c);
}

Test(gateway_flow, invalid_utf8_text_closes_with_1007) {
  itest_gateway_start(&gw, NULL, "flow-utf8", NULL);
  itest_reader_open(&rd, gw.cluster.in_topic, gw.cluster.in_partitions);
  ws_client *c;
  connect_user(&c, "gina");
  cr_assert_eq(ws_client_send(c, WS_OP_TEXT, "ok \xc3\xa9", 5), WS_CLIENT_OK);
  wsg_envelope e;
  itest_reader_expect(&rd, WSG_ENV_MSG, "gina", &e, ITEST_TIMEOUT_MS);
  cr_assert_eq(e.data_len, 5);
  cr_assert_eq(ws_client_send(c, WS_OP_TEXT, "bad \xff\xfe", 6), WS_CLIENT_OK);
  ws_message m;
  itest_expect_msg(c, WS_OP_CLOSE, &m, ITEST_TIMEOUT_MS);
  cr_assert_eq(m.close_code, 1007);
  cr_assert(itest_reader_next_envelope(&rd, &e, ITEST_TIMEOUT_MS, NULL));
  cr_assert_eq(e.kind, WSG_ENV_DISCONNECT, "the invalid message was produced");
  cr_assert_eq(e.seq, 1);
  ws_client_destroy(c);
}
