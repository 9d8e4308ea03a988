/*
 * The direct reply path (docs/GATEWAY.md, "Direct replies") with real programs: a processor
 * sends a gateway's replies over the gateway's direct listener instead of Kafka; the listener
 * refuses bad peers and keeps serving; a gateway that stops acknowledging gets every reply it
 * did not acknowledge through Kafka, in order, none lost (a fake gateway here, so the test decides
 * exactly what is acknowledged); a real gateway stopped mid-stream drops what the processor gave
 * up on and gets it once, through Kafka; a stream of replies to one connection stays in order,
 * once each, across a fallback and the switch back to direct, with the gateway's outbound
 * consumer behind (the barrier).
 */
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
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

/* The id of user's one connection, from Redis. */
static uint64_t only_conn(const itest_gateway *g, const char *user) {
  redisReply *r =
      itest_redis_key_command(g->redis_port, "HKEYS %suser:%s", g->cluster.prefix, user);
  cr_assert(r && r->type == REDIS_REPLY_ARRAY && r->elements == 1, "%s's connection", user);
  uint64_t conn = strtoull(r->element[0]->str, NULL, 10);
  freeReplyObject(r);
  return conn;
}

/* The end of a test that passed: the client gone, the processor stopped cleanly. */
static void finish(ws_client *ws, itest_processor *p, itest_gateway *g) {
  ws_client_close(ws, 1000, "", NULL, 5000);
  ws_client_destroy(ws);
  itest_processor_stop(p, SIGTERM, 30000);
  itest_processor_cleanup(p);
  itest_gateway_cleanup(g);
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
  /* A short ack timeout: a steady stream must never trip it while the gateway answers. */
  const char *pextra[] = {"--direct-secret-file", secret_file(), "--direct-ack-timeout", "50ms",
                          NULL};
  start_pair(&c, &g, &p, pextra);
  ws_client *ws = itest_connect(&g, "alice");
  warm_up(ws, &p);
  double kafka0 =
      itest_metric(g.http_port, "wsgate_gateway_outbound_records_total{result=\"queued\"}");
  double direct0 = itest_metric(g.http_port, "wsgate_gateway_direct_frames_total");
  enum { N = 1500 };
  char m[32];
  for (int i = 0; i < N; i++) {
    snprintf(m, sizeof m, "m-%d", i);
    cr_assert_eq(ws_client_send_text(ws, m, strlen(m)), WS_CLIENT_OK);
    usleep(1000); /* a stream, not a burst: acks arrive while other replies wait for theirs */
  }
  for (int i = 0; i < N; i++) {
    snprintf(m, sizeof m, "m-%d", i);
    itest_expect_text(ws, m, ITEST_TIMEOUT_MS);
  }
  cr_assert_eq(itest_metric(p.http_port, "wsgate_processor_direct_reproduced_total"), 0,
               "no reply was given up on");
  cr_assert_eq(itest_metric(g.http_port, "wsgate_gateway_direct_frames_total"), direct0 + N);
  cr_assert_eq(
      itest_metric(g.http_port, "wsgate_gateway_outbound_records_total{result=\"queued\"}"), kafka0,
      "no reply went through Kafka");
  cr_assert_eq(itest_metric(g.http_port, "wsgate_gateway_direct_peers"), 1);
  cr_assert_eq(itest_metric(p.http_port, "wsgate_processor_direct_peers"), 1);
  finish(ws, &p, &g);
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

  /* A barrier for a partition this gateway does not read (its slot changed): closed. */
  uint8_t bar[WSG_DFRAME_BARRIER_LEN];
  wsg_dframe_barrier(bar, g.slot == 0 ? 1 : 0, 0);
  fd = tcp_connect(port);
  cr_assert_eq(send(fd, hello, hl, 0), (ssize_t)hl);
  cr_assert_eq(send(fd, bar, sizeof bar, 0), (ssize_t)sizeof bar);
  cr_assert(closed_by_peer(fd, 5000), "a barrier for another partition is refused");
  close(fd);
  itest_wait_metric(g.http_port, "wsgate_gateway_direct_refused_total{reason=\"barrier\"}", 1,
                    5000);

  /* A version 1 peer sends no barriers: from it, sequence number 0 is out of sequence. */
  uint8_t hello1[WSG_DFRAME_HELLO_MAX];
  memcpy(hello1, hello, hl);
  cr_assert_eq(hello1[7], WSG_DFRAME_VERSION, "the version's byte");
  hello1[7] = 1;
  fd = tcp_connect(port);
  cr_assert_eq(send(fd, hello1, hl, 0), (ssize_t)hl);
  cr_assert_eq(send(fd, bar, sizeof bar, 0), (ssize_t)sizeof bar);
  cr_assert(closed_by_peer(fd, 5000), "a barrier from a version 1 peer is refused");
  close(fd);
  itest_wait_metric(g.http_port, "wsgate_gateway_direct_refused_total{reason=\"frame\"}", 2, 5000);

  /* One on its own partition, at an offset not read yet: the frame behind it waits, not
   * acknowledged, until the processor gives up (a reset) and the gateway lets go of it. */
  wsg_dframe_barrier(bar, g.slot, 1000000000);
  fd = tcp_connect(port);
  cr_assert_eq(send(fd, hello, hl, 0), (ssize_t)hl);
  cr_assert_eq(send(fd, bar, sizeof bar, 0), (ssize_t)sizeof bar);
  cr_assert_eq(send(fd, bad, sizeof bad, 0), (ssize_t)sizeof bad);
  itest_wait_metric(g.http_port, "wsgate_gateway_direct_barrier_waits_total", 1, 5000);
  pf = (struct pollfd){.fd = fd, .events = POLLIN};
  cr_assert_eq(poll(&pf, 1, 500), 0, "nothing behind the barrier is acknowledged");
  struct linger lg = {.l_onoff = 1, .l_linger = 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(fd);
  itest_wait_metric(g.http_port, "wsgate_gateway_direct_barrier_abandoned_total", 1, 5000);
  cr_assert_eq(itest_metric(g.http_port, "wsgate_gateway_direct_dropped_total"), 1,
               "the frame behind it was never dispatched");

  /* A silent peer is closed after the hello timeout. */
  fd = tcp_connect(port);
  cr_assert(closed_by_peer(fd, 8000), "a peer without a hello is closed");
  close(fd);
  itest_wait_metric(g.http_port, "wsgate_gateway_direct_refused_total{reason=\"hello_timeout\"}", 1,
                    5000);

  /* And the gateway still serves, through the direct path. */
  ws_client *ws = itest_connect(&g, "bob");
  warm_up(ws, &p);
  finish(ws, &p, &g);
}

/* --- a fake gateway: the test decides what is acknowledged ------------------------------------ */

static int fake_listen(int *port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof a;
  cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  cr_assert_eq(listen(fd, 4), 0);
  cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &sl), 0);
  *port = ntohs(a.sin_port);
  return fd;
}

/* One whole frame's body into buf (at most cap bytes); its length. */
static size_t read_frame(int fd, uint8_t *buf, size_t cap) {
  struct pollfd pf = {.fd = fd, .events = POLLIN};
  cr_assert_eq(poll(&pf, 1, ITEST_TIMEOUT_MS), 1, "no frame from the processor");
  uint8_t hdr[4];
  cr_assert_eq(recv(fd, hdr, 4, MSG_WAITALL), 4);
  size_t n = wsg_dframe_get32(hdr);
  cr_assert(n > 0 && n <= cap, "frame length %zu", n);
  cr_assert_eq(recv(fd, buf, n, MSG_WAITALL), (ssize_t)n);
  return n;
}

#define PAD_MAX 2048

/* Message i's text: "k-<i>", then dots up to pad bytes. Its length. */
static size_t msg_text(char *buf, int i, size_t pad) {
  size_t len = (size_t)snprintf(buf, PAD_MAX, "k-%d", i);
  for (; len < pad && len < PAD_MAX; len++)
    buf[len] = '.';
  return len;
}

/* Inbound messages from[..to) for the fake gateway gw, each pad bytes (at least its number). */
static void produce_msgs(rd_kafka_t *prod, const itest_cluster *c, const char *gw, int from, int to,
                         size_t pad) {
  char data[PAD_MAX];
  for (int i = from; i < to; i++) {
    wsg_envelope env = itest_msg("carol", 1, gw, 0, data, msg_text(data, i, pad), false);
    itest_produce(prod, c, &env);
  }
  itest_flush(prod);
}

/* An envelope's data must be message i's. */
static void expect_msg(const wsg_envelope *e, int i, size_t pad, const char *how) {
  char want[PAD_MAX];
  size_t len = msg_text(want, i, pad);
  cr_assert(e->data_len == len && memcmp(e->data, want, len) == 0, "expected k-%d %s, got %.*s", i,
            how, (int)(e->data_len < 32 ? e->data_len : 32), (const char *)e->data);
}

/* The next outbound record must be the reply to message i. */
static void expect_kafka(itest_reader *rd, int i, size_t pad) {
  wsg_envelope e;
  cr_assert(itest_reader_next_envelope(rd, &e, ITEST_TIMEOUT_MS, NULL), "reply k-%d missing", i);
  expect_msg(&e, i, pad, "through Kafka");
}

static bool nothing_uncommitted(void *arg) {
  return itest_uncommitted(arg) == 0;
}

/* A processor whose gateway gw-fake is the test: its record points at a listener of the test's.
 * The first reply (k-0) goes through Kafka while the processor looks the address up; then it
 * connects and says hello. */
typedef struct {
  itest_processor p;
  rd_kafka_t *prod;
  itest_reader rd;
  int lfd, fd;
  int32_t first_part; /* where k-0 went */
  int64_t first_off;
} fake_gw;

static void fake_start(fake_gw *f, itest_cluster *c, const char *const *pextra, size_t pad) {
  itest_cluster_init(c, 2, 2, false);
  int port;
  f->lfd = fake_listen(&port);
  char fmt[160];
  snprintf(fmt, sizeof fmt, "HSET %%sgw:%%s slot 0 direct 127.0.0.1:%d", port);
  redisReply *r = itest_redis_key_command(0, fmt, c->prefix, "gw-fake");
  cr_assert(r && r->type == REDIS_REPLY_INTEGER);
  freeReplyObject(r);
  itest_daemon_opts po = {.extra = pextra};
  itest_processor_start(&f->p, c, "direct-fake", "echo", &po);
  f->prod = itest_producer();
  itest_reader_open(&f->rd, c->out_topic, c->out_partitions);

  produce_msgs(f->prod, c, "gw-fake", 0, 1, pad);
  rd_kafka_message_t *first = itest_reader_next(&f->rd, ITEST_TIMEOUT_MS);
  cr_assert_not_null(first, "reply k-0 missing");
  f->first_part = first->partition;
  f->first_off = first->offset;
  rd_kafka_message_destroy(first);
  struct pollfd pf = {.fd = f->lfd, .events = POLLIN};
  cr_assert_eq(poll(&pf, 1, ITEST_TIMEOUT_MS), 1, "the processor never connected");
  f->fd = accept(f->lfd, NULL, NULL);
  uint8_t buf[4096];
  size_t n = read_frame(f->fd, buf, sizeof buf);
  const uint8_t *secret;
  size_t slen;
  uint32_t version = 0;
  cr_assert_eq(wsg_dframe_hello_parse(buf, n, &secret, &slen, &version), WSG_DHELLO_OK);
  cr_assert(slen == strlen(SECRET) && memcmp(secret, SECRET, slen) == 0);
  cr_assert_eq(version, WSG_DFRAME_VERSION);
  itest_wait_metric(f->p.http_port, "wsgate_processor_direct_peers", 1, ITEST_TIMEOUT_MS);
}

/* The next frame must be the barrier on k-0's place. */
static void fake_expect_barrier(fake_gw *f) {
  uint8_t buf[64];
  size_t n = read_frame(f->fd, buf, sizeof buf);
  int32_t bpart = -1;
  int64_t boff = -1;
  cr_assert(wsg_dframe_barrier_parse(buf, n, &bpart, &boff), "a barrier first");
  cr_assert(bpart == f->first_part && boff == f->first_off,
            "the barrier names k-0's place (%d/%lld), not %d/%lld", (int)f->first_part,
            (long long)f->first_off, (int)bpart, (long long)boff);
}

static void fake_ack(fake_gw *f, uint64_t seq) {
  uint8_t ack[12];
  wsg_dframe_put32(ack, 8);
  wsg_dframe_put64(ack + 4, seq);
  cr_assert_eq(send(f->fd, ack, sizeof ack, 0), 12);
}

static void fake_finish(fake_gw *f, itest_cluster *c) {
  cr_assert(itest_wait_until(nothing_uncommitted, c, ITEST_TIMEOUT_MS),
            "every offset is committed once its replies are acknowledged, by either path");
  itest_reader_close(&f->rd);
  rd_kafka_destroy(f->prod);
  close(f->lfd);
  itest_processor_stop(&f->p, SIGTERM, 30000);
  itest_processor_cleanup(&f->p);
}

Test(direct, unacked_replies_go_through_kafka_in_order, .fini = itest_fini) {
  itest_cluster c;
  const char *extra[] = {"--direct-secret-file",
                         secret_file(),
                         "--direct-ack-timeout",
                         "500ms",
                         "--direct-backoff",
                         "60s",
                         NULL};
  fake_gw f;
  fake_start(&f, &c, extra, 0);

  /* 20 replies arrive here, in order, behind a barrier on the reply Kafka carried; only the
   * first 10 are acknowledged. */
  produce_msgs(f.prod, &c, "gw-fake", 1, 21, 0);
  fake_expect_barrier(&f);
  cr_assert_eq(itest_metric(f.p.http_port, "wsgate_processor_direct_barriers_total"), 1);
  uint8_t buf[4096];
  for (int i = 1; i <= 20; i++) {
    size_t n = read_frame(f.fd, buf, sizeof buf);
    cr_assert_gt(n, WSG_DFRAME_SEQ);
    cr_assert_eq(wsg_dframe_get64(buf), (uint64_t)i, "sequence numbers count from 1");
    wsg_envelope e;
    cr_assert_eq(wsg_envelope_decode(&e, buf + 8, n - 8, NULL), WSG_ENV_OK);
    expect_msg(&e, i, 0, "directly");
  }
  fake_ack(&f, 10);

  /* No more acks: after --direct-ack-timeout the other 10 come through Kafka, in order, once. */
  itest_wait_metric(f.p.http_port,
                    "wsgate_processor_direct_fallbacks_total{reason=\"ack_timeout\"}", 1,
                    ITEST_TIMEOUT_MS);
  for (int i = 11; i <= 20; i++)
    expect_kafka(&f.rd, i, 0);
  cr_assert_eq(itest_metric(f.p.http_port, "wsgate_processor_direct_reproduced_total"), 10);
  cr_assert(closed_by_peer(f.fd, 5000), "the connection was given up");
  close(f.fd);
  /* During --direct-backoff everything goes through Kafka, behind them. */
  produce_msgs(f.prod, &c, "gw-fake", 21, 26, 0);
  for (int i = 21; i < 26; i++)
    expect_kafka(&f.rd, i, 0);
  cr_assert_null(itest_reader_next(&f.rd, 1000), "nothing twice");
  fake_finish(&f, &c);
}

/* Every fallback, whatever the reason. */
static double fallbacks(int http_port) {
  static const char *const reasons[] = {
      "connect",         "connect_timeout", "closed", "write",   "ack_timeout",
      "barrier_timeout", "protocol",        "full",   "too_big", "moved"};
  double sum = 0;
  char series[128];
  for (size_t i = 0; i < sizeof reasons / sizeof *reasons; i++) {
    snprintf(series, sizeof series, "wsgate_processor_direct_fallbacks_total{reason=\"%s\"}",
             reasons[i]);
    double v = itest_metric(http_port, series);
    cr_assert_geq(v, 0, "no series %s", series);
    sum += v;
  }
  return sum;
}

/* An overloaded gateway: it acknowledges steadily but slowly, a few frames every STEP_MS, so a
 * frame waits longer than --direct-ack-timeout for its ack while every ack progresses, and more
 * replies come than --direct-max-unacked holds. The processor waits for room (backpressure):
 * nothing given up, nothing through Kafka, every reply once, in order. Then the gateway stops
 * acknowledging while the processor waits for room: given up --direct-ack-timeout after the last
 * ack (not before), the rest through Kafka, in order, once. */
Test(direct, slow_gateway_is_waited_for_a_silent_one_given_up, .fini = itest_fini) {
  enum { N = 150, ACKED = 100, PAD = 1500, PER_ACK = 5, STEP_MS = 120, TIMEOUT_MS = 400 };
  itest_cluster c;
  const char *extra[] = {"--direct-secret-file",
                         secret_file(),
                         "--direct-ack-timeout",
                         "400ms",
                         "--direct-backoff",
                         "60s",
                         "--direct-max-unacked",
                         "64k",
                         NULL};
  fake_gw f;
  fake_start(&f, &c, extra, PAD);
  produce_msgs(f.prod, &c, "gw-fake", 1, N + 1, PAD);
  fake_expect_barrier(&f);

  static uint8_t buf[PAD_MAX + 256];
  uint64_t got_at[N + 1] = {0}; /* when frame i was read */
  int got = 0, acked = 0;
  uint64_t last_ack = 0, longest_wait = 0;
  uint64_t deadline = itest_now_ms() + ITEST_TIMEOUT_MS;
  while (acked < ACKED) {
    cr_assert_lt(itest_now_ms(), deadline, "stuck at %d read, %d acknowledged", got, acked);
    struct pollfd pf = {.fd = f.fd, .events = POLLIN};
    if (got < N && poll(&pf, 1, 5) == 1) {
      size_t n = read_frame(f.fd, buf, sizeof buf);
      cr_assert_eq(wsg_dframe_get64(buf), (uint64_t)got + 1, "in order, none skipped");
      wsg_envelope e;
      cr_assert_eq(wsg_envelope_decode(&e, buf + 8, n - 8, NULL), WSG_ENV_OK);
      expect_msg(&e, ++got, PAD, "directly");
      got_at[got] = itest_now_ms();
    }
    uint64_t now = itest_now_ms();
    if (got > acked && now - last_ack >= STEP_MS) {
      if (now - got_at[acked + 1] > longest_wait)
        longest_wait = now - got_at[acked + 1];
      acked = acked + PER_ACK < got ? acked + PER_ACK : got;
      if (acked > ACKED)
        acked = ACKED;
      fake_ack(&f, (uint64_t)acked);
      last_ack = now;
    }
  }
  cr_assert_gt(longest_wait, TIMEOUT_MS, "a frame waited %llu ms for its ack: not past the timeout",
               (unsigned long long)longest_wait);
  cr_assert_gt(itest_metric(f.p.http_port, "wsgate_processor_direct_full_wait_seconds_count"), 0,
               "the processor waited for room");
  cr_assert_eq(fallbacks(f.p.http_port), 0, "a gateway that acknowledges is not given up");
  cr_assert_eq(itest_metric(f.p.http_port, "wsgate_processor_direct_reproduced_total"), 0);

  /* Silent from here, while the processor waits for room. */
  itest_wait_metric(f.p.http_port,
                    "wsgate_processor_direct_fallbacks_total{reason=\"ack_timeout\"}", 1,
                    ITEST_TIMEOUT_MS);
  uint64_t took = itest_now_ms() - last_ack;
  cr_assert(took >= TIMEOUT_MS - 50 && took < TIMEOUT_MS + 1500,
            "given up %llu ms after the last ack (--direct-ack-timeout %d ms)",
            (unsigned long long)took, TIMEOUT_MS);
  cr_assert(closed_by_peer(f.fd, 5000), "the connection was given up");
  close(f.fd);
  for (int i = ACKED + 1; i <= N; i++)
    expect_kafka(&f.rd, i, PAD);
  cr_assert_null(itest_reader_next(&f.rd, 1000), "nothing twice");
  cr_assert_eq(fallbacks(f.p.http_port), 1);
  fake_finish(&f, &c);
}

/* A real gateway stopped while replies to it are under way (the test produces the inbound
 * records for its client itself, so there are): the processor gives them to Kafka after
 * --direct-ack-timeout and resets the connection; resumed, the gateway drops what it had not
 * read (the reset comes first) and the client gets every reply once, in order. */
Test(direct, stopped_gateway_gets_each_reply_once_in_order, .fini = itest_fini) {
  itest_cluster c;
  itest_gateway g;
  itest_processor p;
  const char *pextra[] = {"--direct-secret-file", secret_file(), "--direct-ack-timeout", "300ms",
                          NULL};
  start_pair(&c, &g, &p, pextra);
  ws_client *ws = itest_connect(&g, "dave");
  warm_up(ws, &p);
  uint64_t conn = only_conn(&g, "dave");

  kill(g.pid, SIGSTOP);
  enum { N = 50 };
  rd_kafka_t *prod = itest_producer();
  char m[32];
  for (int i = 0; i < N; i++) {
    int len = snprintf(m, sizeof m, "s-%d", i);
    wsg_envelope env = itest_msg("dave", conn, g.id, (uint32_t)g.slot, m, (size_t)len, false);
    itest_produce(prod, &c, &env);
  }
  itest_flush(prod);
  itest_wait_metric(p.http_port, "wsgate_processor_direct_fallbacks_total{reason=\"ack_timeout\"}",
                    1, ITEST_TIMEOUT_MS);
  /* All N, unless the box was so slow that some arrived after the fallback (then they went to
   * Kafka directly). */
  double reproduced = itest_metric(p.http_port, "wsgate_processor_direct_reproduced_total");
  cr_assert(reproduced >= 1 && reproduced <= N,
            "replies the stopped gateway did not acknowledge "
            "go to Kafka (%.0f)",
            reproduced);
  kill(g.pid, SIGCONT);
  for (int i = 0; i < N; i++) {
    snprintf(m, sizeof m, "s-%d", i);
    itest_expect_text(ws, m, ITEST_TIMEOUT_MS);
  }
  ws_message extra_msg;
  cr_assert_eq(ws_client_recv(ws, &extra_msg, 1000), WS_CLIENT_TIMEOUT, "nothing twice");
  cr_assert_eq(itest_metric(g.http_port, "wsgate_gateway_direct_frames_total"),
               itest_metric(p.http_port, "wsgate_processor_direct_frames_total") - reproduced,
               "the gateway dispatched none of the frames it had not read before the reset");
  rd_kafka_destroy(prod);
  finish(ws, &p, &g);
}

static bool fell_back(void *arg) {
  return itest_metric(*(int *)arg,
                      "wsgate_processor_direct_fallbacks_total{reason=\"ack_timeout\"}") >= 1;
}

/* A stream of replies to one connection across a fallback and the switch back to direct. The
 * gateway's outbound consumer is made to lag (each fetch waits up to 400 ms for bytes that never
 * come), so when the processor switches back the replies Kafka already acknowledged are not
 * dispatched yet: without the barrier the first direct replies overtake them. With it: every
 * reply once, in order, and the gateway counts the wait. */
Test(direct, order_holds_across_the_switch_back, .fini = itest_fini) {
  itest_cluster c;
  itest_cluster_init(&c, 2, 2, false);
  const char *sf = secret_file();
  const char *gextra[] = {
      "--direct-listen",       "127.0.0.1:0", "--direct-secret-file",      sf,  "-X",
      "fetch.wait.max.ms=400", "-X",          "fetch.min.bytes=100000000", NULL};
  itest_daemon_opts go = {.extra = gextra};
  itest_gateway g;
  itest_gateway_start(&g, &c, "direct", &go);
  /* An ack timeout longer than the barrier's wait (up to the consumer's 400 ms); the stop outlasts
   * it. */
  const char *pextra[] = {"--direct-secret-file",
                          sf,
                          "--direct-ack-timeout",
                          "1500ms",
                          "--direct-backoff",
                          "500ms",
                          NULL};
  itest_daemon_opts po = {.extra = pextra};
  itest_processor p;
  itest_processor_start(&p, &c, "direct-order", "echo", &po);
  ws_client *ws = itest_connect(&g, "erin");
  warm_up(ws, &p);
  uint64_t conn = only_conn(&g, "erin");

  rd_kafka_t *prod = itest_producer();
  int sent = 0;
  char m[32];
#define SEND_ONE()                                                                                 \
  do {                                                                                             \
    int len_ = snprintf(m, sizeof m, "o-%d", sent++);                                              \
    wsg_envelope env_ = itest_msg("erin", conn, g.id, (uint32_t)g.slot, m, (size_t)len_, false);   \
    itest_produce(prod, &c, &env_);                                                                \
    rd_kafka_poll(prod, 0);                                                                        \
    usleep(5000);                                                                                  \
  } while (0)
  for (int i = 0; i < 20; i++)
    SEND_ONE();
  /* Stopped, the gateway acknowledges nothing: the processor falls back to Kafka. */
  kill(g.pid, SIGSTOP);
  uint64_t deadline = itest_now_ms() + ITEST_TIMEOUT_MS;
  while (!fell_back(&p.http_port)) {
    cr_assert_lt(itest_now_ms(), deadline, "the processor never gave up on the stopped gateway");
    SEND_ONE();
  }
  kill(g.pid, SIGCONT);
  /* Through Kafka for --direct-backoff, then direct again, behind a barrier. */
  double frames0 = itest_metric(p.http_port, "wsgate_processor_direct_frames_total");
  deadline = itest_now_ms() + ITEST_TIMEOUT_MS;
  while (itest_metric(p.http_port, "wsgate_processor_direct_frames_total") < frames0 + 50) {
    cr_assert_lt(itest_now_ms(), deadline, "the processor never switched back to direct");
    SEND_ONE();
  }
  for (int i = 0; i < 20; i++)
    SEND_ONE();
#undef SEND_ONE
  itest_flush(prod);
  for (int i = 0; i < sent; i++) {
    snprintf(m, sizeof m, "o-%d", i);
    itest_expect_text(ws, m, ITEST_TIMEOUT_MS);
  }
  ws_message extra_msg;
  cr_assert_eq(ws_client_recv(ws, &extra_msg, 1000), WS_CLIENT_TIMEOUT, "nothing twice");
  cr_assert_geq(itest_metric(p.http_port, "wsgate_processor_direct_barriers_total"), 1);
  cr_assert_geq(itest_metric(g.http_port, "wsgate_gateway_direct_barrier_waits_total"), 1,
                "the gateway's consumer was behind at the switch: the case the barrier is for");
  cr_assert_eq(itest_metric(p.http_port,
                            "wsgate_processor_direct_fallbacks_total{reason=\"barrier_timeout\"}"),
               0);
  rd_kafka_destroy(prod);
  finish(ws, &p, &g);
}

/* --- a failed eager write ------------------------------------------------------------------- */

/* A data frame to `peer` (hello done): sequence number seq, a deliver of `text` to conn on g. */
static void send_direct_deliver(int peer, const itest_gateway *g, uint64_t conn, uint64_t seq,
                                const char *text) {
  wsg_envelope e = {.kind = WSG_ENV_DELIVER,
                    .version = WSG_ENVELOPE_VERSION,
                    .fields = WSG_F_GATEWAY | WSG_F_CONN | WSG_F_DATA | WSG_F_SLOT,
                    .gateway = g->id,
                    .gateway_len = strlen(g->id),
                    .slot = (uint32_t)g->slot,
                    .conn = conn,
                    .data = (const uint8_t *)text,
                    .data_len = strlen(text)};
  wsg_buf b;
  wsg_buf_init(&b, 0);
  cr_assert_eq(wsg_envelope_encode(&e, &b), WSG_ENV_OK);
  uint8_t hdr[WSG_DFRAME_HDR + WSG_DFRAME_SEQ];
  wsg_dframe_put32(hdr, (uint32_t)(WSG_DFRAME_SEQ + b.len));
  wsg_dframe_put64(hdr + WSG_DFRAME_HDR, seq);
  cr_assert_eq(send(peer, hdr, sizeof hdr, MSG_NOSIGNAL), (ssize_t)sizeof hdr);
  cr_assert_eq(send(peer, b.data, b.len, MSG_NOSIGNAL), (ssize_t)b.len);
  wsg_buf_finish(&b);
}

/* Waits for the gateway's cumulative ack to reach seq. */
static void expect_ack(int peer, uint64_t seq) {
  uint8_t ack[WSG_DFRAME_HDR + WSG_DFRAME_SEQ];
  for (uint64_t got = 0; got < seq;) {
    struct pollfd pf = {.fd = peer, .events = POLLIN};
    cr_assert_eq(poll(&pf, 1, ITEST_TIMEOUT_MS), 1, "no ack of frame %llu",
                 (unsigned long long)seq);
    cr_assert_eq(recv(peer, ack, sizeof ack, MSG_WAITALL), (ssize_t)sizeof ack);
    got = wsg_dframe_get64(ack + WSG_DFRAME_HDR);
  }
}

/* True once user erin's connection is registered in Redis (after the upgrade, asynchronously). */
static bool erin_registered(void *arg) {
  const itest_gateway *g = arg;
  redisReply *r =
      itest_redis_key_command(g->redis_port, "HLEN %suser:%s", g->cluster.prefix, "erin");
  bool one = r && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
  freeReplyObject(r);
  return one;
}

static bool no_connections(void *arg) {
  return itest_metric(*(int *)arg, "wsgate_gateway_connections") == 0;
}

/*
 * An eager write that fails (the client reset its socket and the gateway has not read the reset)
 * ends the connection (gw_outbound.c eager_write(): marked closing, which reads again, and the
 * kill timer). The order is made, not raced (with the gateway merely stopped, lws reads the reset
 * first): the client first goes over --rate-bytes, so the gateway stops reading its socket for the
 * ~8 s its second message waits; in that window the client resets, and this test, as a direct
 * peer, sends a deliver for it. The gateway writes at once (nothing queued) and send() fails.
 * Checked: without both the closing mark and the kill timer the connection outlives the 3 s
 * asked here; the deliver found its connection (no no_such_connection drop) and the failed
 * write is not counted as written.
 */
Test(direct, failed_eager_write_ends_the_connection, .fini = itest_fini) {
  itest_cluster c;
  itest_cluster_init(&c, 2, 2, false);
  const char *gextra[] = {"--direct-listen",
                          "127.0.0.1:0",
                          "--direct-secret-file",
                          secret_file(),
                          "--max-message",
                          "16k",
                          "--rate-bytes",
                          "1k",
                          NULL};
  itest_gateway g;
  itest_gateway_start(&g, &c, "direct-ew", &(itest_daemon_opts){.extra = gextra});
  ws_client *ws = itest_connect(&g, "erin");
  cr_assert(itest_wait_until(erin_registered, &g, ITEST_TIMEOUT_MS), "erin's connection");
  uint64_t conn = only_conn(&g, "erin");
  int peer = tcp_connect(direct_port(&g));
  uint8_t hello[WSG_DFRAME_HELLO_MAX];
  size_t hl = wsg_dframe_hello(hello, (const uint8_t *)SECRET, strlen(SECRET));
  cr_assert_eq(send(peer, hello, hl, 0), (ssize_t)hl);
  send_direct_deliver(peer, &g, conn, 1, "first");
  itest_expect_text(ws, "first", ITEST_TIMEOUT_MS);
  expect_ack(peer, 1);
  const char *eager = "wsgate_gateway_eager_writes_total";
  const char *gone = "wsgate_gateway_outbound_dropped_total{reason=\"no_such_connection\"}";
  double eager0 = itest_metric(g.http_port, eager);
  cr_assert_geq(eager0, 1, "the first deliver was written eagerly");

  /* 16 KiB spends the burst; the next 8 KiB waits 8 s at 1 KiB/s, and reading with it. */
  static char big[16 * 1024];
  memset(big, 'x', sizeof big);
  cr_assert_eq(ws_client_send_text(ws, big, sizeof big), WS_CLIENT_OK);
  cr_assert_eq(ws_client_send_text(ws, big, sizeof big / 2), WS_CLIENT_OK);
  itest_wait_metric(g.http_port, "wsgate_gateway_rate_limited_total", 1, 5000);
  struct linger lg = {.l_onoff = 1, .l_linger = 0};
  cr_assert_eq(setsockopt(ws_client_fd(ws), SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
  ws_client_destroy(ws); /* a reset the gateway does not read while paused */
  send_direct_deliver(peer, &g, conn, 2, "second");
  expect_ack(peer, 2);

  cr_assert(itest_wait_until(no_connections, &g.http_port, 3000), "the connection ended");
  cr_assert_eq(itest_metric(g.http_port, gone), 0, "the deliver found its connection");
  cr_assert_eq(itest_metric(g.http_port, eager), eager0, "the failed write is not counted");
  cr_assert_eq(itest_metric(g.http_port, "wsgate_gateway_direct_dropped_total"), 0);
  close(peer);
}

/* --- acks behind a full socket ---------------------------------------------------------------- */

/* The bytes the kernel still holds to send on the loopback TCP socket from local_port to
 * remote_port (/proc/net/tcp's tx_queue), or -1 when there is no such socket. */
static long tcp_tx_queue(int local_port, int remote_port) {
  FILE *f = fopen("/proc/net/tcp", "r");
  cr_assert_not_null(f);
  char line[512];
  long tx = -1;
  while (tx < 0 && fgets(line, sizeof line, f)) {
    unsigned lport, rport;
    unsigned long txq;
    if (sscanf(line, " %*d: %*x:%x %*x:%x %*x %lx:%*x", &lport, &rport, &txq) == 3 &&
        (int)lport == local_port && (int)rport == remote_port)
      tx = (long)txq;
  }
  fclose(f);
  return tx;
}

/* A processor that stops reading its socket while it keeps sending, so the gateway's acks (one
 * per read) fill the socket and wait for room; then it reads. The newest sequence must be
 * acknowledged once the socket drains, though nothing more is read from the peer: the gateway
 * owes it and its write watcher sends it. Whether the kernel took the last ack in part (the case
 * the old code lost, --direct-ack-timeout then every unacked reply again through Kafka) is the
 * kernel's choice: here it mostly stops at a whole ack (with a 4 KiB receive buffer it did not,
 * and the old code failed 3 runs of 3, but TCP then stalled for seconds of backoff). The unit
 * test tests/unit/gw_dack_test.c covers every cut deterministically. */
Test(direct, newest_ack_follows_a_full_socket, .fini = itest_fini) {
  itest_cluster c;
  itest_cluster_init(&c, 2, 2, false);
  const char *gextra[] = {"--direct-listen", "127.0.0.1:0", "--direct-secret-file", secret_file(),
                          NULL};
  itest_daemon_opts go = {.extra = gextra};
  itest_gateway g;
  itest_gateway_start(&g, &c, "direct", &go);
  int port = direct_port(&g);

  int fd = socket(AF_INET, SOCK_STREAM, 0);
  /* A bounded receive buffer (the default grows to MBs); not one of a few KiB: the kernel then
   * drops loopback segments, TCP's ACKs with them, and stalls for seconds of backoff. */
  int rcvbuf = 64 << 10;
  cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf), 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  struct sockaddr_in me;
  socklen_t ml = sizeof me;
  cr_assert_eq(getsockname(fd, (struct sockaddr *)&me, &ml), 0);
  int my_port = ntohs(me.sin_port);
  uint8_t hello[WSG_DFRAME_HELLO_MAX];
  size_t hl = wsg_dframe_hello(hello, (const uint8_t *)SECRET, strlen(SECRET));
  cr_assert_eq(send(fd, hello, hl, 0), (ssize_t)hl);

  /* Frames one per send (garbage envelopes: acknowledged and dropped), as fast as the gateway
   * takes them, until this side's buffer is full and the gateway's unsent acks stop growing: its
   * socket is full (one ack per read; its send buffer is small, gw_direct.c's ACK_SNDBUF). */
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  uint8_t frame[4 + 8 + 3] = {0, 0, 0, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0xc1, 0xc1, 0xc1};
  uint64_t seq = 0;
  long tx_max = 0;
  int still = 0;
  uint64_t deadline = itest_now_ms() + 60000;
  while (still < 10) { /* 20,000 frames and 100 ms without one more ack queued */
    cr_assert_lt(itest_now_ms(), deadline, "the gateway's acks never filled its socket (%ld bytes)",
                 tx_max);
    for (int i = 0; i < 2000; i++) {
      wsg_dframe_put64(frame + 4, ++seq);
      cr_assert_eq(send(fd, frame, sizeof frame, 0), (ssize_t)sizeof frame);
    }
    usleep(10000);
    long tx = tcp_tx_queue(port, my_port);
    cr_assert_geq(tx, 0, "the gateway's side of the connection");
    int rx = 0;
    cr_assert_eq(ioctl(fd, FIONREAD, &rx), 0);
    if (tx > tx_max) {
      tx_max = tx;
      still = 0;
    } else if (tx > 0 && rx >= rcvbuf / 2) {
      still++;
    }
  }
  itest_wait_metric(g.http_port, "wsgate_gateway_direct_dropped_total", (double)seq, 5000);

  /* Now read: whole acks, each above the last, up to the last sequence sent. */
  uint8_t buf[4096];
  size_t have = 0;
  uint64_t last = 0;
  deadline = itest_now_ms() + 3000; /* above the processor's default --direct-ack-timeout */
  while (last < seq && itest_now_ms() < deadline) {
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    if (poll(&pf, 1, 100) <= 0)
      continue;
    ssize_t n = recv(fd, buf + have, sizeof buf - have, 0);
    cr_assert_gt(n, 0, "the gateway closed the connection");
    have += (size_t)n;
    size_t off = 0;
    for (; have - off >= 12; off += 12) {
      cr_assert_eq(wsg_dframe_get32(buf + off), 8, "an ack's length");
      uint64_t ack = wsg_dframe_get64(buf + off + 4);
      cr_assert_gt(ack, last, "ack %llu after %llu", (unsigned long long)ack,
                   (unsigned long long)last);
      cr_assert_leq(ack, seq);
      last = ack;
    }
    memmove(buf, buf + off, have - off);
    have -= off;
  }
  cr_assert_eq(last, seq, "the newest sequence is acknowledged (%llu of %llu; %ld bytes were held)",
               (unsigned long long)last, (unsigned long long)seq, tx_max);
  close(fd);
  itest_gateway_cleanup(&g);
}
