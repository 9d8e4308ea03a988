/*
 * Gateway-initiated closes against a client that never answers them (issue 16 follow-up,
 * docs/GATEWAY.md "Closes and their bounds"): the client completes the upgrade, the gateway
 * decides a close, and from then on the client neither reads nor sends. Every such close must end
 * the connection (the gateway's socket closed, its session and send queue freed) within
 * CLOSE_BOUND_MS of the close frame being queued: lws' own close-ack timer alone fires late on
 * libev (docs/notes/libwebsockets-4.1.6.md#timers).
 *
 * "Ended" is read from the gateway itself (wsgate_gateway_connections, decremented when the
 * session is released at CLOSED): a client that does not read may not see the FIN, so its own
 * view proves nothing. Each test logs how long the gateway held the socket.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "harness_kafka.h"

/* The documented bound (5 s after the close frame is queued) plus the test's own slack: a 100 ms
 * poll, the /metrics round trip and a loaded 2-core box. */
#define CLOSE_BOUND_MS 7500
/* How long a test keeps measuring past the bound, to report what the gateway does without one. */
#define MEASURE_MS 30000
/* After a drain's close phase: the Kafka flush (nothing unacknowledged here) and the Redis
 * release, then the exit. */
#define DRAIN_TAIL_MS 3000

static itest_gateway gw;
static itest_reader rd;

static void teardown(void) {
  itest_reader_close(&rd);
  itest_gateway_cleanup(&gw);
  itest_fini();
}

TestSuite(gateway_closes, .fini = teardown, .timeout = 180);

static double metric(const char *series) {
  return itest_metric(gw.http_port, series);
}

static uint64_t wait_metric_at_least(const char *series, double want, int timeout_ms) {
  return itest_wait_metric(gw.http_port, series, want, timeout_ms);
}

/* Milliseconds from t0 until the gateway holds at most `conns` connections (its /metrics gone
 * counts as none: the process exited), or UINT64_MAX if that took more than MEASURE_MS. */
static uint64_t held_ms(uint64_t t0, double conns) {
  while (itest_now_ms() - t0 <= MEASURE_MS) {
    double n = metric("wsgate_gateway_connections");
    if (n <= conns) /* -1: no answer */
      return itest_now_ms() - t0;
    usleep(100 * 1000);
  }
  return UINT64_MAX;
}

static void assert_within_bound(const char *what, uint64_t ms) {
  if (ms == UINT64_MAX)
    cr_log_info("%s: the gateway still held the socket after %d ms", what, MEASURE_MS);
  else
    cr_log_info("%s: the gateway held the socket %llu ms", what, (unsigned long long)ms);
  cr_assert(ms <= CLOSE_BOUND_MS, "%s: socket held %s%llu ms, bound %d ms", what,
            ms == UINT64_MAX ? "more than " : "",
            (unsigned long long)(ms == UINT64_MAX ? MEASURE_MS : ms), CLOSE_BOUND_MS);
}

/* A client that reads nothing from here on (itest_stop_reading); returns its connection id. */
static uint64_t connect_silent(ws_client **c, const char *user) {
  *c = itest_connect(&gw, user);
  itest_stop_reading(*c);
  wsg_envelope e;
  itest_reader_expect(&rd, WSG_ENV_CONNECT, user, &e, ITEST_TIMEOUT_MS);
  return e.conn;
}

/* Reads the socket to its end: 0 for a FIN, the errno of a reset or error, ETIMEDOUT if it stays
 * open 2 s without data. */
static int stream_end(int fd) {
  static char buf[64 * 1024];
  for (;;) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 2000) <= 0)
      return ETIMEDOUT;
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n == 0)
      return 0;
    if (n < 0)
      return errno;
  }
}

static void start(const char *name, const char *const *extra) {
  itest_gateway_start(&gw, NULL, name, &(itest_daemon_opts){.extra = extra});
  itest_reader_open(&rd, gw.cluster.in_topic, gw.cluster.in_partitions);
}

/* start(), then one silent client of `user` (connect_silent; its id in *conn unless NULL). */
static ws_client *start_silent(const char *name, const char *const *extra, const char *user,
                               uint64_t *conn) {
  start(name, extra);
  ws_client *c;
  uint64_t id = connect_silent(&c, user);
  if (conn)
    *conn = id;
  return c;
}

/* Once the gateway has decided a close counted under `label` (a code, or "app") within
 * decide_ms, it holds at most `conns_left` connections CLOSE_BOUND_MS later, and its backstop
 * counted the close it ended under the same label. */
static void close_labelled_ends_within_the_bound(const char *label, double conns_left,
                                                 int decide_ms) {
  char series[96], what[64];
  snprintf(series, sizeof series, "wsgate_gateway_closes_total{code=\"%s\"}", label);
  uint64_t t0 = wait_metric_at_least(series, 1, decide_ms);
  snprintf(what, sizeof what, "%s to a client that neither reads nor sends", label);
  assert_within_bound(what, held_ms(t0, conns_left));
  snprintf(series, sizeof series, "wsgate_gateway_close_backstops_total{code=\"%s\"}", label);
  cr_assert_eq(metric(series), 1, "%s is %g", series, metric(series));
}

static void close_ends_within_the_bound(int code, double conns_left, int decide_ms) {
  char label[16];
  snprintf(label, sizeof label, "%d", code);
  close_labelled_ends_within_the_bound(label, conns_left, decide_ms);
}

Test(gateway_closes, slow_consumer_4001_ends_within_the_bound) {
  /* --eager-write writes until the socket takes no more, so lws is left holding a frame: the
   * kill must not wait for lws to flush it (docs/notes/libwebsockets-4.1.6.md#closing). */
  const char *extra[] = {"--eager-write=on", "--sendq-hard", "256k", "--sendq-soft", "256k", NULL};
  uint64_t conn;
  ws_client *c = start_silent("closes-4001", extra, "slow", &conn);
  int32_t slot = itest_gateway_slot(&gw);
  /* Until the queue passes --sendq-hard, in steps of 64 KiB so the kernel's buffers (several
   * MiB on loopback) fill first: the close must find bytes the client never acknowledged, or a
   * FIN is the right end and the reset below is not exercised. At most 64 MiB. */
  for (int step = 0; step < 1024 && metric("wsgate_gateway_closes_total{code=\"4001\"}") < 1;
       step++) {
    itest_deliver_many(&gw, slot, conn, 64 * 1024, 1);
    usleep(20 * 1000);
  }
  close_ends_within_the_bound(4001, 0, 10000);
  cr_assert_eq(metric("wsgate_gateway_sendq_bytes"), 0, "the send queue was not released");
  wsg_envelope e;
  itest_reader_expect(&rd, WSG_ENV_DISCONNECT, "slow", &e, ITEST_TIMEOUT_MS);
  cr_assert_eq(e.close_code, 4001);
  /* Our last bytes were still unread: a reset, so no orphaned socket keeps them in the kernel
   * (what the client had not read is gone with it). */
  int end = stream_end(ws_client_fd(c));
  cr_assert_eq(end, ECONNRESET, "the socket ended with %s, not a reset",
               end ? strerror(end) : "a FIN");
  ws_client_destroy(c);
}

/* A processor's close envelope (code 0: none, reason may be NULL) to a silent client: ends
 * within the bound, counted under `label`, and its `disconnect` carries `want`. */
static void app_close_ends_within_the_bound(const char *name, const char *user, int code,
                                            const char *reason, const char *label, int want) {
  uint64_t conn;
  ws_client *c = start_silent(name, NULL, user, &conn);
  itest_send_close(&gw, itest_gateway_slot(&gw), conn, code, reason);
  close_labelled_ends_within_the_bound(label, 0, 10000);
  wsg_envelope e;
  itest_reader_expect(&rd, WSG_ENV_DISCONNECT, user, &e, ITEST_TIMEOUT_MS);
  cr_assert_eq(e.close_code, want);
  ws_client_destroy(c);
}

Test(gateway_closes, app_close_4002_ends_within_the_bound) {
  app_close_ends_within_the_bound("closes-4002", "kicked", 0, NULL, "4002", 4002);
}

/* An application's own code is sent as it is, and counted under code="app" (closes and
 * backstops alike): one series, whatever codes applications pick. */
Test(gateway_closes, app_code_4100_ends_within_the_bound) {
  app_close_ends_within_the_bound("closes-app", "app-kicked", 4100, "done here", "app", 4100);
  cr_assert_eq(metric("wsgate_gateway_closes_total{code=\"4002\"}"), 0);
}

Test(gateway_closes, token_expired_4003_ends_within_the_bound) {
  const char *extra[] = {"--token-refresh-grace", "1s", "--jwt-leeway", "0s", NULL};
  start("closes-4003", extra);
  ws_http_response resp;
  ws_client *c = NULL;
  char auth[1024];
  snprintf(auth, sizeof auth, "Authorization: Bearer %s", itest_token("expiring", 2));
  const char *headers[] = {auth, NULL};
  cr_assert_eq(itest_connect_raw(&gw, "/", headers, "wsgate.v1", &c, &resp), WS_CLIENT_OK);
  itest_stop_reading(c);
  close_ends_within_the_bound(4003, 0, 15000);
  ws_client_destroy(c);
}

Test(gateway_closes, user_limit_4004_ends_within_the_bound) {
  const char *extra[] = {"--max-conns-per-user", "1", NULL};
  ws_client *first = start_silent("closes-4004", extra, "hog", NULL);
  ws_client *second = itest_connect(&gw, "hog");
  close_ends_within_the_bound(4004, 1, 10000);
  ws_client_destroy(second);
  ws_client_destroy(first);
}

/* The rate limit's 1008 is decided inside the connection's own callback (gw__close_now). */
Test(gateway_closes, rate_limit_1008_ends_within_the_bound) {
  const char *extra[] = {"--rate-msgs", "1", "--rate-burst", "2", "--rate-action", "close", NULL};
  ws_client *c = start_silent("closes-1008", extra, "flooder", NULL);
  for (int i = 0; i < 5; i++)
    cr_assert_eq(ws_client_send_text(c, "x", 1), WS_CLIENT_OK);
  close_ends_within_the_bound(1008, 0, 10000);
  ws_client_destroy(c);
}

/* The idle hang-up sends no close frame (a peer that answers no ping reads none): it ends at
 * --idle-timeout, from the backstop's timer, not lws' (which may fire late). */
Test(gateway_closes, idle_hangup_ends_at_the_idle_timeout) {
  const char *extra[] = {"--ping-interval", "1s", "--idle-timeout", "3s", NULL};
  ws_client *c = start_silent("closes-idle", extra, "mute", NULL);
  uint64_t t0 = wait_metric_at_least("wsgate_gateway_idle_closes_total", 1, 10000);
  uint64_t ms = held_ms(t0, 0);
  cr_log_info("idle hang-up: the gateway held the socket %llu ms after deciding it",
              (unsigned long long)ms);
  cr_assert(ms <= 2000, "the idle hang-up took %llu ms", (unsigned long long)ms);
  ws_client_destroy(c);
}

/* A drain's 1001 to a silent client ends within the bound, so the close phase, and the exit, do
 * not wait for --drain-grace (minus 4 s: the flush and the release). Read from the exit: the
 * operations endpoint goes with the process. */
Test(gateway_closes, drain_1001_ends_within_the_bound) {
  const char *extra[] = {"--drain-window", "0s", "--drain-grace", "30s", NULL};
  ws_client *c = start_silent("closes-1001", extra, "stays", NULL);
  uint64_t t0 = itest_now_ms();
  cr_assert_eq(kill(gw.pid, SIGTERM), 0);
  itest_gateway_stop(&gw, 0, 40000);
  uint64_t ms = itest_now_ms() - t0;
  cr_log_info("1001 (drain) to a silent client: the gateway exited %llu ms after SIGTERM",
              (unsigned long long)ms);
  cr_assert_leq(ms, CLOSE_BOUND_MS + DRAIN_TAIL_MS, "the drain waited for --drain-grace");
  ws_client_destroy(c);
}
