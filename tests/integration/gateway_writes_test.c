/*
 * --eager-write against the real binary (gw_outbound.c eager_write): a message for a connection
 * with nothing queued is written at once, later ones queue behind what the socket did not take.
 * A burst to a client that reads late and slowly arrives whole and in order, some of it written
 * directly and the rest from the queue; a client that never reads is still closed with 4001; with
 * the switch off nothing is written directly.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness_kafka.h"
#include "harness.h"

static itest_gateway gw;
static itest_reader rd;

static void teardown(void) {
  itest_reader_close(&rd);
  itest_gateway_cleanup(&gw);
}

TestSuite(gateway_writes, .fini = teardown, .timeout = 180);

#define EAGER "wsgate_gateway_eager_writes_total"
#define OUT   "wsgate_gateway_messages_out_total"

/* 400 x 48 KiB = 19 MiB: far more than a non-reading client's socket buffers on both sides take
 * (tcp_wmem's 4 MiB and a receive window that does not grow while nothing is read), so the send
 * queue must take over; each message still fits one frame (FRAG_SIZE), so it may go directly. */
#define BURST_N    400
#define BURST_SIZE ((size_t)48 * 1024)

static uint64_t start_and_connect(const char *prefix, const char *write_flag, ws_client **c) {
  /* Queue limits far above the burst: this is about order and completeness, not 4001. */
  const char *extra[] = {write_flag, "--sendq-hard",      "128m", "--sendq-soft",
                         "128m",     "--sendq-soft-time", "1h",   NULL};
  itest_gateway_start(&gw, NULL, prefix, &(itest_daemon_opts){.extra = extra});
  itest_reader_open(&rd, gw.cluster.in_topic, gw.cluster.in_partitions);
  *c = itest_connect(&gw, "tortoise");
  wsg_envelope e;
  itest_reader_expect(&rd, WSG_ENV_CONNECT, "tortoise", &e, ITEST_TIMEOUT_MS);
  return e.conn;
}

/* Reads the burst late (after it was all dispatched) and slowly, checking each message. */
static void read_burst(ws_client *c) {
  itest_wait_metric_eq(gw.http_port, "wsgate_gateway_outbound_records_total{result=\"queued\"}",
                       BURST_N, ITEST_TIMEOUT_MS);
  usleep(300 * 1000);
  for (int i = 0; i < BURST_N; i++) {
    ws_message m;
    int rc = ws_client_recv(c, &m, ITEST_TIMEOUT_MS);
    cr_assert_eq(rc, WS_CLIENT_OK, "message %d: %s", i, ws_client_strerror(rc));
    cr_assert_eq(m.opcode, WS_OP_BINARY, "message %d: opcode %d", i, (int)m.opcode);
    cr_assert(itest_numbered_ok(m.data, m.len, BURST_SIZE, i),
              "message %d: %zu bytes starting %.8s: out of order, cut or corrupt", i, m.len,
              (const char *)m.data);
    if (i % 20 == 19)
      usleep(10 * 1000); /* slowly: the queue drains over many writeable events */
  }
  ws_message m;
  cr_assert_eq(ws_client_recv(c, &m, 300), WS_CLIENT_TIMEOUT, "a message after the burst");
}

/* The burst to a client that reads it late and slowly, with write_flag; returns how many of its
 * messages were written directly. */
static double burst(const char *prefix, const char *write_flag, ws_client **c, uint64_t *conn) {
  *conn = start_and_connect(prefix, write_flag, c);
  itest_deliver_numbered(&gw, itest_gateway_slot(&gw), *conn, BURST_SIZE, BURST_N);
  read_burst(*c);
  cr_assert_eq(itest_metric(gw.http_port, OUT), BURST_N);
  cr_assert_eq(itest_metric(gw.http_port, "wsgate_gateway_sendq_bytes"), 0);
  return itest_metric(gw.http_port, EAGER);
}

Test(gateway_writes, burst_to_a_late_slow_reader_arrives_whole_and_in_order) {
  ws_client *c;
  uint64_t conn;
  double eager = burst("dwburst", "--eager-write=on", &c, &conn);
  /* Both paths ran: the first messages went straight to the socket, the rest (the socket full)
   * through the queue. */
  cr_assert(eager >= 1 && eager < BURST_N, "%g of %d written at once", eager, BURST_N);
  /* The connection is still healthy: a later message alone goes directly. */
  itest_deliver(&gw, itest_gateway_slot(&gw), NULL, conn, "after");
  ws_message m;
  itest_expect_msg(c, WS_OP_TEXT, &m, ITEST_TIMEOUT_MS);
  cr_assert_str_eq((const char *)m.data, "after");
  itest_wait_metric_eq(gw.http_port, EAGER, eager + 1, ITEST_TIMEOUT_MS);
  ws_client_destroy(c);
}

Test(gateway_writes, off_writes_nothing_directly) {
  ws_client *c;
  uint64_t conn;
  cr_assert_eq(burst("dwoff", "--eager-write=off", &c, &conn), 0);
  ws_client_destroy(c);
}

Test(gateway_writes, a_client_that_never_reads_is_still_closed_with_4001) {
  const char *extra[] = {"--eager-write=on",  "--sendq-hard", "256k", "--sendq-soft", "128k",
                         "--sendq-soft-time", "1s",           NULL};
  itest_gateway_start(&gw, NULL, "dwslow", &(itest_daemon_opts){.extra = extra});
  itest_reader_open(&rd, gw.cluster.in_topic, gw.cluster.in_partitions);
  ws_client *c = itest_connect(&gw, "sloth");
  wsg_envelope e;
  itest_reader_expect(&rd, WSG_ENV_CONNECT, "sloth", &e, ITEST_TIMEOUT_MS);
  /* 32 KiB messages: each fits the queue's hard limit, so only the queue growing closes it. */
  itest_deliver_many(&gw, itest_gateway_slot(&gw), e.conn, 32 * 1024, 800);
  itest_wait_metric_eq(gw.http_port, "wsgate_gateway_closes_total{code=\"4001\"}", 1,
                       ITEST_TIMEOUT_MS);
  itest_wait_metric_eq(gw.http_port, "wsgate_gateway_sendq_bytes", 0, ITEST_TIMEOUT_MS);
  cr_assert_geq(itest_metric(gw.http_port, EAGER), 1,
                "the socket was filled by eager writes first");
  itest_reader_expect(&rd, WSG_ENV_DISCONNECT, "sloth", &e, ITEST_TIMEOUT_MS);
  cr_assert_eq(e.close_code, 4001);
  ws_client_destroy(c);
}
