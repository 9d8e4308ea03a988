/*
 * Integration tests of the lifetime of a channel's keys in Redis (docs/ARCHITECTURE.md, "Lifetime
 * of a channel's keys") on real Kafka and Redis: the keys a gateway writes (:gws, :pc,
 * :p:<member>) get --channel-key-ttl when they are created; a live gateway renews them
 * (--channel-key-renew) so they outlive several TTLs; a gateway killed with -9 leaves nothing
 * that outlives the TTL but what a live gateway still holds. Needs WSGATE_TEST_KAFKA and
 * WSGATE_TEST_REDIS_PORT.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "harness_channels.h"
#include "harness_daemons.h"

static itest_gateway gw, gw2;

static void teardown(void) {
  itest_gateway_cleanup(&gw);
  itest_gateway_cleanup(&gw2);
  itest_fini();
}

TestSuite(channels_keys, .fini = teardown, .timeout = 120);

#define NS "--channel-namespace", "room=presence=true"
#define SHORT_TTL                                                                                  \
  NS, "--channel-key-ttl", "3s", "--channel-key-renew", "1s" /* a walk every second */

/* The keys g writes for a presence channel: :gws, :pc, and g's :p:<member>. */
typedef struct {
  char k[3][300];
} chkeys;

static void keys_of(const itest_gateway *g, const char *channel, chkeys *out) {
  char member[300];
  snprintf(out->k[0], sizeof out->k[0], "%sch:{c:%s}:gws", g->cluster.prefix, channel);
  snprintf(out->k[1], sizeof out->k[1], "%sch:{c:%s}:pc", g->cluster.prefix, channel);
  itest_presence_member(g, channel, member, out->k[2], sizeof out->k[2]);
}

/* PTTL of key: -2 when it does not exist, -1 when it has no TTL. */
static long long pttl(const char *key) {
  redisReply *rep = itest_redis_key_command(0, "PTTL %s%s", key, "");
  long long n = rep && rep->type == REDIS_REPLY_INTEGER ? rep->integer : -3;
  freeReplyObject(rep);
  return n;
}

/* Waits up to timeout_ms for every key of ks to exist; false if one never does. */
static bool all_exist(const chkeys *ks, int timeout_ms) {
  for (uint64_t end = itest_now_ms() + (uint64_t)timeout_ms;; usleep(50 * 1000)) {
    bool all = true;
    for (int i = 0; i < 3; i++)
      all = all && pttl(ks->k[i]) != -2;
    if (all)
      return true;
    if (itest_now_ms() > end)
      return false;
  }
}

/* Created with the TTL (not by the renewal walk: its first visit is a period away), and gone with
 * the last subscriber as before. */
Test(channels_keys, ttl_is_set_when_keys_are_created) {
  itest_cluster c;
  itest_cluster_init(&c, 2, 4, false);
  static const char *const extra[] = {NS,  "--channel-key-ttl", "10m", "--channel-key-renew", "5m",
                                      NULL};
  itest_gateway_start(&gw, &c, "chkeys-new", &(itest_daemon_opts){.extra = extra});
  ws_client *a = itest_connect_channels(&gw, "amy", "[\"*\"]");
  itest_subscribe_new(a, "room:new");
  chkeys ks;
  keys_of(&gw, "room:new", &ks);
  cr_assert(all_exist(&ks, 5000), "the gateway wrote its keys");
  for (int i = 0; i < 3; i++) {
    long long t = pttl(ks.k[i]);
    cr_expect(t > 9 * 60 * 1000 && t <= 10 * 60 * 1000, "%s: PTTL %lld, want about 10 min", ks.k[i],
              t);
  }
  cr_expect_eq(
      itest_metric(gw.http_port, "wsgate_gateway_channel_key_renewals_total{result=\"ok\"}"), 0,
      "no renewal yet: the TTL came with the writes");
  ws_client_destroy(a);
  for (int i = 0; i < 3; i++)
    for (uint64_t end = itest_now_ms() + 5000; pttl(ks.k[i]) != -2 && itest_now_ms() < end;)
      usleep(50 * 1000);
  for (int i = 0; i < 3; i++)
    cr_expect_eq(pttl(ks.k[i]), -2, "%s goes with the last subscriber", ks.k[i]);
}

/* Asserts for ms that each of the n keys exists with a TTL of at most 3 s (SHORT_TTL). */
static void keys_stay_for(const char *const *keys, int n, int ms) {
  for (uint64_t end = itest_now_ms() + (uint64_t)ms; itest_now_ms() < end; usleep(200 * 1000))
    for (int i = 0; i < n; i++) {
      long long t = pttl(keys[i]);
      cr_assert(t > 0 && t <= 3000, "%s: PTTL %lld while its gateway lives", keys[i], t);
    }
}

/* gw started with SHORT_TTL as `name`; amy subscribed to `channel`, whose keys ks exist. */
static ws_client *start_short(const char *name, const char *channel, chkeys *ks) {
  itest_cluster c;
  itest_cluster_init(&c, 2, 4, false);
  static const char *const extra[] = {SHORT_TTL, NULL};
  itest_gateway_start(&gw, &c, name, &(itest_daemon_opts){.extra = extra});
  ws_client *a = itest_connect_channels(&gw, "amy", "[\"*\"]");
  itest_subscribe_new(a, channel);
  keys_of(&gw, channel, ks);
  cr_assert(all_exist(ks, 5000), "the gateway wrote the keys of %s", channel);
  return a;
}

/* A 3 s TTL renewed every second: the keys of a live gateway stay through 4 TTLs, and every
 * key keeps a TTL all along. */
Test(channels_keys, live_gateway_renews_its_keys) {
  chkeys ks;
  ws_client *a = start_short("chkeys-live", "room:live", &ks);
  itest_subscribe_new(a, "plain:live"); /* no presence: its :gws alone */
  char plain[300];
  snprintf(plain, sizeof plain, "%sch:{c:plain:live}:gws", gw.cluster.prefix);
  keys_stay_for((const char *const[]){ks.k[0], ks.k[1], ks.k[2], plain}, 4, 12000);
  double ok =
      itest_metric(gw.http_port, "wsgate_gateway_channel_key_renewals_total{result=\"ok\"}");
  cr_expect_geq(ok, 16, "two channels renewed about once a second for 12 s: %.0f", ok);
  cr_expect_eq(
      itest_metric(gw.http_port, "wsgate_gateway_channel_key_renewals_total{result=\"failed\"}"),
      0);
  ws_client_destroy(a);
}

/* The walk's tick stops while the gateway holds no channel; the next channel created starts it
 * again, and that channel's keys are renewed like the first's (they would be gone after 3 s). */
Test(channels_keys, renewals_resume_after_an_idle_spell) {
  chkeys first;
  ws_client *a = start_short("chkeys-idle", "room:first", &first);
  ws_client_destroy(a); /* the last channel goes: the next tick (100 ms) finds none and stops */
  for (uint64_t end = itest_now_ms() + 5000; pttl(first.k[0]) != -2 && itest_now_ms() < end;)
    usleep(50 * 1000);
  cr_assert_eq(pttl(first.k[0]), -2, "room:first went with its last subscriber");
  usleep(1500 * 1000); /* idle for more than a renewal period */
  double before =
      itest_metric(gw.http_port, "wsgate_gateway_channel_key_renewals_total{result=\"ok\"}");
  ws_client *b = itest_connect_channels(&gw, "bob", "[\"*\"]");
  itest_subscribe_new(b, "room:again");
  chkeys ks;
  keys_of(&gw, "room:again", &ks);
  cr_assert(all_exist(&ks, 5000));
  keys_stay_for((const char *const[]){ks.k[0], ks.k[1], ks.k[2]}, 3, 9000);
  double after =
      itest_metric(gw.http_port, "wsgate_gateway_channel_key_renewals_total{result=\"ok\"}");
  cr_expect_geq(after - before, 6, "room:again renewed about once a second for 9 s: %.0f",
                after - before);
  ws_client_destroy(b);
}

/* gw2 holds room:gone alone and room:both with gw. Killed with -9 it removes nothing; within the
 * TTL everything it alone held is gone, and of room:both its presence hash. The shared keys stay,
 * renewed by gw (its dead member of :gws stays with them until a publication prunes it). */
Test(channels_keys, killed_gateways_keys_expire) {
  itest_cluster c;
  itest_cluster_init(&c, 2, 4, false);
  static const char *const extra[] = {SHORT_TTL, NULL};
  itest_gateway_start(&gw, &c, "chkeys-kill1", &(itest_daemon_opts){.extra = extra});
  itest_gateway_start(&gw2, &c, "chkeys-kill2", &(itest_daemon_opts){.extra = extra});
  ws_client *a = itest_connect_channels(&gw, "amy", "[\"*\"]");
  ws_client *b = itest_connect_channels(&gw2, "ben", "[\"*\"]");
  itest_subscribe_new(a, "room:both");
  itest_subscribe_new(b, "room:both");
  itest_subscribe_new(b, "room:gone");
  chkeys gone, both1, both2;
  keys_of(&gw2, "room:gone", &gone);
  keys_of(&gw, "room:both", &both1);
  keys_of(&gw2, "room:both", &both2);
  cr_assert(all_exist(&gone, 5000) && all_exist(&both1, 5000) && all_exist(&both2, 5000));
  cr_assert_eq(itest_gws_members(&gw, "room:both", 2), 2);
  itest_gateway_stop(&gw2, SIGKILL, 5000);
  ws_client_destroy(b);
  uint64_t t0 = itest_now_ms(), gone_ms = 0;
  while (itest_now_ms() < t0 + 8000 && !gone_ms) {
    bool all_gone = pttl(both2.k[2]) == -2;
    for (int i = 0; i < 3; i++)
      all_gone = all_gone && pttl(gone.k[i]) == -2;
    if (all_gone)
      gone_ms = itest_now_ms() - t0;
    else
      usleep(100 * 1000);
  }
  cr_expect(gone_ms > 0, "the killed gateway's keys are gone within the TTL (3 s) and a margin");
  for (int i = 0; i < 3; i++)
    cr_expect_eq(pttl(gone.k[i]), -2, "%s", gone.k[i]);
  cr_expect_eq(pttl(both2.k[2]), -2, "%s", both2.k[2]);
  cr_log_info("the killed gateway's keys went %llu ms after the kill", (unsigned long long)gone_ms);
  for (int i = 0; i < 3; i++) {
    long long t = pttl(both1.k[i]);
    cr_expect(t > 0 && t <= 3000, "%s: PTTL %lld, renewed by the live gateway", both1.k[i], t);
  }
  cr_expect_eq(itest_gws_members(&gw, "room:both", 2), 2,
               "the dead member stays in the shared set (until a publication prunes it)");
  ws_client_destroy(a);
}
