/*
 * wsg_redis_sync and wsg_redis_cluster against a real Redis Cluster (scripts/redis start
 * --cluster): routing, per-node pipelines, MOVED and ASK while a slot moves, and every Lua script
 * of the key layout on one slot. WSGATE_TEST_REDIS_CLUSTER=host:port names a node; without it
 * every case is skipped.
 */
#include <criterion/criterion.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "wsg_redis_keys.h"
#include "wsg_redis_slots.h"
#include "wsg_redis_sync.h"

static const char *seeds(void) {
  const char *s = getenv("WSGATE_TEST_REDIS_CLUSTER");
  if (s == NULL || *s == '\0')
    cr_skip_test("WSGATE_TEST_REDIS_CLUSTER is not set (scripts/redis start --cluster)");
  return s;
}

static wsg_redis_sync *client(void) {
  wsg_redis_sync *s;
  char err[256];
  wsg_redis_sync_options o = {.seeds = seeds(), .timeout_ms = 2000};
  cr_assert_eq(wsg_redis_sync_create(&s, &o, err, sizeof(err)), 0, "%s", err);
  cr_assert_eq(wsg_redis_sync_connect(s, err, sizeof(err)), 0, "%s", err);
  return s;
}

/* Commands from a table of argv strings. */
typedef struct {
  const char *(*argv)[12];
  int *argc;
  size_t lens[12];
} table;

static bool build_table(void *ctx, size_t i, int *argc, const char ***argv, const size_t **lens) {
  table *t = ctx;
  *argc = t->argc[i];
  *argv = t->argv[i];
  for (int a = 0; a < *argc; a++)
    t->lens[a] = strlen(t->argv[i][a]);
  *lens = t->lens;
  return true;
}

static char tag[32];

static void unique_tag(void) {
  snprintf(tag, sizeof(tag), "rct%d-%" PRIu32, getpid(), (uint32_t)rand());
}

/* Runs one command through s and returns its reply (caller frees). */
static redisReply *run(wsg_redis_sync *s, int argc, const char **argv) {
  const char *rows[1][12] = {{0}};
  memcpy(rows[0], argv, (size_t)argc * sizeof(*argv));
  table t = {.argv = rows, .argc = &argc};
  redisReply *rep = NULL;
  char err[256];
  cr_assert_eq(wsg_redis_sync_pipeline(s, 0, 1, build_table, &t, "test", &rep, err, sizeof(err)), 0,
               "%s", err);
  return rep;
}

Test(redis_cluster, pipeline_spans_every_primary_in_order) {
  wsg_redis_sync *s = client();
  unique_tag();
  enum { N = 300 };
  static char keys[N][64], vals[N][16];
  static const char *rows[2 * N][12];
  static int argc[2 * N];
  bool seen_node[WSG_REDIS_SLOTS] = {false};
  int nodes = 0;
  for (int i = 0; i < N; i++) {
    snprintf(keys[i], sizeof(keys[i]), "%s:k%d", tag, i);
    snprintf(vals[i], sizeof(vals[i]), "v%d", i);
    rows[2 * i][0] = "SET", rows[2 * i][1] = keys[i], rows[2 * i][2] = vals[i], argc[2 * i] = 3;
    rows[2 * i + 1][0] = "GET", rows[2 * i + 1][1] = keys[i], argc[2 * i + 1] = 2;
    uint16_t slot = wsg_redis_key_slot(keys[i], strlen(keys[i]));
    nodes += !seen_node[slot / 5462];
    seen_node[slot / 5462] = true;
  }
  cr_assert_eq(nodes, 3, "the keys should spread over the three primaries' ranges");
  table t = {.argv = rows, .argc = argc};
  static redisReply *reps[2 * N];
  char err[256];
  cr_assert_eq(
      wsg_redis_sync_pipeline(s, 0, 2 * N, build_table, &t, "test", reps, err, sizeof(err)), 0,
      "%s", err);
  for (int i = 0; i < N; i++) {
    cr_assert_eq(reps[2 * i + 1]->type, REDIS_REPLY_STRING, "%d: %d %s", i, reps[2 * i + 1]->type,
                 reps[2 * i + 1]->str);
    cr_assert_str_eq(reps[2 * i + 1]->str, vals[i]);
  }
  for (int i = 0; i < 2 * N; i++)
    freeReplyObject(reps[i]);
  wsg_redis_sync_stats st;
  wsg_redis_sync_get_stats(s, &st);
  cr_assert_eq(st.moved + st.ask, 0, "a fresh map needs no redirection");
  wsg_redis_sync_destroy(s);
}

/* A direct connection to the node listening on port. */
static redisContext *node(int port) {
  redisContext *c = redisConnect("127.0.0.1", port);
  cr_assert(c != NULL && !c->err);
  return c;
}

static redisReply *node_cmd(redisContext *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  redisReply *r = redisvCommand(c, fmt, ap);
  va_end(ap);
  cr_assert_not_null(r);
  return r;
}

/* The primaries' ports and node ids, from CLUSTER SLOTS of the seed. */
typedef struct {
  int port;
  char id[64];
  int lo;
} primary;

static int primaries(primary *p) {
  const char *sd = seeds();
  int port = atoi(strrchr(sd, ':') + 1);
  redisContext *c = node(port);
  redisReply *r = node_cmd(c, "CLUSTER SLOTS");
  int n = 0;
  for (size_t i = 0; i < r->elements && n < 8; i++) {
    redisReply *e = r->element[i], *nd = e->element[2];
    p[n].port = (int)nd->element[1]->integer;
    p[n].lo = (int)e->element[0]->integer;
    snprintf(p[n].id, sizeof(p[n].id), "%s", nd->elements > 2 ? nd->element[2]->str : "");
    n++;
  }
  freeReplyObject(r);
  redisFree(c);
  return n;
}

/* CLUSTER SETSLOT slot NODE id on every primary. */
static void assign_slot(const primary *p, int n, uint16_t slot, const char *id) {
  for (int i = 0; i < n; i++) {
    redisContext *c = node(p[i].port);
    freeReplyObject(node_cmd(c, "CLUSTER SETSLOT %d NODE %s", slot, id));
    redisFree(c);
  }
}

static int owner_of(primary *p, int n, uint16_t slot) {
  int best = 0;
  for (int i = 0; i < n; i++)
    if (p[i].lo <= slot && p[i].lo >= p[best].lo)
      best = i;
  return best;
}

/* Moves an empty slot to another primary behind the client's back: its next command there gets
 * MOVED, follows it, and the map is re-read. The slot is moved back afterwards. */
Test(redis_cluster, moved_after_a_slot_changes_hands) {
  wsg_redis_sync *s = client();
  unique_tag();
  char key[64];
  snprintf(key, sizeof(key), "%s:moved", tag);
  uint16_t slot = wsg_redis_key_slot(key, strlen(key));
  primary p[8];
  int n = primaries(p);
  int from = owner_of(p, n, slot), to = (from + 1) % n;
  /* Only an empty slot may change owner with SETSLOT NODE. */
  redisContext *src = node(p[from].port);
  redisReply *r = node_cmd(src, "CLUSTER COUNTKEYSINSLOT %d", slot);
  if (r->integer != 0)
    cr_skip_test("slot %d holds keys of another test", slot);
  freeReplyObject(r);
  assign_slot(p, n, slot, p[to].id);
  const char *set[] = {"SET", key, "x"};
  redisReply *rep = run(s, 3, set);
  cr_assert_eq(rep->type, REDIS_REPLY_STATUS, "%s", rep->str);
  freeReplyObject(rep);
  wsg_redis_sync_stats st;
  wsg_redis_sync_get_stats(s, &st);
  cr_assert_eq(st.moved, 1);
  cr_assert_geq(st.map_reads, 2, "a MOVED re-reads the map");
  const char *get[] = {"GET", key};
  rep = run(s, 2, get);
  cr_assert_str_eq(rep->str, "x");
  freeReplyObject(rep);
  wsg_redis_sync_get_stats(s, &st);
  cr_assert_eq(st.moved, 1, "the map was updated: no second redirection");
  /* Back where it was, empty. */
  const char *del[] = {"DEL", key};
  freeReplyObject(run(s, 2, del));
  assign_slot(p, n, slot, p[from].id);
  redisFree(src);
  wsg_redis_sync_destroy(s);
}

/* A slot halfway through a migration: a key already on the target answers ASK at the source; the
 * client sends ASKING + the command there, and does not change its map. */
Test(redis_cluster, ask_during_a_migration) {
  wsg_redis_sync *s = client();
  unique_tag();
  char key[64];
  snprintf(key, sizeof(key), "%s:ask", tag);
  uint16_t slot = wsg_redis_key_slot(key, strlen(key));
  primary p[8];
  int n = primaries(p);
  int from = owner_of(p, n, slot), to = (from + 1) % n;
  redisContext *src = node(p[from].port), *dst = node(p[to].port);
  redisReply *r = node_cmd(src, "CLUSTER COUNTKEYSINSLOT %d", slot);
  if (r->integer != 0)
    cr_skip_test("slot %d holds keys of another test", slot);
  freeReplyObject(r);
  freeReplyObject(node_cmd(dst, "CLUSTER SETSLOT %d IMPORTING %s", slot, p[from].id));
  freeReplyObject(node_cmd(src, "CLUSTER SETSLOT %d MIGRATING %s", slot, p[to].id));
  const char *set[] = {"SET", key, "y"};
  redisReply *rep = run(s, 3, set);
  cr_assert_eq(rep->type, REDIS_REPLY_STATUS, "%s", rep->str);
  freeReplyObject(rep);
  wsg_redis_sync_stats st;
  wsg_redis_sync_get_stats(s, &st);
  cr_assert_eq(st.ask, 1);
  cr_assert_eq(st.moved, 0);
  r = node_cmd(dst, "ASKING");
  freeReplyObject(r);
  r = node_cmd(dst, "GET %s", key);
  cr_assert_str_eq(r->str, "y", "the key was written on the importing node");
  freeReplyObject(r);
  /* Undo: remove the key on the target and end the migration where it started. */
  freeReplyObject(node_cmd(dst, "ASKING"));
  freeReplyObject(node_cmd(dst, "DEL %s", key));
  assign_slot(p, n, slot, p[from].id);
  redisFree(src);
  redisFree(dst);
  wsg_redis_sync_destroy(s);
}

/* Every Lua script of the key layout, with its real keys, on a cluster: Redis refuses a script
 * whose keys span slots (CROSSSLOT), so a reply that is not an error proves one slot. */
Test(redis_cluster, every_shared_script_runs_on_one_slot) {
  wsg_redis_sync *s = client();
  unique_tag();
  char prefix[64], user[WSG_REDIS_KEY_MAX], slot[WSG_REDIS_KEY_MAX], skey[WSG_REDIS_KEY_MAX],
      qkey[WSG_REDIS_KEY_MAX];
  snprintf(prefix, sizeof(prefix), "%s:", tag);
  wsg_key_user(user, sizeof(user), prefix, "}al{ice", 7);
  wsg_key_slot(slot, sizeof(slot), prefix, 3);
  wsg_key_replay(skey, sizeof(skey), prefix, "}al{ice", 7);
  wsg_key_replay_seq(qkey, sizeof(qkey), prefix, "}al{ice", 7);
  const char *calls[][11] = {
      {"EVAL", WSG_LUA_LEASE_ACQUIRE, "1", slot, "gw-a", "5000"},
      {"EVAL", WSG_LUA_LEASE_RENEW, "1", slot, "gw-a", "5000"},
      {"EVAL", WSG_LUA_LEASE_RELEASE, "1", slot, "gw-a"},
      {"EVAL", WSG_LUA_CONN_DELETE, "1", user, "17", "gw-a"},
      {"EVAL", WSG_LUA_REPLAY_APPEND, "2", skey, qkey, "16", "60000", "120000", "d", "hi"},
      {"EVAL", WSG_LUA_REPLAY_READ, "2", skey, qkey, "0", "10", "65536", "60000", "1000", "120000"},
  };
  const int argcs[] = {6, 6, 5, 6, 10, 11};
  for (size_t i = 0; i < sizeof(argcs) / sizeof(argcs[0]); i++) {
    redisReply *rep = run(s, argcs[i], calls[i]);
    cr_assert_neq(rep->type, REDIS_REPLY_ERROR, "script %zu: %s", i, rep->str);
    freeReplyObject(rep);
  }
  const char *del[] = {"DEL", skey, qkey};
  redisReply *rep = run(s, 3, del);
  cr_assert_eq(rep->type, REDIS_REPLY_INTEGER, "a multi-key DEL of one user's keys: %s", rep->str);
  freeReplyObject(rep);
  wsg_redis_sync_destroy(s);
}

Test(redis_cluster, evalsha_works_on_every_node) {
  wsg_redis_sync *s = client();
  unique_tag();
  char err[256], sha[48];
  cr_assert_eq(
      wsg_redis_sync_script_load(s, WSG_LUA_LEASE_RELEASE, sha, sizeof(sha), err, sizeof(err)), 0,
      "%s", err);
  for (int i = 0; i < 60; i++) {
    char key[64];
    snprintf(key, sizeof(key), "%s:s%d", tag, i);
    const char *argv[] = {"EVALSHA", sha, "1", key, "gw-a"};
    redisReply *rep = run(s, 5, argv);
    cr_assert_eq(rep->type, REDIS_REPLY_INTEGER, "%s", rep->str);
    freeReplyObject(rep);
  }
  wsg_redis_sync_destroy(s);
}
