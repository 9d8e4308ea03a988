/*
 * Unit tests of wsg_envelope's decoder: every error code reached by a crafted input with the right
 * err_field, length and depth bounds, forward compatibility (unknown keys, signed integers) and
 * the allocation guarantees (the counting allocator, and a child process under a tight
 * RLIMIT_AS). Part of the wsg_envelope executable (see wsg_envelope_test.c).
 *
 * Threads: Criterion's test workers only.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "wsg_envelope_testutil.h"

/* ---- decode errors: one row per way to be wrong -----------------------------------------------
 */

typedef struct {
  const char *name;
  const char *raw; /* hex input; when NULL the input is the map of kvs */
  kv kvs[MAX_KV];
  int err;
  const char *field;
} decode_case;

static const decode_case decode_cases[] = {
    /* Structure. */
    {"empty input", "", {{0}}, WSG_ENV_TRUNCATED, ""},
    {"top level is an array", "91 01", {{0}}, WSG_ENV_NOT_MAP, ""},
    {"top level is a str", "a3 616263", {{0}}, WSG_ENV_NOT_MAP, ""},
    {"top level is nil", "c0", {{0}}, WSG_ENV_NOT_MAP, ""},
    {"0xc1 at the top", "c1", {{0}}, WSG_ENV_INVALID, ""},
    {"0xc1 as a key", "81 c1 01", {{0}}, WSG_ENV_INVALID, ""},
    {"0xc1 in d", NULL, {INBOUND, {"d", "c1"}}, WSG_ENV_INVALID, "d"},
    {"0xc1 deep in an unknown value", NULL, {INBOUND, {"zz", "91 91 c1"}}, WSG_ENV_INVALID, ""},
    {"map declares more pairs than bytes", "8f a1 76 01", {{0}}, WSG_ENV_TRUNCATED, ""},
    {"key without value", "81 a1 76", {{0}}, WSG_ENV_TRUNCATED, "v"},
    {"map32 of 2^32-1 pairs in 5 bytes", "df ffffffff", {{0}}, WSG_ENV_TRUNCATED, ""},
    {"map16 of 65535 pairs", "de ffff", {{0}}, WSG_ENV_TRUNCATED, ""},
    {"bin32 of 4 GiB in d", NULL, {INBOUND, {"d", "c6 ffffffff"}}, WSG_ENV_TRUNCATED, "d"},
    {"bin16 longer than the input", NULL, {INBOUND, {"d", "c5 0100 00"}}, WSG_ENV_TRUNCATED, "d"},
    {"str32 of 4 GiB in u", NULL, {V1, T_MSG, G, S3, {"u", "db ffffffff"}}, WSG_ENV_TRUNCATED, "u"},
    {"array32 of 2^32-1 in cs",
     NULL,
     {V1, T_DELIVER, G, {"cs", "dd ffffffff"}},
     WSG_ENV_TRUNCATED,
     "cs"},
    {"map32 of 2^32-1 in m", NULL, {INBOUND, {"m", "df ffffffff"}}, WSG_ENV_TRUNCATED, "m"},
    {"ext32 of 4 GiB in an unknown key",
     NULL,
     {INBOUND, {"x", "c9 ffffffff 01"}},
     WSG_ENV_TRUNCATED,
     ""},
    {"uint64 cut short", NULL, {V1, T_MSG, G, S3, U, {"c", "cf 0000"}}, WSG_ENV_TRUNCATED, "c"},
    {"trailing byte", NULL, {INBOUND, {"zz", "c0"}}, WSG_ENV_OK, ""}, /* patched below */

    /* Types. */
    {"v is a str", NULL, {{"v", "\"1\""}, T_MSG, G, S3, U, C42}, WSG_ENV_BAD_TYPE, "v"},
    {"t is an int", NULL, {V1, {"t", "01"}, G, S3, U, C42}, WSG_ENV_BAD_TYPE, "t"},
    {"g is bin", NULL, {V1, T_MSG, {"g", "c4 01 61"}, S3, U, C42}, WSG_ENV_BAD_TYPE, "g"},
    {"s is nil", NULL, {V1, T_MSG, G, {"s", "c0"}, U, C42}, WSG_ENV_BAD_TYPE, "s"},
    {"u is an int", NULL, {V1, T_MSG, G, S3, {"u", "05"}, C42}, WSG_ENV_BAD_TYPE, "u"},
    {"c is a str", NULL, {V1, T_MSG, G, S3, U, {"c", "\"42\""}}, WSG_ENV_BAD_TYPE, "c"},
    {"c is a float",
     NULL,
     {V1, T_MSG, G, S3, U, {"c", "cb 4045000000000000"}},
     WSG_ENV_BAD_TYPE,
     "c"},
    {"n is an array", NULL, {INBOUND, {"n", "92 01 02"}}, WSG_ENV_BAD_TYPE, "n"},
    {"q is a map", NULL, {INBOUND, {"q", "81 a1 61 01"}}, WSG_ENV_BAD_TYPE, "q"},
    {"ts is a bool", NULL, {INBOUND, {"ts", "c3"}}, WSG_ENV_BAD_TYPE, "ts"},
    {"cc is a str", NULL, {V1, T_CLOSE, G, C42, {"cc", "\"1000\""}}, WSG_ENV_BAD_TYPE, "cc"},
    {"cr is an int",
     NULL,
     {V1, T_CLOSE, G, C42, {"cc", "cd 03e8"}, {"cr", "01"}},
     WSG_ENV_BAD_TYPE,
     "cr"},
    {"b is 1", NULL, {INBOUND, {"b", "01"}}, WSG_ENV_BAD_TYPE, "b"},
    {"d is an int", NULL, {INBOUND, {"d", "05"}}, WSG_ENV_BAD_TYPE, "d"},
    {"d is an ext", NULL, {INBOUND, {"d", "d4 01 00"}}, WSG_ENV_BAD_TYPE, "d"},
    {"m is an array", NULL, {INBOUND, {"m", "91 01"}}, WSG_ENV_BAD_TYPE, "m"},
    {"m is a str", NULL, {INBOUND, {"m", "\"{}\""}}, WSG_ENV_BAD_TYPE, "m"},
    {"cs is a map", NULL, {V1, T_DELIVER, G, {"cs", "81 01 02"}}, WSG_ENV_BAD_TYPE, "cs"},
    {"cs holds a str", NULL, {V1, T_DELIVER, G, {"cs", "92 01 a1 78"}}, WSG_ENV_BAD_TYPE, "cs"},
    {"cs holds an array", NULL, {V1, T_DELIVER, G, {"cs", "92 91 01 02"}}, WSG_ENV_BAD_TYPE, "cs"},
    {"a key is an int", NULL, {INBOUND, {"#07", "01"}}, WSG_ENV_BAD_TYPE, ""},
    {"a key is a map", NULL, {INBOUND, {"#81 01 02", "01"}}, WSG_ENV_BAD_TYPE, ""},

    /* Required fields. */
    {"no v", NULL, {T_MSG, G, S3, U, C42}, WSG_ENV_MISSING, "v"},
    {"no t", NULL, {V1, G, S3, U, C42}, WSG_ENV_MISSING, "t"},
    {"msg without g", NULL, {V1, T_MSG, S3, U, C42}, WSG_ENV_MISSING, "g"},
    {"msg without s", NULL, {V1, T_MSG, G, U, C42}, WSG_ENV_MISSING, "s"},
    {"msg without u", NULL, {V1, T_MSG, G, S3, C42}, WSG_ENV_MISSING, "u"},
    {"connect without c", NULL, {V1, T_CONNECT, G, S3, U}, WSG_ENV_MISSING, "c"},
    {"disconnect without u", NULL, {V1, T_DISCONNECT, G, S3, C42}, WSG_ENV_MISSING, "u"},
    {"deliver without g", NULL, {V1, T_DELIVER, C42, D_HI}, WSG_ENV_MISSING, "g"},
    {"deliver without a target", NULL, {V1, T_DELIVER, G, S3, D_HI}, WSG_ENV_MISSING, "c|cs|u"},
    {"close without c", NULL, {V1, T_CLOSE, G}, WSG_ENV_MISSING, "c"},
    {"close without g", NULL, {V1, T_CLOSE, C42}, WSG_ENV_MISSING, "g"},
    {"cr without cc", NULL, {V1, T_CLOSE, G, C42, {"cr", "\"bye\""}}, WSG_ENV_MISSING, "cc"},

    /* Values. */
    {"c is negative", NULL, {V1, T_MSG, G, S3, U, {"c", "ff"}}, WSG_ENV_BAD_VALUE, "c"},
    {"c is a negative int64",
     NULL,
     {V1, T_MSG, G, S3, U, {"c", "d3 8000000000000000"}},
     WSG_ENV_BAD_VALUE,
     "c"},
    {"s is 2^31", NULL, {V1, T_MSG, G, {"s", "ce 80000000"}, U, C42}, WSG_ENV_BAD_VALUE, "s"},
    {"s is 2^32",
     NULL,
     {V1, T_MSG, G, {"s", "cf 0000000100000000"}, U, C42},
     WSG_ENV_BAD_VALUE,
     "s"},
    {"u is empty", NULL, {V1, T_MSG, G, S3, {"u", "a0"}, C42}, WSG_ENV_BAD_VALUE, "u"},
    {"g is empty", NULL, {V1, T_MSG, {"g", "a0"}, S3, U, C42}, WSG_ENV_BAD_VALUE, "g"},
    {"deliver to c and cs",
     NULL,
     {V1, T_DELIVER, G, C42, {"cs", "91 01"}},
     WSG_ENV_BAD_VALUE,
     "cs"},
    {"cs is empty", NULL, {V1, T_DELIVER, G, {"cs", "90"}}, WSG_ENV_BAD_VALUE, "cs"},
    {"cs holds a negative id",
     NULL,
     {V1, T_DELIVER, G, {"cs", "92 01 ff"}},
     WSG_ENV_BAD_VALUE,
     "cs"},
    {"qs without cs", NULL, {V1, T_DELIVER, G, C42, {"qs", "91 01"}}, WSG_ENV_BAD_VALUE, "qs"},
    {"qs shorter than cs",
     NULL,
     {V1, T_DELIVER, G, {"cs", "92 01 02"}, {"qs", "91 05"}},
     WSG_ENV_BAD_VALUE,
     "qs"},
    {"qs holds a string",
     NULL,
     {V1, T_DELIVER, G, {"cs", "91 01"}, {"qs", "91 a1 78"}},
     WSG_ENV_BAD_TYPE,
     "qs"},
    /* Channels: a publish needs its gateway, channel, offset and epoch, in that order. */
    {"publish without g", NULL, {V1, T_PUBLISH, CH_NEWS, CO1, CE7}, WSG_ENV_MISSING, "g"},
    {"publish without ch", NULL, {V1, T_PUBLISH, G, CO1, CE7}, WSG_ENV_MISSING, "ch"},
    {"publish without co", NULL, {V1, T_PUBLISH, G, CH_NEWS, CE7}, WSG_ENV_MISSING, "co"},
    {"publish without ce", NULL, {V1, T_PUBLISH, G, CH_NEWS, CO1}, WSG_ENV_MISSING, "ce"},
    {"empty ch", NULL, {V1, T_PUBLISH, G, {"ch", "a0"}, CO1, CE7}, WSG_ENV_BAD_VALUE, "ch"},
    {"ch with a control",
     NULL,
     {V1, T_PUBLISH, G, {"ch", "a2 610a"}, CO1, CE7},
     WSG_ENV_BAD_VALUE,
     "ch"},
    {"ch with a C1 control",
     NULL,
     {V1, T_PUBLISH, G, {"ch", "a2 c285"}, CO1, CE7},
     WSG_ENV_BAD_VALUE,
     "ch"},
    {"ch not UTF-8", NULL, {V1, T_PUBLISH, G, {"ch", "a1 ff"}, CO1, CE7}, WSG_ENV_BAD_UTF8, "ch"},
    {"ch is a uint", NULL, {V1, T_PUBLISH, G, {"ch", "01"}, CO1, CE7}, WSG_ENV_BAD_TYPE, "ch"},
    {"co 0", NULL, {V1, T_PUBLISH, G, CH_NEWS, {"co", "00"}, CE7}, WSG_ENV_BAD_VALUE, "co"},
    {"co 2^53",
     NULL,
     {V1, T_PUBLISH, G, CH_NEWS, {"co", "cf 0020000000000000"}, CE7},
     WSG_ENV_BAD_VALUE,
     "co"},
    {"ce 0", NULL, {V1, T_PUBLISH, G, CH_NEWS, CO1, {"ce", "00"}}, WSG_ENV_BAD_VALUE, "ce"},
    {"co negative", NULL, {V1, T_PUBLISH, G, CH_NEWS, {"co", "ff"}, CE7}, WSG_ENV_BAD_VALUE, "co"},
    {"cc 999", NULL, {V1, T_CLOSE, G, C42, {"cc", "cd 03e7"}}, WSG_ENV_BAD_VALUE, "cc"},
    {"cc 1004 (reserved)", NULL, {V1, T_CLOSE, G, C42, {"cc", "cd 03ec"}}, WSG_ENV_BAD_VALUE, "cc"},
    {"cc 1005 sent", NULL, {V1, T_CLOSE, G, C42, {"cc", "cd 03ed"}}, WSG_ENV_BAD_VALUE, "cc"},
    {"cc 1006 sent", NULL, {V1, T_CLOSE, G, C42, {"cc", "cd 03ee"}}, WSG_ENV_BAD_VALUE, "cc"},
    {"cc 1015 sent", NULL, {V1, T_CLOSE, G, C42, {"cc", "cd 03f7"}}, WSG_ENV_BAD_VALUE, "cc"},
    {"cc 2000 (reserved)", NULL, {V1, T_CLOSE, G, C42, {"cc", "cd 07d0"}}, WSG_ENV_BAD_VALUE, "cc"},
    {"cc 5000", NULL, {V1, T_CLOSE, G, C42, {"cc", "cd 1388"}}, WSG_ENV_BAD_VALUE, "cc"},
    {"cc 70000", NULL, {V1, T_CLOSE, G, C42, {"cc", "ce 00011170"}}, WSG_ENV_BAD_VALUE, "cc"},
    {"cc 1004 in a disconnect",
     NULL,
     {V1, T_DISCONNECT, G, S3, U, C42, {"cc", "cd 03ec"}},
     WSG_ENV_BAD_VALUE,
     "cc"},

    /* UTF-8. */
    {"u has an overlong '/'",
     NULL,
     {V1, T_MSG, G, S3, {"u", "a2 c0af"}, C42},
     WSG_ENV_BAD_UTF8,
     "u"},
    {"g has a surrogate", NULL, {V1, T_MSG, {"g", "a3 eda080"}, S3, U, C42}, WSG_ENV_BAD_UTF8, "g"},
    {"u is above U+10FFFF",
     NULL,
     {V1, T_MSG, G, S3, {"u", "a4 f4908080"}, C42},
     WSG_ENV_BAD_UTF8,
     "u"},
    {"u ends inside a sequence",
     NULL,
     {V1, T_MSG, G, S3, {"u", "a2 61e2"}, C42},
     WSG_ENV_BAD_UTF8,
     "u"},
    {"cr has a stray continuation byte",
     NULL,
     {V1, T_CLOSE, G, C42, {"cc", "cd 03e8"}, {"cr", "a2 8061"}},
     WSG_ENV_BAD_UTF8,
     "cr"},

    /* Versions and kinds. */
    {"v is 2", NULL, {{"v", "02"}, T_MSG, G, S3, U, C42}, WSG_ENV_BAD_VERSION, "v"},
    {"v is 0", NULL, {{"v", "00"}, T_MSG, G, S3, U, C42}, WSG_ENV_BAD_VERSION, "v"},
    {"v is -1", NULL, {{"v", "ff"}, T_MSG, G, S3, U, C42}, WSG_ENV_BAD_VERSION, "v"},
    {"v is 2^64-1",
     NULL,
     {{"v", "cf ffffffffffffffff"}, T_MSG, G, S3, U, C42},
     WSG_ENV_BAD_VERSION,
     "v"},
    /* A newer version may change a field's type: the version is what to report. */
    {"v 2 with a field we would reject",
     NULL,
     {{"u", "05"}, {"v", "02"}, T_MSG, G, S3, C42},
     WSG_ENV_BAD_VERSION,
     "v"},
    {"v 2 with an unknown kind",
     NULL,
     {{"v", "02"}, {"t", "\"resume\""}},
     WSG_ENV_BAD_VERSION,
     "v"},
    {"unknown kind", NULL, {V1, {"t", "\"bogus\""}, G, S3, U, C42}, WSG_ENV_BAD_KIND, "t"},
    {"kinds are case-sensitive",
     NULL,
     {V1, {"t", "\"MSG\""}, G, S3, U, C42},
     WSG_ENV_BAD_KIND,
     "t"},
    {"empty kind", NULL, {V1, {"t", "a0"}, G, S3, U, C42}, WSG_ENV_BAD_KIND, "t"},

    /* Duplicates. */
    {"u twice", NULL, {INBOUND, {"u", "\"mallory\""}}, WSG_ENV_DUPLICATE, "u"},
    {"v twice", NULL, {INBOUND, V1}, WSG_ENV_DUPLICATE, "v"},
    {"cs twice",
     NULL,
     {V1, T_DELIVER, G, {"cs", "91 01"}, {"cs", "91 02"}},
     WSG_ENV_DUPLICATE,
     "cs"},
    {"d twice, second ill-typed", NULL, {INBOUND, D_HI, {"d", "05"}}, WSG_ENV_DUPLICATE, "d"},
};

#define N_DECODE_CASES (sizeof decode_cases / sizeof decode_cases[0])

/* Parameters are row numbers: Criterion copies parameters into a fresh worker process, where
 * pointers from this one (the strings in a row) would not be valid. */
static size_t decode_rows[N_DECODE_CASES];

ParameterizedTestParameters(decode, errors) {
  for (size_t i = 0; i < N_DECODE_CASES; i++)
    decode_rows[i] = i;
  return cr_make_param_array(size_t, decode_rows, N_DECODE_CASES);
}

ParameterizedTest(size_t *row, decode, errors) {
  const decode_case *tc = &decode_cases[*row];
  uint8_t in[INPUT_MAX];
  size_t len = tc->raw != NULL ? put_value(in, 0, tc->raw) : build_map(tc->kvs, in);
  int want = tc->err;
  if (strcmp(tc->name, "trailing byte") == 0) {
    in[len++] = 0xc0;
    want = WSG_ENV_TRAILING;
  }
  /* An exact-size heap copy: a read past the end is an ASan report. */
  uint8_t *buf = malloc(len ? len : 1);
  cr_assert_not_null(buf);
  memcpy(buf, in, len);
  wsg_envelope env;
  const char *field = NULL;
  int rc = wsg_envelope_decode(&env, buf, len, &field);
  cr_expect_eq(rc, want, "%s: got %s, expected %s", tc->name, wsg_env_err_name(rc),
               wsg_env_err_name(want));
  cr_expect_str_eq(field, tc->field, "%s: err_field \"%s\", expected \"%s\"", tc->name, field,
                   tc->field);
  free(buf);
}

/* Every error the decoder can return is reached by a row above (NOMEM, which only encoding can
 * return, is reached by encode::nomem in wsg_envelope_test.c). */
Test(decode, every_error_code_has_a_case) {
  static const int codes[] = {
#define CODE(name, value, msg) WSG_ENV_##name,
      WSG_ENV_ERRNO_MAP(CODE)
#undef CODE
  };
  for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
    int c = codes[i];
    if (c == WSG_ENV_OK || c == WSG_ENV_NOMEM || c == WSG_ENV_TRAILING || c == WSG_ENV_TOO_LONG ||
        c == WSG_ENV_TOO_DEEP)
      continue; /* OK: the round trips; TRAILING: the patched row; TOO_*: tests below */
    bool found = false;
    for (size_t k = 0; k < N_DECODE_CASES; k++)
      found |= decode_cases[k].err == c;
    cr_expect(found, "no decode case for %s", wsg_env_err_name(c));
  }
}

/* ---- lengths and depth ------------------------------------------------------------------------
 */

/* An inbound map whose `key` holds a str of `n` bytes (str16), or the other fields if key is u. */
static size_t inbound_with_str(uint8_t *out, const char *key, size_t n, char fill) {
  kv kvs[MAX_KV] = {V1, T_MSG, G, S3, U, C42};
  size_t i = 0;
  while (kvs[i].k != NULL && strcmp(kvs[i].k, key) != 0)
    i++;
  kvs[i].k = key;
  kvs[i].v = "c0"; /* placeholder, replaced below */
  if (strcmp(key, "cr") == 0) {
    kvs[1] = (kv)T_CLOSE;
    kvs[i + 1] = (kv){"cc", "cd 03e8"};
  }
  size_t pos = build_map(kvs, out);
  /* The placeholder is the last byte of the key's value: find it and splice the string in. */
  uint8_t *ph = memchr(out, 0xc0, pos);
  cr_assert_not_null(ph);
  size_t after = pos - (size_t)(ph + 1 - out);
  uint8_t tail[INPUT_MAX];
  memcpy(tail, ph + 1, after);
  size_t at = (size_t)(ph - out);
  out[at++] = 0xda;
  out[at++] = (uint8_t)(n >> 8);
  out[at++] = (uint8_t)n;
  memset(out + at, fill, n);
  at += n;
  memcpy(out + at, tail, after);
  return at + after;
}

Test(decode, string_bounds) {
  static const struct {
    const char *key;
    size_t max;
  } bounds[] = {{"u", WSG_MAX_USER_LEN}, {"g", WSG_MAX_GATEWAY_LEN}, {"cr", WSG_MAX_REASON_LEN}};
  uint8_t in[INPUT_MAX];
  for (size_t i = 0; i < sizeof bounds / sizeof bounds[0]; i++) {
    wsg_envelope env;
    const char *field = NULL;
    size_t len = inbound_with_str(in, bounds[i].key, bounds[i].max, 'x');
    cr_expect_eq(wsg_envelope_decode(&env, in, len, &field), WSG_ENV_OK, "%s at its maximum: %s",
                 bounds[i].key, field);
    len = inbound_with_str(in, bounds[i].key, bounds[i].max + 1, 'x');
    cr_expect_eq(wsg_envelope_decode(&env, in, len, &field), WSG_ENV_TOO_LONG, "%s over",
                 bounds[i].key);
    cr_expect_str_eq(field, bounds[i].key);
  }
}

Test(decode, conns_bounds) {
  /* 65536 ids fit; 65537 do not. array32 header, then fixints. */
  size_t max = WSG_MAX_CONNS + 1;
  uint8_t *in = malloc(64 + max);
  cr_assert_not_null(in);
  for (size_t n = WSG_MAX_CONNS; n <= max; n++) {
    kv kvs[MAX_KV] = {V1, T_DELIVER, G, {"cs", "dd"}};
    size_t pos = build_map(kvs, in);
    in[pos++] = (uint8_t)(n >> 24);
    in[pos++] = (uint8_t)(n >> 16);
    in[pos++] = (uint8_t)(n >> 8);
    in[pos++] = (uint8_t)n;
    for (size_t i = 0; i < n; i++)
      in[pos++] = (uint8_t)(i & 0x7f);
    wsg_envelope env;
    const char *field = NULL;
    int rc = wsg_envelope_decode(&env, in, pos, &field);
    if (n == WSG_MAX_CONNS) {
      cr_expect_eq(rc, WSG_ENV_OK);
      cr_expect_eq(env.conns.count, n);
      size_t it = 0, seen = 0;
      uint64_t id;
      while (wsg_conns_next(&env.conns, &it, &id))
        cr_assert_eq(id, seen++ & 0x7f);
      cr_expect_eq(seen, n);
    } else {
      cr_expect_eq(rc, WSG_ENV_TOO_LONG);
      cr_expect_str_eq(field, "cs");
    }
  }
  free(in);
}

Test(decode, payload_bound) {
  /* The payload limit needs a real input that long: truncation is checked first. */
  size_t n = (size_t)WSG_MAX_PAYLOAD + 1;
  uint8_t *in = malloc(64 + n);
  cr_assert_not_null(in);
  for (size_t len = n - 1; len <= n; len++) {
    kv kvs[MAX_KV] = {INBOUND, {"d", "c6"}};
    size_t pos = build_map(kvs, in);
    in[pos++] = (uint8_t)(len >> 24);
    in[pos++] = (uint8_t)(len >> 16);
    in[pos++] = (uint8_t)(len >> 8);
    in[pos++] = (uint8_t)len;
    memset(in + pos, 'p', len);
    wsg_envelope env;
    const char *field = NULL;
    int rc = wsg_envelope_decode(&env, in, pos + len, &field);
    cr_expect_eq(rc, len == n ? WSG_ENV_TOO_LONG : WSG_ENV_OK, "payload of %zu bytes: %s", len,
                 wsg_env_err_name(rc));
    if (len == n)
      cr_expect_str_eq(field, "d");
  }
  free(in);
}

/* `depth` nested single-entry maps {"a": {"a": ... 1}}. */
static size_t nested_maps(uint8_t *out, unsigned depth) {
  size_t pos = 0;
  for (unsigned i = 0; i < depth; i++) {
    out[pos++] = 0x81;
    out[pos++] = 0xa1;
    out[pos++] = 'a';
  }
  out[pos++] = 0x01;
  return pos;
}

static size_t inbound_with_raw(uint8_t *out, const char *key, const uint8_t *val, size_t val_len) {
  kv kvs[MAX_KV] = {INBOUND, {key, ""}};
  size_t pos = build_map(kvs, out);
  memcpy(out + pos, val, val_len);
  return pos + val_len;
}

Test(decode, metadata_depth) {
  uint8_t val[1024], in[INPUT_MAX];
  wsg_envelope env;
  const char *field = NULL;

  size_t n = nested_maps(val, WSG_MAX_META_DEPTH);
  size_t len = inbound_with_raw(in, "m", val, n);
  cr_expect_eq(wsg_envelope_decode(&env, in, len, &field), WSG_ENV_OK, "depth %d: %s",
               WSG_MAX_META_DEPTH, field);
  cr_expect_eq(env.meta_len, n);
  cr_expect_eq(memcmp(env.meta, val, n), 0);

  n = nested_maps(val, WSG_MAX_META_DEPTH + 1);
  len = inbound_with_raw(in, "m", val, n);
  cr_expect_eq(wsg_envelope_decode(&env, in, len, &field), WSG_ENV_TOO_DEEP);
  cr_expect_str_eq(field, "m");

  /* Unknown values may nest up to the hard cap counting the envelope map, no further. */
  n = nested_maps(val, WSG_MSGPACK_MAX_DEPTH - 1);
  len = inbound_with_raw(in, "zz", val, n);
  cr_expect_eq(wsg_envelope_decode(&env, in, len, &field), WSG_ENV_OK);
  cr_expect_eq(wsg_msgpack_validate(in, len, WSG_MSGPACK_MAX_DEPTH), WSG_ENV_OK);
  n = nested_maps(val, WSG_MSGPACK_MAX_DEPTH);
  len = inbound_with_raw(in, "zz", val, n);
  cr_expect_eq(wsg_envelope_decode(&env, in, len, &field), WSG_ENV_TOO_DEEP);
  cr_expect_str_eq(field, "");
}

/* ---- forward compatibility --------------------------------------------------------------------
 */

Test(decode, unknown_keys_are_skipped) {
  kv kvs[MAX_KV] = {
      {"zz", "82 a1 61 91 92 01 02 a1 62 81 a1 63 c0"}, /* {"a": [[1,2]], "b": {"c": nil}} */
      V1,
      {"future", "dc 0003 01 d9 03 616263 c6 00000002 0000"}, /* array16 of int, str8, bin32 */
      T_MSG,
      {"xt", "c7 02 05 abcd"},      /* ext8 */
      {"f", "cb 3ff0000000000000"}, /* float64 */
      G,
      S3,
      {"ee", "d8 01 00112233445566778899aabbccddeeff"}, /* fixext16 */
      U,
      C42,
      {"vv", "90"}, /* a key "vv" close to a known one */
      D_HI,
  };
  uint8_t in[INPUT_MAX];
  size_t len = build_map(kvs, in);
  wsg_envelope env;
  const char *field = NULL;
  cr_assert_eq(wsg_envelope_decode(&env, in, len, &field), WSG_ENV_OK, "%s", field);
  cr_expect_eq(env.kind, WSG_ENV_MSG);
  cr_expect_eq(env.user_len, 5);
  cr_expect_eq(memcmp(env.user, "alice", 5), 0);
  cr_expect_eq(env.conn, 42);
  cr_expect_eq(env.data_len, 2);
  cr_expect_eq(env.fields, WSG_F_GATEWAY | WSG_F_SLOT | WSG_F_USER | WSG_F_CONN | WSG_F_DATA);
}

Test(decode, every_integer_width_is_accepted) {
  /* 42 written every way MessagePack allows, and 1 for the version. */
  static const char *const forty_two[] = {
      "2a",    "cc 2a",   "cd 002a",     "ce 0000002a",         "cf 000000000000002a",
      "d0 2a", "d1 002a", "d2 0000002a", "d3 000000000000002a",
  };
  static const char *const one[] = {
      "01",    "cc 01",   "cd 0001",     "ce 00000001",        "cf 0000000000000001",
      "d0 01", "d1 0001", "d2 00000001", "d3 0000000000000001"};
  for (size_t i = 0; i < sizeof forty_two / sizeof forty_two[0]; i++) {
    kv kvs[MAX_KV] = {{"v", one[i]},
                      T_CLOSE,
                      G,
                      {"c", forty_two[i]},
                      {"s", forty_two[i]},
                      {"ts", forty_two[i]},
                      {"cc", "d1 0fa0"},
                      {"q", forty_two[i]}};
    uint8_t in[INPUT_MAX];
    size_t len = build_map(kvs, in);
    wsg_envelope env;
    const char *field = NULL;
    cr_assert_eq(wsg_envelope_decode(&env, in, len, &field), WSG_ENV_OK, "%s: %s", forty_two[i],
                 field);
    cr_expect_eq(env.conn, 42);
    cr_expect_eq(env.slot, 42);
    cr_expect_eq(env.ts_us, 42);
    cr_expect_eq(env.user_seq, 42);
    cr_expect_eq(env.close_code, 4000);
  }
  /* And the largest values of each field. */
  kv kvs[MAX_KV] = {
      V1, T_CLOSE, G, {"c", "cf ffffffffffffffff"}, {"s", "d2 7fffffff"}, {"cc", "cd 1387"}};
  uint8_t in[INPUT_MAX];
  size_t len = build_map(kvs, in);
  wsg_envelope env;
  cr_assert_eq(wsg_envelope_decode(&env, in, len, NULL), WSG_ENV_OK);
  cr_expect_eq(env.conn, UINT64_MAX);
  cr_expect_eq(env.slot, INT32_MAX);
  cr_expect_eq(env.close_code, 4999);
}

Test(decode, conns_in_signed_encodings) {
  kv kvs[MAX_KV] = {
      V1, T_DELIVER, G, {"cs", "94 01 d0 02 d3 0000000000000003 cf ffffffffffffffff"}};
  uint8_t in[INPUT_MAX];
  size_t len = build_map(kvs, in);
  wsg_envelope env;
  cr_assert_eq(wsg_envelope_decode(&env, in, len, NULL), WSG_ENV_OK);
  uint64_t want[] = {1, 2, 3, UINT64_MAX}, id;
  size_t pos = 0, i = 0;
  while (wsg_conns_next(&env.conns, &pos, &id)) {
    cr_assert_lt(i, 4);
    cr_expect_eq(id, want[i], "element %zu", i);
    i++;
  }
  cr_expect_eq(i, 4);
  /* Re-encoding from the raw list writes the smallest encodings. */
  wsg_buf b;
  wsg_buf_init(&b, 0);
  cr_assert_eq(wsg_envelope_encode(&env, &b), WSG_ENV_OK);
  wsg_envelope again;
  cr_assert_eq(wsg_envelope_decode(&again, b.data, b.len, NULL), WSG_ENV_OK);
  cr_expect_eq(again.conns.raw_len, 1 + 1 + 1 + 9);
  wsg_buf_finish(&b);
}

Test(decode, payload_as_str_and_empty_forms) {
  static const char *const forms[] = {"\"hi\"",           "d9 02 6869", "da 0002 6869",
                                      "db 00000002 6869", "c4 02 6869", "c5 0002 6869",
                                      "c6 00000002 6869"};
  for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
    kv kvs[MAX_KV] = {INBOUND, {"d", forms[i]}, {"b", "c2"}};
    uint8_t in[INPUT_MAX];
    size_t len = build_map(kvs, in);
    wsg_envelope env;
    cr_assert_eq(wsg_envelope_decode(&env, in, len, NULL), WSG_ENV_OK, "%s", forms[i]);
    cr_expect_eq(env.data_len, 2);
    cr_expect_eq(memcmp(env.data, "hi", 2), 0);
    cr_expect(env.fields & WSG_F_BINARY);
    cr_expect(!env.binary);
  }
}

Test(decode, disconnect_may_report_observed_codes) {
  static const char *const codes[] = {"cd 03ed", "cd 03ee", "cd 03f7", "cd 03e8", "cd 0bb8"};
  for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
    kv kvs[MAX_KV] = {V1, T_DISCONNECT, G, S3, U, C42, {"cc", codes[i]}};
    uint8_t in[INPUT_MAX];
    size_t len = build_map(kvs, in);
    wsg_envelope env;
    cr_expect_eq(wsg_envelope_decode(&env, in, len, NULL), WSG_ENV_OK, "%s", codes[i]);
  }
}

Test(decode, null_err_field_and_null_input) {
  wsg_envelope env;
  cr_expect_eq(wsg_envelope_decode(&env, NULL, 0, NULL), WSG_ENV_TRUNCATED);
  cr_expect_eq(wsg_envelope_decode(&env, NULL, 5, NULL), WSG_ENV_INVALID);
  const uint8_t bad[] = {0x91, 0x01};
  cr_expect_eq(wsg_envelope_decode(&env, bad, sizeof bad, NULL), WSG_ENV_NOT_MAP);
}

/* ---- no allocation in decode ------------------------------------------------------------------
 */

Test(alloc, decode_never_allocates) {
  wsg_envelope e = inbound(WSG_ENV_MSG);
  static const uint64_t ids[] = {1, 2, 3};
  e.fields |= WSG_F_META | WSG_F_DATA | WSG_F_CONNS;
  e.meta = test_meta;
  e.meta_len = sizeof test_meta;
  e.data = (const uint8_t *)"payload";
  e.data_len = 7;
  e.conn_ids = ids;
  e.conns.count = 3;
  e.kind = WSG_ENV_DELIVER;
  e.fields &= ~(unsigned)WSG_F_CONN;
  wsg_buf b;
  wsg_buf_init(&b, 0);
  cr_assert_eq(wsg_envelope_encode(&e, &b), WSG_ENV_OK);

  unsigned long before = allocs;
  wsg_envelope d;
  cr_assert_eq(wsg_envelope_decode(&d, b.data, b.len, NULL), WSG_ENV_OK);
  size_t pos = 0;
  uint64_t id;
  while (wsg_conns_next(&d.conns, &pos, &id))
    ;
  for (size_t len = 0; len < b.len; len++)
    (void)wsg_envelope_decode(&d, b.data, len, NULL);
  (void)wsg_msgpack_validate(b.data, b.len, WSG_MSGPACK_MAX_DEPTH);
  for (size_t i = 0; i < N_DECODE_CASES; i++) {
    uint8_t in[INPUT_MAX];
    size_t len = decode_cases[i].raw != NULL ? put_value(in, 0, decode_cases[i].raw)
                                             : build_map(decode_cases[i].kvs, in);
    unsigned long mark = allocs;
    (void)wsg_envelope_decode(&d, in, len, NULL);
    cr_assert_eq(allocs, mark, "decode allocated on \"%s\"", decode_cases[i].name);
  }
  cr_expect_eq(allocs, before, "decode allocated %lu times", allocs - before);
  wsg_buf_finish(&b);
}

/* Virtual memory of this process, from /proc/self/statm (pages). */
static size_t vm_size(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  unsigned long pages = 0;
  if (f != NULL) {
    if (fscanf(f, "%lu", &pages) != 1)
      pages = 0;
    fclose(f);
  }
  return pages * (size_t)sysconf(_SC_PAGESIZE);
}

/*
 * The 5-byte bombs under an address-space limit of the current size + 16 MiB, in a child so the
 * limit does not outlive the test. The child first proves the limit bites (a 64 MiB mapping must
 * fail), then decodes inputs that declare up to 2^32 elements: each must fail as truncated, with
 * nothing allocated. Exit status = the first check that failed.
 */
Test(alloc, bombs_under_rlimit_as) {
  static const uint8_t bombs[][16] = {
      {0xdf, 0xff, 0xff, 0xff, 0xff},                        /* map32 of 2^32-1 pairs */
      {0xdd, 0xff, 0xff, 0xff, 0xff},                        /* array32 (not a map) */
      {0x81, 0xa2, 'c', 's', 0xdd, 0xff, 0xff, 0xff, 0xff},  /* cs: array32 */
      {0x81, 0xa1, 'm', 0xdf, 0xff, 0xff, 0xff, 0xff},       /* m: map32 */
      {0x81, 0xa1, 'd', 0xc6, 0xff, 0xff, 0xff, 0xff},       /* d: bin32 */
      {0x81, 0xa1, 'x', 0x91, 0xdd, 0xff, 0xff, 0xff, 0xff}, /* unknown: [array32] */
  };
  static const size_t lens[] = {5, 5, 9, 8, 8, 9};
  static const int want[] = {WSG_ENV_TRUNCATED, WSG_ENV_TRUNCATED, WSG_ENV_TRUNCATED,
                             WSG_ENV_TRUNCATED, WSG_ENV_TRUNCATED, WSG_ENV_TRUNCATED};

  pid_t pid = fork();
  cr_assert_neq(pid, -1);
  if (pid == 0) {
    size_t limit = vm_size() + ((size_t)16 << 20);
    struct rlimit rl = {limit, limit};
    if (limit <= (size_t)16 << 20 || setrlimit(RLIMIT_AS, &rl) != 0)
      _exit(100);
    void *big =
        mmap(NULL, (size_t)64 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (big != MAP_FAILED)
      _exit(101); /* the limit does not bite: the test would prove nothing */
    unsigned long before = allocs;
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
      wsg_envelope env;
      if (wsg_envelope_decode(&env, bombs[i], lens[i], NULL) != want[i])
        _exit(1 + (int)i);
      if (wsg_msgpack_validate(bombs[i], lens[i], WSG_MSGPACK_MAX_DEPTH) != WSG_ENV_TRUNCATED)
        _exit(50 + (int)i);
    }
    _exit(allocs == before ? 0 : 99);
  }
  int status = 0;
  cr_assert_eq(waitpid(pid, &status, 0), pid);
  cr_assert(WIFEXITED(status), "child died (signal %d)",
            WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  cr_expect_eq(WEXITSTATUS(status), 0, "child check %d failed", WEXITSTATUS(status));
}
