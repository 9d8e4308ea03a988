/*
 * harness_daemons: gateways, processors and their clients in integration tests (see
 * harness_daemons.h).
 *
 * Threads: the test's own thread.
 */
#include "harness_daemons.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "gw_jwt.h"
#include "wsg_redis_slots.h"

#define MAX_ARGS    96
#define METRICS_MAX (512 * 1024)

/* --- tracked processes ---------------------------------------------------------------------- */

/* Children started and not yet stopped (test state: one test per process under Criterion). */
#define TRACKED_MAX 16
static struct {
  pid_t pid;
  char log[512];
} tracked[TRACKED_MAX];

void itest_track(pid_t pid, const char *log) {
  for (size_t i = 0; i < TRACKED_MAX; i++) {
    if (tracked[i].pid == 0) {
      tracked[i].pid = pid;
      snprintf(tracked[i].log, sizeof(tracked[i].log), "%s", log);
      return;
    }
  }
  cr_assert_fail("more than %d processes in one test", TRACKED_MAX);
}

void itest_untrack(pid_t pid) {
  for (size_t i = 0; i < TRACKED_MAX; i++)
    if (tracked[i].pid == pid)
      tracked[i].pid = 0;
}

void itest_fini(void) {
  for (size_t i = 0; i < TRACKED_MAX; i++) {
    if (tracked[i].pid > 0) {
      fprintf(stderr, "killing pid %d left running by the test (log: %s)\n", (int)tracked[i].pid,
              tracked[i].log);
      itest_stop(tracked[i].pid, SIGKILL, 5000, NULL);
      tracked[i].pid = 0;
    }
  }
}

/* --- names --------------------------------------------------------------------------------- */

static void unique(char *dst, size_t len, const char *prefix, const char *suffix) {
  char *u = itest_unique(prefix);
  snprintf(dst, len, "%s%s", u, suffix);
  free(u);
}

static void log_for(char *dst, size_t len, const char *name) {
  char *path = itest_log_path(name);
  snprintf(dst, len, "%s.log", path);
  free(path);
}

void itest_cluster_init(itest_cluster *c, int in_partitions, int out_partitions, bool dead_letter) {
  itest_require_servers();
  memset(c, 0, sizeof(*c));
  unique(c->in_topic, sizeof(c->in_topic), "itest-in", "");
  unique(c->out_topic, sizeof(c->out_topic), "itest-out", "");
  unique(c->group, sizeof(c->group), "itest-group", "");
  unique(c->prefix, sizeof(c->prefix), "itest", ":");
  c->in_partitions = in_partitions;
  c->out_partitions = out_partitions;
  itest_topic_create(c->in_topic, in_partitions);
  itest_topic_create(c->out_topic, out_partitions);
  if (dead_letter) {
    unique(c->dlq_topic, sizeof(c->dlq_topic), "itest-dlq", "");
    itest_topic_create(c->dlq_topic, 1);
  }
}

void itest_cluster_add_commands(itest_cluster *c, int partitions) {
  unique(c->cmd_topic, sizeof(c->cmd_topic), "itest-cmd", "");
  itest_topic_create(c->cmd_topic, partitions);
}

/* Appends o->extra to argv (n entries so far) and terminates it. */
static void append_extra(const char **argv, size_t n, const itest_daemon_opts *o) {
  for (size_t i = 0; o && o->extra && o->extra[i]; i++) {
    cr_assert(n + 1 < MAX_ARGS, "too many arguments for %s", argv[0]);
    argv[n++] = o->extra[i];
  }
  argv[n] = NULL;
}

/* --- Redis --------------------------------------------------------------------------------- */

/* The daemon's Redis flag and its value (in buf or the seed): a test's own redis_port, else
 * `--redis-cluster <seed>` with WSGATE_TEST_REDIS_CLUSTER, else the shared node. */
static const char *redis_flag(const itest_daemon_opts *o, const char **value, char *buf,
                              size_t len) {
  if ((o == NULL || o->redis_port == 0) && itest_redis_cluster_seed() != NULL) {
    *value = itest_redis_cluster_seed();
    return "--redis-cluster";
  }
  snprintf(buf, len, "%d", o && o->redis_port ? o->redis_port : itest_redis_port());
  *value = buf;
  return "--redis-port";
}

redisReply *itest_redis_key_command(int port, const char *fmt, const char *a, const char *b) {
  if (port == 0)
    port = itest_redis_default_port();
  redisContext *rc = itest_redis_connect_port(port);
  cr_assert(rc, "cannot connect to redis on 127.0.0.1:%d", port);
  redisReply *r = itest_redis_cmd(rc, fmt, a, b);
  redisFree(rc);
  return r;
}

/* --- gateways ------------------------------------------------------------------------------ */

int32_t itest_gateway_slot(const itest_gateway *g) {
  redisReply *r =
      itest_redis_key_command(g->redis_port, "HGET %sgw:%s slot", g->cluster.prefix, g->id);
  cr_assert(r && r->type == REDIS_REPLY_STRING, "no gateway record for %s in Redis", g->id);
  int32_t slot = (int32_t)atoi(r->str);
  freeReplyObject(r);
  return slot;
}

static void gateway_spawn(itest_gateway *g, const itest_daemon_opts *o) {
  char port[16], http_port[16], redis_port[16];
  snprintf(port, sizeof(port), "%d", g->port);
  snprintf(http_port, sizeof(http_port), "%d", g->http_port);
  g->redis_port = o && o->redis_port ? o->redis_port : itest_redis_default_port();
  const char *redis_at;
  const char *redis_opt = redis_flag(o, &redis_at, redis_port, sizeof(redis_port));
  const itest_cluster *c = &g->cluster;
  const char *argv[MAX_ARGS] = {
      itest_bin("WSGATE_GATEWAY_BIN"),
      "--kafka-brokers",
      itest_kafka_bootstrap(),
      redis_opt,
      redis_at,
      "--redis-prefix",
      c->prefix,
      "--inbound-topic",
      c->in_topic,
      "--outbound-topic",
      c->out_topic,
      "--gateway-id",
      g->id,
      "--listen-addr",
      "127.0.0.1",
      "--listen-port",
      port,
      "--http-addr",
      "127.0.0.1",
      "--http-port",
      http_port,
      "--jwt-secret",
      ITEST_JWT_SECRET,
      "--drain-window",
      "500ms",
      "--drain-grace",
      "10s",
      "--log-level",
      "debug",
      /* Every test client comes from 127.0.0.1: no per-address upgrade budget unless a test sets
       * one (a later flag wins), so quick reconnects in a test never meet it. */
      "--max-upgrades-per-addr",
      "0",
  };
  size_t n = 0;
  while (argv[n]) {
    if (o && o->jwt_secret_file && strcmp(argv[n], "--jwt-secret") == 0) {
      argv[n++] = "--jwt-secret-file";
      argv[n] = o->jwt_secret_file;
    }
    n++;
  }
  append_extra(argv, n, o);
  g->slot = -1;
  g->pid = itest_spawn(argv, NULL, g->log);
  itest_track(g->pid, g->log);
  if (o && o->no_wait)
    return;
  if (itest_wait_http(g->http_port, "/readyz", 200, ITEST_TIMEOUT_MS) != 0) {
    itest_dump_log(g->log, 60);
    cr_assert_fail("gateway %s did not become ready", g->id);
  }
  g->slot = itest_gateway_slot(g);
}

void itest_gateway_start(itest_gateway *g, const itest_cluster *c, const char *name,
                         const itest_daemon_opts *o) {
  memset(g, 0, sizeof(*g));
  if (c)
    g->cluster = *c;
  else
    itest_cluster_init(&g->cluster, ITEST_PARTITIONS, ITEST_PARTITIONS, false);
  unique(g->id, sizeof(g->id), name, "");
  log_for(g->log, sizeof(g->log), g->id);
  g->port = itest_free_port();
  g->http_port = itest_free_port();
  gateway_spawn(g, o);
}

void itest_gateway_restart(itest_gateway *g, const itest_daemon_opts *o) {
  gateway_spawn(g, o);
}

/* Fails the test if the sanitizers reported anything in the gateway's log (a sanitized build
 * keeps running after a UBSan report, and the test would not notice otherwise). */
static void check_sanitizers(const itest_gateway *g) {
  FILE *f = fopen(g->log, "r");
  if (!f)
    return;
  char line[1024];
  while (fgets(line, sizeof line, f)) {
    if (strstr(line, "runtime error:") || strstr(line, "AddressSanitizer") ||
        strstr(line, "LeakSanitizer")) {
      fclose(f);
      itest_dump_log(g->log, 60);
      cr_assert_fail("sanitizer report in the gateway's log: %s", line);
    }
  }
  fclose(f);
}

int itest_gateway_stop(itest_gateway *g, int sig, int timeout_ms) {
  int status = 0;
  int rc = itest_stop(g->pid, sig, timeout_ms, &status);
  itest_untrack(g->pid);
  g->pid = 0;
  if (rc != 0) {
    itest_dump_log(g->log, 60);
    cr_assert_fail("gateway did not exit within %d ms of signal %d", timeout_ms, sig);
  }
  check_sanitizers(g);
  return status;
}

void itest_gateway_cleanup(itest_gateway *g) {
  if (g->log[0])
    fprintf(stderr, "gateway log: %s\n", g->log);
  if (g->pid > 0) {
    itest_stop(g->pid, SIGKILL, 5000, NULL);
    itest_untrack(g->pid);
  }
  g->pid = 0;
  if (g->log[0])
    check_sanitizers(g);
}

/* --- processors ---------------------------------------------------------------------------- */

/* Done waiting when /readyz answers 200 or the process is gone (then pid becomes 0). */
static bool ready_or_gone(void *arg) {
  itest_processor *p = arg;
  if (!itest_alive(p->pid, NULL)) {
    itest_untrack(p->pid);
    p->pid = 0;
    return true;
  }
  return itest_http_get(p->http_port, "/readyz", NULL, 0) == 200;
}

void itest_processor_start(itest_processor *p, const itest_cluster *c, const char *name,
                           const char *handler, const itest_daemon_opts *o) {
  memset(p, 0, sizeof(*p));
  unique(p->name, sizeof(p->name), name, "");
  log_for(p->log, sizeof(p->log), p->name);
  p->http_port = itest_free_port();
  char http_port[16], redis_port[16];
  snprintf(http_port, sizeof(http_port), "%d", p->http_port);
  const char *redis_at;
  const char *redis_opt = redis_flag(o, &redis_at, redis_port, sizeof(redis_port));
  const char *argv[MAX_ARGS] = {
      itest_bin("WSGATE_PROCESSOR_BIN"),
      "--kafka-brokers",
      itest_kafka_bootstrap(),
      "--inbound-topic",
      c->in_topic,
      "--outbound-topic",
      c->out_topic,
      /* "" (none) unless the test asked for one: no test reads a shared commands topic */
      "--commands-topic",
      c->cmd_topic,
      "--group-id",
      c->group,
      "--handler",
      handler,
      redis_opt,
      redis_at,
      "--redis-prefix",
      c->prefix,
      "--http-addr",
      "127.0.0.1",
      "--http-port",
      http_port,
      "--commit-interval",
      "200ms",
      "--log-level",
      "debug",
      /* A member that died is noticed within seconds, not the default 45 s. */
      "-X",
      "session.timeout.ms=6000",
      "-X",
      "heartbeat.interval.ms=500",
  };
  size_t n = 0;
  while (argv[n])
    n++;
  if (c->dlq_topic[0]) {
    argv[n++] = "--dead-letter-topic";
    argv[n++] = c->dlq_topic;
  }
  append_extra(argv, n, o);
  p->pid = itest_spawn(argv, NULL, p->log);
  itest_track(p->pid, p->log);
  if (o && o->no_wait)
    return;
  if (!itest_wait_until(ready_or_gone, p, ITEST_TIMEOUT_MS)) {
    itest_dump_log(p->log, 60);
    cr_assert_fail("processor %s did not become ready", p->name);
  }
  if (p->pid == 0) {
    itest_dump_log(p->log, 60);
    cr_assert_fail("processor %s exited during start-up", p->name);
  }
}

int itest_processor_stop(itest_processor *p, int sig, int timeout_ms) {
  int status = 0;
  int rc = itest_stop(p->pid, sig, timeout_ms, &status);
  pid_t pid = p->pid;
  itest_untrack(pid);
  p->pid = 0;
  if (rc != 0) {
    itest_dump_log(p->log, 40);
    cr_assert_fail("processor %d did not exit within %d ms of signal %d", (int)pid, timeout_ms,
                   sig);
  }
  return status;
}

void itest_processor_cleanup(itest_processor *p) {
  if (p->pid > 0) {
    itest_stop(p->pid, SIGKILL, 5000, NULL);
    itest_untrack(p->pid);
    p->pid = 0;
  }
  if (p->log[0])
    fprintf(stderr, "processor log: %s\n", p->log);
}

/* --- clients ------------------------------------------------------------------------------- */

const char *itest_token(const char *user, long exp_in_s) {
  static char tok[2048];
  char claims[512];
  snprintf(claims, sizeof claims, "{\"sub\":\"%s\",\"exp\":%lld}", user,
           (long long)time(NULL) + exp_in_s);
  int n = gw_jwt_sign((const uint8_t *)ITEST_JWT_SECRET, strlen(ITEST_JWT_SECRET), claims, tok,
                      sizeof tok);
  cr_assert(n > 0, "gw_jwt_sign: %s", gw_jwt_strerror(n));
  return tok;
}

int itest_connect_raw(const itest_gateway *g, const char *path, const char *const *headers,
                      const char *subprotocol, ws_client **out, ws_http_response *resp) {
  ws_client_options o = {
      .port = g->port,
      .path = path,
      .headers = headers,
      .subprotocol = subprotocol,
      .timeout_ms = 10000,
  };
  char err[256] = "";
  *out = NULL;
  int rc = ws_client_connect(out, &o, resp, err, sizeof err);
  if (rc != WS_CLIENT_OK && rc != WS_CLIENT_REFUSED)
    fprintf(stderr, "ws_client_connect: %s\n", err);
  return rc;
}

int itest_upgrade_status(const itest_gateway *g, const char *token, char *body, size_t cap) {
  char auth[GW_JWT_MAX_TOKEN + 64];
  snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
  const char *headers[] = {auth, NULL};
  ws_client *c = NULL;
  ws_http_response resp;
  int rc = itest_connect_raw(g, "/", headers, "wsgate.v1", &c, &resp);
  ws_client_destroy(c);
  if (rc == WS_CLIENT_OK)
    return 101;
  cr_assert_eq(rc, WS_CLIENT_REFUSED, "neither accepted nor refused: %s", ws_client_strerror(rc));
  if (body)
    snprintf(body, cap, "%.1000s", resp.body);
  return resp.status;
}

/* Upgrades with "Authorization: Bearer <tok>"; fails the test unless it succeeds. */
/* extra: one more request header, or NULL. */
static ws_client *connect_token(const itest_gateway *g, const char *user, const char *tok,
                                const char *extra) {
  char auth[2100];
  snprintf(auth, sizeof auth, "Authorization: Bearer %s", tok);
  const char *headers[] = {auth, extra, NULL};
  ws_client *c = NULL;
  ws_http_response resp;
  int rc = itest_connect_raw(g, "/", headers, "wsgate.v1", &c, &resp);
  cr_assert_eq(rc, WS_CLIENT_OK, "upgrade for %s failed: %s (status %d, body %s)", user,
               ws_client_strerror(rc), resp.status, resp.body);
  cr_assert_str_eq(resp.protocol, "wsgate.v1");
  return c;
}

ws_client *itest_connect(const itest_gateway *g, const char *user) {
  return connect_token(g, user, itest_token(user, 600), NULL);
}

ws_client *itest_connect_deflate(const itest_gateway *g, const char *user) {
  return connect_token(g, user, itest_token(user, 600),
                       "Sec-WebSocket-Extensions: permessage-deflate");
}

ws_client *itest_connect_channels(const itest_gateway *g, const char *user,
                                  const char *channels_json) {
  char claims[1024], tok[2048];
  snprintf(claims, sizeof claims, "{\"sub\":\"%s\",\"exp\":%lld,\"channels\":%s}", user,
           (long long)time(NULL) + 600, channels_json);
  int n = gw_jwt_sign((const uint8_t *)ITEST_JWT_SECRET, strlen(ITEST_JWT_SECRET), claims, tok,
                      sizeof tok);
  cr_assert(n > 0, "gw_jwt_sign: %s", gw_jwt_strerror(n));
  return connect_token(g, user, tok, NULL);
}

void itest_stop_reading(ws_client *c) {
  int sz = 4096;
  cr_assert_eq(setsockopt(ws_client_fd(c), SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz), 0,
               "SO_RCVBUF: %s", strerror(errno));
}

void itest_expect_msg(ws_client *c, ws_opcode op, ws_message *m, int timeout_ms) {
  int rc = ws_client_recv(c, m, timeout_ms);
  cr_assert_eq(rc, WS_CLIENT_OK, "no message within %d ms: %s", timeout_ms, ws_client_strerror(rc));
  cr_assert_eq(m->opcode, op, "expected opcode %d, got %d (close %u \"%s\")", op, m->opcode,
               m->close_code, m->close_reason);
}

void itest_recv(ws_client *c, ws_message *m, int timeout_ms) {
  uint64_t deadline = itest_now_ms() + (uint64_t)timeout_ms;
  for (;;) {
    uint64_t now = itest_now_ms();
    cr_assert_lt(now, deadline, "no message within %d ms", timeout_ms);
    int rc = ws_client_recv(c, m, (int)(deadline - now));
    cr_assert_eq(rc, WS_CLIENT_OK, "receiving: %s", ws_client_strerror(rc));
    if (m->opcode == WS_OP_PONG)
      continue;
    cr_assert_neq(m->opcode, WS_OP_CLOSE, "closed by the gateway: %u %s", m->close_code,
                  m->close_reason);
    return;
  }
}

void itest_expect_text(ws_client *c, const char *want, int timeout_ms) {
  ws_message m;
  itest_recv(c, &m, timeout_ms);
  cr_assert_eq(m.opcode, WS_OP_TEXT, "got opcode %d, want a text frame", m.opcode);
  cr_assert(m.len == strlen(want) && memcmp(m.data, want, m.len) == 0, "got %.*s, want %s",
            (int)m.len, (const char *)m.data, want);
}

void itest_expect_close(ws_client *c, uint16_t code, int timeout_ms) {
  ws_message m;
  do
    cr_assert_eq(ws_client_recv(c, &m, timeout_ms), WS_CLIENT_OK, "no close frame");
  while (m.opcode == WS_OP_PONG);
  cr_assert_eq(m.opcode, WS_OP_CLOSE, "got opcode %d, want a close", m.opcode);
  cr_assert_eq(m.close_code, code);
}

double itest_metric(int http_port, const char *series) {
  char *buf = malloc(METRICS_MAX);
  cr_assert(buf);
  int st = itest_http_get(http_port, "/metrics", buf, METRICS_MAX);
  cr_assert_eq(st, 200, "GET /metrics: %d", st);
  double v = -1;
  size_t sl = strlen(series);
  for (char *line = buf; line && *line;) {
    if (strncmp(line, series, sl) == 0 && line[sl] == ' ') {
      v = strtod(line + sl + 1, NULL);
      break;
    }
    char *nl = strchr(line, '\n');
    line = nl ? nl + 1 : NULL;
  }
  free(buf);
  return v;
}

typedef struct {
  int port;
  const char *series;
  double want;
} metric_wait;

static bool metric_reached(void *arg) {
  metric_wait *w = arg;
  return itest_metric(w->port, w->series) >= w->want;
}

static bool metric_equal(void *arg) {
  metric_wait *w = arg;
  return itest_metric(w->port, w->series) == w->want;
}

uint64_t itest_wait_metric(int http_port, const char *series, double want, int timeout_ms) {
  metric_wait w = {http_port, series, want};
  cr_assert(itest_wait_until(metric_reached, &w, timeout_ms), "%s is %g, expected %g or more",
            series, itest_metric(http_port, series), want);
  return itest_now_ms();
}

uint64_t itest_wait_metric_eq(int http_port, const char *series, double want, int timeout_ms) {
  metric_wait w = {http_port, series, want};
  cr_assert(itest_wait_until(metric_equal, &w, timeout_ms), "%s is %g, expected %g", series,
            itest_metric(http_port, series), want);
  return itest_now_ms();
}
