/*
 * A Redis Cluster primary killed with SIGKILL (WSGATE_TEST_REDIS_CLUSTER=host:port of
 * scripts/redis start --cluster, whose cluster-node-timeout is 2 s; skipped without it): the
 * processor's face (wsg_redis_sync) and the gateway's registry (wsg_redis_cluster) both route
 * again, the registry's entries and slot are back, within two lease periods. The killed node is
 * restarted afterwards and rejoins as a replica, so the cluster ends whole.
 */
#include <criterion/criterion.h>
#include <ev.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gw_registry.h"
#include "harness.h"
#include "wsg_metrics.h"
#include "wsg_redis_keys.h"
#include "wsg_redis_slots.h"
#include "wsg_redis_sync.h"
#include "wsg_time.h"

#define LEASE_MS 3000
#define USERS    16

static const char *seeds(void) {
  const char *s = getenv("WSGATE_TEST_REDIS_CLUSTER");
  if (s == NULL || *s == '\0')
    cr_skip_test("WSGATE_TEST_REDIS_CLUSTER is not set (scripts/redis start --cluster)");
  return s;
}

static char prefix[64], users[USERS][16];
static int32_t slot_now = -1;

static int slot_losses;

static void on_slot(void *arg, int32_t slot) {
  (void)arg;
  slot_losses += slot < 0 && slot_now >= 0;
  slot_now = slot;
}

static void foreach_conn(void *arg, gw_registry_emit_fn emit, void *ctx) {
  (void)arg;
  for (int i = 0; i < USERS; i++)
    emit(ctx, users[i], strlen(users[i]), (uint64_t)i + 1);
}

static char keys[USERS][WSG_REDIS_KEY_MAX];
static size_t klens[USERS];

static bool build_hlen(void *ctx, size_t i, int *argc, const char ***argv, const size_t **lens) {
  static const char *a[2];
  static size_t l[2];
  (void)ctx;
  a[0] = "HLEN", l[0] = 4;
  a[1] = keys[i], l[1] = klens[i];
  *argc = 2, *argv = a, *lens = l;
  return true;
}

/* Every user's entry is readable through the processor's face. */
static bool entries_routable(wsg_redis_sync *s) {
  redisReply *reps[USERS];
  char err[256];
  if (wsg_redis_sync_pipeline(s, 0, USERS, build_hlen, NULL, "HLEN", reps, err, sizeof(err)) != 0)
    return (void)wsg_redis_sync_connect(s, err, sizeof(err)), false;
  bool all = true;
  for (int i = 0; i < USERS; i++) {
    all &= reps[i]->type == REDIS_REPLY_INTEGER && reps[i]->integer == 1;
    freeReplyObject(reps[i]);
  }
  return all;
}

static bool never(void *arg) {
  (void)arg;
  return false;
}

static bool has_slot(void *arg) {
  (void)arg;
  return slot_now >= 0;
}

/* The port of the primary serving slot, from a CLUSTER SLOTS reply. */
static int owner_port(const redisReply *slots, uint16_t slot) {
  for (size_t i = 0; i < slots->elements; i++)
    if (slots->element[i]->element[0]->integer <= slot &&
        slot <= slots->element[i]->element[1]->integer)
      return (int)slots->element[i]->element[2]->element[1]->integer;
  return 0;
}

/* INFO server field `name` of the node on port, into out. */
static void info_field(int port, const char *name, char *out, size_t len) {
  redisContext *c = redisConnect("127.0.0.1", port);
  cr_assert(c != NULL && !c->err);
  redisReply *r = redisCommand(c, "INFO server");
  const char *p = strstr(r->str, name);
  cr_assert_not_null(p, "no %s in INFO", name);
  p += strlen(name) + 1;
  size_t n = strcspn(p, "\r\n");
  snprintf(out, len, "%.*s", (int)n, p);
  freeReplyObject(r);
  redisFree(c);
}

static bool node_is_replica_again(int port) {
  redisContext *c = redisConnect("127.0.0.1", port);
  if (c == NULL || c->err) {
    redisFree(c);
    return false;
  }
  /* A replica again, and synchronised: the next failover test can kill its new primary. */
  redisReply *r = redisCommand(c, "INFO replication");
  bool ok = r != NULL && r->type == REDIS_REPLY_STRING && strstr(r->str, "role:slave") != NULL &&
            strstr(r->str, "master_link_status:up") != NULL;
  redisReply *i = redisCommand(c, "CLUSTER INFO");
  ok = ok && i != NULL && strstr(i->str, "cluster_state:ok") != NULL;
  freeReplyObject(r);
  freeReplyObject(i);
  redisFree(c);
  return ok;
}

Test(redis_failover, kill_9_a_primary_and_routing_is_back_within_two_leases, .timeout = 120) {
  const char *sd = seeds();
  snprintf(prefix, sizeof(prefix), "rfo%d:", getpid());
  for (int i = 0; i < USERS; i++) {
    snprintf(users[i], sizeof(users[i]), "user%d", i);
    klens[i] = (size_t)wsg_key_user(keys[i], sizeof(keys[i]), prefix, users[i], strlen(users[i]));
  }
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  char gw[64], err[256];
  snprintf(gw, sizeof(gw), "gw-fo%d", getpid());
  gw_registry_options o = {.host = "127.0.0.1",
                           .port = 1,
                           .cluster = sd,
                           .prefix = prefix,
                           .gw_id = gw,
                           .slots = 4,
                           .lease_ms = LEASE_MS,
                           .renew_ms = LEASE_MS / 3,
                           .timeout_ms = 1000,
                           .on_slot = on_slot,
                           .foreach_conn = foreach_conn};
  gw_registry *r;
  wsg_metrics *m = wsg_metrics_create();
  cr_assert_eq(gw_registry_create(&r, loop, &o, m, err, sizeof(err)), GW_REG_OK, "%s", err);
  cr_assert(itest_loop_until(loop, has_slot, NULL, 5000), "no slot");
  /* The series an operator watches (registered again: the same ones). */
  wsg_gauge *prim = wsg_metrics_gauge(m, "wsgate_gateway_redis_primaries", "h", NULL);
  wsg_gauge *ready = wsg_metrics_gauge(m, "wsgate_gateway_redis_primaries_ready", "h", NULL);
  wsg_counter *gw_maps =
      wsg_metrics_counter(m, "wsgate_gateway_redis_slot_map_reads_total", "h", NULL);
  wsg_redis_cluster_metrics sm = {.map_reads = wsg_metrics_counter(m, "t_map_reads", "h", NULL),
                                  .primaries = wsg_metrics_gauge(m, "t_primaries", "h", NULL)};
  wsg_redis_sync *s;
  wsg_redis_sync_options so = {.seeds = sd, .timeout_ms = 1000, .metrics = sm};
  cr_assert_eq(wsg_redis_sync_create(&s, &so, err, sizeof(err)), 0, "%s", err);
  uint64_t t = wsg_now_mono_ms();
  while (!entries_routable(s) && wsg_now_mono_ms() - t < 5000)
    itest_loop_until(loop, never, NULL, 50);
  cr_assert(entries_routable(s), "the registry did not register its connections");

  /* The victim: a primary serving some user's entry but not the gateway's slot key, whose
   * lease must then survive the failover (renewed on its own node meanwhile). */
  redisContext *c = redisConnect("127.0.0.1", atoi(strrchr(sd, ':') + 1));
  redisReply *rep = redisCommand(c, "CLUSTER SLOTS");
  char lease_key[WSG_REDIS_KEY_MAX];
  int llen = wsg_key_slot(lease_key, sizeof(lease_key), prefix, (uint32_t)slot_now);
  int lease_node = owner_port(rep, wsg_redis_key_slot(lease_key, (size_t)llen)), victim = 0;
  for (int u = 0; u < USERS && victim == 0; u++) {
    int port = owner_port(rep, wsg_redis_key_slot(keys[u], klens[u]));
    if (port != lease_node)
      victim = port;
  }
  freeReplyObject(rep);
  redisFree(c);
  if (victim == 0)
    cr_skip_test("every user's entry is on the node of the lease key");
  slot_losses = 0;
  char pid[32], conf[512];
  info_field(victim, "process_id", pid, sizeof(pid));
  info_field(victim, "config_file", conf, sizeof(conf));
  cr_assert(conf[0] != '\0', "the node has no config file to restart it from");

  int64_t primaries = wsg_gauge_get(prim), min_ready = wsg_gauge_get(ready);
  cr_assert_eq(primaries, 3, "scripts/redis --cluster has 3 primaries");
  cr_assert_eq(wsg_gauge_get(sm.primaries), 3);
  cr_assert_eq(min_ready, 3);
  uint64_t maps_gw = wsg_counter_get(gw_maps), maps_sync = wsg_counter_get(sm.map_reads);
  uint64_t t0 = wsg_now_mono_ms();
  cr_assert_eq(kill(atoi(pid), SIGKILL), 0);
  uint64_t t_sync = 0, t_gw = 0;
  while ((t_sync == 0 || t_gw == 0) && wsg_now_mono_ms() - t0 < 4 * LEASE_MS) {
    itest_loop_until(loop, never, NULL, 100);
    if (wsg_gauge_get(ready) < min_ready)
      min_ready = wsg_gauge_get(ready);
    if (t_sync == 0 && entries_routable(s))
      t_sync = wsg_now_mono_ms() - t0;
    if (t_gw == 0 && gw_registry_connected(r) && slot_now >= 0)
      t_gw = wsg_now_mono_ms() - t0;
  }
  /* Figures for docs/RELIABILITY.md. */
  fprintf(stderr,
          "redis_failover: primary :%d killed; processor routes again after %" PRIu64
          " ms, gateway registry ready with its slot after %" PRIu64 " ms\n",
          victim, t_sync, t_gw);
  cr_assert(t_sync > 0 && t_sync <= 2 * LEASE_MS, "processor routing back after %" PRIu64 " ms",
            t_sync);
  cr_assert(t_gw > 0 && t_gw <= 2 * LEASE_MS, "gateway registry back after %" PRIu64 " ms", t_gw);
  cr_assert_eq(slot_losses, 0, "the gateway lost its slot although its lease key's node lived");
  cr_assert_eq(min_ready, primaries - 1, "primaries_ready showed the lost primary");
  cr_assert_eq(wsg_gauge_get(ready), wsg_gauge_get(prim), "every primary ready again");
  cr_assert_eq(wsg_gauge_get(prim), 3, "the promoted replica replaces the lost primary");
  cr_assert_gt(wsg_counter_get(gw_maps), maps_gw, "the gateway re-read the slot map");
  cr_assert_gt(wsg_counter_get(sm.map_reads), maps_sync, "the processor's face re-read the map");

  /* Bring the node back: it rejoins as a replica of its promoted replica. Daemonized (its
   * configuration is not: scripts/redis spawns the nodes), so it outlives this test and writes
   * its pid file for scripts/redis stop. */
  char cmd[600];
  snprintf(cmd, sizeof(cmd), "redis-server '%s' --daemonize yes", conf);
  cr_assert_eq(system(cmd), 0);
  t = wsg_now_mono_ms();
  while (!node_is_replica_again(victim) && wsg_now_mono_ms() - t < 20000)
    usleep(100 * 1000);
  cr_assert(node_is_replica_again(victim), "the killed node did not rejoin as a replica");
  gw_registry_destroy(r);
  wsg_redis_sync_destroy(s);
  wsg_metrics_destroy(m);
  ev_loop_destroy(loop);
}
