/*
 * wsgate-golden-gen: writes the golden vectors, <name>.msgpack (the encoder's bytes) and
 * <name>.json (their JSON rendering, one line), into the directory given as argument.
 *
 * Run only when a vector is added or the format changes on purpose; the committed files are the
 * truth, checked by golden_test.c (C) and check_vectors.py (Python, an independent
 * implementation). Usage: wsgate-golden-gen tests/golden/vectors
 *
 * Threads: main only.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack/pack.h>
#include <msgpack/sbuffer.h>

#include "wsg_envelope.h"
#include "wsg_envelope_json.h"

#define S(x) x, sizeof(x) - 1

static int write_file(const char *dir, const char *name, const char *ext, const void *data,
                      size_t len) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s.%s", dir, name, ext);
  FILE *f = fopen(path, "wb");
  if (f == NULL) {
    fprintf(stderr, "wsgate-golden-gen: cannot create %s: %s\n", path, strerror(errno));
    return -1;
  }
  size_t n = fwrite(data, 1, len, f);
  if (fclose(f) != 0 || n != len) {
    fprintf(stderr, "wsgate-golden-gen: cannot write %s: %s\n", path, strerror(errno));
    return -1;
  }
  return 0;
}

/* Encodes, decodes what was encoded, renders the decoded envelope and writes both files. */
static int emit(const char *dir, const char *name, const wsg_envelope *env) {
  wsg_buf bin, json;
  wsg_envelope dec;
  const char *field;
  int rc;

  wsg_buf_init(&bin, 0);
  wsg_buf_init(&json, 0);
  if ((rc = wsg_envelope_encode(env, &bin)) != WSG_ENV_OK) {
    fprintf(stderr, "wsgate-golden-gen: %s: encode: %s\n", name, wsg_env_strerror(rc));
  } else if ((rc = wsg_envelope_decode(&dec, bin.data, bin.len, &field)) != WSG_ENV_OK) {
    fprintf(stderr, "wsgate-golden-gen: %s: decode: %s (%s)\n", name, wsg_env_strerror(rc), field);
  } else if ((rc = wsg_envelope_to_json(&dec, &json)) != WSG_ENV_OK) {
    fprintf(stderr, "wsgate-golden-gen: %s: json: %s\n", name, wsg_env_strerror(rc));
  } else {
    json.data[json.len] = '\n';
    rc = write_file(dir, name, "msgpack", bin.data, bin.len) ||
         write_file(dir, name, "json", json.data, json.len + 1);
  }
  wsg_buf_finish(&bin);
  wsg_buf_finish(&json);
  return rc != 0 ? -1 : 0;
}

/* Every vector names gateway gw-7f3a, and most its slot 3; `fields` are the others it carries. */
static wsg_envelope to_gateway(wsg_env_kind kind, uint32_t fields) {
  wsg_envelope e = {0};
  e.kind = kind;
  e.fields = WSG_F_GATEWAY | WSG_F_SLOT | fields;
  e.gateway = "gw-7f3a";
  e.gateway_len = 7;
  e.slot = 3;
  return e;
}

static wsg_envelope inbound(wsg_env_kind kind, const char *user, size_t user_len) {
  wsg_envelope e = to_gateway(kind, WSG_F_USER | WSG_F_CONN | WSG_F_TS);
  e.user = user;
  e.user_len = user_len;
  e.conn = 0x51a2b3c400000017; /* random prefix + counter, as gateways make them */
  e.ts_us = 1700000000123456;
  return e;
}

static void channel(wsg_envelope *e, const char *name) {
  e->fields |= WSG_F_CHANNEL;
  e->channel = name;
  e->channel_len = strlen(name);
}

static void payload(wsg_envelope *e, const void *data, size_t len, bool binary) {
  e->fields |= WSG_F_DATA | WSG_F_BINARY;
  e->data = data;
  e->data_len = len;
  e->binary = binary;
}

/* Metadata built with msgpack-c's packer, as a gateway would write the JWT claims it keeps. */
static void pack_meta(msgpack_sbuffer *sb, bool claims) {
  msgpack_packer pk;
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  if (claims) {
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, S("sub"));
    msgpack_pack_str_with_body(&pk, S("alice"));
    msgpack_pack_str_with_body(&pk, S("exp"));
    msgpack_pack_uint64(&pk, 1700003600);
    return;
  }
  msgpack_pack_map(&pk, 6);
  msgpack_pack_str_with_body(&pk, S("ip"));
  msgpack_pack_str_with_body(&pk, S("203.0.113.9"));
  msgpack_pack_str_with_body(&pk, S("claims"));
  msgpack_pack_map(&pk, 3);
  msgpack_pack_str_with_body(&pk, S("role"));
  msgpack_pack_str_with_body(&pk, S("admin"));
  msgpack_pack_str_with_body(&pk, S("tier"));
  msgpack_pack_uint64(&pk, 300);
  msgpack_pack_str_with_body(&pk, S("scopes"));
  msgpack_pack_array(&pk, 2);
  msgpack_pack_str_with_body(&pk, S("read"));
  msgpack_pack_str_with_body(&pk, S("write"));
  msgpack_pack_str_with_body(&pk, S("offset"));
  msgpack_pack_int64(&pk, -5);
  msgpack_pack_str_with_body(&pk, S("ratio"));
  msgpack_pack_double(&pk, 0.25);
  msgpack_pack_str_with_body(&pk, S("beta"));
  msgpack_pack_true(&pk);
  msgpack_pack_str_with_body(&pk, S("note"));
  msgpack_pack_nil(&pk);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s DIR   (writes DIR/<name>.msgpack and DIR/<name>.json)\n", argv[0]);
    return 2;
  }
  const char *dir = argv[1];
  int bad = 0;
  wsg_envelope e;

  static const uint8_t binary[] = {0x00, 0xff, 0x80, 0xc1, 0x01, 0x7f, 0xfe};
  char long_text[300];
  for (size_t i = 0; i < sizeof long_text; i++)
    long_text[i] = (char)('a' + i % 26);
  char max_user[WSG_MAX_USER_LEN];
  for (size_t i = 0; i < sizeof max_user; i++)
    max_user[i] = (char)('0' + i % 10);
  static const char unicode_user[] = "zoë-日本語-🎉"; /* 2-, 3- and 4-byte sequences */

  e = inbound(WSG_ENV_MSG, S("alice"));
  e.fields |= WSG_F_SEQ;
  e.seq = 7;
  payload(&e, S("hello, world"), false);
  bad |= emit(dir, "msg_text", &e);

  e = inbound(WSG_ENV_MSG, S("alice"));
  e.fields |= WSG_F_SEQ;
  e.seq = 8;
  payload(&e, binary, sizeof binary, true);
  bad |= emit(dir, "msg_binary", &e);

  e = inbound(WSG_ENV_MSG, S("alice"));
  e.fields |= WSG_F_SEQ;
  e.seq = 9;
  payload(&e, "", 0, false);
  bad |= emit(dir, "msg_empty_payload", &e);

  e = inbound(WSG_ENV_MSG, S("alice"));
  e.fields |= WSG_F_SEQ;
  e.seq = 200;
  payload(&e, long_text, sizeof long_text, false); /* bin 16 */
  bad |= emit(dir, "msg_bin16_payload", &e);

  msgpack_sbuffer meta;
  msgpack_sbuffer_init(&meta);
  pack_meta(&meta, false);
  e = inbound(WSG_ENV_MSG, S("alice"));
  e.fields |= WSG_F_SEQ | WSG_F_META;
  e.seq = 65536;
  e.meta = (const uint8_t *)meta.data;
  e.meta_len = meta.size;
  payload(&e, S("{\"op\":\"join\",\"room\":\"lobby\"}"), false);
  bad |= emit(dir, "msg_metadata", &e);
  msgpack_sbuffer_destroy(&meta);

  e = inbound(WSG_ENV_MSG, max_user, sizeof max_user); /* str 16 */
  payload(&e, S("x"), false);
  bad |= emit(dir, "msg_user_max_len", &e);

  e = inbound(WSG_ENV_MSG, S(unicode_user));
  payload(&e, S("héllo ✓"), false);
  bad |= emit(dir, "msg_user_unicode", &e);

  msgpack_sbuffer_init(&meta);
  pack_meta(&meta, true);
  e = inbound(WSG_ENV_CONNECT, S("alice"));
  e.fields |= WSG_F_META;
  e.meta = (const uint8_t *)meta.data;
  e.meta_len = meta.size;
  bad |= emit(dir, "connect", &e);
  msgpack_sbuffer_destroy(&meta);

  e = inbound(WSG_ENV_DISCONNECT, S("alice"));
  e.fields |= WSG_F_SEQ | WSG_F_CLOSE_CODE | WSG_F_CLOSE_REASON;
  e.seq = 12;
  e.close_code = 1001;
  e.close_reason = "going away";
  e.close_reason_len = 10;
  bad |= emit(dir, "disconnect", &e);

  e = inbound(WSG_ENV_DISCONNECT, S("alice"));
  e.fields |= WSG_F_CLOSE_CODE;
  e.close_code = 1006; /* observed only: the peer vanished without a close frame */
  bad |= emit(dir, "disconnect_abnormal", &e);

  /* Outbound. */
  e = to_gateway(WSG_ENV_DELIVER, WSG_F_CONN | WSG_F_USEQ | WSG_F_TS);
  e.conn = 0x51a2b3c400000017;
  e.user_seq = 41;
  e.ts_us = 1700000000223456;
  payload(&e, S("echo: hello, world"), false);
  bad |= emit(dir, "deliver_one", &e);

  e.fields = WSG_F_GATEWAY | WSG_F_SLOT | WSG_F_USER;
  e.user = "bob";
  e.user_len = 3;
  payload(&e, binary, sizeof binary, true);
  bad |= emit(dir, "deliver_user", &e);

  /* Every uint width, at the edges where the encoding changes. */
  static const uint64_t ids[] = {
      0, 127, 128, 255, 256, 65535, 65536, 4294967295u, 4294967296, UINT64_MAX, 0x51a2b3c400000017};
  e.fields = WSG_F_GATEWAY | WSG_F_SLOT | WSG_F_CONNS;
  e.conn_ids = ids;
  e.conns.count = sizeof ids / sizeof ids[0];
  payload(&e, S("fan-out"), false);
  bad |= emit(dir, "deliver_list", &e);

  /* A fan-out to connections of several users, each with its user's delivery sequence (q): a
   * fresh sequence starts at the server's time in microseconds. */
  static const uint64_t seq_conns[] = {0x51a2b3c400000017, 0x51a2b3c400000018, 0x7e01000000000003};
  static const uint64_t seq_qs[] = {1795602833455812, 1795602833455812, 42};
  e.fields = WSG_F_GATEWAY | WSG_F_SLOT | WSG_F_CONNS | WSG_F_USEQS | WSG_F_TS;
  e.conn_ids = seq_conns;
  e.conns.count = 3;
  e.useq_ids = seq_qs;
  e.useqs.count = 3;
  payload(&e, S("{\"type\":\"message\",\"room\":\"lobby\"}"), false);
  bad |= emit(dir, "deliver_list_seq", &e);
  e.conn_ids = NULL;
  e.conns.count = 0;
  e.useq_ids = NULL;
  e.useqs.count = 0;

  e = to_gateway(WSG_ENV_CLOSE, WSG_F_CONN | WSG_F_CLOSE_CODE | WSG_F_CLOSE_REASON);
  e.slot = 2147483647; /* the largest partition number */
  e.conn = UINT64_MAX;
  e.close_code = 4000;
  e.close_reason = "kicked by an administrator";
  e.close_reason_len = strlen(e.close_reason);
  bad |= emit(dir, "close", &e);

  e.fields = WSG_F_GATEWAY | WSG_F_CONN;
  e.conn = 1;
  bad |= emit(dir, "close_minimal", &e);

  /* Channels: one record per gateway per publication; a text one with a namespaced channel, a
   * binary one whose channel name is Unicode, with the largest offset and epoch (2^53 - 1). */
  e = to_gateway(WSG_ENV_PUBLISH, WSG_F_CH_OFFSET | WSG_F_CH_EPOCH | WSG_F_TS);
  channel(&e, "news:eu");
  e.ch_offset = 42;
  e.ch_epoch = 1795602833455812;
  e.ts_us = 1700000000323456;
  payload(&e, S("{\"headline\":\"rates unchanged\"}"), false);
  bad |= emit(dir, "publish_text", &e);

  e.fields = WSG_F_GATEWAY | WSG_F_CHANNEL | WSG_F_CH_OFFSET | WSG_F_CH_EPOCH;
  channel(&e, "match:日本-🎉");
  e.ch_offset = (1ull << 53) - 1;
  e.ch_epoch = (1ull << 53) - 1;
  payload(&e, binary, sizeof binary, true);
  bad |= emit(dir, "publish_binary", &e);

  /* A handler's wsgate_subscribe: the connections of one gateway, batched; wsgate_unsubscribe of
   * one connection (`c`). No payload. */
  static const uint64_t sub_conns[] = {17, 4294967296, 18446744073709551615ull};
  e = to_gateway(WSG_ENV_SUBSCRIBE, WSG_F_CONNS | WSG_F_TS);
  e.conn_ids = sub_conns;
  e.conns.count = 3;
  channel(&e, "room:x");
  e.ts_us = 1700000000323456;
  bad |= emit(dir, "subscribe_list", &e);

  e.kind = WSG_ENV_UNSUBSCRIBE;
  e.fields = WSG_F_GATEWAY | WSG_F_SLOT | WSG_F_CONN | WSG_F_CHANNEL;
  e.conn = 17;
  bad |= emit(dir, "unsubscribe_one", &e);

  /* subscribe=handler: the gateway asks (token rq), the processor answers the one connection,
   * allowed or refused with a reason (rf). */
  e = inbound(WSG_ENV_SUB_REQUEST, S("alice"));
  e.fields |= WSG_F_REQUEST;
  e.conn = 17;
  channel(&e, "room:x");
  e.request = 4294967301ull;
  e.ts_us = 1700000000323456;
  bad |= emit(dir, "subscribe_request", &e);

  e.kind = WSG_ENV_SUBSCRIBE;
  e.fields = WSG_F_GATEWAY | WSG_F_SLOT | WSG_F_CONN | WSG_F_CHANNEL | WSG_F_REQUEST;
  bad |= emit(dir, "subscribe_answer", &e);
  e.fields |= WSG_F_REFUSAL;
  e.refusal = "not a member of room:x";
  e.refusal_len = strlen(e.refusal);
  bad |= emit(dir, "subscribe_refused", &e);

  /* Join/leave events of a channel: a gateway's batch (`d`, MessagePack: docs/PROTOCOL.md,
   * "Join and leave"), the same bytes on the inbound topic and to each gateway. */
  static const uint8_t batch[] = "\x82\xa1j\x91\xa5"
                                 "alice\xa1l\x91\xa3"
                                 "bob";
  e = to_gateway(WSG_ENV_JOINLEAVE, WSG_F_TS);
  channel(&e, "room:x");
  e.ts_us = 1700000000323456;
  payload(&e, batch, sizeof batch - 1, true);
  bad |= emit(dir, "joinleave", &e);

  return bad ? 1 : 0;
}
