/*
 * wsg_dframe: the direct reply path's framing. A frame split anywhere waits for its rest; a
 * length of 0 or above the bound is refused as soon as the prefix is there; frames back to back
 * come out one by one; the hello round-trips and anything else is refused.
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
  cr_assert_eq(wsg_dframe_next(h, n, WSG_DFRAME_HELLO_MAX, &body, &blen, &used), WSG_DFRAME_OK);
  cr_assert_eq(used, n);
  cr_assert_eq(wsg_dframe_hello_parse(body, blen, &s, &slen), WSG_DHELLO_OK);
  cr_assert(slen == strlen(secret) && memcmp(s, secret, slen) == 0);
  uint8_t big[WSG_DFRAME_SECRET_MAX + 1] = {0};
  cr_assert_eq(wsg_dframe_hello(h, big, sizeof big), 0, "a secret above the bound");
  cr_assert_eq(wsg_dframe_hello(h, big, WSG_DFRAME_SECRET_MIN - 1), 0, "a secret below it");
  cr_assert_gt(wsg_dframe_hello(h, big, WSG_DFRAME_SECRET_MAX), 0);
}

Test(wsg_dframe, bad_hellos_are_refused) {
  const uint8_t *s;
  size_t slen;
  /* {"v": 2, "secret": b"x"} */
  const uint8_t v2[] = {0x82, 0xa1, 'v', 2, 0xa6, 's', 'e', 'c', 'r', 'e', 't', 0xc4, 1, 'x'};
  cr_assert_eq(wsg_dframe_hello_parse(v2, sizeof v2, &s, &slen), WSG_DHELLO_VERSION);
  /* the same with a byte after it */
  uint8_t trailing[sizeof v2 + 1];
  memcpy(trailing, v2, sizeof v2);
  trailing[3] = 1;
  trailing[sizeof v2] = 0;
  cr_assert_eq(wsg_dframe_hello_parse(trailing, sizeof trailing, &s, &slen), WSG_DHELLO_MALFORMED);
  cr_assert_eq(wsg_dframe_hello_parse(trailing, sizeof v2, &s, &slen), WSG_DHELLO_OK,
               "keys in either order, v first here");
  /* {"v": 1, "v": 1} */
  const uint8_t dup[] = {0x82, 0xa1, 'v', 1, 0xa1, 'v', 1};
  cr_assert_eq(wsg_dframe_hello_parse(dup, sizeof dup, &s, &slen), WSG_DHELLO_MALFORMED);
  /* a map that claims more than is there */
  const uint8_t cut[] = {0x82, 0xa1, 'v'};
  cr_assert_eq(wsg_dframe_hello_parse(cut, sizeof cut, &s, &slen), WSG_DHELLO_MALFORMED);
  const uint8_t notmap[] = {0x91, 0x01};
  cr_assert_eq(wsg_dframe_hello_parse(notmap, sizeof notmap, &s, &slen), WSG_DHELLO_MALFORMED);
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
