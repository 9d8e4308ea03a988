/*
 * The chat handler: command parsing in both encodings (including hostile input: every bad frame
 * is refused with a reason, none crashes or allocates beyond its size), and the commands against a
 * real Redis through the processor's own dispatch, routing and outbox.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proc_chat.h"
#include "proc_testutil.h"

static const proc_chat_limits lim = {.max_frame = 16384, .max_text = 4096};

/* --- parsing ------------------------------------------------------------------------------- */

static int parse_json(const char *s, proc_chat_cmd *cmd, char *err, size_t errlen) {
  return proc_chat_parse((const uint8_t *)s, strlen(s), false, &lim, cmd, err, errlen);
}

/* Expects `s` to be refused with a message containing `needle`. */
static void refused_json(const char *s, const char *needle) {
  proc_chat_cmd cmd;
  char err[256] = "";
  int rc = parse_json(s, &cmd, err, sizeof(err));
  proc_chat_cmd_finish(&cmd);
  cr_assert_eq(rc, -1, "accepted %s", s);
  cr_assert(strstr(err, needle), "%s: error \"%s\" should mention \"%s\"", s, err, needle);
}

static void refused_bytes(const uint8_t *b, size_t len, bool binary, const char *needle) {
  proc_chat_cmd cmd;
  char err[256] = "";
  int rc = proc_chat_parse(b, len, binary, &lim, &cmd, err, sizeof(err));
  proc_chat_cmd_finish(&cmd);
  cr_assert_eq(rc, -1, "accepted %zu hostile bytes", len);
  cr_assert(strstr(err, needle), "error \"%s\" should mention \"%s\"", err, needle);
}

Test(proc_chat_parse, json_commands, .fini = ptest_fini) {
  proc_chat_cmd cmd;
  char err[256];
  cr_assert_eq(parse_json("{\"op\":\"join\",\"room\":\"lobby\",\"id\":7}", &cmd, err, sizeof(err)),
               0, "%s", err);
  cr_assert_eq(cmd.op, PROC_CHAT_JOIN);
  cr_assert_not(cmd.msgpack);
  cr_assert_eq(cmd.room_len, 5);
  cr_assert_eq(memcmp(cmd.room, "lobby", 5), 0);
  cr_assert_eq(cmd.id_kind, PROC_CHAT_ID_INT);
  cr_assert_eq(cmd.id_int, 7);
  proc_chat_cmd_finish(&cmd);

  cr_assert_eq(
      parse_json("{\"op\":\"say\",\"room\":\"r\",\"text\":\"h\\u00e9llo\",\"extra\":[1,{}]}", &cmd,
                 err, sizeof(err)),
      0, "unknown keys are ignored: %s", err);
  cr_assert_eq(cmd.op, PROC_CHAT_SAY);
  cr_assert_eq(cmd.text_len, 6);
  cr_assert_eq(memcmp(cmd.text, "h\xc3\xa9llo", 6), 0);
  proc_chat_cmd_finish(&cmd);

  cr_assert_eq(parse_json("{\"to\":\"bob\",\"text\":\"hi\",\"op\":\"dm\",\"id\":\"x-1\"}", &cmd,
                          err, sizeof(err)),
               0, "%s", err);
  cr_assert_eq(cmd.op, PROC_CHAT_DM);
  cr_assert_eq(cmd.to_len, 3);
  cr_assert_eq(cmd.id_kind, PROC_CHAT_ID_STR);
  proc_chat_cmd_finish(&cmd);

  cr_assert_eq(parse_json("{\"op\":\"leave\",\"room\":\"r\"}", &cmd, err, sizeof(err)), 0);
  cr_assert_eq(cmd.op, PROC_CHAT_LEAVE);
  proc_chat_cmd_finish(&cmd);
  cr_assert_eq(parse_json("{\"op\":\"members\",\"room\":\"r\"}", &cmd, err, sizeof(err)), 0);
  cr_assert_eq(cmd.op, PROC_CHAT_MEMBERS);
  proc_chat_cmd_finish(&cmd);
}

Test(proc_chat_parse, json_hostile, .fini = ptest_fini) {
  refused_json("", "empty");
  refused_json("{", "not valid JSON");
  refused_json("[1,2]", "JSON object");
  refused_json("\"join\"", "not valid JSON"); /* jansson refuses a bare string at top level */
  refused_json("{\"op\":\"join\",\"op\":\"leave\",\"room\":\"r\"}", "not valid JSON");
  refused_json("{\"room\":\"r\"}", "op: missing");
  refused_json("{\"op\":\"fly\",\"room\":\"r\"}", "op: unknown");
  refused_json("{\"op\":7,\"room\":\"r\"}", "op: must be a string");
  refused_json("{\"op\":\"join\"}", "room: missing");
  refused_json("{\"op\":\"join\",\"room\":\"\"}", "room: must not be empty");
  refused_json("{\"op\":\"join\",\"room\":5}", "room: must be a string");
  refused_json("{\"op\":\"join\",\"room\":\"a\\nb\"}", "control characters");
  refused_json("{\"op\":\"join\",\"room\":\"a\\u0000b\"}", "not valid JSON");
  refused_json("{\"op\":\"join\",\"room\":"
               "\"0123456789012345678901234567890123456789012345678901234567890123456789\"}",
               "room: longer than 64");
  refused_json("{\"op\":\"say\",\"room\":\"r\"}", "text: missing");
  refused_json("{\"op\":\"dm\",\"text\":\"x\"}", "to: missing");
  refused_json("{\"op\":\"dm\",\"to\":\"\",\"text\":\"x\"}", "to: must not be empty");
  refused_json("{\"op\":\"join\",\"room\":\"r\",\"id\":1.5}", "id: must be");
  refused_json("{\"op\":\"join\",\"room\":\"r\",\"id\":[1]}", "id: must be");
  /* Invalid UTF-8 inside a JSON string never gets past jansson. */
  refused_json("{\"op\":\"join\",\"room\":\"\xff\xfe\"}", "not valid JSON");

  /* Text just below and above the limit. */
  char *big = malloc(lim.max_text + 64);
  int n = snprintf(big, lim.max_text + 64, "{\"op\":\"say\",\"room\":\"r\",\"text\":\"");
  memset(big + n, 'x', lim.max_text + 1);
  strcpy(big + n + lim.max_text + 1, "\"}");
  refused_json(big, "text: longer than 4096");
  free(big);

  /* A frame over max_frame is refused before any parser sees it. */
  size_t len = lim.max_frame + 1;
  uint8_t *huge = malloc(len);
  memset(huge, '[', len);
  refused_bytes(huge, len, false, "larger than");
  /* Deep nesting within the size limit: jansson's own depth limit, no crash. */
  refused_bytes(huge, lim.max_frame, false, "not valid JSON");
  free(huge);
}

/* A MessagePack map from key/value string pairs (NULL value: integer 42). */
static size_t pack_map(char *out, size_t cap, const char *const *kv, size_t npairs) {
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, npairs);
  for (size_t i = 0; i < npairs; i++) {
    msgpack_pack_str(&pk, strlen(kv[2 * i]));
    msgpack_pack_str_body(&pk, kv[2 * i], strlen(kv[2 * i]));
    if (kv[2 * i + 1]) {
      msgpack_pack_str(&pk, strlen(kv[2 * i + 1]));
      msgpack_pack_str_body(&pk, kv[2 * i + 1], strlen(kv[2 * i + 1]));
    } else {
      msgpack_pack_int(&pk, 42);
    }
  }
  cr_assert_leq(sb.size, cap);
  memcpy(out, sb.data, sb.size);
  size_t n = sb.size;
  msgpack_sbuffer_destroy(&sb);
  return n;
}

Test(proc_chat_parse, msgpack_commands, .fini = ptest_fini) {
  char buf[256];
  const char *kv[] = {"op", "say", "room", "lobby", "text", "hi there", "id", NULL};
  size_t n = pack_map(buf, sizeof(buf), kv, 4);
  proc_chat_cmd cmd;
  char err[256];
  cr_assert_eq(proc_chat_parse((uint8_t *)buf, n, true, &lim, &cmd, err, sizeof(err)), 0, "%s",
               err);
  cr_assert(cmd.msgpack);
  cr_assert_eq(cmd.op, PROC_CHAT_SAY);
  cr_assert_eq(cmd.text_len, 8);
  cr_assert_eq(memcmp(cmd.text, "hi there", 8), 0);
  cr_assert_eq(cmd.id_kind, PROC_CHAT_ID_INT);
  cr_assert_eq(cmd.id_int, 42);
  proc_chat_cmd_finish(&cmd);
}

Test(proc_chat_parse, msgpack_hostile, .fini = ptest_fini) {
  /* Not a map. */
  const uint8_t arr[] = {0x92, 0x01, 0x02};
  refused_bytes(arr, sizeof(arr), true, "MessagePack map");
  /* A declared 4-billion-element array in five bytes: refused before msgpack-c allocates. */
  const uint8_t bomb[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
  refused_bytes(bomb, sizeof(bomb), true, "not valid MessagePack");
  const uint8_t mapbomb[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0xa2, 'o', 'p'};
  refused_bytes(mapbomb, sizeof(mapbomb), true, "not valid MessagePack");
  /* A string whose length runs past the end. */
  const uint8_t trunc[] = {0x81, 0xa2, 'o', 'p', 0xdb, 0x7f, 0xff, 0xff, 0xff, 'j'};
  refused_bytes(trunc, sizeof(trunc), true, "not valid MessagePack");
  /* 0xc1 is never valid. */
  const uint8_t never[] = {0x81, 0xa2, 'o', 'p', 0xc1};
  refused_bytes(never, sizeof(never), true, "not valid MessagePack");
  /* Trailing bytes after the map. */
  const uint8_t trailing[] = {0x80, 0x00};
  refused_bytes(trailing, sizeof(trailing), true, "not valid MessagePack");
  /* Nesting deeper than a command needs. */
  uint8_t deep[64];
  deep[0] = 0x81;
  deep[1] = 0xa1;
  deep[2] = 'x';
  for (int i = 3; i < 63; i++)
    deep[i] = 0x91;
  deep[63] = 0x01;
  refused_bytes(deep, sizeof(deep), true, "not valid MessagePack");
  /* Non-string key. */
  const uint8_t intkey[] = {0x81, 0x01, 0x02};
  refused_bytes(intkey, sizeof(intkey), true, "keys must be strings");
  /* Invalid UTF-8 in a room name. */
  const uint8_t badutf[] = {0x82, 0xa2, 'o', 'p', 0xa4, 'j',  'o',  'i', 'n',
                            0xa4, 'r',  'o', 'o', 'm',  0xa2, 0xc3, 0x28};
  refused_bytes(badutf, sizeof(badutf), true, "room: not valid UTF-8");
  /* Duplicate known key. */
  const uint8_t dup[] = {0x82, 0xa2, 'o', 'p',  0xa4, 'j', 'o', 'i', 'n',
                         0xa2, 'o',  'p', 0xa4, 'j',  'o', 'i', 'n'};
  refused_bytes(dup, sizeof(dup), true, "op: given twice");
  /* An id beyond int64. */
  const uint8_t bigid[] = {0x83, 0xa2, 'o',  'p',  0xa4, 'j',  'o',  'i', 'n', 0xa4,
                           'r',  'o',  'o',  'm',  0xa1, 'r',  0xa2, 'i', 'd', 0xcf,
                           0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  refused_bytes(bigid, sizeof(bigid), true, "id: must be");
  /* A bin where a string belongs. */
  const uint8_t binop[] = {0x81, 0xa2, 'o', 'p', 0xc4, 0x04, 'j', 'o', 'i', 'n'};
  refused_bytes(binop, sizeof(binop), true, "op: must be a string");
}

/* Random bytes, and random mutations of valid commands, in both encodings: every frame is either
 * parsed or refused with a message; nothing crashes (run under ASan/UBSan in CI). */
Test(proc_chat_parse, random_input_never_crashes, .fini = ptest_fini) {
  srand(7);
  char valid_mp[256];
  const char *kv[] = {"op", "dm", "to", "bob", "text", "hello", "id", NULL};
  size_t mp_len = pack_map(valid_mp, sizeof(valid_mp), kv, 4);
  const char *valid_json = "{\"op\":\"dm\",\"to\":\"bob\",\"text\":\"hello\",\"id\":1}";
  uint8_t buf[512];
  for (int iter = 0; iter < 20000; iter++) {
    size_t len;
    bool binary = iter & 1;
    if (iter % 3 == 0) {
      len = (size_t)rand() % sizeof(buf);
      for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)rand();
    } else {
      const char *src = binary ? valid_mp : valid_json;
      len = binary ? mp_len : strlen(valid_json);
      memcpy(buf, src, len);
      int flips = 1 + rand() % 4;
      for (int f = 0; f < flips; f++)
        buf[(size_t)rand() % len] = (uint8_t)rand();
      if (rand() % 4 == 0)
        len = (size_t)rand() % (len + 1);
    }
    proc_chat_cmd cmd;
    char err[256] = "";
    int rc = proc_chat_parse(buf, len, binary, &lim, &cmd, err, sizeof(err));
    cr_assert(rc == 0 || (rc == -1 && err[0]), "iteration %d: rc %d without a reason", iter, rc);
    if (rc == 0)
      cr_assert(cmd.op >= PROC_CHAT_JOIN && cmd.op <= PROC_CHAT_MEMBERS);
    proc_chat_cmd_finish(&cmd);
  }
}

Test(proc_chat_parse, handler_arg, .fini = ptest_fini) {
  proc_handler *h = NULL;
  char err[256];
  cr_assert_eq(proc_handler_open(&h, "chat",
                                 "max_rooms=3,room_ttl=3600,max_text=100,max_frame=1000,"
                                 "dm_offline=tell",
                                 err, sizeof(err)),
               0, "%s", err);
  proc_handler_close(h);
  cr_assert_eq(proc_handler_open(&h, "chat", "max_roms=3", err, sizeof(err)), -1);
  cr_assert(strstr(err, "unknown setting"), "%s", err);
  cr_assert_eq(proc_handler_open(&h, "chat", "max_text=10000,max_frame=100", err, sizeof(err)), -1);
  cr_assert(strstr(err, "below max_frame"), "%s", err);
  cr_assert_eq(proc_handler_open(&h, "chat", "max_rooms=0", err, sizeof(err)), -1);
  cr_assert(strstr(err, "max_rooms must be a number in 1..512"), "%s", err);
  cr_assert_eq(proc_handler_open(&h, "chat", "max_rooms", err, sizeof(err)), -1);
  cr_assert_eq(proc_handler_open(&h, "chat", "room_ttl=59", err, sizeof(err)), -1);
  cr_assert_eq(proc_handler_open(&h, "chat", "dm_offline=maybe", err, sizeof(err)), -1);
  cr_assert(strstr(err, "dm_offline must be silent or tell"), "%s", err);
  /* Rooms are channels now: no member set to bound, and the message says what replaced it. */
  cr_assert_eq(proc_handler_open(&h, "chat", "max_members=5", err, sizeof(err)), -1);
  cr_assert(strstr(err, "max_rooms"), "%s", err);
}

/* --- commands against Redis ---------------------------------------------------------------- */

typedef struct {
  ptest_redis redis;
  ptest_proc t;
} chat_fixture;

static void chat_setup(chat_fixture *f, const char *arg) {
  ptest_redis_start(&f->redis);
  ptest_proc_init(&f->t, "chat", arg, &f->redis, 16);
  itest_fake_gateway(f->redis.rc, f->redis.prefix, "gw-1", 1, 60000);
  itest_fake_gateway(f->redis.rc, f->redis.prefix, "gw-2", 2, 60000);
}

static void chat_teardown(chat_fixture *f) {
  ptest_proc_finish(&f->t);
  ptest_redis_stop(&f->redis);
}

static int say_json(chat_fixture *f, const char *user, uint64_t conn, const char *gw, uint32_t slot,
                    const char *json) {
  char why[256] = "";
  int rc = ptest_msg(&f->t, user, conn, gw, slot, json, strlen(json), false, why, sizeof(why));
  cr_assert(rc == WSGATE_OK || rc == WSGATE_REJECT, "%s: rc %d: %s", json, rc, why);
  return rc;
}

/* The JSON object of an outbound frame (text). Caller decrefs. */
static json_t *frame_json(const ptest_out *o) {
  cr_assert_not(o->env.binary, "expected a JSON text frame");
  json_error_t e;
  json_t *j = json_loadb((const char *)o->env.data, o->env.data_len, 0, &e);
  cr_assert_not_null(j, "not JSON: %.*s", (int)o->env.data_len, o->env.data);
  return j;
}

static const char *jstr(json_t *j, const char *key) {
  json_t *v = json_object_get(j, key);
  cr_assert(json_is_string(v), "no string %s", key);
  return json_string_value(v);
}

/* The outbound frames of kind `kind`, in order, into idx[] (at most cap). Returns their count. */
static size_t outs_of(const chat_fixture *f, wsg_env_kind kind, size_t *idx, size_t cap) {
  size_t n = 0;
  for (size_t i = 0; i < f->t.nout && n < cap; i++)
    if (f->t.out[i].env.kind == kind)
      idx[n++] = i;
  return n;
}

/* out[i] must be a JSON frame whose string `key` is `want`. */
static void expect_str(const chat_fixture *f, size_t i, const char *key, const char *want) {
  json_t *j = frame_json(&f->t.out[i]);
  cr_assert_str_eq(jstr(j, key), want, "frame %zu", i);
  json_decref(j);
}

/* The gateways a channel's subscribers are on (gw-1 and gw-2), as the gateways record them. */
static void fake_subscribers(chat_fixture *f, const char *channel) {
  redisReply *r =
      redisCommand(f->redis.rc, "SADD %sch:{c:%s}:gws gw-1 gw-2", f->redis.prefix, channel);
  cr_assert(r && r->type == REDIS_REPLY_INTEGER);
  freeReplyObject(r);
}

/* The last offset the channel's publications got (0: none stored). */
static long long channel_offset(chat_fixture *f, const char *channel) {
  redisReply *r = redisCommand(f->redis.rc, "HGET %sch:{c:%s}:m o", f->redis.prefix, channel);
  cr_assert_not_null(r);
  long long o = r->type == REDIS_REPLY_STRING ? atoll(r->str) : 0;
  freeReplyObject(r);
  return o;
}

Test(proc_chat, join_say_across_gateways_json_and_msgpack, .fini = ptest_fini) {
  chat_fixture f;
  chat_setup(&f, NULL);
  itest_fake_conn(f.redis.rc, f.redis.prefix, "alice", 11, "gw-1");
  itest_fake_conn(f.redis.rc, f.redis.prefix, "bob", 21, "gw-2");
  itest_fake_conn(f.redis.rc, f.redis.prefix, "bob", 22, "gw-2");

  cr_assert_eq(
      say_json(&f, "alice", 11, "gw-1", 1, "{\"op\":\"join\",\"room\":\"lobby\",\"id\":1}"),
      WSGATE_OK);
  char mp[256];
  const char *kv[] = {"op", "join", "room", "lobby"};
  size_t n = pack_map(mp, sizeof(mp), kv, 2);
  cr_assert_eq(ptest_msg(&f.t, "bob", 21, "gw-2", 2, mp, n, true, NULL, 0), WSGATE_OK);
  ptest_flush(&f.t);
  size_t acks[4];
  cr_assert_eq(outs_of(&f, WSG_ENV_DELIVER, acks, 4), 2, "one ack per join");
  json_t *ack = frame_json(&f.t.out[acks[0]]);
  cr_assert_str_eq(jstr(ack, "type"), "joined");
  cr_assert_str_eq(jstr(ack, "room"), "lobby");
  cr_assert_eq(json_integer_value(json_object_get(ack, "id")), 1);
  cr_assert_eq(json_integer_value(json_object_get(ack, "rooms")), 1, "alice is in one room");
  json_decref(ack);
  cr_assert(f.t.out[acks[1]].env.binary, "bob spoke MessagePack: his ack is MessagePack");
  cr_assert_eq(f.t.out[acks[1]].env.conn, 21);
  cr_assert_eq(f.t.out[acks[1]].partition, 2);
  cr_assert_eq(ptest_redis_int(&f.redis, "SISMEMBER %schat:{u:bob}:rooms lobby", f.redis.prefix),
               1);
  long long ttl = ptest_redis_int(&f.redis, "TTL %schat:{u:bob}:rooms", f.redis.prefix);
  cr_assert(ttl > 604000 && ttl <= 604800, "membership lapses after room_ttl (a week): %lld", ttl);
  ptest_clear_out(&f.t);

  /* The gateways hold the subscriptions: one publication, one record per gateway. */
  fake_subscribers(&f, "room:lobby");
  cr_assert_eq(
      say_json(&f, "alice", 11, "gw-1", 1, "{\"op\":\"say\",\"room\":\"lobby\",\"text\":\"hi\"}"),
      WSGATE_OK);
  ptest_flush(&f.t);
  cr_assert_eq(channel_offset(&f, "room:lobby"), 1, "stored once");
  size_t pubs[4];
  cr_assert_eq(outs_of(&f, WSG_ENV_PUBLISH, pubs, 4), 2, "one record per gateway");
  cr_assert_eq(f.t.nout, 2, "and nothing per member");
  for (size_t k = 0; k < 2; k++) {
    const ptest_out *o = &f.t.out[pubs[k]];
    cr_assert_eq(o->env.channel_len, 10);
    cr_assert_eq(memcmp(o->env.channel, "room:lobby", 10), 0);
    cr_assert_eq(o->env.ch_offset, 1);
    json_t *ev = frame_json(o);
    cr_assert_str_eq(jstr(ev, "type"), "message");
    cr_assert_str_eq(jstr(ev, "from"), "alice");
    cr_assert_str_eq(jstr(ev, "text"), "hi");
    cr_assert_str_eq(jstr(ev, "room"), "lobby");
    json_decref(ev);
  }
  cr_assert_neq(f.t.out[pubs[0]].partition, f.t.out[pubs[1]].partition);
  chat_teardown(&f);
}

/* Membership is checked first, and a non-member's say stores and sends nothing. */
Test(proc_chat, say_requires_membership_and_errors_use_the_clients_encoding, .fini = ptest_fini) {
  chat_fixture f;
  chat_setup(&f, NULL);
  itest_fake_conn(f.redis.rc, f.redis.prefix, "eve", 31, "gw-1");
  itest_fake_conn(f.redis.rc, f.redis.prefix, "amy", 32, "gw-2");
  fake_subscribers(&f, "room:x");
  say_json(&f, "amy", 32, "gw-2", 2, "{\"op\":\"join\",\"room\":\"x\"}");
  ptest_flush(&f.t);
  ptest_clear_out(&f.t);
  cr_assert_eq(say_json(&f, "eve", 31, "gw-1", 1,
                        "{\"op\":\"say\",\"room\":\"x\",\"text\":\"boo\",\"id\":\"q\"}"),
               WSGATE_OK);
  char mp[256];
  const char *kv[] = {"op", "say", "room", "x", "text", "boo"};
  size_t n = pack_map(mp, sizeof(mp), kv, 3);
  cr_assert_eq(ptest_msg(&f.t, "eve", 31, "gw-1", 1, mp, n, true, NULL, 0), WSGATE_OK);
  ptest_flush(&f.t);
  cr_assert_eq(f.t.nout, 2, "two answers, no publication");
  json_t *e = frame_json(&f.t.out[0]);
  cr_assert_str_eq(jstr(e, "type"), "error");
  cr_assert_str_eq(jstr(e, "code"), "not_member");
  cr_assert_str_eq(jstr(e, "id"), "q");
  json_decref(e);
  cr_assert(f.t.out[1].env.binary);
  cr_assert_eq(channel_offset(&f, "room:x"), 0, "nothing stored in the room's channel");
  chat_teardown(&f);
}

Test(proc_chat, bad_frames_get_an_error_and_are_rejected, .fini = ptest_fini) {
  chat_fixture f;
  chat_setup(&f, NULL);
  char why[256];
  cr_assert_eq(ptest_msg(&f.t, "eve", 31, "gw-1", 1, "{nope", 5, false, why, sizeof(why)),
               WSGATE_REJECT);
  cr_assert(strstr(why, "bad chat command"), "%s", why);
  const uint8_t bomb[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
  cr_assert_eq(ptest_msg(&f.t, "eve", 31, "gw-1", 1, bomb, sizeof(bomb), true, why, sizeof(why)),
               WSGATE_REJECT);
  ptest_flush(&f.t);
  cr_assert_eq(f.t.nout, 2, "the client hears why, in its encoding");
  json_t *e = frame_json(&f.t.out[0]);
  cr_assert_str_eq(jstr(e, "code"), "bad_request");
  json_decref(e);
  cr_assert(f.t.out[1].env.binary);
  chat_teardown(&f);
}

Test(proc_chat, dm_delivers_or_tells_the_sender_the_user_is_offline, .fini = ptest_fini) {
  chat_fixture f;
  chat_setup(&f, "dm_offline=tell");
  itest_fake_conn(f.redis.rc, f.redis.prefix, "alice", 11, "gw-1");
  itest_fake_conn(f.redis.rc, f.redis.prefix, "bob", 21, "gw-2");
  itest_fake_conn(f.redis.rc, f.redis.prefix, "ghost", 41,
                  "gw-dead"); /* a gateway without a lease */
  cr_assert_eq(
      say_json(&f, "alice", 11, "gw-1", 1, "{\"op\":\"dm\",\"to\":\"bob\",\"text\":\"psst\"}"),
      WSGATE_OK);
  cr_assert_eq(say_json(&f, "alice", 11, "gw-1", 1,
                        "{\"op\":\"dm\",\"to\":\"carol\",\"text\":\"hello?\",\"id\":5}"),
               WSGATE_OK);
  cr_assert_eq(
      say_json(&f, "alice", 11, "gw-1", 1, "{\"op\":\"dm\",\"to\":\"ghost\",\"text\":\"boo\"}"),
      WSGATE_OK);
  ptest_flush(&f.t);
  cr_assert_eq(f.t.nout, 3);
  cr_assert_eq(f.t.out[0].env.conn, 21);
  cr_assert_eq(f.t.out[0].partition, 2);
  json_t *dm = frame_json(&f.t.out[0]);
  cr_assert_str_eq(jstr(dm, "type"), "dm");
  cr_assert_str_eq(jstr(dm, "from"), "alice");
  cr_assert_str_eq(jstr(dm, "text"), "psst");
  json_decref(dm);
  for (int i = 1; i < 3; i++) {
    cr_assert_eq(f.t.out[i].env.conn, 11, "the error goes back to the sender");
    json_t *e = frame_json(&f.t.out[i]);
    cr_assert_str_eq(jstr(e, "code"), "offline");
    json_decref(e);
  }
  cr_assert_eq(f.t.stats.undeliverable, 2);
  cr_assert_eq(f.t.stats.fallbacks, 2);
  cr_assert_eq(ptest_redis_int(&f.redis, "HLEN %suser:ghost", f.redis.prefix), 0,
               "the dead gateway's entry was cleaned up");
  chat_teardown(&f);
}

/* The default: a dm to a user with no connection is answered exactly as a delivered one
 * (nothing), so no signed-in user can probe who is online. */
Test(proc_chat, dm_to_an_offline_user_reveals_nothing_by_default, .fini = ptest_fini) {
  chat_fixture f;
  chat_setup(&f, NULL);
  itest_fake_conn(f.redis.rc, f.redis.prefix, "alice", 11, "gw-1");
  itest_fake_conn(f.redis.rc, f.redis.prefix, "bob", 21, "gw-2");
  say_json(&f, "alice", 11, "gw-1", 1, "{\"op\":\"dm\",\"to\":\"carol\",\"text\":\"there?\"}");
  say_json(&f, "alice", 11, "gw-1", 1, "{\"op\":\"dm\",\"to\":\"bob\",\"text\":\"psst\"}");
  ptest_flush(&f.t);
  cr_assert_eq(f.t.nout, 1, "bob's dm only: nothing goes back to the sender");
  cr_assert_eq(f.t.out[0].env.conn, 21);
  cr_assert_eq(f.t.stats.fallbacks, 0);
  chat_teardown(&f);
}

Test(proc_chat, dm_uses_the_recipients_encoding, .fini = ptest_fini) {
  chat_fixture f;
  chat_setup(&f, NULL);
  itest_fake_conn(f.redis.rc, f.redis.prefix, "alice", 11, "gw-1");
  itest_fake_conn(f.redis.rc, f.redis.prefix, "bob", 21, "gw-2");
  char mp[256];
  const char *kv[] = {"op", "join", "room", "r"};
  size_t n = pack_map(mp, sizeof(mp), kv, 2);
  cr_assert_eq(ptest_msg(&f.t, "bob", 21, "gw-2", 2, mp, n, true, NULL, 0), WSGATE_OK);
  ptest_flush(&f.t);
  ptest_clear_out(&f.t);
  cr_assert_eq(
      say_json(&f, "alice", 11, "gw-1", 1, "{\"op\":\"dm\",\"to\":\"bob\",\"text\":\"hi\"}"),
      WSGATE_OK);
  ptest_flush(&f.t);
  cr_assert_eq(f.t.nout, 1);
  cr_assert(f.t.out[0].env.binary, "bob speaks MessagePack");
  chat_teardown(&f);
}

/* A presence entry of the room's channel, as a gateway (itest_fake_gateway's boot) writes it. */
static void fake_presence(chat_fixture *f, const char *channel, uint64_t conn, const char *user,
                          const char *gw) {
  redisReply *r = redisCommand(f->redis.rc, "HSET %sch:{c:%s}:p:%s#" ITEST_FAKE_BOOT " %llu %s",
                               f->redis.prefix, channel, gw, (unsigned long long)conn, user);
  cr_assert(r && r->type == REDIS_REPLY_INTEGER);
  freeReplyObject(r);
  /* A gateway also keeps its count of the channel's subscriptions; readers skip entries of a
   * gateway without one (common/wsg_chkeys.h, READ). */
  r = redisCommand(f->redis.rc, "HINCRBY %sch:{c:%s}:pc %s#" ITEST_FAKE_BOOT " 1", f->redis.prefix,
                   channel, gw);
  cr_assert(r && r->type == REDIS_REPLY_INTEGER);
  freeReplyObject(r);
}

/* members: only for members (issue 16 item 6), and it lists who is connected now (the channel's
 * presence), each user once whatever their number of connections. */
Test(proc_chat, members_is_for_members_and_lists_who_is_online, .fini = ptest_fini) {
  chat_fixture f;
  chat_setup(&f, NULL);
  itest_fake_conn(f.redis.rc, f.redis.prefix, "a", 1, "gw-1");
  itest_fake_conn(f.redis.rc, f.redis.prefix, "b", 2, "gw-1");
  itest_fake_conn(f.redis.rc, f.redis.prefix, "c", 3, "gw-2");
  say_json(&f, "a", 1, "gw-1", 1, "{\"op\":\"join\",\"room\":\"small\"}");
  say_json(&f, "b", 2, "gw-1", 1, "{\"op\":\"join\",\"room\":\"small\"}");
  fake_presence(&f, "room:small", 1, "a", "gw-1");
  fake_presence(&f, "room:small", 2, "b", "gw-1");
  fake_presence(&f, "room:small", 4, "b", "gw-2");
  ptest_flush(&f.t);
  ptest_clear_out(&f.t);
  say_json(&f, "c", 3, "gw-2", 2, "{\"op\":\"members\",\"room\":\"small\",\"id\":8}");
  say_json(&f, "a", 1, "gw-1", 1, "{\"op\":\"members\",\"room\":\"small\"}");
  say_json(&f, "b", 2, "gw-1", 1, "{\"op\":\"leave\",\"room\":\"small\"}");
  say_json(&f, "b", 2, "gw-1", 1, "{\"op\":\"members\",\"room\":\"small\"}");
  ptest_flush(&f.t);
  size_t d[8];
  cr_assert_eq(outs_of(&f, WSG_ENV_DELIVER, d, 8), 4);
  json_t *no = frame_json(&f.t.out[d[0]]);
  cr_assert_str_eq(jstr(no, "code"), "not_member", "c is not in the room");
  cr_assert_eq(json_integer_value(json_object_get(no, "id")), 8);
  json_decref(no);
  json_t *m = frame_json(&f.t.out[d[1]]);
  cr_assert_str_eq(jstr(m, "type"), "members");
  json_t *list = json_object_get(m, "members");
  cr_assert_eq(json_array_size(list), 2);
  cr_assert_str_eq(json_string_value(json_array_get(list, 0)), "a");
  cr_assert_str_eq(json_string_value(json_array_get(list, 1)), "b");
  cr_assert_eq(json_integer_value(json_object_get(m, "count")), 2);
  cr_assert(json_is_false(json_object_get(m, "truncated")));
  json_decref(m);
  json_t *left = frame_json(&f.t.out[d[2]]);
  cr_assert_str_eq(jstr(left, "type"), "left");
  cr_assert(json_is_true(json_object_get(left, "was_member")));
  json_decref(left);
  expect_str(&f, d[3], "code", "not_member"); /* after leaving */
  chat_teardown(&f);
}

/* Rooms per user are bounded (issue 16 item 6): past max_rooms a join is refused and stores
 * nothing; a leave frees a place. */
Test(proc_chat, rooms_per_user_are_bounded, .fini = ptest_fini) {
  chat_fixture f;
  chat_setup(&f, "max_rooms=2");
  itest_fake_conn(f.redis.rc, f.redis.prefix, "a", 1, "gw-1");
  static const char *const cmds[] = {
      "{\"op\":\"join\",\"room\":\"r1\"}",  "{\"op\":\"join\",\"room\":\"r2\"}",
      "{\"op\":\"join\",\"room\":\"r2\"}",  "{\"op\":\"join\",\"room\":\"r3\",\"id\":3}",
      "{\"op\":\"leave\",\"room\":\"r1\"}", "{\"op\":\"join\",\"room\":\"r3\"}"};
  for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
    say_json(&f, "a", 1, "gw-1", 1, cmds[i]);
  ptest_flush(&f.t);
  size_t d[8];
  cr_assert_eq(outs_of(&f, WSG_ENV_DELIVER, d, 8), 6);
  json_t *again = frame_json(&f.t.out[d[2]]);
  cr_assert_str_eq(jstr(again, "type"), "joined", "joining a room twice is not a new room");
  cr_assert_eq(json_integer_value(json_object_get(again, "rooms")), 2);
  json_decref(again);
  json_t *full = frame_json(&f.t.out[d[3]]);
  cr_assert_str_eq(jstr(full, "code"), "too_many_rooms");
  cr_assert(strstr(jstr(full, "message"), "2 rooms"), "%s", jstr(full, "message"));
  cr_assert_eq(json_integer_value(json_object_get(full, "id")), 3);
  json_decref(full);
  expect_str(&f, d[5], "type", "joined"); /* a place freed up */
  cr_assert_eq(ptest_redis_int(&f.redis, "SCARD %schat:{u:a}:rooms", f.redis.prefix), 2);
  chat_teardown(&f);
}

/* The cost of a say does not grow with the room: 100 members on two gateways, one publication
 * stored, one record per gateway, and no Redis key per room or per member beyond each user's own
 * rooms set and encoding. */
Test(proc_chat, room_of_100_users_one_publication, .fini = ptest_fini) {
  chat_fixture f;
  chat_setup(&f, NULL);
  char user[32];
  for (int i = 0; i < 100; i++) {
    snprintf(user, sizeof(user), "u%03d", i);
    bool second = i % 2;
    itest_fake_conn(f.redis.rc, f.redis.prefix, user, 1000 + (uint64_t)i, second ? "gw-2" : "gw-1");
    say_json(&f, user, 1000 + (uint64_t)i, second ? "gw-2" : "gw-1", second ? 2 : 1,
             "{\"op\":\"join\",\"room\":\"big\"}");
  }
  ptest_flush(&f.t);
  ptest_clear_out(&f.t);
  fake_subscribers(&f, "room:big");
  say_json(&f, "u000", 1000, "gw-1", 1, "{\"op\":\"say\",\"room\":\"big\",\"text\":\"to all\"}");
  ptest_flush(&f.t);
  cr_assert_eq(f.t.nout, 2, "exactly one record per gateway");
  size_t p[2];
  cr_assert_eq(outs_of(&f, WSG_ENV_PUBLISH, p, 2), 2);
  cr_assert_eq(channel_offset(&f, "room:big"), 1);
  redisReply *r =
      redisCommand(f.redis.rc, "EXISTS %sroom:big %schat:mp:big", f.redis.prefix, f.redis.prefix);
  cr_assert(r && r->type == REDIS_REPLY_INTEGER && r->integer == 0, "no per-room member set");
  freeReplyObject(r);
  chat_teardown(&f);
}

/* join subscribes every connection of the user (one record per gateway), leave unsubscribes them,
 * and a new connection is subscribed to the user's rooms by on_connect, with no Redis lookup of
 * its own route. */
Test(proc_chat, join_leave_and_connect_drive_the_subscriptions, .fini = ptest_fini) {
  chat_fixture f;
  chat_setup(&f, NULL);
  itest_fake_conn(f.redis.rc, f.redis.prefix, "ann", 51, "gw-1");
  itest_fake_conn(f.redis.rc, f.redis.prefix, "ann", 52, "gw-2");
  say_json(&f, "ann", 51, "gw-1", 1, "{\"op\":\"join\",\"room\":\"r1\"}");
  say_json(&f, "ann", 51, "gw-1", 1, "{\"op\":\"join\",\"room\":\"r2\"}");
  ptest_flush(&f.t);
  size_t sub[8];
  cr_assert_eq(outs_of(&f, WSG_ENV_SUBSCRIBE, sub, 8), 4, "two rooms x two gateways");
  for (size_t k = 0; k < 4; k++) {
    const ptest_out *o = &f.t.out[sub[k]];
    uint64_t ids[4];
    cr_assert_eq(ptest_targets(o, ids, 4), 1);
    cr_assert_eq(ids[0], o->partition == 1 ? 51 : 52, "each connection on its gateway");
    cr_assert_eq(o->env.channel_len, 7);
    cr_assert(memcmp(o->env.channel, "room:r", 6) == 0);
  }
  ptest_clear_out(&f.t);

  /* A third connection: on_connect subscribes it, to both rooms, with no lookup. */
  cr_assert_eq(ptest_event(&f.t, WSG_ENV_CONNECT, "ann", 53, "gw-2", 2), WSGATE_OK);
  ptest_flush(&f.t);
  cr_assert_eq(f.t.nout, 2);
  bool seen[2] = {false, false};
  for (size_t k = 0; k < 2; k++) {
    const ptest_out *o = &f.t.out[k];
    cr_assert_eq(o->env.kind, WSG_ENV_SUBSCRIBE);
    cr_assert_eq(o->env.conn, 53);
    cr_assert_eq(o->partition, 2);
    seen[o->env.channel[6] - '1'] = true;
  }
  cr_assert(seen[0] && seen[1]);
  ptest_clear_out(&f.t);

  /* Someone without rooms: nothing. */
  cr_assert_eq(ptest_event(&f.t, WSG_ENV_CONNECT, "zed", 60, "gw-1", 1), WSGATE_OK);
  ptest_flush(&f.t);
  cr_assert_eq(f.t.nout, 0);

  say_json(&f, "ann", 51, "gw-1", 1, "{\"op\":\"leave\",\"room\":\"r1\"}");
  ptest_flush(&f.t);
  size_t un[4];
  cr_assert_eq(outs_of(&f, WSG_ENV_UNSUBSCRIBE, un, 4), 2, "both gateways of ann");
  chat_teardown(&f);
}

/* A client's own subscribe (subscribe=handler) from `user`'s connection 9 on gw-1. */
static int sub_request(chat_fixture *f, const char *user, const char *channel) {
  wsg_envelope env = {.kind = WSG_ENV_SUB_REQUEST,
                      .fields = WSG_F_GATEWAY | WSG_F_SLOT | WSG_F_USER | WSG_F_CONN |
                                WSG_F_CHANNEL | WSG_F_REQUEST,
                      .gateway = "gw-1",
                      .gateway_len = 4,
                      .slot = 1,
                      .user = user,
                      .user_len = strlen(user),
                      .conn = 9,
                      .channel = channel,
                      .channel_len = strlen(channel),
                      .request = 5};
  char why[256];
  return proc_handler_dispatch(f->t.h, &f->t.denv, 0, &env, 0, 0, why, sizeof why);
}

/* The room namespace has subscribe=handler: a client may subscribe itself (to recover with
 * `since` after a reconnect) to the rooms it is a member of, and to nothing else. */
Test(proc_chat, clients_may_subscribe_to_their_rooms_only, .fini = ptest_fini) {
  chat_fixture f;
  chat_setup(&f, NULL);
  itest_fake_conn(f.redis.rc, f.redis.prefix, "ann", 9, "gw-1");
  say_json(&f, "ann", 9, "gw-1", 1, "{\"op\":\"join\",\"room\":\"mine\"}");
  ptest_flush(&f.t);
  ptest_clear_out(&f.t);
  cr_assert_eq(sub_request(&f, "ann", "room:mine"), WSGATE_OK);
  cr_assert_eq(sub_request(&f, "ann", "room:other"), WSGATE_OK, "a refusal is an answer");
  cr_assert_eq(sub_request(&f, "ann", "news:eu"), WSGATE_OK);
  cr_assert_eq(sub_request(&f, "bob", "room:mine"), WSGATE_OK);
  ptest_flush(&f.t);
  cr_assert_eq(f.t.nout, 4);
  for (size_t i = 0; i < 4; i++)
    cr_assert_eq(f.t.out[i].env.kind, WSG_ENV_SUBSCRIBE);
  cr_assert_not(f.t.out[0].env.fields & WSG_F_REFUSAL, "ann is a member of mine");
  static const char *const why[] = {NULL, "join the room first",
                                    "the chat handler only grants room:<room> channels",
                                    "join the room first"};
  for (size_t i = 1; i < 4; i++)
    cr_assert(f.t.out[i].env.refusal_len == strlen(why[i]) &&
                  memcmp(f.t.out[i].env.refusal, why[i], strlen(why[i])) == 0,
              "answer %zu: %.*s", i, (int)f.t.out[i].env.refusal_len, f.t.out[i].env.refusal);
  chat_teardown(&f);
}

/* Commands the server ran since the last CONFIG RESETSTAT (all, or those of `cmd`). */
static long long redis_calls(chat_fixture *f, const char *cmd) {
  redisReply *r = redisCommand(f->redis.rc, "INFO commandstats");
  cr_assert(r && r->type == REDIS_REPLY_STRING);
  long long n = 0;
  for (const char *p = r->str; (p = strstr(p, "cmdstat_")) != NULL; p++) {
    const char *name = p + 8, *colon = strchr(name, ':');
    const char *calls = colon ? strstr(colon, "calls=") : NULL;
    if (!calls || (cmd && ((size_t)(colon - name) != strlen(cmd) ||
                           strncasecmp(name, cmd, strlen(cmd)) != 0)))
      continue;
    if (strncmp(name, "info", 4) != 0 && strncmp(name, "config", 6) != 0)
      n += atoll(calls + 6);
  }
  freeReplyObject(r);
  return n;
}

static void reset_stats(chat_fixture *f) {
  freeReplyObject(redisCommand(f->redis.rc, "CONFIG RESETSTAT"));
}

/* The cost of a say in Redis does not grow with the room: the same commands in a room of 1 and
 * of 200 (a private server's INFO commandstats); a non-member's say runs its membership check and
 * nothing of the room (issue 16 item 6: membership first). */
Test(proc_chat, a_say_costs_the_same_in_a_room_of_1_and_of_200, .fini = ptest_fini) {
  chat_fixture f;
  ptest_redis_start_private(&f.redis);
  ptest_proc_init(&f.t, "chat", NULL, &f.redis, 16);
  itest_fake_gateway(f.redis.rc, f.redis.prefix, "gw-1", 1, 60000);
  itest_fake_gateway(f.redis.rc, f.redis.prefix, "gw-2", 2, 60000);
  char user[32];
  for (int i = 0; i < 200; i++) {
    snprintf(user, sizeof user, "u%03d", i);
    itest_fake_conn(f.redis.rc, f.redis.prefix, user, 1000 + (uint64_t)i, i % 2 ? "gw-2" : "gw-1");
    say_json(&f, user, 1000 + (uint64_t)i, i % 2 ? "gw-2" : "gw-1", i % 2 ? 2 : 1,
             "{\"op\":\"join\",\"room\":\"big\"}");
  }
  say_json(&f, "u000", 1000, "gw-1", 1, "{\"op\":\"join\",\"room\":\"one\"}");
  fake_subscribers(&f, "room:big");
  fake_subscribers(&f, "room:one");
  const char *say_one = "{\"op\":\"say\",\"room\":\"one\",\"text\":\"x\"}";
  const char *say_big = "{\"op\":\"say\",\"room\":\"big\",\"text\":\"x\"}";
  /* Warm: scripts loaded, gateway records cached (1 s), in both rooms. */
  say_json(&f, "u000", 1000, "gw-1", 1, say_one);
  say_json(&f, "u000", 1000, "gw-1", 1, say_big);
  ptest_flush(&f.t);
  ptest_clear_out(&f.t);

  reset_stats(&f);
  say_json(&f, "u000", 1000, "gw-1", 1, say_one);
  ptest_flush(&f.t);
  long long one = redis_calls(&f, NULL);
  reset_stats(&f);
  say_json(&f, "u000", 1000, "gw-1", 1, say_big);
  ptest_flush(&f.t);
  long long big = redis_calls(&f, NULL);
  cr_assert_eq(one, big, "Redis commands of a say: %lld in a room of 1, %lld in a room of 200", one,
               big);
  cr_log_info("a say: %lld Redis commands in a room of 1 and in a room of 200", big);

  reset_stats(&f);
  say_json(&f, "eve", 9, "gw-1", 1, say_big);
  ptest_flush(&f.t);
  cr_assert_eq(redis_calls(&f, "smembers"), 0, "a non-member's say reads no member list");
  cr_assert_eq(redis_calls(&f, "sismember"), 1);
  cr_assert_eq(redis_calls(&f, "evalsha") + redis_calls(&f, "eval"), 0, "and publishes nothing");
  chat_teardown(&f);
}

Test(proc_chat, redis_down_asks_for_a_retry, .fini = ptest_fini) {
  ptest_redis r;
  ptest_redis_start(&r);
  ptest_proc t;
  /* A router pointed at a port nobody listens on. */
  ptest_proc_init(&t, "chat", NULL, NULL, 16);
  proc_redis_options o = {.host = "127.0.0.1",
                          .port = itest_free_port(),
                          .prefix = r.prefix,
                          .timeout_ms = 200,
                          .slots = 16};
  char err[256];
  cr_assert_eq(proc_redis_create(&t.router, &o, err, sizeof(err)), 0);
  t.denv.router = t.router;
  const char *json = "{\"op\":\"join\",\"room\":\"r\"}";
  cr_assert_eq(ptest_msg(&t, "a", 1, "gw-1", 1, json, strlen(json), false, NULL, 0), WSGATE_RETRY);
  cr_assert_eq(proc_outbox_count(t.box), 0, "a retried call leaves nothing behind");
  char why[256];
  cr_assert_eq(proc_redis_status(t.router, why, sizeof(why)), -1);
  cr_assert(strstr(why, "cannot connect"), "%s", why);
  ptest_proc_finish(&t);
  ptest_redis_stop(&r);
}
