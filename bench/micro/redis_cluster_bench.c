/*
 * redis_cluster_bench: what the processor's Redis work costs on one node and on a Redis Cluster
 * (docs/BENCHMARKS.md, "Redis Cluster"), through wsg_redis_sync, the code the processor runs:
 *
 *   register:  HSET user:<u> <conn> <gw>      (the registration's write alone)
 *   route:     HGETALL user:<u>               (what a processor reads per user of a batch)
 *   append:    EVALSHA WSG_LUA_REPLAY_APPEND  (per resumable delivery)
 *
 * and what the daemons send per operation of the capacity model (docs/KUBERNETES.md):
 *
 *   connect:      EVAL WSG_LUA_CONN_ADD                 (a gateway's plain connect)
 *   connect+seq:  EVALSHA WSG_LUA_REPLAY_READ (position), EVAL WSG_LUA_CONN_ADD, EVALSHA
 *                 WSG_LUA_REPLAY_READ (catch-up)        (a fresh resumable connect)
 *   delivery+seq: EVALSHA WSG_LUA_REPLAY_APPEND, HGETALL user:<u>  (a processor's resumable
 *                 delivery: stored, then routed)
 *   renewal:      PEXPIRE user:<u>, EVAL WSG_LUA_SEQ_TOUCH (per live resumable connection every
 *                 GW_REG_USER_TOUCH_S)
 *
 * each pipelined in batches of 500 commands over 10,000 users. Prints operations per second of wall
 * time on this client and the servers' CPU per operation (INFO CPU of every primary, before and
 * after): the cost a deployment pays whatever the network.
 *
 * Usage: redis_cluster_bench node PORT | cluster HOST:PORT. Keys under "wsgate-cbench:", deleted
 * at the end.
 *
 * Threads: main only.
 */
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "wsg_redis_keys.h"
#include "wsg_redis_sync.h"

#define PREFIX "wsgate-cbench:"
#define USERS  10000
#define BATCH  500
#define ROUNDS 5

static wsg_redis_sync *rs;
static int ports[16], nports;
static char sha[48], read_sha[48];

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* CPU seconds of every primary so far (user + sys, INFO CPU). */
static double servers_cpu(void) {
  double total = 0;
  for (int i = 0; i < nports; i++) {
    redisContext *c = redisConnect("127.0.0.1", ports[i]);
    redisReply *r = c && !c->err ? redisCommand(c, "INFO cpu") : NULL;
    const char *p = r && r->type == REDIS_REPLY_STRING ? r->str : "";
    const char *a = strstr(p, "used_cpu_user:"), *b = strstr(p, "used_cpu_sys:");
    total += (a ? strtod(a + 14, NULL) : 0) + (b ? strtod(b + 13, NULL) : 0);
    freeReplyObject(r);
    redisFree(c);
  }
  return total;
}

static const char MESSAGE[] = "a message of some sixty bytes, like a line of chat text....";

enum { REGISTER, ROUTE, APPEND, DEL_USER, DEL_REPLAY, CONNECT, CONNECT_SEQ, DELIVERY_SEQ, RENEWAL };

/* Commands per operation of each kind (the compound ones run them in this order). */
static const int per_op[] = {1, 1, 1, 1, 1, 1, 3, 2, 2};

typedef struct {
  int kind;
  char key[WSG_REDIS_KEY_MAX], key2[WSG_REDIS_KEY_MAX];
  const char *argv[12];
  size_t lens[12];
} batch;

/* The command that step `step` of a compound operation sends: its argv, count and which
 * arguments are the user key (u), the stream (s) and the counter (q). */
static int compound(batch *b, int step, const char ***a, int *ukey, int *skey, int *qkey) {
  static const char *add[] = {"EVAL",          WSG_LUA_CONN_ADD, "1", "",
                              "1234567890123", "gw-bench-0001",  "0", "86400000"};
  static const char *pos[] = {"EVALSHA", read_sha, "2",      "",     "",        "",
                              "256",     "65536",  "300000", "1000", "86400000"};
  static const char *read[] = {"EVALSHA", read_sha, "2",      "",     "",        "0",
                               "256",     "65536",  "300000", "1000", "86400000"};
  static const char *app[] = {"EVALSHA", sha,      "2",        "",  "",
                              "100",     "300000", "86400000", "d", MESSAGE};
  static const char *route[] = {"HGETALL", ""};
  static const char *pexp[] = {"PEXPIRE", "", "86400000"};
  static const char *touch[] = {"EVAL", WSG_LUA_SEQ_TOUCH, "1", "", "86400000"};
  *ukey = *skey = *qkey = -1;
  switch (b->kind * 4 + step) {
  case CONNECT * 4:
  case CONNECT_SEQ * 4 + 1:
    *a = add, *ukey = 3;
    return 8;
  case CONNECT_SEQ * 4:
    *a = pos, *skey = 3, *qkey = 4;
    return 11;
  case CONNECT_SEQ * 4 + 2:
    *a = read, *skey = 3, *qkey = 4;
    return 11;
  case DELIVERY_SEQ * 4:
    *a = app, *skey = 3, *qkey = 4;
    return 10;
  case DELIVERY_SEQ * 4 + 1:
    *a = route, *ukey = 1;
    return 2;
  case RENEWAL * 4:
    *a = pexp, *ukey = 1;
    return 3;
  default: /* RENEWAL, step 1 */
    *a = touch, *qkey = 3;
    return 5;
  }
}

static bool build(void *ctx, size_t i, int *argc, const char ***argv, const size_t **lens) {
  batch *b = ctx;
  char name[32];
  int per = per_op[b->kind];
  int n = snprintf(name, sizeof(name), "u%05d", (int)(i / (size_t)per % USERS));
  if (b->kind >= CONNECT) {
    static char ukey[WSG_REDIS_KEY_MAX], skey[WSG_REDIS_KEY_MAX], qkey[WSG_REDIS_KEY_MAX];
    const char **a;
    int ui, si, qi;
    *argc = compound(b, (int)(i % (size_t)per), &a, &ui, &si, &qi);
    for (int k = 0; k < *argc; k++) {
      b->argv[k] = a[k];
      b->lens[k] = strlen(a[k]);
    }
    if (ui >= 0)
      b->argv[ui] = ukey,
      b->lens[ui] = (size_t)wsg_key_user(ukey, sizeof ukey, PREFIX, name, (size_t)n);
    if (si >= 0)
      b->argv[si] = skey,
      b->lens[si] = (size_t)wsg_key_replay(skey, sizeof skey, PREFIX, name, (size_t)n);
    if (qi >= 0)
      b->argv[qi] = qkey,
      b->lens[qi] = (size_t)wsg_key_replay_seq(qkey, sizeof qkey, PREFIX, name, (size_t)n);
    *argv = b->argv;
    *lens = b->lens;
    return true;
  }
  int ulen = wsg_key_user(b->key, sizeof(b->key), PREFIX, name, (size_t)n);
  int slen = wsg_key_replay(b->key, sizeof(b->key), PREFIX, name, (size_t)n);
  int qlen = wsg_key_replay_seq(b->key2, sizeof(b->key2), PREFIX, name, (size_t)n);
  if (b->kind == REGISTER || b->kind == ROUTE || b->kind == DEL_USER)
    wsg_key_user(b->key, sizeof(b->key), PREFIX, name, (size_t)n);
  const char *reg[] = {"HSET", b->key, "1234567890123", "gw-bench-0001"};
  const char *route[] = {"HGETALL", b->key};
  const char *del_user[] = {"DEL", b->key};
  const char *append[] = {"EVALSHA", sha,      "2",        b->key, b->key2,
                          "100",     "300000", "86400000", "d",    MESSAGE};
  const char *del_replay[] = {"DEL", b->key, b->key2}; /* one hash tag: one slot */
  const char *const *a = b->kind == REGISTER   ? reg
                         : b->kind == ROUTE    ? route
                         : b->kind == APPEND   ? append
                         : b->kind == DEL_USER ? del_user
                                               : del_replay;
  *argc = b->kind == REGISTER ? 4 : b->kind == APPEND ? 10 : b->kind == DEL_REPLAY ? 3 : 2;
  for (int k = 0; k < *argc; k++) {
    b->argv[k] = a[k];
    b->lens[k] = strlen(a[k]);
  }
  bool user_key = b->kind == REGISTER || b->kind == ROUTE || b->kind == DEL_USER;
  b->lens[b->kind == APPEND ? 3 : 1] = (size_t)(user_key ? ulen : slen);
  if (b->kind == APPEND)
    b->lens[4] = (size_t)qlen;
  else if (b->kind == DEL_REPLAY)
    b->lens[2] = (size_t)qlen;
  *argv = b->argv;
  *lens = b->lens;
  return true;
}

/* ops operations of `kind` (per_op[kind] commands each), BATCH commands a pipeline. */
static void run(const char *name, int kind, int ops) {
  static batch b;
  static redisReply *reps[BATCH];
  char err[256];
  b.kind = kind;
  int cmds = ops * per_op[kind];
  double cpu0 = servers_cpu();
  uint64_t t0 = now_ns();
  for (int from = 0; from < cmds; from += BATCH) {
    if (wsg_redis_sync_pipeline(rs, (size_t)from, (size_t)from + BATCH, build, &b, name, reps, err,
                                sizeof(err)) != 0) {
      fprintf(stderr, "redis_cluster_bench: %s\n", err);
      exit(1);
    }
    for (int i = 0; i < BATCH; i++) {
      if (reps[i]->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "redis_cluster_bench: %s: %s\n", name, reps[i]->str);
        exit(1);
      }
      freeReplyObject(reps[i]);
    }
  }
  double wall = (double)(now_ns() - t0) / 1e9, cpu = servers_cpu() - cpu0;
  printf("%-12s %8d ops  %9.0f ops/s  server CPU %6.2f us/op\n", name, ops, ops / wall,
         cpu / ops * 1e6);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: redis_cluster_bench node PORT | cluster HOST:PORT\n");
    return 2;
  }
  bool cluster = strcmp(argv[1], "cluster") == 0;
  wsg_redis_sync_options o = {.host = "127.0.0.1",
                              .port = cluster ? 0 : atoi(argv[2]),
                              .seeds = cluster ? argv[2] : NULL,
                              .timeout_ms = 5000};
  char err[256];
  if (wsg_redis_sync_create(&rs, &o, err, sizeof(err)) != 0 ||
      wsg_redis_sync_connect(rs, err, sizeof(err)) != 0 ||
      wsg_redis_sync_script_load(rs, WSG_LUA_REPLAY_APPEND, sha, sizeof(sha), err, sizeof(err)) !=
          0 ||
      wsg_redis_sync_script_load(rs, WSG_LUA_REPLAY_READ, read_sha, sizeof(read_sha), err,
                                 sizeof(err)) != 0) {
    fprintf(stderr, "redis_cluster_bench: %s\n", err);
    return 1;
  }
  /* The primaries whose CPU is counted. */
  if (cluster) {
    redisContext *c = redisConnect("127.0.0.1", atoi(strrchr(argv[2], ':') + 1));
    redisReply *r = redisCommand(c, "CLUSTER SLOTS");
    for (size_t i = 0; r && i < r->elements && nports < 16; i++) {
      int port = (int)r->element[i]->element[2]->element[1]->integer, k = 0;
      while (k < nports && ports[k] != port) /* a primary may serve several ranges */
        k++;
      if (k == nports)
        ports[nports++] = port;
    }
    freeReplyObject(r);
    redisFree(c);
  } else {
    ports[nports++] = o.port;
  }
  printf("%s (%d primaries), batches of %d over %d users\n", argv[2], nports, BATCH, USERS);
  run("register", REGISTER, USERS * ROUNDS);
  run("route", ROUTE, USERS * ROUNDS);
  run("append", APPEND, USERS * ROUNDS);
  run("connect", CONNECT, USERS * ROUNDS);
  run("connect+seq", CONNECT_SEQ, USERS * ROUNDS);
  run("delivery+seq", DELIVERY_SEQ, USERS * ROUNDS);
  run("renewal", RENEWAL, USERS * ROUNDS);
  run("cleanup", DEL_USER, USERS);
  run("cleanup", DEL_REPLAY, USERS);
  wsg_redis_sync_destroy(rs);
  return 0;
}
