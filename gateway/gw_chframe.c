/*
 * gw_chframe: publication and gap frames (see gw_chframe.h).
 */
#include "gw_chframe.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

/* --- JSON --------------------------------------------------------------------------------- */

/* Escaped length of s (RFC 8259: quote, backslash and C0 controls; UTF-8 passes through). */
static size_t json_len(const uint8_t *s, size_t n) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    k += s[i] == '"' || s[i] == '\\' ? 2 : s[i] < 0x20 ? 6 : 1;
  return k;
}

static uint8_t *json_put(uint8_t *o, const uint8_t *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    uint8_t c = s[i];
    if (c == '"' || c == '\\') {
      *o++ = '\\';
      *o++ = c;
    } else if (c < 0x20) {
      memcpy(o, "\\u00", 4);
      o[4] = (uint8_t)hex[c >> 4];
      o[5] = (uint8_t)hex[c & 15];
      o += 6;
    } else {
      *o++ = c;
    }
  }
  return o;
}

static uint8_t *put(uint8_t *o, const char *s) {
  size_t n = strlen(s);
  memcpy(o, s, n);
  return o + n;
}

static gw_msg *pub_json(const char *ch, size_t ch_len, uint64_t offset, uint64_t epoch,
                        const uint8_t *d, size_t len, bool binary) {
  char nums[64];
  int nn = snprintf(nums, sizeof nums, "\",\"offset\":%llu,\"epoch\":%llu,\"data",
                    (unsigned long long)offset, (unsigned long long)epoch);
  size_t body = binary ? 4 * ((len + 2) / 3) : json_len(d, len);
  size_t total = strlen("{\"wsgate\":\"pub\",\"channel\":\"") +
                 json_len((const uint8_t *)ch, ch_len) + (size_t)nn + (binary ? 4 : 0) + 3 + body +
                 2;
  gw_msg *m = gw_msg_create(NULL, total, false);
  if (!m)
    return NULL;
  uint8_t *o = gw_msg_payload(m);
  o = put(o, "{\"wsgate\":\"pub\",\"channel\":\"");
  o = json_put(o, (const uint8_t *)ch, ch_len);
  memcpy(o, nums, (size_t)nn);
  o += nn;
  if (binary)
    o = put(o, "_b64");
  o = put(o, "\":\"");
  if (binary)
    o += EVP_EncodeBlock(o, d, (int)len);
  else
    o = json_put(o, d, len);
  o = put(o, "\"}");
  return m;
}

/* --- MessagePack ------------------------------------------------------------------------------ */

static uint8_t *mp_str(uint8_t *o, const void *s, size_t n, bool bin) {
  if (!bin && n < 32) {
    *o++ = (uint8_t)(0xa0 | n);
  } else if (n < 256) {
    *o++ = bin ? 0xc4 : 0xd9;
    *o++ = (uint8_t)n;
  } else if (n < 65536) {
    *o++ = bin ? 0xc5 : 0xda;
    *o++ = (uint8_t)(n >> 8);
    *o++ = (uint8_t)n;
  } else {
    *o++ = bin ? 0xc6 : 0xdb;
    for (int s2 = 24; s2 >= 0; s2 -= 8)
      *o++ = (uint8_t)(n >> s2);
  }
  if (n)
    memcpy(o, s, n);
  return o + n;
}

static uint8_t *mp_u64(uint8_t *o, uint64_t v) {
  *o++ = 0xcf;
  for (int s = 56; s >= 0; s -= 8)
    *o++ = (uint8_t)(v >> s);
  return o;
}

/* Bytes mp_str() writes for n bytes. */
static size_t mp_len(size_t n, bool bin) {
  return (!bin && n < 32 ? 1 : n < 256 ? 2 : n < 65536 ? 3 : 5) + n;
}

static gw_msg *pub_mp(const char *ch, size_t ch_len, uint64_t offset, uint64_t epoch,
                      const uint8_t *d, size_t len, bool binary) {
  size_t total = 1 + mp_len(6, false) + mp_len(3, false) + mp_len(7, false) +
                 mp_len(ch_len, false) + mp_len(6, false) + 9 + mp_len(5, false) + 9 +
                 mp_len(4, false) + mp_len(len, binary);
  gw_msg *m = gw_msg_create(NULL, total, true);
  if (!m)
    return NULL;
  uint8_t *o = gw_msg_payload(m);
  *o++ = 0x85;
  o = mp_str(o, "wsgate", 6, false);
  o = mp_str(o, "pub", 3, false);
  o = mp_str(o, "channel", 7, false);
  o = mp_str(o, ch, ch_len, false);
  o = mp_str(o, "offset", 6, false);
  o = mp_u64(o, offset);
  o = mp_str(o, "epoch", 5, false);
  o = mp_u64(o, epoch);
  o = mp_str(o, "data", 4, false);
  mp_str(o, d, len, binary);
  return m;
}

gw_msg *gw_chframe_pub(const char *ch, size_t ch_len, uint64_t offset, uint64_t epoch,
                       const uint8_t *d, size_t len, bool binary, bool msgpack) {
  return msgpack ? pub_mp(ch, ch_len, offset, epoch, d, len, binary)
                 : pub_json(ch, ch_len, offset, epoch, d, len, binary);
}

gw_msg *gw_chframe_gap(const char *ch, size_t ch_len, uint64_t from, uint64_t to, bool msgpack) {
  uint8_t buf[512];
  uint8_t *o = buf;
  if (ch_len > 200)
    return NULL;
  if (msgpack) {
    *o++ = 0x84;
    o = mp_str(o, "wsgate", 6, false);
    o = mp_str(o, "gap", 3, false);
    o = mp_str(o, "channel", 7, false);
    o = mp_str(o, ch, ch_len, false);
    o = mp_str(o, "from", 4, false);
    o = mp_u64(o, from);
    o = mp_str(o, "to", 2, false);
    o = mp_u64(o, to);
    return gw_msg_create(buf, (size_t)(o - buf), true);
  }
  uint8_t esc[6 * 200];
  size_t el = (size_t)(json_put(esc, (const uint8_t *)ch, ch_len) - esc);
  char out[1400];
  int n = snprintf(out, sizeof out,
                   "{\"wsgate\":\"gap\",\"channel\":\"%.*s\",\"from\":%llu,\"to\":%llu}", (int)el,
                   (const char *)esc, (unsigned long long)from, (unsigned long long)to);
  return n > 0 && (size_t)n < sizeof out ? gw_msg_create(out, (size_t)n, false) : NULL;
}
