/*
 * What the wsg_envelope tests share (see wsg_envelope_testutil.h): the counting allocator, the
 * builders of crafted inputs and the round-trip check.
 *
 * Threads: Criterion's test workers only; each test runs in a process of its own, so the counters
 * are per test.
 */
#include "wsg_envelope_testutil.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- counting allocator (linked with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc) --------- */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);

unsigned long allocs;
bool fail_allocs;

void *__wrap_malloc(size_t n) {
  allocs++;
  return fail_allocs ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size) {
  allocs++;
  return fail_allocs ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n) {
  allocs++;
  return fail_allocs ? NULL : __real_realloc(p, n);
}

/* ---- building inputs ---------------------------------------------------------------------- */

/* Appends a value written either as "\"text\"" (a str, smallest header) or as hex bytes (spaces
 * ignored), the notation of the case tables in wsg_envelope_decode_test.c. */
size_t put_value(uint8_t *out, size_t pos, const char *v) {
  size_t len = strlen(v);
  if (len >= 2 && v[0] == '"' && v[len - 1] == '"') {
    size_t n = len - 2;
    cr_assert_lt(n, 256);
    if (n < 32) {
      out[pos++] = (uint8_t)(0xa0 | n);
    } else {
      out[pos++] = 0xd9;
      out[pos++] = (uint8_t)n;
    }
    memcpy(out + pos, v + 1, n);
    return pos + n;
  }
  for (const char *p = v; *p;) {
    if (*p == ' ') {
      p++;
      continue;
    }
    unsigned byte;
    cr_assert_eq(sscanf(p, "%2x", &byte), 1, "bad hex in \"%s\"", v);
    cr_assert_lt(pos, INPUT_MAX);
    out[pos++] = (uint8_t)byte;
    p += 2;
  }
  return pos;
}

/* A map of the given pairs, in the given order. */
size_t build_map(const kv *kvs, uint8_t *out) {
  size_t n = 0, pos = 1;
  for (; n < MAX_KV && kvs[n].k != NULL; n++) {
    if (kvs[n].k[0] == '#') {
      pos = put_value(out, pos, kvs[n].k + 1);
    } else {
      char quoted[64];
      snprintf(quoted, sizeof quoted, "\"%s\"", kvs[n].k);
      pos = put_value(out, pos, quoted);
    }
    pos = put_value(out, pos, kvs[n].v);
  }
  cr_assert_lt(n, 16);
  out[0] = (uint8_t)(0x80 | n);
  return pos;
}

/* ---- round trips ------------------------------------------------------------------------- */

void expect_same(const wsg_envelope *a, const wsg_envelope *b) {
  cr_expect_eq(a->kind, b->kind);
  cr_expect_eq(a->fields, b->fields);
  uint32_t f = a->fields;
#define SAME_BYTES(p, n)                                                                           \
  cr_expect((a->n == b->n) && (a->n == 0 || memcmp(a->p, b->p, a->n) == 0), #p)
  if (f & WSG_F_USER)
    SAME_BYTES(user, user_len);
  if (f & WSG_F_GATEWAY)
    SAME_BYTES(gateway, gateway_len);
  if (f & WSG_F_DATA)
    SAME_BYTES(data, data_len);
  if (f & WSG_F_META)
    SAME_BYTES(meta, meta_len);
  if (f & WSG_F_CLOSE_REASON)
    SAME_BYTES(close_reason, close_reason_len);
  if (f & WSG_F_CHANNEL)
    SAME_BYTES(channel, channel_len);
#undef SAME_BYTES
  if (f & WSG_F_CH_OFFSET)
    cr_expect_eq(a->ch_offset, b->ch_offset);
  if (f & WSG_F_CH_EPOCH)
    cr_expect_eq(a->ch_epoch, b->ch_epoch);
  if (f & WSG_F_CONN)
    cr_expect_eq(a->conn, b->conn);
  if (f & WSG_F_SLOT)
    cr_expect_eq(a->slot, b->slot);
  if (f & WSG_F_TS)
    cr_expect_eq(a->ts_us, b->ts_us);
  if (f & WSG_F_SEQ)
    cr_expect_eq(a->seq, b->seq);
  if (f & WSG_F_USEQ)
    cr_expect_eq(a->user_seq, b->user_seq);
  if (f & WSG_F_BINARY)
    cr_expect_eq(a->binary, b->binary);
  if (f & WSG_F_CLOSE_CODE)
    cr_expect_eq(a->close_code, b->close_code);
  if (f & WSG_F_CONNS) {
    cr_expect_eq(a->conns.count, b->conns.count);
    size_t pos = 0;
    uint64_t id;
    for (uint32_t i = 0; i < b->conns.count; i++) {
      cr_assert(wsg_conns_next(&b->conns, &pos, &id));
      cr_expect_eq(id, a->conn_ids[i]);
    }
    cr_expect(!wsg_conns_next(&b->conns, &pos, &id));
  }
  if (f & WSG_F_USEQS) {
    cr_expect_eq(a->useqs.count, b->useqs.count);
    size_t pos = 0;
    uint64_t q;
    for (uint32_t i = 0; i < b->useqs.count; i++) {
      cr_assert(wsg_conns_next(&b->useqs, &pos, &q));
      cr_expect_eq(q, a->useq_ids[i]);
    }
    cr_expect(!wsg_conns_next(&b->useqs, &pos, &q));
  }
}

void round_trip(const wsg_envelope *env) {
  wsg_buf b;
  wsg_envelope out;
  const char *field = NULL;
  wsg_buf_init(&b, 0);
  int rc = wsg_envelope_encode(env, &b);
  cr_assert_eq(rc, WSG_ENV_OK, "%s: encode: %s", wsg_env_kind_name(env->kind),
               wsg_env_err_name(rc));
  rc = wsg_envelope_decode(&out, b.data, b.len, &field);
  cr_assert_eq(rc, WSG_ENV_OK, "%s: decode: %s (%s)", wsg_env_kind_name(env->kind),
               wsg_env_err_name(rc), field);
  cr_expect_eq(out.version, WSG_ENVELOPE_VERSION);
  expect_same(env, &out);
  wsg_buf_finish(&b);
}

const uint8_t test_meta[TEST_META_LEN] = {0x82, 0xa3, 's', 'u',  'b', 0xa5, 'a',  'l',
                                          'i',  'c',  'e', 0xa1, 'n', 0x92, 0x01, 0xff};

wsg_envelope inbound(wsg_env_kind kind) {
  wsg_envelope e = {0};
  e.kind = kind;
  e.fields = WSG_F_GATEWAY | WSG_F_SLOT | WSG_F_USER | WSG_F_CONN | WSG_F_TS | WSG_F_SEQ;
  e.gateway = "gw-1";
  e.gateway_len = 4;
  e.slot = 15;
  e.user = "zoë";
  e.user_len = strlen(e.user);
  e.conn = 0x0123456789abcdef;
  e.ts_us = 1700000000000000;
  e.seq = 99;
  return e;
}
