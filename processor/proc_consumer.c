/*
 * proc_consumer: the processor's librdkafka clients, the batch, producing and delivery reports,
 * lag; the consumer thread runs it. The consumer group's offsets, commits and rebalances are
 * proc_group.c's; the state both share is in proc_consumer_priv.h.
 *
 * Threads: every function runs on the consumer thread; librdkafka calls our callbacks from
 * rd_kafka_consumer_poll() and rd_kafka_poll(), i.e. on the consumer thread too (the consumer's
 * main queue is forwarded to its consumer queue). Only proc_consumer_ready() reads state from
 * another thread, through atomics.
 */
#include "proc_consumer.h"

#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proc_consumer_priv.h"
#include "proc_metrics.h"
#include "proc_offsets.h"
#include "wsg_err.h"
#include "wsg_kafka.h"
#include "wsg_log.h"
#include "wsg_time.h"

/* How often the lag gauges are refreshed (cheap: cached watermarks and local positions). */
#define LAG_INTERVAL_MS 1000
/* An async commit without a result after this long is given up on. */
#define COMMIT_STUCK_US (30ULL * 1000000ULL)
/* While no broker is reachable: how often, and how long at most, to check whether one is back. */
#define BROKER_CHECK_MS         2000
#define BROKER_CHECK_TIMEOUT_MS 200
/* librdkafka's default max.poll.interval.ms: the broker's bound on one rebalance. */
#define DEFAULT_REBALANCE_MS 300000

/* Records the first unrecoverable failure; the processor stops at its next check. */
__attribute__((format(printf, 2, 3))) void proc_consumer__fail(proc_consumer *c, const char *fmt,
                                                               ...) {
  if (atomic_load(&c->failed))
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->fail_why, sizeof(c->fail_why), fmt, ap);
  va_end(ap);
  WSG_ERROR("kafka", "%s; stopping: the group will redeliver what was not committed", c->fail_why);
  atomic_store(&c->failed, 1);
}

bool proc_consumer_failed(proc_consumer *c, char *why, size_t whylen) {
  if (!atomic_load(&c->failed))
    return false;
  wsg_err_set(why, whylen, "%s", c->fail_why);
  return true;
}

int proc_consumer_ready(proc_consumer *c, char *why, size_t whylen) {
  if (atomic_load(&c->failed)) {
    wsg_err_set(why, whylen, "kafka: %s", c->fail_why);
    return -1;
  }
  if (atomic_load(&c->closing)) {
    wsg_err_set(why, whylen, "shutting down");
    return -1;
  }
  if (!atomic_load(&c->joined)) {
    wsg_err_set(why, whylen, "kafka: not yet a member of the consumer group");
    return -1;
  }
  if (atomic_load(&c->brokers_down)) {
    wsg_err_set(why, whylen, "kafka: no broker reachable");
    return -1;
  }
  return 0;
}

#define PRODUCED        "wsgate_processor_produced_total"
#define PRODUCED_HELP   "Records produced, by destination"
#define COMMITS         "wsgate_processor_commits_total"
#define COMMITS_HELP    "Offset commits, by result"
#define REBALANCES      "wsgate_processor_rebalances_total"
#define REBALANCES_HELP "Partition assignment changes, by kind"

static const double hop_bounds[] = WSG_HOP_BOUNDS;
static const double commit_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                       0.1,   0.25,   0.5,   1,    2.5};

/* The series of the struct's m_* fields; the lag rows are registered per partition. */
enum { ROW_LAG = 14, ROW_CMD_LAG = 15 };
static const wsg_metric_def metric_rows[] = {
    WSG_COUNTER_ROW(proc_consumer, m_consumed, "wsgate_processor_consumed_total",
                    "Inbound records read from Kafka", NULL),
    WSG_COUNTER_ROW(proc_consumer, m_produced, PRODUCED, PRODUCED_HELP, "topic=\"outbound\""),
    WSG_COUNTER_ROW(proc_consumer, m_dead_letters, PRODUCED, PRODUCED_HELP,
                    "topic=\"dead_letter\""),
    WSG_COUNTER_ROW(proc_consumer, m_delivery_errors, "wsgate_processor_delivery_errors_total",
                    "Outbound records Kafka did not acknowledge in time (the processor stops; "
                    "their inputs are redelivered)",
                    NULL),
    WSG_COUNTER_ROW(proc_consumer, m_dropped, "wsgate_processor_records_refused_total",
                    "Outbound records Kafka refused for good (too large)", NULL),
    WSG_COUNTER_ROW(proc_consumer, m_commits_ok, COMMITS, COMMITS_HELP, "result=\"ok\""),
    WSG_COUNTER_ROW(proc_consumer, m_commits_err, COMMITS, COMMITS_HELP, "result=\"error\""),
    WSG_HISTOGRAM_ROW(proc_consumer, m_commit_latency, "wsgate_processor_commit_latency_seconds",
                      "Time from an offset commit request to its result", NULL, commit_bounds),
    WSG_COUNTER_ROW(proc_consumer, m_assign, REBALANCES, REBALANCES_HELP, "kind=\"assign\""),
    WSG_COUNTER_ROW(proc_consumer, m_revoke, REBALANCES, REBALANCES_HELP, "kind=\"revoke\""),
    WSG_COUNTER_ROW(proc_consumer, m_lost, REBALANCES, REBALANCES_HELP, "kind=\"lost\""),
    WSG_COUNTER_ROW(proc_consumer, m_revoke_unfinished,
                    "wsgate_processor_revoke_unacknowledged_total",
                    "Outbound records still in flight when a revoke or shutdown timed out (their "
                    "inputs are handled again: duplicates)",
                    NULL),
    WSG_GAUGE_ROW(proc_consumer, m_assigned, "wsgate_processor_assigned_partitions",
                  "Inbound partitions this processor owns", NULL),
    WSG_GAUGE_ROW(proc_consumer, m_in_flight, "wsgate_processor_in_flight",
                  "Outbound records produced and not yet acknowledged", NULL),
    /* registered by proc_consumer__part_get() the first time a partition is seen */
    [ROW_LAG] = WSG_RUNTIME_ROW(WSG_METRIC_GAUGE, "wsgate_processor_consumer_lag",
                                "Records of an inbound partition not yet handled by this "
                                "processor (0 when it does not own the partition)",
                                "partition"),
    [ROW_CMD_LAG] = WSG_RUNTIME_ROW(WSG_METRIC_GAUGE, "wsgate_processor_commands_lag",
                                    "Records of a commands-topic partition not yet executed by "
                                    "this processor (0 when it does not own the partition; a "
                                    "transaction's commit marker may count as one until the next "
                                    "command)",
                                    "partition"),
    WSG_HISTOGRAM_ROW(proc_consumer, m_hop_acked, "wsgate_processor_hop_outbound_acked_seconds",
                      "Hop 3: from the handler's start on an inbound record to Kafka's "
                      "acknowledgement of an outbound record it caused (batch, routing, linger).",
                      NULL, hop_bounds),
};

const wsg_metric_table proc_consumer_metric_table =
    WSG_METRIC_TABLE("processor/proc_consumer.c", metric_rows);

/* --- partitions and tickets ---------------------------------------------------------------- */

part *proc_consumer__part_get(proc_consumer *c, const char *topic, int32_t id) {
  if (id < 0 || id > INT32_MAX / 2)
    return NULL;
  /* Two topics share the group (inbound, commands): partition k of each at 2k and 2k + 1. */
  bool commands = c->commands && topic && strcmp(topic, c->commands) == 0;
  size_t ix = (size_t)id * 2 + commands;
  if (ix >= c->nparts) {
    size_t n = ix + 2;
    part **np = realloc(c->parts, n * sizeof(part *));
    if (!np)
      return NULL;
    for (size_t i = c->nparts; i < n; i++)
      np[i] = NULL;
    c->parts = np;
    c->nparts = n;
  }
  if (!c->parts[ix]) {
    part *p = calloc(1, sizeof(part));
    if (!p)
      return NULL;
    p->offs = proc_offsets_create();
    if (!p->offs) {
      free(p);
      return NULL;
    }
    p->id = id;
    p->commands = commands;
    p->topic = commands ? c->commands : c->inbound;
    p->stored = p->committed = p->next = p->resume = -1;
    /* One lag gauge per topic (its label is the partition alone). */
    if (c->metrics) {
      char labels[32];
      snprintf(labels, sizeof(labels), "partition=\"%" PRId32 "\"", id);
      p->lag =
          wsg_metrics_gauge_def(c->metrics, &metric_rows[commands ? ROW_CMD_LAG : ROW_LAG], labels);
    }
    c->parts[ix] = p;
  }
  return c->parts[ix];
}

static ticket *ticket_get(proc_consumer *c) {
  if (!c->free_tickets) {
    ticket_block *b = malloc(sizeof(*b));
    if (!b)
      return NULL;
    b->next = c->blocks;
    c->blocks = b;
    for (size_t i = 0; i < TICKETS_PER_BLOCK; i++) {
      b->t[i].next = c->free_tickets;
      c->free_tickets = &b->t[i];
    }
  }
  ticket *t = c->free_tickets;
  c->free_tickets = t->next;
  return t;
}

void proc_consumer__ticket_put(proc_consumer *c, ticket *t) {
  t->next = c->free_tickets;
  c->free_tickets = t;
}

/* One pending unit of (p, epoch, seq) is done. */
void proc_consumer__complete(part *p, uint32_t epoch, uint64_t seq) {
  if (p->assigned && p->epoch == epoch && proc_offsets_done(p->offs, seq) > 0)
    p->dirty = true;
}

static size_t tracked(const proc_consumer *c) {
  size_t n = 0;
  for (size_t i = 0; i < c->nparts; i++)
    if (c->parts[i] && c->parts[i]->assigned)
      n += proc_offsets_count(c->parts[i]->offs);
  return n;
}

/* --- callbacks ------------------------------------------------------------------------------ */

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
  proc_consumer *c = opaque;
  if (err == RD_KAFKA_RESP_ERR__FATAL) {
    char buf[256];
    rd_kafka_resp_err_t ferr = rd_kafka_fatal_error(rk, buf, sizeof(buf));
    proc_consumer__fail(c, "fatal Kafka error in the %s: %s: %s", rd_kafka_name(rk),
                        rd_kafka_err2name(ferr), buf);
    return;
  }
  if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
    atomic_store(&c->brokers_down, 1);
    WSG_WARN("kafka", "%s: no broker reachable: %s", rd_kafka_name(rk), reason);
    return;
  }
  /* Everything else is transient and retried by librdkafka; its log line says enough. */
  WSG_DEBUG("kafka", "%s: %s: %s", rd_kafka_name(rk), rd_kafka_err2name(err), reason);
}

/* Errors that retrying can never fix for this record, and that do not mean Kafka is unusable:
 * the record is dropped (counted) and its input may still be committed. */
static bool permanent(rd_kafka_resp_err_t err) {
  switch (err) {
  case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
  case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
  case RD_KAFKA_RESP_ERR_INVALID_RECORD:
  case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
    return true;
  default:
    return false;
  }
}

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  (void)rk;
  proc_consumer *c = opaque;
  ticket *t = m->_private;
  if (!t)
    return;
  part *p = t->p;
  if (t->kafka && t->out_part >= 0 && t->out_part < c->out_partitions &&
      c->out_inflight[t->out_part])
    c->out_inflight[t->out_part]--;
  if (t->kafka && m->err == RD_KAFKA_RESP_ERR_NO_ERROR && m->partition >= 0 &&
      m->partition < c->out_partitions && m->offset > c->out_acked[m->partition])
    c->out_acked[m->partition] = m->offset;
  if (p->inflight)
    p->inflight--;
  if (c->inflight_total)
    c->inflight_total--;
  if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
    atomic_store(&c->brokers_down, 0);
    if (t->handler_us && c->m_hop_acked) {
      uint64_t now_us = wsg_now_wall_us();
      if (now_us > t->handler_us)
        wsg_histogram_observe(c->m_hop_acked, (double)(now_us - t->handler_us) / 1e6);
    }
    proc_consumer__complete(p, t->epoch, t->seq);
  } else if (permanent(m->err)) {
    count(c->m_dropped, 1);
    wsg_log_limited(&c->rl_delivery, 1, wsg_now_mono_ms(), WSG_LOG_ERROR, "kafka",
                    "Kafka refused an outbound record of %zu bytes for partition %" PRId32
                    " of %s: %s; dropped",
                    m->len, m->partition, rd_kafka_topic_name(m->rkt), rd_kafka_err2str(m->err));
    proc_consumer__complete(p, t->epoch, t->seq);
  } else {
    /* Not completed: the input offset can never be committed past this record. */
    count(c->m_delivery_errors, 1);
    proc_consumer__fail(c, "delivery to partition %" PRId32 " of %s failed: %s", m->partition,
                        rd_kafka_topic_name(m->rkt), rd_kafka_err2str(m->err));
  }
  proc_consumer__ticket_put(c, t);
}

/* --- creation ------------------------------------------------------------------------------ */

static rd_kafka_conf_t *consumer_conf(const proc_consumer_options *o, proc_consumer *c, char *err,
                                      size_t errlen) {
  rd_kafka_conf_t *conf =
      wsg_kafka_conf_new(WSG_KAFKA_CONSUMER_GROUP, o->brokers, o->props, err, errlen);
  if (!conf)
    return NULL;
  /* Set after the user's -X on purpose: at-least-once depends on these. */
  if (wsg_kafka_conf_set(conf, "group.id", o->group_id, err, errlen) != 0 ||
      wsg_kafka_conf_set(conf, "enable.auto.commit", "false", err, errlen) != 0 ||
      wsg_kafka_conf_set(conf, "enable.auto.offset.store", "false", err, errlen) != 0 ||
      (o->group_instance_id &&
       wsg_kafka_conf_set(conf, "group.instance.id", o->group_instance_id, err, errlen) != 0)) {
    rd_kafka_conf_destroy(conf);
    return NULL;
  }
  char buf[32];
  size_t sz = sizeof(buf);
  c->rebalance_timeout_ms = DEFAULT_REBALANCE_MS;
  if (rd_kafka_conf_get(conf, "max.poll.interval.ms", buf, &sz) == RD_KAFKA_CONF_OK &&
      strtoull(buf, NULL, 10) > 0)
    c->rebalance_timeout_ms = strtoull(buf, NULL, 10);
  rd_kafka_conf_set_opaque(conf, c);
  rd_kafka_conf_set_rebalance_cb(conf, proc_group_rebalance_cb);
  rd_kafka_conf_set_offset_commit_cb(conf, proc_group_offset_commit_cb);
  rd_kafka_conf_set_error_cb(conf, error_cb);
  return conf;
}

static rd_kafka_conf_t *producer_conf(const proc_consumer_options *o, proc_consumer *c, char *err,
                                      size_t errlen) {
  rd_kafka_conf_t *conf = wsg_kafka_conf_new(WSG_KAFKA_PRODUCER, o->brokers, o->props, err, errlen);
  if (!conf)
    return NULL;
  if (wsg_kafka_conf_set(conf, "enable.idempotence", "true", err, errlen) != 0) {
    rd_kafka_conf_destroy(conf);
    return NULL;
  }
  char buf[32];
  size_t sz = sizeof(buf);
  if (rd_kafka_conf_get(conf, "message.max.bytes", buf, &sz) == RD_KAFKA_CONF_OK)
    c->max_record = (size_t)strtoull(buf, NULL, 10);
  if (c->max_record == 0)
    c->max_record = 1000000;
  rd_kafka_conf_set_opaque(conf, c);
  rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
  rd_kafka_conf_set_error_cb(conf, error_cb);
  return conf;
}

int proc_consumer_create(proc_consumer **out, const proc_consumer_options *o, char *err,
                         size_t errlen) {
  *out = NULL;
  proc_consumer *c = calloc(1, sizeof(*c));
  if (!c) {
    wsg_err_set(err, errlen, "out of memory");
    return -1;
  }
  c->inbound = strdup(o->inbound_topic);
  c->outbound = strdup(o->outbound_topic);
  c->dlq = o->dead_letter_topic ? strdup(o->dead_letter_topic) : NULL;
  c->commands = o->commands_topic && *o->commands_topic ? strdup(o->commands_topic) : NULL;
  if (!c->inbound || !c->outbound || (o->dead_letter_topic && !c->dlq) ||
      (o->commands_topic && *o->commands_topic && !c->commands)) {
    wsg_err_set(err, errlen, "out of memory");
    goto fail;
  }
  c->max_in_flight = o->max_in_flight ? o->max_in_flight : 100000;
  c->commit_interval_ms = o->commit_interval_ms ? o->commit_interval_ms : 1000;
  c->revoke_timeout_ms = o->revoke_timeout_ms;
  c->metrics = o->metrics;
  wsg_metrics_register_table(c->metrics, &proc_consumer_metric_table, c);
  int topic_timeout = o->topic_timeout_ms > 0 ? o->topic_timeout_ms : 10000;

  rd_kafka_conf_t *pconf = producer_conf(o, c, err, errlen);
  if (!pconf)
    goto fail;
  c->prod = wsg_kafka_new(RD_KAFKA_PRODUCER, pconf, err, errlen);
  if (!c->prod)
    goto fail;

  /* The outbound topic must exist: its partitions are the gateway slots. */
  char terr[256];
  c->out_partitions = wsg_kafka_topic_partitions_until(c->prod, c->outbound, topic_timeout, o->stop,
                                                       terr, sizeof(terr));
  if (c->out_partitions < 1) {
    wsg_err_set(err, errlen, "outbound topic: %s (create it, e.g. with wsgate-admin)", terr);
    goto fail;
  }
  if (!(c->out_inflight = calloc((size_t)c->out_partitions, sizeof(uint32_t))) ||
      !(c->out_acked = malloc((size_t)c->out_partitions * sizeof(int64_t)))) {
    wsg_err_set(err, errlen, "out of memory");
    goto fail;
  }
  for (int32_t i = 0; i < c->out_partitions; i++)
    c->out_acked[i] = -1;
  if (c->dlq && wsg_kafka_topic_partitions_until(c->prod, c->dlq, topic_timeout, o->stop, terr,
                                                 sizeof(terr)) < 1) {
    wsg_err_set(err, errlen, "--dead-letter-topic: %s (create it first)", terr);
    goto fail;
  }
  c->out_topic = rd_kafka_topic_new(c->prod, c->outbound, NULL);
  if (!c->out_topic) {
    wsg_err_set(err, errlen, "outbound topic %s: %s", c->outbound,
                rd_kafka_err2str(rd_kafka_last_error()));
    goto fail;
  }

  rd_kafka_conf_t *cconf = consumer_conf(o, c, err, errlen);
  if (!cconf)
    goto fail;
  c->cons = wsg_kafka_new(RD_KAFKA_CONSUMER, cconf, err, errlen);
  if (!c->cons)
    goto fail;
  /* Rebalance, commit and error callbacks are then served by rd_kafka_consumer_poll(). */
  rd_kafka_poll_set_consumer(c->cons);
  if (wsg_kafka_topic_partitions_until(c->cons, c->inbound, topic_timeout, o->stop, terr,
                                       sizeof(terr)) < 1) {
    wsg_err_set(err, errlen, "inbound topic: %s", terr);
    goto fail;
  }
  /* The commands topic is optional at start (created by `wsgate-admin topics ensure`): a
   * processor subscribed to a missing topic gets its partitions once it exists. */
  if (c->commands &&
      wsg_kafka_topic_partitions(c->cons, c->commands, topic_timeout, terr, sizeof(terr)) < 1)
    WSG_WARN("kafka", "commands topic: %s; commands are executed once it exists", terr);
  rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(2);
  rd_kafka_topic_partition_list_add(sub, c->inbound, RD_KAFKA_PARTITION_UA);
  if (c->commands)
    rd_kafka_topic_partition_list_add(sub, c->commands, RD_KAFKA_PARTITION_UA);
  rd_kafka_resp_err_t serr = rd_kafka_subscribe(c->cons, sub);
  rd_kafka_topic_partition_list_destroy(sub);
  if (serr != RD_KAFKA_RESP_ERR_NO_ERROR) {
    wsg_err_set(err, errlen, "cannot subscribe to %s: %s", c->inbound, rd_kafka_err2str(serr));
    goto fail;
  }
  c->next_commit_ms = wsg_now_mono_ms() + c->commit_interval_ms;
  *out = c;
  return 0;

fail:
  proc_consumer_destroy(c);
  return -1;
}

void proc_consumer_destroy(proc_consumer *c) {
  if (!c)
    return;
  if (c->cons)
    rd_kafka_destroy(c->cons);
  if (c->out_topic)
    rd_kafka_topic_destroy(c->out_topic);
  if (c->prod) {
    /* Purge what is still queued so destroy does not wait for it; reports are not needed now. */
    rd_kafka_purge(c->prod, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(c->prod, 0);
    rd_kafka_destroy(c->prod);
  }
  for (size_t i = 0; i < c->nparts; i++) {
    if (c->parts[i]) {
      proc_offsets_destroy(c->parts[i]->offs);
      free(c->parts[i]);
    }
  }
  free(c->parts);
  free(c->out_inflight);
  free(c->out_acked);
  while (c->blocks) {
    ticket_block *b = c->blocks;
    c->blocks = b->next;
    free(b);
  }
  free(c->inbound);
  free(c->commands);
  free(c->outbound);
  free(c->dlq);
  free(c);
}

int32_t proc_consumer_outbound_partitions(const proc_consumer *c) {
  return c->out_partitions;
}

size_t proc_consumer_max_record(const proc_consumer *c) {
  return c->max_record;
}

bool proc_consumer_has_dead_letter(const proc_consumer *c) {
  return c->dlq != NULL;
}

/* --- the batch ----------------------------------------------------------------------------- */

size_t proc_consumer_poll(proc_consumer *c, proc_record *recs, size_t max, int timeout_ms,
                          const volatile sig_atomic_t *stop) {
  /* Backpressure: wait for acknowledgements rather than track unboundedly many records. */
  while (tracked(c) + max > c->max_in_flight && !(stop && *stop) && !atomic_load(&c->failed)) {
    proc_consumer__wait(c, POLL_SLICE_MS);
    proc_group_store_offsets(c);
  }
  if ((stop && *stop) || atomic_load(&c->failed))
    return 0;

  size_t n = 0;
  rd_kafka_message_t *m = rd_kafka_consumer_poll(c->cons, timeout_ms);
  while (m) {
    if (m->err) {
      if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
        wsg_log_limited(&c->rl_consume, 1, wsg_now_mono_ms(), WSG_LOG_WARN, "kafka",
                        "consumer: %s%s%s", rd_kafka_err2str(m->err), m->rkt ? " on " : "",
                        m->rkt ? rd_kafka_topic_name(m->rkt) : "");
      rd_kafka_message_destroy(m);
    } else {
      part *p = proc_consumer__part_get(c, rd_kafka_topic_name(m->rkt), m->partition);
      if (!p) {
        proc_consumer__fail(c, "out of memory tracking partition %" PRId32, m->partition);
        rd_kafka_message_destroy(m);
        break;
      }
      atomic_store(&c->brokers_down, 0);
      recs[n++] = (proc_record){
          .value = m->payload,
          .len = m->len,
          .key = m->key,
          .key_len = m->key_len,
          .partition = m->partition,
          .offset = m->offset,
          .command = p->commands,
          .rkm = m,
          .part = p,
          .epoch = p->epoch,
      };
    }
    if (n >= max)
      break;
    m = rd_kafka_consumer_poll(c->cons, 0);
  }
  count(c->m_consumed, n);
  return n;
}

bool proc_consumer_begin(proc_consumer *c, proc_record *r) {
  part *p = r->part;
  r->begun = false;
  if (!p || !p->assigned || p->epoch != r->epoch)
    return false;
  if (proc_offsets_begin(p->offs, r->offset, &r->seq) != 0) {
    /* Offsets of one assignment only move forward; anything else breaks the commit rule. */
    proc_consumer__fail(c,
                        "partition %" PRId32 ": cannot track offset %" PRId64
                        " (out of memory, or the "
                        "partition went backwards)",
                        r->partition, r->offset);
    return false;
  }
  p->next = r->offset + 1;
  r->begun = true;
  return true;
}

void proc_consumer_end(proc_consumer *c, proc_record *r) {
  (void)c;
  if (r->begun)
    proc_consumer__complete(r->part, r->epoch, r->seq);
  r->begun = false;
  if (r->rkm)
    rd_kafka_message_destroy(r->rkm);
  r->rkm = NULL;
}

void proc_consumer_abandon(proc_consumer *c, proc_record *r) {
  (void)c;
  r->begun = false;
  if (r->rkm)
    rd_kafka_message_destroy(r->rkm);
  r->rkm = NULL;
}

/* Takes a ticket for one more output of `r`; NULL when out of memory. */
ticket *proc_consumer__ticket_for(proc_consumer *c, proc_record *r) {
  part *p = r->part;
  if (!r->begun || proc_offsets_add(p->offs, r->seq) != 0)
    return NULL;
  ticket *t = ticket_get(c);
  if (!t) {
    proc_offsets_done(p->offs, r->seq);
    return NULL;
  }
  *t = (ticket){.p = p, .epoch = r->epoch, .seq = r->seq, .out_part = -1};
  return t;
}

void proc_consumer__produced(proc_consumer *c, ticket *t) {
  t->p->inflight++;
  c->inflight_total++;
}

/* A produce call failed synchronously: undo the ticket. Returns -1 unless the record alone is at
 * fault (dropped, counted), in which case 0. */
int proc_consumer__produce_failed(proc_consumer *c, ticket *t, rd_kafka_resp_err_t err,
                                  const char *topic, int32_t partition, size_t len) {
  proc_consumer__complete(t->p, t->epoch, t->seq);
  proc_consumer__ticket_put(c, t);
  if (permanent(err)) {
    count(c->m_dropped, 1);
    wsg_log_limited(&c->rl_delivery, 1, wsg_now_mono_ms(), WSG_LOG_ERROR, "kafka",
                    "cannot produce a record of %zu bytes to partition %" PRId32 " of %s: %s; "
                    "dropped",
                    len, partition, topic, rd_kafka_err2str(err));
    return 0;
  }
  proc_consumer__fail(c, "cannot produce to partition %" PRId32 " of %s: %s", partition, topic,
                      rd_kafka_err2str(err));
  return -1;
}

void proc_consumer__out_produced(proc_consumer *c, ticket *t) {
  t->kafka = true;
  if (t->out_part >= 0 && t->out_part < c->out_partitions)
    c->out_inflight[t->out_part]++;
}

int proc_consumer_produce(proc_consumer *c, proc_record *r, int32_t partition, const void *buf,
                          size_t len) {
  ticket *t = proc_consumer__ticket_for(c, r);
  if (!t) {
    proc_consumer__fail(c, "out of memory tracking an outbound record");
    return -1;
  }
  t->handler_us = r->handler_us;
  t->out_part = partition;
  for (;;) {
    if (rd_kafka_produce(c->out_topic, partition, RD_KAFKA_MSG_F_COPY, (void *)buf, len, NULL, 0,
                         t) == 0) {
      proc_consumer__produced(c, t);
      proc_consumer__out_produced(c, t);
      count(c->m_produced, 1);
      return 0;
    }
    rd_kafka_resp_err_t err = rd_kafka_last_error();
    if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || atomic_load(&c->failed))
      return proc_consumer__produce_failed(c, t, err, c->outbound, partition, len);
    /* librdkafka's queue is full: let deliveries drain it (reports complete other records). */
    proc_consumer__wait(c, POLL_SLICE_MS);
  }
}

int proc_consumer_dead_letter(proc_consumer *c, proc_record *r, const char *kind,
                              const char *reason) {
  if (!c->dlq)
    return 0;
  ticket *t = proc_consumer__ticket_for(c, r);
  if (!t) {
    proc_consumer__fail(c, "out of memory tracking a dead-letter record");
    return -1;
  }
  char part_s[16], off_s[24];
  snprintf(part_s, sizeof(part_s), "%" PRId32, r->partition);
  snprintf(off_s, sizeof(off_s), "%" PRId64, r->offset);
  for (;;) {
    rd_kafka_headers_t *h = rd_kafka_headers_new(5);
    rd_kafka_header_add(h, "wsgate-error-kind", -1, kind, -1);
    rd_kafka_header_add(h, "wsgate-error", -1, reason, -1);
    rd_kafka_header_add(h, "wsgate-source-topic", -1, ((part *)r->part)->topic, -1);
    rd_kafka_header_add(h, "wsgate-source-partition", -1, part_s, -1);
    rd_kafka_header_add(h, "wsgate-source-offset", -1, off_s, -1);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        c->prod, RD_KAFKA_V_TOPIC(c->dlq), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_KEY((void *)r->key, r->key_len), RD_KAFKA_V_VALUE((void *)r->value, r->len),
        RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(t), RD_KAFKA_V_END);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      proc_consumer__produced(c, t);
      count(c->m_dead_letters, 1);
      return 0;
    }
    /* producev owns the headers only on success. */
    rd_kafka_headers_destroy(h);
    if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || atomic_load(&c->failed))
      return proc_consumer__produce_failed(c, t, err, c->dlq, RD_KAFKA_PARTITION_UA, r->len);
    proc_consumer__wait(c, POLL_SLICE_MS);
  }
}

static void update_lag(proc_consumer *c) {
  rd_kafka_topic_partition_list_t *l = NULL;
  for (size_t i = 0; i < c->nparts; i++) {
    part *p = c->parts[i];
    if (!p || !p->assigned || !p->lag)
      continue;
    if (!l)
      l = rd_kafka_topic_partition_list_new(8);
    rd_kafka_topic_partition_list_add(l, p->topic, p->id);
  }
  if (!l)
    return;
  /* Both are local reads: the high watermark from the last fetch response, the position from
   * the consumer's own state. No request reaches the broker. */
  rd_kafka_position(c->cons, l);
  for (int i = 0; i < l->cnt; i++) {
    part *p = proc_consumer__part_get(c, l->elems[i].topic, l->elems[i].partition);
    int64_t lo = 0, hi = -1;
    if (!p ||
        rd_kafka_get_watermark_offsets(c->cons, p->topic, p->id, &lo, &hi) !=
            RD_KAFKA_RESP_ERR_NO_ERROR ||
        hi < 0)
      continue;
    int64_t pos = p->next;
    if (l->elems[i].offset >= 0 && l->elems[i].offset > pos)
      pos = l->elems[i].offset;
    if (pos < 0)
      pos = p->committed >= 0 ? p->committed : lo;
    wsg_gauge_set(p->lag, hi > pos ? hi - pos : 0);
  }
  rd_kafka_topic_partition_list_destroy(l);
}

void proc_consumer_service(proc_consumer *c) {
  proc_consumer__wait(c, 0);
  proc_group_store_offsets(c);
  uint64_t now = wsg_now_mono_ms();
  /* A commit whose result never came (the group changed under it) must not block the next. */
  if (c->commit_pending && wsg_now_mono_us() - c->commit_started_us > COMMIT_STUCK_US) {
    WSG_WARN("kafka", "no result for an offset commit after %d s; committing again",
             (int)(COMMIT_STUCK_US / 1000000));
    c->commit_pending = false;
  }
  if (now >= c->next_commit_ms) {
    if (proc_group_rejoining(c))
      c->commits_held++;
    else if (!c->commit_pending)
      proc_group_commit_async(c);
    c->next_commit_ms = now + c->commit_interval_ms;
  }
  if (now >= c->next_lag_ms) {
    update_lag(c);
    c->next_lag_ms = now + LAG_INTERVAL_MS;
  }
  if (atomic_load(&c->brokers_down) && now >= c->next_broker_check_ms) {
    /* librdkafka reports "all brokers down" but no recovery; an idle processor would stay not
     * ready. A short metadata request while (and only while) it is down tells. */
    c->next_broker_check_ms = now + BROKER_CHECK_MS;
    const struct rd_kafka_metadata *md = NULL;
    if (rd_kafka_metadata(c->cons, 0, NULL, &md, BROKER_CHECK_TIMEOUT_MS) ==
        RD_KAFKA_RESP_ERR_NO_ERROR) {
      rd_kafka_metadata_destroy(md);
      atomic_store(&c->brokers_down, 0);
      WSG_INFO("kafka", "a broker is reachable again");
    }
  }
  if (c->m_in_flight)
    wsg_gauge_set(c->m_in_flight, (int64_t)c->inflight_total);
}

int proc_consumer_close(proc_consumer *c, uint64_t timeout_ms) {
  atomic_store(&c->closing, 1);
  uint64_t start = wsg_now_mono_ms();
  bool all = proc_group_wait_inflight(c, NULL, timeout_ms);
  /* Let the rebalance finish before the last commit; records arriving meanwhile stay uncommitted
   * (docs/notes/librdkafka-2.0.2.md#commit-during-rejoin). */
  bool waited = false;
  while (proc_group_rejoining(c) && wsg_now_mono_ms() - start < timeout_ms) {
    waited = true;
    rd_kafka_message_t *m = rd_kafka_consumer_poll(c->cons, POLL_SLICE_MS);
    if (m)
      rd_kafka_message_destroy(m);
    rd_kafka_poll(c->prod, 0);
  }
  if (waited)
    WSG_INFO("kafka", "%s before the final commit",
             proc_group_rejoining(c) ? "a rebalance was still running (--shutdown-timeout)"
                                     : "waited for a rebalance to end");
  int rc = proc_group_commit_sync(c, NULL) == 0 && all ? 0 : -1;
  /* Leaves the group (a static member stays until session.timeout.ms, by design); the revoke it
   * triggers finds nothing in flight and nothing new to commit. */
  rd_kafka_resp_err_t err = rd_kafka_consumer_close(c->cons);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    WSG_WARN("kafka", "closing the consumer: %s", rd_kafka_err2str(err));
    rc = -1;
  }
  uint64_t spent = wsg_now_mono_ms() - start;
  int left = spent < timeout_ms ? (int)(timeout_ms - spent) : 0;
  if (rd_kafka_flush(c->prod, left) != RD_KAFKA_RESP_ERR_NO_ERROR)
    rc = -1;
  return rc;
}
