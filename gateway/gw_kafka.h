/*
 * gw_kafka: the one file of the gateway that talks to librdkafka.
 *
 * Inbound: an idempotent producer to the inbound topic, key = user id. Produce is called on the
 * loop thread and never blocks; librdkafka copies the bytes. Delivery reports and errors are
 * served on the loop thread too: librdkafka signals a pipe when its main queue has events, an
 * ev_io watcher calls rd_kafka_poll(rk, 0). When librdkafka's local queue passes a high-water mark
 * (or refuses a message with QUEUE_FULL) on_pressure(true) asks the server to stop reading from
 * clients; on_pressure(false) comes once the queue has drained below the low-water mark.
 *
 * Outbound: a consumer of ONE partition of the outbound topic (the gateway's slot), assign()ed at
 * the partition's high watermark read just before (so "ready" means every envelope produced from
 * then on is seen), on a thread of its own. Each record is decoded, fenced (its `g` must be this
 * gateway's id, else it is dropped and counted: the slot changed hands), turned into a
 * gw_outbound and pushed to a bounded hand-off queue; wake() (lws_cancel_service) tells the loop
 * thread, which pops with gw_kafka_outbound_pop. When the queue is full the consumer pauses its
 * partition and waits for room instead of dropping.
 *
 * Threads: everything is called on the loop thread except wake(), which runs on the consumer
 * thread, and gw_kafka_ready()/gw_kafka_slot_assigned(), which any thread may call.
 */
#ifndef GW_KAFKA_H
#define GW_KAFKA_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gw_sendq.h"
#include "wsg_config.h"
#include "wsg_envelope.h"
#include "wsg_metrics.h"

struct ev_loop;

/* X-macro: name, value, message. Generates the enum, gw_kafka_strerror() and gw_kafka_err_name().
 */
#define GW_KAFKA_ERRNO_MAP(X)                                                                      \
  X(OK, 0, "success")                                                                              \
  X(FULL, -1, "the producer's local queue is full: retry once it drains (on_pressure(false))")     \
  X(TOO_LARGE, -2, "the message is larger than the producer's message.max.bytes")                  \
  X(FAILED, -3, "librdkafka refused the message")                                                  \
  X(CONFIG, -4, "invalid Kafka configuration")                                                     \
  X(BROKER, -5, "the Kafka cluster did not answer in time")                                        \
  X(TOPIC, -6, "a topic is missing or has the wrong partition count")                              \
  X(THREAD, -7, "could not start the outbound consumer thread")                                    \
  X(NOMEM, -8, "out of memory")                                                                    \
  X(STOPPED, -9, "stopped by a signal during the wait")

typedef enum {
#define GW_KAFKA_ERR_ENUM(name, value, msg) GW_KAFKA_##name = value,
  GW_KAFKA_ERRNO_MAP(GW_KAFKA_ERR_ENUM)
#undef GW_KAFKA_ERR_ENUM
} gw_kafka_err;

const char *gw_kafka_strerror(int err); /* static string */
const char *gw_kafka_err_name(int err); /* static string */

/* Who an outbound envelope is for. */
typedef enum {
  GW_TARGET_CONN,    /* one connection: `conn` */
  GW_TARGET_CONNS,   /* a list of connections on this gateway: `conns[0..nconns)` */
  GW_TARGET_USER,    /* every connection of `user` on this gateway */
  GW_TARGET_CHANNEL, /* PUBLISH: every local subscriber of `user` (the channel's name) */
} gw_target;

/*
 * One envelope handed from the consumer thread to the loop thread. Owns what it points to;
 * release with gw_outbound_finish() after use.
 */
typedef struct {
  wsg_env_kind
      kind; /* DELIVER, CLOSE, PUBLISH, SUBSCRIBE, UNSUBSCRIBE or JOINLEAVE (`msg` its batch) */
  gw_target target;
  gw_msg *msg; /* DELIVER: the payload, one reference owned by this item */
  uint64_t conn;
  uint64_t *conns; /* GW_TARGET_CONNS: heap array */
  uint32_t nconns;
  uint16_t close_code; /* CLOSE: 0 when the envelope gave none */
  uint8_t reason_len;  /* CLOSE */
  char *user; /* GW_TARGET_USER; the channel of PUBLISH, (UN)SUBSCRIBE: heap, NUL-terminated */
  size_t user_len;
  char *reason;   /* CLOSE: heap, NUL-terminated, NULL when none */
  uint64_t ts_us; /* the envelope's `ts` (0 if absent): end-to-end latency */
  uint64_t q;     /* DELIVER: the envelope's `q` (0 if absent): the user's delivery sequence */
  uint64_t *qs;   /* DELIVER to GW_TARGET_CONNS with `qs`: heap array, qs[i] for conns[i] */
  uint64_t ch_offset, ch_epoch; /* PUBLISH: `co`, `ce`; `msg` is the raw payload */
  /* SUBSCRIBE answering a client's subscribe (subscribe=handler): `rq`, and whether it was
   * refused (`rf`, then in `reason`) */
  uint64_t request;
  bool has_request, refused;
  /* Where it was read (a direct barrier waits for it, gw_direct.c); partition -1: not Kafka's. */
  int32_t partition;
  int64_t offset;
} gw_outbound;

void gw_outbound_finish(gw_outbound *o); /* frees the item's contents; o itself is borrowed */

/* What gw_outbound_decode() made of a record (gw_outdecode.c). */
typedef enum {
  GW_OUTDEC_OK,       /* *it is ready to hand off (caller finishes it) */
  GW_OUTDEC_INVALID,  /* not a valid envelope: *env_rc and *field say why */
  GW_OUTDEC_KIND,     /* valid, but not a kind for gateways (env->kind) */
  GW_OUTDEC_FENCED,   /* addressed to another gateway (env->gateway) */
  GW_OUTDEC_NOT_UTF8, /* a text deliver whose payload is not UTF-8 */
  GW_OUTDEC_NOMEM,
} gw_outdec_result;

/*
 * Decodes one outbound record rec[0..len) (borrowed) for the gateway gw_id[0..gw_id_len). On
 * GW_OUTDEC_OK *it owns copies of everything it needs (release with gw_outbound_finish); on any
 * other result *it is empty. env receives the decoded envelope (pointing into rec) for the
 * caller's log line. Pure: no logging, no metrics; the fuzz target calls it as the consumer does.
 */
gw_outdec_result gw_outbound_decode(const void *rec, size_t len, const char *gw_id,
                                    size_t gw_id_len, gw_outbound *it, wsg_envelope *env,
                                    int *env_rc, const char **field);

typedef struct {
  const char *brokers;     /* borrowed during create */
  const wsg_kvlist *props; /* the user's -X overrides, borrowed during create; may be NULL */
  /* The inbound producer's linger.ms unless -X sets it; NULL: the shared default (5). Direct
   * replies pass "1": the produce is then the one Kafka hop of a round trip (GATEWAY.md). */
  const char *producer_linger_ms;
  const char *inbound_topic;     /* copied */
  const char *outbound_topic;    /* copied */
  const char *gw_id;             /* copied: the fencing id */
  size_t outbound_queue;         /* capacity of the hand-off queue in envelopes */
  uint64_t outbound_queue_bytes; /* and in payload bytes */
  struct ev_loop *loop;          /* borrowed; the loop thread's loop */
  wsg_metrics *metrics;          /* borrowed; may be NULL */
  /* Loop thread: a frame produced for connection conn_id failed for good (after librdkafka's
   * retries, message.timeout.ms); errstr is librdkafka's message, valid for the call. */
  void (*on_delivery_failed)(void *arg, uint64_t conn_id, const char *errstr);
  /* Loop thread: true when the server must stop reading from clients, false when it may resume. */
  void (*on_pressure)(void *arg, bool paused);
  /* CONSUMER THREAD: gw_outbound items are waiting; must only call lws_cancel_service(). */
  void (*wake)(void *arg);
  /* With outbound_on_loop: the loop thread reads the outbound records itself (gw_kafka_ev.c)
   * instead of the consumer thread, and calls drain (loop thread) to dispatch what it queued. */
  bool outbound_on_loop;
  void (*drain)(void *arg);
  void *arg; /* borrowed, passed to the callbacks */
} gw_kafka_options;

typedef struct gw_kafka gw_kafka;

/*
 * Creates the producer and the (idle) outbound consumer and starts the consumer thread; starts no
 * network wait. Returns GW_KAFKA_OK with *out set (caller destroys) or a negative gw_kafka_err with
 * a message in err. o: borrowed.
 */
int gw_kafka_create(gw_kafka **out, const gw_kafka_options *o, char *err, size_t errlen);

/*
 * Blocking, for start-up before the loop runs: waits up to timeout_ms for the cluster's metadata
 * and checks that the inbound topic exists; returns the outbound topic's partition count (> 0), or
 * a negative gw_kafka_err with a message in err: GW_KAFKA_STOPPED as soon as *stop is set (a
 * signal handler's flag; may be NULL).
 */
int gw_kafka_check_topics(gw_kafka *k, int timeout_ms, const volatile sig_atomic_t *stop, char *err,
                          size_t errlen);

/*
 * Stops the consumer thread and joins it. After this no wake() is called: do it before
 * lws_context_destroy(). Idempotent.
 */
void gw_kafka_stop_consumer(gw_kafka *k);

/* Flushes nothing, drops what is still queued (drain flushed what it could before) and frees.
 * Stops the consumer first if still running. NULL is a no-op. */
void gw_kafka_destroy(gw_kafka *k);

/*
 * Produces value[0..len) with key[0..keylen) to the inbound topic (librdkafka copies both).
 * conn_id comes back in on_delivery_failed. Returns GW_KAFKA_OK; GW_KAFKA_FULL when the local
 * queue is full (nothing was queued: keep the bytes and retry after on_pressure(false));
 * GW_KAFKA_TOO_LARGE; or GW_KAFKA_FAILED. key, value: borrowed.
 */
int gw_kafka_produce(gw_kafka *k, const char *key, size_t keylen, const void *value, size_t len,
                     uint64_t conn_id);

/* True while the server should not read from clients (see on_pressure). */
bool gw_kafka_pressure(const gw_kafka *k);

/* Messages produced but not yet acknowledged or failed (for the drain's flush). */
uint64_t gw_kafka_unacked(const gw_kafka *k);

/* Serves delivery reports now (the drain's flush timer calls it). */
void gw_kafka_poll(gw_kafka *k);

/*
 * The slot this gateway holds (-1: none). The consumer thread re-assigns to that partition at its
 * current end; until it has, gw_kafka_slot_assigned() is false.
 */
void gw_kafka_set_slot(gw_kafka *k, int32_t slot);

/* Any thread: the producer has seen a broker since its last all-brokers-down error. */
bool gw_kafka_ready(const gw_kafka *k, char *why, size_t whylen);

/* Any thread: the consumer reads the partition of the slot last given to gw_kafka_set_slot. */
bool gw_kafka_slot_assigned(const gw_kafka *k);

/*
 * Loop thread: the offset up to which the outbound partition *slot (-1: none assigned) has been
 * dispatched: every record at or below it was handed to the loop (and, the loop being the caller,
 * dispatched) or dropped; the start is the end offset it was assigned at, minus 1.
 */
int64_t gw_kafka_dispatched(gw_kafka *k, int32_t *slot);

/*
 * Moves up to `max` items from the hand-off queue into items[] (the caller owns them then: call
 * gw_outbound_finish on each). Returns the number moved; 0 when empty.
 */
size_t gw_kafka_outbound_pop(gw_kafka *k, gw_outbound *items, size_t max);

#endif
