/*
 * wsg_envelope: the MessagePack envelope that carries everything crossing Kafka in wsgate
 * (docs/PROTOCOL.md is the specification; tests/golden/ pins the bytes).
 *
 * One map with short string keys:
 *   v  uint   version (1)                      t  str    type: msg connect disconnect deliver close
 *                                                        publish subscribe unsubscribe
 *                                                        subscribe_request
 *   u  str    user id                          c  uint   connection id
 *   g  str    gateway id                       s  uint   gateway slot (outbound partition)
 *   ts uint   microseconds since the epoch     n  uint   per-connection sequence (inbound)
 *   q  uint   per-user delivery sequence       d  bin    payload, the client's frame as sent
 *   b  bool   payload is a binary frame        m  map    metadata (opaque MessagePack, validated)
 *   cs array  of uint: target connections      cc uint   close code     cr str close reason
 *   qs array  of uint parallel to cs: the q of each target connection's user (resume)
 *   ch str    channel of a publish or (un)subscribe     co uint its offset  ce uint channel epoch
 *   rq uint   a pending subscribe's token       rf str    its refusal (with rq)
 * Unknown keys are skipped, so a newer writer can add keys without breaking an older reader.
 *
 * Decoding never allocates, never reads past its input, bounds every length and count by the
 * bytes that remain, caps nesting, and names the exact problem in its error. The decoded
 * envelope's strings and payload point INTO the input buffer: they are valid while it is.
 *
 * Encoding writes into a caller-owned, reusable wsg_buf: no allocation once it has grown to the
 * largest envelope seen.
 *
 * Threads: none of its own; every function is reentrant.
 */
#ifndef WSG_ENVELOPE_H
#define WSG_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WSG_ENVELOPE_VERSION 1

/* Bounds enforced by both encoder and decoder. */
#define WSG_MAX_USER_LEN    256         /* bytes of UTF-8 */
#define WSG_MAX_GATEWAY_LEN 128         /* bytes of UTF-8 */
#define WSG_MAX_REASON_LEN  123         /* a WebSocket close reason's limit */
#define WSG_MAX_CONNS       65536       /* entries of `cs` */
#define WSG_MAX_CHANNEL_LEN 200         /* bytes of UTF-8 of a channel name (`ch`) */
#define WSG_MAX_META_DEPTH  8           /* nesting inside `m` */
#define WSG_MAX_PAYLOAD     (64u << 20) /* 64 MiB; daemons enforce their own smaller limits */
/* Hard cap on nesting for wsg_msgpack_validate() and for a whole envelope: msgpack-c's unpacker
 * refuses anything deeper (its stack is MSGPACK_EMBED_STACK_SIZE = 32 levels). */
#define WSG_MSGPACK_MAX_DEPTH 32

/* X-macro: name, value, message. Generates the enum, wsg_env_strerror() and wsg_env_err_name(). */
#define WSG_ENV_ERRNO_MAP(X)                                                                       \
  X(OK, 0, "success")                                                                              \
  X(TRUNCATED, -1, "input ends inside a value")                                                    \
  X(NOT_MAP, -2, "envelope is not a MessagePack map")                                              \
  X(BAD_TYPE, -3, "a field has the wrong MessagePack type")                                        \
  X(MISSING, -4, "a required field is missing")                                                    \
  X(TOO_LONG, -5, "a string, payload or list is longer than allowed")                              \
  X(TOO_DEEP, -6, "metadata is nested too deeply")                                                 \
  X(BAD_UTF8, -7, "a string is not valid UTF-8")                                                   \
  X(BAD_VERSION, -8, "envelope version is not supported")                                          \
  X(BAD_KIND, -9, "unknown envelope type")                                                         \
  X(TRAILING, -10, "bytes follow the envelope")                                                    \
  X(INVALID, -11, "input is not valid MessagePack")                                                \
  X(NOMEM, -12, "out of memory")                                                                   \
  X(DUPLICATE, -13, "a field appears twice")                                                       \
  X(BAD_VALUE, -14, "a field's value is out of range")

typedef enum {
#define WSG_ENV_ERR_ENUM(name, value, msg) WSG_ENV_##name = value,
  WSG_ENV_ERRNO_MAP(WSG_ENV_ERR_ENUM)
#undef WSG_ENV_ERR_ENUM
} wsg_env_err;

const char *wsg_env_strerror(int err);
const char *wsg_env_err_name(int err);

typedef enum {
  WSG_ENV_MSG = 1,    /* gateway -> processor: a client frame */
  WSG_ENV_CONNECT,    /* gateway -> processor: a connection was accepted and registered */
  WSG_ENV_DISCONNECT, /* gateway -> processor: a connection ended (cc = close code) */
  WSG_ENV_DELIVER,    /* processor -> gateway: send `d` to c, or to cs, or to all of u's */
  WSG_ENV_CLOSE,      /* processor -> gateway: close connection c with cc/cr */
  WSG_ENV_PUBLISH, /* processor -> gateway: publication `d` to channel ch (offset co, epoch ce) */
  /* processor -> gateway: subscribe connection c, or connections cs, to channel ch (a handler's
   * wsgate_subscribe), and the reverse */
  WSG_ENV_SUBSCRIBE,
  WSG_ENV_UNSUBSCRIBE,
  /* gateway -> processor: connection c asks to subscribe to ch, in a namespace whose handler
   * decides (subscribe=handler); rq is the gateway's token of the pending request, which the
   * answer (a `subscribe` to c with rq, and rf when refused) carries back */
  WSG_ENV_SUB_REQUEST,
  WSG_ENV_JOINLEAVE, /* gateway -> processor -> gateways: channel ch's joins and leaves, `d` */
} wsg_env_kind;

#define WSG_ENV_KIND_FIRST WSG_ENV_MSG
#define WSG_ENV_KIND_LAST  WSG_ENV_JOINLEAVE /* iterate kinds FIRST..LAST */

const char *wsg_env_kind_name(wsg_env_kind kind); /* "msg", "connect", ... */

/* Which fields an envelope carries (decode sets them; encode writes exactly these). */
enum {
  WSG_F_USER = 1u << 0,
  WSG_F_CONN = 1u << 1,
  WSG_F_GATEWAY = 1u << 2,
  WSG_F_SLOT = 1u << 3,
  WSG_F_TS = 1u << 4,
  WSG_F_SEQ = 1u << 5,
  WSG_F_USEQ = 1u << 6,
  WSG_F_DATA = 1u << 7,
  WSG_F_BINARY = 1u << 8,
  WSG_F_META = 1u << 9,
  WSG_F_CONNS = 1u << 10,
  WSG_F_CLOSE_CODE = 1u << 11,
  WSG_F_CLOSE_REASON = 1u << 12,
  WSG_F_USEQS = 1u << 13,     /* qs: per-connection q of a `cs` deliver */
  WSG_F_CHANNEL = 1u << 14,   /* ch */
  WSG_F_CH_OFFSET = 1u << 15, /* co */
  WSG_F_CH_EPOCH = 1u << 16,  /* ce */
  WSG_F_REQUEST = 1u << 17,   /* rq */
  WSG_F_REFUSAL = 1u << 18,   /* rf */
};

/* A list of connection ids as MessagePack bytes (an array of uints), read with wsg_conns_next(). */
typedef struct {
  const uint8_t *raw; /* the array's elements, borrowed */
  size_t raw_len;
  uint32_t count;
} wsg_conn_list;

typedef struct {
  wsg_env_kind kind;
  uint32_t version;
  uint32_t fields; /* WSG_F_* */

  const char *user; /* not NUL-terminated; borrowed */
  size_t user_len;
  uint64_t conn;
  const char *gateway; /* not NUL-terminated; borrowed */
  size_t gateway_len;
  uint32_t slot;
  uint64_t ts_us;
  uint64_t seq;        /* n: per-connection inbound sequence */
  uint64_t user_seq;   /* q: per-user delivery sequence */
  const uint8_t *data; /* payload; borrowed */
  size_t data_len;
  bool binary;
  const uint8_t *meta; /* the whole `m` map as MessagePack, validated; borrowed */
  size_t meta_len;
  wsg_conn_list conns;      /* decode: view into the input */
  const uint64_t *conn_ids; /* encode only: `cs` source array, borrowed */
  uint16_t close_code;
  const char *close_reason; /* not NUL-terminated; borrowed */
  size_t close_reason_len;
  wsg_conn_list useqs;      /* qs, decode: view into the input (read with wsg_conns_next) */
  const uint64_t *useq_ids; /* encode only: `qs` source array, borrowed, useqs.count entries */
  const char *channel;      /* ch: not NUL-terminated; borrowed */
  size_t channel_len;
  uint64_t ch_offset;  /* co */
  uint64_t ch_epoch;   /* ce */
  uint64_t request;    /* rq */
  const char *refusal; /* rf: not NUL-terminated; borrowed */
  size_t refusal_len;
} wsg_envelope;

/*
 * Decodes one envelope from exactly `len` bytes. Fills `env`, whose pointers borrow from `buf`.
 * Required: v, t; for msg/connect/disconnect also u, c, g, s; for deliver g and one of c, cs, u;
 * for close g and c; for publish g, ch, co and ce; for subscribe and unsubscribe g, ch and one of
 * c, cs (not both; c alone when rq answers a request); for subscribe_request g, s, u, c, ch, rq;
 * rf only with rq in a subscribe. Returns WSG_ENV_OK or a negative wsg_env_err; on
 * error `*err_field` (may be NULL) names the offending key ("u", "cs", ...), "c|cs|u" for a deliver
 * without a target, or "" for the envelope as a whole. Also rejected (docs/PROTOCOL.md, "What a
 * reader accepts"): empty u or g, deliver with both c and cs, an empty cs, qs without cs or of
 * another length, cr without cc, a close code that is not valid for the kind, s >= 2^31, duplicate
 * known keys, keys that are not strings, trailing bytes. Every uint field accepts any MessagePack
 * integer width, signed ones included when >= 0.
 */
int wsg_envelope_decode(wsg_envelope *env, const uint8_t *buf, size_t len, const char **err_field);

/* True if `cc` may stand in the `cc` field of an envelope of `kind`: a code a close frame may
 * carry (1000-1003, 1007-1014, 3000-4999), or for `disconnect` also 1005, 1006 and 1015, which
 * describe how a connection ended. */
bool wsg_close_code_valid(wsg_env_kind kind, unsigned cc);

/* Iterates a decoded `cs`: returns 1 and sets *id, 0 at the end. *pos starts at 0. Never fails:
 * the decoder already validated every element. */
int wsg_conns_next(const wsg_conn_list *list, size_t *pos, uint64_t *id);

/* Caller-owned growable output buffer, reused across messages; `cap` bounds its growth. */
typedef struct {
  uint8_t *data;
  size_t len;
  size_t alloc;
  size_t cap; /* 0 = WSG_MAX_PAYLOAD + 64 KiB */
} wsg_buf;

void wsg_buf_init(wsg_buf *b, size_t cap);
void wsg_buf_finish(wsg_buf *b); /* frees data; the struct may be reused after wsg_buf_init */
void wsg_buf_reset(wsg_buf *b);  /* len = 0, memory kept */

/*
 * Encodes `env` (fields chosen by env->fields; kind and version always written) and replaces
 * b's contents. Validates like the decoder (lengths, UTF-8 of ids, required fields), so what is
 * encoded always decodes. Returns WSG_ENV_OK or a negative wsg_env_err.
 * version 0 means WSG_ENVELOPE_VERSION. `cs` is written from conn_ids[0..conns.count) or, when
 * conn_ids is NULL, from conns.raw (so a decoded envelope re-encodes as it is).
 * On error b->len is 0.
 */
int wsg_envelope_encode(const wsg_envelope *env, wsg_buf *b);

/*
 * Checks that buf[0..len) is exactly one well-formed MessagePack object with nesting at most
 * `max_depth` (a scalar is depth 0, [1] depth 1, [[1]] depth 2; values above
 * WSG_MSGPACK_MAX_DEPTH act as WSG_MSGPACK_MAX_DEPTH) and every declared count and length backed by
 * the bytes that remain. After this returns WSG_ENV_OK, msgpack-c's msgpack_unpack_next() on the
 * same bytes allocates only what the input justifies. Used for client payloads (the chat handler)
 * and tools.
 */
int wsg_msgpack_validate(const uint8_t *buf, size_t len, unsigned max_depth);

/* True if s[0..len) is valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
bool wsg_utf8_valid(const char *s, size_t len);

/* True if s[0..len) is a valid channel name (docs/PROTOCOL.md, "Channels"): 1..WSG_MAX_CHANNEL_LEN
 * bytes of UTF-8 without C0 controls, DEL or C1 controls (U+0080..U+009F). */
bool wsg_channel_name_valid(const char *s, size_t len);

#endif
