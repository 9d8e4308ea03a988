/*
 * Integration tests of presence (issue 15, item 4) on real Kafka and Redis: the client's presence
 * op across two gateways and its refusals (JSON and MessagePack), entries of a gateway killed
 * with -9 leaving within its lease, `unavailable` while Redis is down, and the gateway rewriting
 * its gateway-set and presence entries after its Redis restarted empty (a private redis-server:
 * the shared one is never restarted); join/leave events through gateway, Kafka, processor and
 * the other gateway, and their coalescing under a subscribe storm. Needs WSGATE_TEST_KAFKA and
 * WSGATE_TEST_REDIS_PORT.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <msgpack.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gw_jwt.h"
#include "harness.h"
#include "harness_channels.h"
#include "harness_daemons.h"

static itest_gateway gw, gw2;
static itest_redis_server srv;
static itest_processor proc;

static void teardown(void) {
  itest_processor_cleanup(&proc);
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

/* The next frame that is not a presence_change (join/leave events may come in between). */
static void next_answer(ws_client *c, char *got, size_t cap) {
  static const char jl[] = "{\"wsgate\":\"presence_change\"";
  ws_message m;
  do
    itest_expect_msg(c, WS_OP_TEXT, &m, ITEST_TIMEOUT_MS);
  while (m.len >= sizeof jl - 1 && memcmp(m.data, jl, sizeof jl - 1) == 0);
  snprintf(got, cap, "%.*s", (int)m.len, m.data);
}

/* The answer to op. */
static void op_answer(ws_client *c, const char *op, char *got, size_t cap) {
  cr_assert_eq(ws_client_send_text(c, op, strlen(op)), WS_CLIENT_OK);
  next_answer(c, got, cap);
}

static void op_expect(ws_client *c, const char *op, const char *want) {
  char got[2048];
  op_answer(c, op, got, sizeof got);
  cr_expect_str_eq(got, want, "%s", op);
}

static void subscribe(ws_client *c, const char *channel) {
  char op[256], want[256];
  snprintf(op, sizeof op, "{\"wsgate\":\"subscribe\",\"channel\":\"%s\"}", channel);
  snprintf(want, sizeof want,
           "{\"wsgate\":\"subscribed\",\"channel\":\"%s\",\"epoch\":0,\"offset\":0}", channel);
  op_expect(c, op, want);
}

/* Asks c for the presence of `channel` until the answer is `want` (entries are written fire and
 * forget: another gateway's may land a moment later). */
static bool presence_of_is(ws_client *c, const char *channel, const char *want, int timeout_ms) {
  char got[2048] = "", op[256];
  snprintf(op, sizeof op, "{\"wsgate\":\"presence\",\"id\":7,\"channel\":\"%s\"}", channel);
  for (uint64_t end = itest_now_ms() + (uint64_t)timeout_ms; itest_now_ms() < end;) {
    op_answer(c, op, got, sizeof got);
    if (strcmp(got, want) == 0)
      return true;
    usleep(100 * 1000);
  }
  cr_log_error("presence: got %s, want %s", got, want);
  return false;
}

static bool presence_is(ws_client *c, const char *want, int timeout_ms) {
  return presence_of_is(c, "room:x", want, timeout_ms);
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

  /* Queries in flight are bounded: 4 per connection. Ten sent at once are all answered, the
   * ones past the bound with presence_busy (how many depends on when Redis answers). */
  const char *q = "{\"wsgate\":\"presence\",\"channel\":\"room:x\"}";
  for (int i = 0; i < 10; i++)
    cr_assert_eq(ws_client_send_text(z, q, strlen(q)), WS_CLIENT_OK);
  int busy = 0, answered = 0;
  for (int i = 0; i < 10; i++) {
    ws_message a;
    itest_expect_msg(z, WS_OP_TEXT, &a, ITEST_TIMEOUT_MS);
    if (a.len > 26 && memcmp(a.data, "{\"wsgate\":\"presence_change", 26) == 0) {
      i--;
      continue;
    }
    answered += a.len > 20 && memcmp(a.data, "{\"wsgate\":\"presence\"", 20) == 0;
    busy += strstr((const char *)a.data, "\"code\":\"presence_busy\"") != NULL;
  }
  cr_expect_eq(answered + busy, 10, "every query answered: %d answers, %d busy", answered, busy);
  cr_expect_geq(answered, 1);
  cr_log_info("10 queries at once: %d answered, %d presence_busy", answered, busy);

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

/* amy on gw and ben on gw2 (<name>1 and <name>2 in c, with their options), both subscribed to
 * room:x, and the op listing both. */
static void amy_and_ben(const itest_cluster *c, const char *name, const char *const *extra1,
                        const char *const *extra2, ws_client **a, ws_client **b) {
  char n[64];
  snprintf(n, sizeof n, "%s1", name);
  itest_gateway_start(&gw, c, n, &(itest_daemon_opts){.extra = extra1});
  snprintf(n, sizeof n, "%s2", name);
  itest_gateway_start(&gw2, c, n, &(itest_daemon_opts){.extra = extra2});
  *a = connect_on(&gw, "amy");
  *b = connect_on(&gw2, "ben");
  subscribe(*a, "room:x");
  subscribe(*b, "room:x");
  cr_assert(presence_is(*a,
                        "{\"wsgate\":\"presence\",\"id\":7,\"channel\":\"room:x\","
                        "\"connections\":2,\"users\":[\"amy\",\"ben\"]}",
                        10000));
}

/* A gateway killed with -9 leaves its entries behind; once its lease is gone the presence op
 * leaves them out and deletes them. */
Test(channels_presence, killed_gateway_vanishes_within_its_lease) {
  itest_cluster c;
  itest_cluster_init(&c, 2, 4, false);
  static const char *const extra[] = {NS_FLAGS, NULL};
  static const char *const short_lease[] = {NS_FLAGS,        "--lease-ttl", "2s",
                                            "--lease-renew", "500ms",       NULL};
  ws_client *a, *b;
  amy_and_ben(&c, "pres-kill", extra, short_lease, &a, &b);
  char kp2[256], m2[256], kp[256], m[256];
  itest_presence_member(&gw2, "room:x", m2, kp2, sizeof kp2);
  itest_presence_member(&gw, "room:x", m, kp, sizeof kp);
  uint64_t t0 = itest_now_ms();
  itest_gateway_stop(&gw2, SIGKILL, 5000);
  cr_expect(presence_is(a,
                        "{\"wsgate\":\"presence\",\"id\":7,\"channel\":\"room:x\","
                        "\"connections\":1,\"users\":[\"amy\"]}",
                        6000),
            "ben left within the 2 s lease (and a second of slack)");
  cr_log_info("ben vanished %llu ms after kill -9", (unsigned long long)(itest_now_ms() - t0));
  redisReply *rep = itest_redis_key_command(0, "EXISTS %s%s", kp2, "");
  cr_expect(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 0,
            "the dead gateway's entries were deleted");
  freeReplyObject(rep);
  rep = itest_redis_key_command(0, "HLEN %s%s", kp, "");
  cr_expect(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 1, "amy's stays");
  freeReplyObject(rep);
  char key[256];
  snprintf(key, sizeof key, "%sch:{c:room:x}:pc", c.prefix);
  rep = itest_redis_key_command(0, "HEXISTS %s %s", key, m2);
  cr_expect(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 0, "and its count");
  freeReplyObject(rep);
  cr_expect_geq(itest_metric(gw.http_port, "wsgate_gateway_channel_presence_dropped_total"), 1);
  ws_client_destroy(b);
  ws_client_destroy(a);
}

/* A gateway restarted under the same --gateway-id (a StatefulSet's pod name, an operator's
 * choice) renews the same gw:<id> lease, so the lease cannot tell its previous life's subscribers
 * from its own: the boot in the member and the record does. Ben, on the killed life, must be gone
 * as soon as the new life has written its record (well inside the 15 s default lease: a reader
 * counting on the lease would wait for it and, with the id alive again, forever); Dan, on the new
 * life, is listed. Bound: the restart's slot acquisition, then one presence read. The channel's
 * gateway set, which names ids, still names it: the new life leaves it when it is first sent the
 * channel it does not hold. */
Test(channels_presence, restarted_gateway_disowns_its_previous_life) {
  itest_cluster c;
  itest_cluster_init(&c, 2, 4, false);
  static const char *const extra[] = {
      "--channel-namespace", "room=presence=true,client_presence=true,client_publish=true", NULL};
  ws_client *a, *b;
  amy_and_ben(&c, "pres-life", extra, extra, &a, &b);
  char m_old[256], kp_old[256];
  itest_presence_member(&gw2, "room:x", m_old, kp_old, sizeof kp_old);
  itest_gateway_stop(&gw2, SIGKILL, 5000);
  ws_client_destroy(b);
  itest_gateway_restart(&gw2, &(itest_daemon_opts){.extra = extra});
  char m_new[256];
  for (int i = 0; i < 100; i++) { /* the record may still be the killed life's for a moment */
    itest_presence_member(&gw2, "room:x", m_new, NULL, sizeof m_new);
    if (strcmp(m_new, m_old) != 0)
      break;
    usleep(100 * 1000);
  }
  cr_assert_str_neq(m_new, m_old, "a new life, a new member");
  uint64_t t0 = itest_now_ms();
  cr_expect(presence_is(a,
                        "{\"wsgate\":\"presence\",\"id\":7,\"channel\":\"room:x\","
                        "\"connections\":1,\"users\":[\"amy\"]}",
                        3000),
            "ben, of the killed life, is gone once the new life holds the lease");
  cr_log_info("ben vanished %llu ms after the restart's record",
              (unsigned long long)(itest_now_ms() - t0));
  redisReply *rep = itest_redis_key_command(0, "EXISTS %s%s", kp_old, "");
  cr_expect(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 0,
            "the previous life's entries were deleted");
  freeReplyObject(rep);
  cr_expect_eq(itest_gws_members(&gw, "room:x", 2), 2, "the killed life's set member stays");
  itest_processor_start(&proc, &c, "pres-life", "echo", &(itest_daemon_opts){.extra = extra});
  const char *pub = "{\"wsgate\":\"publish\",\"channel\":\"room:x\",\"data\":\"hi\"}";
  cr_assert_eq(ws_client_send_text(a, pub, strlen(pub)), WS_CLIENT_OK);
  itest_expect_pub(a, "room:x", 1, "\"hi\"");
  cr_expect_eq(itest_gws_members(&gw, "room:x", 1), 1, "the new life left the set");
  ws_client *d = connect_on(&gw2, "dan");
  char got[512];
  op_answer(d, "{\"wsgate\":\"subscribe\",\"channel\":\"room:x\"}", got, sizeof got);
  cr_expect(strstr(got, "{\"wsgate\":\"subscribed\",\"channel\":\"room:x\",") == got, "%s", got);
  cr_expect(presence_is(a,
                        "{\"wsgate\":\"presence\",\"id\":7,\"channel\":\"room:x\","
                        "\"connections\":2,\"users\":[\"amy\",\"dan\"]}",
                        5000),
            "the new life's subscriber counts");
  cr_expect_eq(itest_gws_members(&gw, "room:x", 2), 2, "and is in the set again");
  ws_client_destroy(d);
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
  char kp[256], kg[256], m[256];
  itest_presence_member(&gw, "room:x", m, kp, sizeof kp);
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

/* The rewrite is paced: at --channel-resync-rate 100 (one connection a 10 ms tick here) the 50
 * entries come back over about half a second, not in one burst. */
Test(channels_presence, redis_restart_rewrite_is_paced) {
  itest_redis_server_start(&srv, 0);
  itest_cluster c;
  itest_cluster_init(&c, 2, 4, false);
  static const char *const extra[] = {NS_FLAGS, "--channel-resync-rate", "100", NULL};
  itest_gateway_start(&gw, &c, "pres-paced",
                      &(itest_daemon_opts){.extra = extra, .redis_port = srv.port});
  enum { N = 50 };
  ws_client *cl[N];
  for (int i = 0; i < N; i++) {
    char user[16];
    snprintf(user, sizeof user, "p%02d", i);
    cl[i] = connect_on(&gw, user);
    subscribe(cl[i], "room:x");
  }
  char kp[256], m[256];
  itest_presence_member(&gw, "room:x", m, kp, sizeof kp);
  itest_redis_server_stop(&srv, SIGKILL);
  itest_redis_server_start(&srv, srv.port); /* same port, empty */
  redisContext *r = itest_redis_connect_port(srv.port);
  cr_assert_not_null(r);
  uint64_t first = 0, full = 0;
  for (uint64_t end = itest_now_ms() + 20000; itest_now_ms() < end && !full;) {
    long n = redis_int(r, "HLEN %s", kp);
    if (n > 0 && !first)
      first = itest_now_ms();
    if (n == N)
      full = itest_now_ms();
    usleep(5 * 1000);
  }
  redisFree(r);
  cr_assert(full, "every entry written again");
  cr_log_info("paced rewrite: %d entries over %llu ms", N, (unsigned long long)(full - first));
  cr_expect_geq(full - first, 250, "one connection a tick: about 490 ms, not a burst");
  for (int i = 0; i < N; i++)
    ws_client_destroy(cl[i]);
}

/* --- join/leave ------------------------------------------------------------------------------ */

#define JL_FLAGS "--channel-namespace", "room=presence=true,join_leave=true"

typedef struct {
  int frames;
  long joined, left;    /* events counted, names or counts */
  long joined_named[4]; /* per watched user: joined entries */
  long left_named[4];
  const char *watch[4]; /* users whose entries are counted by name */
  const char *channel;  /* the channel the frames must name; NULL: room:x */
} jl_seen;

/* Reads presence_change frames from c for up to timeout_ms, or until `until` is true. */
static void jl_read(ws_client *c, jl_seen *seen, int timeout_ms, bool (*until)(const jl_seen *)) {
  for (uint64_t end = itest_now_ms() + (uint64_t)timeout_ms; itest_now_ms() < end;) {
    if (until && until(seen))
      return;
    ws_message m;
    if (ws_client_recv(c, &m, 100) != WS_CLIENT_OK)
      continue;
    json_t *j = json_loadb((const char *)m.data, m.len, 0, NULL);
    const char *t = json_string_value(json_object_get(j, "wsgate"));
    if (t && strcmp(t, "presence_change") == 0) {
      cr_expect_str_eq(json_string_value(json_object_get(j, "channel")),
                       seen->channel ? seen->channel : "room:x");
      seen->frames++;
      const char *keys[2] = {"joined", "left"};
      for (int side = 0; side < 2; side++) {
        json_t *list = json_object_get(j, keys[side]);
        char count_key[16];
        snprintf(count_key, sizeof count_key, "%s_count", keys[side]);
        long n = json_is_array(list) ? (long)json_array_size(list)
                                     : (long)json_integer_value(json_object_get(j, count_key));
        *(side ? &seen->left : &seen->joined) += n;
        for (size_t i = 0; json_is_array(list) && i < json_array_size(list); i++)
          for (int w = 0; w < 4 && seen->watch[w]; w++)
            if (strcmp(json_string_value(json_array_get(list, i)), seen->watch[w]) == 0)
              (side ? seen->left_named : seen->joined_named)[w]++;
      }
    }
    json_decref(j);
  }
}

static bool bob_joined(const jl_seen *s) {
  return s->joined_named[1] >= 1;
}
static bool bob_left(const jl_seen *s) {
  return s->left_named[1] >= 1;
}
static bool cy_left(const jl_seen *s) {
  return s->left_named[2] >= 1;
}

/* amy on one gateway sees bob (the other gateway) join and leave, and cy leave by closing: one
 * entry per connection, through Kafka and a processor. A namespace without join_leave is quiet. */
Test(channels_presence, join_leave_across_gateways) {
  itest_cluster c;
  itest_cluster_init(&c, 2, 4, false);
  static const char *const extra[] = {JL_FLAGS, NULL};
  itest_gateway_start(&gw, &c, "jl-1", &(itest_daemon_opts){.extra = extra});
  itest_gateway_start(&gw2, &c, "jl-2", &(itest_daemon_opts){.extra = extra});
  itest_processor_start(&proc, &c, "jl", "echo", &(itest_daemon_opts){.extra = extra});
  ws_client *a = connect_on(&gw, "amy"), *b = connect_on(&gw2, "bob"), *y = connect_on(&gw2, "cy");
  subscribe(a, "room:x");
  jl_seen seen = {.watch = {"amy", "bob", "cy", NULL}};
  subscribe(b, "room:x");
  subscribe(y, "room:x");
  subscribe(y, "quiet:x");
  jl_read(a, &seen, 10000, bob_joined);
  cr_expect_eq(seen.joined_named[1], 1, "bob joined once");
  op_expect(b, "{\"wsgate\":\"unsubscribe\",\"channel\":\"room:x\"}",
            "{\"wsgate\":\"unsubscribed\",\"channel\":\"room:x\"}");
  jl_read(a, &seen, 10000, bob_left);
  cr_expect_eq(seen.left_named[1], 1, "bob left once");
  ws_client_destroy(y); /* a closed connection leaves all its channels */
  jl_read(a, &seen, 10000, cy_left);
  cr_expect_eq(seen.left_named[2], 1, "cy left by closing");
  cr_expect_eq(seen.joined_named[2], 1);
  jl_read(a, &seen, 500, NULL);
  cr_expect_eq(seen.joined, 3, "amy, bob, cy: nothing from quiet:x or twice");
  cr_expect_eq(seen.left, 2);
  cr_expect_geq(itest_metric(gw2.http_port, "wsgate_gateway_channel_joinleave_batches_total{"
                                            "result=\"produced\"}"),
                2);
  ws_client_destroy(a);
  ws_client_destroy(b);
}

/* g's count of `channel`'s subscriptions in its :pc hash (-1: no field, none). */
static long pc_count(const itest_cluster *c, const itest_gateway *g, const char *channel) {
  char key[256], m[256];
  snprintf(key, sizeof key, "%sch:{c:%s}:pc", c->prefix, channel);
  itest_presence_member(g, channel, m, NULL, sizeof m);
  redisReply *rep = itest_redis_key_command(0, "HGET %s %s", key, m);
  long n = rep && rep->type == REDIS_REPLY_STRING ? atol(rep->str) : -1;
  freeReplyObject(rep);
  return n;
}

#define SERVER_SUBSCRIBED(ch)                                                                      \
  "{\"wsgate\":\"subscribed\",\"channel\":\"" ch "\",\"epoch\":0,\"offset\":0,\"server\":true}"
#define HS_FLAGS                                                                                   \
  "--channel-namespace", "room=presence=true,client_presence=true,join_leave=true",                \
      "--channel-namespace",                                                                       \
      "hroom=presence=true,client_presence=true,join_leave=true,subscribe=handler"

static bool bob_joined_hroom(const jl_seen *s) {
  return s->joined_named[1] >= 1;
}

/* Subscriptions the handler makes (wsgate_subscribe, through the `publish` handler's "+room:x\n
 * bob") and the ones it decides (subscribe=handler) take the client's path: presence entry, the
 * gateway's :pc count, join and leave events, and the presence op of the connection itself. */
Test(channels_presence, handler_subscriptions_are_present) {
  itest_cluster c;
  itest_cluster_init(&c, 2, 4, false);
  static const char *const extra[] = {HS_FLAGS, NULL};
  itest_gateway_start(&gw, &c, "hs-1", &(itest_daemon_opts){.extra = extra});
  itest_gateway_start(&gw2, &c, "hs-2", &(itest_daemon_opts){.extra = extra});
  itest_processor_start(&proc, &c, "hs", "publish", &(itest_daemon_opts){.extra = extra});
  ws_client *a = connect_on(&gw, "amy"), *b = connect_on(&gw2, "bob");
  subscribe(a, "room:x");
  /* The processor's answer to bob means Redis registered him: a lookup of bob finds him. */
  const char *q = "?room:none";
  cr_assert_eq(ws_client_send_text(b, q, strlen(q)), WS_CLIENT_OK);
  itest_expect_text(b, "{\"channel\":\"room:none\",\"connections\":0,\"users\":[]}",
                    ITEST_TIMEOUT_MS);

  jl_seen seen = {.watch = {"amy", "bob", NULL}};
  const char *sub = "+room:x\nbob";
  cr_assert_eq(ws_client_send_text(a, sub, strlen(sub)), WS_CLIENT_OK);
  itest_expect_text(b, SERVER_SUBSCRIBED("room:x"), ITEST_TIMEOUT_MS);
  jl_read(a, &seen, 10000, bob_joined);
  cr_expect_eq(seen.joined_named[1], 1, "the handler's subscription made a join event");
  const char *both = "{\"wsgate\":\"presence\",\"id\":7,\"channel\":\"room:x\","
                     "\"connections\":2,\"users\":[\"amy\",\"bob\"]}";
  cr_expect(presence_is(a, both, 10000), "bob is present on amy's presence op");
  cr_expect(presence_is(b, both, 10000), "bob may ask: he is subscribed");
  cr_expect_eq(pc_count(&c, &gw2, "room:x"), 1, "gw2 counts bob's subscription");

  const char *unsub = "-room:x\nbob";
  cr_assert_eq(ws_client_send_text(a, unsub, strlen(unsub)), WS_CLIENT_OK);
  char got[256];
  next_answer(b, got, sizeof got); /* after bob's own join event */
  cr_expect_str_eq(got, "{\"wsgate\":\"unsubscribed\",\"channel\":\"room:x\",\"server\":true}");
  jl_read(a, &seen, 10000, bob_left);
  cr_expect_eq(seen.left_named[1], 1, "the handler's unsubscribe made a leave event");
  cr_expect(presence_is(a,
                        "{\"wsgate\":\"presence\",\"id\":7,\"channel\":\"room:x\","
                        "\"connections\":1,\"users\":[\"amy\"]}",
                        10000));
  cr_expect_eq(pc_count(&c, &gw2, "room:x"), -1, "and uncounts it");

  /* subscribe=handler: the handler allows bob's own subscribe; amy, there first, sees him join. */
  subscribe(a, "hroom:y");
  jl_seen hs = {.watch = {"amy", "bob", NULL}, .channel = "hroom:y"};
  jl_read(a, &hs, 300, NULL); /* amy's own join */
  op_expect(b, "{\"wsgate\":\"subscribe\",\"channel\":\"hroom:y\"}",
            "{\"wsgate\":\"subscribed\",\"channel\":\"hroom:y\",\"epoch\":0,\"offset\":0}");
  jl_read(a, &hs, 10000, bob_joined_hroom);
  cr_expect_eq(hs.joined_named[1], 1, "the handler's decision made a join event");
  cr_expect(presence_of_is(b, "hroom:y",
                           "{\"wsgate\":\"presence\",\"id\":7,\"channel\":\"hroom:y\","
                           "\"connections\":2,\"users\":[\"amy\",\"bob\"]}",
                           10000));
  cr_expect_eq(pc_count(&c, &gw2, "hroom:y"), 1);
  ws_client_destroy(a);
  ws_client_destroy(b);
}

static long storm_total;
static bool storm_seen(const jl_seen *s) {
  return s->joined >= storm_total;
}

/* 300 subscribes within about a second on one gateway: its subscribers (above the threshold)
 * get few frames, every join counted; a lone subscriber on the other gateway gets at most one
 * frame per origin batch (50 ms), every join counted too. */
Test(channels_presence, subscribe_storm_is_coalesced) {
  itest_cluster c;
  itest_cluster_init(&c, 2, 4, false);
  static const char *const extra[] = {JL_FLAGS, NULL};
  itest_gateway_start(&gw, &c, "jls-1", &(itest_daemon_opts){.extra = extra});
  itest_gateway_start(&gw2, &c, "jls-2", &(itest_daemon_opts){.extra = extra});
  itest_processor_start(&proc, &c, "jls", "echo", &(itest_daemon_opts){.extra = extra});
  enum { N = 300 };
  static ws_client *cl[N];
  for (int i = 0; i < N; i++) {
    char user[16];
    snprintf(user, sizeof user, "s%03d", i);
    cl[i] = connect_on(&gw, user);
  }
  ws_client *near = connect_on(&gw, "near"), *far = connect_on(&gw2, "far");
  subscribe(far, "room:x");
  subscribe(near, "room:x");
  jl_seen sn = {0}, sf = {0};
  storm_total = 2; /* far's and near's own joins */
  jl_read(far, &sf, 10000, storm_seen);
  jl_read(near, &sn, 10000, storm_seen);
  cr_assert_eq(sf.joined, 2);
  sn = (jl_seen){0};
  sf = (jl_seen){0};
  uint64_t t0 = itest_now_ms();
  const char *op = "{\"wsgate\":\"subscribe\",\"channel\":\"room:x\"}";
  for (int i = 0; i < N; i++) {
    cr_assert_eq(ws_client_send_text(cl[i], op, strlen(op)), WS_CLIENT_OK);
    usleep(3000); /* spread over about a second */
  }
  uint64_t sent_ms = itest_now_ms() - t0;
  storm_total = N;
  jl_read(far, &sf, 15000, storm_seen);
  jl_read(near, &sn, 15000, storm_seen);
  cr_log_info("storm: %d subscribes sent in %llu ms; far (1 local subscriber) got %d frames, "
              "near (%d local subscribers) %d frames",
              N, (unsigned long long)sent_ms, sf.frames, N + 1, sn.frames);
  cr_expect_eq(sf.joined, N, "every join counted on the other gateway");
  cr_expect_eq(sn.joined, N, "every join counted on the storm's gateway");
  /* While the channel has fewer than 50 (the threshold) local subscribers each 50 ms batch is
   * written at once: about 150 ms of the storm, 3 or 4 frames; then one a second at most. */
  cr_expect_leq(sn.frames, 4 + (int)(itest_now_ms() - t0) / 1000,
                "at most one frame a second above the threshold");
  cr_expect_leq(sf.frames, 2 + (int)(itest_now_ms() - t0) / 50, "at most one per origin batch");
  double batches = itest_metric(gw.http_port, "wsgate_gateway_channel_joinleave_batches_total{"
                                              "result=\"produced\"}");
  cr_log_info("storm: %.0f joinleave records produced by the storm's gateway", batches);
  cr_expect_lt(batches, N / 5, "batched before Kafka");
  for (int i = 0; i < N; i++)
    ws_client_destroy(cl[i]);
  ws_client_destroy(near);
  ws_client_destroy(far);
}

/* n dead lives in room:x's :pc (members of gateways whose gw:<id> record does not exist), each
 * with a one-entry hash, as crashes and restarts leave them; a pipeline, one round trip. */
static void seed_dead_lives(const itest_cluster *c, int n) {
  redisContext *r = itest_redis_connect();
  for (int i = 0; i < n; i++) {
    char m[64];
    snprintf(m, sizeof m, "gone-%d#%016x", i, 0xd0000000u + (unsigned)i);
    redisAppendCommand(r, "HSET %sch:{c:room:x}:pc %s 1", c->prefix, m);
    redisAppendCommand(r, "HSET %sch:{c:room:x}:p:%s %d ghost%d|%s", c->prefix, m, 9000 + i, i, m);
  }
  for (int i = 0; i < 2 * n; i++) {
    redisReply *rep = NULL;
    cr_assert_eq(redisGetReply(r, (void **)&rep), REDIS_OK);
    freeReplyObject(rep);
  }
  redisFree(r);
}

static long pc_len(const itest_cluster *c) {
  char key[256];
  snprintf(key, sizeof key, "%sch:{c:room:x}:pc", c->prefix);
  redisReply *rep = itest_redis_key_command(0, "HLEN %s%s", key, "");
  long n = rep && rep->type == REDIS_REPLY_INTEGER ? (long)rep->integer : -1;
  freeReplyObject(rep);
  return n;
}

/* More gateway lives than a read takes (WSG_PRESENCE_GWS_MAX, 256): 300 dead ones beside amy's
 * live one. Every read answers (it once refused the whole reply, and nothing else deletes dead
 * lives: presence of the channel was gone for good); the first may be truncated, but it deletes
 * the dead lives it read, so by the second amy is listed exactly and :pc holds her life alone.
 * Both readers: the client's op (gateway) and wsgate_presence() (processor, "?room:x"). */
Test(channels_presence, many_dead_lives_never_block_a_read) {
  itest_cluster c;
  itest_cluster_init(&c, 2, 4, false);
  static const char *const extra[] = {NS_FLAGS, NULL};
  itest_gateway_start(&gw, &c, "pres-many", &(itest_daemon_opts){.extra = extra});
  itest_processor_start(&proc, &c, "pres-many", "publish", &(itest_daemon_opts){.extra = extra});
  ws_client *a = connect_on(&gw, "amy");
  subscribe(a, "room:x");
  cr_assert(presence_is(a,
                        "{\"wsgate\":\"presence\",\"id\":7,\"channel\":\"room:x\","
                        "\"connections\":1,\"users\":[\"amy\"]}",
                        10000));
  const char *op = "{\"wsgate\":\"presence\",\"id\":7,\"channel\":\"room:x\"}";
  const char *exact = "{\"wsgate\":\"presence\",\"id\":7,\"channel\":\"room:x\","
                      "\"connections\":1,\"users\":[\"amy\"]}";
  seed_dead_lives(&c, 300);
  cr_assert_eq(pc_len(&c), 301);
  char got[2048];
  op_answer(a, op, got, sizeof got);
  cr_expect(strstr(got, "{\"wsgate\":\"presence\",\"id\":7,\"channel\":\"room:x\",") == got &&
                !strstr(got, "ghost"),
            "the first read answers, without the dead: %s", got);
  cr_expect(strcmp(got, exact) == 0 || strstr(got, "\"truncated\":true"),
            "exact, or says it is not: %s", got);
  op_answer(a, op, got, sizeof got);
  cr_expect_str_eq(got, exact, "the second read is exact");
  /* The gateway sends its DROP before the answer, on its own connection: it may land a moment
   * after the answer reaches us. */
  long left = pc_len(&c);
  for (uint64_t end = itest_now_ms() + 2000; left != 1 && itest_now_ms() < end; left = pc_len(&c))
    usleep(20 * 1000);
  cr_expect_eq(left, 1, "only amy's life is left, not %ld", left);

  /* The processor's reader: wsgate_presence() through the publish handler's "?<channel>". */
  seed_dead_lives(&c, 300);
  cr_assert_eq(pc_len(&c), 301);
  const char *q = "?room:x";
  ws_message m;
  cr_assert_eq(ws_client_send_text(a, q, strlen(q)), WS_CLIENT_OK);
  itest_expect_msg(a, WS_OP_TEXT, &m, ITEST_TIMEOUT_MS);
  cr_expect(m.len > 11 && memcmp(m.data, "{\"channel\":", 11) == 0 &&
                !memmem(m.data, m.len, "ghost", 5),
            "the handler's first read answers, without the dead: %.*s", (int)m.len, m.data);
  cr_assert_eq(ws_client_send_text(a, q, strlen(q)), WS_CLIENT_OK);
  itest_expect_text(a, "{\"channel\":\"room:x\",\"connections\":1,\"users\":[\"amy\"]}",
                    ITEST_TIMEOUT_MS);
  cr_expect_eq(pc_len(&c), 1, "only amy's life is left (the processor drops before answering)");
  ws_client_destroy(a);
}
