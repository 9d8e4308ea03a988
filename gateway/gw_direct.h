/*
 * gw_direct: the direct reply listener (docs/GATEWAY.md, "Direct replies"). Processors started
 * with --direct-secret-file connect here and send the outbound envelopes of this gateway's
 * connections over plain TCP instead of producing them to the slot's outbound partition; Kafka
 * stays the path of every inbound frame and the fallback of every reply.
 *
 * The wire format is wsg_dframe.h: a hello with the shared secret (compared in constant time),
 * then data frames (u64 sequence + one outbound record's value) decoded by the same
 * gw_outbound_decode() as a Kafka record (fencing on `g` included) and handed to `dispatch`, the
 * same code a Kafka record goes through; one cumulative ack per read. Bounded: at most
 * --direct-max-peers connections, a read buffer of at most one frame (WSG_DFRAME_MAX) each, a
 * hello within HELLO_TIMEOUT. Bad input closes the peer with a rate-limited log line and a
 * counter, never more.
 *
 * A barrier (wsg_dframe.h, version 2) holds a peer: nothing after it is read or dispatched
 * (ev_io_stop: the processor's socket fills, natural backpressure) until this gateway's outbound
 * consumer has dispatched the barrier's partition up to its offset (checked after every loop
 * iteration while a peer is held, and by the sweep), so a direct reply never overtakes a reply
 * Kafka already acknowledged. A barrier for a partition this gateway does not read (its slot
 * changed) can never pass: the peer is closed, its frames go through Kafka to that partition,
 * where the gateway holding that slot fences them, as the Kafka path would.
 *
 * A peer whose connection was reset (the processor gave up on it and re-produced its unacked
 * frames to Kafka) is closed before anything more is read from it: those frames arrive once,
 * through Kafka, and not again behind newer ones.
 *
 * Threads: the loop thread only.
 */
#ifndef GW_DIRECT_H
#define GW_DIRECT_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

#include "gw_kafka.h"
#include "wsg_metrics.h"

typedef struct gw_direct gw_direct;

/* Loop thread: one decoded outbound envelope (borrowed for the call; the caller finishes it). */
typedef void (*gw_direct_dispatch_fn)(void *arg, gw_outbound *it);

typedef struct {
  const char *listen;    /* "host:port" (borrowed during create); port 0: any free port */
  const uint8_t *secret; /* copied */
  size_t secret_len;
  const char *gw_id; /* copied: envelopes for another gateway are fenced */
  size_t max_peers;
  struct ev_loop *loop; /* borrowed */
  wsg_metrics *metrics; /* borrowed; may be NULL */
  gw_direct_dispatch_fn dispatch;
  /* Loop thread: the offset up to which the outbound partition *slot has been dispatched
   * (gw_kafka_dispatched); NULL: barriers never pass. */
  int64_t (*dispatched)(void *arg, int32_t *slot);
  void *arg;
} gw_direct_options;

/* Binds and listens. Returns 0 with *out set (caller destroys), or -1 with a message. */
int gw_direct_create(gw_direct **out, const gw_direct_options *o, char *err, size_t errlen);
/* Closes the listener and every peer. NULL is a no-op. */
void gw_direct_destroy(gw_direct *d);
/* The port bound (tests ask for port 0). */
int gw_direct_port(const gw_direct *d);

extern const wsg_metric_table gw_direct_metric_table;

#endif
