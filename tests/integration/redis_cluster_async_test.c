/*
 * wsg_redis_cluster (the gateway's asynchronous face) and gw_registry against a real Redis
 * Cluster (scripts/redis start --cluster; WSGATE_TEST_REDIS_CLUSTER=host:port, else skipped):
 * discovery, per-key routing over every primary, MOVED, and the registry's lease, entries and
 * replay read on the cluster.
 */
#include <criterion/criterion.h>
#include <ev.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gw_registry.h"
#include "harness.h"
#include "wsg_redis_cluster.h"
#include "wsg_redis_keys.h"
#include "wsg_redis_slots.h"

static const char *seeds(void) {
  const char *s = getenv("WSGATE_TEST_REDIS_CLUSTER");
  if (s == NULL || *s == '\0')
    cr_skip_test("WSGATE_TEST_REDIS_CLUSTER is not set (scripts/redis start --cluster)");
  return s;
}

static struct ev_loop *loop;
static int readies;

static void on_ready(void *arg) {
  (void)arg;
  readies++;
}

static bool is_ready(void *arg) {
  return wsg_redis_cluster_ready(arg);
}

static wsg_redis_cluster *open_cluster(void) {
  loop = ev_loop_new(EVFLAG_AUTO);
  wsg_redis_cluster *c;
  char err[256];
  wsg_redis_cluster_options o = {.seeds = seeds()};
  o.conn = (wsg_redis_conn_options){
      .host = "unused", .port = 1, .timeout_ms = 2000, .on_ready = on_ready};
  cr_assert_eq(wsg_redis_cluster_create(&c, loop, &o, err, sizeof(err)), WSG_REDIS_CONN_OK, "%s",
               err);
  cr_assert(itest_loop_until(loop, is_ready, c, 5000), "the cluster never became ready");
  return c;
}

typedef struct {
  wsg_redis_conn_req req;
  int got;
  char val[32];
  int type;
} answer;

static void on_answer(void *arg, wsg_redis_conn_req *req, const redisReply *rep) {
  answer *a = (answer *)req;
  a->got++;
  a->type = rep != NULL ? rep->type : -1;
  if (rep != NULL && (rep->type == REDIS_REPLY_STRING || rep->type == REDIS_REPLY_STATUS ||
                      rep->type == REDIS_REPLY_ERROR))
    snprintf(a->val, sizeof(a->val), "%s", rep->str);
  (void)arg;
}

enum { N = 200 };
static answer sets[N], gets[N];

static bool all_answered(void *arg) {
  (void)arg;
  for (int i = 0; i < N; i++)
    if (gets[i].got == 0)
      return false;
  return true;
}

Test(redis_cluster_async, routes_every_key_to_its_primary) {
  wsg_redis_cluster *c = open_cluster();
  cr_assert_eq(readies, 1);
  wsg_redis_cluster_stats st;
  wsg_redis_cluster_get_stats(c, &st);
  cr_assert_eq(st.nodes, 3, "three primaries");
  char tag[32];
  snprintf(tag, sizeof(tag), "rca%d", getpid());
  for (int i = 0; i < N; i++) {
    char key[64], val[16];
    snprintf(key, sizeof(key), "%s:k%d", tag, i);
    snprintf(val, sizeof(val), "v%d", i);
    sets[i] = (answer){.req = {on_answer}};
    gets[i] = (answer){.req = {on_answer}};
    const char *set[] = {"SET", key, val};
    const char *get[] = {"GET", key};
    cr_assert_eq(wsg_redis_cluster_command(c, &sets[i].req, 3, set, NULL), WSG_REDIS_CONN_OK);
    cr_assert_eq(wsg_redis_cluster_command(c, &gets[i].req, 2, get, NULL), WSG_REDIS_CONN_OK);
  }
  cr_assert(itest_loop_until(loop, all_answered, NULL, 5000));
  for (int i = 0; i < N; i++) {
    char val[16];
    snprintf(val, sizeof(val), "v%d", i);
    cr_assert_str_eq(gets[i].val, val, "%d: %s", i, gets[i].val);
  }
  wsg_redis_cluster_get_stats(c, &st);
  cr_assert_eq(st.moved, 0);
  wsg_redis_cluster_destroy(c);
  ev_loop_destroy(loop);
}

/* The registry on a cluster: slot lease, record, a user entry and a replay read, each key on its
 * own primary. */
static int32_t got_slot = -1;
static int add_status = 99, replay_status = 99;

static void on_slot(void *arg, int32_t slot) {
  (void)arg;
  got_slot = slot;
}
static void on_added(void *arg, uint64_t id, int status) {
  (void)arg;
  (void)id;
  add_status = status;
}
static void on_replay(void *arg, uint64_t id, int status, const gw_replay_page *page) {
  (void)arg;
  (void)id;
  (void)page;
  replay_status = status;
}
static bool has_slot(void *arg) {
  (void)arg;
  return got_slot >= 0;
}
static bool added(void *arg) {
  (void)arg;
  return add_status != 99 && replay_status != 99;
}

Test(redis_cluster_async, registry_runs_on_a_cluster) {
  const char *sd = seeds();
  loop = ev_loop_new(EVFLAG_AUTO);
  char prefix[64], gw[64];
  snprintf(prefix, sizeof(prefix), "rcreg%d:", getpid());
  snprintf(gw, sizeof(gw), "gw-rc%d", getpid());
  gw_registry_options o = {.host = "127.0.0.1",
                           .port = 1,
                           .cluster = sd,
                           .prefix = prefix,
                           .gw_id = gw,
                           .slots = 8,
                           .lease_ms = 3000,
                           .renew_ms = 1000,
                           .timeout_ms = 2000,
                           .on_slot = on_slot};
  gw_registry *r;
  char err[256];
  cr_assert_eq(gw_registry_create(&r, loop, &o, NULL, err, sizeof(err)), GW_REG_OK, "%s", err);
  cr_assert(itest_loop_until(loop, has_slot, NULL, 5000), "no slot acquired on the cluster");
  cr_assert_eq(gw_registry_conn_add(r, "al}{ice", 7, 42, on_added, NULL), GW_REG_OK);
  gw_replay_limits lim = {
      .max_entries = 10, .max_bytes = 65536, .max_age_ms = 60000, .max_distance = 1000};
  cr_assert_eq(gw_registry_replay_read(r, "al}{ice", 7, 42, true, 0, &lim, on_replay, NULL),
               GW_REG_OK);
  cr_assert(itest_loop_until(loop, added, NULL, 5000));
  cr_assert_eq(add_status, GW_REG_OK);
  cr_assert_eq(replay_status, GW_REG_OK);
  /* Read back through the cluster with redis-cli -c's logic: the entry is on the user's node. */
  char key[WSG_REDIS_KEY_MAX];
  int klen = wsg_key_user(key, sizeof(key), prefix, "al}{ice", 7);
  uint16_t slot = wsg_redis_key_slot(key, (size_t)klen);
  redisContext *rc = redisConnect("127.0.0.1", atoi(strrchr(sd, ':') + 1));
  redisReply *rep = redisCommand(rc, "CLUSTER KEYSLOT %b", key, (size_t)klen);
  cr_assert_eq(rep->integer, slot);
  freeReplyObject(rep);
  redisFree(rc);
  gw_registry_destroy(r);
  ev_loop_destroy(loop);
}
