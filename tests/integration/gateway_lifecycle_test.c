/*
 * The gateway's life in Redis and its drain: SIGTERM closes every client with 1001 and a
 * reconnect hint, refuses new upgrades with 503, produces their disconnect events, releases the
 * connections, the gateway record and the slot, and exits 0 within the grace; a gateway killed
 * with SIGKILL leaves its slot to expire within the lease TTL.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness_kafka.h"
#include "harness.h"

static itest_gateway gw;
static itest_reader rd;
/* The private redis-server of the test that kills Redis (pid 0 when not running). */
static itest_redis_server private_redis;

static void teardown(void) {
  itest_reader_close(&rd);
  itest_gateway_cleanup(&gw);
  itest_redis_server_stop(&private_redis, SIGKILL);
}

TestSuite(gateway_lifecycle, .fini = teardown, .timeout = 120);

static long long redis_int(const char *fmt, const char *a, const char *b) {
  redisContext *r = itest_redis_connect();
  redisReply *rep = redisCommand(r, fmt, a, b);
  cr_assert(rep && rep->type == REDIS_REPLY_INTEGER, "Redis: unexpected reply");
  long long v = rep->integer;
  freeReplyObject(rep);
  redisFree(r);
  return v;
}

static bool not_ready(void *arg) {
  itest_gateway *g = arg;
  return itest_http_get(g->http_port, "/readyz", NULL, 0) != 200;
}

Test(gateway_lifecycle, sigterm_drains_with_1001_and_releases_redis) {
  const char *extra[] = {"--drain-window", "2s", "--drain-grace", "10s", NULL};
  itest_gateway_start(&gw, NULL, "drain", &(itest_daemon_opts){.extra = extra});
  itest_reader_open(&rd, gw.cluster.in_topic, gw.cluster.in_partitions);
  int32_t slot = itest_gateway_slot(&gw);
  char slot_key[300];
  snprintf(slot_key, sizeof slot_key, "%sslot:%d", gw.cluster.prefix, slot);

  /* One at a time: the two users' envelopes go to different partitions, in no common order. */
  wsg_envelope e;
  ws_client *a = itest_connect(&gw, "ann");
  itest_reader_expect(&rd, WSG_ENV_CONNECT, "ann", &e, ITEST_TIMEOUT_MS);
  ws_client *b = itest_connect(&gw, "ben");
  itest_reader_expect(&rd, WSG_ENV_CONNECT, "ben", &e, ITEST_TIMEOUT_MS);
  cr_assert_eq(redis_int("HLEN %suser:%s", gw.cluster.prefix, "ann"), 1);
  cr_assert_eq(redis_int("EXISTS %s%s", slot_key, ""), 1);

  uint64_t t0 = itest_now_ms();
  cr_assert_eq(kill(gw.pid, SIGTERM), 0);
  cr_assert(itest_wait_until(not_ready, &gw, 5000), "/readyz still 200 after SIGTERM");

  /* New upgrades are refused while the drain runs. */
  ws_client *late = NULL;
  ws_http_response resp;
  char auth[2100];
  snprintf(auth, sizeof auth, "Authorization: Bearer %s", itest_token("late", 300));
  const char *headers[] = {auth, NULL};
  int rc = itest_connect_raw(&gw, "/", headers, "wsgate.v1", &late, &resp);
  cr_assert_eq(rc, WS_CLIENT_REFUSED, "an upgrade during the drain was not refused");
  cr_assert_eq(resp.status, 503);
  cr_assert(strstr(resp.headers, "Retry-After") || strstr(resp.headers, "retry-after"), "%s",
            resp.headers);

  ws_message m;
  ws_client *clients[2] = {a, b};
  for (int i = 0; i < 2; i++) {
    itest_expect_msg(clients[i], WS_OP_CLOSE, &m, 10000);
    cr_assert_eq(m.close_code, 1001);
    cr_assert(strncmp(m.close_reason, "draining; reconnect_ms=", 23) == 0, "reason \"%s\"",
              m.close_reason);
  }

  int status = itest_gateway_stop(&gw, 0, 15000);
  uint64_t took = itest_now_ms() - t0;
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status %d", status);
  cr_assert_lt(took, 10000 + 2000, "the drain took %llu ms, grace is 10 s",
               (unsigned long long)took);

  int seen = 0;
  uint64_t deadline = itest_now_ms() + ITEST_TIMEOUT_MS;
  while (seen != 3 && itest_now_ms() < deadline) {
    if (!itest_reader_next_envelope(&rd, &e, 1000, NULL) || e.kind != WSG_ENV_DISCONNECT)
      continue;
    cr_assert_eq(e.close_code, 1001);
    seen |= (e.user_len == 3 && memcmp(e.user, "ann", 3) == 0) ? 1 : 2;
  }
  cr_assert_eq(seen, 3, "disconnect events seen: %d (1 ann, 2 ben)", seen);

  cr_assert_eq(redis_int("EXISTS %suser:%s", gw.cluster.prefix, "ann"), 0,
               "ann's entry left behind");
  cr_assert_eq(redis_int("EXISTS %suser:%s", gw.cluster.prefix, "ben"), 0,
               "ben's entry left behind");
  cr_assert_eq(redis_int("EXISTS %sgw:%s", gw.cluster.prefix, gw.id), 0, "gateway record left");
  cr_assert_eq(redis_int("EXISTS %s%s", slot_key, ""), 0, "slot not released");
  ws_client_destroy(a);
  ws_client_destroy(b);
}

typedef struct {
  const char *key;
} key_arg;

static bool key_gone(void *arg) {
  key_arg *k = arg;
  redisContext *r = itest_redis_connect();
  redisReply *rep = redisCommand(r, "EXISTS %s", k->key);
  bool gone = rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 0;
  freeReplyObject(rep);
  redisFree(r);
  return gone;
}

Test(gateway_lifecycle, sigkill_leaves_the_slot_to_expire_within_the_ttl) {
  const char *extra[] = {"--lease-ttl", "2s", "--lease-renew", "400ms", NULL};
  itest_gateway_start(&gw, NULL, "kill9", &(itest_daemon_opts){.extra = extra});
  int32_t slot = itest_gateway_slot(&gw);
  char slot_key[300];
  snprintf(slot_key, sizeof slot_key, "%sslot:%d", gw.cluster.prefix, slot);
  key_arg k = {slot_key};
  cr_assert(!key_gone(&k));

  uint64_t t0 = itest_now_ms();
  itest_gateway_stop(&gw, SIGKILL, 5000);
  cr_assert(itest_wait_until(key_gone, &k, 5000), "slot key still there 5 s after SIGKILL");
  uint64_t took = itest_now_ms() - t0;
  cr_assert_leq(took, 2000 + 500, "the slot expired after %llu ms, TTL 2 s",
                (unsigned long long)took);

  /* A new gateway can take the slot range again. */
  itest_gateway_restart(&gw, &(itest_daemon_opts){.extra = extra});
  cr_assert_geq(itest_gateway_slot(&gw), 0);
}

Test(gateway_lifecycle, second_signal_exits_at_once) {
  const char *extra[] = {"--drain-window", "20s", "--drain-grace", "30s", NULL};
  itest_gateway_start(&gw, NULL, "twice", &(itest_daemon_opts){.extra = extra});
  ws_client *a = itest_connect(&gw, "amy");
  cr_assert_eq(kill(gw.pid, SIGTERM), 0);
  cr_assert(itest_wait_until(not_ready, &gw, 5000));
  uint64_t t0 = itest_now_ms();
  int status = itest_gateway_stop(&gw, SIGINT, 5000);
  cr_assert_lt(itest_now_ms() - t0, 5000);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1, "status %d", status);
  ws_client_destroy(a);
}

typedef struct {
  const itest_gateway *g;
  const char *user;
  uint64_t conn;
} reg_arg;

static bool registered(void *arg) {
  reg_arg *a = arg;
  redisContext *r = itest_redis_connect_port(private_redis.port);
  if (!r)
    return false;
  redisReply *rep = redisCommand(r, "HGET %suser:%s %llu", a->g->cluster.prefix, a->user,
                                 (unsigned long long)a->conn);
  bool ok = rep && rep->type == REDIS_REPLY_STRING && strcmp(rep->str, a->g->id) == 0;
  freeReplyObject(rep);
  redisFree(r);
  return ok;
}

static bool ready(void *arg) {
  itest_gateway *g = arg;
  return itest_http_get(g->http_port, "/readyz", NULL, 0) == 200;
}

/* A new upgrade gets 503 not_ready. */
static bool refuses_upgrades(void *arg) {
  itest_gateway *g = arg;
  char auth[2100];
  snprintf(auth, sizeof auth, "Authorization: Bearer %s", itest_token("newbie", 300));
  const char *headers[] = {auth, NULL};
  ws_client *late = NULL;
  ws_http_response resp;
  int rc = itest_connect_raw(g, "/", headers, "wsgate.v1", &late, &resp);
  if (rc != WS_CLIENT_REFUSED) {
    ws_client_destroy(late);
    return false;
  }
  return resp.status == 503 && strstr(resp.body, "not_ready") != NULL;
}

Test(gateway_lifecycle, redis_outage_keeps_connections_and_recovers) {
  itest_require_servers();
  itest_redis_server *srv = &private_redis;
  itest_redis_server_start(srv, 0);
  const char *extra[] = {"--redis-timeout", "500ms", "--lease-ttl", "3s",
                         "--lease-renew",   "1s",    NULL};
  itest_gateway_start(&gw, NULL, "redisout",
                      &(itest_daemon_opts){.extra = extra, .redis_port = srv->port});
  itest_reader_open(&rd, gw.cluster.in_topic, gw.cluster.in_partitions);
  ws_client *c = itest_connect(&gw, "rex");
  wsg_envelope e;
  itest_reader_expect(&rd, WSG_ENV_CONNECT, "rex", &e, ITEST_TIMEOUT_MS);
  uint64_t conn = e.conn;
  reg_arg ra = {&gw, "rex", conn};
  cr_assert(registered(&ra));
  redisContext *r = itest_redis_connect_port(srv->port);
  redisReply *rep = redisCommand(r, "HGET %sgw:%s slot", gw.cluster.prefix, gw.id);
  cr_assert(rep && rep->type == REDIS_REPLY_STRING);
  int32_t slot = atoi(rep->str);
  freeReplyObject(rep);
  redisFree(r);

  /* Redis dies: new upgrades refused at once, but /readyz stays 200 while the slot's lease holds
   * (docs/GATEWAY.md: a Redis blip must not empty the balancer), and the open connection is
   * still served. */
  itest_redis_server_stop(srv, SIGKILL);
  cr_assert(itest_wait_until(refuses_upgrades, &gw, ITEST_TIMEOUT_MS),
            "new upgrades still admitted without Redis");
  cr_assert(ready(&gw), "/readyz turned 503 at once although the lease still holds");
  itest_deliver(&gw, slot, NULL, conn, "during the outage");
  ws_message m;
  itest_expect_msg(c, WS_OP_TEXT, &m, ITEST_TIMEOUT_MS);
  cr_assert_str_eq((const char *)m.data, "during the outage");
  /* Past the lease the slot is gone: now unready. */
  cr_assert(itest_wait_until(not_ready, &gw, ITEST_TIMEOUT_MS),
            "/readyz still 200 after the lease");

  /* Redis comes back empty: the gateway takes a slot again and re-registers the connection. */
  itest_redis_server_start(srv, srv->port);
  cr_assert(itest_wait_until(ready, &gw, ITEST_TIMEOUT_MS), "not ready again after Redis returned");
  cr_assert(itest_wait_until(registered, &ra, ITEST_TIMEOUT_MS), "rex was not registered again");
  r = itest_redis_connect_port(srv->port);
  rep = redisCommand(r, "HGET %sgw:%s slot", gw.cluster.prefix, gw.id);
  cr_assert(rep && rep->type == REDIS_REPLY_STRING);
  slot = atoi(rep->str);
  freeReplyObject(rep);
  redisFree(r);
  itest_deliver(&gw, slot, NULL, conn, "after the outage");
  itest_expect_msg(c, WS_OP_TEXT, &m, ITEST_TIMEOUT_MS);
  cr_assert_str_eq((const char *)m.data, "after the outage");
  ws_client_destroy(c);
}

/* Keepalive (the gateway's own, not libwebsockets' timers): a client that answers pings stays;
 * one that never reads is pinged, gets no close frame it would not read anyway, and is dropped
 * once --idle-timeout has passed without a pong, with a disconnect saying 1006. */
Test(gateway_lifecycle, keepalive_pings_and_drops_the_silent) {
  const char *extra[] = {"--ping-interval", "1s", "--idle-timeout", "3s", NULL};
  itest_gateway_start(&gw, NULL, "keepalive", &(itest_daemon_opts){.extra = extra});
  itest_reader_open(&rd, gw.cluster.in_topic, gw.cluster.in_partitions);
  wsg_envelope e;
  ws_client *talker = itest_connect(&gw, "talker");
  itest_reader_expect(&rd, WSG_ENV_CONNECT, "talker", &e, ITEST_TIMEOUT_MS);
  ws_client *silent = itest_connect(&gw, "silent");
  itest_reader_expect(&rd, WSG_ENV_CONNECT, "silent", &e, ITEST_TIMEOUT_MS);
  uint64_t silent_conn = e.conn;

  /* 6 s of reading (and so answering pings) for the talker; the silent one reads nothing. */
  for (int i = 0; i < 30; i++) {
    ws_message m;
    int rc = ws_client_recv(talker, &m, 200);
    cr_assert_eq(rc, WS_CLIENT_TIMEOUT, "the talker got something else than pings: %s",
                 ws_client_strerror(rc));
  }
  cr_assert_geq(ws_client_pings_received(talker), 3, "pings in 6 s at 1 s: %u",
                ws_client_pings_received(talker));

  itest_reader_expect(&rd, WSG_ENV_DISCONNECT, "silent", &e, ITEST_TIMEOUT_MS);
  cr_assert_eq(e.conn, silent_conn);
  cr_assert_eq(e.close_code, 1006, "disconnect code %u", e.close_code);
  cr_assert_geq(itest_metric(gw.http_port, "wsgate_gateway_idle_closes_total"), 1);
  cr_assert_geq(itest_metric(gw.http_port, "wsgate_gateway_pings_total"), 4);
  /* The silent client's socket was closed under it; the talker is still served. */
  ws_message m;
  int rc = ws_client_recv(silent, &m, 2000);
  cr_assert(rc == WS_CLIENT_CLOSED || rc == WS_CLIENT_IO || rc == WS_CLIENT_PROTOCOL,
            "the silent client is still connected: %s", ws_client_strerror(rc));
  cr_assert_eq(itest_metric(gw.http_port, "wsgate_gateway_connections"), 1);
  cr_assert_eq(ws_client_recv(talker, &m, 1500), WS_CLIENT_TIMEOUT);
  ws_client_destroy(silent);
  ws_client_destroy(talker);
}
