/*
 * The Lua scripts of common/wsg_redis_keys against a real redis-server: slot leases taken,
 * refused, renewed, expired and released only by their holder, compare-and-delete of connection
 * entries, and EVALSHA after SCRIPT LOAD (also after the script cache was flushed).
 */
#include <criterion/criterion.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "wsg_redis_keys.h"

typedef struct {
  redisContext *c;
  char prefix[128];
} fixture;

static fixture setup(void) {
  itest_require_redis();
  fixture f = {.c = itest_redis_connect()};
  /* A prefix per test: tests sharing the server never see each other's keys. */
  char *u = itest_unique("itest-lease");
  snprintf(f.prefix, sizeof(f.prefix), "%s:", u);
  free(u);
  return f;
}

/* EVAL of a one-key script; returns its integer reply, fails the test on any other reply. */
static long long eval1(redisContext *c, const char *script, const char *key, const char *a1,
                       const char *a2) {
  redisReply *r = a2 ? redisCommand(c, "EVAL %s 1 %s %s %s", script, key, a1, a2)
                     : redisCommand(c, "EVAL %s 1 %s %s", script, key, a1);
  cr_assert(r, "redis: %s", c->errstr);
  cr_assert_eq(r->type, REDIS_REPLY_INTEGER, "EVAL replied type %d: %s", r->type,
               r->type == REDIS_REPLY_ERROR ? r->str : "");
  long long v = r->integer;
  freeReplyObject(r);
  return v;
}

/* GET as a string in `buf` ("" when the key is missing). */
static const char *get(redisContext *c, const char *key, char *buf, size_t len) {
  redisReply *r = redisCommand(c, "GET %s", key);
  cr_assert(r, "redis: %s", c->errstr);
  buf[0] = '\0';
  if (r->type == REDIS_REPLY_STRING)
    snprintf(buf, len, "%s", r->str);
  else
    cr_assert_eq(r->type, REDIS_REPLY_NIL, "GET replied type %d", r->type);
  freeReplyObject(r);
  return buf;
}

static long long integer(redisContext *c, const char *cmd, const char *key) {
  redisReply *r = redisCommand(c, "%s %s", cmd, key);
  cr_assert(r && r->type == REDIS_REPLY_INTEGER, "%s %s failed", cmd, key);
  long long v = r->integer;
  freeReplyObject(r);
  return v;
}

Test(wsg_redis_keys, acquire_refuse_renew_release) {
  fixture f = setup();
  char key[WSG_REDIS_KEY_MAX], val[64];
  cr_assert_gt(wsg_key_slot(key, sizeof(key), f.prefix, 3), 0);

  /* A free slot is taken, with the lease as its TTL. */
  cr_expect_eq(eval1(f.c, WSG_LUA_LEASE_ACQUIRE, key, "gw-a", "10000"), 1);
  cr_expect_str_eq(get(f.c, key, val, sizeof(val)), "gw-a");
  long long pttl = integer(f.c, "PTTL", key);
  cr_expect(pttl > 0 && pttl <= 10000, "PTTL %lld", pttl);

  /* Another gateway is refused and changes nothing. */
  cr_expect_eq(eval1(f.c, WSG_LUA_LEASE_ACQUIRE, key, "gw-b", "60000"), 0);
  cr_expect_str_eq(get(f.c, key, val, sizeof(val)), "gw-a");
  cr_expect_leq(integer(f.c, "PTTL", key), 10000);

  /* Acquire by the holder extends. */
  cr_expect_eq(eval1(f.c, WSG_LUA_LEASE_ACQUIRE, key, "gw-a", "20000"), 1);
  cr_expect_gt(integer(f.c, "PTTL", key), 10000);

  /* Renew: the holder extends, anyone else is refused. */
  cr_expect_eq(eval1(f.c, WSG_LUA_LEASE_RENEW, key, "gw-a", "30000"), 1);
  cr_expect_gt(integer(f.c, "PTTL", key), 20000);
  cr_expect_eq(eval1(f.c, WSG_LUA_LEASE_RENEW, key, "gw-b", "60000"), 0);
  cr_expect_leq(integer(f.c, "PTTL", key), 30000);
  cr_expect_str_eq(get(f.c, key, val, sizeof(val)), "gw-a");

  /* Release: only by the holder. */
  cr_expect_eq(eval1(f.c, WSG_LUA_LEASE_RELEASE, key, "gw-b", NULL), 0);
  cr_expect_eq(integer(f.c, "EXISTS", key), 1);
  cr_expect_eq(eval1(f.c, WSG_LUA_LEASE_RELEASE, key, "gw-a", NULL), 1);
  cr_expect_eq(integer(f.c, "EXISTS", key), 0);
  cr_expect_eq(eval1(f.c, WSG_LUA_LEASE_RELEASE, key, "gw-a", NULL), 0);

  /* A released slot is free for the next gateway. */
  cr_expect_eq(eval1(f.c, WSG_LUA_LEASE_ACQUIRE, key, "gw-b", "10000"), 1);
  cr_expect_str_eq(get(f.c, key, val, sizeof(val)), "gw-b");
  redisFree(f.c);
}

typedef struct {
  redisContext *c;
  const char *key;
} key_ref;

static bool key_gone(void *arg) {
  key_ref *k = arg;
  return integer(k->c, "EXISTS", k->key) == 0;
}

Test(wsg_redis_keys, expiry_frees_the_slot_and_the_old_holder_cannot_renew) {
  fixture f = setup();
  char key[WSG_REDIS_KEY_MAX], val[64];
  cr_assert_gt(wsg_key_slot(key, sizeof(key), f.prefix, 7), 0);

  cr_expect_eq(eval1(f.c, WSG_LUA_LEASE_ACQUIRE, key, "gw-a", "200"), 1);
  key_ref k = {f.c, key};
  cr_assert(itest_wait_until(key_gone, &k, 10000), "a 200 ms lease still held after 10 s");

  /* The paused holder comes back: its renew must not resurrect the lease. */
  cr_expect_eq(eval1(f.c, WSG_LUA_LEASE_RENEW, key, "gw-a", "10000"), 0);
  cr_expect_eq(integer(f.c, "EXISTS", key), 0);

  cr_expect_eq(eval1(f.c, WSG_LUA_LEASE_ACQUIRE, key, "gw-b", "10000"), 1);
  cr_expect_str_eq(get(f.c, key, val, sizeof(val)), "gw-b");
  cr_expect_eq(eval1(f.c, WSG_LUA_LEASE_RENEW, key, "gw-a", "10000"), 0);
  redisFree(f.c);
}

static const char *hget(redisContext *c, const char *key, const char *field, char *buf,
                        size_t len) {
  redisReply *r = redisCommand(c, "HGET %s %s", key, field);
  cr_assert(r, "redis: %s", c->errstr);
  buf[0] = '\0';
  if (r->type == REDIS_REPLY_STRING)
    snprintf(buf, len, "%s", r->str);
  freeReplyObject(r);
  return buf;
}

Test(wsg_redis_keys, conn_delete_leaves_a_newer_mapping_alone) {
  fixture f = setup();
  char key[WSG_REDIS_KEY_MAX], c1[24], c2[24], val[64];
  cr_assert_gt(wsg_key_user(key, sizeof(key), f.prefix, "alice", 5), 0);
  cr_assert_gt(wsg_conn_id_format(c1, sizeof(c1), 1152921504606846977ull), 0);
  cr_assert_gt(wsg_conn_id_format(c2, sizeof(c2), 42), 0);

  redisReply *r = redisCommand(f.c, "HSET %s %s gw-a %s gw-a", key, c1, c2);
  cr_assert(r && r->type == REDIS_REPLY_INTEGER && r->integer == 2);
  freeReplyObject(r);

  /* Another gateway's close does not remove gw-a's entry. */
  cr_expect_eq(eval1(f.c, WSG_LUA_CONN_DELETE, key, c1, "gw-b"), 0);
  cr_expect_str_eq(hget(f.c, key, c1, val, sizeof(val)), "gw-a");

  /* The entry moved to gw-b meanwhile: gw-a's late delete leaves it. */
  r = redisCommand(f.c, "HSET %s %s gw-b", key, c1);
  freeReplyObject(r);
  cr_expect_eq(eval1(f.c, WSG_LUA_CONN_DELETE, key, c1, "gw-a"), 0);
  cr_expect_str_eq(hget(f.c, key, c1, val, sizeof(val)), "gw-b");

  /* The holder's delete removes exactly its field. */
  cr_expect_eq(eval1(f.c, WSG_LUA_CONN_DELETE, key, c1, "gw-b"), 1);
  cr_expect_str_eq(hget(f.c, key, c1, val, sizeof(val)), "");
  cr_expect_str_eq(hget(f.c, key, c2, val, sizeof(val)), "gw-a");
  cr_expect_eq(eval1(f.c, WSG_LUA_CONN_DELETE, key, c1, "gw-b"), 0);

  /* Deleting the last field removes the hash: no empty keys left behind. */
  cr_expect_eq(eval1(f.c, WSG_LUA_CONN_DELETE, key, c2, "gw-a"), 1);
  cr_expect_eq(integer(f.c, "EXISTS", key), 0);
  redisFree(f.c);
}

static void sha1_hex(const char *text, char out[41]) {
  unsigned char d[SHA_DIGEST_LENGTH];
  SHA1((const unsigned char *)text, strlen(text), d);
  for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
    snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/*
 * Clients run the scripts with EVALSHA and fall back to EVAL (or SCRIPT LOAD) on NOSCRIPT, e.g.
 * after Redis restarted. A private server, since SCRIPT FLUSH would disturb the shared one.
 */
Test(wsg_redis_keys, evalsha_after_script_load_and_noscript_after_flush) {
  itest_require_redis();
  itest_redis_server srv = {0};
  itest_redis_server_start(&srv, 0);
  redisContext *c = itest_redis_connect_port(srv.port);
  cr_assert(c, "cannot connect to the private redis on port %d", srv.port);

  const char *scripts[] = {WSG_LUA_LEASE_ACQUIRE, WSG_LUA_LEASE_RENEW, WSG_LUA_LEASE_RELEASE,
                           WSG_LUA_CONN_DELETE};
  char shas[4][41];
  for (int i = 0; i < 4; i++) {
    redisReply *r = redisCommand(c, "SCRIPT LOAD %s", scripts[i]);
    cr_assert(r && r->type == REDIS_REPLY_STRING, "SCRIPT LOAD of script %d failed", i);
    /* The SHA a client computes offline is the one Redis uses. */
    sha1_hex(scripts[i], shas[i]);
    cr_expect_str_eq(r->str, shas[i]);
    freeReplyObject(r);
  }
  redisReply *r = redisCommand(c, "EVALSHA %s 1 slot:1 gw-a 10000", shas[0]);
  cr_assert(r && r->type == REDIS_REPLY_INTEGER && r->integer == 1, "EVALSHA acquire failed");
  freeReplyObject(r);
  r = redisCommand(c, "EVALSHA %s 1 slot:1 gw-b 10000", shas[1]);
  cr_assert(r && r->type == REDIS_REPLY_INTEGER && r->integer == 0, "EVALSHA renew by gw-b");
  freeReplyObject(r);
  r = redisCommand(c, "EVALSHA %s 1 slot:1 gw-a", shas[2]);
  cr_assert(r && r->type == REDIS_REPLY_INTEGER && r->integer == 1, "EVALSHA release failed");
  freeReplyObject(r);

  /* A restarted Redis has no scripts: EVALSHA answers NOSCRIPT, which clients must handle. */
  redisFree(c);
  cr_assert_eq(itest_redis_server_stop(&srv, SIGKILL), 0);
  itest_redis_server_start(&srv, srv.port);
  c = itest_redis_connect_port(srv.port);
  cr_assert(c, "cannot reconnect to the restarted redis on port %d", srv.port);
  r = redisCommand(c, "EVALSHA %s 1 slot:1 gw-a 10000", shas[0]);
  cr_assert(r && r->type == REDIS_REPLY_ERROR, "EVALSHA after restart did not fail");
  cr_expect(strncmp(r->str, "NOSCRIPT", 8) == 0, "error: %s", r->str);
  freeReplyObject(r);
  redisFree(c);
  cr_expect_eq(itest_redis_server_stop(&srv, SIGTERM), 0);
}
