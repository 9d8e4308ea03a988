/*
 * Shared by the wsg_envelope tests (one Criterion executable, `wsg_envelope`, of
 * wsg_envelope_test.c, wsg_envelope_decode_test.c and wsg_envelope_channel_test.c): a counting
 * allocator, crafted inputs written as key/value rows, and a round trip through encode and decode.
 */
#ifndef WSG_ENVELOPE_TESTUTIL_H
#define WSG_ENVELOPE_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wsg_envelope.h"

/* The allocator is linked with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc (tests/unit/
 * meson.build): every call counts in `allocs`; with `fail_allocs` set they fail, to reach
 * WSG_ENV_NOMEM. Per process, and Criterion runs each test in a process of its own. */
extern unsigned long allocs;
extern bool fail_allocs;

/* ---- crafted inputs ------------------------------------------------------------------------ */

#define INPUT_MAX 4096

typedef struct {
  const char *k; /* a key; "#hex" for a key that is not a string */
  const char *v; /* a value, see put_value() */
} kv;

#define MAX_KV 16

/* Appends a value written either as "\"text\"" (a str, smallest header) or as hex bytes (spaces
 * ignored) at out[pos]; returns the new end. */
size_t put_value(uint8_t *out, size_t pos, const char *v);
/* A map of the given pairs (up to a row with k NULL), in the given order, into out; its length. */
size_t build_map(const kv *kvs, uint8_t *out);

/* Common pairs of those maps. */
#define V1                                                                                         \
  { "v", "01" }
#define T_MSG                                                                                      \
  { "t", "\"msg\"" }
#define T_CONNECT                                                                                  \
  { "t", "\"connect\"" }
#define T_DISCONNECT                                                                               \
  { "t", "\"disconnect\"" }
#define T_DELIVER                                                                                  \
  { "t", "\"deliver\"" }
#define T_CLOSE                                                                                    \
  { "t", "\"close\"" }
#define G                                                                                          \
  { "g", "\"gw-1\"" }
#define S3                                                                                         \
  { "s", "03" }
#define U                                                                                          \
  { "u", "\"alice\"" }
#define C42                                                                                        \
  { "c", "2a" }
#define D_HI                                                                                       \
  { "d", "c4 02 6869" }
#define INBOUND V1, T_MSG, G, S3, U, C42
#define T_PUBLISH                                                                                  \
  { "t", "\"publish\"" }
#define CH_NEWS                                                                                    \
  { "ch", "\"news:eu\"" }
#define CO1                                                                                        \
  { "co", "01" }
#define CE7                                                                                        \
  { "ce", "07" }

/* ---- round trips --------------------------------------------------------------------------- */

/* A small valid metadata map. */
#define TEST_META_LEN 16
extern const uint8_t test_meta[TEST_META_LEN];

/* Expects every field `a` carries to be equal in `b`. */
void expect_same(const wsg_envelope *a, const wsg_envelope *b);
/* Encodes `env`, decodes the bytes and expects the same envelope back. */
void round_trip(const wsg_envelope *env);
/* An inbound envelope of `kind` with every field an inbound one carries. */
wsg_envelope inbound(wsg_env_kind kind);

#endif
