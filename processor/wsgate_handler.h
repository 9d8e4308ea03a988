/*
 * wsgate_handler.h: the public C API for wsgate-processor handlers, built in or loaded from a
 * shared object with --handler ./libmine.so. This header is the whole contract: it includes only
 * the C standard library, and a plugin links against nothing of wsgate.
 *
 * A handler is a table of callbacks (wsgate_handler). The processor calls them for every envelope
 * a gateway produced: on_connect, on_message (a client frame) and on_disconnect. A callback acts
 * through the context it is given: reply to the connection that sent the frame, send to a user
 * (every connection, on any gateway), send to many users at once, close a connection, and talk
 * to Redis. Sends are collected and routed after the callback returns, for the whole batch of
 * envelopes at once (one pipelined Redis round trip, one outbound record per gateway); a reply
 * needs no lookup at all. docs/HANDLERS.md walks through an example.
 *
 * Why the functions are reached through a table in the context (as SQLite does for loadable
 * extensions) rather than exported by the executable: a plugin then needs no symbol from the
 * process that loads it, so it works in a statically linked processor, in a test program, and
 * against any later processor that still offers this ABI version.
 *
 * Plugins: build a shared object that defines
 *     WSGATE_HANDLER_EXPORT const wsgate_handler *wsgate_handler_v1(void);
 * returning a pointer to a static wsgate_handler whose abi_version is WSGATE_HANDLER_ABI_VERSION.
 *
 * Threads: every callback runs on the processor's consumer thread, one at a time; a handler needs
 * no locks for its own state. A callback may block (Redis calls do), but everything it does delays
 * the partition it came from, and a callback that takes longer than Kafka's max.poll.interval.ms
 * (5 minutes) costs the processor its partitions.
 *
 * Strings: user and gateway ids are NUL-terminated and valid UTF-8; payloads are bytes with a
 * length. Every pointer in a wsgate_event, and every Redis reply, is valid until the callback
 * returns: copy what you keep.
 *
 * ABI: this table and the structs below only grow at the end. wsgate_api.size tells a plugin which
 * functions the running processor has.
 */
#ifndef WSGATE_HANDLER_H
#define WSGATE_HANDLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WSGATE_HANDLER_ABI_VERSION 1
/* A wsgate_handler whose abi_version is this has the callbacks after on_disconnect (on_subscribe);
 * one of WSGATE_HANDLER_ABI_VERSION has not, and the processor never reads past on_disconnect
 * (as SQLite reads a module's methods by its iVersion). */
#define WSGATE_HANDLER_ABI_SUBSCRIBE 2
/* The symbol the processor looks up in a plugin with dlsym(). */
#define WSGATE_HANDLER_ENTRY "wsgate_handler_v1"

#if defined(__GNUC__)
#define WSGATE_HANDLER_EXPORT __attribute__((visibility("default")))
#else
#define WSGATE_HANDLER_EXPORT
#endif

/* Limits a handler can rely on (the processor enforces them and says so in the error). */
#define WSGATE_MAX_ACTIONS        1024   /* replies, sends and closes per callback */
#define WSGATE_MAX_FANOUT         100000 /* users addressed per callback, all sends together */
#define WSGATE_MAX_REDIS_COMMANDS 1024   /* commands in one wsgate_redis() pipeline */
/* Payload bytes one callback may send, all actions together: this many times --max-payload. */
#define WSGATE_MAX_PAYLOADS_PER_CALLBACK 32

/*
 * Return codes: callbacks return one of the first four; the action functions return WSGATE_OK or
 * one of the negative errors. X-macro: name, value, message.
 */
#define WSGATE_ERRNO_MAP(X)                                                                        \
  X(OK, 0, "success")                                                                              \
  X(ERROR, -1, "the handler failed")                                                               \
  X(REJECT, -2, "the client's input is invalid")                                                   \
  X(RETRY, -3, "a transient failure: handle this envelope again later")                            \
  X(E_INVAL, -10, "invalid argument")                                                              \
  X(E_TOOBIG, -11, "payload larger than the processor's --max-payload")                            \
  X(E_LIMIT, -12, "too many actions, users or commands for one callback")                          \
  X(E_REDIS, -13, "Redis is not reachable")                                                        \
  X(E_NOMEM, -14, "out of memory")                                                                 \
  X(E_STATE, -15, "not allowed in this callback")

typedef enum {
#define WSGATE_ERR_ENUM(name, value, msg) WSGATE_##name = value,
  WSGATE_ERRNO_MAP(WSGATE_ERR_ENUM)
#undef WSGATE_ERR_ENUM
} wsgate_status;

static inline const char *wsgate_strerror(int code) {
  switch (code) {
#define WSGATE_ERR_STR(name, value, msg)                                                           \
  case value:                                                                                      \
    return msg;
    WSGATE_ERRNO_MAP(WSGATE_ERR_STR)
#undef WSGATE_ERR_STR
  }
  return "unknown wsgate status";
}

typedef enum {
  WSGATE_EVENT_CONNECT = 1,    /* a connection was accepted and registered by its gateway */
  WSGATE_EVENT_MESSAGE = 2,    /* a client frame */
  WSGATE_EVENT_DISCONNECT = 3, /* a connection ended */
  WSGATE_EVENT_SUBSCRIBE = 4,  /* a client asks to subscribe where the handler decides */
} wsgate_event_kind;

/* One envelope from a gateway, decoded. Read-only; valid until the callback returns. */
typedef struct {
  wsgate_event_kind kind;
  const char *user; /* NUL-terminated UTF-8, never empty */
  size_t user_len;
  uint64_t conn;       /* connection id, unique across gateways */
  const char *gateway; /* the gateway holding the connection; NUL-terminated */
  size_t gateway_len;
  uint32_t slot;          /* that gateway's slot (its outbound partition) */
  uint64_t ts_us;         /* when the gateway saw it, microseconds since the epoch; 0 if not sent */
  uint64_t seq;           /* per-connection sequence of client frames; 0 if not sent */
  const uint8_t *payload; /* MESSAGE: the client's frame as sent; NULL otherwise */
  size_t payload_len;
  bool binary;             /* MESSAGE: the frame was binary (else text, valid UTF-8) */
  const uint8_t *metadata; /* the gateway's metadata map as MessagePack (validated), or NULL */
  size_t metadata_len;
  uint16_t close_code; /* DISCONNECT: the WebSocket close code; 0 if not sent */
  int32_t partition;   /* where the envelope was read: an idempotence key is (partition, offset) */
  int64_t offset;
  const char *channel; /* SUBSCRIBE: the channel asked for, NUL-terminated; NULL otherwise */
  size_t channel_len;
} wsgate_event;

typedef struct {
  const char *ptr;
  size_t len;
} wsgate_str;

/* --- Redis ------------------------------------------------------------------------------------ */

typedef struct {
  int argc;
  const char *const *argv; /* borrowed for the call */
  const size_t *argvlen;   /* NULL: every argument is NUL-terminated */
} wsgate_redis_cmd;

typedef enum {
  WSGATE_REDIS_NIL = 0,
  WSGATE_REDIS_INTEGER,
  WSGATE_REDIS_STRING,
  WSGATE_REDIS_STATUS, /* "+OK" and the like, in str */
  WSGATE_REDIS_ERROR,  /* the server's error message, in str (e.g. "WRONGTYPE ...") */
  WSGATE_REDIS_ARRAY,
} wsgate_redis_type;

typedef struct wsgate_redis_reply {
  wsgate_redis_type type;
  long long integer;
  const char *str; /* STRING, STATUS, ERROR: NUL-terminated, may hold NULs before len */
  size_t len;
  size_t count; /* ARRAY: number of items */
  const struct wsgate_redis_reply *items;
} wsgate_redis_reply;

/* One subscriber connection of a channel (wsgate_presence). */
typedef struct {
  const char *user; /* not NUL-terminated: use user_len */
  size_t user_len;
  uint64_t conn;
} wsgate_presence_entry;

/* --- the context and its functions --------------------------------------------------------------
 */

typedef struct wsgate_api wsgate_api;

/* What a callback receives. The processor's own state follows `api` in memory; never copy it. */
typedef struct wsgate_ctx {
  const wsgate_api *api;
} wsgate_ctx;

typedef enum {
  WSGATE_LOG_DEBUG = 0,
  WSGATE_LOG_INFO = 1,
  WSGATE_LOG_WARN = 2,
  WSGATE_LOG_ERROR = 3,
} wsgate_log_level;

struct wsgate_api {
  uint32_t abi_version; /* WSGATE_HANDLER_ABI_VERSION */
  uint32_t size;        /* sizeof(wsgate_api) in the running processor */

  int (*reply)(wsgate_ctx *ctx, const void *payload, size_t len, bool binary);
  int (*send_user)(wsgate_ctx *ctx, const char *user, size_t user_len, const void *payload,
                   size_t len, bool binary);
  int (*send_user_or_reply)(wsgate_ctx *ctx, const char *user, size_t user_len, const void *payload,
                            size_t len, bool binary, const void *fallback, size_t fallback_len,
                            bool fallback_binary);
  int (*send_users)(wsgate_ctx *ctx, const wsgate_str *users, size_t nusers, const void *payload,
                    size_t len, bool binary);
  int (*close)(wsgate_ctx *ctx, uint16_t code, const char *reason);
  int (*close_user)(wsgate_ctx *ctx, const char *user, size_t user_len, uint16_t code,
                    const char *reason);
  int (*redis)(wsgate_ctx *ctx, const wsgate_redis_cmd *cmds, size_t ncmds,
               const wsgate_redis_reply **replies);
  const char *(*redis_prefix)(const wsgate_ctx *ctx);
  void (*set_error)(wsgate_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
  void (*log)(wsgate_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
  /* Since channels (issue 15): check WSGATE_API_HAS before calling (wsgate_publish does). */
  int (*publish)(wsgate_ctx *ctx, const char *channel, size_t channel_len, const void *payload,
                 size_t len, bool binary);
  int (*presence)(wsgate_ctx *ctx, const char *channel, size_t channel_len,
                  const wsgate_presence_entry **entries, size_t *n);
  /* Since handler-made subscriptions (issue 15): check WSGATE_API_HAS (the wrappers do). */
  int (*subscribe)(wsgate_ctx *ctx, const char *user, size_t user_len, const char *channel,
                   size_t channel_len);
  int (*unsubscribe)(wsgate_ctx *ctx, const char *user, size_t user_len, const char *channel,
                     size_t channel_len);
};

/* Whether the running processor provides `fn`, a member of wsgate_api added after the first ABI:
 * an older processor's table is shorter (its `size` says) or holds NULL there. The wrappers of
 * those members check it and return WSGATE_E_STATE; a handler may check it first to pick another
 * way, e.g. WSGATE_API_HAS(ctx, publish). */
#define WSGATE_API_HAS(ctx, fn)                                                                    \
  ((ctx)->api->size >= offsetof(wsgate_api, fn) + sizeof((ctx)->api->fn) && (ctx)->api->fn)

/*
 * Sends `payload` to the connection the event came from (its gateway, slot and connection id are
 * in the envelope: no Redis lookup). On on_disconnect the connection is gone: WSGATE_E_STATE.
 * `payload` is copied. binary=false sends a text frame: the payload must be valid UTF-8.
 */
static inline int wsgate_reply(wsgate_ctx *ctx, const void *payload, size_t len, bool binary) {
  return ctx->api->reply(ctx, payload, len, binary);
}

/* Sends to every live connection of `user`, on any gateway. Copied; routed after the callback.
 * Like every send to a user, it is numbered in the user's sequence and kept for clients that
 * reconnect and resume, also when the user has no connection now (docs/HANDLERS.md). */
static inline int wsgate_send_user(wsgate_ctx *ctx, const char *user, size_t user_len,
                                   const void *payload, size_t len, bool binary) {
  return ctx->api->send_user(ctx, user, user_len, payload, len, binary);
}

/*
 * Like wsgate_send_user, but if `user` has no live connection when the batch is routed, replies
 * `fallback` to the origin connection instead (e.g. "bob is offline").
 */
static inline int wsgate_send_user_or_reply(wsgate_ctx *ctx, const char *user, size_t user_len,
                                            const void *payload, size_t len, bool binary,
                                            const void *fallback, size_t fallback_len,
                                            bool fallback_binary) {
  return ctx->api->send_user_or_reply(ctx, user, user_len, payload, len, binary, fallback,
                                      fallback_len, fallback_binary);
}

/*
 * Sends one payload to many users: one outbound record per gateway that holds any of their
 * connections, listing those connections. Duplicate users are sent to once.
 */
static inline int wsgate_send_users(wsgate_ctx *ctx, const wsgate_str *users, size_t nusers,
                                    const void *payload, size_t len, bool binary) {
  return ctx->api->send_users(ctx, users, nusers, payload, len, binary);
}

/* Closes the origin connection with a WebSocket close code (1000, 1008, 3000-4999, ...) and a
 * reason of at most 123 bytes of UTF-8 (NULL for none). */
static inline int wsgate_close(wsgate_ctx *ctx, uint16_t code, const char *reason) {
  return ctx->api->close(ctx, code, reason);
}

/* Closes every live connection of `user`. */
static inline int wsgate_close_user(wsgate_ctx *ctx, const char *user, size_t user_len,
                                    uint16_t code, const char *reason) {
  return ctx->api->close_user(ctx, user, user_len, code, reason);
}

/*
 * Runs `ncmds` Redis commands as one pipeline (one round trip) on the processor's connection and
 * fills replies[0..ncmds). Returns WSGATE_OK when every reply arrived (a command the server
 * refused has type WSGATE_REDIS_ERROR), or WSGATE_E_REDIS when the connection failed: return
 * WSGATE_RETRY to have the envelope handled again once Redis is back. Replies stay valid until
 * the callback returns. Keys should start with wsgate_redis_prefix() (docs/ARCHITECTURE.md lists
 * the keys wsgate itself uses).
 */
static inline int wsgate_redis(wsgate_ctx *ctx, const wsgate_redis_cmd *cmds, size_t ncmds,
                               const wsgate_redis_reply **replies) {
  return ctx->api->redis(ctx, cmds, ncmds, replies);
}

/* The configured key prefix (--redis-prefix, default "wsgate:"). */
static inline const char *wsgate_redis_prefix(const wsgate_ctx *ctx) {
  return ctx->api->redis_prefix(ctx);
}

/*
 * Publishes `payload` to `channel` (docs/PROTOCOL.md, "Channels": 1..200 bytes of UTF-8 without
 * control characters). After the callback returns, the publication is numbered in its channel
 * (offset, epoch), stored once in the channel's history (its namespace's history_size and
 * history_ttl) and sent as ONE record to each gateway with subscribers of the channel, which
 * writes it to each of them: the cost does not grow with the number of subscribers. A channel
 * without subscribers only stores it. Copied. WSGATE_E_INVAL for a bad name or a text payload that
 * is not UTF-8; WSGATE_E_STATE from a processor older than this function.
 */
static inline int wsgate_publish(wsgate_ctx *ctx, const char *channel, size_t channel_len,
                                 const void *payload, size_t len, bool binary) {
  if (!WSGATE_API_HAS(ctx, publish))
    return WSGATE_E_STATE;
  return ctx->api->publish(ctx, channel, channel_len, payload, len, binary);
}

/*
 * The connections subscribed to `channel` now, on every gateway, with their users (a user with
 * two connections appears twice): entries[0..*n), valid until the callback returns. Only
 * namespaces with presence=true are recorded (others answer 0 entries). Entries of a gateway
 * whose lease is gone are skipped and removed. One Redis round trip, plus one per gateway not in
 * the gateway cache. WSGATE_E_REDIS when Redis is unreachable (return WSGATE_RETRY),
 * WSGATE_E_LIMIT past 64 Redis calls in one callback, WSGATE_E_STATE from an older processor.
 */
static inline int wsgate_presence(wsgate_ctx *ctx, const char *channel, size_t channel_len,
                                  const wsgate_presence_entry **entries, size_t *n) {
  if (!WSGATE_API_HAS(ctx, presence))
    return WSGATE_E_STATE;
  return ctx->api->presence(ctx, channel, channel_len, entries, n);
}

/*
 * Subscribes to `channel` the connection the event came from (`user` NULL: no Redis lookup, like
 * wsgate_reply), or every connection `user` has now, on every gateway (routed like
 * wsgate_send_user: one record per gateway). No permission check: the handler decides; the
 * gateway still applies --channel-max-per-conn and --channel-max (a refusal is logged, counted
 * and told to the client). The client is told with a frame without `id`:
 * {"wsgate":"subscribed","channel":"room:x","server":true} (docs/PROTOCOL.md, "Channels").
 * Applied after the callback returns, so a wsgate_publish() in the same callback may reach the
 * new subscriber or not; a client that wants it subscribes with `since`. A connection that
 * appears later is not subscribed: subscribe it in on_connect. WSGATE_E_INVAL for a bad name or
 * user, WSGATE_E_STATE with user NULL in on_disconnect or from an older processor.
 */
static inline int wsgate_subscribe(wsgate_ctx *ctx, const char *user, size_t user_len,
                                   const char *channel, size_t channel_len) {
  if (!WSGATE_API_HAS(ctx, subscribe))
    return WSGATE_E_STATE;
  return ctx->api->subscribe(ctx, user, user_len, channel, channel_len);
}

/* The reverse of wsgate_subscribe, told to the client as
 * {"wsgate":"unsubscribed","channel":"room:x","server":true} where it held the channel. */
static inline int wsgate_unsubscribe(wsgate_ctx *ctx, const char *user, size_t user_len,
                                     const char *channel, size_t channel_len) {
  if (!WSGATE_API_HAS(ctx, unsubscribe))
    return WSGATE_E_STATE;
  return ctx->api->unsubscribe(ctx, user, user_len, channel, channel_len);
}

/* Says why the callback is about to return WSGATE_ERROR or WSGATE_REJECT: the processor logs it
 * and writes it into the dead-letter record's headers. */
#define wsgate_set_error(ctx, ...) ((ctx)->api->set_error((ctx), __VA_ARGS__))

/* A line in the processor's log (subsystem "handler"). */
#define wsgate_log(ctx, level, ...) ((ctx)->api->log((level), __VA_ARGS__))

/* --- the handler --------------------------------------------------------------------------- */

typedef int (*wsgate_event_fn)(void *state, wsgate_ctx *ctx, const wsgate_event *ev);

typedef struct wsgate_handler {
  uint32_t abi_version; /* WSGATE_HANDLER_ABI_VERSION */
  const char *name;     /* for logs and metrics */
  /*
   * Called once before the first event with --handler-arg (NULL when not given). Sets *state,
   * which every other callback receives. Returns 0, or nonzero with a message in `err`: the
   * processor then exits with status 2. May be NULL.
   */
  int (*init)(void **state, const wsgate_api *api, const char *arg, char *err, size_t errlen);
  void (*destroy)(void *state); /* at exit; may be NULL */
  /* Each may be NULL. Return WSGATE_OK, WSGATE_ERROR, WSGATE_REJECT or WSGATE_RETRY. */
  wsgate_event_fn on_connect;
  wsgate_event_fn on_message;
  wsgate_event_fn on_disconnect;
  /*
   * Read only when abi_version is WSGATE_HANDLER_ABI_SUBSCRIBE. A client asks to subscribe to
   * ev->channel in a namespace with subscribe=handler (docs/PROTOCOL.md, "Channels"): return
   * WSGATE_OK to allow (the gateway subscribes it, with its recovery), WSGATE_REJECT with
   * wsgate_set_error(ctx, "<short reason>") to refuse (the client gets "forbidden" and the
   * reason, at most 123 bytes; nothing is dead-lettered), WSGATE_RETRY to decide later (the client
   * gets "timeout" if it takes longer than the gateway waits). WSGATE_ERROR refuses with "the
   * handler failed". NULL, or an older table: every such subscribe is refused.
   */
  wsgate_event_fn on_subscribe;
} wsgate_handler;

/* The entry point of a plugin, declared here so a plugin's definition has its prototype. The
 * processor itself never defines it: it finds it with dlsym(). */
typedef const wsgate_handler *(*wsgate_handler_entry_fn)(void);
WSGATE_HANDLER_EXPORT const wsgate_handler *wsgate_handler_v1(void);

#ifdef __cplusplus
}
#endif

#endif
