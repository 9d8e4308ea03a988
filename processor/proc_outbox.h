/*
 * proc_outbox: what the handlers of one batch asked for, kept until the batch is routed and turned
 * into outbound envelopes.
 *
 * Handlers' actions are recorded, not executed: sends to users need Redis, and asking Redis once
 * for the whole batch (every distinct user in one pipeline) is what makes a processor fast. The
 * outbox copies payloads and user ids into one growing byte area, keeps the set of distinct users
 * of the batch, and after proc_redis_resolve() emits, in the order the actions were taken:
 *   - a reply or a close to the origin connection: one envelope (routed from the inbound envelope);
 *   - a send to users: ONE deliver envelope per gateway holding any of their connections, listing
 *     those connections (`c` for one, `cs` for more; split only when the list would not fit a Kafka
 *     record), addressed to the gateway's slot partition with `g` = that gateway (fencing), with
 *     each connection's user's q (`q`, or `qs` beside `cs`) when proc_redis_append() numbered
 * them;
 *   - a close of a user's connections: one close envelope per connection;
 *   - a publication to a channel: one `publish` envelope per gateway with subscribers
 *     (proc_publish);
 *   - a subscription made or ended by the handler: one `subscribe` / `unsubscribe` envelope to the
 *     origin connection, or per gateway holding the users' connections, like a send.
 *
 * Memory is kept across batches (reset, not freed), so a steady stream allocates nothing.
 *
 * Threads: the consumer thread.
 */
#ifndef PROC_OUTBOX_H
#define PROC_OUTBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proc_publish.h"
#include "proc_redis.h"
#include "wsg_envelope.h"

typedef struct proc_outbox proc_outbox;

proc_outbox *proc_outbox_create(void);    /* NULL when out of memory; caller destroys */
void proc_outbox_destroy(proc_outbox *b); /* NULL is a no-op */
void proc_outbox_reset(proc_outbox *b);

/* Outputs and bytes recorded since the last reset: the processor routes early past a bound. */
size_t proc_outbox_count(const proc_outbox *b);
size_t proc_outbox_bytes(const proc_outbox *b);

/* A point to roll back to when a handler asks for a retry (its actions are forgotten). */
typedef struct {
  size_t outs, bytes, urefs, users, appends, pubs;
} proc_outbox_mark;

proc_outbox_mark proc_outbox_get_mark(const proc_outbox *b);
void proc_outbox_rollback(proc_outbox *b, proc_outbox_mark m);

/* The origin connection of a reply or close: the inbound envelope's g, s, c. Borrowed. */
typedef struct {
  const char *gateway;
  size_t gateway_len;
  uint32_t slot;
  uint64_t conn;
} proc_origin;

/* Each returns 0, or -1 when out of memory. Arguments were validated by the caller; everything is
 * copied. `rec` is the index of the inbound record in the batch. */
int proc_outbox_reply(proc_outbox *b, uint32_t rec, const proc_origin *o, const void *data,
                      size_t len, bool binary);
int proc_outbox_close(proc_outbox *b, uint32_t rec, const proc_origin *o, uint16_t code,
                      const char *reason, size_t reason_len);
/* Sends to every connection of users[0..n); duplicates are ignored. With `fallback` (n must be 1),
 * a user without any live connection gets `fallback` replied to `o` instead. */
int proc_outbox_send(proc_outbox *b, uint32_t rec, const proc_strref *users, size_t n,
                     const void *data, size_t len, bool binary, const proc_origin *o,
                     const void *fallback, size_t fallback_len, bool fallback_binary);
int proc_outbox_close_users(proc_outbox *b, uint32_t rec, const proc_strref *users, size_t n,
                            uint16_t code, const char *reason, size_t reason_len);

/* A publication to a channel (a valid name: the caller checked it); proc_publish numbers and
 * stores it before emitting (proc_outbox_pubs), then one `publish` per gateway goes out in the
 * order actions were taken. */
int proc_outbox_publish(proc_outbox *b, uint32_t rec, const char *channel, size_t channel_len,
                        const void *data, size_t len, bool binary);
/* A gateway's batch of join/leave events for channel (WSG_ENV_JOINLEAVE): one `joinleave` record
 * with the same bytes to each gateway with subscribers; nothing stored. 0, or -1 out of memory. */
int proc_outbox_joinleave(proc_outbox *b, uint32_t rec, const char *channel, size_t channel_len,
                          const void *data, size_t len);

/* Subscribes (or with subscribe=false unsubscribes) to a channel (a valid name: the caller checked
 * it) the origin connection `o`, or when `o` is NULL every connection of users[0..n) (duplicates
 * ignored): one `subscribe` / `unsubscribe` envelope per gateway, like a send. */
int proc_outbox_chsub(proc_outbox *b, uint32_t rec, const proc_origin *o, const proc_strref *users,
                      size_t n, const char *channel, size_t channel_len, bool subscribe);
/* The answer to a subscribe_request: a `subscribe` to the origin connection with the gateway's
 * token `rq`, and `refusal` (NULL: allowed; at most WSG_MAX_REASON_LEN bytes of UTF-8). */
int proc_outbox_chsub_answer(proc_outbox *b, uint32_t rec, const proc_origin *o,
                             const char *channel, size_t channel_len, uint64_t rq,
                             const char *refusal, size_t refusal_len);

/* The batch's publications in order, for proc_publish_store(), whose outputs proc_outbox_emit()
 * then uses. Valid until the next change. NULL with *n 0 when there is none. Not calling it
 * (or not storing them) sends none of them. */
proc_pub *proc_outbox_pubs(proc_outbox *b, size_t *n);

/* The distinct users the batch sends to, for proc_redis_resolve(). Valid until the next change. */
const proc_strref *proc_outbox_users(proc_outbox *b, size_t *n);

/*
 * Every delivery to a user the batch recorded, in order (one per user of each send), for
 * proc_redis_append(), which fills in their q; `user` indexes proc_outbox_users(). Valid, and
 * used by proc_outbox_emit() (`q` of the envelopes, `qs` of a batched one), until the next
 * change. NULL with *n 0 when there is none. Not calling it leaves every q out.
 */
proc_append *proc_outbox_appends(proc_outbox *b, size_t *n);

/* Called once per envelope for gateway gw[0..gw_len) (borrowed for the call), whose slot is
 * `partition`; returns 0, or nonzero to stop emitting (the error is returned). */
typedef int (*proc_emit_fn)(void *arg, uint32_t rec, const char *gw, size_t gw_len,
                            int32_t partition, const uint8_t *env, size_t len);

typedef struct {
  uint64_t envelopes;     /* produced */
  uint64_t deliveries;    /* connections addressed by those envelopes */
  uint64_t undeliverable; /* users without any live connection (fallback replies included) */
  uint64_t fallbacks;     /* fallback replies sent */
  uint64_t invalid;       /* actions dropped: the envelope could not be encoded (logged) */
} proc_emit_stats;

/*
 * Encodes every recorded action into envelopes and calls `emit` for each, in order. `routes` is
 * the result of resolving proc_outbox_users() (may be NULL when the batch sent to no user).
 * `max_record` bounds an envelope's size (the producer's message.max.bytes); `now_us` is the `ts`.
 * Returns 0, or the first nonzero value `emit` returned.
 */
int proc_outbox_emit(proc_outbox *b, const proc_routes *routes, size_t max_record, uint64_t now_us,
                     proc_emit_fn emit, void *arg, proc_emit_stats *stats);

#endif
