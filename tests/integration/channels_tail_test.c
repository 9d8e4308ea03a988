/*
 * Integration tests of the channel tail check (docs/ARCHITECTURE.md, "Channels", Order): a
 * publication numbered and stored in Redis whose record never reaches the gateway (its processor
 * died between the publish script and the produce) is delivered from the history once the
 * channel has been quiet for --channel-tail-check, or reported with a `gap` when the history no
 * longer has it; a record that arrives while the check runs is not delivered twice, and idle
 * channels cost no reads. Needs Kafka and Redis (WSGATE_TEST_KAFKA, WSGATE_TEST_REDIS_PORT).
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "harness_channels.h"
#include "harness_kafka.h"
#include "wsg_chkeys.h"

static itest_gateway gw;
static itest_processor proc;
static itest_redis_server srv;

static void teardown(void) {
  itest_gateway_cleanup(&gw);
  itest_processor_cleanup(&proc);
  itest_redis_server_stop(&srv, SIGKILL);
}

TestSuite(channels_tail, .fini = teardown, .timeout = 120);

#define CHECKS "wsgate_gateway_channel_tail_checks_total"

/* A short quiet time, to keep the tests quick (the default, 1 s, in the first one). */
static const char *const quick[] = {"--channel-tail-check", "300ms", NULL};

/* The channel's Redis key of that kind ("m", "h", "gws"), as docs/ARCHITECTURE.md lists it. */
static const char *chkey(char buf[256], const char *prefix, const char *channel, const char *kind) {
  snprintf(buf, 256, "%sch:{c:%s}:%s", prefix, channel, kind);
  return buf;
}

/* What a processor killed after the publish script leaves behind: the publication numbered and
 * (history_size > 0) stored, no record produced. Returns its offset; *epoch the channel's. */
static unsigned long long store_only(redisContext *r, const char *prefix, const char *channel,
                                     const char *history_size, const char *data,
                                     unsigned long long *epoch) {
  char km[256], kh[256], kg[256];
  chkey(km, prefix, channel, "m");
  chkey(kh, prefix, channel, "h");
  chkey(kg, prefix, channel, "gws");
  redisReply *rep = itest_redis_cmd(r, "EVAL %s 3 %s %s %s %s %s d %s", WSG_LUA_CHANNEL_PUBLISH, km,
                                    kh, kg, history_size, "600000", data);
  cr_assert(rep && rep->type == REDIS_REPLY_ARRAY && rep->elements >= 2 &&
                rep->element[0]->type == REDIS_REPLY_INTEGER &&
                rep->element[1]->type == REDIS_REPLY_INTEGER,
            "the publish script failed: %s", rep && rep->str ? rep->str : "no reply");
  unsigned long long off = (unsigned long long)rep->element[0]->integer;
  *epoch = (unsigned long long)rep->element[1]->integer;
  freeReplyObject(rep);
  return off;
}

/* Nothing more arrives on c for ms. */
static void expect_silence(ws_client *c, int ms) {
  ws_message m;
  cr_expect_neq(ws_client_recv(c, &m, ms), WS_CLIENT_OK, "an unexpected frame: %.*s", (int)m.len,
                m.data);
}

/* Publications from..to through the processor (the `publish` handler), received by a. */
static void publish_range(ws_client *a, const char *channel, int from, int to) {
  ws_client *p = itest_connect_channels(&gw, "pat", "[]");
  for (int i = from; i <= to; i++) {
    char frame[128], data[16];
    int len = snprintf(frame, sizeof frame, "%s\n%d", channel, i);
    cr_assert_eq(ws_client_send_text(p, frame, (size_t)len), WS_CLIENT_OK);
    snprintf(data, sizeof data, "\"%d\"", i);
    itest_expect_pub(a, channel, (unsigned)i, data);
  }
  ws_client_destroy(p);
}

/* One of the first three cases: a gateway and a `publish` processor on the shared servers, a
 * subscriber `a` of `channel` that has received publications 1..published through them, and a
 * connection `r` to the shared Redis to leave publications behind as a killed processor would. */
typedef struct {
  itest_cluster c;
  const char *channel;
  ws_client *a;
  redisContext *r;
} tail_case;

static void tail_case_start(tail_case *t, const char *name, const char *channel,
                            const char *const *gw_extra, int published) {
  static const char *const ns[] = {"--channel-namespace", "tail=history_size=100", NULL};
  itest_cluster_init(&t->c, 2, 4, false);
  t->channel = channel;
  itest_gateway_start(&gw, &t->c, name, &(itest_daemon_opts){.extra = gw_extra});
  itest_processor_start(&proc, &t->c, name, "publish", &(itest_daemon_opts){.extra = ns});
  t->a = itest_connect_channels(&gw, "ann", "[\"tail:*\"]");
  char op[128], want[192];
  snprintf(op, sizeof op, "{\"wsgate\":\"subscribe\",\"channel\":\"%s\"}", channel);
  snprintf(want, sizeof want,
           "{\"wsgate\":\"subscribed\",\"channel\":\"%s\",\"epoch\":0,\"offset\":0}", channel);
  itest_op_expect(t->a, op, want);
  cr_assert_eq(itest_gws_members(&gw, channel, 1), 1);
  publish_range(t->a, channel, 1, published);
  t->r = itest_redis_connect();
}

/* store_only on the case's channel. */
static unsigned long long tail_store(tail_case *t, const char *history_size, const char *data,
                                     unsigned long long *epoch) {
  return store_only(t->r, t->c.prefix, t->channel, history_size, data, epoch);
}

static void tail_case_end(tail_case *t) {
  redisFree(t->r);
  ws_client_destroy(t->a);
}

/* The last publication before a pause is stored but its record is lost: the subscriber gets it
 * from the history within the quiet interval (the default, 1 s) plus slack, once, in order; the
 * record that turns up later is a duplicate; then the channel is idle and costs no more reads. */
Test(channels_tail, lost_last_record_is_filled_from_the_history) {
  tail_case t;
  tail_case_start(&t, "tail-fill", "tail:x", NULL, 3);
  ws_client *a = t.a;
  unsigned long long epoch;
  uint64_t t0 = itest_now_ms();
  cr_assert_eq(tail_store(&t, "100", "four", &epoch), 4);
  itest_expect_pub(a, "tail:x", 4, "\"four\"");
  uint64_t took = itest_now_ms() - t0;
  cr_expect_lt(took, 1000 + 1500, "delivered %llu ms after it was stored",
               (unsigned long long)took);
  expect_silence(a, 1500); /* once: the check after the fill finds nothing more */

  itest_send_pub(&gw, "tail:x", 4, epoch, "four"); /* the lost record, late after all */
  /* Seen (it comes through Kafka, in its own time on a loaded box), then not sent. */
  itest_wait_metric_eq(gw.http_port,
                       "wsgate_gateway_channel_publications_total{result=\"duplicate\"}", 1,
                       ITEST_TIMEOUT_MS);
  expect_silence(a, 1500);
  cr_expect_eq(itest_metric(gw.http_port, "wsgate_gateway_channel_tail_filled_total"), 1);
  cr_expect_eq(itest_metric(gw.http_port, CHECKS "{result=\"behind\"}"), 1);
  /* The one after the fill (it was activity) found nothing; an idle channel is not polled. */
  cr_expect_eq(itest_metric(gw.http_port, CHECKS "{result=\"current\"}"), 1);
  usleep(2500 * 1000);
  cr_expect_eq(itest_metric(gw.http_port, CHECKS "{result=\"current\"}"), 1, "idle: no reads");
  tail_case_end(&t);
}

/* The tail is numbered but the history no longer has all of it (history_size 0 for the last
 * one, as a trimmed or expired history): what it has is delivered, the rest is a `gap`. */
Test(channels_tail, tail_gone_from_the_history_is_a_gap) {
  tail_case t;
  tail_case_start(&t, "tail-gap", "tail:y", quick, 2);
  ws_client *a = t.a;
  unsigned long long epoch;
  cr_assert_eq(tail_store(&t, "100", "three", &epoch), 3);
  cr_assert_eq(tail_store(&t, "0", "four", &epoch), 4); /* not in :h */
  itest_expect_pub(a, "tail:y", 3, "\"three\"");
  ws_message m;
  itest_expect_msg(a, WS_OP_TEXT, &m, 300 + 1500);
  cr_expect_str_eq((const char *)m.data,
                   "{\"wsgate\":\"gap\",\"channel\":\"tail:y\",\"from\":4,\"to\":4}");
  expect_silence(a, 1000);
  /* The next publication follows the gap with nothing repeated. */
  publish_range(a, "tail:y", 5, 5);
  cr_expect_eq(itest_metric(gw.http_port, "wsgate_gateway_channel_gaps_total"), 1);
  cr_expect_eq(itest_metric(gw.http_port, "wsgate_gateway_channel_tail_filled_total"), 1);
  tail_case_end(&t);
}

/* The history was lost (:m and :h gone, e.g. expired) and the next publication, which starts a
 * new epoch, lost its record: the subscriber gets it with the new epoch, no gap, as a record of
 * the new epoch would have come; later ones follow in it. */
Test(channels_tail, new_epoch_starts_over) {
  tail_case t;
  tail_case_start(&t, "tail-epoch", "tail:z", quick, 2);
  ws_client *a = t.a;
  char km[256], kh[256];
  chkey(km, t.c.prefix, "tail:z", "m");
  chkey(kh, t.c.prefix, "tail:z", "h");
  redisReply *rep = itest_redis_cmd(t.r, "HGET %s e", km);
  cr_assert(rep && rep->type == REDIS_REPLY_STRING);
  unsigned long long old_epoch = strtoull(rep->str, NULL, 10), epoch;
  freeReplyObject(rep);
  freeReplyObject(itest_redis_cmd(t.r, "DEL %s", km));
  freeReplyObject(itest_redis_cmd(t.r, "DEL %s", kh));
  cr_assert_eq(tail_store(&t, "100", "new", &epoch), 1);
  cr_assert_neq(epoch, old_epoch);
  cr_expect_eq(itest_expect_pub(a, "tail:z", 1, "\"new\""), epoch);
  expect_silence(a, 1000);
  publish_range(a, "tail:z", 2, 2); /* numbered 2 in the new epoch: delivered, nothing between */
  cr_expect_eq(itest_metric(gw.http_port, CHECKS "{result=\"new_epoch\"}"), 1);
  cr_expect_eq(itest_metric(gw.http_port, "wsgate_gateway_channel_gaps_total"), 0);
  tail_case_end(&t);
}

/* --- a record that arrives while the check waits for Redis ---------------------------------- */

typedef struct {
  int port, ms;
} blocker;

/* Holds the private Redis busy for b->ms (a script: Redis runs one command at a time), so the
 * gateway's check waits in its socket meanwhile. */
static void *block_redis(void *arg) {
  const blocker *b = arg;
  redisContext *r = itest_redis_connect_port(b->port);
  if (!r)
    return NULL;
  redisReply *rep = redisCommand(r, "EVAL %s 0 %d",
                                 "local s = redis.call('TIME')\n"
                                 "local lim = tonumber(ARGV[1]) * 1000\n"
                                 "repeat local t = redis.call('TIME')\n"
                                 "until (t[1] - s[1]) * 1000000 + (t[2] - s[2]) >= lim\n"
                                 "return 1\n",
                                 b->ms);
  freeReplyObject(rep);
  redisFree(r);
  return NULL;
}

/* Publication 2 is stored, the gateway's check of the channel is held up in Redis, and its
 * record arrives meanwhile: delivered once (by the record), and the check, answering late that
 * offset 2 exists, delivers nothing again (a record after the fill: lost_last_record_...). On a
 * private Redis: blocking the shared one would stall other tests. */
Test(channels_tail, record_during_the_check_is_not_repeated) {
  itest_redis_server_start(&srv, 0);
  /* Redis is held up for 3 s below: longer than that before the gateway calls it lost. */
  static const char *const slow_redis[] = {"--channel-tail-check", "300ms", "--redis-timeout",
                                           "10s", NULL};
  itest_gateway_start(&gw, NULL, "tail-race",
                      &(itest_daemon_opts){.extra = slow_redis, .redis_port = srv.port});
  ws_client *a = itest_connect_channels(&gw, "ann", "[\"*\"]");
  itest_op_expect(a, "{\"wsgate\":\"subscribe\",\"channel\":\"race\"}",
                  "{\"wsgate\":\"subscribed\",\"channel\":\"race\",\"epoch\":0,\"offset\":0}");
  redisContext *r = itest_redis_connect_port(srv.port);
  cr_assert(r);
  unsigned long long epoch;
  cr_assert_eq(store_only(r, gw.cluster.prefix, "race", "100", "one", &epoch), 1);
  itest_send_pub(&gw, "race", 1, epoch, "one");
  itest_expect_pub(a, "race", 1, "\"one\"");
  cr_assert_eq(store_only(r, gw.cluster.prefix, "race", "100", "two", &epoch), 2);
  /* Redis busy from ~100 ms to ~3,100 ms after publication 1: the check (at 300 ms) waits; the
   * record, sent after the check started, has over 2.5 s to come through Kafka first. */
  usleep(100 * 1000);
  blocker b = {srv.port, 3000};
  pthread_t th;
  cr_assert_eq(pthread_create(&th, NULL, block_redis, &b), 0);
  usleep(400 * 1000);
  itest_send_pub(&gw, "race", 2, epoch, "two");
  itest_expect_pub(a, "race", 2, "\"two\"");
  pthread_join(th, NULL);
  expect_silence(a, 1500);
  cr_expect_eq(itest_metric(gw.http_port, "wsgate_gateway_channel_tail_filled_total"), 0,
               "the check answered after the record (else it would have filled 2)");
  cr_expect_eq(
      itest_metric(gw.http_port, "wsgate_gateway_channel_publications_total{result=\"duplicate\"}"),
      0);
  cr_expect_geq(itest_metric(gw.http_port, CHECKS "{result=\"current\"}"), 1,
                "the held-up check answered, and found nothing to do");

  redisFree(r);
  ws_client_destroy(a);
}
