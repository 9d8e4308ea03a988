/*
 * gateway_itest: helpers of the gateway's integration tests (see gateway_itest.h).
 *
 * Threads: the test's own thread.
 */
#include "gateway_itest.h"

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

#define MAX_ARGS    96
#define METRICS_MAX (512 * 1024)

static void copy_unique(char *dst, size_t len, const char *prefix, const char *suffix) {
  char *u = itest_unique(prefix);
  snprintf(dst, len, "%s%s", u, suffix);
  free(u);
}

static void spawn(gwt_gateway *g, const char *const *extra, bool wait_ready) {
  char port[16], http_port[16];
  snprintf(port, sizeof port, "%d", g->port);
  snprintf(http_port, sizeof http_port, "%d", g->http_port);
  char redis_port[16];
  snprintf(redis_port, sizeof redis_port, "%d", itest_redis_port());
  const char *argv[MAX_ARGS] = {
      itest_bin("WSGATE_GATEWAY_BIN"),
      "--kafka-brokers",
      itest_kafka_bootstrap(),
      "--redis-port",
      redis_port,
      "--redis-prefix",
      g->prefix,
      "--inbound-topic",
      g->in_topic,
      "--outbound-topic",
      g->out_topic,
      "--gateway-id",
      g->gw_id,
      "--listen-addr",
      "127.0.0.1",
      "--listen-port",
      port,
      "--http-addr",
      "127.0.0.1",
      "--http-port",
      http_port,
      "--jwt-secret",
      GWT_SECRET,
      "--drain-window",
      "500ms",
      "--drain-grace",
      "15s",
      "--log-level",
      "debug",
      /* Every test client comes from 127.0.0.1: no per-address upgrade budget unless a test sets
       * one (a later flag wins), so quick reconnects in a test never meet it. */
      "--max-upgrades-per-addr",
      "0",
  };
  size_t n = 0;
  while (argv[n])
    n++;
  for (size_t i = 0; extra && extra[i]; i++) {
    cr_assert(n + 1 < MAX_ARGS, "too many gateway arguments");
    argv[n++] = extra[i];
  }
  argv[n] = NULL;
  g->pid = itest_spawn(argv, NULL, g->log);
  if (wait_ready && itest_wait_http(g->http_port, "/readyz", 200, GWT_WAIT_MS) != 0) {
    itest_dump_log(g->log, 60);
    cr_assert_fail("gateway %s did not become ready", g->gw_id);
  }
}

static void prepare(gwt_gateway *g, const char *name) {
  itest_require_servers();
  memset(g, 0, sizeof *g);
  copy_unique(g->in_topic, sizeof g->in_topic, "gwt-in", "");
  copy_unique(g->out_topic, sizeof g->out_topic, "gwt-out", "");
  copy_unique(g->prefix, sizeof g->prefix, "gwt", ":");
  copy_unique(g->gw_id, sizeof g->gw_id, name, "");
  char *log = itest_log_path(g->gw_id);
  snprintf(g->log, sizeof g->log, "%s.log", log);
  free(log);
  itest_topic_create(g->in_topic, GWT_PARTITIONS);
  itest_topic_create(g->out_topic, GWT_PARTITIONS);
  g->port = itest_free_port();
  g->http_port = itest_free_port();
}

void gwt_start(gwt_gateway *g, const char *name, const char *const *extra) {
  prepare(g, name);
  spawn(g, extra, true);
}

void gwt_launch(gwt_gateway *g, const char *name, const char *const *extra) {
  prepare(g, name);
  spawn(g, extra, false);
}

void gwt_restart(gwt_gateway *g, const char *const *extra) {
  spawn(g, extra, true);
}

/* Fails the test if the sanitizers reported anything in the gateway's log (a sanitized build
 * keeps running after a UBSan report, and the test would not notice otherwise). */
static void check_sanitizers(const gwt_gateway *g) {
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

int gwt_stop(gwt_gateway *g, int sig, int timeout_ms) {
  int status = 0;
  int rc = itest_stop(g->pid, sig, timeout_ms, &status);
  g->pid = 0;
  if (rc != 0) {
    itest_dump_log(g->log, 60);
    cr_assert_fail("gateway did not exit within %d ms of signal %d", timeout_ms, sig);
  }
  check_sanitizers(g);
  return status;
}

void gwt_cleanup(gwt_gateway *g) {
  if (g->log[0])
    fprintf(stderr, "gateway log: %s\n", g->log);
  if (g->pid > 0)
    itest_stop(g->pid, SIGKILL, 5000, NULL);
  g->pid = 0;
  if (g->log[0])
    check_sanitizers(g);
}

const char *gwt_token(const char *user, long exp_in_s) {
  static char tok[2048];
  char claims[512];
  snprintf(claims, sizeof claims, "{\"sub\":\"%s\",\"exp\":%lld}", user,
           (long long)time(NULL) + exp_in_s);
  int n = gw_jwt_sign((const uint8_t *)GWT_SECRET, strlen(GWT_SECRET), claims, tok, sizeof tok);
  cr_assert(n > 0, "gw_jwt_sign: %s", gw_jwt_strerror(n));
  return tok;
}

int gwt_connect_raw(const gwt_gateway *g, const char *path, const char *const *headers,
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

ws_client *gwt_connect(const gwt_gateway *g, const char *user) {
  char auth[2100];
  snprintf(auth, sizeof auth, "Authorization: Bearer %s", gwt_token(user, 300));
  const char *headers[] = {auth, NULL};
  ws_client *c = NULL;
  ws_http_response resp;
  int rc = gwt_connect_raw(g, "/", headers, "wsgate.v1", &c, &resp);
  cr_assert_eq(rc, WS_CLIENT_OK, "upgrade for %s failed: %s (status %d, body %s)", user,
               ws_client_strerror(rc), resp.status, resp.body);
  cr_assert_str_eq(resp.protocol, "wsgate.v1");
  return c;
}

redisContext *gwt_redis(void) {
  return itest_redis_connect();
}

int32_t gwt_slot(const gwt_gateway *g) {
  redisContext *rc = gwt_redis();
  redisReply *r = redisCommand(rc, "HGET %sgw:%s slot", g->prefix, g->gw_id);
  cr_assert(r && r->type == REDIS_REPLY_STRING, "no gateway record for %s in Redis", g->gw_id);
  int32_t slot = (int32_t)atoi(r->str);
  freeReplyObject(r);
  redisFree(rc);
  return slot;
}

/* --- inbound reader ------------------------------------------------------------------------ */

void gwt_reader_open(gwt_reader *r, const gwt_gateway *g) {
  memset(r, 0, sizeof *r);
  r->rk = itest_kafka_client(WSG_KAFKA_CONSUMER_ASSIGN, NULL);
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(GWT_PARTITIONS);
  for (int p = 0; p < GWT_PARTITIONS; p++)
    rd_kafka_topic_partition_list_add(l, g->in_topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
  rd_kafka_resp_err_t e = rd_kafka_assign(r->rk, l);
  rd_kafka_topic_partition_list_destroy(l);
  cr_assert_eq(e, RD_KAFKA_RESP_ERR_NO_ERROR, "assign: %s", rd_kafka_err2str(e));
}

void gwt_reader_close(gwt_reader *r) {
  if (r->last)
    rd_kafka_message_destroy(r->last);
  r->last = NULL;
  if (r->rk) {
    rd_kafka_consumer_close(r->rk);
    rd_kafka_destroy(r->rk);
  }
  r->rk = NULL;
}

bool gwt_reader_next(gwt_reader *r, wsg_envelope *env, int timeout_ms, int32_t *partition) {
  uint64_t deadline = itest_now_ms() + (uint64_t)timeout_ms;
  for (;;) {
    uint64_t now = itest_now_ms();
    if (now >= deadline)
      return false;
    rd_kafka_message_t *m = rd_kafka_consumer_poll(r->rk, (int)(deadline - now));
    if (!m)
      continue;
    if (m->err) {
      rd_kafka_message_destroy(m);
      continue;
    }
    if (r->last)
      rd_kafka_message_destroy(r->last);
    r->last = m;
    const char *field = NULL;
    int rc = wsg_envelope_decode(env, m->payload, m->len, &field);
    cr_assert_eq(rc, WSG_ENV_OK, "inbound record does not decode: %s (field %s)",
                 wsg_env_strerror(rc), field ? field : "");
    cr_assert(m->key_len == env->user_len && memcmp(m->key, env->user, env->user_len) == 0,
              "inbound record's key is not its user id");
    if (partition)
      *partition = m->partition;
    return true;
  }
}

void gwt_reader_expect(gwt_reader *r, wsg_env_kind kind, const char *user, wsg_envelope *env,
                       int timeout_ms) {
  uint64_t deadline = itest_now_ms() + (uint64_t)timeout_ms;
  for (;;) {
    uint64_t now = itest_now_ms();
    cr_assert(now < deadline, "no %s envelope for %s on the inbound topic within %d ms",
              wsg_env_kind_name(kind), user, timeout_ms);
    if (!gwt_reader_next(r, env, (int)(deadline - now), NULL))
      continue;
    if (env->kind == kind && env->user_len == strlen(user) &&
        memcmp(env->user, user, env->user_len) == 0)
      return;
  }
}

/* --- outbound ------------------------------------------------------------------------------ */

void gwt_send_outbound(const gwt_gateway *g, int32_t slot, const wsg_envelope *env) {
  wsg_buf b;
  wsg_buf_init(&b, 0);
  int rc = wsg_envelope_encode(env, &b);
  cr_assert_eq(rc, WSG_ENV_OK, "encode: %s", wsg_env_strerror(rc));
  rd_kafka_t *rk = itest_kafka_client(WSG_KAFKA_PRODUCER, NULL);
  rd_kafka_resp_err_t e = rd_kafka_producev(
      rk, RD_KAFKA_V_TOPIC(g->out_topic), RD_KAFKA_V_PARTITION(slot),
      RD_KAFKA_V_VALUE(b.data, b.len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
  cr_assert_eq(e, RD_KAFKA_RESP_ERR_NO_ERROR, "produce: %s", rd_kafka_err2str(e));
  e = rd_kafka_flush(rk, 15000);
  cr_assert_eq(e, RD_KAFKA_RESP_ERR_NO_ERROR, "flush: %s", rd_kafka_err2str(e));
  rd_kafka_destroy(rk);
  wsg_buf_finish(&b);
}

void gwt_deliver(const gwt_gateway *g, int32_t slot, const char *gw_id, uint64_t conn,
                 const char *data) {
  wsg_envelope e = {0};
  e.kind = WSG_ENV_DELIVER;
  e.version = WSG_ENVELOPE_VERSION;
  e.fields = WSG_F_GATEWAY | WSG_F_CONN | WSG_F_DATA | WSG_F_SLOT;
  e.gateway = gw_id ? gw_id : g->gw_id;
  e.gateway_len = strlen(e.gateway);
  e.slot = (uint32_t)slot;
  e.conn = conn;
  e.data = (const uint8_t *)data;
  e.data_len = strlen(data);
  gwt_send_outbound(g, slot, &e);
}

void gwt_deliver_many(const gwt_gateway *g, int32_t slot, uint64_t conn, size_t size, int count) {
  uint8_t *payload = malloc(size);
  cr_assert(payload);
  memset(payload, 'z', size);
  wsg_envelope e = {0};
  e.kind = WSG_ENV_DELIVER;
  e.version = WSG_ENVELOPE_VERSION;
  e.fields = WSG_F_GATEWAY | WSG_F_CONN | WSG_F_DATA | WSG_F_BINARY;
  e.gateway = g->gw_id;
  e.gateway_len = strlen(g->gw_id);
  e.conn = conn;
  e.data = payload;
  e.data_len = size;
  e.binary = true;
  wsg_buf b;
  wsg_buf_init(&b, 0);
  int rc = wsg_envelope_encode(&e, &b);
  cr_assert_eq(rc, WSG_ENV_OK, "encode: %s", wsg_env_strerror(rc));
  rd_kafka_t *rk = itest_kafka_client(WSG_KAFKA_PRODUCER, NULL);
  for (int i = 0; i < count; i++) {
    rd_kafka_resp_err_t err;
    while ((err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(g->out_topic), RD_KAFKA_V_PARTITION(slot),
                                    RD_KAFKA_V_VALUE(b.data, b.len),
                                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END)) ==
           RD_KAFKA_RESP_ERR__QUEUE_FULL)
      rd_kafka_poll(rk, 10);
    cr_assert_eq(err, RD_KAFKA_RESP_ERR_NO_ERROR, "produce: %s", rd_kafka_err2str(err));
  }
  cr_assert_eq(rd_kafka_flush(rk, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_destroy(rk);
  wsg_buf_finish(&b);
  free(payload);
}

double gwt_metric(const gwt_gateway *g, const char *series) {
  char *buf = malloc(METRICS_MAX);
  cr_assert(buf);
  int st = itest_http_get(g->http_port, "/metrics", buf, METRICS_MAX);
  cr_assert_eq(st, 200, "GET /metrics: %d", st);
  double v = -1;
  size_t sl = strlen(series);
  for (char *line = buf; line && *line;) {
    char *nl = strchr(line, '\n');
    if (strncmp(line, series, sl) == 0 && line[sl] == ' ') {
      v = strtod(line + sl + 1, NULL);
      break;
    }
    line = nl ? nl + 1 : NULL;
  }
  free(buf);
  return v;
}

void gwt_expect_msg(ws_client *c, ws_opcode op, ws_message *m, int timeout_ms) {
  int rc = ws_client_recv(c, m, timeout_ms);
  cr_assert_eq(rc, WS_CLIENT_OK, "no message within %d ms: %s", timeout_ms, ws_client_strerror(rc));
  cr_assert_eq(m->opcode, op, "expected opcode %d, got %d (close %u \"%s\")", op, m->opcode,
               m->close_code, m->close_reason);
}
