/*
 * wsg_dframe: the direct reply path's framing. A frame split anywhere waits for its rest; a
 * length of 0 or above the bound is refused as soon as the prefix is there; frames back to back
 * come out one by one; the hello round-trips (versions 1 and 2 accepted, others refused) and
 * anything else is refused; a barrier round-trips and a malformed one is not taken for one.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "wsg_dframe.h"

static size_t frame(uint8_t *out, const char *body) {
  size_t n = strlen(body);
  wsg_dframe_put32(out, (uint32_t)n);
  memcpy(out + 4, body, n);
  return 4 + n;
}

Test(wsg_dframe, split_reads_wait_for_the_rest) {
  uint8_t buf[64];
  size_t len = frame(buf, "hello, gateway");
  const uint8_t *body;
  size_t blen, used;
  for (size_t cut = 0; cut < len; cut++)
    cr_assert_eq(wsg_dframe_next(buf, cut, 1024, &body, &blen, &used), WSG_DFRAME_MORE,
                 "%zu of %zu bytes", cut, len);
  cr_assert_eq(wsg_dframe_next(buf, len, 1024, &body, &blen, &used), WSG_DFRAME_OK);
  cr_assert_eq(blen, 14);
  cr_assert_eq(used, len);
  cr_assert_eq(memcmp(body, "hello, gateway", 14), 0);
}

Test(wsg_dframe, back_to_back_frames_one_by_one) {
  uint8_t buf[64];
  size_t len = frame(buf, "a");
  len += frame(buf + len, "bc");
  const uint8_t *body;
  size_t blen, used;
  cr_assert_eq(wsg_dframe_next(buf, len, 1024, &body, &blen, &used), WSG_DFRAME_OK);
  cr_assert(blen == 1 && body[0] == 'a' && used == 5);
  cr_assert_eq(wsg_dframe_next(buf + used, len - used, 1024, &body, &blen, &used), WSG_DFRAME_OK);
  cr_assert(blen == 2 && memcmp(body, "bc", 2) == 0);
}

Test(wsg_dframe, zero_and_huge_lengths_are_refused_at_once) {
  uint8_t buf[4] = {0, 0, 0, 0};
  const uint8_t *body;
  size_t blen, used;
  cr_assert_eq(wsg_dframe_next(buf, 4, 1024, &body, &blen, &used), WSG_DFRAME_EMPTY);
  wsg_dframe_put32(buf, 0xffffffffu);
  cr_assert_eq(wsg_dframe_next(buf, 4, WSG_DFRAME_MAX, &body, &blen, &used), WSG_DFRAME_TOO_BIG,
               "refused without waiting for 4 GiB");
  wsg_dframe_put32(buf, 1025);
  cr_assert_eq(wsg_dframe_next(buf, 4, 1024, &body, &blen, &used), WSG_DFRAME_TOO_BIG);
  wsg_dframe_put32(buf, 1024);
  cr_assert_eq(wsg_dframe_next(buf, 4, 1024, &body, &blen, &used), WSG_DFRAME_MORE,
               "the bound itself is allowed");
}

Test(wsg_dframe, integers_are_big_endian) {
  uint8_t b[8];
  wsg_dframe_put64(b, 0x0102030405060708ull);
  const uint8_t want[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  cr_assert_eq(memcmp(b, want, 8), 0);
  cr_assert_eq(wsg_dframe_get64(b), 0x0102030405060708ull);
}

Test(wsg_dframe, hello_round_trip) {
  uint8_t h[WSG_DFRAME_HELLO_MAX];
  const char *secret = "0123456789abcdef-and-more";
  size_t n = wsg_dframe_hello(h, (const uint8_t *)secret, strlen(secret));
  cr_assert_gt(n, 4);
  const uint8_t *body, *s;
  size_t blen, used, slen;
  uint32_t v = 0;
  cr_assert_eq(wsg_dframe_next(h, n, WSG_DFRAME_HELLO_MAX, &body, &blen, &used), WSG_DFRAME_OK);
  cr_assert_eq(used, n);
  cr_assert_eq(wsg_dframe_hello_parse(body, blen, &s, &slen, &v), WSG_DHELLO_OK);
  cr_assert_eq(v, 2, "this build says version 2 (it sends barriers)");
  cr_assert(slen == strlen(secret) && memcmp(s, secret, slen) == 0);
  uint8_t big[WSG_DFRAME_SECRET_MAX + 1] = {0};
  cr_assert_eq(wsg_dframe_hello(h, big, sizeof big), 0, "a secret above the bound");
  cr_assert_eq(wsg_dframe_hello(h, big, WSG_DFRAME_SECRET_MIN - 1), 0, "a secret below it");
  cr_assert_gt(wsg_dframe_hello(h, big, WSG_DFRAME_SECRET_MAX), 0);
}

Test(wsg_dframe, bad_hellos_are_refused) {
  const uint8_t *s;
  size_t slen;
  uint32_t v = 0;
  /* {"v": 3, "secret": b"x"}: newer than this build */
  uint8_t hv[] = {0x82, 0xa1, 'v', 3, 0xa6, 's', 'e', 'c', 'r', 'e', 't', 0xc4, 1, 'x'};
  cr_assert_eq(wsg_dframe_hello_parse(hv, sizeof hv, &s, &slen, &v), WSG_DHELLO_VERSION);
  hv[3] = 0;
  cr_assert_eq(wsg_dframe_hello_parse(hv, sizeof hv, &s, &slen, &v), WSG_DHELLO_VERSION);
  /* version 1 (a processor that sends no barriers) is still spoken */
  hv[3] = 1;
  cr_assert_eq(wsg_dframe_hello_parse(hv, sizeof hv, &s, &slen, &v), WSG_DHELLO_OK);
  cr_assert_eq(v, 1);
  /* the same with a byte after it */
  uint8_t trailing[sizeof hv + 1];
  memcpy(trailing, hv, sizeof hv);
  trailing[sizeof hv] = 0;
  cr_assert_eq(wsg_dframe_hello_parse(trailing, sizeof trailing, &s, &slen, &v),
               WSG_DHELLO_MALFORMED);
  cr_assert_eq(wsg_dframe_hello_parse(trailing, sizeof hv, &s, &slen, &v), WSG_DHELLO_OK,
               "keys in either order, v first here");
  /* {"v": 1, "v": 1} */
  const uint8_t dup[] = {0x82, 0xa1, 'v', 1, 0xa1, 'v', 1};
  cr_assert_eq(wsg_dframe_hello_parse(dup, sizeof dup, &s, &slen, &v), WSG_DHELLO_MALFORMED);
  /* a map that claims more than is there */
  const uint8_t cut[] = {0x82, 0xa1, 'v'};
  cr_assert_eq(wsg_dframe_hello_parse(cut, sizeof cut, &s, &slen, &v), WSG_DHELLO_MALFORMED);
  const uint8_t notmap[] = {0x91, 0x01};
  cr_assert_eq(wsg_dframe_hello_parse(notmap, sizeof notmap, &s, &slen, &v), WSG_DHELLO_MALFORMED);
}

Test(wsg_dframe, barrier_round_trip) {
  uint8_t b[WSG_DFRAME_BARRIER_LEN];
  wsg_dframe_barrier(b, 7, 0x0000000100000002ll);
  const uint8_t *body;
  size_t blen, used;
  cr_assert_eq(wsg_dframe_next(b, sizeof b, WSG_DFRAME_MAX, &body, &blen, &used), WSG_DFRAME_OK);
  cr_assert_eq(used, sizeof b);
  cr_assert_eq(wsg_dframe_get64(body), 0, "sequence number 0 marks a barrier");
  int32_t part = -1;
  int64_t off = -1;
  cr_assert(wsg_dframe_barrier_parse(body, blen, &part, &off));
  cr_assert_eq(part, 7);
  cr_assert_eq(off, 0x0000000100000002ll);
  wsg_dframe_barrier(b, 0, 0);
  cr_assert(wsg_dframe_barrier_parse(b + 4, WSG_DFRAME_BARRIER_BODY, &part, &off));
  cr_assert(part == 0 && off == 0);
}

Test(wsg_dframe, malformed_barriers_are_not_barriers) {
  uint8_t b[WSG_DFRAME_BARRIER_LEN + 1] = {0};
  int32_t part;
  int64_t off;
  wsg_dframe_barrier(b, 3, 9);
  cr_assert_not(wsg_dframe_barrier_parse(b + 4, WSG_DFRAME_BARRIER_BODY - 1, &part, &off), "short");
  cr_assert_not(wsg_dframe_barrier_parse(b + 4, WSG_DFRAME_BARRIER_BODY + 1, &part, &off), "long");
  b[4 + 7] = 1; /* sequence number 1: a data frame */
  cr_assert_not(wsg_dframe_barrier_parse(b + 4, WSG_DFRAME_BARRIER_BODY, &part, &off));
  wsg_dframe_barrier(b, -1, 9);
  cr_assert_not(wsg_dframe_barrier_parse(b + 4, WSG_DFRAME_BARRIER_BODY, &part, &off),
                "a negative partition");
  wsg_dframe_barrier(b, 3, -1);
  cr_assert_not(wsg_dframe_barrier_parse(b + 4, WSG_DFRAME_BARRIER_BODY, &part, &off),
                "a negative offset");
}

Test(wsg_dframe, addresses_split) {
  char host[64];
  const char *port;
  cr_assert(wsg_dframe_split_addr("10.0.0.5:7070", host, sizeof host, &port));
  cr_assert_str_eq(host, "10.0.0.5");
  cr_assert_str_eq(port, "7070");
  cr_assert(wsg_dframe_split_addr("[::1]:7070", host, sizeof host, &port));
  cr_assert_str_eq(host, "::1");
  cr_assert_not(wsg_dframe_split_addr("nohost", host, sizeof host, &port));
  cr_assert_not(wsg_dframe_split_addr(":7070", host, sizeof host, &port));
  cr_assert_not(wsg_dframe_split_addr("host:", host, sizeof host, &port));
  cr_assert_not(wsg_dframe_split_addr("a-very-long-host-name:1", host, 8, &port));
}
