/*
 * The gateway's per-connection limits and flow control against the real binary: a client that
 * never reads is closed (4001) once its send queue passes --sendq-hard, and its memory is freed;
 * --rate-action pause delays messages without dropping any, close ends the connection with 1008;
 * when librdkafka's queue fills, reading stops and resumes, and every message still arrives once,
 * in order.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "harness_kafka.h"
#include "harness.h"

static itest_gateway gw;
static itest_reader rd;

static void teardown(void) {
  itest_reader_close(&rd);
  itest_gateway_cleanup(&gw);
}

TestSuite(gateway_limits, .fini = teardown, .timeout = 180);

static void wait_metric(const char *series, double want, int timeout_ms) {
  itest_wait_metric_eq(gw.http_port, series, want, timeout_ms);
}

static uint64_t connect_user(ws_client **c, const char *user) {
  *c = itest_connect(&gw, user);
  wsg_envelope e;
  itest_reader_expect(&rd, WSG_ENV_CONNECT, user, &e, ITEST_TIMEOUT_MS);
  return e.conn;
}

Test(gateway_limits, slow_consumer_is_closed_and_its_queue_freed) {
  const char *extra[] = {"--sendq-hard", "256k", "--sendq-soft", "128k", "--sendq-soft-time",
                         "1s",           NULL};
  itest_gateway_start(&gw, NULL, "slow", &(itest_daemon_opts){.extra = extra});
  itest_reader_open(&rd, gw.cluster.in_topic, gw.cluster.in_partitions);
  int32_t slot = itest_gateway_slot(&gw);
  ws_client *fast, *slow;
  uint64_t id_slow = connect_user(&slow, "sloth");
  uint64_t id_fast = connect_user(&fast, "hare");

  /* More than the kernel's socket buffers on both sides can absorb, so the queue must grow. */
  itest_deliver_many(&gw, slot, id_slow, 64 * 1024, 400);
  wait_metric("wsgate_gateway_closes_total{code=\"4001\"}", 1, ITEST_TIMEOUT_MS);
  /* The queue is dropped at once; the socket goes at the latest when the close times out. */
  wait_metric("wsgate_gateway_sendq_bytes", 0, ITEST_TIMEOUT_MS);
  wait_metric("wsgate_gateway_connections", 1, ITEST_TIMEOUT_MS);
  /* Counted once, when decided: not again when (or if) its close frame is written. */
  cr_assert_eq(itest_metric(gw.http_port, "wsgate_gateway_closes_total{code=\"4001\"}"), 1);
  wsg_envelope e;
  itest_reader_expect(&rd, WSG_ENV_DISCONNECT, "sloth", &e, ITEST_TIMEOUT_MS);
  cr_assert_eq(e.close_code, 4001);

  /* The other client was not affected. */
  itest_deliver(&gw, slot, NULL, id_fast, "still served");
  ws_message m;
  itest_expect_msg(fast, WS_OP_TEXT, &m, ITEST_TIMEOUT_MS);
  cr_assert_str_eq((const char *)m.data, "still served");

  /* The slow client finds data then the end: a 4001 close if it fit, or EOF. */
  int rc;
  int frames = 0;
  while ((rc = ws_client_recv(slow, &m, 10000)) == WS_CLIENT_OK && m.opcode != WS_OP_CLOSE)
    frames++;
  cr_assert(rc == WS_CLIENT_CLOSED || (rc == WS_CLIENT_OK && m.close_code == 4001),
            "after %d frames: %s / close %u", frames, ws_client_strerror(rc), m.close_code);
  ws_client_destroy(slow);
  ws_client_destroy(fast);
}

Test(gateway_limits, rate_limit_pause_delays_without_dropping) {
  const char *extra[] = {"--rate-msgs", "20", "--rate-burst", "5", NULL};
  itest_gateway_start(&gw, NULL, "ratep", &(itest_daemon_opts){.extra = extra});
  itest_reader_open(&rd, gw.cluster.in_topic, gw.cluster.in_partitions);
  ws_client *c;
  connect_user(&c, "rapid");
  for (int i = 1; i <= 25; i++) {
    char msg[16];
    int n = snprintf(msg, sizeof msg, "m%d", i);
    cr_assert_eq(ws_client_send_text(c, msg, (size_t)n), WS_CLIENT_OK);
  }
  uint64_t first_ts = 0, last_ts = 0;
  for (int i = 1; i <= 25; i++) {
    wsg_envelope e;
    itest_reader_expect(&rd, WSG_ENV_MSG, "rapid", &e, ITEST_TIMEOUT_MS);
    cr_assert_eq(e.seq, (uint64_t)i);
    char want[16];
    int n = snprintf(want, sizeof want, "m%d", i);
    cr_assert(e.data_len == (size_t)n && memcmp(e.data, want, (size_t)n) == 0, "message %d", i);
    if (i == 1)
      first_ts = e.ts_us;
    last_ts = e.ts_us;
  }
  /* 5 at once, then 20 more at 20/s: about a second. */
  cr_assert_geq(last_ts - first_ts, 800000, "25 messages within %llu us",
                (unsigned long long)(last_ts - first_ts));
  cr_assert_gt(itest_metric(gw.http_port, "wsgate_gateway_rate_limited_total"), 0);
  ws_client_destroy(c);
}

Test(gateway_limits, rate_limit_close_sends_1008) {
  const char *extra[] = {"--rate-msgs", "1", "--rate-burst", "2", "--rate-action", "close", NULL};
  itest_gateway_start(&gw, NULL, "ratec", &(itest_daemon_opts){.extra = extra});
  itest_reader_open(&rd, gw.cluster.in_topic, gw.cluster.in_partitions);
  ws_client *c;
  connect_user(&c, "spammer");
  for (int i = 0; i < 3; i++)
    cr_assert_eq(ws_client_send_text(c, "x", 1), WS_CLIENT_OK);
  ws_message m;
  itest_expect_msg(c, WS_OP_CLOSE, &m, ITEST_TIMEOUT_MS);
  cr_assert_eq(m.close_code, 1008);
  ws_client_destroy(c);
}

Test(gateway_limits, kafka_queue_full_pauses_reading_and_loses_nothing) {
  /* A producer queue of 8 messages that is flushed every 100 ms: 60 messages sent at once must
   * stall the connection several times. */
  const char *extra[] = {"-X", "queue.buffering.max.messages=8", "-X", "linger.ms=100", NULL};
  itest_gateway_start(&gw, NULL, "pressure", &(itest_daemon_opts){.extra = extra});
  itest_reader_open(&rd, gw.cluster.in_topic, gw.cluster.in_partitions);
  ws_client *c;
  connect_user(&c, "flood");
  for (int i = 1; i <= 60; i++) {
    char msg[16];
    int n = snprintf(msg, sizeof msg, "f%d", i);
    cr_assert_eq(ws_client_send_text(c, msg, (size_t)n), WS_CLIENT_OK);
  }
  for (int i = 1; i <= 60; i++) {
    wsg_envelope e;
    itest_reader_expect(&rd, WSG_ENV_MSG, "flood", &e, ITEST_TIMEOUT_MS);
    cr_assert_eq(e.seq, (uint64_t)i, "message %d arrived as n=%llu", i, (unsigned long long)e.seq);
    char want[16];
    int n = snprintf(want, sizeof want, "f%d", i);
    cr_assert(e.data_len == (size_t)n && memcmp(e.data, want, (size_t)n) == 0, "message %d", i);
  }
  cr_assert_gt(itest_metric(gw.http_port, "wsgate_gateway_kafka_backpressure_total"), 0);
  cr_assert_gt(itest_metric(gw.http_port, "wsgate_gateway_kafka_stalls_total"), 0);
  wait_metric("wsgate_gateway_kafka_backpressure", 0, ITEST_TIMEOUT_MS);
  ws_client_destroy(c);
}
