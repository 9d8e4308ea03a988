/*
 * Unit tests for gw_wsframe: the header bytes at each length encoding's edges (125/126,
 * 65535/65536), text and binary, against RFC 6455 5.2's layout written out by hand.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "gw_wsframe.h"

static void expect(bool binary, uint64_t len, const uint8_t *want, size_t want_len) {
  uint8_t out[GW_WSFRAME_HEADER_MAX + 1];
  memset(out, 0xEE, sizeof out);
  size_t n = gw_wsframe_header(out, binary, len);
  cr_assert_eq(n, want_len, "len %llu: header of %zu bytes, want %zu", (unsigned long long)len, n,
               want_len);
  cr_assert_eq(gw_wsframe_header_len(len), want_len);
  cr_assert_arr_eq(out, want, want_len, "len %llu: wrong header bytes", (unsigned long long)len);
  cr_assert_eq(out[n], 0xEE, "wrote past the header");
}

Test(gw_wsframe, seven_bit_lengths) {
  expect(false, 0, (const uint8_t[]){0x81, 0x00}, 2);
  expect(true, 1, (const uint8_t[]){0x82, 0x01}, 2);
  expect(false, 125, (const uint8_t[]){0x81, 0x7D}, 2);
}

Test(gw_wsframe, sixteen_bit_lengths) {
  expect(false, 126, (const uint8_t[]){0x81, 0x7E, 0x00, 0x7E}, 4);
  expect(true, 300, (const uint8_t[]){0x82, 0x7E, 0x01, 0x2C}, 4);
  expect(true, 65535, (const uint8_t[]){0x82, 0x7E, 0xFF, 0xFF}, 4);
}

Test(gw_wsframe, sixty_four_bit_lengths) {
  expect(false, 65536, (const uint8_t[]){0x81, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00}, 10);
  expect(true, 0x0102030405060708ULL,
         (const uint8_t[]){0x82, 0x7F, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08}, 10);
  /* The most significant bit must be 0 (RFC 6455 5.2): clamped, never set. */
  expect(true, UINT64_MAX,
         (const uint8_t[]){0x82, 0x7F, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}, 10);
}
