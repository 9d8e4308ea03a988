/*
 * wsg_msgpack: the bounded MessagePack cursor (wsg_mp.h), the generic well-formedness check
 * wsg_msgpack_validate() and the strict UTF-8 check. No allocation anywhere in this file.
 *
 * Threads: none of its own; every function is reentrant.
 */
#include <string.h>

#include "wsg_envelope.h"
#include "wsg_mp.h"

static uint16_t be16(const uint8_t *p) {
  return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be64(const uint8_t *p) {
  return (uint64_t)be32(p) << 32 | be32(p + 4);
}

/* Sets a signed value, folding non-negative ones into UINT: other languages write small numbers as
 * signed ints, and a reader asking for a uint must accept them. */
static void set_int(wsg__mp_item *it, int64_t v) {
  if (v >= 0) {
    it->type = WSG__MP_UINT;
    it->v.u = (uint64_t)v;
  } else {
    it->type = WSG__MP_NINT;
    it->v.i = v;
  }
}

/* A str, bin or ext body of `len` bytes starting `hdr` bytes after the cursor. */
static int take_body(wsg__mp_cur *c, wsg__mp_item *it, wsg__mp_type type, size_t hdr,
                     uint32_t len) {
  if (len > wsg__mp_left(c) - hdr)
    return WSG_ENV_TRUNCATED;
  it->type = type;
  it->v.s.ptr = c->p + hdr;
  it->v.s.len = len;
  c->p += hdr + len;
  return WSG_ENV_OK;
}

static int take_ext(wsg__mp_cur *c, wsg__mp_item *it, size_t hdr, uint32_t len) {
  /* The type byte is the last byte of the header. */
  int8_t ext_type = (int8_t)c->p[hdr - 1];
  int rc = take_body(c, it, WSG__MP_EXT, hdr, len);
  if (rc == WSG_ENV_OK)
    it->v.s.ext_type = ext_type;
  return rc;
}

/* An array of n elements or a map of n pairs: each element needs at least one byte. */
static int take_container(wsg__mp_cur *c, wsg__mp_item *it, wsg__mp_type type, size_t hdr,
                          uint32_t n) {
  uint64_t need = type == WSG__MP_MAP ? 2 * (uint64_t)n : n;
  if (need > wsg__mp_left(c) - hdr)
    return WSG_ENV_TRUNCATED;
  it->type = type;
  it->v.n = n;
  c->p += hdr;
  return WSG_ENV_OK;
}

/* Bytes of the fixed-size part that follows the first byte, or -1 for 0xc1. Everything from
 * 0xc4 to 0xdf has a header of known size; fix formats have none. */
static int header_extra(uint8_t b) {
  static const int8_t extra[32] = {
      0,              /* c0 nil */
      -1,             /* c1 never used */
      0,  0,          /* c2 c3 bool */
      1,  2, 4,       /* c4..c6 bin */
      2,  3, 5,       /* c7..c9 ext: length + type */
      4,  8,          /* ca cb float */
      1,  2, 4, 8,    /* cc..cf uint */
      1,  2, 4, 8,    /* d0..d3 int */
      1,  1, 1, 1, 1, /* d4..d8 fixext: type */
      1,  2, 4,       /* d9..db str */
      2,  4,          /* dc dd array */
      2,  4,          /* de df map */
  };
  if (b < 0xc0 || b >= 0xe0)
    return 0;
  return extra[b - 0xc0];
}

int wsg__mp_read(wsg__mp_cur *c, wsg__mp_item *it) {
  if (c->p >= c->end)
    return WSG_ENV_TRUNCATED;
  uint8_t b = c->p[0];
  int extra = header_extra(b);
  if (extra < 0)
    return WSG_ENV_INVALID;
  if ((size_t)extra + 1 > wsg__mp_left(c))
    return WSG_ENV_TRUNCATED;
  const uint8_t *h = c->p + 1; /* the fixed-size part, present */
  size_t hdr = (size_t)extra + 1;

  if (b <= 0x7f) {
    it->type = WSG__MP_UINT;
    it->v.u = b;
  } else if (b <= 0x8f) {
    return take_container(c, it, WSG__MP_MAP, 1, b & 0x0fu);
  } else if (b <= 0x9f) {
    return take_container(c, it, WSG__MP_ARRAY, 1, b & 0x0fu);
  } else if (b <= 0xbf) {
    return take_body(c, it, WSG__MP_STR, 1, b & 0x1fu);
  } else if (b >= 0xe0) {
    set_int(it, (int8_t)b);
  } else {
    switch (b) {
    case 0xc0:
      it->type = WSG__MP_NIL;
      break;
    case 0xc2:
    case 0xc3:
      it->type = WSG__MP_BOOL;
      it->v.b = b == 0xc3;
      break;
    case 0xc4:
      return take_body(c, it, WSG__MP_BIN, hdr, h[0]);
    case 0xc5:
      return take_body(c, it, WSG__MP_BIN, hdr, be16(h));
    case 0xc6:
      return take_body(c, it, WSG__MP_BIN, hdr, be32(h));
    case 0xc7:
      return take_ext(c, it, hdr, h[0]);
    case 0xc8:
      return take_ext(c, it, hdr, be16(h));
    case 0xc9:
      return take_ext(c, it, hdr, be32(h));
    case 0xca: {
      uint32_t bits = be32(h);
      float f;
      memcpy(&f, &bits, sizeof f);
      it->type = WSG__MP_FLOAT;
      it->v.f = f;
      break;
    }
    case 0xcb: {
      uint64_t bits = be64(h);
      double d;
      memcpy(&d, &bits, sizeof d);
      it->type = WSG__MP_FLOAT;
      it->v.f = d;
      break;
    }
    case 0xcc:
      it->type = WSG__MP_UINT;
      it->v.u = h[0];
      break;
    case 0xcd:
      it->type = WSG__MP_UINT;
      it->v.u = be16(h);
      break;
    case 0xce:
      it->type = WSG__MP_UINT;
      it->v.u = be32(h);
      break;
    case 0xcf:
      it->type = WSG__MP_UINT;
      it->v.u = be64(h);
      break;
    case 0xd0:
      set_int(it, (int8_t)h[0]);
      break;
    case 0xd1:
      set_int(it, (int16_t)be16(h));
      break;
    case 0xd2:
      set_int(it, (int32_t)be32(h));
      break;
    case 0xd3:
      set_int(it, (int64_t)be64(h));
      break;
    case 0xd4:
      return take_ext(c, it, hdr, 1);
    case 0xd5:
      return take_ext(c, it, hdr, 2);
    case 0xd6:
      return take_ext(c, it, hdr, 4);
    case 0xd7:
      return take_ext(c, it, hdr, 8);
    case 0xd8:
      return take_ext(c, it, hdr, 16);
    case 0xd9:
      return take_body(c, it, WSG__MP_STR, hdr, h[0]);
    case 0xda:
      return take_body(c, it, WSG__MP_STR, hdr, be16(h));
    case 0xdb:
      return take_body(c, it, WSG__MP_STR, hdr, be32(h));
    case 0xdc:
      return take_container(c, it, WSG__MP_ARRAY, hdr, be16(h));
    case 0xdd:
      return take_container(c, it, WSG__MP_ARRAY, hdr, be32(h));
    case 0xde:
      return take_container(c, it, WSG__MP_MAP, hdr, be16(h));
    case 0xdf:
      return take_container(c, it, WSG__MP_MAP, hdr, be32(h));
    default:
      return WSG_ENV_INVALID; /* unreachable: header_extra() covers every byte */
    }
  }
  c->p += hdr;
  return WSG_ENV_OK;
}

int wsg__mp_skip(wsg__mp_cur *c, unsigned max_depth) {
  /* left[d] = elements still owed by the container open at depth d (1-based); `owed` is their
   * sum. Each owed element needs at least one byte, so owed > bytes left means truncated input,
   * caught before anything is read: a 5-byte "array of 2^32" fails on its first check. */
  uint64_t left[WSG_MSGPACK_MAX_DEPTH + 1];
  unsigned depth = 0;
  uint64_t owed = 0;
  const uint8_t *start = c->p;

  if (max_depth > WSG_MSGPACK_MAX_DEPTH)
    max_depth = WSG_MSGPACK_MAX_DEPTH;
  do {
    wsg__mp_item it;
    int rc = wsg__mp_read(c, &it);
    if (rc != WSG_ENV_OK) {
      c->p = start;
      return rc;
    }
    if (depth > 0) {
      left[depth]--;
      owed--;
    }
    if (it.type == WSG__MP_ARRAY || it.type == WSG__MP_MAP) {
      uint64_t n = it.type == WSG__MP_MAP ? 2 * (uint64_t)it.v.n : it.v.n;
      if (depth >= max_depth) {
        c->p = start;
        return WSG_ENV_TOO_DEEP;
      }
      owed += n;
      if (owed > wsg__mp_left(c)) {
        c->p = start;
        return WSG_ENV_TRUNCATED;
      }
      left[++depth] = n;
    }
    while (depth > 0 && left[depth] == 0)
      depth--;
  } while (depth > 0);
  return WSG_ENV_OK;
}

int wsg_msgpack_validate(const uint8_t *buf, size_t len, unsigned max_depth) {
  if (len == 0)
    return WSG_ENV_TRUNCATED;
  if (buf == NULL)
    return WSG_ENV_INVALID;
  wsg__mp_cur c = {buf, buf + len};
  int rc = wsg__mp_skip(&c, max_depth);
  if (rc != WSG_ENV_OK)
    return rc;
  return c.p == c.end ? WSG_ENV_OK : WSG_ENV_TRAILING;
}

/* Strict UTF-8 (RFC 3629, Unicode table 3-7): no overlong forms, no surrogates, nothing above
 * U+10FFFF. The second byte's range depends on the first; later bytes are plain continuations. */
bool wsg_utf8_valid(const char *str, size_t len) {
  const uint8_t *s = (const uint8_t *)str;
  size_t i = 0;

  if (s == NULL)
    return len == 0;
  while (i < len) {
    /* ASCII runs are the common case (ids, JSON text): eight bytes per step. */
    while (i + 8 <= len) {
      uint64_t w;
      memcpy(&w, s + i, sizeof w);
      if (w & UINT64_C(0x8080808080808080))
        break;
      i += 8;
    }
    if (i >= len)
      break;
    uint8_t b = s[i];
    if (b < 0x80) {
      i++;
      continue;
    }
    size_t n;
    uint8_t lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
    if (b >= 0xc2 && b <= 0xdf) {
      n = 2;
    } else if (b >= 0xe0 && b <= 0xef) {
      n = 3;
      if (b == 0xe0)
        lo = 0xa0; /* overlong */
      else if (b == 0xed)
        hi = 0x9f; /* surrogates U+D800..U+DFFF */
    } else if (b >= 0xf0 && b <= 0xf4) {
      n = 4;
      if (b == 0xf0)
        lo = 0x90; /* overlong */
      else if (b == 0xf4)
        hi = 0x8f; /* above U+10FFFF */
    } else {
      return false; /* continuation byte, 0xc0/0xc1 overlongs, 0xf5..0xff */
    }
    if (len - i < n)
      return false;
    if (s[i + 1] < lo || s[i + 1] > hi)
      return false;
    for (size_t k = 2; k < n; k++)
      if ((s[i + k] & 0xc0) != 0x80)
        return false;
    i += n;
  }
  return true;
}

bool wsg_channel_name_valid(const char *s, size_t len) {
  if (s == NULL || len == 0 || len > WSG_MAX_CHANNEL_LEN || !wsg_utf8_valid(s, len))
    return false;
  const unsigned char *p = (const unsigned char *)s;
  for (size_t i = 0; i < len; i++) {
    if (p[i] < 0x20 || p[i] == 0x7f)
      return false;
    /* C1 controls U+0080..U+009F are 0xC2 0x80..0x9F in UTF-8 (already known valid). */
    if (p[i] == 0xc2 && i + 1 < len && p[i + 1] <= 0x9f)
      return false;
  }
  return true;
}
