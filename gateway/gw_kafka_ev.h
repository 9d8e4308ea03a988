/*
 * gw_kafka_ev: a librdkafka queue served on the libev loop, the way hiredis' adapters/libev.h
 * serves a connection: librdkafka writes a byte to a pipe when the queue receives an event
 * (rd_kafka_queue_io_event_enable), an ev_io on the pipe calls `serve` on the loop thread, and a
 * slow timer calls it too, should a write be lost (librdkafka skips it when the pipe is full).
 * When `serve` says more is waiting (it stopped at its budget), it is called again on the next
 * loop iteration, after the other events of this one.
 *
 * Used by gw_kafka for the producer's main queue (delivery reports), and for --outbound-consume
 * loop (docs/GATEWAY.md, latency knobs): the outbound records reach the loop without the consumer
 * thread's poll and hand-off in between.
 *
 * Threads: the loop thread only (librdkafka's threads only write to the pipe).
 */
#ifndef GW_KAFKA_EV_H
#define GW_KAFKA_EV_H

#include <stdbool.h>
#include <stddef.h>

struct ev_loop;
typedef struct rd_kafka_queue_s rd_kafka_queue_t;

typedef struct gw_kafka_ev gw_kafka_ev;

/* Loop thread: serve what the queue holds, within a budget of the callee's choosing; return true
 * when more may be waiting (called again next iteration), false when the queue looked empty. */
typedef bool (*gw_kafka_ev_serve_fn)(void *arg);

/*
 * Starts serving `q` (taken: destroyed by gw_kafka_ev_destroy, also on failure) on `loop`
 * (borrowed). Returns NULL with err set on failure (no pipe).
 */
gw_kafka_ev *gw_kafka_ev_create(struct ev_loop *loop, rd_kafka_queue_t *q,
                                gw_kafka_ev_serve_fn serve, void *arg, char *err, size_t errlen);

/* Stops calling `serve` (the watchers stop; the queue keeps its events). Idempotent; NULL ok. */
void gw_kafka_ev_stop(gw_kafka_ev *e);

/* Stops, detaches the pipe from the queue and destroys the queue (librdkafka requires that before
 * rd_kafka_consumer_close on the consumer queue), closes the pipe, frees. NULL is a no-op. */
void gw_kafka_ev_destroy(gw_kafka_ev *e);

#endif
