/*
 * proc_publish: a batch's publications to channels (docs/ARCHITECTURE.md, "Channels"): each is
 * numbered and stored ONCE in its channel's history by one script (WSG_LUA_CHANNEL_PUBLISH, one
 * round trip per publication, pipelined per batch), which also returns the channel's gateways;
 * gateways whose gw:<id> record is gone are removed from the set (SREM) and skipped; then one
 * `publish` envelope per live gateway (proc_publish_encode). Nothing here depends on how many
 * subscribers a channel has.
 *
 * The entry point is proc_publish_store(): plain data in, plain data out, so the handler path
 * (proc_outbox) and any other caller (a command executor) share it.
 *
 * Threads: the consumer thread (it blocks on Redis).
 */
#ifndef PROC_PUBLISH_H
#define PROC_PUBLISH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proc_redis.h"
#include "wsg_chns.h"
#include "wsg_envelope.h"
#include "wsg_metrics.h"

/* One publication. The caller fills the inputs; proc_publish_store() the outputs. */
typedef struct {
  const char *channel; /* a valid name (wsg_channel_name_valid), borrowed */
  size_t channel_len;
  const uint8_t *data; /* borrowed */
  size_t len;
  bool binary;
  /* A batch of join/leave events (WSG_ENV_JOINLEAVE): addressed to the channel's gateways like a
   * publication, but neither numbered nor stored (offset and epoch come back 1, 1). */
  bool joinleave;
  /* out: 0 when the publication could not be stored (counted, logged) */
  uint64_t offset, epoch;
  const proc_route_gw *gws; /* the live gateways with subscribers; valid until the next store */
  uint32_t ngws;
} proc_pub;

typedef struct proc_publisher proc_publisher;

/* r, ns: borrowed for the publisher's life (ns may be NULL: default options). metrics: may be
 * NULL. NULL when out of memory. */
proc_publisher *proc_publisher_create(proc_redis *r, const wsg_chns *ns, wsg_metrics *metrics);
void proc_publisher_destroy(proc_publisher *pp); /* NULL is a no-op */

/*
 * Numbers and stores p[0..n) in order, and fills their outputs. Returns 0, or -1 with a message
 * when Redis failed (retry the batch: a publication stored before the failure is stored again,
 * under a new offset — at least once, like everything else).
 */
int proc_publish_store(proc_publisher *pp, proc_pub *p, size_t n, uint64_t now_ms, char *err,
                       size_t errlen);

/* The `publish` (or `joinleave`) envelope of p for gateway g into out. WSG_ENV_OK or a
 * wsg_env_err. */
int proc_publish_encode(const proc_pub *p, const proc_route_gw *g, uint64_t now_us, wsg_buf *out);

#endif
