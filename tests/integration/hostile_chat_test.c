/*
 * Hostile MessagePack (and JSON) sent through a real gateway to a real processor running the chat
 * handler (reliability suite, docs/RELIABILITY.md). docs/HANDLERS.md documents the answer: a
 * malformed command is refused with an `error` frame, code `bad_request`, in the encoding of the
 * command (MessagePack for a binary frame), and counted as rejected; the connection stays open and
 * the processor keeps serving. The inputs are the classic decoder attacks: counts and lengths far
 * beyond the bytes that follow (allocation bombs), nesting beyond the limit, the never-valid byte
 * 0xc1, keys that are not strings, duplicate keys, wrong types, truncation, and random bytes.
 */
#include <criterion/criterion.h>
#include <msgpack.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"
#include "harness_kafka.h"

#define RECV_MS 20000

/* The `type` and `code` of a MessagePack map frame (empty strings if absent). */
static void mp_type_code(const ws_message *m, char *type, char *code, size_t len) {
  type[0] = code[0] = '\0';
  msgpack_unpacked up;
  msgpack_unpacked_init(&up);
  cr_assert_eq(msgpack_unpack_next(&up, (const char *)m->data, m->len, NULL),
               MSGPACK_UNPACK_SUCCESS, "the reply is not MessagePack");
  cr_assert_eq(up.data.type, MSGPACK_OBJECT_MAP, "the reply is not a map");
  for (uint32_t i = 0; i < up.data.via.map.size; i++) {
    msgpack_object k = up.data.via.map.ptr[i].key, v = up.data.via.map.ptr[i].val;
    if (k.type != MSGPACK_OBJECT_STR || v.type != MSGPACK_OBJECT_STR)
      continue;
    char *dst = k.via.str.size == 4 && memcmp(k.via.str.ptr, "type", 4) == 0   ? type
                : k.via.str.size == 4 && memcmp(k.via.str.ptr, "code", 4) == 0 ? code
                                                                               : NULL;
    if (dst)
      snprintf(dst, len, "%.*s", (int)v.via.str.size, v.via.str.ptr);
  }
  msgpack_unpacked_destroy(&up);
}

typedef struct {
  const char *name;
  const uint8_t *bytes;
  size_t len;
} hostile;

/* Array 32 of 2^32-1 elements in 5 bytes; map 32 likewise; str 32 and bin 32 of 4 GiB; ext 32. */
static const uint8_t bomb_array[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
static const uint8_t bomb_map[] = {0xdf, 0xff, 0xff, 0xff, 0xff};
static const uint8_t bomb_str[] = {0x81, 0xa2, 'o', 'p', 0xdb, 0xff, 0xff, 0xff, 0xff, 'j'};
static const uint8_t bomb_bin[] = {0x81, 0xa2, 'o', 'p', 0xc6, 0xff, 0xff, 0xff, 0xff};
static const uint8_t bomb_ext[] = {0xc9, 0xff, 0xff, 0xff, 0xff, 0x01};
static const uint8_t never_used[] = {0x81, 0xa2, 'o', 'p', 0xc1};
static const uint8_t int_key[] = {0x81, 0x01, 0xa4, 'j', 'o', 'i', 'n'};
static const uint8_t dup_key[] = {0x82, 0xa2, 'o', 'p',  0xa4, 'j', 'o', 'i', 'n',
                                  0xa2, 'o',  'p', 0xa4, 'l',  'e', 'f', 't'};
static const uint8_t op_int[] = {0x81, 0xa2, 'o', 'p', 0x2a};
static const uint8_t not_map[] = {0x93, 0x01, 0x02, 0x03};
static const uint8_t truncated[] = {0x82, 0xa2, 'o', 'p', 0xa4, 'j', 'o'};
static const uint8_t trailing[] = {0x81, 0xa2, 'o', 'p', 0xa4, 'j', 'o', 'i', 'n', 0xc0};
static const uint8_t empty[] = {0};

static const hostile cases[] = {
    {"array of 2^32-1 elements in 5 bytes", bomb_array, sizeof bomb_array},
    {"map of 2^32-1 pairs in 5 bytes", bomb_map, sizeof bomb_map},
    {"str 32 of 4 GiB", bomb_str, sizeof bomb_str},
    {"bin 32 of 4 GiB", bomb_bin, sizeof bomb_bin},
    {"ext 32 of 4 GiB", bomb_ext, sizeof bomb_ext},
    {"the never-used byte 0xc1", never_used, sizeof never_used},
    {"an integer key", int_key, sizeof int_key},
    {"a duplicate key", dup_key, sizeof dup_key},
    {"op as an integer", op_int, sizeof op_int},
    {"an array instead of a map", not_map, sizeof not_map},
    {"truncated", truncated, sizeof truncated},
    {"bytes after the map", trailing, sizeof trailing},
    {"an empty frame", empty, 0},
};

/* One command and its reply: must be an `error` frame with code bad_request. */
/* The next frame but the gateway's notices that a join subscribed the connection (JSON: no op
 * yet). They come once the channel's position is read, so before or after the `joined`. */
static void recv_reply(ws_client *c, ws_message *m) {
  do
    itest_recv(c, m, RECV_MS);
  while (m->opcode == WS_OP_TEXT && strstr((const char *)m->data, "\"wsgate\":\"subscribed\""));
}

static void expect_bad_request(ws_client *c, const char *what, const void *bytes, size_t len) {
  cr_assert_eq(ws_client_send(c, WS_OP_BINARY, bytes, len), WS_CLIENT_OK, "%s: send", what);
  ws_message m;
  itest_recv(c, &m, RECV_MS);
  cr_assert_eq(m.opcode, WS_OP_BINARY, "%s: a MessagePack command got a non-binary reply", what);
  char type[32], code[32];
  mp_type_code(&m, type, code, sizeof type);
  cr_assert_str_eq(type, "error", "%s: reply type %s", what, type);
  cr_assert_str_eq(code, "bad_request", "%s: error code %s", what, code);
}

Test(hostile_chat, malformed_messagepack_gets_bad_request_and_breaks_nothing, .timeout = 180,
     .fini = itest_fini) {
  itest_cluster cl;
  itest_cluster_init(&cl, 4, 4, false);
  itest_gateway g;
  itest_gateway_start(&g, &cl, "gw-hostile", NULL);
  itest_processor p;
  itest_processor_start(&p, &cl, "chat-hostile", "chat", NULL);
  ws_client *c = itest_connect(&g, "mallory");

  size_t n = sizeof cases / sizeof cases[0];
  for (size_t i = 0; i < n; i++)
    expect_bad_request(c, cases[i].name, cases[i].bytes, cases[i].len);

  /* Nesting far beyond the handler's limit of 4: {"op": [[[[...]]]]} 100 deep. */
  uint8_t deep[4 + 100];
  memcpy(deep, "\x81\xa2op", 4);
  memset(deep + 4, 0x91, 100);
  deep[sizeof deep - 1] = 0xc0;
  expect_bad_request(c, "100 levels of nesting", deep, sizeof deep);

  /* Random bytes: whatever they decode to, each gets an answer and nothing breaks. */
  srand(12345);
  uint8_t junk[256];
  int rounds = 200;
  for (int r = 0; r < rounds; r++) {
    size_t len = 1 + (size_t)(rand() % (int)sizeof junk);
    for (size_t k = 0; k < len; k++)
      junk[k] = (uint8_t)rand();
    cr_assert_eq(ws_client_send(c, WS_OP_BINARY, junk, len), WS_CLIENT_OK);
  }
  for (int r = 0; r < rounds; r++) {
    ws_message m;
    itest_recv(c, &m, RECV_MS);
    cr_assert_eq(m.opcode, WS_OP_BINARY, "random input %d: non-binary reply", r);
  }

  /* The same connection still works: a well-formed join is answered with `joined`. */
  const uint8_t join[] = {0x82, 0xa2, 'o', 'p', 0xa4, 'j', 'o', 'i', 'n', 0xa4,
                          'r',  'o',  'o', 'm', 0xa5, 'l', 'o', 'b', 'b', 'y'};
  cr_assert_eq(ws_client_send(c, WS_OP_BINARY, join, sizeof join), WS_CLIENT_OK);
  ws_message m;
  recv_reply(c, &m);
  char type[32], code[32];
  mp_type_code(&m, type, code, sizeof type);
  cr_assert_str_eq(type, "joined", "after the hostile input a join got %s/%s", type, code);

  /* JSON's equivalents in text frames: answered in JSON, same code. */
  const char *const json_bad[] = {"{", "[1,2,3]", "{\"op\":\"join\",\"op\":\"leave\"}",
                                  "{\"op\":42}", "\"\\ud800\""};
  for (size_t i = 0; i < sizeof json_bad / sizeof json_bad[0]; i++) {
    cr_assert_eq(ws_client_send_text(c, json_bad[i], strlen(json_bad[i])), WS_CLIENT_OK);
    recv_reply(c, &m);
    cr_assert_eq(m.opcode, WS_OP_TEXT, "JSON %s: non-text reply", json_bad[i]);
    cr_assert(strstr((const char *)m.data, "\"bad_request\""), "JSON %s: reply %s", json_bad[i],
              (const char *)m.data);
  }

  double rejected =
      itest_metric(p.http_port, "wsgate_processor_processed_total{result=\"rejected\"}");
  cr_assert_geq(rejected, (double)(n + 1 + 5), "only %.0f commands counted as rejected", rejected);
  ws_client_destroy(c);
  int status = itest_processor_stop(&p, SIGTERM, 30000);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the processor did not stop cleanly");
  itest_processor_cleanup(&p);
  itest_gateway_cleanup(&g);
}

/* Keys <prefix><kind>* (SCAN MATCH: inspection of this test's own prefix only). */
static long long keys_under(redisContext *rc, const char *prefix, const char *kind) {
  long long n = 0;
  char cursor[32] = "0";
  do {
    redisReply *r = redisCommand(rc, "SCAN %s MATCH %s%s* COUNT 1000", cursor, prefix, kind);
    cr_assert(r && r->type == REDIS_REPLY_ARRAY && r->elements == 2, "SCAN failed");
    snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
    n += (long long)r->element[1]->elements;
    freeReplyObject(r);
  } while (strcmp(cursor, "0") != 0);
  return n;
}

/*
 * Issue 16 item 6: one user joining thousands of rooms. Past max_rooms (32) every join is answered
 * `too_many_rooms` and stores nothing: Redis keeps one bounded set for the user, the gateway
 * subscribes the connection to 32 channels and no more, and the connection keeps working.
 */
Test(hostile_chat, a_join_flood_is_bounded_by_max_rooms, .timeout = 240, .fini = itest_fini) {
  enum { JOINS = 2000, WINDOW = 200, MAX_ROOMS = 32 };
  itest_cluster cl;
  itest_cluster_init(&cl, 4, 4, false);
  itest_gateway g;
  const char *const gw_flags[] = {"--rate-msgs", "0", "--rate-bytes", "0", NULL};
  itest_gateway_start(&g, &cl, "gw-joinflood", &(itest_daemon_opts){.extra = gw_flags});
  itest_processor p;
  itest_processor_start(&p, &cl, "chat-joinflood", "chat", NULL);
  redisContext *rc = itest_redis_connect();
  ws_client *c = itest_connect(&g, "flooder");

  int joined = 0, refused = 0, notices = 0;
  uint64_t t0 = itest_now_ms();
  char cmd[96];
  for (int base = 0; base < JOINS; base += WINDOW) {
    for (int i = base; i < base + WINDOW; i++) {
      int n = snprintf(cmd, sizeof cmd, "{\"op\":\"join\",\"room\":\"flood-%05d\"}", i);
      cr_assert_eq(ws_client_send_text(c, cmd, (size_t)n), WS_CLIENT_OK);
    }
    for (int got = 0; got < WINDOW;) {
      ws_message m;
      itest_recv(c, &m, RECV_MS);
      cr_assert_eq(m.opcode, WS_OP_TEXT);
      const char *d = (const char *)m.data;
      if (strstr(d, "\"wsgate\":\"subscribed\"")) {
        notices++;
        continue;
      }
      if (strstr(d, "\"type\":\"joined\""))
        joined++;
      else if (strstr(d, "\"too_many_rooms\""))
        refused++;
      else
        cr_assert_fail("unexpected answer %.*s", (int)m.len, d);
      got++;
    }
  }
  uint64_t took = itest_now_ms() - t0;
  cr_assert_eq(joined, MAX_ROOMS, "joins answered `joined`: %d", joined);
  cr_assert_eq(refused, JOINS - MAX_ROOMS, "joins refused: %d", refused);
  char key[256];
  snprintf(key, sizeof key, "%schat:{u:flooder}:rooms", cl.prefix);
  redisReply *r = redisCommand(rc, "SCARD %s", key);
  cr_assert(r && r->type == REDIS_REPLY_INTEGER && r->integer == MAX_ROOMS, "the set is bounded");
  freeReplyObject(r);
  r = redisCommand(rc, "MEMORY USAGE %s SAMPLES 0", key);
  cr_assert(r && r->type == REDIS_REPLY_INTEGER);
  long long bytes = r->integer;
  freeReplyObject(r);
  /* The user's rooms and encoding; per joined room its channel's gateway set, nothing else. */
  long long chat_keys = keys_under(rc, cl.prefix, "chat:");
  long long ch_keys = keys_under(rc, cl.prefix, "ch:");
  cr_assert_eq(chat_keys, 2, "chat keys the flood left: %lld", chat_keys);
  cr_assert_eq(ch_keys, MAX_ROOMS, "channel keys the flood left: %lld", ch_keys);
  long long keys = chat_keys + ch_keys;
  cr_log_info("join flood: %d joins answered in %llu ms, %d joined, %d refused (too_many_rooms), "
              "%d subscribed notices; %lld keys (chat and channel), the rooms set %lld bytes",
              JOINS, (unsigned long long)took, joined, refused, notices, keys, bytes);

  /* The connection still works: a say in a room it is in is published back to it. */
  const char *say = "{\"op\":\"say\",\"room\":\"flood-00000\",\"text\":\"still here\"}";
  cr_assert_eq(ws_client_send_text(c, say, strlen(say)), WS_CLIENT_OK);
  for (;;) {
    ws_message m;
    itest_recv(c, &m, RECV_MS);
    if (strstr((const char *)m.data, "\"wsgate\":\"subscribed\""))
      continue;
    cr_assert(strstr((const char *)m.data, "still here"), "got %.*s", (int)m.len,
              (const char *)m.data);
    break;
  }
  ws_client_destroy(c);
  redisFree(rc);
  int status = itest_processor_stop(&p, SIGTERM, 30000);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the processor did not stop cleanly");
  itest_processor_cleanup(&p);
  itest_gateway_cleanup(&g);
}
