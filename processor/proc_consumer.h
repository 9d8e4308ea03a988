/*
 * proc_consumer: the one module of the processor that talks to librdkafka (proc_consumer.c, and
 * proc_group.c for the group's offsets, commits and rebalances): the consumer group on
 * the inbound topic, the idempotent producer to the outbound (and dead-letter) topic, and the
 * bookkeeping that ties them together so an inbound offset is committed only after every record
 * it caused is acknowledged by Kafka.
 *
 * Per assigned partition a proc_offsets ring tracks the inbound records being handled and their
 * outbound records in flight. Delivery reports (polled on the consumer thread) complete them;
 * completed offsets are stored (rd_kafka_offsets_store) and committed on a timer with async
 * commits, whose latency is measured. When the group takes partitions away (cooperative
 * incremental rebalance), their in-flight records are awaited for --revoke-timeout and what
 * completed is committed synchronously before the partitions are released; lost partitions are
 * released without a commit. A record that Kafka finally refuses to take (after librdkafka's
 * retries) stops the processor: its inbound offset is never committed, so the group redelivers it.
 *
 * Use: proc_consumer_poll() a batch; for each record proc_consumer_begin() (false: its partition
 * was taken away meanwhile, skip it), produce its outputs with proc_consumer_produce(), then
 * proc_consumer_end(); call proc_consumer_service() between batches.
 *
 * Threads: the consumer thread for everything, except proc_consumer_ready() (any thread).
 */
#ifndef PROC_CONSUMER_H
#define PROC_CONSUMER_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wsg_config.h"
#include "wsg_metrics.h"

typedef struct proc_consumer proc_consumer;

typedef struct {
  const char *brokers;
  const wsg_kvlist *props; /* -X overrides for both clients; may be NULL */
  const char *group_id;
  const char *group_instance_id; /* NULL: dynamic membership */
  const char *inbound_topic;
  const char *outbound_topic;
  const char *dead_letter_topic; /* NULL: none */
  const char *commands_topic;    /* NULL or "": none; read in the same group as inbound */
  uint64_t commit_interval_ms;
  uint64_t revoke_timeout_ms;
  size_t max_in_flight;              /* inbound records not yet complete, across partitions */
  int topic_timeout_ms;              /* for the start-up metadata checks */
  const volatile sig_atomic_t *stop; /* cuts those checks short (a signal handler's flag); may be
                                        NULL */
  wsg_metrics *metrics;              /* borrowed; may be NULL */
} proc_consumer_options;

/*
 * Creates both clients, checks that the outbound (and dead-letter) topic exists and subscribes to
 * the inbound topic. Returns 0, or -1 with a message (e.g. the outbound topic is missing).
 */
int proc_consumer_create(proc_consumer **out, const proc_consumer_options *o, char *err,
                         size_t errlen);
/* Destroys both clients without committing (use proc_consumer_close first). NULL is a no-op. */
void proc_consumer_destroy(proc_consumer *c);

/* Partitions of the outbound topic, read at start: the number of gateway slots. */
int32_t proc_consumer_outbound_partitions(const proc_consumer *c);
/* librdkafka's message.max.bytes of the producer: the largest outbound record. */
size_t proc_consumer_max_record(const proc_consumer *c);

/* One inbound record. The bytes are borrowed until proc_consumer_end(). */
typedef struct {
  const uint8_t *value;
  size_t len;
  const void *key;
  size_t key_len;
  int32_t partition;
  int64_t offset;
  /* When its handler started (microseconds since the epoch; 0: not handled), set by the caller:
   * the start of the outbound-acknowledged hop's histogram. */
  uint64_t handler_us;
  bool command; /* from the commands topic: a wsg_command, not an envelope */
  /* private */
  void *rkm;
  void *part;
  uint32_t epoch;
  uint64_t seq;
  bool begun;
} proc_record;

/*
 * Waits up to `timeout_ms` for the first record, then takes what is already there, up to `max`.
 * Rebalances are handled inside. First waits (polling delivery reports) while the records in
 * flight would exceed --max-in-flight. Returns the number of records (0 on timeout, or when
 * `stop` became true while waiting).
 */
size_t proc_consumer_poll(proc_consumer *c, proc_record *recs, size_t max, int timeout_ms,
                          const volatile sig_atomic_t *stop);

/* Starts tracking `r`. False when its partition is no longer ours (skip the record). */
bool proc_consumer_begin(proc_consumer *c, proc_record *r);

/* Produces one outbound record for `r` to `partition` of the outbound topic (copied). Waits
 * while librdkafka's queue is full. Returns 0, or -1 if the record cannot be produced (logged,
 * counted; the processor must stop). */
int proc_consumer_produce(proc_consumer *c, proc_record *r, int32_t partition, const void *buf,
                          size_t len);

/* --- the direct reply path (proc_direct) ----------------------------------------------------- */

/* One output of a record that completes later, like a produced record's delivery report. */
typedef struct proc_ticket proc_ticket;

/* Takes a ticket for one more output of `r` bound for `partition` of the outbound topic, sent
 * another way than Kafka: `r`'s offset is not committed before proc_consumer_release() or the
 * ticket's produce (proc_consumer_produce_held) is acknowledged. NULL when out of memory (the
 * consumer failed). */
proc_ticket *proc_consumer_hold(proc_consumer *c, proc_record *r, int32_t partition);
/* The output was delivered: completes the ticket (and frees it). */
void proc_consumer_release(proc_consumer *c, proc_ticket *t);
/* The output must go through Kafka after all: produces buf[0..len) to the ticket's partition;
 * the ticket passes to the delivery report. Returns 0, or -1 (the processor must stop). */
int proc_consumer_produce_held(proc_consumer *c, proc_ticket *t, const void *buf, size_t len);
/* Records produced to outbound `partition` whose delivery has not been reported yet. */
uint32_t proc_consumer_kafka_inflight(const proc_consumer *c, int32_t partition);
/* The highest offset Kafka acknowledged for a record this processor produced to outbound
 * `partition` (-1: none yet): a direct barrier's offset (wsg_dframe.h). */
int64_t proc_consumer_kafka_acked(const proc_consumer *c, int32_t partition);
/* Served wherever the consumer waits for delivery reports, without blocking; returns true while
 * outputs are waiting for it (the wait then polls librdkafka in short slices). */
typedef bool (*proc_consumer_side_fn)(void *arg);
void proc_consumer_set_side(proc_consumer *c, proc_consumer_side_fn fn, void *arg);
/* One slice of waiting for the side (outputs it holds wait for room): serves it and delivery
 * reports, for at most 10 ms. False once the consumer failed (the processor must stop). */
bool proc_consumer_wait_side(proc_consumer *c);

/* Produces `r` unchanged to the dead-letter topic with headers wsgate-error-kind, wsgate-error,
 * wsgate-source-topic, -partition and -offset. No-op (0) without a dead-letter topic. */
int proc_consumer_dead_letter(proc_consumer *c, proc_record *r, const char *kind,
                              const char *reason);
bool proc_consumer_has_dead_letter(const proc_consumer *c);

/* Done with `r` (its outputs, if any, are in flight): releases its guard and its bytes. */
void proc_consumer_end(proc_consumer *c, proc_record *r);

/* Gives up on `r` without completing it (shutdown in the middle of a retry, a failed produce):
 * frees its bytes but keeps its guard, so its offset is never committed and the group redelivers
 * it. */
void proc_consumer_abandon(proc_consumer *c, proc_record *r);

/* Serves delivery reports, stores completed offsets, commits on the timer, refreshes the lag
 * gauges. Call between batches, and while waiting. */
void proc_consumer_service(proc_consumer *c);

/* True once librdkafka reported a failure the processor cannot recover from by itself (a record
 * Kafka refused for good, a fatal idempotent-producer error); `why` says which. */
bool proc_consumer_failed(proc_consumer *c, char *why, size_t whylen);

/* Readiness: joined the group, a broker reachable, not failed. Any thread. */
int proc_consumer_ready(proc_consumer *c, char *why, size_t whylen);

/*
 * Shutdown: waits up to `timeout_ms` for every record in flight, commits what completed
 * synchronously, closes the consumer (leaving the group), then flushes the producer. Returns 0, or
 * -1 if something was left uncommitted (it will be redelivered).
 */
int proc_consumer_close(proc_consumer *c, uint64_t timeout_ms);

#endif
