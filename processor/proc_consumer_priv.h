/*
 * proc_consumer_priv.h: the state proc_consumer.c and proc_group.c share, and no one else (not an
 * API: proc_consumer.h is). Cross-file internals are named proc_group_* (proc_group.c's) or
 * proc_consumer__* (proc_consumer.c's).
 *
 * Threads: the consumer thread, except the atomics proc_consumer_ready() reads.
 */
#ifndef PROC_CONSUMER_PRIV_H
#define PROC_CONSUMER_PRIV_H

#include <librdkafka/rdkafka.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "proc_consumer.h"
#include "proc_offsets.h"
#include "wsg_log.h"
#include "wsg_metrics.h"

/* How long one wait for delivery reports blocks before conditions are checked again. */
#define POLL_SLICE_MS     10
#define TICKETS_PER_BLOCK 1024

/* Where this member stands in a rebalance it will rejoin for (see the top of proc_group.c). */
typedef enum {
  REJOIN_NONE,         /* no rejoin of ours outstanding: commits may go out */
  REJOIN_AFTER_ASSIGN, /* cooperative revoke done: librdkafka rejoins after the next assign */
  REJOIN_PENDING,      /* our JoinGroup is (about to be) outstanding: no commit until assigned */
} rejoin_state;

typedef struct part {
  int32_t id;
  const char *topic; /* the consumer's inbound or commands (borrowed from it) */
  bool commands;     /* a partition of the commands topic */
  bool assigned;
  bool dirty;     /* committable advanced since the last store */
  uint32_t epoch; /* bumped on every assign and revoke: stale records and reports are ignored */
  proc_offsets *offs;
  uint32_t inflight; /* produced, delivery not reported yet (any epoch) */
  int64_t stored;    /* last offset given to rd_kafka_offsets_store, -1 */
  int64_t committed; /* last offset the broker acknowledged, -1 */
  int64_t next;      /* next offset to handle, -1 until the first record */
  int64_t resume;    /* completed when last released and not committed, -1 */
  wsg_gauge *lag;
} part;

/* The opaque of one produced record (or of a frame on the direct path, proc_direct): which input
 * entry it completes. */
typedef struct proc_ticket {
  part *p;
  uint32_t epoch;
  uint64_t seq;
  uint64_t handler_us; /* the input's handler start for hop 3, or 0 (dead letters) */
  int32_t out_part; /* the outbound partition it is (or will be) produced to; -1: another topic */
  bool kafka;       /* produced (counted in out_inflight), not held by the direct path */
  struct proc_ticket *next;
} ticket;

typedef struct ticket_block {
  struct ticket_block *next;
  ticket t[TICKETS_PER_BLOCK];
} ticket_block;

struct proc_consumer {
  rd_kafka_t *cons;
  rd_kafka_t *prod;
  rd_kafka_topic_t *out_topic;
  char *inbound;
  char *commands; /* NULL: no commands topic */
  char *outbound;
  char *dlq;
  int32_t out_partitions;
  size_t max_record;
  size_t max_in_flight;
  uint64_t commit_interval_ms;
  uint64_t revoke_timeout_ms;

  part **parts; /* by partition id */
  size_t nparts;
  uint64_t inflight_total;
  uint32_t *out_inflight;     /* by outbound partition: records produced, not yet reported */
  int64_t *out_acked;         /* by outbound partition: highest offset acknowledged, -1: none */
  proc_consumer_side_fn side; /* the direct path's acks (proc_direct), NULL: none */
  void *side_arg;
  bool in_side;

  ticket *free_tickets;
  ticket_block *blocks;

  uint64_t next_commit_ms;
  bool commit_pending; /* an async commit is on its way */
  rejoin_state rejoin;
  uint64_t rejoin_since_ms;
  uint64_t rebalance_timeout_ms; /* max.poll.interval.ms of the consumer */
  uint64_t commits_held;         /* timer commits skipped in the current rejoin */
  uint64_t commit_started_us;
  uint64_t next_lag_ms;
  uint64_t next_broker_check_ms;

  atomic_int joined;
  atomic_int brokers_down;
  atomic_int failed;
  atomic_int closing;
  char fail_why[256]; /* written once before `failed` is set */

  wsg_log_ratelimit rl_consume;
  wsg_log_ratelimit rl_commit;
  wsg_log_ratelimit rl_delivery;

  wsg_metrics *metrics;
  wsg_counter *m_consumed;
  wsg_counter *m_produced;
  wsg_counter *m_dead_letters;
  wsg_counter *m_delivery_errors;
  wsg_counter *m_dropped;
  wsg_counter *m_commits_ok;
  wsg_counter *m_commits_err;
  wsg_histogram *m_commit_latency;
  wsg_histogram *m_hop_acked;
  wsg_counter *m_assign;
  wsg_counter *m_revoke;
  wsg_counter *m_lost;
  wsg_counter *m_revoke_unfinished;
  wsg_gauge *m_assigned;
  wsg_gauge *m_in_flight;
};

static inline void count(wsg_counter *c, uint64_t n) {
  if (c && n)
    wsg_counter_add(c, n);
}

/* proc_consumer.c */
/* Takes a ticket for one more output of `r` (NULL: out of memory), returns one, completes one. */
ticket *proc_consumer__ticket_for(proc_consumer *c, proc_record *r);
void proc_consumer__ticket_put(proc_consumer *c, ticket *t);
void proc_consumer__complete(part *p, uint32_t epoch, uint64_t seq);
/* A ticket in flight (revokes and shutdown wait for it); and produced to its outbound partition. */
void proc_consumer__produced(proc_consumer *c, ticket *t);
void proc_consumer__out_produced(proc_consumer *c, ticket *t);
/* A produce call failed synchronously: undoes the ticket; -1 unless the record alone is at fault.
 */
int proc_consumer__produce_failed(proc_consumer *c, ticket *t, rd_kafka_resp_err_t err,
                                  const char *topic, int32_t partition, size_t len);

/* proc_held.c */
/* Waits up to ms for delivery reports (and the direct path's acks). */
void proc_consumer__wait(proc_consumer *c, int ms);
/* Records the first unrecoverable failure; the processor stops at its next check. */
__attribute__((format(printf, 2, 3))) void proc_consumer__fail(proc_consumer *c, const char *fmt,
                                                               ...);
/* The state of partition `id` of `topic` (inbound or commands), created the first time it is
 * seen; NULL if id < 0 or out of memory. */
part *proc_consumer__part_get(proc_consumer *c, const char *topic, int32_t id);

/* proc_group.c */
/* Stores the committable offset of every assigned partition that advanced. */
void proc_group_store_offsets(proc_consumer *c);
/* Commits synchronously (revoke, shutdown). Returns 0 if everything listed was committed. */
int proc_group_commit_sync(proc_consumer *c, const rd_kafka_topic_partition_list_t *only);
void proc_group_commit_async(proc_consumer *c);
/* True while a commit must not go out because this member is rejoining the group. */
bool proc_group_rejoining(proc_consumer *c);
/* Serves delivery reports until the listed partitions (NULL: all) have nothing in flight. */
bool proc_group_wait_inflight(proc_consumer *c, const rd_kafka_topic_partition_list_t *only,
                              uint64_t timeout_ms);
/* librdkafka callbacks of the consumer (its opaque is the proc_consumer). */
void proc_group_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                             rd_kafka_topic_partition_list_t *parts, void *opaque);
void proc_group_offset_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                 rd_kafka_topic_partition_list_t *offsets, void *opaque);

#endif
