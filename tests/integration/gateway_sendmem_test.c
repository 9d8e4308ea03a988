/*
 * Memory per gateway (issue 16 item 4, docs/RELIABILITY.md "Hostile input"): clients that stop
 * reading while messages pile up for them. --sendq-max bounds all send queues together, closing
 * the largest first with 4001 while the others keep working; the soft limit is checked from the
 * keepalive wheel, so a queue that stopped growing is closed too; and a pong that answers no ping
 * of ours keeps no connection alive.
 *
 * A client "stops reading" by never calling recv, with a 4 KiB receive buffer so the kernel
 * absorbs little and the bytes stay in the gateway's queue.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "harness_kafka.h"

static itest_gateway gw;
static itest_reader rd;

static void teardown(void) {
  itest_reader_close(&rd);
  itest_gateway_cleanup(&gw);
}

TestSuite(gateway_sendmem, .fini = teardown, .timeout = 180);

static double metric(const char *series) {
  return itest_metric(gw.http_port, series);
}

static void wait_metric_at_least(const char *series, double want, int timeout_ms) {
  itest_wait_metric(gw.http_port, series, want, timeout_ms);
}

static uint64_t connect_user(ws_client **c, const char *user, bool small_rcvbuf) {
  *c = itest_connect(&gw, user);
  if (small_rcvbuf)
    itest_stop_reading(*c);
  wsg_envelope e;
  itest_reader_expect(&rd, WSG_ENV_CONNECT, user, &e, ITEST_TIMEOUT_MS);
  return e.conn;
}

static long rss_kib(pid_t pid) {
  char path[64], buf[4096];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  if (!itest_read_file(path, buf, sizeof buf))
    return -1;
  const char *p = strstr(buf, "VmRSS:");
  return p ? atol(p + 6) : -1;
}

/* Reads until the close frame or EOF; returns the close code (0 for EOF) and counts messages. */
static unsigned drain(ws_client *c, int *msgs) {
  ws_message m;
  int rc;
  *msgs = 0;
  while ((rc = ws_client_recv(c, &m, 10000)) == WS_CLIENT_OK && m.opcode != WS_OP_CLOSE)
    (*msgs)++;
  return rc == WS_CLIENT_OK ? m.close_code : 0;
}

/* Delivers 1 MiB at a time to conn until the gateway's queues hold more than `base` bytes: the
 * kernel's socket buffers (the gateway's send buffer grows to 4 MiB here) are full and what comes
 * next stays in conn's queue. Returns the bytes queued then. */
static double fill_kernel(int32_t slot, uint64_t conn, double base) {
  for (int mib = 0; mib < 32; mib++) {
    itest_deliver_many(&gw, slot, conn, 64 * 1024, 16);
    for (int i = 0; i < 10; i++) {
      double q = metric("wsgate_gateway_sendq_bytes");
      if (metric("wsgate_gateway_sendq_budget_closes_total") > 0)
        return q; /* the bound was crossed and the total fell */
      if (q > base) {
        /* Growing, or only a wake-up's batch held to its end (eager writes under load; the
         * metrics are read from another thread): growing if it still is a moment later. */
        usleep(200 * 1000);
        q = metric("wsgate_gateway_sendq_bytes");
        if (q > base || metric("wsgate_gateway_sendq_budget_closes_total") > 0)
          return q;
      }
      usleep(50 * 1000);
    }
  }
  cr_assert_fail("32 MiB delivered and nothing queued: the client reads after all?");
  return 0;
}

#define SLOW 3

Test(gateway_sendmem, over_sendq_max_the_largest_queues_are_closed_first) {
  /* Per connection up to 16 MiB would be fine; all together 5 MiB is the bound. */
  const char *extra[] = {"--sendq-hard", "16m",         "--sendq-soft", "16m", "--sendq-soft-time",
                         "1h",           "--sendq-max", "5m",           NULL};
  itest_gateway_start(&gw, NULL, "sendmem", &(itest_daemon_opts){.extra = extra});
  itest_reader_open(&rd, gw.cluster.in_topic, gw.cluster.in_partitions);
  int32_t slot = itest_gateway_slot(&gw);
  long rss0 = rss_kib(gw.pid);
  ws_client *slow[SLOW], *fast;
  uint64_t id[SLOW];
  char name[32];
  for (int i = 0; i < SLOW; i++) {
    snprintf(name, sizeof name, "slow-%d", i);
    id[i] = connect_user(&slow[i], name, false); /* drained fast at the end */
  }
  uint64_t id_fast = connect_user(&fast, "fast", false);

  /* Each queue holds 0-1 MiB once its kernel buffers are full, then gets 3 MiB, 1 MiB and 1.5 MiB
   * more: 5.5-8.5 MiB in all, over 5 MiB however much the kernels took, and slow-0's (3-4 MiB)
   * the largest when the total crosses the bound. Closing it leaves at most 4.5 MiB. */
  const int extra_chunks[SLOW] = {48, 16, 24};
  double base = 0;
  for (int i = 0; i < SLOW; i++) {
    double q = fill_kernel(slot, id[i], base);
    cr_log_info("slow-%d: queue starts to grow (%.0f bytes queued in all)", i, q);
    if (metric("wsgate_gateway_sendq_budget_closes_total") > 0)
      break; /* crossed while filling slow-2's kernel buffers: slow-0 was still the largest */
    itest_deliver_many(&gw, slot, id[i], 64 * 1024, extra_chunks[i]);
    usleep(300 * 1000);
    base = metric("wsgate_gateway_sendq_bytes");
  }
  itest_deliver(&gw, slot, NULL, id_fast, "still served");
  ws_message m;
  itest_expect_msg(fast, WS_OP_TEXT, &m, ITEST_TIMEOUT_MS);
  cr_assert_str_eq((const char *)m.data, "still served");

  wait_metric_at_least("wsgate_gateway_sendq_budget_closes_total", 1, ITEST_TIMEOUT_MS);
  double queued = metric("wsgate_gateway_sendq_bytes");
  double closes = metric("wsgate_gateway_sendq_budget_closes_total");
  long rss1 = rss_kib(gw.pid);
  cr_log_info("sendq_bytes %.0f (max 5 MiB), budget closes %.0f, RSS %ld -> %ld KiB", queued,
              closes, rss0, rss1);
  cr_assert_leq(queued, 5.0 * 1024 * 1024, "the queues hold %.0f bytes, over --sendq-max", queued);
  cr_assert_eq(closes, 1, "%.0f connections closed for the budget, expected the largest only",
               closes);
  cr_assert_eq(metric("wsgate_gateway_closes_total{code=\"4001\"}"), 1);
  wsg_envelope e;
  itest_reader_expect(&rd, WSG_ENV_DISCONNECT, "slow-0", &e, ITEST_TIMEOUT_MS);
  cr_assert_eq(e.close_code, 4001);

  /* The others kept their connections: once they read, everything queued for them arrives, in
   * order, up to a last message sent now. */
  for (int i = 1; i < SLOW; i++) {
    itest_deliver(&gw, slot, NULL, id[i], "last");
    ws_message lm;
    int msgs = 0;
    for (;;) {
      itest_recv(slow[i], &lm, ITEST_TIMEOUT_MS);
      msgs++;
      if (lm.len == 4 && memcmp(lm.data, "last", 4) == 0)
        break;
    }
    cr_log_info("slow-%d read %d messages after the close of slow-0", i, msgs);
  }
  int msgs = 0;
  unsigned code = drain(slow[0], &msgs);
  cr_assert(code == 4001 || code == 0, "slow-0 ended with %u after %d messages", code, msgs);
  cr_assert_eq(metric("wsgate_gateway_connections"), SLOW, "only slow-0 may have been closed");
  for (int i = 0; i < SLOW; i++)
    ws_client_destroy(slow[i]);
  ws_client_destroy(fast);
}

Test(gateway_sendmem, a_queue_that_stops_growing_over_the_soft_limit_is_closed) {
  /* No push comes after the queue went over the soft limit: only the periodic check sees it. */
  const char *extra[] = {"--sendq-hard",
                         "16m",
                         "--sendq-soft",
                         "256k",
                         "--sendq-soft-time",
                         "1s",
                         "--ping-interval",
                         "1s",
                         "--idle-timeout",
                         "60s",
                         NULL};
  itest_gateway_start(&gw, NULL, "sendsoft", &(itest_daemon_opts){.extra = extra});
  itest_reader_open(&rd, gw.cluster.in_topic, gw.cluster.in_partitions);
  int32_t slot = itest_gateway_slot(&gw);
  ws_client *slow;
  uint64_t id = connect_user(&slow, "stuck", true);
  fill_kernel(slot, id, 0);
  itest_deliver_many(&gw, slot, id, 64 * 1024, 8);
  uint64_t t0 = itest_now_ms();
  wait_metric_at_least("wsgate_gateway_closes_total{code=\"4001\"}", 1, 15000);
  cr_log_info("a queue over the soft limit (1 s) with no further push closed after %llu ms",
              (unsigned long long)(itest_now_ms() - t0));
  wsg_envelope e;
  itest_reader_expect(&rd, WSG_ENV_DISCONNECT, "stuck", &e, ITEST_TIMEOUT_MS);
  cr_assert_eq(e.close_code, 4001);
  ws_client_destroy(slow);
}

Test(gateway_sendmem, an_unsolicited_pong_does_not_keep_a_connection_alive) {
  const char *extra[] = {"--ping-interval", "1s", "--idle-timeout", "3s", NULL};
  itest_gateway_start(&gw, NULL, "pongs", &(itest_daemon_opts){.extra = extra});
  itest_reader_open(&rd, gw.cluster.in_topic, gw.cluster.in_partitions);
  ws_client *liar, *honest;
  connect_user(&liar, "liar", false);
  connect_user(&honest, "honest", false);
  /* The liar never reads our pings but sends pongs (with the old fixed payload too); the honest
   * client answers every ping (recv does). */
  uint64_t end = itest_now_ms() + 7000;
  while (itest_now_ms() < end) {
    ws_client_send_frame(liar, WS_OP_PONG, true, true, "wsgate", 6);
    ws_message m;
    int rc = ws_client_recv(honest, &m, 300);
    cr_assert(rc == WS_CLIENT_OK || rc == WS_CLIENT_TIMEOUT,
              "the honest client lost its "
              "connection: %s",
              ws_client_strerror(rc));
  }
  /* The disconnect first: the idle close is counted before it is produced, so the count read
   * after it is final, however late a loaded box ran the idle timer. */
  wsg_envelope e;
  itest_reader_expect(&rd, WSG_ENV_DISCONNECT, "liar", &e, ITEST_TIMEOUT_MS);
  cr_assert_eq(e.close_code, 1006);
  cr_log_info("pongs ignored %.0f, idle closes %.0f", metric("wsgate_gateway_pongs_ignored_total"),
              metric("wsgate_gateway_idle_closes_total"));
  cr_assert_eq(metric("wsgate_gateway_idle_closes_total"), 1,
               "the liar was not dropped (or the honest client was)");
  /* One pong per 300 ms until the liar is dropped (3-4 s; fewer on a slow or sanitized build). */
  cr_assert_geq(metric("wsgate_gateway_pongs_ignored_total"), 3);
  ws_client_destroy(liar);
  ws_client_destroy(honest);
}
