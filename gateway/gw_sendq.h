/*
 * gw_sendq: outbound messages shared without copies, and each connection's bounded send queue.
 *
 * gw_msg: one outbound payload, refcounted and read-only once created. A deliver that fans out
 * to N connections is ONE gw_msg referenced by N queues (h2o's shared buffers). GW_MSG_HEADROOM
 * bytes in front of the payload are scratch space for the WebSocket frame header (== LWS_PRE,
 * gw_server.c static-asserts it), so lws_write() sends straight from the message; each write
 * overwrites that headroom, which is fine because every write happens on the loop thread.
 * The refcount is NOT atomic: a gw_msg is created on the Kafka consumer thread with refcount 1,
 * handed to the loop thread once through the hand-off queue (whose mutex orders the memory), and
 * from then on only the loop thread refs and unrefs it.
 *
 * gw_sendq: a FIFO of gw_msg references per connection, bounded like Redis'
 * client-output-buffer-limit: over the hard limit the connection is closed at once; over the
 * soft limit for longer than soft_ms it is closed too. Sizes are accounted as payload bytes plus
 * GW_SENDQ_MSG_OVERHEAD per queued message, so a flood of empty frames is bounded as well.
 * The queue is a circular singly-linked list of small nodes (one malloc per queued message,
 * 24 bytes: next, message, tag), chosen over a ring array so an idle connection's queue costs 24
 * bytes and no allocation; an all-zero gw_sendq is a valid empty queue (lws zeroes per-session
 * memory).
 *
 * Threads: the loop thread only, except gw_msg_create() and gw_msg_payload() on the producer
 * side before the hand-off (see above).
 */
#ifndef GW_SENDQ_H
#define GW_SENDQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GW_MSG_HEADROOM 16
/* Accounted per queued message on top of its payload (node + share of the gw_msg header). */
#define GW_SENDQ_MSG_OVERHEAD 64

typedef struct gw_msg gw_msg;

/*
 * A message of `len` payload bytes copied from `payload` (payload may be NULL: the bytes are left
 * uninitialised for the caller to fill through gw_msg_payload() before sharing it). Refcount 1,
 * owned by the caller. NULL if out of memory or len is absurd (> SIZE_MAX / 2).
 */
gw_msg *gw_msg_create(const void *payload, size_t len, bool binary);
/* Adds a reference; returns m. m: borrowed. */
gw_msg *gw_msg_ref(gw_msg *m);
/* Drops a reference (taken); frees at zero after calling the release hook. NULL is a no-op. */
void gw_msg_unref(gw_msg *m);
/* The payload (borrowed, valid while a reference is held); GW_MSG_HEADROOM writable bytes
 * precede it. */
uint8_t *gw_msg_payload(gw_msg *m);
size_t gw_msg_len(const gw_msg *m);
bool gw_msg_binary(const gw_msg *m);
unsigned gw_msg_refcount(const gw_msg *m);
/* The outbound envelope's `ts` (microseconds since the epoch, when a processor built it), or 0
 * for messages the gateway made itself: the start of the "written" hop's histogram. Set before
 * m is shared. */
void gw_msg_set_ts(gw_msg *m, uint64_t ts_us);
uint64_t gw_msg_ts(const gw_msg *m);

/*
 * Calls fn(arg, m) once, just before m is freed (for memory accounting, and tests that check a
 * message is freed exactly once). fn must not ref m. Set before m is shared. arg: borrowed.
 */
void gw_msg_set_release_hook(gw_msg *m, void (*fn)(void *arg, const gw_msg *m), void *arg);

/* X-macro: name, value, message. Generates the enum, gw_sendq_strerror() and gw_sendq_err_name().
 */
#define GW_SENDQ_ERRNO_MAP(X)                                                                      \
  X(OK, 0, "success")                                                                              \
  X(OVER_HARD, -1, "send queue over its hard limit: the client does not read fast enough")         \
  X(OVER_SOFT, -2,                                                                                 \
    "send queue over its soft limit for too long: the client does not read fast "                  \
    "enough")                                                                                      \
  X(NOMEM, -3, "out of memory")

typedef enum {
#define GW_SENDQ_ERR_ENUM(name, value, msg) GW_SENDQ_##name = value,
  GW_SENDQ_ERRNO_MAP(GW_SENDQ_ERR_ENUM)
#undef GW_SENDQ_ERR_ENUM
} gw_sendq_err;

const char *gw_sendq_strerror(int err); /* static string */
const char *gw_sendq_err_name(int err); /* "GW_SENDQ_OVER_HARD" etc., static string */

typedef struct {
  uint64_t hard_bytes; /* 0 = no hard limit */
  uint64_t soft_bytes; /* 0 = no soft limit */
  uint64_t soft_ms;    /* how long the soft limit may be exceeded; 0 = not at all */
} gw_sendq_limits;

struct gw_sendq_node;
typedef struct {
  struct gw_sendq_node *tail; /* last node; tail->next is the head; NULL when empty */
  uint64_t bytes;             /* accounted bytes queued */
  uint64_t soft_over_at;      /* now_ms + 1 when the soft limit was first exceeded; 0 = under */
} gw_sendq;

/* An empty queue (same as zeroing it). q: borrowed. */
void gw_sendq_init(gw_sendq *q);

/*
 * Appends m, taking a new reference on success (the caller keeps its own). Returns GW_SENDQ_OK;
 * or GW_SENDQ_OVER_HARD / GW_SENDQ_OVER_SOFT, after which the caller closes the connection
 * (m is then NOT queued and no reference is taken); or GW_SENDQ_NOMEM. A message larger than the
 * hard limit on an empty queue is still refused: nothing bigger than the limit is ever held.
 * q, m, lim: borrowed.
 */
int gw_sendq_push(gw_sendq *q, gw_msg *m, const gw_sendq_limits *lim, uint64_t now_ms);

/* The same, with a tag stored beside the message in this queue only (the gateway keeps a resuming
 * client's per-user sequence number there: one shared gw_msg, a different q per recipient). */
int gw_sendq_push_tagged(gw_sendq *q, gw_msg *m, uint64_t tag, const gw_sendq_limits *lim,
                         uint64_t now_ms);

/* Soft-limit check without pushing (from a periodic timer, for a queue that stopped growing
 * while its client stopped reading): GW_SENDQ_OK or GW_SENDQ_OVER_SOFT. */
int gw_sendq_check(const gw_sendq *q, const gw_sendq_limits *lim, uint64_t now_ms);

/* The oldest message (borrowed, the queue keeps its reference), or NULL when empty. */
gw_msg *gw_sendq_peek(const gw_sendq *q);
/* The oldest message's tag (0 when it was pushed untagged, or when the queue is empty). */
uint64_t gw_sendq_peek_tag(const gw_sendq *q);
/* One queued message and its tag, as gw_sendq_peek_n() lists them (msg: borrowed). */
typedef struct {
  gw_msg *msg;
  uint64_t tag;
} gw_sendq_item;
/* Up to `max` of the oldest messages, oldest first, into out (the queue keeps its references).
 * Returns how many. */
size_t gw_sendq_peek_n(const gw_sendq *q, gw_sendq_item *out, size_t max);
/* Removes the oldest message and drops the queue's reference. No-op when empty. */
void gw_sendq_pop(gw_sendq *q);
/* Drops every queued message; the queue is empty afterwards. */
void gw_sendq_clear(gw_sendq *q);

static inline bool gw_sendq_empty(const gw_sendq *q) {
  return q->tail == NULL;
}
/* Accounted bytes (payloads + GW_SENDQ_MSG_OVERHEAD each). */
static inline uint64_t gw_sendq_bytes(const gw_sendq *q) {
  return q->bytes;
}

#endif
