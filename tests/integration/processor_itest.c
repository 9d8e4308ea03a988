/*
 * processor_itest: helpers of the processor's integration tests (see processor_itest.h).
 *
 * Threads: the test's own thread.
 */
#include "processor_itest.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "gw_jwt.h"
#include "harness.h"
#include "wsg_kafka.h"
#include "wsg_redis_keys.h"
#include "wsg_redis_slots.h"

#define MAX_ARGS    64
#define METRICS_MAX (512 * 1024)

/* Children started and not yet stopped (test state: one test per process under Criterion). */
#define TRACKED_MAX 16
static struct {
  pid_t pid;
  char log[512];
} tracked[TRACKED_MAX];

static void track(pid_t pid, const char *log) {
  for (size_t i = 0; i < TRACKED_MAX; i++) {
    if (tracked[i].pid == 0) {
      tracked[i].pid = pid;
      snprintf(tracked[i].log, sizeof(tracked[i].log), "%s", log);
      return;
    }
  }
  cr_assert_fail("more than %d processes in one test", TRACKED_MAX);
}

static void untrack(pid_t pid) {
  for (size_t i = 0; i < TRACKED_MAX; i++)
    if (tracked[i].pid == pid)
      tracked[i].pid = 0;
}

void pit_track(pid_t pid, const char *log) {
  track(pid, log);
}

void pit_untrack(pid_t pid) {
  untrack(pid);
}

void pit_fini(void) {
  for (size_t i = 0; i < TRACKED_MAX; i++) {
    if (tracked[i].pid > 0) {
      fprintf(stderr, "killing pid %d left running by the test (log: %s)\n", (int)tracked[i].pid,
              tracked[i].log);
      itest_stop(tracked[i].pid, SIGKILL, 5000, NULL);
      tracked[i].pid = 0;
    }
  }
}

static void unique(char *dst, size_t len, const char *prefix, const char *suffix) {
  char *u = itest_unique(prefix);
  snprintf(dst, len, "%s%s", u, suffix);
  free(u);
}

void pit_cluster_init(pit_cluster *c, int in_partitions, int out_partitions, bool dead_letter) {
  itest_require_servers();
  memset(c, 0, sizeof(*c));
  unique(c->in_topic, sizeof(c->in_topic), "pit-in", "");
  unique(c->out_topic, sizeof(c->out_topic), "pit-out", "");
  unique(c->group, sizeof(c->group), "pit-group", "");
  unique(c->prefix, sizeof(c->prefix), "pit", ":");
  c->in_partitions = in_partitions;
  c->out_partitions = out_partitions;
  itest_topic_create(c->in_topic, in_partitions);
  itest_topic_create(c->out_topic, out_partitions);
  if (dead_letter) {
    unique(c->dlq_topic, sizeof(c->dlq_topic), "pit-dlq", "");
    itest_topic_create(c->dlq_topic, 1);
  }
}

static void log_for(char *dst, size_t len, const char *name) {
  char *path = itest_log_path(name);
  snprintf(dst, len, "%s.log", path);
  free(path);
}

/* Done waiting when /readyz answers 200 or the process is gone (then pid becomes 0). */
static bool ready_or_gone(void *arg) {
  pit_proc *p = arg;
  if (!itest_alive(p->pid, NULL)) {
    untrack(p->pid);
    p->pid = 0;
    return true;
  }
  return itest_http_get(p->http_port, "/readyz", NULL, 0) == 200;
}

/* WSGATE_TEST_REDIS_CLUSTER=host:port runs the daemons on that Redis Cluster instead of the
 * shared node: `--redis-cluster host:port` replaces `--redis-port N`. */
static const char *redis_cluster_seed(void) {
  const char *s = getenv("WSGATE_TEST_REDIS_CLUSTER");
  return s != NULL && *s != '\0' ? s : NULL;
}

static const char *redis_flag(void) {
  return redis_cluster_seed() != NULL ? "--redis-cluster" : "--redis-port";
}

static const char *redis_where(char *port_buf, size_t len) {
  snprintf(port_buf, len, "%d", itest_redis_port());
  return redis_cluster_seed() != NULL ? redis_cluster_seed() : port_buf;
}

/* A command on the shared node, or on the cluster node serving its key (one MOVED followed, like
 * redis-cli -c). */
redisReply *pit_redis_key_command(const char *fmt, const char *a, const char *b) {
  redisContext *rc = pit_redis();
  redisReply *r = redisCommand(rc, fmt, a, b);
  wsg_redis_redirect rd;
  if (r != NULL && r->type == REDIS_REPLY_ERROR && wsg_redis_redirect_parse(r->str, r->len, &rd)) {
    freeReplyObject(r);
    redisFree(rc);
    rc = itest_redis_connect_port(rd.port);
    r = redisCommand(rc, fmt, a, b);
  }
  redisFree(rc);
  return r;
}

void pit_proc_start(pit_proc *p, const pit_cluster *c, const char *name, const char *handler,
                    const char *const *extra, bool wait_ready) {
  memset(p, 0, sizeof(*p));
  unique(p->name, sizeof(p->name), name, "");
  log_for(p->log, sizeof(p->log), p->name);
  p->http_port = itest_free_port();
  char http_port[16], redis_port[16];
  snprintf(http_port, sizeof(http_port), "%d", p->http_port);
  const char *redis_at = redis_where(redis_port, sizeof(redis_port));
  const char *argv[MAX_ARGS] = {
      itest_bin("WSGATE_PROCESSOR_BIN"),
      "--kafka-brokers",
      itest_kafka_bootstrap(),
      "--inbound-topic",
      c->in_topic,
      "--outbound-topic",
      c->out_topic,
      "--group-id",
      c->group,
      "--handler",
      handler,
      redis_flag(),
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
  for (size_t i = 0; extra && extra[i]; i++) {
    cr_assert(n + 1 < MAX_ARGS, "too many processor arguments");
    argv[n++] = extra[i];
  }
  argv[n] = NULL;
  p->pid = itest_spawn(argv, NULL, p->log);
  track(p->pid, p->log);
  if (wait_ready && !itest_wait_until(ready_or_gone, p, PIT_WAIT_MS)) {
    itest_dump_log(p->log, 60);
    cr_assert_fail("processor %s did not become ready", p->name);
  }
  if (wait_ready && p->pid == 0) {
    itest_dump_log(p->log, 60);
    cr_assert_fail("processor %s exited during start-up", p->name);
  }
}

int pit_proc_stop(pit_proc *p, int sig, int timeout_ms) {
  int status = 0;
  int rc = itest_stop(p->pid, sig, timeout_ms, &status);
  pid_t pid = p->pid;
  untrack(pid);
  p->pid = 0;
  if (rc != 0) {
    itest_dump_log(p->log, 40);
    cr_assert_fail("processor %d did not exit within %d ms of signal %d", (int)pid, timeout_ms,
                   sig);
  }
  return status;
}

void pit_proc_cleanup(pit_proc *p) {
  if (p->pid > 0) {
    itest_stop(p->pid, SIGKILL, 5000, NULL);
    untrack(p->pid);
    p->pid = 0;
  }
  if (p->log[0])
    fprintf(stderr, "processor log: %s\n", p->log);
}

/* --- gateways ------------------------------------------------------------------------------ */

void pit_gateway_start(pit_gateway *g, const pit_cluster *c, const char *name) {
  pit_gateway_start_with(g, c, name, NULL);
}

void pit_gateway_start_with(pit_gateway *g, const pit_cluster *c, const char *name,
                            const char *const *extra) {
  memset(g, 0, sizeof(*g));
  unique(g->id, sizeof(g->id), name, "");
  log_for(g->log, sizeof(g->log), g->id);
  g->port = itest_free_port();
  g->http_port = itest_free_port();
  char port[16], http_port[16], redis_port[16];
  snprintf(port, sizeof(port), "%d", g->port);
  snprintf(http_port, sizeof(http_port), "%d", g->http_port);
  const char *redis_at = redis_where(redis_port, sizeof(redis_port));
  const char *argv[MAX_ARGS] = {itest_bin("WSGATE_GATEWAY_BIN"),
                                "--kafka-brokers",
                                itest_kafka_bootstrap(),
                                redis_flag(),
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
                                PIT_JWT_SECRET,
                                "--drain-window",
                                "500ms",
                                "--drain-grace",
                                "10s",
                                "--log-level",
                                "debug",
                                NULL};
  size_t n = 0;
  while (argv[n])
    n++;
  for (size_t i = 0; extra && extra[i]; i++) {
    cr_assert(n + 1 < MAX_ARGS, "too many gateway arguments");
    argv[n++] = extra[i];
  }
  argv[n] = NULL;
  g->pid = itest_spawn(argv, NULL, g->log);
  track(g->pid, g->log);
  if (itest_wait_http(g->http_port, "/readyz", 200, PIT_WAIT_MS) != 0) {
    itest_dump_log(g->log, 60);
    cr_assert_fail("gateway %s did not become ready", g->id);
  }
  redisReply *r = pit_redis_key_command("HGET %sgw:%s slot", c->prefix, g->id);
  cr_assert(r && r->type == REDIS_REPLY_STRING, "no gateway record for %s in Redis", g->id);
  g->slot = (int32_t)atoi(r->str);
  freeReplyObject(r);
}

void pit_gateway_cleanup(pit_gateway *g) {
  if (g->pid > 0) {
    itest_stop(g->pid, SIGTERM, 15000, NULL);
    untrack(g->pid);
    g->pid = 0;
  }
  if (g->log[0])
    fprintf(stderr, "gateway log: %s\n", g->log);
}

ws_client *pit_connect(const pit_gateway *g, const char *user) {
  char claims[512], token[2048];
  snprintf(claims, sizeof(claims), "{\"sub\":\"%s\",\"exp\":%lld}", user,
           (long long)time(NULL) + 600);
  int n = gw_jwt_sign((const uint8_t *)PIT_JWT_SECRET, strlen(PIT_JWT_SECRET), claims, token,
                      sizeof(token));
  cr_assert_gt(n, 0, "cannot sign a token");
  char auth[2200];
  snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
  const char *headers[] = {auth, NULL};
  ws_client_options o = {
      .port = g->port, .headers = headers, .subprotocol = "wsgate.v1", .timeout_ms = 10000};
  ws_client *c = NULL;
  ws_http_response resp;
  char err[256];
  int rc = ws_client_connect(&c, &o, &resp, err, sizeof(err));
  cr_assert_eq(rc, WS_CLIENT_OK, "upgrade for %s failed: %s %s (status %d, body %s)", user,
               ws_client_strerror(rc), err, resp.status, resp.body);
  return c;
}

void pit_recv(ws_client *c, ws_message *m, int timeout_ms) {
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

double pit_metric(int http_port, const char *series) {
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

/* --- Kafka --------------------------------------------------------------------------------- */

rd_kafka_t *pit_producer(void) {
  return itest_kafka_client(WSG_KAFKA_PRODUCER, NULL);
}

void pit_produce_raw(rd_kafka_t *p, const char *topic, const void *key, size_t key_len,
                     const void *value, size_t len) {
  for (;;) {
    rd_kafka_resp_err_t e = rd_kafka_producev(
        p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_KEY((void *)key, key_len), RD_KAFKA_V_VALUE((void *)value, len), RD_KAFKA_V_END);
    if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
      rd_kafka_poll(p, 10);
      continue;
    }
    cr_assert_eq(e, RD_KAFKA_RESP_ERR_NO_ERROR, "produce: %s", rd_kafka_err2str(e));
    return;
  }
}

void pit_produce(rd_kafka_t *p, const pit_cluster *c, const wsg_envelope *env) {
  wsg_buf b;
  wsg_buf_init(&b, 0);
  int rc = wsg_envelope_encode(env, &b);
  cr_assert_eq(rc, WSG_ENV_OK, "encode: %s", wsg_env_strerror(rc));
  pit_produce_raw(p, c->in_topic, env->user, env->user_len, b.data, b.len);
  wsg_buf_finish(&b);
}

void pit_flush(rd_kafka_t *p) {
  rd_kafka_resp_err_t e = rd_kafka_flush(p, PIT_WAIT_MS);
  cr_assert_eq(e, RD_KAFKA_RESP_ERR_NO_ERROR, "flush: %s", rd_kafka_err2str(e));
}

wsg_envelope pit_msg(const char *user, uint64_t conn, const char *gw, uint32_t slot,
                     const void *data, size_t len, bool binary) {
  return (wsg_envelope){
      .kind = WSG_ENV_MSG,
      .fields = WSG_F_USER | WSG_F_CONN | WSG_F_GATEWAY | WSG_F_SLOT | WSG_F_TS | WSG_F_DATA |
                WSG_F_BINARY,
      .user = user,
      .user_len = strlen(user),
      .conn = conn,
      .gateway = gw,
      .gateway_len = strlen(gw),
      .slot = slot,
      .ts_us = 1700000000000000ULL,
      .data = data,
      .data_len = len,
      .binary = binary,
  };
}

void pit_reader_open(pit_reader *r, const char *topic, int partitions) {
  r->rk = itest_kafka_client(WSG_KAFKA_CONSUMER_ASSIGN, NULL);
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(partitions);
  for (int p = 0; p < partitions; p++)
    rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
  rd_kafka_resp_err_t e = rd_kafka_assign(r->rk, l);
  rd_kafka_topic_partition_list_destroy(l);
  cr_assert_eq(e, RD_KAFKA_RESP_ERR_NO_ERROR, "assign: %s", rd_kafka_err2str(e));
}

void pit_reader_close(pit_reader *r) {
  if (r->rk) {
    rd_kafka_consumer_close(r->rk);
    rd_kafka_destroy(r->rk);
  }
  r->rk = NULL;
}

rd_kafka_message_t *pit_reader_next(pit_reader *r, int timeout_ms) {
  uint64_t deadline = itest_now_ms() + (uint64_t)timeout_ms;
  for (;;) {
    uint64_t now = itest_now_ms();
    if (now >= deadline)
      return NULL;
    rd_kafka_message_t *m = rd_kafka_consumer_poll(r->rk, (int)(deadline - now));
    if (!m)
      return NULL;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR)
      return m;
    rd_kafka_message_destroy(m); /* partition EOF and transient errors */
  }
}

int64_t pit_uncommitted(const pit_cluster *c) {
  const char *over[] = {"group.id", c->group, NULL};
  rd_kafka_t *rk = itest_kafka_client(WSG_KAFKA_CONSUMER_GROUP, over);
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(c->in_partitions);
  for (int p = 0; p < c->in_partitions; p++)
    rd_kafka_topic_partition_list_add(l, c->in_topic, p);
  rd_kafka_resp_err_t e = rd_kafka_committed(rk, l, 10000);
  cr_assert_eq(e, RD_KAFKA_RESP_ERR_NO_ERROR, "committed: %s", rd_kafka_err2str(e));
  int64_t total = 0;
  for (int i = 0; i < l->cnt; i++) {
    int64_t lo = 0, hi = 0;
    e = rd_kafka_query_watermark_offsets(rk, c->in_topic, l->elems[i].partition, &lo, &hi, 10000);
    cr_assert_eq(e, RD_KAFKA_RESP_ERR_NO_ERROR, "watermarks: %s", rd_kafka_err2str(e));
    int64_t committed = l->elems[i].offset;
    if (committed < 0) {
      if (hi > lo) {
        total = -1;
        break;
      }
      continue;
    }
    total += hi - committed;
  }
  rd_kafka_topic_partition_list_destroy(l);
  rd_kafka_destroy(rk);
  return total;
}

/* --- Redis --------------------------------------------------------------------------------- */

redisContext *pit_redis(void) {
  const char *seed = redis_cluster_seed();
  return seed != NULL ? itest_redis_connect_port(atoi(strrchr(seed, ':') + 1))
                      : itest_redis_connect();
}

void pit_fake_gateway(redisContext *rc, const pit_cluster *c, const char *gw, int slot) {
  redisReply *r =
      redisCommand(rc, "HSET %sgw:%s slot %d addr 127.0.0.1:0 version test", c->prefix, gw, slot);
  cr_assert(r && r->type == REDIS_REPLY_INTEGER, "HSET gw failed");
  freeReplyObject(r);
  r = redisCommand(rc, "PEXPIRE %sgw:%s 600000", c->prefix, gw);
  freeReplyObject(r);
}

void pit_fake_conn(redisContext *rc, const pit_cluster *c, const char *user, uint64_t conn,
                   const char *gw) {
  char id[24];
  wsg_conn_id_format(id, sizeof(id), conn);
  redisReply *r = redisCommand(rc, "HSET %suser:%s %s %s", c->prefix, user, id, gw);
  cr_assert(r && r->type == REDIS_REPLY_INTEGER, "HSET user failed");
  freeReplyObject(r);
}
