/*
 * wsg_envelope: decodes envelopes with the bounded cursor of wsg_mp.h (no allocation, every length
 * checked before use) and encodes them with direct writes into a reusable wsg_buf.
 * docs/PROTOCOL.md is the specification; the rules below implement it line by line.
 *
 * Threads: none of its own; every function is reentrant.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "wsg_envelope.h"
#include "wsg_mp.h"

/* ---- errors and names ------------------------------------------------------------------------ */

const char *wsg_env_strerror(int err) {
  switch (err) {
#define WSG_ENV_ERR_MSG(name, value, msg)                                                          \
  case WSG_ENV_##name:                                                                             \
    return msg;
    WSG_ENV_ERRNO_MAP(WSG_ENV_ERR_MSG)
#undef WSG_ENV_ERR_MSG
  }
  return "unknown envelope error";
}

const char *wsg_env_err_name(int err) {
  switch (err) {
#define WSG_ENV_ERR_NAME(name, value, msg)                                                         \
  case WSG_ENV_##name:                                                                             \
    return #name;
    WSG_ENV_ERRNO_MAP(WSG_ENV_ERR_NAME)
#undef WSG_ENV_ERR_NAME
  }
  return "UNKNOWN";
}

static const char *const kind_names[] = {
    [WSG_ENV_MSG] = "msg",
    [WSG_ENV_CONNECT] = "connect",
    [WSG_ENV_DISCONNECT] = "disconnect",
    [WSG_ENV_DELIVER] = "deliver",
    [WSG_ENV_CLOSE] = "close",
    [WSG_ENV_PUBLISH] = "publish",
    [WSG_ENV_SUBSCRIBE] = "subscribe",
    [WSG_ENV_UNSUBSCRIBE] = "unsubscribe",
    [WSG_ENV_SUB_REQUEST] = "subscribe_request",
    [WSG_ENV_JOINLEAVE] = "joinleave",
};

static bool kind_valid(int kind) {
  return kind >= WSG_ENV_KIND_FIRST && kind <= WSG_ENV_KIND_LAST;
}

const char *wsg_env_kind_name(wsg_env_kind kind) {
  return kind_valid((int)kind) ? kind_names[kind] : "unknown";
}

static int kind_lookup(const void *s, size_t len) {
  for (int k = WSG_ENV_KIND_FIRST; k <= WSG_ENV_KIND_LAST; k++)
    if (strlen(kind_names[k]) == len && memcmp(kind_names[k], s, len) == 0)
      return k;
  return 0;
}

/* ---- keys ------------------------------------------------------------------------------------ */

/* Every key, in the order the encoder writes them (docs/PROTOCOL.md, "Encoding rules"): routing
 * first, the payload last so a reader of a dump sees the small fields before the big one. */
typedef enum {
  K_V,
  K_T,
  K_G,
  K_S,
  K_U,
  K_C,
  K_CS,
  K_N,
  K_Q,
  K_QS,
  K_CH,
  K_CO,
  K_CE,
  K_RQ,
  K_RF,
  K_TS,
  K_CC,
  K_CR,
  K_B,
  K_M,
  K_D,
  K_COUNT,
} key_id;

static const struct {
  const char *name;
  uint32_t flag; /* WSG_F_*; 0 for v and t, which are not in env->fields */
} keys[K_COUNT] = {
    [K_V] = {"v", 0},
    [K_T] = {"t", 0},
    [K_G] = {"g", WSG_F_GATEWAY},
    [K_S] = {"s", WSG_F_SLOT},
    [K_U] = {"u", WSG_F_USER},
    [K_C] = {"c", WSG_F_CONN},
    [K_CS] = {"cs", WSG_F_CONNS},
    [K_N] = {"n", WSG_F_SEQ},
    [K_Q] = {"q", WSG_F_USEQ},
    [K_QS] = {"qs", WSG_F_USEQS},
    [K_CH] = {"ch", WSG_F_CHANNEL},
    [K_CO] = {"co", WSG_F_CH_OFFSET},
    [K_CE] = {"ce", WSG_F_CH_EPOCH},
    [K_RQ] = {"rq", WSG_F_REQUEST},
    [K_RF] = {"rf", WSG_F_REFUSAL},
    [K_TS] = {"ts", WSG_F_TS},
    [K_CC] = {"cc", WSG_F_CLOSE_CODE},
    [K_CR] = {"cr", WSG_F_CLOSE_REASON},
    [K_B] = {"b", WSG_F_BINARY},
    [K_M] = {"m", WSG_F_META},
    [K_D] = {"d", WSG_F_DATA},
};

#define WSG_F_ALL                                                                                  \
  (WSG_F_USER | WSG_F_CONN | WSG_F_GATEWAY | WSG_F_SLOT | WSG_F_TS | WSG_F_SEQ | WSG_F_USEQ |      \
   WSG_F_DATA | WSG_F_BINARY | WSG_F_META | WSG_F_CONNS | WSG_F_CLOSE_CODE | WSG_F_CLOSE_REASON |  \
   WSG_F_USEQS | WSG_F_CHANNEL | WSG_F_CH_OFFSET | WSG_F_CH_EPOCH | WSG_F_REQUEST | WSG_F_REFUSAL)

/* Called for every key of every envelope: a switch rather than a scan of the table. */
static int key_lookup(const uint8_t *s, size_t len) {
  if (len == 1) {
    switch (s[0]) {
    case 'v':
      return K_V;
    case 't':
      return K_T;
    case 'g':
      return K_G;
    case 's':
      return K_S;
    case 'u':
      return K_U;
    case 'c':
      return K_C;
    case 'n':
      return K_N;
    case 'q':
      return K_Q;
    case 'b':
      return K_B;
    case 'm':
      return K_M;
    case 'd':
      return K_D;
    }
  } else if (len == 2 && s[0] == 'c') {
    switch (s[1]) {
    case 's':
      return K_CS;
    case 'c':
      return K_CC;
    case 'r':
      return K_CR;
    case 'h':
      return K_CH;
    case 'o':
      return K_CO;
    case 'e':
      return K_CE;
    }
  } else if (len == 2 && s[0] == 't' && s[1] == 's') {
    return K_TS;
  } else if (len == 2 && s[0] == 'r') {
    return s[1] == 'q' ? K_RQ : s[1] == 'f' ? K_RF : -1;
  } else if (len == 2 && s[0] == 'q' && s[1] == 's') {
    return K_QS;
  }
  return -1;
}

/* ---- checks shared by the decoder and the encoder ------------------------------------------- */

/* Close codes (RFC 6455 section 7.4 and the IANA registry). Sendable: 1000-1003, 1007-1014 and
 * 3000-4999 (registered and private use). 1005, 1006 and 1015 must never be sent in a close frame
 * but describe how a connection ended, so a disconnect may report them. 1004 and 1016-2999 are
 * reserved. */
static bool close_code_sendable(unsigned cc) {
  return (cc >= 1000 && cc <= 1003) || (cc >= 1007 && cc <= 1014) || (cc >= 3000 && cc <= 4999);
}

bool wsg_close_code_valid(wsg_env_kind kind, unsigned cc) {
  if (close_code_sendable(cc))
    return true;
  return kind == WSG_ENV_DISCONNECT && (cc == 1005 || cc == 1006 || cc == 1015);
}

static int check_str(const char *s, size_t len, size_t max, bool nonempty) {
  if (s == NULL && len > 0)
    return WSG_ENV_BAD_VALUE;
  if (nonempty && len == 0)
    return WSG_ENV_BAD_VALUE;
  if (len > max)
    return WSG_ENV_TOO_LONG;
  return wsg_utf8_valid(s, len) ? WSG_ENV_OK : WSG_ENV_BAD_UTF8;
}

#define FAIL(code, key)                                                                            \
  do {                                                                                             \
    *field = keys[key].name;                                                                       \
    return (code);                                                                                 \
  } while (0)

/*
 * Everything about an envelope that does not depend on how it was written: required fields per
 * kind, lengths, UTF-8, ranges. The decoder runs it after reading the map, the encoder before
 * writing, so the two cannot disagree. `meta_checked`: the decoder has already validated `m`.
 */
static int check_envelope(const wsg_envelope *env, bool meta_checked, const char **field) {
  uint32_t f = env->fields;
  int rc;

  *field = "";
  if (!kind_valid((int)env->kind))
    FAIL(WSG_ENV_BAD_KIND, K_T);

  /* Required fields, reported in key order. */
  switch (env->kind) {
  case WSG_ENV_MSG:
  case WSG_ENV_CONNECT:
  case WSG_ENV_DISCONNECT:
  case WSG_ENV_SUB_REQUEST:
    if (!(f & WSG_F_GATEWAY))
      FAIL(WSG_ENV_MISSING, K_G);
    if (!(f & WSG_F_SLOT))
      FAIL(WSG_ENV_MISSING, K_S);
    if (!(f & WSG_F_USER))
      FAIL(WSG_ENV_MISSING, K_U);
    if (!(f & WSG_F_CONN))
      FAIL(WSG_ENV_MISSING, K_C);
    if (env->kind == WSG_ENV_SUB_REQUEST && !(f & WSG_F_CHANNEL))
      FAIL(WSG_ENV_MISSING, K_CH);
    if (env->kind == WSG_ENV_SUB_REQUEST && !(f & WSG_F_REQUEST))
      FAIL(WSG_ENV_MISSING, K_RQ);
    break;
  case WSG_ENV_DELIVER:
    if (!(f & WSG_F_GATEWAY))
      FAIL(WSG_ENV_MISSING, K_G);
    if (!(f & (WSG_F_CONN | WSG_F_CONNS | WSG_F_USER))) {
      *field = "c|cs|u";
      return WSG_ENV_MISSING;
    }
    /* One connection or a list, never both: a gateway could not know which one was meant. */
    if ((f & WSG_F_CONN) && (f & WSG_F_CONNS))
      FAIL(WSG_ENV_BAD_VALUE, K_CS);
    break;
  case WSG_ENV_CLOSE:
    if (!(f & WSG_F_GATEWAY))
      FAIL(WSG_ENV_MISSING, K_G);
    if (!(f & WSG_F_CONN))
      FAIL(WSG_ENV_MISSING, K_C);
    break;
  case WSG_ENV_PUBLISH:
    if (!(f & WSG_F_GATEWAY))
      FAIL(WSG_ENV_MISSING, K_G);
    if (!(f & WSG_F_CHANNEL))
      FAIL(WSG_ENV_MISSING, K_CH);
    if (!(f & WSG_F_CH_OFFSET))
      FAIL(WSG_ENV_MISSING, K_CO);
    if (!(f & WSG_F_CH_EPOCH))
      FAIL(WSG_ENV_MISSING, K_CE);
    break;
  case WSG_ENV_SUBSCRIBE:
  case WSG_ENV_UNSUBSCRIBE:
    if (!(f & WSG_F_GATEWAY))
      FAIL(WSG_ENV_MISSING, K_G);
    if (!(f & (WSG_F_CONN | WSG_F_CONNS))) {
      *field = "c|cs";
      return WSG_ENV_MISSING;
    }
    if ((f & WSG_F_CONN) && (f & WSG_F_CONNS))
      FAIL(WSG_ENV_BAD_VALUE, K_CS);
    if (!(f & WSG_F_CHANNEL))
      FAIL(WSG_ENV_MISSING, K_CH);
    /* An answer goes to the one connection that asked. */
    if ((f & WSG_F_REQUEST) && !(f & WSG_F_CONN))
      FAIL(WSG_ENV_BAD_VALUE, K_RQ);
    break;
  case WSG_ENV_JOINLEAVE:
    if (!(f & WSG_F_GATEWAY))
      FAIL(WSG_ENV_MISSING, K_G);
    if (!(f & WSG_F_CHANNEL))
      FAIL(WSG_ENV_MISSING, K_CH);
    if (!(f & WSG_F_DATA))
      FAIL(WSG_ENV_MISSING, K_D);
    break;
  }
  /* A refusal answers a request: only in a subscribe, only with rq. */
  if ((f & WSG_F_REFUSAL) && (env->kind != WSG_ENV_SUBSCRIBE || !(f & WSG_F_REQUEST)))
    FAIL(WSG_ENV_BAD_VALUE, K_RF);
  if ((f & WSG_F_REFUSAL) &&
      (rc = check_str(env->refusal, env->refusal_len, WSG_MAX_REASON_LEN, false)) != WSG_ENV_OK)
    FAIL(rc, K_RF);

  if ((f & WSG_F_GATEWAY) &&
      (rc = check_str(env->gateway, env->gateway_len, WSG_MAX_GATEWAY_LEN, true)) != WSG_ENV_OK)
    FAIL(rc, K_G);
  /* A slot is a Kafka partition number: int32 on the wire of every Kafka client. */
  if ((f & WSG_F_SLOT) && env->slot > INT32_MAX)
    FAIL(WSG_ENV_BAD_VALUE, K_S);
  if ((f & WSG_F_USER) &&
      (rc = check_str(env->user, env->user_len, WSG_MAX_USER_LEN, true)) != WSG_ENV_OK)
    FAIL(rc, K_U);
  if (f & WSG_F_CONNS) {
    if (env->conns.count == 0)
      FAIL(WSG_ENV_BAD_VALUE, K_CS);
    if (env->conns.count > WSG_MAX_CONNS)
      FAIL(WSG_ENV_TOO_LONG, K_CS);
  }
  /* One q per target connection: without the list, or with another count, nobody could tell
   * which q belongs to which connection. */
  if ((f & WSG_F_USEQS) && (!(f & WSG_F_CONNS) || env->useqs.count != env->conns.count))
    FAIL(WSG_ENV_BAD_VALUE, K_QS);
  if (f & WSG_F_CHANNEL) {
    if (env->channel == NULL || env->channel_len == 0)
      FAIL(WSG_ENV_BAD_VALUE, K_CH);
    if (env->channel_len > WSG_MAX_CHANNEL_LEN)
      FAIL(WSG_ENV_TOO_LONG, K_CH);
    if (!wsg_channel_name_valid(env->channel, env->channel_len))
      FAIL(wsg_utf8_valid(env->channel, env->channel_len) ? WSG_ENV_BAD_VALUE : WSG_ENV_BAD_UTF8,
           K_CH);
  }
  /* Offsets and epochs stay exact in Lua's doubles and in JavaScript. */
  if ((f & WSG_F_CH_OFFSET) && (env->ch_offset == 0 || env->ch_offset >= (1ull << 53)))
    FAIL(WSG_ENV_BAD_VALUE, K_CO);
  if ((f & WSG_F_CH_EPOCH) && (env->ch_epoch == 0 || env->ch_epoch >= (1ull << 53)))
    FAIL(WSG_ENV_BAD_VALUE, K_CE);
  if ((f & WSG_F_CLOSE_CODE) && !wsg_close_code_valid(env->kind, env->close_code))
    FAIL(WSG_ENV_BAD_VALUE, K_CC);
  if (f & WSG_F_CLOSE_REASON) {
    /* A WebSocket close frame carries a reason only after a code. */
    if (!(f & WSG_F_CLOSE_CODE))
      FAIL(WSG_ENV_MISSING, K_CC);
    rc = check_str(env->close_reason, env->close_reason_len, WSG_MAX_REASON_LEN, false);
    if (rc != WSG_ENV_OK)
      FAIL(rc, K_CR);
  }
  if (f & WSG_F_META) {
    if (env->meta == NULL || env->meta_len == 0)
      FAIL(WSG_ENV_BAD_VALUE, K_M);
    if (!meta_checked) {
      /* A map: fixmap 0x80..0x8f, map16 0xde, map32 0xdf. */
      uint8_t b0 = env->meta[0];
      if (!((b0 >= 0x80 && b0 <= 0x8f) || b0 == 0xde || b0 == 0xdf))
        FAIL(WSG_ENV_BAD_TYPE, K_M);
      rc = wsg_msgpack_validate(env->meta, env->meta_len, WSG_MAX_META_DEPTH);
      if (rc != WSG_ENV_OK)
        FAIL(rc, K_M);
    }
  }
  if (f & WSG_F_DATA) {
    if (env->data == NULL && env->data_len > 0)
      FAIL(WSG_ENV_BAD_VALUE, K_D);
    if (env->data_len > WSG_MAX_PAYLOAD)
      FAIL(WSG_ENV_TOO_LONG, K_D);
  }
  return WSG_ENV_OK;
}

/* ---- decoding -------------------------------------------------------------------------------- */

/*
 * Errors found inside a well-formed value (wrong type, duplicate, out of range) are remembered and
 * reported after the whole map has been read, so that a newer version's envelope is reported as
 * BAD_VERSION rather than as whatever its first changed field looks like to us. Errors in the
 * structure itself (truncated, invalid byte) stop decoding at once: nothing after them can be read.
 */
typedef struct {
  wsg__mp_cur cur;
  int err; /* first deferred error, 0 if none */
  const char *err_field;
  /* Nesting allowed in a value being skipped, so that the whole envelope stays within
   * WSG_MSGPACK_MAX_DEPTH: anything decode accepts, wsg_msgpack_validate() accepts too. */
  unsigned skip_depth;
} decoder;

#define VALUE_DEPTH (WSG_MSGPACK_MAX_DEPTH - 1) /* a value of the envelope map */

static void defer(decoder *d, int err, key_id key) {
  if (d->err == WSG_ENV_OK) {
    d->err = err;
    d->err_field = keys[key].name;
  }
}

#define TYPE_BIT(t) (1u << (t))

/* Reads a value whose type must be one of `accept` (TYPE_BIT()s). A value of another type is
 * skipped whole (it may be a container) and reported through defer(); *ok says whether `it` holds
 * an accepted type. An accepted array or map leaves the cursor on its first element. Returns
 * structural errors only. */
static int read_typed(decoder *d, key_id key, uint32_t accept, wsg__mp_item *it, bool *ok) {
  const uint8_t *start = d->cur.p;
  int rc = wsg__mp_read(&d->cur, it);

  *ok = false;
  if (rc != WSG_ENV_OK)
    return rc;
  if (accept & TYPE_BIT(it->type)) {
    *ok = true;
    return WSG_ENV_OK;
  }
  if (it->type == WSG__MP_ARRAY || it->type == WSG__MP_MAP) {
    d->cur.p = start;
    rc = wsg__mp_skip(&d->cur, d->skip_depth);
    if (rc != WSG_ENV_OK)
      return rc;
  }
  /* A negative number where a uint belongs is a value out of range, not a type error. */
  bool negative = accept == TYPE_BIT(WSG__MP_UINT) && it->type == WSG__MP_NINT;
  defer(d, negative ? WSG_ENV_BAD_VALUE : WSG_ENV_BAD_TYPE, key);
  return WSG_ENV_OK;
}

static int read_uint(decoder *d, key_id key, uint64_t max, uint64_t *out) {
  wsg__mp_item it;
  bool ok;
  int rc = read_typed(d, key, TYPE_BIT(WSG__MP_UINT), &it, &ok);
  if (rc == WSG_ENV_OK && ok) {
    if (it.v.u > max)
      defer(d, WSG_ENV_BAD_VALUE, key);
    else
      *out = it.v.u;
  }
  return rc;
}

/* str for ids and reasons; bin|str for the payload: bin is what writers should use, str is
 * accepted because some MessagePack libraries (and older ones by default) cannot write bin. */
static int read_bytes(decoder *d, key_id key, uint32_t accept, const uint8_t **s, size_t *len) {
  wsg__mp_item it;
  bool ok;
  int rc = read_typed(d, key, accept, &it, &ok);
  if (rc == WSG_ENV_OK && ok) {
    *s = it.v.s.ptr;
    *len = it.v.s.len;
  }
  return rc;
}

/* An array of uints (`cs`, `qs`). */
static int read_conns(decoder *d, key_id key, wsg_conn_list *list) {
  wsg__mp_item it;
  bool ok;
  int rc = read_typed(d, key, TYPE_BIT(WSG__MP_ARRAY), &it, &ok);

  if (rc != WSG_ENV_OK || !ok)
    return rc;
  /* Every element is checked now, so wsg_conns_next() never meets a surprise. The count was
   * checked against the bytes left, which bounds this loop. */
  list->raw = d->cur.p;
  list->count = it.v.n;
  d->skip_depth = VALUE_DEPTH - 1;
  for (uint32_t i = 0; i < it.v.n; i++) {
    wsg__mp_item el;
    if ((rc = read_typed(d, key, TYPE_BIT(WSG__MP_UINT), &el, &ok)) != WSG_ENV_OK)
      return rc;
  }
  d->skip_depth = VALUE_DEPTH;
  list->raw_len = (size_t)(d->cur.p - list->raw);
  return WSG_ENV_OK;
}

static int read_meta(decoder *d, wsg_envelope *env) {
  const uint8_t *start = d->cur.p;
  wsg__mp_item it;
  int rc = wsg__mp_read(&d->cur, &it);

  if (rc != WSG_ENV_OK)
    return rc;
  d->cur.p = start;
  rc = wsg__mp_skip(&d->cur, it.type == WSG__MP_MAP ? WSG_MAX_META_DEPTH : VALUE_DEPTH);
  if (rc == WSG_ENV_TOO_DEEP && it.type == WSG__MP_MAP) {
    /* Well-formed but deeper than metadata may be: skip it with the general cap and report
     * after the map, like any other out-of-range value. */
    if ((rc = wsg__mp_skip(&d->cur, VALUE_DEPTH)) != WSG_ENV_OK)
      return rc;
    defer(d, WSG_ENV_TOO_DEEP, K_M);
    return WSG_ENV_OK;
  }
  if (rc != WSG_ENV_OK)
    return rc;
  if (it.type != WSG__MP_MAP) {
    defer(d, WSG_ENV_BAD_TYPE, K_M);
    return WSG_ENV_OK;
  }
  env->meta = start;
  env->meta_len = (size_t)(d->cur.p - start);
  return WSG_ENV_OK;
}

/* Reads the value of known key `key`; returns structural errors only. */
static int read_field(decoder *d, key_id key, wsg_envelope *env, uint64_t *version,
                      const uint8_t **kind, size_t *kind_len) {
  const uint32_t str = TYPE_BIT(WSG__MP_STR);
  const uint8_t *p = NULL;
  size_t n = 0;
  wsg__mp_item it;
  uint64_t u = 0;
  bool ok;
  int rc;

  switch (key) {
  case K_V:
    rc = read_typed(d, key, TYPE_BIT(WSG__MP_UINT) | TYPE_BIT(WSG__MP_NINT), &it, &ok);
    /* Anything but 1, negative numbers and 0 included, is a version we do not speak. */
    if (rc == WSG_ENV_OK && ok)
      *version = it.type == WSG__MP_UINT && it.v.u != 0 ? it.v.u : UINT64_MAX;
    return rc;
  case K_T:
    return read_bytes(d, key, str, kind, kind_len);
  case K_G:
    rc = read_bytes(d, key, str, &p, &n);
    env->gateway = (const char *)p;
    env->gateway_len = n;
    return rc;
  case K_U:
    rc = read_bytes(d, key, str, &p, &n);
    env->user = (const char *)p;
    env->user_len = n;
    return rc;
  case K_CR:
    rc = read_bytes(d, key, str, &p, &n);
    env->close_reason = (const char *)p;
    env->close_reason_len = n;
    return rc;
  case K_D:
    return read_bytes(d, key, str | TYPE_BIT(WSG__MP_BIN), &env->data, &env->data_len);
  case K_S:
    rc = read_uint(d, key, INT32_MAX, &u);
    env->slot = (uint32_t)u;
    return rc;
  case K_C:
    return read_uint(d, key, UINT64_MAX, &env->conn);
  case K_N:
    return read_uint(d, key, UINT64_MAX, &env->seq);
  case K_Q:
    return read_uint(d, key, UINT64_MAX, &env->user_seq);
  case K_TS:
    return read_uint(d, key, UINT64_MAX, &env->ts_us);
  case K_CH:
    rc = read_bytes(d, key, str, &p, &n);
    env->channel = (const char *)p;
    env->channel_len = n;
    return rc;
  case K_CO:
    return read_uint(d, key, UINT64_MAX, &env->ch_offset);
  case K_CE:
    return read_uint(d, key, UINT64_MAX, &env->ch_epoch);
  case K_RQ:
    return read_uint(d, key, UINT64_MAX, &env->request);
  case K_RF:
    rc = read_bytes(d, key, str, &p, &n);
    env->refusal = (const char *)p;
    env->refusal_len = n;
    return rc;
  case K_CC:
    rc = read_uint(d, key, UINT16_MAX, &u);
    env->close_code = (uint16_t)u;
    return rc;
  case K_B:
    rc = read_typed(d, key, TYPE_BIT(WSG__MP_BOOL), &it, &ok);
    if (rc == WSG_ENV_OK && ok)
      env->binary = it.v.b;
    return rc;
  case K_CS:
    return read_conns(d, key, &env->conns);
  case K_QS:
    return read_conns(d, key, &env->useqs);
  case K_M:
    return read_meta(d, env);
  case K_COUNT:
    break;
  }
  return WSG_ENV_INVALID;
}

int wsg_envelope_decode(wsg_envelope *env, const uint8_t *buf, size_t len, const char **err_field) {
  const char *unused;
  decoder d = {{buf, buf}, WSG_ENV_OK, "", VALUE_DEPTH};
  wsg__mp_item top;
  uint32_t seen = 0;    /* bit per key_id */
  uint64_t version = 0; /* stays 0 unless v is an integer */
  const uint8_t *kind = NULL;
  size_t kind_len = 0;
  int rc;

  if (err_field == NULL)
    err_field = &unused;
  *err_field = "";
  memset(env, 0, sizeof *env);
  if (len == 0)
    return WSG_ENV_TRUNCATED;
  if (buf == NULL)
    return WSG_ENV_INVALID;
  d.cur.end = buf + len;

  if ((rc = wsg__mp_read(&d.cur, &top)) != WSG_ENV_OK)
    return rc;
  if (top.type != WSG__MP_MAP)
    return WSG_ENV_NOT_MAP;

  /* The pair count was checked against the bytes left, which bounds this loop. */
  for (uint32_t i = 0; i < top.v.n; i++) {
    const uint8_t *key_start = d.cur.p;
    wsg__mp_item key;

    if ((rc = wsg__mp_read(&d.cur, &key)) != WSG_ENV_OK)
      return rc;
    if (key.type != WSG__MP_STR) {
      /* Keys are strings; a writer using numbers or anything else is confused, not newer. */
      d.cur.p = key_start;
      for (int part = 0; part < 2; part++) /* the key, then its value */
        if ((rc = wsg__mp_skip(&d.cur, VALUE_DEPTH)) != WSG_ENV_OK)
          return rc;
      if (d.err == WSG_ENV_OK) {
        d.err = WSG_ENV_BAD_TYPE;
        d.err_field = "";
      }
      continue;
    }
    int k = key_lookup(key.v.s.ptr, key.v.s.len);
    if (k < 0) {
      /* Unknown: written by a newer version; skipped, nesting still bounded. */
      if ((rc = wsg__mp_skip(&d.cur, VALUE_DEPTH)) != WSG_ENV_OK)
        return rc;
      continue;
    }
    if (seen & (1u << k)) {
      if ((rc = wsg__mp_skip(&d.cur, VALUE_DEPTH)) != WSG_ENV_OK) {
        *err_field = keys[k].name;
        return rc;
      }
      defer(&d, WSG_ENV_DUPLICATE, (key_id)k);
      continue;
    }
    seen |= 1u << k;
    if ((rc = read_field(&d, (key_id)k, env, &version, &kind, &kind_len)) != WSG_ENV_OK) {
      *err_field = keys[k].name;
      return rc;
    }
  }
  if (d.cur.p != d.cur.end)
    return WSG_ENV_TRAILING;

  if (version != 0 && version != WSG_ENVELOPE_VERSION) {
    *err_field = "v";
    return WSG_ENV_BAD_VERSION;
  }
  if (d.err != WSG_ENV_OK) {
    *err_field = d.err_field;
    return d.err;
  }
  if (!(seen & (1u << K_V))) {
    *err_field = "v";
    return WSG_ENV_MISSING;
  }
  if (!(seen & (1u << K_T))) {
    *err_field = "t";
    return WSG_ENV_MISSING;
  }
  env->kind = (wsg_env_kind)kind_lookup(kind, kind_len);
  if (!kind_valid((int)env->kind)) {
    *err_field = "t";
    return WSG_ENV_BAD_KIND;
  }
  env->version = WSG_ENVELOPE_VERSION;
  for (int k = 0; k < K_COUNT; k++)
    if (seen & (1u << k))
      env->fields |= keys[k].flag;
  return check_envelope(env, true, err_field);
}

int wsg_conns_next(const wsg_conn_list *list, size_t *pos, uint64_t *id) {
  if (list->raw == NULL || *pos >= list->raw_len)
    return 0;
  wsg__mp_cur c = {list->raw + *pos, list->raw + list->raw_len};
  wsg__mp_item it;
  /* Validated by the decoder (or by the encoder for a caller-built list); a failure here would
   * mean the list was changed afterwards, so it ends the iteration rather than invent an id. */
  if (wsg__mp_read(&c, &it) != WSG_ENV_OK || it.type != WSG__MP_UINT)
    return 0;
  *pos = (size_t)(c.p - list->raw);
  *id = it.v.u;
  return 1;
}

/* ---- buffers --------------------------------------------------------------------------------- */

#define WSG_BUF_DEFAULT_CAP ((size_t)WSG_MAX_PAYLOAD + (size_t)64 * 1024)
#define WSG_BUF_MIN_ALLOC   256

void wsg_buf_init(wsg_buf *b, size_t cap) {
  b->data = NULL;
  b->len = 0;
  b->alloc = 0;
  b->cap = cap ? cap : WSG_BUF_DEFAULT_CAP;
}

void wsg_buf_finish(wsg_buf *b) {
  if (b == NULL)
    return;
  free(b->data);
  b->data = NULL;
  b->len = 0;
  b->alloc = 0;
}

void wsg_buf_reset(wsg_buf *b) {
  b->len = 0;
}

/* Makes room for `extra` more bytes, doubling up to the cap. */
static int buf_reserve(wsg_buf *b, size_t extra) {
  size_t cap = b->cap ? b->cap : WSG_BUF_DEFAULT_CAP;

  if (b->len > cap || extra > cap - b->len)
    return WSG_ENV_TOO_LONG;
  size_t need = b->len + extra;
  if (need <= b->alloc)
    return WSG_ENV_OK;
  size_t n = b->alloc >= WSG_BUF_MIN_ALLOC ? b->alloc : WSG_BUF_MIN_ALLOC;
  while (n < need)
    n = n > cap / 2 ? cap : n * 2;
  if (n > cap)
    n = cap;
  uint8_t *p = realloc(b->data, n);
  if (p == NULL)
    return WSG_ENV_NOMEM;
  b->data = p;
  b->alloc = n;
  return WSG_ENV_OK;
}

int wsg__buf_append(wsg_buf *b, const void *bytes, size_t len) {
  int rc;

  if (len == 0)
    return WSG_ENV_OK;
  if ((rc = buf_reserve(b, len)) != WSG_ENV_OK)
    return rc;
  memcpy(b->data + b->len, bytes, len);
  b->len += len;
  return WSG_ENV_OK;
}

/* ---- encoding -------------------------------------------------------------------------------- */

/* The encoder writes MessagePack itself, straight into the buffer: every value in an envelope is a
 * uint, a str, a bin, a bool or an array of uints, each in its smallest form (what msgpack-c's
 * packer wrote before, byte for byte; docs/PROTOCOL.md, "Encoding rules"). Its per-field write
 * callback cost a call through a pointer per header, 5 % of the gateway's ingest profile. */
typedef struct {
  wsg_buf *buf;
  int err; /* why the last write failed */
} sink;

/* Room for `len` more bytes at the end, counted as written; NULL (and s->err) when there is none.
 * The room is reserved up front (encoded_size_bound()), so this fails only when the bound was
 * beyond the cap, where buf_reserve() then says TOO_LONG. */
static inline uint8_t *room(sink *s, size_t len) {
  wsg_buf *b = s->buf;
  int rc;

  if (len > b->alloc - b->len && (rc = buf_reserve(b, len)) != WSG_ENV_OK) {
    s->err = rc;
    return NULL;
  }
  uint8_t *p = b->data + b->len;
  b->len += len;
  return p;
}

static inline int put(sink *s, const void *bytes, size_t len) {
  uint8_t *p = room(s, len);
  if (p == NULL)
    return -1;
  /* Most bodies here are a key, an id or a short name: a loop beats a call to memcpy. */
  if (len <= 16) {
    for (size_t i = 0; i < len; i++)
      p[i] = ((const uint8_t *)bytes)[i];
  } else {
    memcpy(p, bytes, len);
  }
  return 0;
}

/* A type byte and then v in `n` (0, 1, 2, 4 or 8) big-endian bytes. */
static inline int put_head(sink *s, uint8_t type, uint64_t v, unsigned n) {
  uint8_t *p = room(s, 1 + n);
  if (p == NULL)
    return -1;
  p[0] = type;
  for (unsigned i = 0; i < n; i++)
    p[1 + i] = (uint8_t)(v >> (8 * (n - 1 - i)));
  return 0;
}

static inline int put_uint(sink *s, uint64_t v) {
  if (v < 0x80)
    return put_head(s, (uint8_t)v, 0, 0); /* positive fixint */
  if (v <= UINT8_MAX)
    return put_head(s, 0xcc, v, 1);
  if (v <= UINT16_MAX)
    return put_head(s, 0xcd, v, 2);
  if (v <= UINT32_MAX)
    return put_head(s, 0xce, v, 4);
  return put_head(s, 0xcf, v, 8);
}

/* A str, bin, array or map header: `fix` + n when n < fix_max, else the 8-, 16- or 32-bit form
 * (type8 0: the kind has none, arrays and maps). Every length here is bounded far below 2^32. */
static inline int put_len(sink *s, size_t n, uint8_t fix, size_t fix_max, uint8_t type8,
                          uint8_t type16) {
  if (n < fix_max)
    return put_head(s, (uint8_t)(fix + n), 0, 0);
  if (type8 && n <= UINT8_MAX)
    return put_head(s, type8, n, 1);
  if (n <= UINT16_MAX)
    return put_head(s, type16, n, 2);
  return put_head(s, (uint8_t)(type16 + 1), n, 4);
}

static int put_str(sink *s, const char *p, size_t len) {
  if (put_len(s, len, 0xa0, 32, 0xd9, 0xda) != 0)
    return -1;
  return len ? put(s, p, len) : 0;
}

static int put_bin(sink *s, const uint8_t *p, size_t len) {
  if (put_len(s, len, 0, 0, 0xc4, 0xc5) != 0)
    return -1;
  return len ? put(s, p, len) : 0;
}

/* An upper bound of the encoded size: each key and value header at its largest. */
static size_t encoded_size_bound(const wsg_envelope *env, uint32_t f) {
  size_t n = 1 + K_COUNT * (3 + 9); /* map header; every key and scalar at its largest */
  if (f & WSG_F_GATEWAY)
    n += env->gateway_len;
  if (f & WSG_F_USER)
    n += env->user_len;
  if (f & WSG_F_CLOSE_REASON)
    n += env->close_reason_len;
  if (f & WSG_F_CHANNEL)
    n += env->channel_len;
  if (f & WSG_F_REFUSAL)
    n += env->refusal_len;
  if (f & WSG_F_META)
    n += env->meta_len;
  if (f & WSG_F_DATA)
    n += env->data_len;
  if (f & WSG_F_CONNS)
    n += (size_t)env->conns.count * 9;
  if (f & WSG_F_USEQS)
    n += (size_t)env->useqs.count * 9;
  return n;
}

/* A caller-built `cs` given as raw MessagePack must be exactly `count` uints. */
static bool conns_raw_valid(const wsg_conn_list *list) {
  if (list->raw == NULL)
    return false;
  wsg__mp_cur c = {list->raw, list->raw + list->raw_len};
  for (uint32_t i = 0; i < list->count; i++) {
    wsg__mp_item it;
    if (wsg__mp_read(&c, &it) != WSG_ENV_OK || it.type != WSG__MP_UINT)
      return false;
  }
  return c.p == c.end;
}

/* An array of uints from ids[0..list->count), or re-encoded element by element from a raw list
 * so the output uses the smallest encodings whatever the input used. */
static int put_uints(sink *s, const wsg_conn_list *list, const uint64_t *ids) {
  if (put_len(s, list->count, 0x90, 16, 0, 0xdc) != 0)
    return -1;
  if (ids != NULL) {
    for (uint32_t i = 0; i < list->count; i++)
      if (put_uint(s, ids[i]) != 0)
        return -1;
    return 0;
  }
  size_t pos = 0;
  uint64_t id;
  while (wsg_conns_next(list, &pos, &id))
    if (put_uint(s, id) != 0)
      return -1;
  return 0;
}

static int put_field(sink *s, const wsg_envelope *env, key_id k) {
  if (put_str(s, keys[k].name, keys[k].name[1] ? 2 : 1) != 0)
    return -1;
  switch (k) {
  case K_V:
    return put_uint(s, WSG_ENVELOPE_VERSION);
  case K_T: {
    const char *name = kind_names[env->kind];
    return put_str(s, name, strlen(name));
  }
  case K_G:
    return put_str(s, env->gateway, env->gateway_len);
  case K_S:
    return put_uint(s, env->slot);
  case K_U:
    return put_str(s, env->user, env->user_len);
  case K_C:
    return put_uint(s, env->conn);
  case K_CS:
    return put_uints(s, &env->conns, env->conn_ids);
  case K_QS:
    return put_uints(s, &env->useqs, env->useq_ids);
  case K_N:
    return put_uint(s, env->seq);
  case K_Q:
    return put_uint(s, env->user_seq);
  case K_TS:
    return put_uint(s, env->ts_us);
  case K_CH:
    return put_str(s, env->channel, env->channel_len);
  case K_CO:
    return put_uint(s, env->ch_offset);
  case K_CE:
    return put_uint(s, env->ch_epoch);
  case K_RQ:
    return put_uint(s, env->request);
  case K_RF:
    return put_str(s, env->refusal, env->refusal_len);
  case K_CC:
    return put_uint(s, env->close_code);
  case K_CR:
    return put_str(s, env->close_reason, env->close_reason_len);
  case K_B:
    return put_head(s, env->binary ? 0xc3 : 0xc2, 0, 0);
  case K_M:
    /* Already validated MessagePack: written as it is. */
    return env->meta_len ? put(s, env->meta, env->meta_len) : 0;
  case K_D:
    return put_bin(s, env->data, env->data_len);
  case K_COUNT:
    break;
  }
  return -1;
}

int wsg_envelope_encode(const wsg_envelope *env, wsg_buf *b) {
  const char *field;
  int rc;

  b->len = 0;
  if (env->version != 0 && env->version != WSG_ENVELOPE_VERSION)
    return WSG_ENV_BAD_VERSION;
  if ((rc = check_envelope(env, false, &field)) != WSG_ENV_OK)
    return rc;
  if ((env->fields & WSG_F_CONNS) && env->conn_ids == NULL && !conns_raw_valid(&env->conns))
    return WSG_ENV_BAD_VALUE;
  if ((env->fields & WSG_F_USEQS) && env->useq_ids == NULL && !conns_raw_valid(&env->useqs))
    return WSG_ENV_BAD_VALUE;

  uint32_t f = env->fields & WSG_F_ALL;
  size_t pairs = 2; /* v and t */
  for (int k = 0; k < K_COUNT; k++)
    if (f & keys[k].flag)
      pairs++;

  /* One reservation rather than growth in steps; skipped when the bound is beyond the cap,
   * which the writes then detect exactly. Bounded by WSG_MAX_PAYLOAD and WSG_MAX_CONNS. */
  size_t bound = encoded_size_bound(env, f);
  if (bound <= (b->cap ? b->cap : WSG_BUF_DEFAULT_CAP) && bound > b->alloc &&
      (rc = buf_reserve(b, bound)) != WSG_ENV_OK)
    return rc;

  sink s = {b, WSG_ENV_OK};
  rc = put_len(&s, pairs, 0x80, 16, 0, 0xde);
  for (int k = 0; rc == 0 && k < K_COUNT; k++)
    if (k == K_V || k == K_T || (f & keys[k].flag))
      rc = put_field(&s, env, (key_id)k);
  if (rc != 0) {
    b->len = 0;
    return s.err != WSG_ENV_OK ? s.err : WSG_ENV_INVALID;
  }
  return WSG_ENV_OK;
}
