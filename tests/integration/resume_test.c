/*
 * Resume after reconnect (docs/PROTOCOL.md, "Resume after reconnect"), with real gateways, a
 * real chat processor, Kafka and Redis. Messages are direct messages from a sender whose `msg`
 * envelopes the test produces itself, so the sender is never disturbed by what the receivers go
 * through:
 *   - a receiver disconnects, messages are sent to it, it reconnects to the OTHER gateway and
 *     gets exactly the missed ones in order, the sync frame, then new ones;
 *   - a gap beyond the window (--resume-max on the gateway; the stream expired after the
 *     processor's --resume-ttl) is reported as not recovered, with what could still be replayed;
 *   - a rolling restart of both gateways under load (each drained with SIGTERM, replaced by a new
 *     process) loses nothing: every receiver gets every message exactly once, in order, with
 *     consecutive q and no gap, checked by the test itself.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "harness.h"
#include "harness_kafka.h"
#include "wsg_redis_keys.h"

#define RECV_MS   20000
#define SEQ_PROTO "wsgate.v1+seq"

/* --- clients -------------------------------------------------------------------------------- */

/* Connects `user` to gateway g with subprotocol wsgate.v1+seq, and ?resume=<resume> unless 0.
 * Returns the client, or NULL with the status in *status when the upgrade was refused. */
static ws_client *seq_try_connect(const itest_gateway *g, const char *user, uint64_t resume,
                                  int *status) {
  char auth[2100], path[64] = "/";
  snprintf(auth, sizeof(auth), "Authorization: Bearer %s", itest_token(user, 600));
  if (resume)
    snprintf(path, sizeof(path), "/?resume=%llu", (unsigned long long)resume);
  const char *headers[] = {auth, NULL};
  ws_client_options o = {.port = g->port,
                         .path = path,
                         .headers = headers,
                         .subprotocol = SEQ_PROTO,
                         .timeout_ms = 10000};
  ws_client *c = NULL;
  ws_http_response resp;
  char err[256];
  int rc = ws_client_connect(&c, &o, &resp, err, sizeof(err));
  *status = rc == WS_CLIENT_OK ? 101 : resp.status;
  if (rc == WS_CLIENT_OK)
    cr_assert_str_eq(resp.protocol, SEQ_PROTO, "the gateway must echo the +seq subprotocol");
  return rc == WS_CLIENT_OK ? c : NULL;
}

static ws_client *seq_connect(const itest_gateway *g, const char *user, uint64_t resume) {
  int status;
  ws_client *c = seq_try_connect(g, user, resume, &status);
  cr_assert_not_null(c, "upgrade of %s to %s refused with %d", user, g->id, status);
  return c;
}

/* One frame of a resumable connection: "<q>\n" + message, "\n" + message, or "wsgate\n" + JSON. */
typedef enum { FR_SEQ, FR_UNSEQ, FR_CONTROL } frame_kind;

typedef struct {
  frame_kind kind;
  uint64_t q;
  const char *body; /* after the header's newline, NUL-terminated by ws_client */
  size_t len;
} frame;

static frame parse_frame(const ws_message *m) {
  cr_assert(m->opcode == WS_OP_TEXT || m->opcode == WS_OP_BINARY, "opcode %d", m->opcode);
  const char *d = (const char *)m->data;
  const char *nl = memchr(d, '\n', m->len);
  cr_assert_not_null(nl, "a +seq frame without a header: %.*s", (int)m->len, d);
  frame f = {.body = nl + 1, .len = m->len - (size_t)(nl + 1 - d)};
  size_t hl = (size_t)(nl - d);
  if (hl == 0) {
    f.kind = FR_UNSEQ;
  } else if (hl == 6 && memcmp(d, "wsgate", 6) == 0) {
    f.kind = FR_CONTROL;
  } else {
    f.kind = FR_SEQ;
    for (size_t i = 0; i < hl; i++) {
      cr_assert(d[i] >= '0' && d[i] <= '9', "bad header: %.*s", (int)hl, d);
      f.q = f.q * 10 + (uint64_t)(d[i] - '0');
    }
  }
  return f;
}

static json_t *body_json(const frame *f) {
  json_t *j = json_loadb(f->body, f->len, 0, NULL);
  cr_assert_not_null(j, "not JSON: %.*s", (int)f->len, f->body);
  return j;
}

static uint64_t jint(json_t *j, const char *key) {
  json_t *v = json_object_get(j, key);
  cr_assert(json_is_integer(v), "no integer \"%s\"", key);
  return (uint64_t)json_integer_value(v);
}

/* The next frame must be the sync control frame; returns it (caller decrefs). */
static json_t *expect_sync(ws_client *c) {
  ws_message m;
  itest_recv(c, &m, RECV_MS);
  frame f = parse_frame(&m);
  cr_assert_eq(f.kind, FR_CONTROL, "expected the sync frame, got: %.*s", (int)m.len,
               (const char *)m.data);
  json_t *j = body_json(&f);
  cr_assert_str_eq(json_string_value(json_object_get(j, "type")), "sync");
  return j;
}

/* The next frame must be message q, a dm whose text is `text`. */
static void expect_dm(ws_client *c, uint64_t q, const char *text) {
  ws_message m;
  itest_recv(c, &m, RECV_MS);
  frame f = parse_frame(&m);
  cr_assert_eq(f.kind, FR_SEQ, "expected message %llu, got: %.*s", (unsigned long long)q,
               (int)m.len, (const char *)m.data);
  cr_assert_eq(f.q, q, "expected q %llu, got %llu", (unsigned long long)q, (unsigned long long)f.q);
  json_t *j = body_json(&f);
  cr_assert_str_eq(json_string_value(json_object_get(j, "type")), "dm");
  cr_assert_str_eq(json_string_value(json_object_get(j, "text")), text);
  json_decref(j);
}

/* --- sending -------------------------------------------------------------------------------- */

/* A direct message from "alice" (a connection on a gateway that does not exist: the processor's
 * "offline" fallbacks to her go to a slot no real gateway accepts) to `to`. */
static void send_dm(rd_kafka_t *p, const itest_cluster *c, const char *to, const char *text) {
  char body[256];
  snprintf(body, sizeof(body), "{\"op\":\"dm\",\"to\":\"%s\",\"text\":\"%s\"}", to, text);
  wsg_envelope e = itest_msg("alice", 77, "gw-load", 0, body, strlen(body), false);
  itest_produce(p, c, &e);
}

typedef struct {
  redisContext *rc;
  const itest_cluster *c;
  const char *user;
  uint64_t want;
} counter_wait;

/* The user's sequence counter, 0 when absent. */
static uint64_t counter_of(redisContext *rc, const itest_cluster *c, const char *user) {
  char key[WSG_REDIS_KEY_MAX];
  int n = wsg_key_replay_seq(key, sizeof(key), c->prefix, user, strlen(user));
  redisReply *r = itest_redis_cmd(rc, "GET %b", key, (size_t)n);
  cr_assert_not_null(r);
  uint64_t v = r->type == REDIS_REPLY_STRING ? strtoull(r->str, NULL, 10) : 0;
  freeReplyObject(r);
  return v;
}

static bool counter_reached(void *arg) {
  counter_wait *w = arg;
  return counter_of(w->rc, w->c, w->user) >= w->want;
}

typedef struct {
  redisContext *rc;
  const itest_cluster *c;
  const char *user;
} stream_wait;

/* The user's replay stream has expired (--resume-ttl). */
static bool stream_gone(void *arg) {
  stream_wait *w = arg;
  char key[WSG_REDIS_KEY_MAX];
  int n = wsg_key_replay(key, sizeof(key), w->c->prefix, w->user, strlen(w->user));
  redisReply *r = itest_redis_cmd(w->rc, "EXISTS %b", key, (size_t)n);
  cr_assert_not_null(r);
  bool gone = r->type == REDIS_REPLY_INTEGER && r->integer == 0;
  freeReplyObject(r);
  return gone;
}

/* Waits until the processor has numbered and stored message `q` of `user`. */
static void wait_stored(const itest_cluster *c, const char *user, uint64_t q) {
  counter_wait w = {itest_redis_connect(), c, user, q};
  bool ok = itest_wait_until(counter_reached, &w, ITEST_TIMEOUT_MS);
  uint64_t got = counter_of(w.rc, c, user);
  redisFree(w.rc);
  cr_assert(ok, "%s: counter %llu, want %llu", user, (unsigned long long)got,
            (unsigned long long)q);
}

/* ------------------------------------------------------------------------------------------- */

Test(resume, reconnect_to_the_other_gateway_gets_exactly_the_missed_ones, .timeout = 180,
     .fini = itest_fini) {
  itest_cluster c;
  itest_cluster_init(&c, 4, 4, false);
  itest_gateway a, b;
  itest_gateway_start(&a, &c, "gw-a", NULL);
  itest_gateway_start(&b, &c, "gw-b", NULL);
  itest_processor p;
  itest_processor_start(&p, &c, "chat", "chat", NULL);
  rd_kafka_t *prod = itest_producer();

  /* A fresh resumable connection learns its position first. */
  ws_client *bob = seq_connect(&a, "bob", 0);
  json_t *s = expect_sync(bob);
  cr_assert(json_is_null(json_object_get(s, "resume")));
  cr_assert(json_is_true(json_object_get(s, "complete")));
  uint64_t pos = jint(s, "last");
  cr_assert_gt(pos, 0);
  json_decref(s);

  char text[32];
  for (int i = 1; i <= 3; i++) {
    snprintf(text, sizeof(text), "m%d", i);
    send_dm(prod, &c, "bob", text);
  }
  itest_flush(prod);
  for (int i = 1; i <= 3; i++) {
    snprintf(text, sizeof(text), "m%d", i);
    expect_dm(bob, pos + (uint64_t)i, text);
  }
  uint64_t last = pos + 3;
  ws_message m;
  cr_assert_eq(ws_client_close(bob, 1000, "bye", &m, 5000), WS_CLIENT_OK);
  ws_client_destroy(bob);

  /* Away: five messages are sent to bob and stored for him. */
  for (int i = 4; i <= 8; i++) {
    snprintf(text, sizeof(text), "m%d", i);
    send_dm(prod, &c, "bob", text);
  }
  itest_flush(prod);
  wait_stored(&c, "bob", pos + 8);

  /* Back, through the other gateway: exactly m4..m8 in order, then the sync, then new ones. */
  bob = seq_connect(&b, "bob", last);
  for (int i = 4; i <= 8; i++) {
    snprintf(text, sizeof(text), "m%d", i);
    expect_dm(bob, pos + (uint64_t)i, text);
  }
  s = expect_sync(bob);
  cr_assert_eq(jint(s, "resume"), last);
  cr_assert_eq(jint(s, "last"), pos + 8);
  cr_assert_eq(jint(s, "replayed"), 5);
  cr_assert(json_is_true(json_object_get(s, "complete")));
  json_decref(s);
  send_dm(prod, &c, "bob", "m9");
  itest_flush(prod);
  expect_dm(bob, pos + 9, "m9");
  /* Nothing else: no duplicate of anything already received. */
  cr_assert_eq(ws_client_recv(bob, &m, 500), WS_CLIENT_TIMEOUT, "unexpected frame: %.*s",
               (int)m.len, (const char *)m.data);
  cr_assert_eq(itest_metric(b.http_port, "wsgate_gateway_resumes_total{result=\"complete\"}"), 1);
  cr_assert_geq(itest_metric(b.http_port, "wsgate_gateway_replayed_messages_total"), 5);

  /* A resume point needs the +seq subprotocol, and must be a q (1 .. 2^53-1). */
  static const struct {
    const char *path, *proto;
  } bad[] = {{"/?resume=12", "wsgate.v1"},
             {"/?resume=abc", SEQ_PROTO},
             {"/?resume=0", SEQ_PROTO},
             {"/?resume=9007199254740992", SEQ_PROTO}};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    ws_client *x = NULL;
    ws_http_response resp;
    ws_client_options o = {
        .port = b.port, .path = bad[i].path, .subprotocol = bad[i].proto, .timeout_ms = 5000};
    cr_assert_eq(ws_client_connect(&x, &o, &resp, NULL, 0), WS_CLIENT_REFUSED, "%s", bad[i].path);
    cr_assert_eq(resp.status, 400, "%s: %d", bad[i].path, resp.status);
    cr_assert_not_null(strstr(resp.body, "invalid_resume"), "%s: %s", bad[i].path, resp.body);
  }

  ws_client_destroy(bob);
  rd_kafka_destroy(prod);
  itest_processor_cleanup(&p);
  itest_gateway_cleanup(&a);
  itest_gateway_cleanup(&b);
}

/* ?token=<JWT>&resume=<q>: the resume after a long token is honoured (libwebsockets 4.1.6 stops
 * looking for a query argument at the first one longer than the buffer it is given, which made
 * the gateway ignore this resume and answer a sync with "resume": null). */
Test(resume, resume_after_a_token_in_the_query_is_honoured, .timeout = 120, .fini = itest_fini) {
  itest_cluster c;
  itest_cluster_init(&c, 4, 4, false);
  itest_gateway a;
  itest_gateway_start(&a, &c, "gw-a", NULL);
  ws_client *bob = seq_connect(&a, "bob", 0);
  json_t *s = expect_sync(bob);
  uint64_t pos = jint(s, "last");
  json_decref(s);
  ws_message m;
  cr_assert_eq(ws_client_close(bob, 1000, "bye", &m, 5000), WS_CLIENT_OK);
  ws_client_destroy(bob);

  char path[2300];
  snprintf(path, sizeof(path), "/?token=%s&resume=%llu", itest_token("bob", 600),
           (unsigned long long)pos);
  ws_client_options o = {
      .port = a.port, .path = path, .subprotocol = SEQ_PROTO, .timeout_ms = 10000};
  ws_http_response resp;
  char err[256];
  cr_assert_eq(ws_client_connect(&bob, &o, &resp, err, sizeof(err)), WS_CLIENT_OK, "%s", err);
  s = expect_sync(bob);
  cr_assert(json_is_integer(json_object_get(s, "resume")), "the gateway ignored ?resume=");
  cr_assert_eq(jint(s, "resume"), pos);
  json_decref(s);
  ws_client_destroy(bob);
}

Test(resume, a_gap_beyond_the_window_is_reported_as_not_recovered, .timeout = 180,
     .fini = itest_fini) {
  itest_cluster c;
  itest_cluster_init(&c, 4, 4, false);
  itest_gateway a, b;
  itest_gateway_start(&a, &c, "gw-a", NULL);
  const char *small[] = {"--resume-max", "3", NULL};
  itest_gateway_start(&b, &c, "gw-b-max3", &(itest_daemon_opts){.extra = small});
  /* Streams expire 2 s after the last message; counters live on. */
  const char *ttl[] = {"--resume-ttl", "2s", NULL};
  itest_processor p;
  itest_processor_start(&p, &c, "chat", "chat", &(itest_daemon_opts){.extra = ttl});
  rd_kafka_t *prod = itest_producer();

  ws_client *bob = seq_connect(&a, "bob", 0);
  json_t *s = expect_sync(bob);
  uint64_t pos = jint(s, "last");
  json_decref(s);
  ws_client_destroy(bob);

  /* Count: six missed, the gateway replays at most three: the latest three, and says so. */
  char text[32];
  for (int i = 1; i <= 6; i++) {
    snprintf(text, sizeof(text), "m%d", i);
    send_dm(prod, &c, "bob", text);
  }
  itest_flush(prod);
  wait_stored(&c, "bob", pos + 6);
  bob = seq_connect(&b, "bob", pos);
  for (int i = 4; i <= 6; i++) {
    snprintf(text, sizeof(text), "m%d", i);
    expect_dm(bob, pos + (uint64_t)i, text);
  }
  s = expect_sync(bob);
  cr_assert(json_is_false(json_object_get(s, "complete")), "m1..m3 were not replayed");
  cr_assert_eq(jint(s, "replayed"), 3);
  cr_assert_eq(jint(s, "last"), pos + 6);
  json_decref(s);
  ws_client_destroy(bob);
  cr_assert_eq(itest_metric(b.http_port, "wsgate_gateway_resumes_total{result=\"incomplete\"}"), 1);

  /* Age: the stream expires (--resume-ttl); the counter still says what was sent. */
  send_dm(prod, &c, "bob", "m7");
  itest_flush(prod);
  wait_stored(&c, "bob", pos + 7);
  stream_wait sw = {itest_redis_connect(), &c, "bob"};
  cr_assert(itest_wait_until(stream_gone, &sw, ITEST_TIMEOUT_MS),
            "the replay stream did not expire");
  redisContext *rc = sw.rc;
  cr_assert_eq(counter_of(rc, &c, "bob"), pos + 7, "the counter outlives the stream");
  redisFree(rc);
  bob = seq_connect(&a, "bob", pos + 6);
  s = expect_sync(bob);
  cr_assert(json_is_false(json_object_get(s, "complete")), "m7 expired unseen");
  cr_assert_eq(jint(s, "replayed"), 0);
  cr_assert_eq(jint(s, "last"), pos + 7, "the client's new position is past the loss");
  json_decref(s);
  /* And a client that missed nothing is told so although the stream is gone. */
  ws_client_destroy(bob);
  bob = seq_connect(&b, "bob", pos + 7);
  s = expect_sync(bob);
  cr_assert(json_is_true(json_object_get(s, "complete")));
  cr_assert_eq(jint(s, "last"), pos + 7);
  json_decref(s);
  send_dm(prod, &c, "bob", "m8");
  itest_flush(prod);
  expect_dm(bob, pos + 8, "m8");

  ws_client_destroy(bob);
  rd_kafka_destroy(prod);
  itest_processor_cleanup(&p);
  itest_gateway_cleanup(&a);
  itest_gateway_cleanup(&b);
}

/* --- out of order on the live path ---------------------------------------------------------- */

/* Stores a message for `user` as a processor does (the append script); returns its q. */
static uint64_t store(redisContext *rc, const itest_cluster *c, const char *user,
                      const char *text) {
  char skey[WSG_REDIS_KEY_MAX], qkey[WSG_REDIS_KEY_MAX];
  int sl = wsg_key_replay(skey, sizeof(skey), c->prefix, user, strlen(user));
  int ql = wsg_key_replay_seq(qkey, sizeof(qkey), c->prefix, user, strlen(user));
  redisReply *r = itest_redis_cmd(rc, "EVAL %s 2 %b %b 1000 300000 86400000 d %s",
                                  WSG_LUA_REPLAY_APPEND, skey, (size_t)sl, qkey, (size_t)ql, text);
  cr_assert(r && r->type == REDIS_REPLY_INTEGER, "append: %s", r ? r->str : "no reply");
  uint64_t q = (uint64_t)r->integer;
  freeReplyObject(r);
  return q;
}

/* A deliver of `text` with q to connection `conn` of gateway g, produced to its slot. */
static void deliver_q(rd_kafka_t *p, const itest_cluster *c, const itest_gateway *g, uint64_t conn,
                      uint64_t q, const char *text) {
  wsg_envelope e = {.kind = WSG_ENV_DELIVER,
                    .fields = WSG_F_GATEWAY | WSG_F_SLOT | WSG_F_CONN | WSG_F_USEQ | WSG_F_DATA,
                    .gateway = g->id,
                    .gateway_len = strlen(g->id),
                    .slot = (uint32_t)g->slot,
                    .conn = conn,
                    .user_seq = q,
                    .data = (const uint8_t *)text,
                    .data_len = strlen(text)};
  wsg_buf b;
  wsg_buf_init(&b, 0);
  cr_assert_eq(wsg_envelope_encode(&e, &b), WSG_ENV_OK);
  rd_kafka_resp_err_t err = rd_kafka_producev(
      p, RD_KAFKA_V_TOPIC(c->out_topic), RD_KAFKA_V_PARTITION(g->slot),
      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_VALUE(b.data, b.len), RD_KAFKA_V_END);
  cr_assert_eq(err, RD_KAFKA_RESP_ERR_NO_ERROR, "produce: %s", rd_kafka_err2str(err));
  wsg_buf_finish(&b);
  itest_flush(p);
}

/* The connection id of `user`'s only connection, from its Redis entry. */
static uint64_t conn_of(redisContext *rc, const itest_cluster *c, const char *user) {
  redisReply *r = itest_redis_cmd(rc, "HKEYS %suser:%s", c->prefix, user);
  cr_assert(r && r->type == REDIS_REPLY_ARRAY && r->elements == 1, "%s has no single entry", user);
  uint64_t id = strtoull(r->element[0]->str, NULL, 10);
  freeReplyObject(r);
  return id;
}

static void expect_text(ws_client *cl, uint64_t q, const char *text) {
  ws_message m;
  itest_recv(cl, &m, RECV_MS);
  frame f = parse_frame(&m);
  cr_assert_eq(f.kind, FR_SEQ, "expected message %llu, got: %.*s", (unsigned long long)q,
               (int)m.len, (const char *)m.data);
  cr_assert_eq(f.q, q, "expected q %llu, got %llu", (unsigned long long)q, (unsigned long long)f.q);
  cr_assert_eq(f.len, strlen(text));
  cr_assert_eq(memcmp(f.body, text, f.len), 0, "got %.*s", (int)f.len, f.body);
}

/* Two processors sending to one user at once can deliver q+1 before q: the gateway holds the
 * early one, reads the missing ones from the stream, drops the late duplicates, and reports what
 * the stream no longer has. */
Test(resume, early_messages_wait_for_the_missing_ones, .timeout = 120, .fini = itest_fini) {
  itest_cluster c;
  itest_cluster_init(&c, 4, 4, false);
  itest_gateway a;
  itest_gateway_start(&a, &c, "gw-a", NULL);
  rd_kafka_t *prod = itest_producer();
  redisContext *rc = itest_redis_connect();

  ws_client *bob = seq_connect(&a, "bob", 0);
  json_t *s = expect_sync(bob);
  uint64_t pos = jint(s, "last");
  json_decref(s);
  uint64_t conn = conn_of(rc, &c, "bob");
  cr_assert_eq(store(rc, &c, "bob", "one"), pos + 1);
  cr_assert_eq(store(rc, &c, "bob", "two"), pos + 2);
  cr_assert_eq(store(rc, &c, "bob", "three"), pos + 3);

  /* "three" arrives first: one and two come from the stream, then three. */
  deliver_q(prod, &c, &a, conn, pos + 3, "three");
  expect_text(bob, pos + 1, "one");
  expect_text(bob, pos + 2, "two");
  expect_text(bob, pos + 3, "three");
  /* The late copies of one and two are dropped; an unsequenced reply passes. */
  deliver_q(prod, &c, &a, conn, pos + 1, "one");
  deliver_q(prod, &c, &a, conn, pos + 2, "two");
  deliver_q(prod, &c, &a, conn, 0, "reply");
  ws_message m;
  itest_recv(bob, &m, RECV_MS);
  frame f = parse_frame(&m);
  cr_assert_eq(f.kind, FR_UNSEQ, "got: %.*s", (int)m.len, (const char *)m.data);
  cr_assert_eq(f.len, 5);
  cr_assert_geq(itest_metric(a.http_port, "wsgate_gateway_sequence_duplicates_total"), 2);

  /* Four is gone from the stream (as if trimmed) when five arrives: a gap frame, then five. */
  uint64_t four = store(rc, &c, "bob", "four");
  char skey[WSG_REDIS_KEY_MAX];
  int sl = wsg_key_replay(skey, sizeof(skey), c.prefix, "bob", 3);
  redisReply *r = itest_redis_cmd(rc, "XDEL %b 0-%llu", skey, (size_t)sl, (unsigned long long)four);
  cr_assert(r && r->type == REDIS_REPLY_INTEGER && r->integer == 1);
  freeReplyObject(r);
  uint64_t five = store(rc, &c, "bob", "five");
  deliver_q(prod, &c, &a, conn, five, "five");
  itest_recv(bob, &m, RECV_MS);
  f = parse_frame(&m);
  cr_assert_eq(f.kind, FR_CONTROL, "expected a gap frame, got: %.*s", (int)m.len,
               (const char *)m.data);
  json_t *g = body_json(&f);
  cr_assert_str_eq(json_string_value(json_object_get(g, "type")), "gap");
  cr_assert_eq(jint(g, "from"), four);
  cr_assert_eq(jint(g, "to"), four);
  json_decref(g);
  expect_text(bob, five, "five");
  cr_assert_eq(itest_metric(a.http_port, "wsgate_gateway_sequence_gaps_total"), 1);

  ws_client_destroy(bob);
  redisFree(rc);
  rd_kafka_destroy(prod);
  itest_gateway_cleanup(&a);
}

/* --- the rolling restart -------------------------------------------------------------------- */

#define RECEIVERS     12
#define SEND_EVERY_MS 40 /* one message to every receiver: 300 messages a second */
#define GATEWAYS      2

typedef struct {
  char name[16];
  ws_client *c;
  int gw;            /* index of the gateway it is connected to */
  uint64_t last;     /* the last q received (its resume position) */
  uint64_t got;      /* messages received, in order */
  uint64_t sent;     /* messages sent to it */
  unsigned resumes;  /* reconnections with ?resume= */
  unsigned drained;  /* 1001 closes seen */
  uint64_t replayed; /* messages the syncs said were replayed */
  uint64_t retry_at; /* when to reconnect: the drain's reconnect hint, as a client would */
  bool synced;       /* the sync of the current connection arrived */
} receiver;

typedef struct {
  itest_gateway g;
  bool up;       /* admits clients (not draining, not stopped) */
  bool stopping; /* SIGTERM sent, not yet exited */
} slot_gw;

/* Connects r to any gateway that is up, as a balancer would; false if none admitted it. */
static bool rr_connect(receiver *r, slot_gw *gws, unsigned *rr) {
  for (int k = 0; k < GATEWAYS; k++) {
    int i = (int)((*rr)++ % GATEWAYS);
    if (!gws[i].up)
      continue;
    int status;
    r->c = seq_try_connect(&gws[i].g, r->name, r->last, &status);
    if (r->c) {
      r->gw = i;
      r->synced = false;
      if (r->last)
        r->resumes++;
      return true;
    }
    cr_assert(status == 503, "%s: upgrade refused with %d", r->name, status);
  }
  return false;
}

/* Handles everything r's connection has ready; returns false when it closed. */
static bool rr_drain(receiver *r) {
  for (;;) {
    ws_message m;
    int rc = ws_client_recv(r->c, &m, 0);
    if (rc == WS_CLIENT_TIMEOUT)
      return true;
    if (rc == WS_CLIENT_CLOSED || rc == WS_CLIENT_IO)
      return false;
    cr_assert_eq(rc, WS_CLIENT_OK, "%s: %s", r->name, ws_client_strerror(rc));
    if (m.opcode == WS_OP_PONG)
      continue;
    if (m.opcode == WS_OP_CLOSE) {
      cr_assert_eq(m.close_code, 1001, "%s: closed with %u %s", r->name, m.close_code,
                   m.close_reason);
      const char *hint = strstr(m.close_reason, "reconnect_ms=");
      cr_assert_not_null(hint, "no reconnect hint: %s", m.close_reason);
      /* Wait as told (0-999 ms): what is sent meanwhile can only come back by replay. */
      r->retry_at = itest_now_ms() + strtoull(hint + strlen("reconnect_ms="), NULL, 10);
      r->drained++;
      return false;
    }
    frame f = parse_frame(&m);
    json_t *j = body_json(&f);
    if (f.kind == FR_CONTROL) {
      const char *type = json_string_value(json_object_get(j, "type"));
      cr_assert_str_eq(type, "sync", "%s: control frame %.*s", r->name, (int)f.len, f.body);
      cr_assert(json_is_true(json_object_get(j, "complete")), "%s: incomplete resume: %.*s",
                r->name, (int)f.len, f.body);
      uint64_t last = jint(j, "last");
      cr_assert(r->last == 0 || last == r->last, "%s: sync at %llu, it received up to %llu",
                r->name, (unsigned long long)last, (unsigned long long)r->last);
      r->last = last;
      r->replayed += jint(j, "replayed");
      r->synced = true;
    } else {
      cr_assert_eq(f.kind, FR_SEQ, "%s: unsequenced frame %.*s", r->name, (int)f.len, f.body);
      cr_assert_eq(f.q, r->last + 1, "%s: q %llu after %llu (a gap or a duplicate)", r->name,
                   (unsigned long long)f.q, (unsigned long long)r->last);
      char want[48];
      snprintf(want, sizeof(want), "%s-%llu", r->name, (unsigned long long)r->got);
      const char *text = json_string_value(json_object_get(j, "text"));
      cr_assert(text && strcmp(text, want) == 0, "%s: got \"%s\", expected \"%s\"", r->name,
                text ? text : "(none)", want);
      r->last = f.q;
      r->got++;
    }
    json_decref(j);
  }
}

/* Polls every open connection for up to `ms`, handles what arrived, reconnects the closed. */
static void rr_step(receiver *rs, slot_gw *gws, unsigned *rr, int ms) {
  struct pollfd pfd[RECEIVERS];
  int idx[RECEIVERS], n = 0;
  bool buffered[RECEIVERS] = {false}, any_buffered = false;
  for (int i = 0; i < RECEIVERS; i++) {
    if (rs[i].c) {
      /* A frame that came with the upgrade response is already read: poll() would not wake. */
      buffered[n] = ws_client_buffered(rs[i].c) > 0;
      any_buffered |= buffered[n];
      pfd[n] = (struct pollfd){.fd = ws_client_fd(rs[i].c), .events = POLLIN};
      idx[n++] = i;
    }
  }
  if (n > 0 && poll(pfd, (nfds_t)n, any_buffered ? 0 : ms) < 0 && errno != EINTR)
    cr_assert_fail("poll: %s", strerror(errno));
  for (int k = 0; k < n; k++) {
    receiver *r = &rs[idx[k]];
    if ((buffered[k] || (pfd[k].revents & (POLLIN | POLLHUP | POLLERR))) && !rr_drain(r)) {
      ws_client_destroy(r->c);
      r->c = NULL;
    }
  }
  uint64_t now = itest_now_ms();
  for (int i = 0; i < RECEIVERS; i++)
    if (!rs[i].c && now >= rs[i].retry_at)
      rr_connect(&rs[i], gws, rr);
}

static uint64_t next_send;

static void rr_send(rd_kafka_t *prod, const itest_cluster *c, receiver *rs) {
  uint64_t now = itest_now_ms();
  while (next_send <= now) {
    for (int i = 0; i < RECEIVERS; i++) {
      char text[48];
      snprintf(text, sizeof(text), "%s-%llu", rs[i].name, (unsigned long long)rs[i].sent++);
      send_dm(prod, c, rs[i].name, text);
    }
    next_send += SEND_EVERY_MS;
  }
  rd_kafka_poll(prod, 0);
}

/* Runs the load for `ms` milliseconds (checking every frame as it arrives). */
static void rr_run(receiver *rs, slot_gw *gws, unsigned *rr, rd_kafka_t *prod,
                   const itest_cluster *c, uint64_t ms, bool sending) {
  uint64_t until = itest_now_ms() + ms;
  while (itest_now_ms() < until) {
    if (sending)
      rr_send(prod, c, rs);
    rr_step(rs, gws, rr, 5);
  }
}

/* Drains gateway i under load (SIGTERM, then until it exits, then a replacement is started). */
static void rr_roll(receiver *rs, slot_gw *gws, int i, unsigned *rr, rd_kafka_t *prod,
                    const itest_cluster *c, const char *name) {
  gws[i].up = false;
  cr_assert_eq(kill(gws[i].g.pid, SIGTERM), 0);
  int status = 0;
  uint64_t deadline = itest_now_ms() + ITEST_TIMEOUT_MS;
  while (itest_alive(gws[i].g.pid, &status)) {
    cr_assert_lt(itest_now_ms(), deadline, "gateway %s did not finish its drain", gws[i].g.id);
    rr_send(prod, c, rs);
    rr_step(rs, gws, rr, 5);
  }
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "gateway %s exited with %d", gws[i].g.id,
            status);
  itest_untrack(gws[i].g.pid);
  gws[i].g.pid = 0;
  for (int k = 0; k < RECEIVERS; k++)
    cr_assert(rs[k].gw != i || rs[k].c == NULL, "%s still connected to a stopped gateway",
              rs[k].name);
  /* The replacement starts while the load goes on; the messages sent meanwhile wait in Kafka
   * and in the connections' sockets. */
  itest_gateway_start(&gws[i].g, c, name, NULL);
  gws[i].up = true;
}

Test(resume, rolling_restart_of_both_gateways_under_load_loses_nothing, .timeout = 300,
     .fini = itest_fini) {
  itest_cluster c;
  itest_cluster_init(&c, 4, 4, false);
  slot_gw gws[GATEWAYS] = {0};
  itest_gateway_start(&gws[0].g, &c, "gw-a", NULL);
  itest_gateway_start(&gws[1].g, &c, "gw-b", NULL);
  gws[0].up = gws[1].up = true;
  itest_processor p;
  itest_processor_start(&p, &c, "chat", "chat", NULL);
  rd_kafka_t *prod = itest_producer();

  receiver rs[RECEIVERS];
  memset(rs, 0, sizeof(rs));
  unsigned rr = 0;
  for (int i = 0; i < RECEIVERS; i++) {
    snprintf(rs[i].name, sizeof(rs[i].name), "r%02d", i);
    cr_assert(rr_connect(&rs[i], gws, &rr));
  }
  /* Every receiver knows its position before the first message. */
  uint64_t deadline = itest_now_ms() + ITEST_TIMEOUT_MS;
  for (int i = 0; i < RECEIVERS; i++) {
    while (!rs[i].synced) {
      cr_assert_lt(itest_now_ms(), deadline, "%s: no sync", rs[i].name);
      rr_step(rs, gws, &rr, 10);
    }
  }

  next_send = itest_now_ms();
  rr_run(rs, gws, &rr, prod, &c, 1500, true);
  rr_roll(rs, gws, 0, &rr, prod, &c, "gw-a2");
  rr_run(rs, gws, &rr, prod, &c, 1500, true);
  rr_roll(rs, gws, 1, &rr, prod, &c, "gw-b2");
  rr_run(rs, gws, &rr, prod, &c, 1500, true);
  itest_flush(prod);

  /* Everything sent arrives: exactly once, in order (checked frame by frame in rr_drain). */
  deadline = itest_now_ms() + 60000;
  for (int i = 0; i < RECEIVERS; i++) {
    while (rs[i].got < rs[i].sent) {
      cr_assert_lt(itest_now_ms(), deadline, "%s: %llu of %llu messages", rs[i].name,
                   (unsigned long long)rs[i].got, (unsigned long long)rs[i].sent);
      rr_step(rs, gws, &rr, 10);
    }
  }
  rr_run(rs, gws, &rr, prod, &c, 300, false); /* and nothing more (no duplicate) */
  uint64_t total = 0, replayed = 0;
  unsigned resumes = 0, drained = 0;
  for (int i = 0; i < RECEIVERS; i++) {
    cr_assert_eq(rs[i].got, rs[i].sent, "%s: %llu received, %llu sent", rs[i].name,
                 (unsigned long long)rs[i].got, (unsigned long long)rs[i].sent);
    total += rs[i].got;
    replayed += rs[i].replayed;
    resumes += rs[i].resumes;
    drained += rs[i].drained;
  }
  /* Each receiver sat on one of the drained gateways at least once and resumed after it, and
   * what was sent while it waited came back by replay. */
  cr_assert_geq(drained, RECEIVERS, "drains seen: %u", drained);
  cr_assert_geq(resumes, drained);
  cr_assert_gt(replayed, 0, "no message was missed and replayed: the test proved nothing");
  fprintf(stderr,
          "rolling restart: %llu messages to %d receivers, %u drains, %u resumes, %llu "
          "replayed, none lost or duplicated\n",
          (unsigned long long)total, RECEIVERS, drained, resumes, (unsigned long long)replayed);

  for (int i = 0; i < RECEIVERS; i++)
    ws_client_destroy(rs[i].c);
  rd_kafka_destroy(prod);
  itest_processor_cleanup(&p);
  itest_gateway_cleanup(&gws[0].g);
  itest_gateway_cleanup(&gws[1].g);
}
