/*
 * Integration tests of presence (issue 15, item 4) on real Kafka and Redis: the client's presence
 * op across two gateways and its refusals (JSON and MessagePack), entries of a gateway killed
 * with -9 leaving within its lease, `unavailable` while Redis is down, and the gateway rewriting
 * its gateway-set and presence entries after its Redis restarted empty (a private redis-server:
 * the shared one is never restarted). Needs WSGATE_TEST_KAFKA and WSGATE_TEST_REDIS_PORT.
 */
#include <criterion/criterion.h>
#include <msgpack.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gw_jwt.h"
#include "harness.h"
#include "harness_daemons.h"

static itest_gateway gw, gw2;
static itest_redis_server srv;

static void teardown(void) {
  itest_gateway_cleanup(&gw);
  itest_gateway_cleanup(&gw2);
  itest_redis_server_stop(&srv, SIGKILL);
  itest_fini();
}

TestSuite(channels_presence, .fini = teardown, .timeout = 180);

#define NS_FLAGS                                                                                   \
  "--channel-namespace", "room=presence=true,client_presence=true", "--channel-namespace",         \
      "quiet=presence=true"

static ws_client *connect_on(const itest_gateway *g, const char *user) {
  char claims[512], tok[2048], auth[2200];
  snprintf(claims, sizeof claims, "{\"sub\":\"%s\",\"exp\":%ld,\"channels\":[\"*\"]}", user,
           (long)time(NULL) + 300);
  cr_assert_gt(gw_jwt_sign((const uint8_t *)ITEST_JWT_SECRET, strlen(ITEST_JWT_SECRET), claims, tok,
                           sizeof tok),
               0);
  snprintf(auth, sizeof auth, "Authorization: Bearer %s", tok);
  const char *headers[] = {auth, NULL};
  ws_client *c = NULL;
  ws_http_response resp;
  cr_assert_eq(itest_connect_raw(g, "/", headers, "wsgate.v1", &c, &resp), WS_CLIENT_OK);
  return c;
}

static void op_answer(ws_client *c, const char *op, char *got, size_t cap) {
  cr_assert_eq(ws_client_send_text(c, op, strlen(op)), WS_CLIENT_OK);
  ws_message m;
  itest_expect_msg(c, WS_OP_TEXT, &m, ITEST_TIMEOUT_MS);
  snprintf(got, cap, "%.*s", (int)m.len, m.data);
}

static void op_expect(ws_client *c, const char *op, const char *want) {
  char got[2048];
  op_answer(c, op, got, sizeof got);
  cr_expect_str_eq(got, want, "%s", op);
}

static void subscribe(ws_client *c, const char *channel) {
  char op[256], want[256];
  snprintf(op, sizeof op, "{\"wsgate\":\"subscribe\",\"channel\":\"%s\"}", channel);
  snprintf(want, sizeof want, "{\"wsgate\":\"subscribed\",\"channel\":\"%s\"}", channel);
  op_expect(c, op, want);
}

/* Asks c for the presence of room:x until the answer is `want` (entries are written fire and
 * forget: another gateway's may land a moment later). */
static bool presence_is(ws_client *c, const char *want, int timeout_ms) {
  char got[2048] = "";
  for (uint64_t end = itest_now_ms() + (uint64_t)timeout_ms; itest_now_ms() < end;) {
    op_answer(c, "{\"wsgate\":\"presence\",\"id\":7,\"channel\":\"room:x\"}", got, sizeof got);
    if (strcmp(got, want) == 0)
      return true;
    usleep(100 * 1000);
  }
  cr_log_error("presence: got %s, want %s", got, want);
  return false;
}

Test(channels_presence, op_answers_and_refusals) {
  itest_cluster c;
  itest_cluster_init(&c, 2, 4, false);
  static const char *const extra[] = {NS_FLAGS, "--channel-presence-users", "2", NULL};
  itest_gateway_start(&gw, &c, "pres-op1", &(itest_daemon_opts){.extra = extra});
  itest_gateway_start(&gw2, &c, "pres-op2", &(itest_daemon_opts){.extra = extra});
  ws_client *a1 = connect_on(&gw, "alice"), *a2 = connect_on(&gw2, "alice");
  ws_client *b = connect_on(&gw2, "bob"), *out = connect_on(&gw, "olga");
  subscribe(a1, "room:x");
  subscribe(a2, "room:x");
  subscribe(b, "room:x");
  cr_expect(presence_is(a1,
                        "{\"wsgate\":\"presence\",\"id\":7,\"channel\":\"room:x\","
                        "\"connections\":3,\"users\":[\"alice\",\"bob\"]}",
                        10000),
            "alice twice (two gateways), bob once: users distinct");

  /* Refusals: not subscribed; a namespace without client_presence; a bad channel. */
  op_expect(out, "{\"wsgate\":\"presence\",\"id\":1,\"channel\":\"room:x\"}",
            "{\"wsgate\":\"error\",\"id\":1,\"op\":\"presence\",\"code\":\"not_subscribed\","
            "\"message\":\"only a connection subscribed to the channel may ask for its "
            "presence\"}");
  subscribe(out, "quiet:x");
  op_expect(out, "{\"wsgate\":\"presence\",\"id\":2,\"channel\":\"quiet:x\"}",
            "{\"wsgate\":\"error\",\"id\":2,\"op\":\"presence\",\"code\":\"presence_not_allowed\","
            "\"message\":\"clients may not ask for presence in this channel's namespace "
            "(client_presence=false)\"}");
  op_expect(out, "{\"wsgate\":\"presence\",\"id\":3}",
            "{\"wsgate\":\"error\",\"id\":3,\"op\":\"presence\",\"code\":\"bad_request\","
            "\"message\":\"the op is not an object of the documented shape\"}");

  /* Past --channel-presence-users the list stops and says so; connections stays exact. */
  ws_client *z = connect_on(&gw, "zoe");
  subscribe(z, "room:x");
  cr_expect(presence_is(z,
                        "{\"wsgate\":\"presence\",\"id\":7,\"channel\":\"room:x\","
                        "\"connections\":4,\"users\":[\"alice\",\"bob\"],\"truncated\":true}",
                        10000));

  /* MessagePack: the same keys. */
  ws_client *m = connect_on(&gw2, "mia");
  static const uint8_t sub_mp[] = "\x82\xa6wsgate\xa9subscribe\xa7"
                                  "channel\xa6room:x";
  cr_assert_eq(ws_client_send(m, WS_OP_BINARY, sub_mp, sizeof sub_mp - 1), WS_CLIENT_OK);
  ws_message msg;
  itest_expect_msg(m, WS_OP_BINARY, &msg, ITEST_TIMEOUT_MS);
  static const uint8_t pres_mp[] = "\x83\xa6wsgate\xa8presence\xa2id\x09\xa7"
                                   "channel\xa6room:x";
  bool seen5 = false;
  for (int i = 0; i < 50 && !seen5; i++) {
    cr_assert_eq(ws_client_send(m, WS_OP_BINARY, pres_mp, sizeof pres_mp - 1), WS_CLIENT_OK);
    itest_expect_msg(m, WS_OP_BINARY, &msg, ITEST_TIMEOUT_MS);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    cr_assert_eq(msgpack_unpack_next(&u, (const char *)msg.data, msg.len, NULL),
                 MSGPACK_UNPACK_SUCCESS);
    cr_assert_eq(u.data.type, MSGPACK_OBJECT_MAP);
    const msgpack_object_map *mp = &u.data.via.map;
    cr_assert_geq(mp->size, 5);
    cr_expect(mp->ptr[0].val.type == MSGPACK_OBJECT_STR && mp->ptr[0].val.via.str.size == 8 &&
              memcmp(mp->ptr[0].val.via.str.ptr, "presence", 8) == 0);
    cr_expect_eq(mp->ptr[1].val.via.u64, 9, "the id");
    seen5 = mp->ptr[3].val.via.u64 == 5;
    msgpack_unpacked_destroy(&u);
    if (!seen5)
      usleep(100 * 1000);
  }
  cr_expect(seen5, "five connections seen in MessagePack");

  cr_expect_geq(
      itest_metric(gw.http_port, "wsgate_gateway_channel_ops_total{op=\"presence\",result=\"ok\"}"),
      1);
  cr_expect_eq(itest_metric(gw.http_port, "wsgate_gateway_channel_ops_total{op=\"presence\","
                                          "result=\"not_subscribed\"}"),
               1);
  cr_expect_eq(itest_metric(gw.http_port, "wsgate_gateway_channel_presence_queries"), 0);
  ws_client_destroy(a1);
  ws_client_destroy(a2);
  ws_client_destroy(b);
  ws_client_destroy(out);
  ws_client_destroy(z);
  ws_client_destroy(m);
}

/* A gateway killed with -9 leaves its entries behind; once its lease is gone the presence op
 * leaves them out and deletes them. */
Test(channels_presence, killed_gateway_vanishes_within_its_lease) {
  itest_cluster c;
  itest_cluster_init(&c, 2, 4, false);
  static const char *const extra[] = {NS_FLAGS, NULL};
  static const char *const short_lease[] = {NS_FLAGS,        "--lease-ttl", "2s",
                                            "--lease-renew", "500ms",       NULL};
  itest_gateway_start(&gw, &c, "pres-kill1", &(itest_daemon_opts){.extra = extra});
  itest_gateway_start(&gw2, &c, "pres-kill2", &(itest_daemon_opts){.extra = short_lease});
  ws_client *a = connect_on(&gw, "amy"), *b = connect_on(&gw2, "ben");
  subscribe(a, "room:x");
  subscribe(b, "room:x");
  cr_expect(presence_is(a,
                        "{\"wsgate\":\"presence\",\"id\":7,\"channel\":\"room:x\","
                        "\"connections\":2,\"users\":[\"amy\",\"ben\"]}",
                        10000));
  uint64_t t0 = itest_now_ms();
  itest_gateway_stop(&gw2, SIGKILL, 5000);
  cr_expect(presence_is(a,
                        "{\"wsgate\":\"presence\",\"id\":7,\"channel\":\"room:x\","
                        "\"connections\":1,\"users\":[\"amy\"]}",
                        6000),
            "ben left within the 2 s lease (and a second of slack)");
  cr_log_info("ben vanished %llu ms after kill -9", (unsigned long long)(itest_now_ms() - t0));
  char key[256];
  snprintf(key, sizeof key, "%sch:{c:room:x}:p", c.prefix);
  redisReply *rep = itest_redis_key_command(0, "HLEN %s%s", key, "");
  cr_expect(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 1,
            "the dead gateway's entry was deleted");
  freeReplyObject(rep);
  cr_expect_geq(itest_metric(gw.http_port, "wsgate_gateway_channel_presence_dropped_total"), 1);
  ws_client_destroy(b);
  ws_client_destroy(a);
}

static long redis_int(redisContext *r, const char *fmt, const char *key) {
  redisReply *rep = redisCommand(r, fmt, key);
  long n = rep && rep->type == REDIS_REPLY_INTEGER ? (long)rep->integer : -1;
  freeReplyObject(rep);
  return n;
}

/* Redis down: the op answers unavailable at once. Redis back, empty: the gateway rewrites its
 * gateway-set and presence entries (paced) and the op answers again. */
Test(channels_presence, redis_restart_rewrites_presence) {
  itest_redis_server_start(&srv, 0);
  itest_cluster c;
  itest_cluster_init(&c, 2, 4, false);
  static const char *const extra[] = {NS_FLAGS, NULL};
  itest_gateway_start(&gw, &c, "pres-redis",
                      &(itest_daemon_opts){.extra = extra, .redis_port = srv.port});
  enum { N = 50 };
  ws_client *cl[N];
  for (int i = 0; i < N; i++) {
    char user[16];
    snprintf(user, sizeof user, "u%02d", i);
    cl[i] = connect_on(&gw, user);
    subscribe(cl[i], "room:x");
    char ch[32];
    snprintf(ch, sizeof ch, "room:c%02d", i);
    subscribe(cl[i], ch);
  }
  char kp[256], kg[256];
  snprintf(kp, sizeof kp, "%sch:{c:room:x}:p", c.prefix);
  snprintf(kg, sizeof kg, "%sch:{c:room:c49}:gws", c.prefix);
  redisContext *r = itest_redis_connect_port(srv.port);
  cr_assert_not_null(r);
  for (int i = 0; i < 50 && redis_int(r, "HLEN %s", kp) != N; i++)
    usleep(100 * 1000);
  cr_assert_eq(redis_int(r, "HLEN %s", kp), N);
  redisFree(r);

  itest_redis_server_stop(&srv, SIGKILL);
  op_expect(cl[0], "{\"wsgate\":\"presence\",\"id\":1,\"channel\":\"room:x\"}",
            "{\"wsgate\":\"error\",\"id\":1,\"op\":\"presence\",\"code\":\"unavailable\","
            "\"message\":\"the gateway cannot record the subscription now; retry later\"}");

  itest_redis_server_start(&srv, srv.port); /* same port, empty */
  r = itest_redis_connect_port(srv.port);
  cr_assert_not_null(r);
  long hlen = -1, gws = -1;
  for (int i = 0; i < 150; i++) {
    hlen = redis_int(r, "HLEN %s", kp);
    gws = redis_int(r, "SCARD %s", kg);
    if (hlen == N && gws == 1)
      break;
    usleep(100 * 1000);
  }
  cr_expect_eq(hlen, N, "every presence entry written again");
  cr_expect_eq(gws, 1, "every channel's gateway set written again");
  redisFree(r);
  cr_expect_geq(
      itest_metric(gw.http_port, "wsgate_gateway_channel_resync_total{what=\"presence\"}"), N);
  char got[4096] = "";
  for (int i = 0; i < 50 && !strstr(got, "\"connections\":50,"); i++) {
    op_answer(cl[0], "{\"wsgate\":\"presence\",\"channel\":\"room:x\"}", got, sizeof got);
    usleep(100 * 1000);
  }
  cr_expect(strstr(got, "\"connections\":50,\"users\":[\"u00\",\"u01\","), "%s", got);
  for (int i = 0; i < N; i++)
    ws_client_destroy(cl[i]);
}
