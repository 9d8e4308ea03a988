/*
 * wsg_redis_conn without a server: argument checks, error strings, destroy(NULL), no callback
 * from inside create/command/destroy, and retries with backoff against a port that refuses.
 * The behaviour against a real redis-server is tests/integration/wsg_redis_conn_test.c's.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <ev.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "wsg_metrics.h"
#include "wsg_redis_conn.h"
#include "wsg_time.h"

typedef struct {
  int handshakes, readies, downs, replies, released;
} hooks;

static void on_handshake(void *arg) {
  ((hooks *)arg)->handshakes++;
}
static void on_ready(void *arg) {
  ((hooks *)arg)->readies++;
}
static void on_down(void *arg) {
  ((hooks *)arg)->downs++;
}
static void on_reply(void *arg, wsg_redis_conn_req *req, const struct redisReply *rep) {
  (void)req;
  (void)rep;
  if (arg != NULL)
    ((hooks *)arg)->replies++;
}

static wsg_redis_conn_options opts(hooks *h, int port) {
  return (wsg_redis_conn_options){.host = "127.0.0.1",
                                  .port = port,
                                  .timeout_ms = 500,
                                  .on_handshake = on_handshake,
                                  .on_ready = on_ready,
                                  .on_down = on_down,
                                  .arg = h};
}

Test(wsg_redis_conn, destroy_null_is_a_noop) {
  wsg_redis_conn_destroy(NULL);
}

Test(wsg_redis_conn, error_strings) {
  cr_assert_str_eq(wsg_redis_conn_strerror(WSG_REDIS_CONN_OK), "success");
  cr_assert_str_eq(wsg_redis_conn_err_name(WSG_REDIS_CONN_NOT_CONNECTED),
                   "WSG_REDIS_CONN_NOT_CONNECTED");
  cr_assert_str_eq(wsg_redis_conn_err_name(WSG_REDIS_CONN_INVALID), "WSG_REDIS_CONN_INVALID");
  cr_assert_str_eq(wsg_redis_conn_err_name(WSG_REDIS_CONN_NOMEM), "WSG_REDIS_CONN_NOMEM");
  cr_assert_str_eq(wsg_redis_conn_err_name(42), "WSG_REDIS_CONN_UNKNOWN");
  cr_assert_str_eq(wsg_redis_conn_strerror(42), "unknown Redis connection error");
}

Test(wsg_redis_conn, create_rejects_bad_options) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  hooks h = {0};
  char longhost[300];
  memset(longhost, 'a', sizeof(longhost) - 1);
  longhost[sizeof(longhost) - 1] = '\0';
  wsg_redis_conn_options bad[7];
  for (int i = 0; i < 7; i++)
    bad[i] = opts(&h, 6379);
  bad[0].host = NULL;
  bad[1].host = "";
  bad[2].host = longhost;
  bad[3].port = 0;
  bad[4].port = 65536;
  bad[5].db = -1;
  bad[6].timeout_ms = 0;
  for (int i = 0; i < 7; i++) {
    wsg_redis_conn *c = (wsg_redis_conn *)&h; /* must be reset */
    char err[128] = "";
    cr_assert_eq(wsg_redis_conn_create(&c, loop, &bad[i], err, sizeof(err)), WSG_REDIS_CONN_INVALID,
                 "case %d", i);
    cr_assert_null(c, "case %d", i);
    cr_assert_neq(err[0], '\0', "case %d has no message", i);
  }
  ev_loop_destroy(loop);
}

Test(wsg_redis_conn, no_callback_from_create_command_or_destroy) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  hooks h = {0};
  wsg_redis_conn_options o = opts(&h, 6379);
  wsg_redis_conn *c = NULL;
  char err[128];
  cr_assert_eq(wsg_redis_conn_create(&c, loop, &o, err, sizeof(err)), WSG_REDIS_CONN_OK, "%s", err);
  cr_assert_not(wsg_redis_conn_ready(c));
  cr_assert_not(wsg_redis_conn_open(c));
  wsg_redis_conn_req req = {on_reply};
  const char *argv[] = {"PING"};
  size_t lens[] = {4};
  cr_assert_eq(wsg_redis_conn_command(c, &req, 1, argv, lens), WSG_REDIS_CONN_NOT_CONNECTED);
  cr_assert_eq(wsg_redis_conn_command(c, NULL, 1, argv, lens), WSG_REDIS_CONN_INVALID);
  cr_assert_eq(wsg_redis_conn_inflight(c), 0);
  wsg_redis_conn_destroy(c);
  cr_assert_eq(h.handshakes + h.readies + h.downs + h.replies, 0);
  ev_loop_destroy(loop);
}

static void noop(struct ev_loop *l, ev_timer *w, int revents) {
  (void)l;
  (void)w;
  (void)revents;
}

/* A port bound but not listening: every connect is refused, with no server anywhere. */
Test(wsg_redis_conn, refused_connects_retry_with_backoff) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
  socklen_t alen = sizeof(a);
  getsockname(s, (struct sockaddr *)&a, &alen);

  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  wsg_metrics *m = wsg_metrics_create();
  wsg_counter *connects = wsg_metrics_counter(m, "t_connects_total", "t", NULL);
  wsg_gauge *connected = wsg_metrics_gauge(m, "t_connected", "t", NULL);
  hooks h = {0};
  wsg_redis_conn_options o = opts(&h, ntohs(a.sin_port));
  o.metrics.connects = connects;
  o.metrics.connected = connected;
  wsg_redis_conn *c = NULL;
  char err[128];
  cr_assert_eq(wsg_redis_conn_create(&c, loop, &o, err, sizeof(err)), WSG_REDIS_CONN_OK, "%s", err);
  ev_timer tick;
  ev_timer_init(&tick, noop, 0.005, 0.005);
  ev_timer_start(loop, &tick);
  uint64_t until = wsg_now_mono_ms() + 400;
  while (wsg_now_mono_ms() < until)
    ev_run(loop, EVRUN_ONCE);
  ev_timer_stop(loop, &tick);
  /* 50 ms doubling with jitter in [b/2, b]: attempts near 0, 25-50, 75-150, 175-350 ms. */
  uint64_t n = wsg_counter_get(connects);
  cr_assert_geq(n, 2, "%lu attempts in 400 ms", (unsigned long)n);
  cr_assert_leq(n, 6, "%lu attempts in 400 ms: no backoff?", (unsigned long)n);
  cr_assert_geq(h.downs, 1);
  cr_assert_eq(h.readies, 0);
  cr_assert_eq(wsg_gauge_get(connected), 0);
  wsg_redis_conn_destroy(c);
  wsg_metrics_destroy(m);
  ev_loop_destroy(loop);
  close(s);
}
