/*
 * gw_chops: clients' channel ops (subscribe, unsubscribe), told apart from application frames by
 * an exact prefix, parsed only then, and their answers (docs/PROTOCOL.md, "Channels").
 *
 * JSON ops are text frames starting with {"wsgate":" ; MessagePack ops are binary frames starting
 * with a fixmap whose first key is the fixstr "wsgate". gw_chops_marked() is the only call on the
 * ingest path of every frame: one byte compare for almost every application frame, never a parse.
 * Parsing bounds everything: MessagePack is validated (wsg_msgpack_validate) before msgpack-c
 * unpacks it, JSON goes through jansson, and the channel name is copied into the op.
 *
 * Threads: none of its own; every function is reentrant.
 */
#ifndef GW_CHOPS_H
#define GW_CHOPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "wsg_envelope.h"

/* X-macro: name, value, code (the answer's "code"), message. Results of an op, shared with
 * gw_channels; GW_CHOP_OK is answered "subscribed"/"unsubscribed". */
#define GW_CHOP_ERRNO_MAP(X)                                                                       \
  X(OK, 0, "ok", "success")                                                                        \
  X(BAD_REQUEST, -1, "bad_request", "the op is not an object of the documented shape")             \
  X(UNKNOWN_OP, -2, "unknown_op", "unknown op")                                                    \
  X(BAD_CHANNEL, -3, "bad_channel",                                                                \
    "a channel name is 1..200 bytes of UTF-8 without control characters")                          \
  X(UNKNOWN_NAMESPACE, -4, "unknown_namespace", "the channel's namespace is not configured")       \
  X(FORBIDDEN, -5, "forbidden", "the token does not allow this channel")                           \
  X(TOO_MANY_SUBS, -6, "too_many_subscriptions",                                                   \
    "the connection has as many subscriptions as --channel-max-per-conn allows")                   \
  X(TOO_MANY_CHANNELS, -7, "too_many_channels",                                                    \
    "the gateway holds as many channels as --channel-max allows")                                  \
  X(UNAVAILABLE, -8, "unavailable", "the gateway cannot record the subscription now; retry later") \
  X(PUBLISH_NOT_ALLOWED, -9, "publish_not_allowed",                                                \
    "clients may not publish to this channel's namespace (client_publish=false)")                  \
  X(TIMEOUT, -10, "timeout",                                                                       \
    "the handler did not decide within --channel-decide-timeout; retry later")                     \
  X(TOO_MANY_PENDING, -11, "too_many_pending",                                                     \
    "too many subscribes wait for the handler's decision (--channel-pending-per-conn, "            \
    "--channel-pending-max); retry later")                                                         \
  X(NOT_SUBSCRIBED, -12, "not_subscribed",                                                         \
    "only a connection subscribed to the channel may ask for its presence")                        \
  X(PRESENCE_NOT_ALLOWED, -13, "presence_not_allowed",                                             \
    "clients may not ask for presence in this channel's namespace (client_presence=false)")        \
  X(PRESENCE_BUSY, -14, "presence_busy",                                                           \
    "too many presence queries in flight (4 per connection, --channel-presence-inflight per "      \
    "gateway); retry when one is answered")

typedef enum {
#define GW_CHOP_ERR_ENUM(name, value, code, msg) GW_CHOP_##name = value,
  GW_CHOP_ERRNO_MAP(GW_CHOP_ERR_ENUM)
#undef GW_CHOP_ERR_ENUM
} gw_chop_err;

#define GW_CHOP_ERR_COUNT 15
/* gw_chserve's own result: the answer comes later (a recovery, a presence query), not an error. */
#define GW_CHOP_RECOVERING 1
/* gw_chserve's own result: sent to the handler, answered when it decides (gw_chpend). */
#define GW_CHOP_PENDING 2
const char *gw_chop_code(int err);     /* "forbidden" etc.: the answer's code; static string */
const char *gw_chop_strerror(int err); /* the answer's message; static string */

typedef enum {
  GW_CHOP_NONE = 0, /* unknown op (parse returned GW_CHOP_UNKNOWN_OP or BAD_REQUEST) */
  GW_CHOP_SUBSCRIBE,
  GW_CHOP_UNSUBSCRIBE,
  GW_CHOP_PUBLISH,  /* forwarded to the processors as the client's `msg` when allowed */
  GW_CHOP_PRESENCE, /* answered from Redis by gw_chpresq */
} gw_chop_kind;

typedef struct {
  gw_chop_kind kind;
  bool msgpack; /* came as MessagePack: answer in MessagePack */
  bool has_id;
  bool has_since;
  /* Made by the processor for a handler (wsgate_subscribe), not asked by the client: answered
   * with "server":true, no id, and an error names the channel. */
  bool server;
  uint64_t id; /* 0..2^53-1 */
  uint64_t since_offset, since_epoch;
  size_t channel_len;
  char channel[WSG_MAX_CHANNEL_LEN + 1]; /* NUL-terminated copy */
} gw_chop;

/* The ingest path's only check (inline: every client frame goes through it). */
static inline bool gw_chops_marked(const uint8_t *d, size_t len, bool binary) {
  if (binary)
    return len >= 8 && (d[0] & 0xf0) == 0x80 && d[0] != 0x80 && memcmp(d + 1, "\xa6wsgate", 7) == 0;
  return len >= 11 && d[0] == '{' && memcmp(d + 1, "\"wsgate\":\"", 10) == 0;
}

/*
 * Parses a marked frame into *op. Returns GW_CHOP_OK, GW_CHOP_BAD_REQUEST, GW_CHOP_UNKNOWN_OP or
 * GW_CHOP_BAD_CHANNEL; op->msgpack and (when readable) op->id are set even on error, so the error
 * can be answered. d: borrowed.
 */
int gw_chops_parse(const uint8_t *d, size_t len, bool binary, gw_chop *op);

/*
 * Encodes the answer to `op` with result `err` (GW_CHOP_OK: "subscribed"/"unsubscribed"; else an
 * "error" with the code and message) in op's format into out[0..cap). Returns the length, or 0
 * when it does not fit (cap >= GW_CHOP_ANSWER_MAX always fits). op, out: borrowed.
 */
#define GW_CHOP_ANSWER_MAX 1024
size_t gw_chops_answer(const gw_chop *op, int err, uint8_t *out, size_t cap);
/* The same with `message` (NUL-terminated UTF-8, e.g. the handler's reason for a refusal) in
 * place of the error's own; NULL: the error's own. */
size_t gw_chops_answer_msg(const gw_chop *op, int err, const char *message, uint8_t *out,
                           size_t cap);

/* The "subscribed" answer with the subscription's position: {"wsgate":"subscribed",..,
 * "recovered":b,"epoch":E,"offset":O}. To a subscribe with `since`, once the history said whether
 * it covers what the client missed, O the channel's last offset when the history was read; to
 * one without (`fresh`: no "recovered"), O the offset the live stream continues after (epoch 0,
 * offset 0: the channel has had no publication). */
typedef struct {
  bool recovered, fresh;
  uint64_t epoch, offset;
} gw_chop_recovery;
size_t gw_chops_answer_recovery(const gw_chop *op, const gw_chop_recovery *rec, uint8_t *out,
                                size_t cap);

#endif
