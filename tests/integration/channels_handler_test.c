/*
 * Integration tests of subscriptions made by the handler (issue 15, item 1(b)): wsgate_subscribe
 * and wsgate_unsubscribe through the built-in `publish` handler ("+<channel>[\n<user>]",
 * "-<channel>[\n<user>]"), carried by `subscribe` / `unsubscribe` records to every gateway holding
 * the user's connections, applied there like the client's own op (limits, Redis gateway set) and
 * told to the client with "server":true. Needs Kafka and Redis (WSGATE_TEST_KAFKA,
 * WSGATE_TEST_REDIS_PORT).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "harness_channels.h"

static itest_gateway gw, gw2;
static itest_processor proc;

static void teardown(void) {
  itest_gateway_cleanup(&gw);
  itest_gateway_cleanup(&gw2);
  itest_processor_cleanup(&proc);
}

TestSuite(channels_handler, .fini = teardown, .timeout = 120);

static void send_text(ws_client *c, const char *s) {
  cr_assert_eq(ws_client_send_text(c, s, strlen(s)), WS_CLIENT_OK);
}

/* A publication of `channel` at `offset` whose data is the text `data` (no quotes to escape). */
static unsigned long long expect_pub(ws_client *c, const char *channel, unsigned offset,
                                     const char *data) {
  char json[256];
  snprintf(json, sizeof json, "\"%s\"", data);
  return itest_expect_pub(c, channel, offset, json);
}

/* The answer to subscribe `id` with `since` on `ch`: recovered, at epoch/offset. */
static void expect_recovered(ws_client *c, int id, const char *ch, unsigned long long epoch,
                             unsigned offset) {
  char want[256];
  snprintf(want, sizeof want,
           "{\"wsgate\":\"subscribed\",\"id\":%d,\"channel\":\"%s\",\"recovered\":true,"
           "\"epoch\":%llu,\"offset\":%u}",
           id, ch, epoch, offset);
  itest_expect_text(c, want, ITEST_TIMEOUT_MS);
}

/* Nothing but pongs arrives on c for `ms`. */
static void expect_silence(ws_client *c, int ms) {
  ws_message m;
  uint64_t until = itest_now_ms() + (uint64_t)ms;
  for (uint64_t now; (now = itest_now_ms()) < until;) {
    int rc = ws_client_recv(c, &m, (int)(until - now));
    if (rc == WS_CLIENT_TIMEOUT)
      return;
    cr_assert_eq(rc, WS_CLIENT_OK);
    cr_assert_eq(m.opcode, WS_OP_PONG, "unexpected frame %.*s", (int)m.len, m.data);
  }
}

/* Waits for the processor's answer to a presence query from c. */
static void registered(ws_client *c) {
  send_text(c, "?nothing");
  itest_expect_text(c, "{\"channel\":\"nothing\",\"connections\":0,\"users\":[]}",
                    ITEST_TIMEOUT_MS);
}

/* The handler's subscription to a channel with no publication yet. */
#define SUBSCRIBED(ch)                                                                             \
  "{\"wsgate\":\"subscribed\",\"channel\":\"" ch "\",\"epoch\":0,\"offset\":0,\"server\":true}"
#define UNSUBSCRIBED(ch) "{\"wsgate\":\"unsubscribed\",\"channel\":\"" ch "\",\"server\":true}"

/* A user's two connections on two gateways are subscribed by another user's message (no claim
 * needed: the handler decides), both receive a publication, and an unsubscribe stops it. */
Test(channels_handler, subscribes_a_users_connections_on_two_gateways) {
  itest_cluster c;
  itest_cluster_init(&c, 2, 4, false);
  itest_gateway_start(&gw, &c, "chsub-1", NULL);
  itest_gateway_start(&gw2, &c, "chsub-2", NULL);
  itest_processor_start(&proc, &c, "chsub", "publish", NULL);

  ws_client *b1 = itest_connect(&gw, "bob");
  ws_client *b2 = itest_connect(&gw2, "bob");
  ws_client *ann = itest_connect(&gw, "ann");
  /* A gateway produces a connection's frames only once Redis registered it: an answer from the
   * processor to each of bob's connections means a lookup of bob finds both. */
  registered(b1);
  registered(b2);
  send_text(ann, "+room:x\nbob");
  itest_expect_text(b1, SUBSCRIBED("room:x"), ITEST_TIMEOUT_MS);
  itest_expect_text(b2, SUBSCRIBED("room:x"), ITEST_TIMEOUT_MS);
  cr_expect_eq(itest_gws_members(&gw, "room:x", 2), 2, "both gateways in the channel's set");

  send_text(ann, "room:x\nhi");
  unsigned long long e1 = expect_pub(b1, "room:x", 1, "hi");
  unsigned long long e2 = expect_pub(b2, "room:x", 1, "hi");
  cr_expect(e1 > 0 && e1 == e2);
  cr_expect_eq(itest_metric(gw.http_port,
                            "wsgate_gateway_channel_server_ops_total{op=\"subscribe\","
                            "result=\"ok\"}"),
               1);

  /* Subscribing again changes nothing and tells nobody. */
  send_text(ann, "+room:x\nbob");
  send_text(ann, "-room:x\nbob");
  itest_expect_text(b1, UNSUBSCRIBED("room:x"), ITEST_TIMEOUT_MS);
  itest_expect_text(b2, UNSUBSCRIBED("room:x"), ITEST_TIMEOUT_MS);
  cr_expect_eq(itest_gws_members(&gw, "room:x", 0), 0, "no gateway left in the set");

  /* ann subscribes her own connection (no lookup): she gets the next publication, bob does not. */
  send_text(ann, "+room:x");
  char want[256];
  snprintf(want, sizeof want,
           "{\"wsgate\":\"subscribed\",\"channel\":\"room:x\",\"epoch\":%llu,\"offset\":1,"
           "\"server\":true}",
           e1);
  itest_expect_text(ann, want, ITEST_TIMEOUT_MS);
  send_text(ann, "room:x\nbye");
  expect_pub(ann, "room:x", 2, "bye");
  expect_silence(b1, 300);
  expect_silence(b2, 300);
  cr_expect_eq(itest_metric(gw.http_port, "wsgate_gateway_channel_server_ops_total{op="
                                          "\"unsubscribe\",result=\"ok\"}"),
               1);
  ws_client_destroy(b1);
  ws_client_destroy(b2);
  ws_client_destroy(ann);
}

/* --channel-max-per-conn applies to the handler's subscriptions too: the refusal is told to the
 * client (server: true, the channel named), logged and counted. */
Test(channels_handler, limits_refuse_and_count) {
  static const char *const extra[] = {"--channel-max-per-conn", "1", NULL};
  itest_cluster c;
  itest_cluster_init(&c, 2, 4, false);
  itest_gateway_start(&gw, &c, "chsub-lim", &(itest_daemon_opts){.extra = extra});
  itest_processor_start(&proc, &c, "chsub-lim", "publish", NULL);
  ws_client *a = itest_connect(&gw, "ann");
  send_text(a, "+a");
  itest_expect_text(a, SUBSCRIBED("a"), ITEST_TIMEOUT_MS);
  send_text(a, "+b");
  itest_expect_text(a,
                    "{\"wsgate\":\"error\",\"op\":\"subscribe\",\"channel\":\"b\",\"code\":"
                    "\"too_many_subscriptions\",\"message\":\"the connection has as many "
                    "subscriptions as --channel-max-per-conn allows\",\"server\":true}",
                    ITEST_TIMEOUT_MS);
  cr_expect_eq(itest_metric(gw.http_port,
                            "wsgate_gateway_channel_server_ops_total{op=\"subscribe\","
                            "result=\"too_many_subscriptions\"}"),
               1);
  ws_client_destroy(a);
}

/* The handler subscribed the connection; the client's own subscribe with `since` on the channel it
 * already holds replays the history from there (it sees offsets it had again: documented), then
 * stays live. */
Test(channels_handler, subscribe_with_since_on_a_held_channel_recovers) {
  static const char *const extra[] = {"--channel-namespace", "news=history_size=100", NULL};
  itest_cluster c;
  itest_cluster_init(&c, 2, 4, false);
  itest_gateway_start(&gw, &c, "chsub-rec", NULL);
  itest_processor_start(&proc, &c, "chsub-rec", "publish", &(itest_daemon_opts){.extra = extra});
  ws_client *a = itest_connect_channels(&gw, "ann", "[\"*\"]");
  send_text(a, "+news:a");
  itest_expect_text(a, SUBSCRIBED("news:a"), ITEST_TIMEOUT_MS);
  send_text(a, "news:a\none");
  unsigned long long e = expect_pub(a, "news:a", 1, "one");
  send_text(a, "news:a\ntwo");
  expect_pub(a, "news:a", 2, "two");

  char op[256];
  snprintf(op, sizeof op,
           "{\"wsgate\":\"subscribe\",\"id\":5,\"channel\":\"news:a\",\"since\":{\"offset\":0,"
           "\"epoch\":%llu}}",
           e);
  send_text(a, op);
  expect_recovered(a, 5, "news:a", e, 2);
  expect_pub(a, "news:a", 1, "one");
  expect_pub(a, "news:a", 2, "two");
  send_text(a, "news:a\nthree");
  expect_pub(a, "news:a", 3, "three");
  ws_client_destroy(a);
}

/* Every "subscribed" says where the subscription's stream starts (epoch 0, offset 0: no
 * publication yet): read from Redis for a channel new on the gateway, from the gateway's own
 * position otherwise; and a connection may resubscribe with `since` to a channel the handler gave
 * it, without a claim, recovering from the position of the handler's "subscribed". */
Test(channels_handler, subscribed_carries_the_position) {
  static const char *const extra[] = {"--channel-namespace", "news=history_size=100", NULL};
  itest_cluster c;
  itest_cluster_init(&c, 2, 4, false);
  itest_gateway_start(&gw, &c, "chpos", NULL);
  itest_gateway_start(&gw2, &c, "chpos2", NULL);
  itest_processor_start(&proc, &c, "chpos", "publish", &(itest_daemon_opts){.extra = extra});
  ws_client *a = itest_connect_channels(&gw, "ann", "[\"news:*\"]");
  send_text(a, "{\"wsgate\":\"subscribe\",\"id\":1,\"channel\":\"news:p\"}");
  itest_expect_text(
      a, "{\"wsgate\":\"subscribed\",\"id\":1,\"channel\":\"news:p\",\"epoch\":0,\"offset\":0}",
      ITEST_TIMEOUT_MS);
  send_text(a, "news:p\none");
  unsigned long long e = expect_pub(a, "news:p", 1, "one");

  char want[256];
  snprintf(want, sizeof want,
           "{\"wsgate\":\"subscribed\",\"id\":1,\"channel\":\"news:p\",\"epoch\":%llu,"
           "\"offset\":1}",
           e);
  ws_client *b = itest_connect_channels(&gw, "bob", "[\"news:*\"]");  /* known here */
  ws_client *d = itest_connect_channels(&gw2, "dan", "[\"news:*\"]"); /* read from Redis */
  send_text(b, "{\"wsgate\":\"subscribe\",\"id\":1,\"channel\":\"news:p\"}");
  itest_expect_text(b, want, ITEST_TIMEOUT_MS);
  send_text(d, "{\"wsgate\":\"subscribe\",\"id\":1,\"channel\":\"news:p\"}");
  itest_expect_text(d, want, ITEST_TIMEOUT_MS);
  send_text(a, "news:p\ntwo");
  expect_pub(a, "news:p", 2, "two");
  expect_pub(b, "news:p", 2, "two");
  expect_pub(d, "news:p", 2, "two");

  ws_client *f = itest_connect(&gw, "fay"); /* no channels claim */
  send_text(f, "+news:q");
  itest_expect_text(f,
                    "{\"wsgate\":\"subscribed\",\"channel\":\"news:q\",\"epoch\":0,\"offset\":0,"
                    "\"server\":true}",
                    ITEST_TIMEOUT_MS);
  send_text(f, "news:q\nx1");
  unsigned long long eq = expect_pub(f, "news:q", 1, "x1");
  send_text(f, "{\"wsgate\":\"subscribe\",\"id\":2,\"channel\":\"news:q\",\"since\":{\"offset\":0,"
               "\"epoch\":0}}");
  expect_recovered(f, 2, "news:q", eq, 1);
  expect_pub(f, "news:q", 1, "x1");
  ws_client_destroy(a);
  ws_client_destroy(b);
  ws_client_destroy(d);
  ws_client_destroy(f);
}

/* --- subscribe=handler: the handler decides (on_subscribe) ----------------------------------- */

/* The `publish` handler allows every channel but deny:*: a client without any channels claim is
 * subscribed (with recovery from `since`) where it allows, refused with its reason where not. */
Test(channels_handler, handler_permission_allows_and_refuses) {
  static const char *const extra[] = {"--channel-namespace",
                                      "room=subscribe=handler,history_size=10",
                                      "--channel-namespace", "deny=subscribe=handler", NULL};
  itest_cluster c;
  itest_cluster_init(&c, 2, 4, false);
  itest_gateway_start(&gw, &c, "chdec", &(itest_daemon_opts){.extra = extra});
  itest_processor_start(&proc, &c, "chdec", "publish", &(itest_daemon_opts){.extra = extra});
  ws_client *a = itest_connect(&gw, "ann"); /* no channels claim */
  send_text(a, "{\"wsgate\":\"subscribe\",\"id\":1,\"channel\":\"room:x\"}");
  itest_expect_text(a,
                    "{\"wsgate\":\"subscribed\",\"id\":1,\"channel\":\"room:x\",\"epoch\":0,"
                    "\"offset\":0}",
                    ITEST_TIMEOUT_MS);
  send_text(a, "room:x\nhi");
  unsigned long long e = expect_pub(a, "room:x", 1, "hi");

  send_text(a, "{\"wsgate\":\"subscribe\",\"id\":2,\"channel\":\"deny:x\"}");
  itest_expect_text(a,
                    "{\"wsgate\":\"error\",\"id\":2,\"op\":\"subscribe\",\"code\":\"forbidden\","
                    "\"message\":\"the publish handler refuses deny:* channels\"}",
                    ITEST_TIMEOUT_MS);

  /* With since: the handler decides, then the history is replayed. */
  char op[256];
  snprintf(op, sizeof op,
           "{\"wsgate\":\"subscribe\",\"id\":3,\"channel\":\"room:x\",\"since\":{\"offset\":0,"
           "\"epoch\":%llu}}",
           e);
  send_text(a, op);
  expect_recovered(a, 3, "room:x", e, 1);
  expect_pub(a, "room:x", 1, "hi");
  cr_expect_eq(itest_metric(gw.http_port, "wsgate_gateway_channel_ops_total{op=\"subscribe\","
                                          "result=\"forbidden\"}"),
               1);
  cr_expect_eq(itest_metric(gw.http_port, "wsgate_gateway_channel_ops_total{op=\"subscribe\","
                                          "result=\"ok\"}"),
               2);
  cr_expect_eq(itest_metric(gw.http_port, "wsgate_gateway_channel_pending_decisions"), 0);
  ws_client_destroy(a);
}

/* No processor answers: the subscribe is answered timeout after --channel-decide-timeout; one
 * more than --channel-pending-per-conn is refused at once. Both counted. */
Test(channels_handler, no_decision_times_out_and_pending_is_bounded) {
  static const char *const extra[] = {"--channel-namespace",
                                      "room=subscribe=handler",
                                      "--channel-decide-timeout",
                                      "300ms",
                                      "--channel-pending-per-conn",
                                      "1",
                                      NULL};
  itest_gateway_start(&gw, NULL, "chdec-none", &(itest_daemon_opts){.extra = extra});
  ws_client *a = itest_connect(&gw, "ann");
  uint64_t t0 = itest_now_ms();
  send_text(a, "{\"wsgate\":\"subscribe\",\"id\":1,\"channel\":\"room:x\"}");
  send_text(a, "{\"wsgate\":\"subscribe\",\"id\":2,\"channel\":\"room:y\"}");
  itest_expect_text(a,
                    "{\"wsgate\":\"error\",\"id\":2,\"op\":\"subscribe\",\"code\":"
                    "\"too_many_pending\",\"message\":\"too many subscribes wait for the handler's "
                    "decision (--channel-pending-per-conn, --channel-pending-max); retry later\"}",
                    ITEST_TIMEOUT_MS);
  itest_expect_text(a,
                    "{\"wsgate\":\"error\",\"id\":1,\"op\":\"subscribe\",\"code\":\"timeout\","
                    "\"message\":\"the handler did not decide within --channel-decide-timeout; "
                    "retry later\"}",
                    ITEST_TIMEOUT_MS);
  uint64_t took = itest_now_ms() - t0;
  cr_expect(took >= 250 && took < 3000, "answered timeout after %llu ms", (unsigned long long)took);
  cr_expect_eq(itest_metric(gw.http_port, "wsgate_gateway_channel_ops_total{op=\"subscribe\","
                                          "result=\"timeout\"}"),
               1);
  cr_expect_eq(itest_metric(gw.http_port, "wsgate_gateway_channel_ops_total{op=\"subscribe\","
                                          "result=\"too_many_pending\"}"),
               1);
  /* The slot is free again. */
  send_text(a, "{\"wsgate\":\"subscribe\",\"id\":3,\"channel\":\"room:z\"}");
  itest_expect_text(a,
                    "{\"wsgate\":\"error\",\"id\":3,\"op\":\"subscribe\",\"code\":\"timeout\","
                    "\"message\":\"the handler did not decide within --channel-decide-timeout; "
                    "retry later\"}",
                    ITEST_TIMEOUT_MS);
  ws_client_destroy(a);
}
