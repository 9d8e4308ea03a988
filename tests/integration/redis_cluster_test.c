/*
 * wsg_redis_sync and wsg_redis_cluster against a real Redis Cluster (scripts/redis start
 * --cluster): routing, per-node pipelines, MOVED and ASK while a slot moves, and every Lua script
 * of the key layout on one slot (tests/scripts/check_cluster_scripts.py fails when one is not run
 * here). WSGATE_TEST_REDIS_CLUSTER=host:port names a node; without it
 * every case is skipped.
 */
#include <criterion/criterion.h>
#include <ev.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "wsg_chkeys.h"
#include "wsg_redis_cluster.h"
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

/* A key "<tag>:<what><i>" whose slot holds no key yet (only an empty slot may change owner with
 * SETSLOT NODE): its slot in *slot, the owner's index in *from. */
static void key_in_empty_slot(char *key, size_t len, const char *what, const primary *p, int n,
                              uint16_t *slot, int *from);

/* CLUSTER SETSLOT slot NODE id on every primary. */
/* The ports of every node, replicas too (CLUSTER NODES of the seed). */
static int all_ports(int *ports, int max) {
  redisContext *c = node(atoi(strrchr(seeds(), ':') + 1));
  redisReply *all = node_cmd(c, "CLUSTER NODES");
  int n = 0;
  for (const char *line = all->str; line != NULL && *line != '\0' && n < max;) {
    const char *colon = strchr(line, ':'), *eol = strchr(line, '\n');
    if (colon == NULL)
      break;
    ports[n++] = atoi(colon + 1);
    line = eol != NULL ? eol + 1 : NULL;
  }
  freeReplyObject(all);
  redisFree(c);
  return n;
}

/* The port of the primary serving slot in the view of the node on port, 0 if none. */
static int owner_seen_by(int port, uint16_t slot) {
  redisContext *c = node(port);
  redisReply *r = node_cmd(c, "CLUSTER SLOTS");
  int owner = 0;
  for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
    if (r->element[i]->element[0]->integer <= slot && slot <= r->element[i]->element[1]->integer)
      owner = (int)r->element[i]->element[2]->element[1]->integer;
  freeReplyObject(r);
  redisFree(c);
  return owner;
}

/* Gives slot to primary p[to] the way a finished migration does: migration state cleared and
 * SETSLOT NODE on every primary (replicas refuse it), then a new config epoch on the owner so
 * gossip carries the change to the replicas; waits until every node agrees, twice apart (a late
 * gossip message must not undo it). A replica left with
 * the old owner would strand the slot at its next failover. */
static void assign_slot(const primary *p, int n, uint16_t slot, int to) {
  /* The new owner last: an old owner that still claims the slot with a higher epoch would
   * otherwise talk the new owner out of it by gossip before it bumps its own. */
  for (int k = 0; k < n; k++) {
    int i = (to + 1 + k) % n;
    redisContext *c = node(p[i].port);
    freeReplyObject(node_cmd(c, "CLUSTER SETSLOT %d STABLE", slot));
    redisReply *r = node_cmd(c, "CLUSTER SETSLOT %d NODE %s", slot, p[to].id);
    cr_assert_neq(r->type, REDIS_REPLY_ERROR, "SETSLOT on :%d: %s", p[i].port, r->str);
    freeReplyObject(r);
    redisFree(c);
  }
  redisContext *c = node(p[to].port);
  freeReplyObject(node_cmd(c, "CLUSTER BUMPEPOCH"));
  redisFree(c);
  int ports[16];
  int np = all_ports(ports, 16);
  /* Replicas learn the new owner by gossip: up to 15 s on a loaded 2-core box (5 s was seen too
   * short in a clean-clone run of the test command). */
  for (int pass = 0; pass < 2; pass++) {
    for (int i = 0; i < np; i++) {
      for (int t = 0; t < 300 && owner_seen_by(ports[i], slot) != p[to].port; t++)
        usleep(50 * 1000);
      cr_assert_eq(owner_seen_by(ports[i], slot), p[to].port, "node :%d does not see the new owner",
                   ports[i]);
    }
    usleep(300 * 1000);
  }
}

static int owner_of(primary *p, int n, uint16_t slot) {
  int best = 0;
  for (int i = 0; i < n; i++)
    if (p[i].lo <= slot && p[i].lo >= p[best].lo)
      best = i;
  return best;
}

/* A key whose empty slot was just given to the next primary. */
typedef struct {
  char key[64];
  primary p[8];
  int n, from;
  uint16_t slot;
} moving;

static moving slot_moved_away(const char *what) {
  moving m;
  m.n = primaries(m.p);
  key_in_empty_slot(m.key, sizeof(m.key), what, m.p, m.n, &m.slot, &m.from);
  assign_slot(m.p, m.n, m.slot, (m.from + 1) % m.n);
  return m;
}

/* Moves an empty slot to another primary behind the client's back: its next command there gets
 * MOVED, follows it, and the map is re-read. The slot is moved back afterwards. */
Test(redis_cluster, moved_after_a_slot_changes_hands) {
  wsg_redis_sync *s = client();
  unique_tag();
  moving m = slot_moved_away("moved");
  const char *set[] = {"SET", m.key, "x"};
  redisReply *rep = run(s, 3, set);
  cr_assert_eq(rep->type, REDIS_REPLY_STATUS, "%s", rep->str);
  freeReplyObject(rep);
  wsg_redis_sync_stats st;
  wsg_redis_sync_get_stats(s, &st);
  cr_assert_eq(st.moved, 1);
  cr_assert_geq(st.map_reads, 2, "a MOVED re-reads the map");
  const char *get[] = {"GET", m.key};
  rep = run(s, 2, get);
  cr_assert_str_eq(rep->str, "x");
  freeReplyObject(rep);
  wsg_redis_sync_get_stats(s, &st);
  cr_assert_eq(st.moved, 1, "the map was updated: no second redirection");
  /* Back where it was, empty. */
  const char *del[] = {"DEL", m.key};
  freeReplyObject(run(s, 2, del));
  assign_slot(m.p, m.n, m.slot, m.from);
  wsg_redis_sync_destroy(s);
}

/* A slot halfway through a migration: a key already on the target answers ASK at the source; the
 * client sends ASKING + the command there, and does not change its map. */
/* A key whose empty slot is halfway through a migration to the next primary: the source answers
 * ASK for a key it does not have. */
typedef struct {
  char key[64];
  primary p[8];
  int n, from, to;
  uint16_t slot;
  redisContext *src, *dst;
} migrating;

static void migration_start(migrating *m, const char *what) {
  m->n = primaries(m->p);
  key_in_empty_slot(m->key, sizeof(m->key), what, m->p, m->n, &m->slot, &m->from);
  m->to = (m->from + 1) % m->n;
  m->src = node(m->p[m->from].port);
  m->dst = node(m->p[m->to].port);
  freeReplyObject(node_cmd(m->dst, "CLUSTER SETSLOT %d IMPORTING %s", m->slot, m->p[m->from].id));
  freeReplyObject(node_cmd(m->src, "CLUSTER SETSLOT %d MIGRATING %s", m->slot, m->p[m->to].id));
}

/* Checks the key reached the importing node with `value`, then ends the migration where it
 * started, the slot empty again. */
static void migration_undo(migrating *m, const char *value) {
  freeReplyObject(node_cmd(m->dst, "ASKING"));
  redisReply *r = node_cmd(m->dst, "GET %s", m->key);
  cr_assert_str_eq(r->str, value, "the key was written on the importing node");
  freeReplyObject(r);
  freeReplyObject(node_cmd(m->dst, "ASKING"));
  freeReplyObject(node_cmd(m->dst, "DEL %s", m->key));
  assign_slot(m->p, m->n, m->slot, m->from);
  redisFree(m->src);
  redisFree(m->dst);
}

/* The client sends ASKING + the command to the importing node, and does not change its map. */
Test(redis_cluster, ask_during_a_migration) {
  wsg_redis_sync *s = client();
  unique_tag();
  migrating m;
  migration_start(&m, "ask");
  const char *set[] = {"SET", m.key, "y"};
  redisReply *rep = run(s, 3, set);
  cr_assert_eq(rep->type, REDIS_REPLY_STATUS, "%s", rep->str);
  freeReplyObject(rep);
  wsg_redis_sync_stats st;
  wsg_redis_sync_get_stats(s, &st);
  cr_assert_eq(st.ask, 1);
  cr_assert_eq(st.moved, 0);
  migration_undo(&m, "y");
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
  /* A channel name that would split its keys over slots if the tag were not forced. */
  char chm[WSG_REDIS_KEY_MAX], chh[WSG_REDIS_KEY_MAX], chg[WSG_REDIS_KEY_MAX],
      chp[WSG_REDIS_KEY_MAX], chpc[WSG_REDIS_KEY_MAX];
  cr_assert_gt(wsg_key_channel(chm, sizeof chm, prefix, "}r{oom", 6, "m"), 0);
  cr_assert_gt(wsg_key_channel(chp, sizeof chp, prefix, "}r{oom", 6, "p"), 0);
  cr_assert_gt(wsg_key_channel(chpc, sizeof chpc, prefix, "}r{oom", 6, "pc"), 0);
  cr_assert_gt(wsg_key_channel(chh, sizeof chh, prefix, "}r{oom", 6, "h"), 0);
  cr_assert_gt(wsg_key_channel(chg, sizeof chg, prefix, "}r{oom", 6, "gws"), 0);
  const char *calls[][11] = {
      {"EVAL", WSG_LUA_LEASE_ACQUIRE, "1", slot, "gw-a", "5000"},
      {"EVAL", WSG_LUA_LEASE_RENEW, "1", slot, "gw-a", "5000"},
      {"EVAL", WSG_LUA_LEASE_RELEASE, "1", slot, "gw-a"},
      {"EVAL", WSG_LUA_CONN_ADD, "1", user, "17", "gw-a", "2", "60000"},
      {"EVAL", WSG_LUA_CONN_PRUNE, "1", user, "gw-dead"},
      {"EVAL", WSG_LUA_CONN_DELETE, "1", user, "17", "gw-a"},
      {"EVAL", WSG_LUA_SEQ_TOUCH, "1", qkey, "120000"},
      {"EVAL", WSG_LUA_REPLAY_APPEND, "2", skey, qkey, "16", "60000", "120000", "d", "hi"},
      {"EVAL", WSG_LUA_REPLAY_READ, "2", skey, qkey, "0", "10", "65536", "60000", "1000", "120000"},
      {"EVAL", WSG_LUA_CHANNEL_PUBLISH, "3", chm, chh, chg, "16", "60000", "d", "hi"},
      {"EVAL", WSG_LUA_CHANNEL_HISTORY, "2", chm, chh, "0", "10", "65536"},
      {"EVAL", WSG_LUA_CHANNEL_GATEWAYS, "3", chm, chh, chg},
      {"EVAL", WSG_LUA_PRESENCE_READ, "2", chp, chpc, "100", "4000", "u"},
      {"EVAL", WSG_LUA_PRESENCE_DROP, "2", chp, chpc, "gw-dead"},
  };
  const int argcs[] = {6, 6, 5, 8, 5, 6, 5, 10, 11, 10, 8, 6, 8, 6};
  for (size_t i = 0; i < sizeof(argcs) / sizeof(argcs[0]); i++) {
    redisReply *rep = run(s, argcs[i], calls[i]);
    cr_assert_neq(rep->type, REDIS_REPLY_ERROR, "script %zu: %s", i, rep->str);
    freeReplyObject(rep);
  }
  const char *del[] = {"DEL", skey, qkey};
  redisReply *rep = run(s, 3, del);
  cr_assert_eq(rep->type, REDIS_REPLY_INTEGER, "a multi-key DEL of one user's keys: %s", rep->str);
  freeReplyObject(rep);
  /* Presence reads members' hashes named from :p (not in KEYS: the script builds them), so they
   * must share its slot: a member's entry read, then its hash dropped, on the cluster. */
  char chpm[WSG_REDIS_KEY_MAX];
  cr_assert_gt(wsg_key_presence(chpm, sizeof chpm, prefix, "}r{oom", 6, "g}w#00000000000000a1"), 0);
  const char *seed[][4] = {{"HSET", chpm, "17", "alice"},
                           {"HSET", chpc, "g}w#00000000000000a1", "1"}};
  for (int i = 0; i < 2; i++)
    freeReplyObject(run(s, 4, seed[i]));
  rep = run(s, 8, calls[12]);
  cr_assert(rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 + 2 + 1 &&
                strcmp(rep->element[4]->str, "alice|g}w#00000000000000a1") == 0,
            "the member's entry read: %s", rep->type == REDIS_REPLY_ERROR ? rep->str : "");
  freeReplyObject(rep);
  const char *drop[] = {"EVAL", WSG_LUA_PRESENCE_DROP, "2", chp, chpc, "g}w#00000000000000a1"};
  rep = run(s, 6, drop);
  cr_assert(rep->type == REDIS_REPLY_INTEGER && rep->integer == 1, "dropped: %s",
            rep->type == REDIS_REPLY_ERROR ? rep->str : "");
  freeReplyObject(rep);
  const char *chdel[] = {"DEL", chm, chh, chg};
  rep = run(s, 4, chdel);
  cr_assert_eq(rep->type, REDIS_REPLY_INTEGER, "a multi-key DEL of one channel's keys: %s",
               rep->str);
  cr_assert_eq(rep->integer, 2, "the publication stored :m and :h");
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

/* --- the asynchronous face (wsg_redis_cluster) ------------------------------------------------ */

typedef struct {
  wsg_redis_conn_req req;
  int got, type;
  char str[64];
} async_answer;

static void on_async(void *arg, wsg_redis_conn_req *req, const redisReply *rep) {
  (void)arg;
  async_answer *a = (async_answer *)req;
  a->got++;
  a->type = rep != NULL ? rep->type : -1;
  if (rep != NULL && rep->str != NULL)
    snprintf(a->str, sizeof(a->str), "%s", rep->str);
}

static bool async_ready(void *arg) {
  return wsg_redis_cluster_ready(arg);
}

static bool async_answered(void *arg) {
  return ((async_answer *)arg)->got > 0;
}

static wsg_redis_cluster *async_client(struct ev_loop *loop, const char *user, const char *pw) {
  wsg_redis_cluster *c;
  char err[256];
  wsg_redis_cluster_options o = {.seeds = seeds()};
  o.conn = (wsg_redis_conn_options){
      .host = "unused", .port = 1, .timeout_ms = 2000, .user = user, .password = pw};
  cr_assert_eq(wsg_redis_cluster_create(&c, loop, &o, err, sizeof(err)), WSG_REDIS_CONN_OK, "%s",
               err);
  return c;
}

static bool map_reread(void *arg) {
  wsg_redis_cluster_stats st;
  wsg_redis_cluster_get_stats(arg, &st);
  return st.map_reads >= 2;
}

/* A new loop and a ready client on it, and a fresh key tag. */
static wsg_redis_cluster *async_ready_client(struct ev_loop **loop) {
  *loop = ev_loop_new(EVFLAG_AUTO);
  wsg_redis_cluster *c = async_client(*loop, NULL, NULL);
  cr_assert(itest_loop_until(*loop, async_ready, c, 5000), "the cluster never became ready");
  unique_tag();
  return c;
}

/* One command through the async face; waits for its answer. */
static async_answer async_run(struct ev_loop *loop, wsg_redis_cluster *c, int argc,
                              const char **argv) {
  async_answer a = {.req = {on_async}};
  cr_assert_eq(wsg_redis_cluster_command(c, &a.req, argc, argv, NULL), WSG_REDIS_CONN_OK);
  cr_assert(itest_loop_until(loop, async_answered, &a, 5000), "no answer to %s", argv[0]);
  return a;
}

Test(redis_cluster, async_follows_moved_and_rereads_the_map) {
  struct ev_loop *loop;
  wsg_redis_cluster *c = async_ready_client(&loop);
  moving m = slot_moved_away("amoved");
  const char *set[] = {"SET", m.key, "z"};
  async_answer a = async_run(loop, c, 3, set);
  cr_assert_eq(a.type, REDIS_REPLY_STATUS, "%s", a.str);
  wsg_redis_cluster_stats st;
  wsg_redis_cluster_get_stats(c, &st);
  cr_assert_eq(st.moved, 1);
  const char *get[] = {"GET", m.key};
  a = async_run(loop, c, 2, get);
  cr_assert_str_eq(a.str, "z");
  const char *del[] = {"DEL", m.key};
  async_run(loop, c, 2, del);
  /* The re-read goes to any node: its answer may come after the commands' own. */
  cr_assert(itest_loop_until(loop, map_reread, c, 5000), "a MOVED re-reads the map");
  assign_slot(m.p, m.n, m.slot, m.from);
  wsg_redis_cluster_destroy(c);
  ev_loop_destroy(loop);
}

/* An ACL user (Redis 6+): AUTH user password on every node, in both faces; a wrong password is
 * refused with a message naming the options. ACL users are per node: every node needs them (a
 * seed may be a replica after a failover). */
static void acl_all(const char *fmt, const char *user) {
  int ports[16];
  int n = all_ports(ports, 16);
  for (int i = 0; i < n; i++) {
    redisContext *c = node(ports[i]);
    redisReply *r = node_cmd(c, fmt, user);
    cr_assert_neq(r->type, REDIS_REPLY_ERROR, "%s", r->str);
    freeReplyObject(r);
    redisFree(c);
  }
}

Test(redis_cluster, acl_user_on_both_faces) {
  seeds();
  char user[48];
  snprintf(user, sizeof(user), "wsgtest-%d", getpid());
  acl_all("ACL SETUSER %s on >s3cret ~* &* +@all", user);
  char err[256];
  wsg_redis_sync *s;
  wsg_redis_sync_options o = {
      .seeds = seeds(), .user = user, .password = "s3cret", .timeout_ms = 2000};
  cr_assert_eq(wsg_redis_sync_create(&s, &o, err, sizeof(err)), 0, "%s", err);
  cr_assert_eq(wsg_redis_sync_connect(s, err, sizeof(err)), 0, "%s", err);
  const char *who[] = {"ACL", "WHOAMI"};
  redisReply *rep = run(s, 2, who);
  cr_assert_str_eq(rep->str, user);
  freeReplyObject(rep);
  wsg_redis_sync_destroy(s);
  o.password = "wrong";
  cr_assert_eq(wsg_redis_sync_create(&s, &o, err, sizeof(err)), 0, "%s", err);
  cr_assert_neq(wsg_redis_sync_connect(s, err, sizeof(err)), 0);
  cr_assert(strstr(err, "--redis-user") != NULL, "%s", err);
  wsg_redis_sync_destroy(s);

  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  wsg_redis_cluster *c = async_client(loop, user, "s3cret");
  cr_assert(itest_loop_until(loop, async_ready, c, 5000), "the ACL user never got ready");
  unique_tag();
  char key[64];
  snprintf(key, sizeof(key), "%s:acl", tag);
  const char *set[] = {"SET", key, "1"};
  cr_assert_eq(async_run(loop, c, 3, set).type, REDIS_REPLY_STATUS);
  wsg_redis_cluster_destroy(c);
  ev_loop_destroy(loop);
  acl_all("ACL DELUSER %s", user);
}

static void key_in_empty_slot(char *key, size_t len, const char *what, const primary *p, int n,
                              uint16_t *slot, int *from) {
  for (int i = 0; i < 1000; i++) {
    snprintf(key, len, "%s:%s%d", tag, what, i);
    *slot = wsg_redis_key_slot(key, strlen(key));
    *from = owner_of((primary *)p, n, *slot);
    redisContext *c = node(p[*from].port);
    redisReply *r = node_cmd(c, "CLUSTER COUNTKEYSINSLOT %d", *slot);
    bool empty = r->integer == 0;
    freeReplyObject(r);
    redisFree(c);
    if (empty)
      return;
  }
  cr_assert_fail("no empty slot found");
}

Test(redis_cluster, async_follows_ask_during_a_migration) {
  struct ev_loop *loop;
  wsg_redis_cluster *c = async_ready_client(&loop);
  migrating m;
  migration_start(&m, "aask");
  const char *set[] = {"SET", m.key, "w"};
  async_answer a = async_run(loop, c, 3, set);
  cr_assert_eq(a.type, REDIS_REPLY_STATUS, "%s", a.str);
  wsg_redis_cluster_stats st;
  wsg_redis_cluster_get_stats(c, &st);
  cr_assert_eq(st.ask, 1);
  cr_assert_eq(st.moved, 0);
  migration_undo(&m, "w");
  wsg_redis_cluster_destroy(c);
  ev_loop_destroy(loop);
}
