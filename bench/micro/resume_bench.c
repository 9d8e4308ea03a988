/*
 * resume_bench: what resumable delivery costs Redis (docs/BENCHMARKS.md, "Resume").
 *
 *   per message:   WSG_LUA_REPLAY_APPEND, as processors run it (EVALSHA, pipelined in batches of
 *                  500 over 1,000 users), and alone (one round trip each); memory per stored entry
 *   per reconnect: WSG_LUA_REPLAY_READ, as gateways run it: a fresh client's position, and the
 *                  catch-up of 10, 100 and 1,000 missed messages in pages (256 entries, 64 KiB)
 *
 * Wall time per operation on this client, and the server's own CPU time per operation (INFO
 * CPU before and after), which is what a Redis deployment pays whatever the network.
 *
 * Usage: resume_bench [port] (default 16379: scripts/redis start). Keys under "wsgate-bench:",
 * deleted at the end.
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

#define PREFIX  "wsgate-bench:"
#define USERS   1000
#define BATCH   500
#define APPENDS 100000
#define SINGLES 2000
#define PAGE_N  256
#define PAGE_B  (64 * 1024)
#define REPEATS 50
#define SEQ_TTL "86400000"
#define TTL     "300000"
#define WINDOW  "1000"

static redisContext *rc;
static char sha[48], read_sha[48];

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static redisReply *cmd(int argc, const char **argv, const size_t *lens) {
  redisReply *r = redisCommandArgv(rc, argc, argv, lens);
  if (!r) {
    fprintf(stderr, "resume_bench: redis: %s\n", rc->errstr);
    exit(1);
  }
  if (r->type == REDIS_REPLY_ERROR) {
    fprintf(stderr, "resume_bench: redis error: %s\n", r->str);
    exit(1);
  }
  return r;
}

/* The server's CPU seconds so far (user + sys), from INFO CPU. */
static double server_cpu(void) {
  redisReply *r = redisCommand(rc, "INFO cpu");
  double u = 0, s = 0;
  const char *p = r && r->type == REDIS_REPLY_STRING ? r->str : "";
  const char *a = strstr(p, "used_cpu_user:"), *b = strstr(p, "used_cpu_sys:");
  if (a)
    u = strtod(a + strlen("used_cpu_user:"), NULL);
  if (b)
    s = strtod(b + strlen("used_cpu_sys:"), NULL);
  freeReplyObject(r);
  return u + s;
}

static void keys_of(int user, char *skey, size_t *slen, char *qkey, size_t *qlen) {
  char name[32];
  int n = snprintf(name, sizeof(name), "user%04d", user);
  *slen = (size_t)wsg_key_replay(skey, WSG_REDIS_KEY_MAX, PREFIX, name, (size_t)n);
  *qlen = (size_t)wsg_key_replay_seq(qkey, WSG_REDIS_KEY_MAX, PREFIX, name, (size_t)n);
}

static void append_cmd(int user, const char *payload, size_t plen) {
  char skey[WSG_REDIS_KEY_MAX], qkey[WSG_REDIS_KEY_MAX];
  size_t sl, ql;
  keys_of(user, skey, &sl, qkey, &ql);
  const char *argv[] = {"EVALSHA", sha, "2", skey, qkey, WINDOW, TTL, SEQ_TTL, "d", payload};
  size_t lens[] = {7,           strlen(sha),     1, sl,  ql, strlen(WINDOW),
                   strlen(TTL), strlen(SEQ_TTL), 1, plen};
  redisAppendCommandArgv(rc, 10, argv, lens);
}

static void get_reply(void) {
  void *r = NULL;
  if (redisGetReply(rc, &r) != REDIS_OK || !r) {
    fprintf(stderr, "resume_bench: redis: %s\n", rc->errstr);
    exit(1);
  }
  if (((redisReply *)r)->type == REDIS_REPLY_ERROR) {
    fprintf(stderr, "resume_bench: redis error: %s\n", ((redisReply *)r)->str);
    exit(1);
  }
  freeReplyObject(r);
}

static void delete_keys(void) {
  for (int u = 0; u < USERS; u++) {
    char skey[WSG_REDIS_KEY_MAX], qkey[WSG_REDIS_KEY_MAX];
    size_t sl, ql;
    keys_of(u, skey, &sl, qkey, &ql);
    const char *argv[] = {"DEL", skey, qkey};
    size_t lens[] = {3, sl, ql};
    redisAppendCommandArgv(rc, 3, argv, lens);
  }
  for (int u = 0; u < USERS; u++)
    get_reply();
}

/* Deletes every user's keys, then starts each user's sequence as a gateway does when a resumable
 * connection registers: the append stores nothing for a user without a counter. */
static void reset_sequences(void) {
  delete_keys();
  for (int u = 0; u < USERS; u++) {
    char skey[WSG_REDIS_KEY_MAX], qkey[WSG_REDIS_KEY_MAX];
    size_t sl, ql;
    keys_of(u, skey, &sl, qkey, &ql);
    const char *argv[] = {"SET", qkey, "1", "PX", SEQ_TTL};
    size_t lens[] = {3, ql, 1, 2, strlen(SEQ_TTL)};
    redisAppendCommandArgv(rc, 5, argv, lens);
  }
  for (int u = 0; u < USERS; u++)
    get_reply();
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static double median_us(uint64_t *v, size_t n) {
  qsort(v, n, sizeof(*v), cmp_u64);
  return (double)v[n / 2] / 1000.0;
}

static void bench_append(size_t plen) {
  char *payload = malloc(plen);
  memset(payload, 'x', plen);
  reset_sequences();
  double cpu0 = server_cpu();
  uint64_t t0 = now_ns();
  for (int done = 0; done < APPENDS; done += BATCH) {
    for (int i = 0; i < BATCH; i++)
      append_cmd((done + i) % USERS, payload, plen);
    for (int i = 0; i < BATCH; i++)
      get_reply();
  }
  uint64_t t1 = now_ns();
  double cpu1 = server_cpu();
  printf("| append, pipelined %d, %zu B | %.2f | %.2f |\n", BATCH, plen,
         (double)(t1 - t0) / 1000.0 / APPENDS, (cpu1 - cpu0) * 1e6 / APPENDS);

  uint64_t *lat = malloc(sizeof(uint64_t) * SINGLES);
  cpu0 = server_cpu();
  for (int i = 0; i < SINGLES; i++) {
    uint64_t a = now_ns();
    append_cmd(i % USERS, payload, plen);
    get_reply();
    lat[i] = now_ns() - a;
  }
  cpu1 = server_cpu();
  printf("| append, one round trip, %zu B (median) | %.2f | %.2f |\n", plen,
         median_us(lat, SINGLES), (cpu1 - cpu0) * 1e6 / SINGLES);
  free(lat);

  /* Memory: one user's stream after 1,000 entries (MAXLEN ~1000 keeps about that many). */
  reset_sequences();
  for (int i = 0; i < 1000; i++)
    append_cmd(0, payload, plen);
  for (int i = 0; i < 1000; i++)
    get_reply();
  char skey[WSG_REDIS_KEY_MAX], qkey[WSG_REDIS_KEY_MAX];
  size_t sl, ql;
  keys_of(0, skey, &sl, qkey, &ql);
  redisReply *len = redisCommand(rc, "XLEN %b", skey, sl);
  redisReply *ms = redisCommand(rc, "MEMORY USAGE %b SAMPLES 0", skey, sl);
  redisReply *mq = redisCommand(rc, "MEMORY USAGE %b", qkey, ql);
  printf("| memory, %zu B payloads | stream of %lld entries: %lld B (%.0f B/entry) | counter: %lld "
         "B |\n",
         plen, len->integer, ms->integer, (double)ms->integer / (double)len->integer, mq->integer);
  freeReplyObject(len);
  freeReplyObject(ms);
  freeReplyObject(mq);
  free(payload);
}

/* One gateway read: position (after NULL) or a page after `after`; returns the reply. */
static redisReply *read_cmd(int user, const char *after) {
  char skey[WSG_REDIS_KEY_MAX], qkey[WSG_REDIS_KEY_MAX], n[16], b[16];
  size_t sl, ql;
  keys_of(user, skey, &sl, qkey, &ql);
  snprintf(n, sizeof(n), "%d", PAGE_N);
  snprintf(b, sizeof(b), "%d", PAGE_B);
  const char *argv[] = {"EVALSHA", read_sha, "2",      skey,   qkey,   after ? after : "",
                        n,         b,        "300000", "1000", SEQ_TTL};
  size_t lens[11];
  for (int i = 0; i < 11; i++)
    lens[i] = strlen(argv[i]);
  lens[3] = sl;
  lens[4] = ql;
  return cmd(11, argv, lens);
}

/* A reconnect that missed `missed` messages of `plen` bytes: pages until the stream's end. */
static void bench_catch_up(int missed, size_t plen) {
  char *payload = malloc(plen);
  memset(payload, 'x', plen);
  uint64_t lat[REPEATS];
  unsigned pages = 0;
  double cpu = 0;
  for (int r = 0; r < REPEATS; r++) {
    int user = 1 + r;
    redisReply *pos = read_cmd(user, NULL);
    long long start = pos->element[0]->integer;
    freeReplyObject(pos);
    for (int i = 0; i < missed; i++)
      append_cmd(user, payload, plen);
    for (int i = 0; i < missed; i++)
      get_reply();
    double c0 = server_cpu();
    uint64_t t0 = now_ns();
    long long after = start;
    unsigned p = 0;
    for (;;) {
      char a[24];
      snprintf(a, sizeof(a), "%lld", after);
      redisReply *page = read_cmd(user, a);
      p++;
      size_t n = (page->elements - 2) / 3;
      if (n)
        after = page->element[2 + 3 * (n - 1)]->integer;
      int more = (int)page->element[1]->integer;
      freeReplyObject(page);
      if (!more)
        break;
    }
    lat[r] = now_ns() - t0;
    cpu += server_cpu() - c0;
    pages = p;
    if (after != start + missed) {
      fprintf(stderr, "resume_bench: catch-up ended at %lld, expected %lld\n", after,
              start + missed);
      exit(1);
    }
  }
  printf("| catch-up of %d missed, %zu B | %.1f | %.1f | %u |\n", missed, plen,
         median_us(lat, REPEATS), cpu * 1e6 / REPEATS, pages);
  free(payload);
}

int main(int argc, char **argv) {
  int port = argc > 1 ? atoi(argv[1]) : 16379;
  rc = redisConnect("127.0.0.1", port);
  if (!rc || rc->err) {
    fprintf(stderr, "resume_bench: cannot connect to Redis on 127.0.0.1:%d (scripts/redis start)\n",
            port);
    return 1;
  }
  const char *load[] = {"SCRIPT", "LOAD", WSG_LUA_REPLAY_APPEND};
  redisReply *r = cmd(3, load, NULL);
  snprintf(sha, sizeof(sha), "%s", r->str);
  freeReplyObject(r);
  const char *load_read[] = {"SCRIPT", "LOAD", WSG_LUA_REPLAY_READ};
  r = cmd(3, load_read, NULL);
  snprintf(read_sha, sizeof(read_sha), "%s", r->str);
  freeReplyObject(r);

  printf("| per message | client wall µs | Redis CPU µs |\n|---|---:|---:|\n");
  bench_append(100);
  bench_append(1024);

  delete_keys();
  uint64_t lat[1000];
  double c0 = server_cpu();
  for (int i = 0; i < 1000; i++) {
    uint64_t t0 = now_ns();
    freeReplyObject(read_cmd(i % USERS, NULL));
    lat[i] = now_ns() - t0;
  }
  double c1 = server_cpu();
  printf("\n| per reconnect | client wall µs (median) | Redis CPU µs | round trips |\n"
         "|---|---:|---:|---:|\n");
  printf("| position of a fresh connection | %.1f | %.1f | 1 |\n", median_us(lat, 1000),
         (c1 - c0) * 1e6 / 1000);
  /* For scale: the registration every connection already costs (one HSET). */
  c0 = server_cpu();
  for (int i = 0; i < 1000; i++) {
    uint64_t t0 = now_ns();
    redisReply *h = redisCommand(rc, "HSET " PREFIX "user:bench %d gw-bench", i);
    freeReplyObject(h);
    lat[i] = now_ns() - t0;
  }
  c1 = server_cpu();
  freeReplyObject(redisCommand(rc, "DEL " PREFIX "user:bench"));
  printf("| (reference: the registration HSET every connection costs) | %.1f | %.1f | 1 |\n",
         median_us(lat, 1000), (c1 - c0) * 1e6 / 1000);
  delete_keys();
  bench_catch_up(10, 100);
  bench_catch_up(100, 100);
  bench_catch_up(1000, 100);
  bench_catch_up(100, 1024);
  delete_keys();
  redisFree(rc);
  return 0;
}
