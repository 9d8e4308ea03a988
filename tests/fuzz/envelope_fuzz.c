/*
 * libFuzzer target for everything in proto/ that reads untrusted bytes: wsg_envelope_decode(),
 * wsg_msgpack_validate() (and msgpack-c's unpacker behind it), wsg_conns_next() and the JSON
 * rendering. Beyond "no crash, no leak, no UB" it checks the invariants the rest of wsgate relies
 * on; a broken invariant aborts, which libFuzzer reports as a crash with the input saved:
 *   - decode says OK only for well-formed MessagePack, and every borrowed pointer lies inside
 *     the input;
 *   - wsg_conns_next() yields exactly conns.count ids;
 *   - a decoded envelope re-encodes, the result decodes to the same envelope, and encoding that
 *     again gives the same bytes (the encoding is canonical);
 *   - after wsg_msgpack_validate() says OK, msgpack-c unpacks the same bytes completely.
 *
 * Threads: libFuzzer's main thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "wsg_envelope.h"
#include "wsg_envelope_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "envelope_fuzz: invariant broken: %s (line %d)\n", #cond, __LINE__);         \
      abort();                                                                                     \
    }                                                                                              \
  } while (0)

static bool inside(const void *p, size_t len, const uint8_t *buf, size_t size) {
  if (len == 0)
    return true;
  const uint8_t *q = p;
  return q >= buf && q <= buf + size && len <= (size_t)(buf + size - q);
}

static bool same_bytes(const void *a, size_t alen, const void *b, size_t blen) {
  return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

static void check_same(const wsg_envelope *a, const wsg_envelope *b) {
  CHECK(a->kind == b->kind && a->version == b->version && a->fields == b->fields);
  CHECK(same_bytes(a->user, a->user_len, b->user, b->user_len));
  CHECK(same_bytes(a->gateway, a->gateway_len, b->gateway, b->gateway_len));
  CHECK(same_bytes(a->close_reason, a->close_reason_len, b->close_reason, b->close_reason_len));
  CHECK(same_bytes(a->data, a->data_len, b->data, b->data_len));
  CHECK(same_bytes(a->meta, a->meta_len, b->meta, b->meta_len));
  CHECK(a->conn == b->conn && a->slot == b->slot && a->ts_us == b->ts_us);
  CHECK(a->seq == b->seq && a->user_seq == b->user_seq && a->binary == b->binary);
  CHECK(a->close_code == b->close_code && a->conns.count == b->conns.count);
  size_t pa = 0, pb = 0;
  uint64_t ia, ib;
  for (;;) {
    int ra = wsg_conns_next(&a->conns, &pa, &ia);
    int rb = wsg_conns_next(&b->conns, &pb, &ib);
    CHECK(ra == rb);
    if (!ra)
      break;
    CHECK(ia == ib);
  }
}

static void check_validate(const uint8_t *data, size_t size) {
  int full = wsg_msgpack_validate(data, size, WSG_MSGPACK_MAX_DEPTH);
  int meta = wsg_msgpack_validate(data, size, WSG_MAX_META_DEPTH);
  int flat = wsg_msgpack_validate(data, size, 0);
  /* A tighter cap can only stop earlier, with TOO_DEEP (possibly before it would have seen
   * that the input is truncated or invalid). */
  CHECK(meta == full || meta == WSG_ENV_TOO_DEEP);
  CHECK(flat == meta || flat == WSG_ENV_TOO_DEEP);
  if (full != WSG_ENV_OK)
    return;
  msgpack_unpacked result;
  size_t off = 0;
  msgpack_unpacked_init(&result);
  CHECK(msgpack_unpack_next(&result, (const char *)data, size, &off) == MSGPACK_UNPACK_SUCCESS);
  CHECK(off == size);
  msgpack_unpacked_destroy(&result);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  check_validate(data, size);

  wsg_envelope env;
  const char *field = NULL;
  int rc = wsg_envelope_decode(&env, data, size, &field);
  CHECK(field != NULL);
  CHECK(strcmp(wsg_env_err_name(rc), "UNKNOWN") != 0);
  if (rc != WSG_ENV_OK)
    return 0;

  CHECK(wsg_msgpack_validate(data, size, WSG_MSGPACK_MAX_DEPTH) == WSG_ENV_OK);
  CHECK(inside(env.user, env.user_len, data, size));
  CHECK(inside(env.gateway, env.gateway_len, data, size));
  CHECK(inside(env.close_reason, env.close_reason_len, data, size));
  CHECK(inside(env.data, env.data_len, data, size));
  CHECK(inside(env.meta, env.meta_len, data, size));
  CHECK(inside(env.conns.raw, env.conns.raw_len, data, size));
  CHECK(env.user_len <= WSG_MAX_USER_LEN && env.gateway_len <= WSG_MAX_GATEWAY_LEN);
  CHECK(env.close_reason_len <= WSG_MAX_REASON_LEN && env.conns.count <= WSG_MAX_CONNS);
  size_t pos = 0, n = 0;
  uint64_t id;
  while (wsg_conns_next(&env.conns, &pos, &id))
    n++;
  CHECK(n == env.conns.count);

  wsg_buf first, second, json;
  wsg_buf_init(&first, 0);
  wsg_buf_init(&second, 0);
  wsg_buf_init(&json, 0);
  CHECK(wsg_envelope_encode(&env, &first) == WSG_ENV_OK);
  wsg_envelope again;
  CHECK(wsg_envelope_decode(&again, first.data, first.len, &field) == WSG_ENV_OK);
  check_same(&env, &again);
  CHECK(wsg_envelope_encode(&again, &second) == WSG_ENV_OK);
  CHECK(same_bytes(first.data, first.len, second.data, second.len));
  CHECK(wsg_envelope_to_json(&env, &json) == WSG_ENV_OK);
  CHECK(json.len > 0 && strlen((const char *)json.data) == json.len);
  wsg_buf_finish(&first);
  wsg_buf_finish(&second);
  wsg_buf_finish(&json);
  return 0;
}
