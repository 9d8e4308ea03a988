/*
 * Storage amplification (issue 16 item 7, docs/RELIABILITY.md "Hostile input"): a user who sends
 * to made-up user ids must not make Redis keep anything for them. Before the fix every direct
 * message to an id that never connected stored a sequence counter (24 h) and a replay stream
 * (5 min) for it, until Redis (`noeviction`) refused writes.
 *
 * The shared test Redis serves every helper at once, so memory is measured over this test's own
 * key prefix (SCAN MATCH and MEMORY USAGE: inspection only, no daemon scans); INFO's used_memory
 * is printed beside it for the record.
 */
#include <criterion/criterion.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"
#include "harness_daemons.h"
#include "wsg_redis_keys.h"

#define RECV_MS 30000
#define GHOSTS  10000
#define WINDOW  500 /* messages in flight: the offline answers stay well below --sendq-hard */

typedef struct {
  long long keys;
  long long bytes;
} usage;

/* Keys under `prefix` and the sum of their MEMORY USAGE. */
static usage prefix_usage(redisContext *rc, const char *prefix) {
  usage u = {0, 0};
  char cursor[32] = "0";
  do {
    redisReply *r = redisCommand(rc, "SCAN %s MATCH %s* COUNT 1000", cursor, prefix);
    cr_assert(r && r->type == REDIS_REPLY_ARRAY && r->elements == 2, "SCAN failed");
    snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
    redisReply *keys = r->element[1];
    for (size_t i = 0; i < keys->elements; i++) {
      redisReply *m = redisCommand(rc, "MEMORY USAGE %b SAMPLES 0", keys->element[i]->str,
                                   (size_t)keys->element[i]->len);
      cr_assert(m && m->type == REDIS_REPLY_INTEGER, "MEMORY USAGE failed");
      u.keys++;
      u.bytes += m->integer;
      freeReplyObject(m);
    }
    freeReplyObject(r);
  } while (strcmp(cursor, "0") != 0);
  return u;
}

static long long used_memory(redisContext *rc) {
  redisReply *r = redisCommand(rc, "INFO memory");
  cr_assert(r && r->type == REDIS_REPLY_STRING, "INFO memory failed");
  const char *p = strstr(r->str, "used_memory:");
  long long v = p ? atoll(p + strlen("used_memory:")) : -1;
  freeReplyObject(r);
  return v;
}

static void send_dm(ws_client *c, const char *to) {
  char cmd[128];
  int n = snprintf(cmd, sizeof cmd, "{\"op\":\"dm\",\"to\":\"%s\",\"text\":\"boo\"}", to);
  cr_assert_eq(ws_client_send_text(c, cmd, (size_t)n), WS_CLIENT_OK);
}

static void expect_offline(ws_client *c, int i) {
  ws_message m;
  itest_recv(c, &m, RECV_MS);
  cr_assert(m.opcode == WS_OP_TEXT && strstr((const char *)m.data, "\"offline\""),
            "dm %d: expected the offline answer, got %.*s", i, (int)m.len, (const char *)m.data);
}

Test(hostile_storage, sends_to_made_up_users_store_nothing, .timeout = 300, .fini = itest_fini) {
  itest_cluster cl;
  itest_cluster_init(&cl, 4, 4, false);
  itest_gateway g;
  const char *const gw_flags[] = {"--rate-msgs", "0", "--rate-bytes", "0", NULL};
  itest_daemon_opts go = {.extra = gw_flags};
  itest_gateway_start(&g, &cl, "gw-storage", &go);
  itest_processor p;
  /* The offline answer paces the flood (a window of dms in flight): ask the handler for it. */
  const char *pextra[] = {"--handler-arg", "dm_offline=tell", NULL};
  itest_processor_start(&p, &cl, "chat-storage", "chat", &(itest_daemon_opts){.extra = pextra});
  redisContext *rc = itest_redis_connect();
  ws_client *c = itest_connect(&g, "mallory");

  /* Warm up: mallory's own keys (her connection, her chat format) exist before the count. */
  send_dm(c, "ghost-warm");
  expect_offline(c, -1);
  usage before = prefix_usage(rc, cl.prefix);
  long long mem_before = used_memory(rc);

  uint64_t t0 = itest_now_ms();
  char to[32];
  for (int sent = 0; sent < GHOSTS; sent += WINDOW) {
    for (int i = sent; i < sent + WINDOW; i++) {
      snprintf(to, sizeof to, "ghost-%05d", i);
      send_dm(c, to);
    }
    for (int i = sent; i < sent + WINDOW; i++)
      expect_offline(c, i);
  }
  uint64_t took = itest_now_ms() - t0;

  usage after = prefix_usage(rc, cl.prefix);
  long long mem_after = used_memory(rc);
  double unsequenced = itest_metric(p.http_port, "wsgate_processor_resume_unsequenced_total");
  cr_log_info("%d dms to made-up ids in %llu ms: keys under the prefix %lld -> %lld, their bytes "
              "%lld -> %lld; Redis used_memory %lld -> %lld (shared server); unsequenced %.0f",
              GHOSTS, (unsigned long long)took, before.keys, after.keys, before.bytes, after.bytes,
              mem_before, mem_after, unsequenced);
  char qkey[WSG_REDIS_KEY_MAX];
  wsg_key_replay_seq(qkey, sizeof qkey, cl.prefix, "ghost-00042", strlen("ghost-00042"));
  redisReply *r = redisCommand(rc, "EXISTS %s", qkey);
  cr_assert(r && r->type == REDIS_REPLY_INTEGER && r->integer == 0,
            "a sequence counter was created for a user who never connected");
  freeReplyObject(r);
  cr_assert_eq(after.keys, before.keys, "the flood left %lld keys behind",
               after.keys - before.keys);
  cr_assert_leq(after.bytes, before.bytes + 1024, "the flood grew the prefix's keys by %lld bytes",
                after.bytes - before.bytes);
  cr_assert_geq(unsequenced, GHOSTS, "only %.0f deliveries counted as unsequenced", unsequenced);

  ws_client_destroy(c);
  redisFree(rc);
  int status = itest_processor_stop(&p, SIGTERM, 30000);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the processor did not stop cleanly");
  itest_processor_cleanup(&p);
  itest_gateway_cleanup(&g);
}

static bool key_exists(redisContext *rc, const char *key) {
  redisReply *r = redisCommand(rc, "EXISTS %s", key);
  bool yes = r && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
  freeReplyObject(r);
  return yes;
}

typedef struct {
  redisContext *rc;
  const char *key;
} exists_arg;

static bool exists_now(void *arg) {
  exists_arg *a = arg;
  return key_exists(a->rc, a->key);
}

/* Since only a registration creates a sequence, a live resumable connection must keep its own:
 * its gateway renews the counter with the user's key, and recreates it when Redis lost it (here:
 * the counter and the gateway's slot lease deleted, as a Redis restarted empty would). */
Test(hostile_storage, a_live_resumable_connection_keeps_its_sequence, .timeout = 120,
     .fini = itest_fini) {
  itest_gateway g;
  const char *flags[] = {"--ping-interval", "1s", "--lease-ttl", "3s", "--lease-renew", "1s", NULL};
  itest_gateway_start(&g, NULL, "gw-seqkeep", &(itest_daemon_opts){.extra = flags});
  redisContext *rc = itest_redis_connect();
  char auth[2100];
  snprintf(auth, sizeof auth, "Authorization: Bearer %s", itest_token("keeper", 600));
  const char *headers[] = {auth, NULL};
  ws_client *c = NULL;
  ws_http_response resp;
  cr_assert_eq(itest_connect_raw(&g, "/", headers, "wsgate.v1+seq", &c, &resp), WS_CLIENT_OK);
  char qkey[WSG_REDIS_KEY_MAX], slot[WSG_REDIS_KEY_MAX + 32];
  wsg_key_replay_seq(qkey, sizeof qkey, g.cluster.prefix, "keeper", strlen("keeper"));
  exists_arg a = {rc, qkey};
  cr_assert(itest_wait_until(exists_now, &a, ITEST_TIMEOUT_MS), "no counter after the upgrade");
  snprintf(slot, sizeof slot, "%sslot:%d", g.cluster.prefix, (int)g.slot);
  freeReplyObject(redisCommand(rc, "DEL %s %s", qkey, slot));
  uint64_t t0 = itest_now_ms();
  cr_assert(itest_wait_until(exists_now, &a, ITEST_TIMEOUT_MS),
            "the live resumable connection's counter was not recreated");
  cr_log_info("counter recreated %llu ms after Redis lost it",
              (unsigned long long)(itest_now_ms() - t0));
  ws_client_destroy(c);
  redisFree(rc);
  itest_gateway_cleanup(&g);
}
