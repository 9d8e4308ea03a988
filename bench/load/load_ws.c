/*
 * load_ws: RFC 6455 client helpers for wsgate-load (see load_ws.h).
 *
 * Threads: none of its own.
 */
#include "load_ws.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static const char GUID[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += UINT64_C(0x9E3779B97F4A7C15));
  z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
  return z ^ (z >> 31);
}

static void encode64(const uint8_t *in, size_t n, char *out, const char *alphabet, bool pad,
                     size_t *outlen) {
  size_t o = 0, i = 0;
  for (; i + 2 < n; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    out[o++] = alphabet[v >> 18];
    out[o++] = alphabet[(v >> 12) & 63];
    out[o++] = alphabet[(v >> 6) & 63];
    out[o++] = alphabet[v & 63];
  }
  if (i < n) {
    uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
    out[o++] = alphabet[v >> 18];
    out[o++] = alphabet[(v >> 12) & 63];
    if (i + 1 < n)
      out[o++] = alphabet[(v >> 6) & 63];
    else if (pad)
      out[o++] = '=';
    if (pad)
      out[o++] = '=';
  }
  out[o] = '\0';
  *outlen = o;
}

void load_base64(const uint8_t *in, size_t n, char *out) {
  size_t len;
  encode64(in, n, out, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", true,
           &len);
}

size_t load_base64url(const uint8_t *in, size_t n, char *out) {
  size_t len;
  encode64(in, n, out, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", false,
           &len);
  return len;
}

void load_ws_key(uint64_t seed, char key[LOAD_WS_KEY_LEN + 1]) {
  uint8_t raw[16];
  uint64_t x = seed;
  uint64_t a = splitmix64(&x), b = splitmix64(&x);
  memcpy(raw, &a, 8);
  memcpy(raw + 8, &b, 8);
  load_base64(raw, sizeof raw, key);
}

int load_ws_accept(const char *key, char accept[LOAD_WS_ACCEPT_LEN + 1]) {
  char cat[LOAD_WS_KEY_LEN + sizeof GUID];
  size_t kl = strlen(key);
  if (kl > LOAD_WS_KEY_LEN)
    return -1;
  memcpy(cat, key, kl);
  memcpy(cat + kl, GUID, sizeof GUID - 1);
  uint8_t md[EVP_MAX_MD_SIZE];
  unsigned mdlen = 0;
  if (EVP_Digest(cat, kl + sizeof GUID - 1, md, &mdlen, EVP_sha1(), NULL) != 1 || mdlen != 20)
    return -1;
  load_base64(md, mdlen, accept);
  return 0;
}

int load_ws_request(char *buf, size_t cap, const char *host, const char *path, const char *key,
                    const char *extra) {
  int n = snprintf(buf, cap,
                   "GET %s HTTP/1.1\r\n"
                   "Host: %s\r\n"
                   "Upgrade: websocket\r\n"
                   "Connection: Upgrade\r\n"
                   "Sec-WebSocket-Key: %s\r\n"
                   "Sec-WebSocket-Version: 13\r\n"
                   "%s"
                   "\r\n",
                   path, host, key, extra ? extra : "");
  return n < 0 || (size_t)n >= cap ? -1 : n;
}

/* Does the comma-separated header value contain `token` (case-insensitive)? */
static bool has_token(const char *v, size_t vlen, const char *token) {
  size_t tl = strlen(token), i = 0;
  while (i < vlen) {
    while (i < vlen && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
      i++;
    size_t s = i;
    while (i < vlen && v[i] != ',')
      i++;
    size_t e = i;
    while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
      e--;
    if (e - s == tl && strncasecmp(v + s, token, tl) == 0)
      return true;
  }
  return false;
}

int load_ws_response(const char *buf, size_t len, const char *accept, int *status, char *err,
                     size_t errlen) {
  *status = 0;
  const char *end = memmem(buf, len, "\r\n\r\n", 4);
  if (!end) {
    if (len >= LOAD_WS_RESPONSE_MAX) {
      snprintf(err, errlen, "the upgrade answer has no end within %d bytes", LOAD_WS_RESPONSE_MAX);
      return -1;
    }
    return 0;
  }
  size_t hlen = (size_t)(end - buf) + 4;
  if (hlen < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || buf[8] != ' ') {
    snprintf(err, errlen, "the answer is not HTTP: \"%.*s\"", (int)(hlen < 40 ? hlen : 40), buf);
    return -1;
  }
  int st = 0;
  for (int i = 9; i < 12; i++) {
    if (buf[i] < '0' || buf[i] > '9') {
      snprintf(err, errlen, "unreadable HTTP status line");
      return -1;
    }
    st = st * 10 + (buf[i] - '0');
  }
  *status = st;
  if (st != 101) {
    const char *eol = memchr(buf, '\r', hlen);
    snprintf(err, errlen, "upgrade refused: %.*s", (int)(eol ? eol - buf : 12), buf);
    return -1;
  }
  bool upgrade = false, connection = false, acc = false;
  const char *line = memchr(buf, '\n', hlen);
  while (line && line + 1 < end) {
    line++;
    const char *eol = memchr(line, '\r', (size_t)(end + 2 - line));
    if (!eol)
      break;
    const char *colon = memchr(line, ':', (size_t)(eol - line));
    if (colon) {
      size_t nl = (size_t)(colon - line);
      const char *v = colon + 1;
      while (v < eol && (*v == ' ' || *v == '\t'))
        v++;
      size_t vl = (size_t)(eol - v);
      if (nl == 7 && strncasecmp(line, "Upgrade", 7) == 0)
        upgrade = has_token(v, vl, "websocket");
      else if (nl == 10 && strncasecmp(line, "Connection", 10) == 0)
        connection = has_token(v, vl, "upgrade");
      else if (nl == 20 && strncasecmp(line, "Sec-WebSocket-Accept", 20) == 0)
        acc = vl == LOAD_WS_ACCEPT_LEN && memcmp(v, accept, LOAD_WS_ACCEPT_LEN) == 0;
    }
    line = eol + 1;
  }
  if (!upgrade || !connection || !acc) {
    snprintf(err, errlen, "101 without %s",
             !upgrade      ? "\"Upgrade: websocket\""
             : !connection ? "\"Connection: Upgrade\""
                           : "the right Sec-WebSocket-Accept");
    return -1;
  }
  return (int)hlen;
}

size_t load_ws_frame_size(size_t len) {
  size_t h = len < 126 ? 2 : len <= 0xFFFF ? 4 : 10;
  return h + 4 + len;
}

size_t load_ws_frame(uint8_t *out, size_t cap, unsigned opcode, const void *payload, size_t len,
                     uint32_t mask) {
  size_t total = load_ws_frame_size(len);
  if (total > cap)
    return 0;
  size_t o = 0;
  out[o++] = (uint8_t)(0x80 | (opcode & 0x0F));
  if (len < 126) {
    out[o++] = (uint8_t)(0x80 | len);
  } else if (len <= 0xFFFF) {
    out[o++] = 0x80 | 126;
    out[o++] = (uint8_t)(len >> 8);
    out[o++] = (uint8_t)len;
  } else {
    out[o++] = 0x80 | 127;
    for (int i = 7; i >= 0; i--)
      out[o++] = (uint8_t)((uint64_t)len >> (8 * i));
  }
  uint8_t m[4] = {(uint8_t)(mask >> 24), (uint8_t)(mask >> 16), (uint8_t)(mask >> 8),
                  (uint8_t)mask};
  memcpy(out + o, m, 4);
  o += 4;
  const uint8_t *p = payload;
  for (size_t i = 0; i < len; i++)
    out[o + i] = p[i] ^ m[i & 3];
  return total;
}

/* Header length implied by the first two bytes. */
static uint8_t header_need(const uint8_t *h) {
  uint8_t l = h[1] & 0x7F;
  return (uint8_t)(2 + (l == 126 ? 2 : l == 127 ? 8 : 0) + ((h[1] & 0x80) ? 4 : 0));
}

static int header_done(load_ws_parser *p, const char **err) {
  const uint8_t *h = p->hdr;
  if (h[0] & 0x70) {
    *err = "the server set reserved bits (no extension was negotiated)";
    return -1;
  }
  if (h[1] & 0x80) {
    *err = "the server sent a masked frame (RFC 6455 5.1)";
    return -1;
  }
  uint8_t op = h[0] & 0x0F;
  bool fin = h[0] & 0x80;
  uint8_t l = h[1] & 0x7F;
  uint64_t len = l;
  if (l == 126) {
    len = (uint64_t)h[2] << 8 | h[3];
  } else if (l == 127) {
    len = 0;
    for (int i = 2; i < 10; i++)
      len = len << 8 | h[i];
    if (len >> 63) {
      *err = "frame length has its top bit set";
      return -1;
    }
  }
  if (op >= 0x8) {
    if (op > LOAD_WS_OP_PONG) {
      *err = "unknown control opcode";
      return -1;
    }
    if (!fin || len > 125) {
      *err = "control frame fragmented or longer than 125 bytes";
      return -1;
    }
  } else if (op == LOAD_WS_OP_CONT) {
    if (p->msg_opcode == 0) {
      *err = "continuation frame outside a message";
      return -1;
    }
  } else if (op == LOAD_WS_OP_TEXT || op == LOAD_WS_OP_BINARY) {
    if (p->msg_opcode != 0) {
      *err = "new data frame inside a fragmented message";
      return -1;
    }
    p->msg_opcode = op;
  } else {
    *err = "unknown data opcode";
    return -1;
  }
  p->opcode = op;
  p->frame_len = len;
  p->remain = len;
  p->in_payload = 1;
  return 0;
}

long load_ws_parse(load_ws_parser *p, const uint8_t *data, size_t len, load_ws_chunk *chunk,
                   bool *got, const char **err) {
  *got = false;
  size_t off = 0;
  if (!p->in_payload) {
    while (off < len) {
      p->hdr[p->have++] = data[off++];
      if (p->have >= 2 && p->have == header_need(p->hdr))
        break;
    }
    if (p->have < 2 || p->have < header_need(p->hdr))
      return (long)off;
    if (header_done(p, err) != 0)
      return -1;
    p->have = 0;
    chunk->first = true;
  } else {
    chunk->first = p->remain == p->frame_len;
  }
  size_t take = len - off;
  if (take > p->remain)
    take = (size_t)p->remain;
  bool control = p->opcode >= 0x8;
  chunk->data = data + off;
  chunk->len = take;
  chunk->frame_len = p->frame_len;
  chunk->opcode = p->opcode;
  chunk->msg_opcode = control ? p->opcode : p->msg_opcode;
  chunk->fin = (p->hdr[0] & 0x80) != 0;
  p->remain -= take;
  chunk->last = p->remain == 0;
  *got = take > 0 || chunk->last;
  if (chunk->last) {
    p->in_payload = 0;
    if (!control && chunk->fin)
      p->msg_opcode = 0;
  }
  return (long)(off + take);
}

size_t load_marker_write(char *out, size_t cap, uint64_t value) {
  int n = snprintf(out, cap, "~wl%llu~", (unsigned long long)value);
  return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

size_t load_marker_feed(load_marker_scan *s, const uint8_t *p, size_t n,
                        void (*fn)(void *arg, uint64_t value), void *arg) {
  size_t found = 0;
  for (size_t i = 0; i < n; i++) {
    uint8_t c = p[i];
    switch (s->state) {
    case 0: /* looking for '~' */
      if (c == '~')
        s->state = 1;
      break;
    case 1: /* after '~' */
      s->state = c == 'w' ? 2 : c == '~' ? 1 : 0;
      break;
    case 2: /* after "~w" */
      s->state = c == 'l' ? 3 : c == '~' ? 1 : 0;
      break;
    default: /* 3: digits */
      if (c >= '0' && c <= '9' && s->digits < 19) {
        s->acc = s->acc * 10 + (uint64_t)(c - '0');
        s->digits++;
        break;
      }
      if (c == '~' && s->digits > 0) {
        fn(arg, s->acc);
        found++;
        s->state = 0;
      } else {
        s->state = c == '~' ? 1 : 0;
      }
      s->acc = 0;
      s->digits = 0;
      break;
    }
  }
  return found;
}
