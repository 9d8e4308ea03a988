/*
 * wsg_redis_conn against a private redis-server per test (so a test may kill, pause or restart
 * it): connecting, reconnecting with backoff after a restart, callbacks after destroy, the
 * watchdog on a stopped (SIGSTOP) server and on a loop that was not run for longer than the
 * timeout, and a host name resolved off the loop.
 *
 * The connection runs on an ev loop driven by the test: every wait runs the loop until a
 * condition holds, with a deadline.
 */
#include <criterion/criterion.h>
#include <ev.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "wsg_metrics.h"
#include "wsg_redis_conn.h"

#define TIMEOUT_MS 600
#define WAIT_MS    15000

static itest_redis_server srv;
static struct ev_loop *loop;
static wsg_metrics *metrics;

/* What the hooks and replies report. */
typedef struct {
  wsg_redis_conn *conn;
  int handshakes, readies, downs;
  int replies, lost, released; /* replies with a reply, with NULL, with arg NULL */
  char last[64];               /* the last string or status reply */
  bool destroy_in_reply;
} tconn;

static wsg_counter *m_ok, *m_error, *m_lost, *m_connects, *m_waiting, *m_late;
static wsg_gauge *m_connected;

static void setup(void) {
  itest_require_redis();
  memset(&srv, 0, sizeof(srv));
  itest_redis_server_start(&srv, 0);
  loop = ev_loop_new(EVFLAG_AUTO);
  metrics = wsg_metrics_create();
  const char *cmds = "t_commands_total";
  m_ok = wsg_metrics_counter(metrics, cmds, "t", "result=\"ok\"");
  m_error = wsg_metrics_counter(metrics, cmds, "t", "result=\"error\"");
  m_lost = wsg_metrics_counter(metrics, cmds, "t", "result=\"lost\"");
  m_connects = wsg_metrics_counter(metrics, "t_connects_total", "t", NULL);
  m_connected = wsg_metrics_gauge(metrics, "t_connected", "t", NULL);
  const char *defer = "t_watchdog_deferrals_total";
  m_waiting = wsg_metrics_counter(metrics, defer, "t", "reason=\"replies_waiting\"");
  m_late = wsg_metrics_counter(metrics, defer, "t", "reason=\"loop_late\"");
}

static void teardown(void) {
  if (loop != NULL) {
    ev_loop_destroy(loop);
    loop = NULL;
  }
  wsg_metrics_destroy(metrics);
  metrics = NULL;
  if (srv.pid != 0) {
    kill(srv.pid, SIGCONT); /* in case a test left it paused */
    itest_redis_server_stop(&srv, SIGKILL);
  }
}

TestSuite(wsg_redis_conn, .init = setup, .fini = teardown, .timeout = 120);

/* --- callbacks -------------------------------------------------------------------------------- */

static void on_handshake(void *arg) {
  ((tconn *)arg)->handshakes++;
}
static void on_ready(void *arg) {
  ((tconn *)arg)->readies++;
}
static void on_down(void *arg) {
  ((tconn *)arg)->downs++;
}

/* The test's request: which tconn it reports to, so a release (arg NULL) is counted too. */
typedef struct {
  wsg_redis_conn_req req;
  tconn *t;
} treq;

static void on_reply(void *arg, wsg_redis_conn_req *req, const struct redisReply *rep) {
  tconn *t = ((treq *)req)->t;
  if (arg == NULL) {
    cr_assert_null(rep);
    t->released++;
    return;
  }
  cr_assert_eq(arg, t);
  if (rep == NULL) {
    t->lost++;
    return;
  }
  t->replies++;
  if (rep->type == REDIS_REPLY_STRING || rep->type == REDIS_REPLY_STATUS)
    snprintf(t->last, sizeof(t->last), "%s", rep->str);
  if (t->destroy_in_reply) {
    wsg_redis_conn_destroy(t->conn);
    t->conn = NULL;
  }
}

/* --- helpers ---------------------------------------------------------------------------------- */

/* Runs the loop until pred(arg) holds or timeout_ms passes. */
static bool run_until(bool (*pred)(void *), void *arg, int timeout_ms) {
  return itest_loop_until(loop, pred, arg, timeout_ms);
}

static bool is_ready(void *arg) {
  tconn *t = arg;
  return t->conn != NULL && wsg_redis_conn_ready(t->conn);
}

static bool is_down(void *arg) {
  tconn *t = arg;
  return t->conn != NULL && !wsg_redis_conn_ready(t->conn) && t->downs > 0;
}

static void start(tconn *t, const char *host) {
  wsg_redis_conn_options o = {.host = host,
                              .port = srv.port,
                              .timeout_ms = TIMEOUT_MS,
                              .on_handshake = on_handshake,
                              .on_ready = on_ready,
                              .on_down = on_down,
                              .arg = t,
                              .metrics = {.ok = m_ok,
                                          .error = m_error,
                                          .lost = m_lost,
                                          .connects = m_connects,
                                          .connected = m_connected,
                                          .replies_waiting = m_waiting,
                                          .loop_late = m_late}};
  char err[256] = "";
  int rc = wsg_redis_conn_create(&t->conn, loop, &o, err, sizeof(err));
  cr_assert_eq(rc, WSG_REDIS_CONN_OK, "create: %s (%s)", wsg_redis_conn_strerror(rc), err);
  cr_assert(run_until(is_ready, t, WAIT_MS), "not ready within %d ms", WAIT_MS);
}

static void send1(tconn *t, treq *r, int argc, const char **argv) {
  size_t lens[8];
  for (int i = 0; i < argc; i++)
    lens[i] = strlen(argv[i]);
  r->req.cb = on_reply;
  r->t = t;
  int rc = wsg_redis_conn_command(t->conn, &r->req, argc, argv, lens);
  cr_assert_eq(rc, WSG_REDIS_CONN_OK, "command: %s", wsg_redis_conn_strerror(rc));
}

static bool replies_at_least(void *arg) {
  tconn *t = arg;
  return t->replies >= 1;
}

/* --- tests ------------------------------------------------------------------------------------ */

Test(wsg_redis_conn, connects_and_answers) {
  tconn t = {0};
  start(&t, "127.0.0.1");
  cr_assert_eq(t.handshakes, 1);
  cr_assert_eq(t.readies, 1);
  cr_assert_eq(wsg_gauge_get(m_connected), 1);
  cr_assert_eq(wsg_counter_get(m_connects), 1);
  treq r;
  send1(&t, &r, 1, (const char *[]){"PING"});
  cr_assert_eq(wsg_redis_conn_inflight(t.conn), 1);
  cr_assert(run_until(replies_at_least, &t, WAIT_MS));
  cr_assert_str_eq(t.last, "PONG");
  cr_assert_eq(wsg_redis_conn_inflight(t.conn), 0);
  cr_assert_geq(wsg_counter_get(m_ok), 2, "the handshake's PING and ours");
  wsg_redis_conn_destroy(t.conn);
  cr_assert_eq(t.released, 0);
}

Test(wsg_redis_conn, reconnects_after_a_restart_with_backoff) {
  tconn t = {0};
  start(&t, "127.0.0.1");
  itest_redis_server_stop(&srv, SIGKILL);
  cr_assert(run_until(is_down, &t, WAIT_MS), "the loss was not noticed");
  cr_assert_eq(wsg_gauge_get(m_connected), 0);
  treq r;
  const char *argv[] = {"PING"};
  size_t lens[] = {4};
  r.req.cb = on_reply;
  r.t = &t;
  cr_assert_eq(wsg_redis_conn_command(t.conn, &r.req, 1, argv, lens), WSG_REDIS_CONN_NOT_CONNECTED);

  /* Down for a second: 50 ms doubling (jitter in [b/2, b]) makes at most ~6 attempts. */
  uint64_t before = wsg_counter_get(m_connects);
  run_until(replies_at_least, &(tconn){0}, 1000);
  uint64_t attempts = wsg_counter_get(m_connects) - before;
  cr_assert_geq(attempts, 2, "%lu attempts in 1 s", (unsigned long)attempts);
  cr_assert_leq(attempts, 8, "%lu attempts in 1 s: no backoff?", (unsigned long)attempts);
  cr_assert_eq(t.readies, 1);

  itest_redis_server_start(&srv, srv.port);
  cr_assert(run_until(is_ready, &t, WAIT_MS), "no reconnection after the restart");
  cr_assert_eq(t.readies, 2);
  cr_assert_eq(t.handshakes, (int)wsg_counter_get(m_connects), "one handshake per connection");
  cr_assert_eq(wsg_gauge_get(m_connected), 1);
  send1(&t, &r, 1, (const char *[]){"PING"});
  cr_assert(run_until(replies_at_least, &t, WAIT_MS));
  wsg_redis_conn_destroy(t.conn);
}

static bool lost_one(void *arg) {
  return ((tconn *)arg)->lost >= 1;
}

Test(wsg_redis_conn, watchdog_drops_a_stopped_server) {
  tconn t = {0};
  start(&t, "127.0.0.1");
  cr_assert_eq(kill(srv.pid, SIGSTOP), 0);
  treq r;
  uint64_t t0 = itest_now_ms();
  send1(&t, &r, 2, (const char *[]){"ECHO", "x"});
  cr_assert(run_until(lost_one, &t, WAIT_MS), "the watchdog did not fire");
  uint64_t took = itest_now_ms() - t0;
  cr_assert_geq(took, TIMEOUT_MS - 50, "dropped after %lu ms", (unsigned long)took);
  cr_assert_eq(t.replies, 0);
  cr_assert_geq(t.downs, 1);
  cr_assert_eq(wsg_counter_get(m_lost), 1);
  cr_assert_not(wsg_redis_conn_ready(t.conn));
  cr_assert_eq(wsg_redis_conn_inflight(t.conn), 0);

  cr_assert_eq(kill(srv.pid, SIGCONT), 0);
  cr_assert(run_until(is_ready, &t, WAIT_MS), "no reconnection after SIGCONT");
  cr_assert_geq(t.readies, 2);
  wsg_redis_conn_destroy(t.conn);
}

/* A loop that was not run for longer than the timeout (a CPU-starved gateway): the watchdog's
 * tick and the replies are due in the same iteration, and libev runs the timer first. */
static void starve_loop(int ms) {
  usleep((useconds_t)ms * 1000);
}

static bool settled_3(void *arg) {
  tconn *t = arg;
  return t->replies + t->lost >= 3;
}

/* Three ECHOs, written to the socket first or left in hiredis' buffer, then a loop starved for
 * twice the timeout while Redis works: every reply must arrive on the same connection. */
static void echoes_across_a_starved_loop(tconn *t, bool written) {
  treq r[3];
  for (int i = 0; i < 3; i++)
    send1(t, &r[i], 2, (const char *[]){"ECHO", "x"});
  if (written)
    ev_run(loop, EVRUN_NOWAIT); /* one iteration: the commands are written, no reply read yet */
  starve_loop(2 * TIMEOUT_MS);
  cr_assert(run_until(settled_3, t, WAIT_MS), "%d replies, %d lost", t->replies, t->lost);
  cr_assert_eq(t->replies, 3, "%d replies, %d lost", t->replies, t->lost);
  cr_assert_eq(t->downs, 0, "the connection was dropped although Redis was not silent");
  cr_assert(wsg_redis_conn_ready(t->conn));
}

Test(wsg_redis_conn, watchdog_keeps_replies_waiting_in_the_socket) {
  tconn t = {0};
  start(&t, "127.0.0.1");
  echoes_across_a_starved_loop(&t, true); /* Redis answers during the stall; nobody reads */
  cr_assert_geq(wsg_counter_get(m_waiting), 1, "the replies were read, not waited for");
  wsg_redis_conn_destroy(t.conn);
}

Test(wsg_redis_conn, watchdog_forgives_a_loop_too_late_to_send) {
  tconn t = {0};
  start(&t, "127.0.0.1");
  echoes_across_a_starved_loop(&t, false); /* Redis has nothing to answer before the stall ends */
  cr_assert_geq(wsg_counter_get(m_late), 1);
  cr_assert_eq(wsg_counter_get(m_waiting), 0, "Redis had nothing to answer yet");
  wsg_redis_conn_destroy(t.conn);
}

Test(wsg_redis_conn, watchdog_drops_a_stopped_server_after_a_starved_loop) {
  tconn t = {0};
  start(&t, "127.0.0.1");
  cr_assert_eq(kill(srv.pid, SIGSTOP), 0);
  treq r;
  send1(&t, &r, 2, (const char *[]){"ECHO", "x"});
  ev_run(loop, EVRUN_NOWAIT);
  starve_loop(2 * TIMEOUT_MS);
  /* The loop's own view: the silence it saw while running must reach the timeout again, less
   * the one watchdog interval (TIMEOUT_MS / 4) before a late tick that is not counted. */
  uint64_t t0 = itest_now_ms();
  cr_assert(run_until(lost_one, &t, WAIT_MS), "a silent Redis was never dropped");
  uint64_t took = itest_now_ms() - t0;
  cr_assert_geq(took, TIMEOUT_MS - TIMEOUT_MS / 4 - 50, "dropped %lu ms after the loop resumed",
                (unsigned long)took);
  cr_assert_leq(took, TIMEOUT_MS + TIMEOUT_MS / 2, "dropped %lu ms after the loop resumed",
                (unsigned long)took);
  cr_assert_eq(t.replies, 0);
  cr_assert_geq(wsg_counter_get(m_late), 1);
  cr_assert_eq(wsg_counter_get(m_waiting), 0);
  cr_assert_eq(kill(srv.pid, SIGCONT), 0);
  cr_assert(run_until(is_ready, &t, WAIT_MS), "no reconnection after SIGCONT");
  wsg_redis_conn_destroy(t.conn);
}

Test(wsg_redis_conn, destroy_releases_pending_requests) {
  tconn t = {0};
  start(&t, "127.0.0.1");
  cr_assert_eq(kill(srv.pid, SIGSTOP), 0); /* the replies cannot come first */
  treq r[3];
  for (int i = 0; i < 3; i++)
    send1(&t, &r[i], 1, (const char *[]){"PING"});
  int downs = t.downs;
  wsg_redis_conn_destroy(t.conn);
  t.conn = NULL;
  cr_assert_eq(t.released, 3, "each pending request is released once");
  cr_assert_eq(t.replies + t.lost, 0);
  cr_assert_eq(t.downs, downs, "no hook after destroy");
  kill(srv.pid, SIGCONT);
}

Test(wsg_redis_conn, destroy_from_a_reply_callback) {
  tconn t = {0};
  start(&t, "127.0.0.1");
  cr_assert_eq(kill(srv.pid, SIGSTOP), 0);
  treq r[3];
  for (int i = 0; i < 3; i++)
    send1(&t, &r[i], 2, (const char *[]){"ECHO", "x"});
  t.destroy_in_reply = true;
  cr_assert_eq(kill(srv.pid, SIGCONT), 0);
  cr_assert(run_until(replies_at_least, &t, WAIT_MS));
  run_until(lost_one, &t, 100); /* let hiredis finish what it deferred */
  cr_assert_null(t.conn);
  cr_assert_eq(t.replies, 1, "the first reply destroyed the connection");
  cr_assert_eq(t.released, 2, "the two others are released, not answered");
  cr_assert_eq(t.lost, 0);
}

Test(wsg_redis_conn, resolves_a_host_name) {
  tconn t = {0};
  uint64_t t0 = itest_now_ms();
  wsg_redis_conn_options o = {.host = "localhost",
                              .port = srv.port,
                              .timeout_ms = TIMEOUT_MS,
                              .on_ready = on_ready,
                              .arg = &t};
  char err[256] = "";
  cr_assert_eq(wsg_redis_conn_create(&t.conn, loop, &o, err, sizeof(err)), WSG_REDIS_CONN_OK, "%s",
               err);
  cr_assert_lt(itest_now_ms() - t0, 50, "create must not resolve on the caller's thread");
  cr_assert(run_until(is_ready, &t, WAIT_MS), "localhost did not resolve and connect");
  treq r;
  send1(&t, &r, 1, (const char *[]){"PING"});
  cr_assert(run_until(replies_at_least, &t, WAIT_MS));
  cr_assert_str_eq(t.last, "PONG");
  wsg_redis_conn_destroy(t.conn);
}

Test(wsg_redis_conn, refused_auth_retries) {
  tconn t = {0};
  wsg_redis_conn_options o = {.host = "127.0.0.1",
                              .port = srv.port,
                              .password = "wrong",
                              .timeout_ms = TIMEOUT_MS,
                              .on_ready = on_ready,
                              .on_down = on_down,
                              .arg = &t,
                              .metrics.connects = m_connects};
  char err[256] = "";
  cr_assert_eq(wsg_redis_conn_create(&t.conn, loop, &o, err, sizeof(err)), WSG_REDIS_CONN_OK, "%s",
               err);
  run_until(is_ready, &t, 500);
  cr_assert_eq(t.readies, 0, "a refused AUTH must not make the connection ready");
  cr_assert_geq(t.downs, 1);
  cr_assert_geq(wsg_counter_get(m_connects), 2, "it retries");
  wsg_redis_conn_destroy(t.conn);
}
