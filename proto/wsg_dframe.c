/*
 * wsg_dframe: the direct reply path's frames (see wsg_dframe.h). The hello is read with the
 * bounded MessagePack cursor (wsg_mp.h), never with an allocating unpacker.
 *
 * Threads: none of its own.
 */
#include "wsg_dframe.h"

#include <string.h>

#include "wsg_mp.h"

wsg_dframe_rc wsg_dframe_next(const uint8_t *buf, size_t len, size_t max, const uint8_t **body,
                              size_t *body_len, size_t *used) {
  if (len < WSG_DFRAME_HDR)
    return WSG_DFRAME_MORE;
  uint32_t n = wsg_dframe_get32(buf);
  if (n == 0)
    return WSG_DFRAME_EMPTY;
  if (n > max)
    return WSG_DFRAME_TOO_BIG;
  if (len - WSG_DFRAME_HDR < n)
    return WSG_DFRAME_MORE;
  *body = buf + WSG_DFRAME_HDR;
  *body_len = n;
  *used = WSG_DFRAME_HDR + (size_t)n;
  return WSG_DFRAME_OK;
}

bool wsg_dframe_split_addr(const char *spec, char *host, size_t hostlen, const char **port) {
  const char *colon = strrchr(spec, ':');
  if (!colon || colon == spec || !colon[1])
    return false;
  const char *h = spec;
  size_t n = (size_t)(colon - spec);
  if (h[0] == '[' && n >= 2 && h[n - 1] == ']') {
    h++;
    n -= 2;
  }
  if (n == 0 || n >= hostlen)
    return false;
  memcpy(host, h, n);
  host[n] = '\0';
  *port = colon + 1;
  return true;
}

size_t wsg_dframe_hello(uint8_t *out, const uint8_t *secret, size_t secret_len) {
  if (secret_len < WSG_DFRAME_SECRET_MIN || secret_len > WSG_DFRAME_SECRET_MAX)
    return 0;
  uint8_t *p = out + WSG_DFRAME_HDR;
  *p++ = 0x82; /* fixmap of 2 */
  *p++ = 0xa1; /* fixstr "v" */
  *p++ = 'v';
  *p++ = (uint8_t)WSG_DFRAME_VERSION; /* positive fixint */
  *p++ = 0xa6;                        /* fixstr "secret" */
  memcpy(p, "secret", 6);
  p += 6;
  *p++ = 0xc5; /* bin 16: the secret may be longer than 255 bytes */
  *p++ = (uint8_t)(secret_len >> 8);
  *p++ = (uint8_t)secret_len;
  memcpy(p, secret, secret_len);
  p += secret_len;
  size_t len = (size_t)(p - out);
  wsg_dframe_put32(out, (uint32_t)(len - WSG_DFRAME_HDR));
  return len;
}

static bool key_is(const wsg__mp_item *k, const char *s) {
  size_t n = strlen(s);
  return k->type == WSG__MP_STR && k->v.s.len == n && memcmp(k->v.s.ptr, s, n) == 0;
}

wsg_dhello_rc wsg_dframe_hello_parse(const uint8_t *body, size_t len, const uint8_t **secret,
                                     size_t *secret_len, uint32_t *version_out) {
  wsg__mp_cur c = {.p = body, .end = body + len};
  wsg__mp_item it, k, v;
  if (wsg__mp_read(&c, &it) != WSG_ENV_OK || it.type != WSG__MP_MAP || it.v.n != 2)
    return WSG_DHELLO_MALFORMED;
  bool have_v = false, have_s = false;
  uint64_t version = 0;
  for (uint32_t i = 0; i < 2; i++) {
    if (wsg__mp_read(&c, &k) != WSG_ENV_OK || wsg__mp_read(&c, &v) != WSG_ENV_OK)
      return WSG_DHELLO_MALFORMED;
    if (key_is(&k, "v") && !have_v && v.type == WSG__MP_UINT) {
      have_v = true;
      version = v.v.u;
    } else if (key_is(&k, "secret") && !have_s &&
               (v.type == WSG__MP_BIN || v.type == WSG__MP_STR)) {
      have_s = true;
      *secret = v.v.s.ptr;
      *secret_len = v.v.s.len;
    } else {
      return WSG_DHELLO_MALFORMED;
    }
  }
  if (c.p != c.end)
    return WSG_DHELLO_MALFORMED;
  if (version < WSG_DFRAME_VERSION_MIN || version > WSG_DFRAME_VERSION)
    return WSG_DHELLO_VERSION;
  *version_out = (uint32_t)version;
  return WSG_DHELLO_OK;
}

void wsg_dframe_barrier(uint8_t *out, int32_t partition, int64_t offset) {
  wsg_dframe_put32(out, WSG_DFRAME_BARRIER_BODY);
  wsg_dframe_put64(out + WSG_DFRAME_HDR, 0);
  wsg_dframe_put32(out + WSG_DFRAME_HDR + WSG_DFRAME_SEQ, (uint32_t)partition);
  wsg_dframe_put64(out + WSG_DFRAME_HDR + WSG_DFRAME_SEQ + 4, (uint64_t)offset);
}

bool wsg_dframe_barrier_parse(const uint8_t *body, size_t len, int32_t *partition,
                              int64_t *offset) {
  if (len != WSG_DFRAME_BARRIER_BODY || wsg_dframe_get64(body) != 0)
    return false;
  uint32_t p = wsg_dframe_get32(body + WSG_DFRAME_SEQ);
  uint64_t o = wsg_dframe_get64(body + WSG_DFRAME_SEQ + 4);
  if (p > INT32_MAX || o > INT64_MAX)
    return false;
  *partition = (int32_t)p;
  *offset = (int64_t)o;
  return true;
}
