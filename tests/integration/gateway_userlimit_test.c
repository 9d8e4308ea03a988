/*
 * Connections per user across gateways (issue 16 item 5, docs/RELIABILITY.md "Hostile input"):
 * one account must not hold thousands of sockets. --max-conns-per-user is counted in Redis (the
 * user's entry hash), so it holds across gateways; one more connection is closed with 4004 once
 * upgraded; a closed connection frees its place; entries left by a gateway whose lease is gone
 * do not count (they are pruned at the refusal).
 */
#include <criterion/criterion.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "harness_daemons.h"

static itest_gateway ga, gb;

static void teardown(void) {
  itest_gateway_cleanup(&ga);
  itest_gateway_cleanup(&gb);
  itest_fini();
}

TestSuite(gateway_userlimit, .fini = teardown, .timeout = 180);

typedef struct {
  redisContext *rc;
  const char *prefix, *user;
  long long want;
} hlen_arg;

static long long hlen(redisContext *rc, const char *prefix, const char *user) {
  redisReply *r = redisCommand(rc, "HLEN %suser:%s", prefix, user);
  cr_assert(r && r->type == REDIS_REPLY_INTEGER, "HLEN failed");
  long long n = r->integer;
  freeReplyObject(r);
  return n;
}

static bool hlen_is(void *arg) {
  hlen_arg *a = arg;
  return hlen(a->rc, a->prefix, a->user) == a->want;
}

static void wait_entries(redisContext *rc, const char *prefix, const char *user, long long n) {
  hlen_arg a = {rc, prefix, user, n};
  cr_assert(itest_wait_until(hlen_is, &a, ITEST_TIMEOUT_MS), "%s has %lld entries, expected %lld",
            user, hlen(rc, prefix, user), n);
}

/* The connection is upgraded, then closed with 4004 once Redis refused its registration. */
static void expect_4004(const itest_gateway *g, const char *user) {
  ws_client *c = itest_connect(g, user);
  ws_message m;
  int rc;
  while ((rc = ws_client_recv(c, &m, ITEST_TIMEOUT_MS)) == WS_CLIENT_OK && m.opcode != WS_OP_CLOSE)
    ;
  cr_assert_eq(rc, WS_CLIENT_OK, "no close frame: %s", ws_client_strerror(rc));
  cr_assert_eq(m.close_code, 4004, "closed with %u \"%s\"", m.close_code, m.close_reason);
  ws_client_destroy(c);
}

Test(gateway_userlimit, the_limit_holds_across_gateways_and_frees_on_close) {
  itest_cluster cl;
  itest_cluster_init(&cl, 4, 4, false);
  const char *extra[] = {"--max-conns-per-user", "3", NULL};
  itest_daemon_opts o = {.extra = extra};
  itest_gateway_start(&ga, &cl, "ulim-a", &o);
  itest_gateway_start(&gb, &cl, "ulim-b", &o);
  redisContext *rc = itest_redis_connect();

  ws_client *c[3];
  c[0] = itest_connect(&ga, "hog");
  c[1] = itest_connect(&ga, "hog");
  c[2] = itest_connect(&gb, "hog");
  wait_entries(rc, cl.prefix, "hog", 3);
  expect_4004(&ga, "hog");
  expect_4004(&gb, "hog");
  cr_assert_eq(itest_metric(ga.http_port, "wsgate_gateway_user_limit_refusals_total") +
                   itest_metric(gb.http_port, "wsgate_gateway_user_limit_refusals_total"),
               2);
  cr_assert_eq(hlen(rc, cl.prefix, "hog"), 3, "a refused connection left an entry");
  ws_client *other = itest_connect(&ga, "someone-else");
  wait_entries(rc, cl.prefix, "someone-else", 1);

  /* One closes: its place is free again, on either gateway. */
  ws_client_destroy(c[2]);
  wait_entries(rc, cl.prefix, "hog", 2);
  c[2] = itest_connect(&ga, "hog");
  wait_entries(rc, cl.prefix, "hog", 3);
  ws_message m;
  cr_assert_eq(ws_client_recv(c[2], &m, 500), WS_CLIENT_TIMEOUT, "the freed place was refused");

  for (int i = 0; i < 3; i++)
    ws_client_destroy(c[i]);
  ws_client_destroy(other);
  redisFree(rc);
}

Test(gateway_userlimit, entries_of_a_dead_gateway_do_not_count) {
  itest_cluster cl;
  itest_cluster_init(&cl, 4, 4, false);
  const char *extra[] = {"--max-conns-per-user", "3", NULL};
  itest_gateway_start(&ga, &cl, "ulim-dead", &(itest_daemon_opts){.extra = extra});
  redisContext *rc = itest_redis_connect();
  /* A gateway killed with three of the user's connections: entries, no gw: record. */
  for (uint64_t i = 1; i <= 3; i++)
    itest_fake_conn(rc, cl.prefix, "survivor", i, "gw-killed");
  ws_client *c = itest_connect(&ga, "survivor");
  wait_entries(rc, cl.prefix, "survivor", 1);
  ws_message m;
  cr_assert_eq(ws_client_recv(c, &m, 500), WS_CLIENT_TIMEOUT,
               "refused for a dead gateway's entries");
  cr_assert_eq(itest_metric(ga.http_port, "wsgate_gateway_user_entries_pruned_total"), 1);
  cr_assert_eq(itest_metric(ga.http_port, "wsgate_gateway_user_limit_refusals_total"), 0);
  ws_client_destroy(c);
  redisFree(rc);
}

static bool rx_reached(void *arg) {
  return itest_metric(ga.http_port, "wsgate_gateway_rx_buffer_bytes") >= *(double *)arg;
}

static void wait_rx(double bytes) {
  cr_assert(itest_wait_until(rx_reached, &bytes, ITEST_TIMEOUT_MS),
            "rx buffers hold %.0f bytes, expected %.0f",
            itest_metric(ga.http_port, "wsgate_gateway_rx_buffer_bytes"), bytes);
}

Test(gateway_userlimit, one_users_unfinished_messages_hold_only_their_share) {
  const char *extra[] = {"--max-message", "1m", "--rx-memory-per-user", "2m", NULL};
  itest_gateway_start(&ga, NULL, "ulim-rx", &(itest_daemon_opts){.extra = extra});
  static uint8_t part[900 * 1024];
  memset(part, 'x', sizeof part);
  /* Three connections of one user each start a message and never finish it: two fit in the
   * user's 2 MiB, the third is closed with 1013; another user still gets room. */
  ws_client *c[3];
  for (int i = 0; i < 3; i++) {
    c[i] = itest_connect(&ga, "hoarder");
    cr_assert_eq(ws_client_send_frame(c[i], WS_OP_BINARY, false, true, part, sizeof part),
                 WS_CLIENT_OK);
    /* One at a time, so that the third is the one over the share. */
    if (i < 2)
      wait_rx((i + 1) * 1048576.0);
  }
  ws_message m;
  int rc;
  while ((rc = ws_client_recv(c[2], &m, ITEST_TIMEOUT_MS)) == WS_CLIENT_OK &&
         m.opcode != WS_OP_CLOSE)
    ;
  cr_assert_eq(rc, WS_CLIENT_OK, "no close frame: %s", ws_client_strerror(rc));
  cr_assert_eq(m.close_code, 1013, "closed with %u \"%s\"", m.close_code, m.close_reason);
  for (int i = 0; i < 2; i++)
    cr_assert_eq(ws_client_recv(c[i], &m, 300), WS_CLIENT_TIMEOUT, "connection %d was closed", i);
  ws_client *other = itest_connect(&ga, "neighbour");
  cr_assert_eq(ws_client_send_frame(other, WS_OP_BINARY, false, true, part, sizeof part),
               WS_CLIENT_OK);
  cr_assert_eq(ws_client_recv(other, &m, 500), WS_CLIENT_TIMEOUT, "the other user was closed");
  cr_log_info("rx buffers held: %.0f bytes (two of hoarder's, one of neighbour's)",
              itest_metric(ga.http_port, "wsgate_gateway_rx_buffer_bytes"));
  for (int i = 0; i < 3; i++)
    ws_client_destroy(c[i]);
  ws_client_destroy(other);
}

/* Issue 16 item 7: every key wsgate writes has a TTL or an owner that removes it. The user's entry
 * hash has both: entries are removed on close, and the key expires (24 h, renewed by the gateways
 * of its live connections) if a killed gateway's entries are all that is left. */
Test(gateway_userlimit, the_user_key_has_a_ttl) {
  itest_gateway_start(&ga, NULL, "ulim-ttl", NULL);
  redisContext *rc = itest_redis_connect();
  ws_client *c = itest_connect(&ga, "mortal");
  wait_entries(rc, ga.cluster.prefix, "mortal", 1);
  redisReply *r = redisCommand(rc, "PTTL %suser:mortal", ga.cluster.prefix);
  cr_assert(r && r->type == REDIS_REPLY_INTEGER, "PTTL failed");
  long long ttl = r->integer;
  freeReplyObject(r);
  cr_log_info("user key TTL %lld ms", ttl);
  cr_assert(ttl > 23LL * 3600 * 1000 && ttl <= 24LL * 3600 * 1000, "the user key's TTL is %lld",
            ttl);
  ws_client_destroy(c);
  redisFree(rc);
}
