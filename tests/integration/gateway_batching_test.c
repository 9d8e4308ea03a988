/*
 * Load-adaptive batching of the gateway's inbound producer (--kafka-batching adaptive, wsg_kbatch)
 * against the real binary and Kafka: with a threshold of one frame in flight most frames of a
 * burst are held and released in batches, and every user's frames still reach the inbound topic
 * complete and in order, across burst -> idle -> burst (hold -> direct -> hold); a SIGTERM right
 * after a burst drains what is held and in flight before the gateway exits; an explicit
 * -X linger.ms turns the holding off.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "harness_kafka.h"
#include "harness.h"

#define USERS 3
#define BURST 300

static itest_gateway gw;
static itest_reader rd;

static void teardown(void) {
  itest_reader_close(&rd);
  itest_gateway_cleanup(&gw);
  itest_fini();
}

TestSuite(gateway_batching, .fini = teardown, .timeout = 180);

static const char *users[USERS] = {"alice", "bob", "carol"};

static void send_burst(ws_client **c, int from, int n) {
  char buf[64];
  for (int i = from; i < from + n; i++) {
    for (int u = 0; u < USERS; u++) {
      int len = snprintf(buf, sizeof buf, "%s-%d", users[u], i);
      cr_assert_eq(ws_client_send_text(c[u], buf, (size_t)len), WS_CLIENT_OK);
    }
  }
}

/* Reads the inbound topic until every user's `total` frames came, checking each user's order. */
static void expect_in_order(int total) {
  int next[USERS] = {0};
  int done = 0;
  uint64_t deadline = itest_now_ms() + 60000;
  while (done < USERS * total && itest_now_ms() < deadline) {
    wsg_envelope e;
    if (!itest_reader_next_envelope(&rd, &e, 1000, NULL) || e.kind != WSG_ENV_MSG)
      continue;
    for (int u = 0; u < USERS; u++) {
      if (e.user_len != strlen(users[u]) || memcmp(e.user, users[u], e.user_len) != 0)
        continue;
      char want[64];
      int len = snprintf(want, sizeof want, "%s-%d", users[u], next[u]);
      cr_assert(e.data_len == (size_t)len && memcmp(e.data, want, (size_t)len) == 0,
                "%s: frame %d is \"%.*s\", expected \"%s\"", users[u], next[u], (int)e.data_len,
                (const char *)e.data, want);
      cr_assert_eq(e.seq, (uint64_t)next[u] + 1, "%s: seq %llu at frame %d", users[u],
                   (unsigned long long)e.seq, next[u]);
      next[u]++;
      done++;
    }
  }
  for (int u = 0; u < USERS; u++)
    cr_assert_eq(next[u], total, "%s: %d of %d frames reached Kafka", users[u], next[u], total);
}

static double sent(const char *path) {
  char series[128];
  snprintf(series, sizeof series, "wsgate_gateway_kafka_sent_total{path=\"%s\"}", path);
  return itest_metric(gw.http_port, series);
}

/* Starts a gateway with `extra` flags, opens the inbound reader and connects every user. */
static void start(const char *name, const char *const *extra, ws_client **c) {
  itest_daemon_opts o = {.extra = extra};
  itest_gateway_start(&gw, NULL, name, &o);
  itest_reader_open(&rd, gw.cluster.in_topic, gw.cluster.in_partitions);
  for (int u = 0; u < USERS; u++)
    c[u] = itest_connect(&gw, users[u]);
}

static void disconnect(ws_client **c) {
  for (int u = 0; u < USERS; u++)
    ws_client_destroy(c[u]);
}

Test(gateway_batching, order_per_user_across_hold_and_release) {
  const char *extra[] = {"--kafka-batch-inflight", "1", "--kafka-batch-hold", "20ms", NULL};
  ws_client *c[USERS];
  start("batch-order", extra, c);

  send_burst(c, 0, BURST);
  usleep(300 * 1000); /* idle: everything released and acknowledged, the next frame goes direct */
  double direct_before = sent("direct");
  send_burst(c, BURST, 1);
  usleep(300 * 1000);
  cr_assert_gt(sent("direct"), direct_before, "after an idle pause a frame goes straight");
  send_burst(c, BURST + 1, BURST);
  expect_in_order(2 * BURST + 1);

  cr_assert_gt(sent("held"), 0, "no frame was held: the test did not cross the threshold");
  cr_assert_gt(itest_metric(gw.http_port, "wsgate_gateway_kafka_batches_total"), 0);
  cr_assert_eq(itest_metric(gw.http_port, "wsgate_gateway_kafka_held"), 0);
  cr_assert_eq(
      itest_metric(gw.http_port, "wsgate_gateway_kafka_delivered_total{result=\"failed\"}"), 0);
  disconnect(c);
}

Test(gateway_batching, sigterm_drains_held_frames) {
  /* Held for up to a second unless acknowledgements release them first. */
  const char *extra[] = {"--kafka-batch-inflight", "1", "--kafka-batch-hold", "1s", NULL};
  ws_client *c[USERS];
  start("batch-drain", extra, c);
  send_burst(c, 0, BURST);
  /* Every frame read (produced or held), then at once the signal. */
  uint64_t deadline = itest_now_ms() + 20000;
  while (itest_metric(gw.http_port, "wsgate_gateway_messages_in_total") < USERS * BURST &&
         itest_now_ms() < deadline)
    usleep(1000);
  /* held now, or held and released already */
  double held = itest_metric(gw.http_port, "wsgate_gateway_kafka_held") + sent("held");
  cr_assert_eq(kill(gw.pid, SIGTERM), 0);
  for (int u = 0; u < USERS; u++) /* the clients answer the drain's close, so the flush begins */
    itest_expect_close(c[u], 1001, 10000);
  int st = itest_gateway_stop(&gw, 0, 30000);
  cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "gateway exit status %d", st);
  cr_assert_gt(held, 0, "no frame was held before the signal");
  expect_in_order(BURST);
  char log[1 << 16];
  cr_assert_not(strstr(itest_read_file(gw.log, log, sizeof log), "not acknowledged"),
                "the drain left frames unacknowledged: see %s", gw.log);
  disconnect(c);
}

Test(gateway_batching, explicit_linger_turns_holding_off) {
  const char *extra[] = {"--kafka-batch-inflight", "1", "-X", "linger.ms=2", NULL};
  ws_client *c[USERS];
  start("batch-linger", extra, c);
  send_burst(c, 0, BURST);
  expect_in_order(BURST);
  cr_assert_eq(sent("held"), 0, "-X linger.ms given, yet frames were held");
  cr_assert_geq(sent("direct"), USERS * BURST);
  disconnect(c);
}
