/*
 * Integration tests of channel subscriptions at the gateway (issue 15, stage 2): ops answered by
 * the gateway and never produced to Kafka, the token's channels claim, refusals with their codes
 * and metrics, and the per-channel set of gateway ids in Redis kept by subscribe, unsubscribe
 * and disconnect. Needs Kafka and Redis (WSGATE_TEST_KAFKA, WSGATE_TEST_REDIS_PORT).
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness_kafka.h"
#include "harness.h"
#include "harness_channels.h"

static itest_gateway gw, gw2;
static itest_processor proc;
static itest_reader rd;

static void teardown(void) {
  itest_reader_close(&rd);
  itest_gateway_cleanup(&gw);
  itest_gateway_cleanup(&gw2);
  itest_processor_cleanup(&proc);
}

TestSuite(gateway_channels, .fini = teardown, .timeout = 120);

static ws_client *connect_with_channels(const char *user, const char *claim_json) {
  return itest_connect_channels(&gw, user, claim_json);
}

static void op_expect(ws_client *c, const char *op, const char *want) {
  itest_op_expect(c, op, want);
}

Test(gateway_channels, subscribe_unsubscribe_and_refusals) {
  itest_gateway_start(&gw, NULL, "chan-ops", NULL);
  itest_reader_open(&rd, gw.cluster.in_topic, gw.cluster.in_partitions);
  ws_client *c = connect_with_channels("alice", "[\"news:*\",\"lobby\"]");
  wsg_envelope e;
  itest_reader_expect(&rd, WSG_ENV_CONNECT, "alice", &e, ITEST_TIMEOUT_MS);

  op_expect(
      c, "{\"wsgate\":\"subscribe\",\"id\":1,\"channel\":\"news:eu\"}",
      "{\"wsgate\":\"subscribed\",\"id\":1,\"channel\":\"news:eu\",\"epoch\":0,\"offset\":0}");
  cr_expect_eq(itest_gws_members(&gw, "news:eu", 1), 1);
  op_expect(c, "{\"wsgate\":\"subscribe\",\"id\":2,\"channel\":\"lobby\"}",
            "{\"wsgate\":\"subscribed\",\"id\":2,\"channel\":\"lobby\",\"epoch\":0,\"offset\":0}");
  op_expect(c, "{\"wsgate\":\"subscribe\",\"id\":3,\"channel\":\"lobby2\"}",
            "{\"wsgate\":\"error\",\"id\":3,\"op\":\"subscribe\",\"code\":\"forbidden\","
            "\"message\":\"the token does not allow this channel\"}");
  op_expect(c, "{\"wsgate\":\"subscribe\",\"channel\":\"news:\\u0001\"}",
            "{\"wsgate\":\"error\",\"op\":\"subscribe\",\"code\":\"bad_channel\",\"message\":\"a "
            "channel name is 1..200 bytes of UTF-8 without control characters\"}");
  op_expect(c, "{\"wsgate\":\"dance\"}",
            "{\"wsgate\":\"error\",\"code\":\"unknown_op\",\"message\":\"unknown op\"}");
  op_expect(c, "{\"wsgate\":\"unsubscribe\",\"id\":4,\"channel\":\"news:eu\"}",
            "{\"wsgate\":\"unsubscribed\",\"id\":4,\"channel\":\"news:eu\"}");
  cr_expect_eq(itest_gws_members(&gw, "news:eu", 0), 0, "the last subscriber left: SREM");

  /* None of the ops reached Kafka: the next inbound envelope is this application frame. */
  cr_assert_eq(ws_client_send_text(c, "hello", 5), WS_CLIENT_OK);
  itest_reader_expect(&rd, WSG_ENV_MSG, "alice", &e, ITEST_TIMEOUT_MS);
  cr_expect(e.data_len == 5 && memcmp(e.data, "hello", 5) == 0);
  cr_expect_eq(e.seq, 1, "ops take no inbound sequence number");

  cr_expect_eq(itest_metric(gw.http_port,
                            "wsgate_gateway_channel_ops_total{op=\"subscribe\",result="
                            "\"forbidden\"}"),
               1);
  cr_expect_eq(itest_metric(gw.http_port,
                            "wsgate_gateway_channel_ops_total{op=\"subscribe\",result="
                            "\"ok\"}"),
               2);
  cr_expect_eq(itest_metric(gw.http_port, "wsgate_gateway_channels"), 1);

  /* A disconnect drops the subscriptions: the channel's set empties. */
  cr_expect_eq(itest_gws_members(&gw, "lobby", 1), 1);
  ws_client_destroy(c);
  cr_expect_eq(itest_gws_members(&gw, "lobby", 0), 0);
}

/* A channel never published to has no :m: its first subscriber here reads that once, and the
 * gateway remembers it empty, so further subscribers cost Redis nothing (BENCHMARKS.md,
 * "Subscriptions that are never published to"). */
Test(gateway_channels, never_published_channel_read_once_per_gateway) {
  itest_gateway_start(&gw, NULL, "chan-quiet", NULL);
  const char *posreads = "wsgate_gateway_channel_position_reads_total";
  ws_client *c[4];
  for (int i = 0; i < 4; i++) {
    char user[16];
    snprintf(user, sizeof user, "quiet%d", i);
    c[i] = connect_with_channels(user, "[\"*\"]");
    op_expect(c[i], "{\"wsgate\":\"subscribe\",\"channel\":\"quiet\"}",
              "{\"wsgate\":\"subscribed\",\"channel\":\"quiet\",\"epoch\":0,\"offset\":0}");
  }
  cr_expect_eq(itest_metric(gw.http_port, posreads), 1, "one read for four subscribers");
  op_expect(c[0], "{\"wsgate\":\"subscribe\",\"channel\":\"quiet2\"}",
            "{\"wsgate\":\"subscribed\",\"channel\":\"quiet2\",\"epoch\":0,\"offset\":0}");
  cr_expect_eq(itest_metric(gw.http_port, posreads), 2, "another channel: its own read");
  /* The position lives with the channel: once its last subscriber leaves, it is unknown again. */
  for (int i = 0; i < 4; i++)
    op_expect(c[i], "{\"wsgate\":\"unsubscribe\",\"channel\":\"quiet\"}",
              "{\"wsgate\":\"unsubscribed\",\"channel\":\"quiet\"}");
  op_expect(c[1], "{\"wsgate\":\"subscribe\",\"channel\":\"quiet\"}",
            "{\"wsgate\":\"subscribed\",\"channel\":\"quiet\",\"epoch\":0,\"offset\":0}");
  cr_expect_eq(itest_metric(gw.http_port, posreads), 3);
  for (int i = 0; i < 4; i++)
    ws_client_destroy(c[i]);
}

Test(gateway_channels, limit_per_connection_and_no_claim) {
  static const char *const extra[] = {"--channel-max-per-conn", "2", NULL};
  itest_gateway_start(&gw, NULL, "chan-limit", &(itest_daemon_opts){.extra = extra});
  ws_client *c = connect_with_channels("bob", "[\"*\"]");
  op_expect(c, "{\"wsgate\":\"subscribe\",\"channel\":\"a\"}",
            "{\"wsgate\":\"subscribed\",\"channel\":\"a\",\"epoch\":0,\"offset\":0}");
  op_expect(c, "{\"wsgate\":\"subscribe\",\"channel\":\"b\"}",
            "{\"wsgate\":\"subscribed\",\"channel\":\"b\",\"epoch\":0,\"offset\":0}");
  op_expect(c, "{\"wsgate\":\"subscribe\",\"channel\":\"c\"}",
            "{\"wsgate\":\"error\",\"op\":\"subscribe\",\"code\":\"too_many_subscriptions\","
            "\"message\":\"the connection has as many subscriptions as --channel-max-per-conn "
            "allows\"}");
  /* A token without the claim allows nothing. */
  ws_client *d = itest_connect(&gw, "carol");
  op_expect(d, "{\"wsgate\":\"subscribe\",\"channel\":\"a\"}",
            "{\"wsgate\":\"error\",\"op\":\"subscribe\",\"code\":\"forbidden\",\"message\":\"the "
            "token does not allow this channel\"}");
  ws_client_destroy(c);
  ws_client_destroy(d);
}

/* A connection to the Redis that holds `key`: the shared test Redis, or, on the Redis Cluster of
 * WSGATE_TEST_REDIS_CLUSTER=host:port, the primary serving the key's slot (CLUSTER KEYSLOT, then
 * CLUSTER SLOTS), so the direct reads and writes below work in both of scripts/test's runs. */
static redisContext *redis_for(const char *key) {
  const char *seed = getenv("WSGATE_TEST_REDIS_CLUSTER");
  if (!seed || !*seed)
    return itest_redis_connect();
  char host[64] = "127.0.0.1";
  int port = 0;
  const char *colon = strrchr(seed, ':');
  cr_assert(colon && (size_t)(colon - seed) < sizeof host, "WSGATE_TEST_REDIS_CLUSTER=%s", seed);
  memcpy(host, seed, (size_t)(colon - seed));
  host[colon - seed] = '\0';
  port = atoi(colon + 1);
  redisContext *r = redisConnect(host, port);
  cr_assert(r && !r->err, "cannot reach the Redis Cluster seed %s", seed);
  redisReply *ks = redisCommand(r, "CLUSTER KEYSLOT %s", key);
  cr_assert(ks && ks->type == REDIS_REPLY_INTEGER);
  long long slot = ks->integer;
  freeReplyObject(ks);
  redisReply *map = redisCommand(r, "CLUSTER SLOTS");
  cr_assert(map && map->type == REDIS_REPLY_ARRAY);
  int owner = 0;
  char owner_host[64] = "";
  for (size_t i = 0; i < map->elements && !owner; i++) {
    redisReply *e = map->element[i];
    if (e->elements >= 3 && slot >= e->element[0]->integer && slot <= e->element[1]->integer) {
      snprintf(owner_host, sizeof owner_host, "%s", e->element[2]->element[0]->str);
      owner = (int)e->element[2]->element[1]->integer;
    }
  }
  freeReplyObject(map);
  redisFree(r);
  cr_assert(owner > 0, "no node serves slot %lld", slot);
  r = redisConnect(owner_host[0] ? owner_host : host, owner);
  cr_assert(r && !r->err, "cannot reach the node of slot %lld", slot);
  return r;
}

static long long redis_int(const char *fmt, const char *arg) {
  redisContext *r = redis_for(arg);
  redisReply *rep = redisCommand(r, fmt, arg);
  long long v = -1;
  if (rep && rep->type == REDIS_REPLY_INTEGER)
    v = rep->integer;
  else if (rep && rep->type == REDIS_REPLY_STRING)
    v = atoll(rep->str);
  freeReplyObject(rep);
  redisFree(r);
  return v;
}

static void publish(ws_client *c, const char *channel, const char *data) {
  char frame[512];
  int n = snprintf(frame, sizeof frame, "%s\n%s", channel, data);
  cr_assert_eq(ws_client_send_text(c, frame, (size_t)n), WS_CLIENT_OK);
}

/* Stage 3: a publication is numbered and stored once, sent as one record per gateway with
 * subscribers, and written once per format to every local subscriber; a channel without
 * subscribers only stores it. */
Test(gateway_channels, publish_to_subscribers_on_two_gateways) {
  itest_cluster c;
  itest_cluster_init(&c, 2, 4, false);
  static const char *const extra[] = {"--channel-namespace", "news=history_size=100", NULL};
  itest_gateway_start(&gw, &c, "chan-pub1", NULL);
  itest_gateway_start(&gw2, &c, "chan-pub2", NULL);
  itest_processor_start(&proc, &c, "chan-pub", "publish", &(itest_daemon_opts){.extra = extra});

  ws_client *a = itest_connect_channels(&gw, "alice", "[\"*\"]");
  ws_client *b = itest_connect_channels(&gw2, "bob", "[\"*\"]");
  ws_client *d = itest_connect_channels(&gw2, "dave", "[\"*\"]");
  op_expect(a, "{\"wsgate\":\"subscribe\",\"channel\":\"news:eu\"}",
            "{\"wsgate\":\"subscribed\",\"channel\":\"news:eu\",\"epoch\":0,\"offset\":0}");
  op_expect(b, "{\"wsgate\":\"subscribe\",\"channel\":\"news:eu\"}",
            "{\"wsgate\":\"subscribed\",\"channel\":\"news:eu\",\"epoch\":0,\"offset\":0}");
  /* dave speaks MessagePack: {"wsgate":"subscribe","channel":"news:eu"} */
  static const uint8_t mp_sub[] = {0x82, 0xa6, 'w',  's', 'g', 'a', 't',  'e', 0xa9, 's', 'u', 'b',
                                   's',  'c',  'r',  'i', 'b', 'e', 0xa7, 'c', 'h',  'a', 'n', 'n',
                                   'e',  'l',  0xa7, 'n', 'e', 'w', 's',  ':', 'e',  'u'};
  cr_assert_eq(ws_client_send(d, WS_OP_BINARY, mp_sub, sizeof mp_sub), WS_CLIENT_OK);
  ws_message m;
  itest_expect_msg(d, WS_OP_BINARY, &m, ITEST_TIMEOUT_MS);
  cr_assert_eq(itest_gws_members(&gw, "news:eu", 2), 2);

  ws_client *p = itest_connect_channels(&gw, "pat", "[]");
  publish(p, "news:eu", "hello \"eu\"");
  unsigned long long e1 = itest_expect_pub(a, "news:eu", 1, "\"hello \\\"eu\\\"\"");
  unsigned long long e2 = itest_expect_pub(b, "news:eu", 1, "\"hello \\\"eu\\\"\"");
  cr_expect(e1 > 0 && e1 == e2);
  itest_expect_msg(d, WS_OP_BINARY, &m, ITEST_TIMEOUT_MS);
  cr_expect(m.len > 10 && m.data[0] == 0x85 && memmem(m.data, m.len, "hello \"eu\"", 10),
            "a MessagePack publication");
  publish(p, "news:eu", "two");
  itest_expect_pub(a, "news:eu", 2, "\"two\"");
  itest_expect_pub(b, "news:eu", 2, "\"two\"");

  /* One record per gateway per publication, whatever the subscribers. */
  cr_expect_eq(itest_metric(proc.http_port, "wsgate_processor_channel_publish_records_total"), 4);
  cr_expect_eq(itest_metric(gw2.http_port, "wsgate_gateway_channel_deliveries_total"), 4);
  char key[256];
  snprintf(key, sizeof key, "%sch:{c:news:eu}:h", c.prefix);
  cr_expect_eq(redis_int("XLEN %s", key), 2, "stored once each in the history");

  /* Nobody subscribed: stored (offset counted), nothing sent; the default namespace keeps no
   * history. */
  publish(p, "quiet", "x");
  snprintf(key, sizeof key, "%sch:{c:quiet}:m", c.prefix);
  for (int i = 0; i < 100 && redis_int("HGET %s o", key) != 1; i++)
    usleep(50 * 1000);
  cr_expect_eq(redis_int("HGET %s o", key), 1);
  cr_expect_eq(itest_metric(proc.http_port,
                            "wsgate_processor_channel_publications_total{result=\"nobody\"}"),
               1);
  snprintf(key, sizeof key, "%sch:{c:quiet}:h", c.prefix);
  cr_expect_eq(redis_int("EXISTS %s", key), 0);
  ws_client_destroy(a);
  ws_client_destroy(b);
  ws_client_destroy(d);
  ws_client_destroy(p);
}

/* --- stage 4: recovery across gateways ----------------------------------------------------- */

#define STREAM_N 3000 /* publications, one per millisecond */

typedef struct {
  ws_client *c;
  int sent;
} streamer;

static void *stream_main(void *arg) {
  streamer *st = arg;
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 1; i <= STREAM_N; i++) {
    char frame[64];
    int n = snprintf(frame, sizeof frame, "live:t\n%d", i);
    if (ws_client_send_text(st->c, frame, (size_t)n) != WS_CLIENT_OK)
      break;
    st->sent = i;
    /* 1,000 per second: sleep until i ms after the start. */
    struct timespec due = {t0.tv_sec + i / 1000, t0.tv_nsec + (long)(i % 1000) * 1000000};
    if (due.tv_nsec >= 1000000000) {
      due.tv_sec++;
      due.tv_nsec -= 1000000000;
    }
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due, NULL);
  }
  return NULL;
}

/* Offset and epoch of a JSON publication frame; false for any other frame (kept in *kind). */
static bool pub_offset(const ws_message *m, unsigned long long *off, unsigned long long *epoch) {
  const char *d = (const char *)m->data;
  if (strncmp(d, "{\"wsgate\":\"pub\"", 15) != 0)
    return false;
  const char *o = strstr(d, "\"offset\":"), *e = strstr(d, "\"epoch\":");
  cr_assert(o && e, "%s", d);
  *off = strtoull(o + 9, NULL, 10);
  *epoch = strtoull(e + 8, NULL, 10);
  return true;
}

/* Receives publications on c until offset `until`, each exactly the one after *last. */
static void receive_in_order(ws_client *c, unsigned long long until, unsigned long long *last,
                             unsigned long long *epoch, bool (*stop)(unsigned long long)) {
  while (*last < until && !(stop && stop(*last))) {
    ws_message m;
    itest_expect_msg(c, WS_OP_TEXT, &m, ITEST_TIMEOUT_MS);
    unsigned long long off, ep;
    cr_assert(pub_offset(&m, &off, &ep), "expected a publication, got %.*s", (int)m.len, m.data);
    cr_assert_eq(off, *last + 1, "offset %llu after %llu: lost or repeated", off, *last);
    cr_assert(*epoch == 0 || ep == *epoch);
    *epoch = ep;
    *last = off;
  }
}

static bool at_1000(unsigned long long last) {
  return last >= 1000;
}

/* A subscriber that reconnects to the OTHER gateway during a 1,000 publications/s stream gets
 * every publication exactly once, in order: the missed ones from the history, then live. */
Test(gateway_channels, recover_on_the_other_gateway_during_a_stream, .timeout = 180) {
  itest_cluster c;
  itest_cluster_init(&c, 2, 4, false);
  static const char *const extra[] = {"--channel-namespace", "live=history_size=100000", NULL};
  itest_gateway_start(&gw, &c, "chan-rec1", NULL);
  itest_gateway_start(&gw2, &c, "chan-rec2", NULL);
  itest_processor_start(&proc, &c, "chan-rec", "publish", &(itest_daemon_opts){.extra = extra});

  ws_client *a = itest_connect_channels(&gw, "sam", "[\"live:*\"]");
  op_expect(a, "{\"wsgate\":\"subscribe\",\"channel\":\"live:t\"}",
            "{\"wsgate\":\"subscribed\",\"channel\":\"live:t\",\"epoch\":0,\"offset\":0}");
  cr_assert_eq(itest_gws_members(&gw, "live:t", 1), 1);

  streamer st = {.c = itest_connect_channels(&gw, "pub", "[]")};
  pthread_t th;
  cr_assert_eq(pthread_create(&th, NULL, stream_main, &st), 0);
  unsigned long long last = 0, epoch = 0;
  receive_in_order(a, STREAM_N, &last, &epoch, at_1000);
  ws_client_destroy(a); /* gone mid-stream: what follows must come back from the history */
  usleep(200 * 1000);

  ws_client *b = itest_connect_channels(&gw2, "sam", "[\"live:*\"]");
  char op[256];
  snprintf(op, sizeof op,
           "{\"wsgate\":\"subscribe\",\"id\":7,\"channel\":\"live:t\",\"since\":{\"offset\":%llu,"
           "\"epoch\":%llu}}",
           last, epoch);
  cr_assert_eq(ws_client_send_text(b, op, strlen(op)), WS_CLIENT_OK);
  ws_message m;
  itest_expect_msg(b, WS_OP_TEXT, &m, ITEST_TIMEOUT_MS);
  char want[128];
  snprintf(want, sizeof want, "\"recovered\":true,\"epoch\":%llu", epoch);
  cr_assert(strstr((const char *)m.data, "{\"wsgate\":\"subscribed\",\"id\":7,") &&
                strstr((const char *)m.data, want),
            "got %.*s", (int)m.len, m.data);
  receive_in_order(b, STREAM_N, &last, &epoch, NULL);
  pthread_join(th, NULL);
  cr_expect_eq(st.sent, STREAM_N);
  cr_expect_gt(itest_metric(gw2.http_port, "wsgate_gateway_channel_replayed_total"), 0);
  /* Nothing more: no duplicate after the last one. */
  cr_expect_neq(ws_client_recv(b, &m, 300), WS_CLIENT_OK, "a frame after the last: %.*s",
                (int)m.len, m.data);
  ws_client_destroy(b);
  ws_client_destroy(st.c);
}

/* --- stage 4: order at the gateway ----------------------------------------------------------- */

static void send_pub(const char *channel, uint64_t offset, uint64_t epoch, const char *data) {
  itest_send_pub(&gw, channel, offset, epoch, data);
}

static void history_add(const char *channel, uint64_t offset, uint64_t epoch, const char *data) {
  char km[256], kh[256], id[32], o[32], e[32];
  snprintf(km, sizeof km, "%sch:{c:%s}:m", gw.cluster.prefix, channel);
  snprintf(kh, sizeof kh, "%sch:{c:%s}:h", gw.cluster.prefix, channel);
  redisContext *r = redis_for(km); /* :m and :h share their hash tag */
  snprintf(id, sizeof id, "%llu-0", (unsigned long long)offset);
  snprintf(o, sizeof o, "%llu", (unsigned long long)offset);
  snprintf(e, sizeof e, "%llu", (unsigned long long)epoch);
  freeReplyObject(redisCommand(r, "XADD %s %s t 0 d %s", kh, id, data));
  freeReplyObject(redisCommand(r, "HSET %s e %s o %s", km, e, o));
  redisFree(r);
}

/* Records that arrive out of order (two processors): the early one waits while the gateway reads
 * the missing one from the history; one the history lacks is reported with a gap; duplicates
 * are dropped. Every subscriber sees offsets in order. */
Test(gateway_channels, early_publications_wait_for_the_history) {
  itest_gateway_start(&gw, NULL, "chan-order", NULL);
  ws_client *a = connect_with_channels("ann", "[\"*\"]");
  op_expect(a, "{\"wsgate\":\"subscribe\",\"channel\":\"ord\"}",
            "{\"wsgate\":\"subscribed\",\"channel\":\"ord\",\"epoch\":0,\"offset\":0}");
  const uint64_t E = 77;
  send_pub("ord", 1, E, "one");
  itest_expect_pub(a, "ord", 1, "\"one\"");
  history_add("ord", 2, E, "two"); /* stored, its record late */
  send_pub("ord", 3, E, "three");
  itest_expect_pub(a, "ord", 2, "\"two\"");
  itest_expect_pub(a, "ord", 3, "\"three\"");
  send_pub("ord", 2, E, "two");  /* the late record: a duplicate now */
  send_pub("ord", 5, E, "five"); /* 4 is nowhere */
  ws_message m;
  itest_expect_msg(a, WS_OP_TEXT, &m, ITEST_TIMEOUT_MS);
  cr_expect_str_eq((const char *)m.data,
                   "{\"wsgate\":\"gap\",\"channel\":\"ord\",\"from\":4,\"to\":4}");
  itest_expect_pub(a, "ord", 5, "\"five\"");
  cr_expect_eq(
      itest_metric(gw.http_port, "wsgate_gateway_channel_publications_total{result=\"duplicate\"}"),
      1);
  cr_expect_eq(itest_metric(gw.http_port, "wsgate_gateway_channel_filled_total"), 1);
  ws_client_destroy(a);
}

/* --- stage 5: presence ----------------------------------------------------------------------- */

/* Asks the `publish` handler for the presence of `channel` until its answer has `want`. */
static bool presence_has(ws_client *c, const char *channel, const char *want) {
  char q[128], got[1024] = "";
  snprintf(q, sizeof q, "?%s", channel);
  for (int i = 0; i < 50; i++) {
    cr_assert_eq(ws_client_send_text(c, q, strlen(q)), WS_CLIENT_OK);
    ws_message m;
    itest_expect_msg(c, WS_OP_TEXT, &m, ITEST_TIMEOUT_MS);
    snprintf(got, sizeof got, "%.*s", (int)m.len, m.data);
    if (strstr(got, want))
      return true;
    usleep(100 * 1000);
  }
  cr_log_error("presence of %s: %s", channel, got);
  return false;
}

/* Gateways record subscribers of a presence namespace in ch:{c:<channel>}:p:<member>;
 * wsgate_presence() lists them across gateways, ignores and removes the entries and count of a
 * member whose lease is gone or names another boot, and a connection that leaves leaves the
 * list. */
Test(gateway_channels, presence_across_gateways) {
  itest_cluster c;
  itest_cluster_init(&c, 2, 4, false);
  static const char *const extra[] = {"--channel-namespace", "room=presence=true", NULL};
  itest_gateway_start(&gw, &c, "chan-pres1", &(itest_daemon_opts){.extra = extra});
  itest_gateway_start(&gw2, &c, "chan-pres2", &(itest_daemon_opts){.extra = extra});
  itest_processor_start(&proc, &c, "chan-pres", "publish", &(itest_daemon_opts){.extra = extra});
  ws_client *a = itest_connect_channels(&gw, "amy", "[\"room:*\"]");
  ws_client *b = itest_connect_channels(&gw2, "ben", "[\"room:*\"]");
  op_expect(a, "{\"wsgate\":\"subscribe\",\"channel\":\"room:a\"}",
            "{\"wsgate\":\"subscribed\",\"channel\":\"room:a\",\"epoch\":0,\"offset\":0}");
  op_expect(b, "{\"wsgate\":\"subscribe\",\"channel\":\"room:a\"}",
            "{\"wsgate\":\"subscribed\",\"channel\":\"room:a\",\"epoch\":0,\"offset\":0}");
  /* A crashed gateway's subscriber and its count (its gw:<id> record is gone), and one of gw's
   * previous life (its record is there, with another boot: restarted under the same id). */
  char key[300], kc[256], mine[256], prev[300], kprev[700];
  snprintf(key, sizeof key, "%sch:{c:room:a}:p:gw-gone#0000000000000001", c.prefix);
  snprintf(kc, sizeof kc, "%sch:{c:room:a}:pc", c.prefix);
  itest_presence_member(&gw, "room:a", mine, NULL, sizeof mine);
  snprintf(prev, sizeof prev, "%s#%s", gw.id,
           strcmp(mine + strlen(gw.id) + 1, "00000000000000ff") ? "00000000000000ff"
                                                                : "00000000000000fe");
  snprintf(kprev, sizeof kprev, "%sch:{c:room:a}:p:%s", c.prefix, prev);
  redisContext *r = redis_for(key);
  freeReplyObject(redisCommand(r, "HSET %s 12345 ghost", key));
  freeReplyObject(redisCommand(r, "HSET %s gw-gone#0000000000000001 1", kc));
  freeReplyObject(redisCommand(r, "HSET %s 12346 zombie", kprev));
  freeReplyObject(redisCommand(r, "HSET %s %s 1", kc, prev));
  ws_client *q = itest_connect_channels(&gw, "quinn", "[]");
  cr_expect(presence_has(q, "room:a", "\"connections\":2,"));
  cr_expect(presence_has(q, "room:a", "\"amy\""));
  cr_expect(presence_has(q, "room:a", "\"ben\""));
  redisReply *rep = redisCommand(r, "EXISTS %s %s", key, kprev);
  cr_expect(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 0,
            "the dead members' entries were removed");
  freeReplyObject(rep);
  rep = redisCommand(r, "HLEN %s", kc);
  cr_expect(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 2, "and their counts");
  freeReplyObject(rep);
  ws_client_destroy(b);
  cr_expect(presence_has(q, "room:a", "\"connections\":1,\"users\":[\"amy\"]"));
  redisFree(r);
  ws_client_destroy(a);
  ws_client_destroy(q);
}

/* --- client publish --------------------------------------------------------------------------- */

/* A client publishes where its namespace allows it (the processor publishes it, the handler never
 * sees it: echo would send it back); elsewhere the gateway refuses it. */
Test(gateway_channels, client_publish_where_the_namespace_allows) {
  itest_cluster c;
  itest_cluster_init(&c, 2, 4, false);
  static const char *const extra[] = {"--channel-namespace", "talk=client_publish=true", NULL};
  itest_gateway_start(&gw, &c, "chan-cpub", &(itest_daemon_opts){.extra = extra});
  itest_processor_start(&proc, &c, "chan-cpub", "echo", &(itest_daemon_opts){.extra = extra});
  ws_client *a = itest_connect_channels(&gw, "ann", "[\"talk:*\",\"news:*\"]");
  ws_client *b = itest_connect_channels(&gw, "bea", "[\"talk:*\"]");
  op_expect(a, "{\"wsgate\":\"subscribe\",\"channel\":\"talk:x\"}",
            "{\"wsgate\":\"subscribed\",\"channel\":\"talk:x\",\"epoch\":0,\"offset\":0}");
  const char *op = "{\"wsgate\":\"publish\",\"channel\":\"talk:x\",\"data\":\"hi \\\"all\\\"\"}";
  cr_assert_eq(ws_client_send_text(b, op, strlen(op)), WS_CLIENT_OK);
  itest_expect_pub(a, "talk:x", 1, "\"hi \\\"all\\\"\"");
  op_expect(a, "{\"wsgate\":\"publish\",\"id\":4,\"channel\":\"news:eu\",\"data\":\"x\"}",
            "{\"wsgate\":\"error\",\"id\":4,\"op\":\"publish\",\"code\":\"publish_not_allowed\","
            "\"message\":\"clients may not publish to this channel's namespace "
            "(client_publish=false)\"}");
  op_expect(b, "{\"wsgate\":\"publish\",\"channel\":\"news:eu\",\"data\":\"x\"}",
            "{\"wsgate\":\"error\",\"op\":\"publish\",\"code\":\"forbidden\",\"message\":\"the "
            "token does not allow this channel\"}");
  ws_message m;
  cr_expect_neq(ws_client_recv(b, &m, 300), WS_CLIENT_OK, "the handler saw the op: %.*s",
                (int)m.len, m.data);
  ws_client_destroy(a);
  ws_client_destroy(b);
}

/* A history far larger than the send queue is replayed in pages paced by the queue: the client is
 * not closed as a slow consumer, and gets every publication once, in order. */
Test(gateway_channels, history_larger_than_the_send_queue) {
  static const char *const extra[] = {"--sendq-soft", "16k", "--sendq-hard", "64k", NULL};
  itest_gateway_start(&gw, NULL, "chan-big", &(itest_daemon_opts){.extra = extra});
  const uint64_t E = 99;
  const int N = 2000; /* x 200 bytes: 400 KB, six times the hard limit */
  char data[201];
  memset(data, 'h', 200);
  data[200] = '\0';
  char km[256], kh[256];
  snprintf(km, sizeof km, "%sch:{c:big}:m", gw.cluster.prefix);
  snprintf(kh, sizeof kh, "%sch:{c:big}:h", gw.cluster.prefix);
  redisContext *r = redis_for(km);
  for (int i = 1; i <= N; i++)
    redisAppendCommand(r, "XADD %s %d-0 t 0 d %s", kh, i, data);
  for (int i = 1; i <= N; i++) {
    redisReply *rep;
    cr_assert_eq(redisGetReply(r, (void **)&rep), REDIS_OK);
    freeReplyObject(rep);
  }
  freeReplyObject(redisCommand(r, "HSET %s e %llu o %d", km, (unsigned long long)E, N));
  redisFree(r);

  ws_client *a = connect_with_channels("bo", "[\"*\"]");
  op_expect(a,
            "{\"wsgate\":\"subscribe\",\"channel\":\"big\",\"since\":{\"offset\":0,\"epoch\":99}}",
            "{\"wsgate\":\"subscribed\",\"channel\":\"big\",\"recovered\":true,\"epoch\":99,"
            "\"offset\":2000}");
  unsigned long long last = 0, epoch = E;
  receive_in_order(a, (unsigned long long)N, &last, &epoch, NULL);
  cr_expect_eq(itest_metric(gw.http_port, "wsgate_gateway_channel_replayed_total"), N);
  cr_expect_eq(itest_metric(gw.http_port, "wsgate_gateway_closes_total{code=\"4001\"}"), 0);
  ws_client_destroy(a);
}
