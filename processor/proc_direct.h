/*
 * proc_direct: the processor's side of the direct reply path (docs/GATEWAY.md, "Direct
 * replies"): outbound envelopes sent over one TCP connection per gateway to the listener the
 * gateway advertises as `direct` in its Redis record, instead of being produced to its slot's
 * outbound partition. Kafka stays the path of every inbound record and the fallback of every
 * reply.
 *
 * Each frame holds a proc_consumer ticket like a produced record: the inbound offset is committed
 * only once the gateway acknowledged (cumulatively, wsg_dframe.h) every frame it caused. When a
 * gateway cannot be reached, closes, or stops acknowledging (nothing more acknowledged for
 * --direct-ack-timeout), the connection is reset, its unacknowledged frames are produced to Kafka
 * in their order, and the gateway's replies go through Kafka for --direct-backoff. One that
 * acknowledges, only slowly (overload), is waited for once --direct-max-unacked bytes wait. Order
 * per gateway: frames are written only once no record this processor produced to the gateway's
 * partition is still unacknowledged by Kafka, behind a barrier naming the highest offset Kafka
 * acknowledged there (wsg_dframe.h), which the gateway holds them behind until its consumer has
 * dispatched that far: a direct frame never overtakes a produced one.
 *
 * A gateway's `direct` address is read from Redis (one pipelined HGET per gateway, at the end of
 * the batch that first needs it, then again every --gateway-cache-ttl); replies to it go through
 * Kafka until a connection is up.
 *
 * Threads: the consumer thread only.
 */
#ifndef PROC_DIRECT_H
#define PROC_DIRECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proc_consumer.h"
#include "proc_redis.h"
#include "wsg_metrics.h"

typedef struct proc_direct proc_direct;

typedef struct {
  const uint8_t *secret; /* copied */
  size_t secret_len;
  uint64_t connect_timeout_ms;
  uint64_t ack_timeout_ms;
  uint64_t backoff_ms;
  uint64_t lookup_ttl_ms; /* how long a gateway's `direct` address is reused */
  size_t max_unacked;     /* bytes per gateway */
  proc_consumer *cons;    /* borrowed; outlives the proc_direct */
  proc_redis *router;     /* borrowed; outlives the proc_direct */
  wsg_metrics *metrics;   /* borrowed; may be NULL */
} proc_direct_options;

/* Returns 0 with *out (caller destroys), or -1 with a message. Registers itself as the
 * consumer's side (proc_consumer_set_side): acks are read wherever the consumer waits. */
int proc_direct_create(proc_direct **out, const proc_direct_options *o, char *err, size_t errlen);
/* Closes every connection; frames not acknowledged stay uncommitted (redelivered). NULL: no-op. */
void proc_direct_destroy(proc_direct *d);

/* Takes env[0..len), an output of `r` for gateway gw[0..gw_len) whose slot is `partition`, when
 * that gateway's connection is up: 1 (it is queued; proc_direct_flush writes it), 0 (produce it
 * to Kafka), or -1 (out of memory or Kafka failed: the processor must stop). With
 * --direct-max-unacked bytes waiting for that gateway's acks, first waits for room (serving acks,
 * delivery reports and the timeouts). */
int proc_direct_send(proc_direct *d, proc_record *r, const char *gw, size_t gw_len,
                     int32_t partition, const uint8_t *env, size_t len);

/* End of a batch: looks up the addresses of gateways newly seen, connects, writes what is
 * queued. Never blocks on a gateway (Redis lookups are the processor's usual blocking calls). */
void proc_direct_flush(proc_direct *d);

/* Reads acks, finishes connects, writes what waited for room, gives up on gateways past their
 * timeouts. Never blocks. True while frames wait for an ack. */
bool proc_direct_service(proc_direct *d);

extern const wsg_metric_table proc_direct_metric_table;

#endif
