/*
 * The direct reply path (docs/GATEWAY.md, "Direct replies") with real programs: a processor
 * sends a gateway's replies over the gateway's direct listener instead of Kafka; the listener
 * refuses bad peers and keeps serving; a gateway that stops acknowledging gets every reply it
 * did not acknowledge through Kafka, in order, none lost (a fake gateway here, so the test decides
 * exactly what is acknowledged); a real gateway stopped mid-stream drops what the processor gave
 * up on and gets it once, through Kafka.
 */
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "harness_kafka.h"
#include "wsg_dframe.h"

#define SECRET "direct-test-secret-0123456789abcdef"

static const char *secret_file(void) {
  static char path[256];
  snprintf(path, sizeof path, "/tmp/wsgate-direct-secret-%d", (int)getpid());
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f);
  fputs(SECRET "\n", f);
  fclose(f);
  return path;
}

/* The gateway's advertised direct port, from its Redis record. */
static int direct_port(const itest_gateway *g) {
  redisReply *r =
      itest_redis_key_command(g->redis_port, "HGET %sgw:%s direct", g->cluster.prefix, g->id);
  cr_assert(r && r->type == REDIS_REPLY_STRING, "no direct field in the gateway's record");
  const char *colon = strrchr(r->str, ':');
  cr_assert_not_null(colon);
  int port = atoi(colon + 1);
  freeReplyObject(r);
  return port;
}

static void start_pair(itest_cluster *c, itest_gateway *g, itest_processor *p,
                       const char *const *pextra) {
  itest_cluster_init(c, 2, 2, false);
  const char *sf = secret_file();
  const char *gextra[] = {"--direct-listen", "127.0.0.1:0", "--direct-secret-file", sf, NULL};
  itest_daemon_opts go = {.extra = gextra};
  itest_gateway_start(g, c, "direct", &go);
  const char *def[] = {"--direct-secret-file", sf, NULL};
  itest_daemon_opts po = {.extra = pextra ? pextra : def};
  itest_processor_start(p, c, "direct-echo", "echo", &po);
}

/* Round trips until one came back through the direct path (the first ones go through Kafka
 * while the processor looks the address up and connects). */
static void warm_up(ws_client *ws, const itest_processor *p) {
  uint64_t deadline = itest_now_ms() + ITEST_TIMEOUT_MS;
  for (int i = 0; itest_metric(p->http_port, "wsgate_processor_direct_frames_total") < 1; i++) {
    cr_assert_lt(itest_now_ms(), deadline, "no reply went through the direct path");
    char m[32];
    snprintf(m, sizeof m, "warm-%d", i);
    cr_assert_eq(ws_client_send_text(ws, m, strlen(m)), WS_CLIENT_OK);
    itest_expect_text(ws, m, ITEST_TIMEOUT_MS);
    usleep(50 * 1000);
  }
}

Test(direct, replies_skip_kafka, .fini = itest_fini) {
  itest_cluster c;
  itest_gateway g;
  itest_processor p;
  start_pair(&c, &g, &p, NULL);
  ws_client *ws = itest_connect(&g, "alice");
  warm_up(ws, &p);
  double kafka0 =
      itest_metric(g.http_port, "wsgate_gateway_outbound_records_total{result=\"queued\"}");
  double direct0 = itest_metric(g.http_port, "wsgate_gateway_direct_frames_total");
  enum { N = 200 };
  char m[32];
  for (int i = 0; i < N; i++) {
    snprintf(m, sizeof m, "m-%d", i);
    cr_assert_eq(ws_client_send_text(ws, m, strlen(m)), WS_CLIENT_OK);
  }
  for (int i = 0; i < N; i++) {
    snprintf(m, sizeof m, "m-%d", i);
    itest_expect_text(ws, m, ITEST_TIMEOUT_MS);
  }
  cr_assert_eq(itest_metric(g.http_port, "wsgate_gateway_direct_frames_total"), direct0 + N);
  cr_assert_eq(
      itest_metric(g.http_port, "wsgate_gateway_outbound_records_total{result=\"queued\"}"), kafka0,
      "no reply went through Kafka");
  cr_assert_eq(itest_metric(g.http_port, "wsgate_gateway_direct_peers"), 1);
  cr_assert_eq(itest_metric(p.http_port, "wsgate_processor_direct_peers"), 1);
  ws_client_close(ws, 1000, "", NULL, 5000);
  ws_client_destroy(ws);
  itest_processor_stop(&p, SIGTERM, 30000);
  itest_processor_cleanup(&p);
  itest_gateway_cleanup(&g);
}

static int tcp_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  return fd;
}

/* True once the peer closed fd (EOF or reset) within timeout_ms. */
static bool closed_by_peer(int fd, int timeout_ms) {
  struct pollfd pf = {.fd = fd, .events = POLLIN};
  uint64_t deadline = itest_now_ms() + (uint64_t)timeout_ms;
  while (itest_now_ms() < deadline) {
    if (poll(&pf, 1, 100) > 0) {
      char b[64];
      ssize_t n = recv(fd, b, sizeof b, 0);
      if (n <= 0)
        return true;
    }
  }
  return false;
}

Test(direct, bad_peers_are_refused, .fini = itest_fini) {
  itest_cluster c;
  itest_gateway g;
  itest_processor p;
  start_pair(&c, &g, &p, NULL);
  int port = direct_port(&g);

  uint8_t hello[WSG_DFRAME_HELLO_MAX];
  size_t hl = wsg_dframe_hello(hello, (const uint8_t *)"not-the-secret-at-all", 21);
  int fd = tcp_connect(port);
  cr_assert_eq(send(fd, hello, hl, 0), (ssize_t)hl);
  cr_assert(closed_by_peer(fd, 5000), "a wrong secret is refused");
  close(fd);
  itest_wait_metric(g.http_port, "wsgate_gateway_direct_refused_total{reason=\"secret\"}", 1, 5000);

  const uint8_t zero[4] = {0, 0, 0, 0};
  fd = tcp_connect(port);
  cr_assert_eq(send(fd, zero, 4, 0), 4);
  cr_assert(closed_by_peer(fd, 5000), "a frame of length 0 is refused");
  close(fd);
  itest_wait_metric(g.http_port, "wsgate_gateway_direct_refused_total{reason=\"hello\"}", 1, 5000);

  /* The right hello, then a frame longer than any record. */
  hl = wsg_dframe_hello(hello, (const uint8_t *)SECRET, strlen(SECRET));
  const uint8_t huge[4] = {0x7f, 0xff, 0xff, 0xff};
  fd = tcp_connect(port);
  cr_assert_eq(send(fd, hello, hl, 0), (ssize_t)hl);
  cr_assert_eq(send(fd, huge, 4, 0), 4);
  cr_assert(closed_by_peer(fd, 5000), "an oversized frame is refused");
  close(fd);
  itest_wait_metric(g.http_port, "wsgate_gateway_direct_refused_total{reason=\"frame\"}", 1, 5000);

  /* Garbage in place of an envelope: acknowledged and dropped, like a bad Kafka record. */
  uint8_t bad[4 + 8 + 3] = {0, 0, 0, 11, 0, 0, 0, 0, 0, 0, 0, 1, 0xc1, 0xc1, 0xc1};
  fd = tcp_connect(port);
  cr_assert_eq(send(fd, hello, hl, 0), (ssize_t)hl);
  cr_assert_eq(send(fd, bad, sizeof bad, 0), (ssize_t)sizeof bad);
  uint8_t ack[12];
  struct pollfd pf = {.fd = fd, .events = POLLIN};
  cr_assert_eq(poll(&pf, 1, 5000), 1);
  cr_assert_eq(recv(fd, ack, sizeof ack, MSG_WAITALL), 12);
  cr_assert_eq(wsg_dframe_get32(ack), 8);
  cr_assert_eq(wsg_dframe_get64(ack + 4), 1, "acknowledged");
  close(fd);
  cr_assert_eq(itest_metric(g.http_port, "wsgate_gateway_direct_dropped_total"), 1);

  /* A silent peer is closed after the hello timeout. */
  fd = tcp_connect(port);
  cr_assert(closed_by_peer(fd, 8000), "a peer without a hello is closed");
  close(fd);
  itest_wait_metric(g.http_port, "wsgate_gateway_direct_refused_total{reason=\"hello_timeout\"}", 1,
                    5000);

  /* And the gateway still serves, through the direct path. */
  ws_client *ws = itest_connect(&g, "bob");
  warm_up(ws, &p);
  ws_client_close(ws, 1000, "", NULL, 5000);
  ws_client_destroy(ws);
  itest_processor_stop(&p, SIGTERM, 30000);
  itest_processor_cleanup(&p);
  itest_gateway_cleanup(&g);
}
