/*
 * proc_redis against a real redis-server: user -> connections -> gateway -> slot, the gateway
 * cache, lazy clean-up of dead gateways' entries, garbage in user hashes, pipelines larger than
 * one chunk, a Redis that goes away and comes back, and handlers' commands.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proc_testutil.h"
#include "wsg_time.h"

typedef struct {
  ptest_redis redis;
  proc_redis *r;
  proc_routes rt;
} fixture;

static void setup(fixture *f, int32_t slots, uint64_t cache_ttl_ms) {
  ptest_redis_start(&f->redis);
  proc_redis_options o = {.host = "127.0.0.1",
                          .port = f->redis.port,
                          .prefix = f->redis.prefix,
                          .timeout_ms = 1000,
                          .gateway_cache_ttl_ms = cache_ttl_ms,
                          .slots = slots};
  char err[256];
  cr_assert_eq(proc_redis_create(&f->r, &o, err, sizeof(err)), 0, "%s", err);
  proc_routes_init(&f->rt);
}

static void teardown(fixture *f) {
  proc_routes_finish(&f->rt);
  proc_redis_destroy(f->r);
  ptest_redis_stop(&f->redis);
}

static int resolve(fixture *f, const char *const *names, size_t n) {
  proc_strref users[8];
  cr_assert_leq(n, 8);
  for (size_t i = 0; i < n; i++)
    users[i] = (proc_strref){.ptr = names[i], .len = strlen(names[i])};
  char err[256];
  int rc = proc_redis_resolve(f->r, users, n, wsg_now_mono_ms(), &f->rt, err, sizeof(err));
  return rc;
}

/* The slot of user i's k-th target. */
static int32_t target_slot(const fixture *f, size_t user, size_t k) {
  cr_assert_lt(k, f->rt.count[user]);
  return f->rt.gws[f->rt.targets[f->rt.first[user] + k].gw].slot;
}

Test(proc_redis, create_destroy, .fini = ptest_fini) {
  proc_redis_destroy(NULL);
  proc_redis *r = NULL;
  char err[256];
  proc_redis_options bad = {.host = "127.0.0.1", .port = 0, .prefix = "x:"};
  cr_assert_eq(proc_redis_create(&r, &bad, err, sizeof(err)), -1);
  char longprefix[300];
  memset(longprefix, 'p', sizeof(longprefix) - 1);
  longprefix[sizeof(longprefix) - 1] = '\0';
  proc_redis_options lp = {.host = "127.0.0.1", .port = 1, .prefix = longprefix};
  cr_assert_eq(proc_redis_create(&r, &lp, err, sizeof(err)), -1);
  cr_assert(strstr(err, "--redis-prefix"), "%s", err);
}

Test(proc_redis, live_dead_and_stale_entries, .fini = ptest_fini) {
  fixture f;
  setup(&f, 16, 1000);
  itest_fake_gateway(f.redis.rc, f.redis.prefix, "gw-a", 3, 60000);
  itest_fake_gateway(f.redis.rc, f.redis.prefix, "gw-b", 7, 60000);
  itest_fake_conn(f.redis.rc, f.redis.prefix, "alice", 1, "gw-a");
  itest_fake_conn(f.redis.rc, f.redis.prefix, "alice", 2, "gw-b");
  itest_fake_conn(f.redis.rc, f.redis.prefix, "alice", 3, "gw-gone");
  itest_fake_conn(f.redis.rc, f.redis.prefix, "carol", 9, "gw-gone");
  const char *users[] = {"alice", "bob", "carol"};
  cr_assert_eq(resolve(&f, users, 3), 0);
  cr_assert_eq(f.rt.count[0], 2, "alice: the two connections on live gateways");
  cr_assert_eq(f.rt.targets[f.rt.first[0]].conn, 1);
  cr_assert_eq(target_slot(&f, 0, 0), 3);
  cr_assert_eq(f.rt.targets[f.rt.first[0] + 1].conn, 2);
  cr_assert_eq(target_slot(&f, 0, 1), 7);
  cr_assert_eq(f.rt.count[1], 0, "bob has no connection");
  cr_assert_eq(f.rt.count[2], 0, "carol's only connection is on a dead gateway");
  cr_assert_eq(f.rt.stale, 2);
  cr_assert_eq(f.rt.removed, 2, "stale entries are removed lazily");
  cr_assert_eq(ptest_redis_int(&f.redis, "HLEN %suser:alice", f.redis.prefix), 2);
  cr_assert_eq(ptest_redis_int(&f.redis, "EXISTS %suser:carol", f.redis.prefix), 0);
  teardown(&f);
}

Test(proc_redis, gateway_cache_and_expiry, .fini = ptest_fini) {
  fixture f;
  setup(&f, 16, 60000);
  itest_fake_gateway(f.redis.rc, f.redis.prefix, "gw-a", 3, 60000);
  itest_fake_conn(f.redis.rc, f.redis.prefix, "alice", 1, "gw-a");
  const char *users[] = {"alice"};
  cr_assert_eq(resolve(&f, users, 1), 0);
  cr_assert_eq(f.rt.count[0], 1);
  /* The lease ends; within the cache TTL the gateway is still believed alive (one round trip
   * saved per batch), after it the entry is found stale. */
  ptest_redis_int(&f.redis, "DEL %sgw:gw-a", f.redis.prefix);
  cr_assert_eq(resolve(&f, users, 1), 0);
  cr_assert_eq(f.rt.count[0], 1, "cached");
  proc_redis_cache_clear(f.r);
  cr_assert_eq(resolve(&f, users, 1), 0);
  cr_assert_eq(f.rt.count[0], 0);
  cr_assert_eq(f.rt.removed, 1);
  teardown(&f);
}

Test(proc_redis, no_cache_reads_every_time, .fini = ptest_fini) {
  fixture f;
  setup(&f, 16, 0);
  itest_fake_gateway(f.redis.rc, f.redis.prefix, "gw-a", 3, 60000);
  itest_fake_conn(f.redis.rc, f.redis.prefix, "alice", 1, "gw-a");
  const char *users[] = {"alice"};
  cr_assert_eq(resolve(&f, users, 1), 0);
  cr_assert_eq(f.rt.count[0], 1);
  ptest_redis_int(&f.redis, "DEL %sgw:gw-a", f.redis.prefix);
  cr_assert_eq(resolve(&f, users, 1), 0);
  cr_assert_eq(f.rt.count[0], 0);
  teardown(&f);
}

Test(proc_redis, garbage_is_skipped_not_fatal, .fini = ptest_fini) {
  fixture f;
  setup(&f, 4, 1000);
  itest_fake_gateway(f.redis.rc, f.redis.prefix, "gw-a", 3, 60000);
  itest_fake_gateway(f.redis.rc, f.redis.prefix, "gw-big", 9,
                     60000); /* slot outside the 4 outbound partitions */
  itest_fake_conn(f.redis.rc, f.redis.prefix, "alice", 1, "gw-a");
  ptest_redis_int(&f.redis, "HSET %suser:alice notanumber gw-a", f.redis.prefix);
  ptest_redis_int(&f.redis, "HSET %suser:alice 0042 gw-a", f.redis.prefix);
  ptest_redis_int(&f.redis, "HSET %suser:alice 99999999999999999999999 gw-a", f.redis.prefix);
  ptest_redis_int(&f.redis, "HSET %suser:alice 5 %b", f.redis.prefix, "\xff\xfe", (size_t)2);
  itest_fake_conn(f.redis.rc, f.redis.prefix, "alice", 6, "gw-big");
  redisReply *rep = redisCommand(f.redis.rc, "SET %suser:mallory astring", f.redis.prefix);
  freeReplyObject(rep);
  const char *users[] = {"alice", "mallory"};
  cr_assert_eq(resolve(&f, users, 2), 0);
  cr_assert_eq(f.rt.count[0], 1, "only the well-formed, routable entry");
  cr_assert_eq(f.rt.targets[f.rt.first[0]].conn, 1);
  cr_assert_eq(f.rt.count[1], 0);
  cr_assert_eq(f.rt.bad, 5, "four bad fields and one key of the wrong type");
  cr_assert_eq(f.rt.bad_slot, 1);
  teardown(&f);
}

Test(proc_redis, many_users_span_several_pipelines, .fini = ptest_fini) {
  fixture f;
  setup(&f, 16, 1000);
  itest_fake_gateway(f.redis.rc, f.redis.prefix, "gw-a", 1, 60000);
  itest_fake_gateway(f.redis.rc, f.redis.prefix, "gw-b", 2, 60000);
  enum { N = 2500 };
  static char names[N][16];
  static proc_strref users[N];
  for (int i = 0; i < N; i++) {
    snprintf(names[i], sizeof(names[i]), "user%04d", i);
    users[i] = (proc_strref){.ptr = names[i], .len = strlen(names[i])};
    if (i % 5 != 0)
      itest_fake_conn(f.redis.rc, f.redis.prefix, names[i], (uint64_t)i, i % 2 ? "gw-a" : "gw-b");
  }
  char err[256];
  cr_assert_eq(proc_redis_resolve(f.r, users, N, wsg_now_mono_ms(), &f.rt, err, sizeof(err)), 0,
               "%s", err);
  size_t total = 0;
  for (int i = 0; i < N; i++) {
    if (i % 5 == 0) {
      cr_assert_eq(f.rt.count[i], 0);
      continue;
    }
    cr_assert_eq(f.rt.count[i], 1, "user %d", i);
    cr_assert_eq(f.rt.targets[f.rt.first[i]].conn, (uint64_t)i);
    cr_assert_eq(target_slot(&f, (size_t)i, 0), i % 2 ? 1 : 2);
    total++;
  }
  cr_assert_eq(f.rt.ntargets, total);
  teardown(&f);
}

Test(proc_redis, redis_goes_away_and_comes_back, .fini = ptest_fini) {
  fixture f;
  cr_assert_eq(setenv("WSGATE_TEST_REDIS_PORT", "", 1), 0); /* this test needs its own server */
  setup(&f, 16, 0);
  itest_fake_gateway(f.redis.rc, f.redis.prefix, "gw-a", 3, 60000);
  itest_fake_conn(f.redis.rc, f.redis.prefix, "alice", 1, "gw-a");
  const char *users[] = {"alice"};
  cr_assert_eq(resolve(&f, users, 1), 0);
  char why[256];
  cr_assert_eq(proc_redis_status(f.r, why, sizeof(why)), 0);

  redisFree(f.redis.rc);
  f.redis.rc = NULL;
  int port = f.redis.srv.port;
  itest_redis_server_stop(&f.redis.srv, SIGKILL);
  cr_assert_eq(resolve(&f, users, 1), -1);
  cr_assert_eq(proc_redis_status(f.r, why, sizeof(why)), -1);
  cr_assert(strstr(why, "redis:"), "%s", why);

  /* Back, empty (nothing persisted): the router reconnects after its backoff. */
  itest_redis_server_start(&f.redis.srv, port);
  ptest_redis_tracked(&f.redis);
  f.redis.rc = itest_redis_connect_port(port);
  itest_fake_gateway(f.redis.rc, f.redis.prefix, "gw-a", 3, 60000);
  itest_fake_conn(f.redis.rc, f.redis.prefix, "alice", 1, "gw-a");
  uint64_t deadline = wsg_now_mono_ms() + 10000;
  int rc;
  while ((rc = resolve(&f, users, 1)) != 0 && wsg_now_mono_ms() < deadline) {
    struct timespec ts = {.tv_nsec = 20 * 1000000L};
    nanosleep(&ts, NULL);
  }
  cr_assert_eq(rc, 0, "the router reconnects");
  cr_assert_eq(f.rt.count[0], 1);
  cr_assert_eq(proc_redis_status(f.r, why, sizeof(why)), 0);
  teardown(&f);
}

Test(proc_redis, handler_commands_convert_every_reply_type, .fini = ptest_fini) {
  fixture f;
  setup(&f, 16, 1000);
  char key[128], list[128];
  snprintf(key, sizeof(key), "%sk", f.redis.prefix);
  snprintf(list, sizeof(list), "%sl", f.redis.prefix);
  const char *a0[] = {"SET", key, "v\0x"};
  size_t l0[] = {3, strlen(key), 3};
  const char *a1[] = {"GET", key};
  const char *a2[] = {"INCR", key}; /* an error: not an integer */
  const char *a3[] = {"RPUSH", list, "a", "bb"};
  const char *a4[] = {"LRANGE", list, "0", "-1"};
  const char *a5[] = {"GET", list}; /* WRONGTYPE */
  const char *a6[] = {"GET", "no-such-key-anywhere"};
  wsgate_redis_cmd cmds[] = {{3, a0, l0},   {2, a1, NULL}, {2, a2, NULL}, {4, a3, NULL},
                             {4, a4, NULL}, {2, a5, NULL}, {2, a6, NULL}};
  const wsgate_redis_reply *r[7];
  void *block = NULL;
  char err[256];
  cr_assert_eq(proc_redis_command(f.r, cmds, 7, r, &block, err, sizeof(err)), WSGATE_OK, "%s", err);
  cr_assert_eq(r[0]->type, WSGATE_REDIS_STATUS);
  cr_assert_str_eq(r[0]->str, "OK");
  cr_assert_eq(r[1]->type, WSGATE_REDIS_STRING);
  cr_assert_eq(r[1]->len, 3);
  cr_assert_eq(memcmp(r[1]->str, "v\0x", 3), 0, "binary-safe");
  cr_assert_eq(r[2]->type, WSGATE_REDIS_ERROR);
  cr_assert_eq(r[3]->type, WSGATE_REDIS_INTEGER);
  cr_assert_eq(r[3]->integer, 2);
  cr_assert_eq(r[4]->type, WSGATE_REDIS_ARRAY);
  cr_assert_eq(r[4]->count, 2);
  cr_assert_str_eq(r[4]->items[1].str, "bb");
  cr_assert_eq(r[5]->type, WSGATE_REDIS_ERROR);
  cr_assert(strstr(r[5]->str, "WRONGTYPE"));
  cr_assert_eq(r[6]->type, WSGATE_REDIS_NIL);
  free(block);

  cr_assert_eq(proc_redis_command(f.r, cmds, 0, r, &block, err, sizeof(err)), WSGATE_E_INVAL);
  wsgate_redis_cmd empty = {0, NULL, NULL};
  cr_assert_eq(proc_redis_command(f.r, &empty, 1, r, &block, err, sizeof(err)), WSGATE_E_INVAL);
  teardown(&f);
}
