/*
 * gw_b64url: base64url without padding (gw_b64url.h).
 *
 * Threads: reentrant; no state.
 */
#include "gw_b64url.h"

static const char B64URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int b64url_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  if (c == '-')
    return 62;
  if (c == '_')
    return 63;
  return -1;
}

int gw_b64url_is_char(unsigned char c) {
  return b64url_value(c) >= 0;
}

size_t gw_b64url_encoded_len(size_t n) {
  return n / 3 * 4 + (n % 3 == 0 ? 0 : n % 3 + 1);
}

void gw_b64url_encode(const uint8_t *in, size_t n, char *out) {
  size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    *out++ = B64URL[v >> 18];
    *out++ = B64URL[(v >> 12) & 63];
    *out++ = B64URL[(v >> 6) & 63];
    *out++ = B64URL[v & 63];
  }
  if (n - i == 1) {
    uint32_t v = (uint32_t)in[i] << 16;
    *out++ = B64URL[v >> 18];
    *out++ = B64URL[(v >> 12) & 63];
  } else if (n - i == 2) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
    *out++ = B64URL[v >> 18];
    *out++ = B64URL[(v >> 12) & 63];
    *out++ = B64URL[(v >> 6) & 63];
  }
}

long gw_b64url_decode(const char *in, size_t n, uint8_t *out, size_t cap) {
  if (n % 4 == 1 || n / 4 * 3 + (n % 4 == 0 ? 0 : n % 4 - 1) > cap)
    return -1;
  uint32_t acc = 0;
  unsigned bits = 0;
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    int v = b64url_value((unsigned char)in[i]);
    if (v < 0)
      return -1;
    acc = acc << 6 | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (uint8_t)(acc >> bits);
      acc &= (1u << bits) - 1;
    }
  }
  if (acc != 0)
    return -1;
  return (long)o;
}
