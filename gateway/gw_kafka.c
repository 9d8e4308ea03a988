/*
 * gw_kafka: the gateway's inbound producer and outbound consumer (see gw_kafka.h).
 *
 * Threads:
 *   - loop thread: create, check_topics (before the loop runs), produce, poll and every callback
 *     librdkafka delivers through the main queue (delivery reports, errors), set_slot,
 *     outbound_pop, stop_consumer, destroy;
 *   - consumer thread (consumer_main): owns the consumer handle, decodes and pushes to the
 *     hand-off queue, calls opts.wake; with outbound_on_loop it only assigns and probes, and the
 *     loop thread reads, decodes and pushes itself (loop_serve, woken by gw_kafka_ev.c);
 *   - librdkafka's own threads: only its log callback (common/wsg_kafka.c).
 * Shared between the two: the hand-off ring (under `mu`), desired/assigned slot, broker state and
 * stop flag (atomics).
 */
#include "gw_kafka.h"

#include <assert.h>
#include <ev.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gw_kafka_ev.h"
#include "gw_metrics.h"
#include "wsg_kafka.h"
#include "wsg_log.h"
#include "wsg_time.h"

/* How long the consumer waits in one poll, and between checks of its flags while idle. */
#define CONSUMER_POLL_MS 100
/* outbound_on_loop: records read per serve before other events get a turn. */
#define LOOP_SERVE_MAX 256
/* Deadline of the watermark query made before each assign. */
#define WATERMARK_TIMEOUT_MS 5000
/* While the brokers are reported down, probe them this often from the consumer thread. */
#define BROKER_PROBE_MS 1000
#define LOG_LIMIT_PER_S 5

static_assert(sizeof(void *) >= sizeof(uint64_t), "connection ids travel as librdkafka opaques");

const char *gw_kafka_strerror(int err) {
  switch (err) {
#define GW_KAFKA_STR(name, value, msg)                                                             \
  case value:                                                                                      \
    return msg;
    GW_KAFKA_ERRNO_MAP(GW_KAFKA_STR)
#undef GW_KAFKA_STR
  }
  return "unknown error";
}

const char *gw_kafka_err_name(int err) {
  switch (err) {
#define GW_KAFKA_NAME(name, value, msg)                                                            \
  case value:                                                                                      \
    return "GW_KAFKA_" #name;
    GW_KAFKA_ERRNO_MAP(GW_KAFKA_NAME)
#undef GW_KAFKA_NAME
  }
  return "GW_KAFKA_UNKNOWN";
}

struct gw_kafka {
  gw_kafka_options o;
  char *in_topic;
  char *out_topic;
  char *gw_id;
  size_t gw_id_len;

  /* --- producer, loop thread --- */
  rd_kafka_t *producer;
  rd_kafka_topic_t *in_rkt;
  /* The producer's main queue (delivery reports, errors) served on the loop; its safety-net
   * timer (every 0.25 s) is also the clock of the low-water check. */
  gw_kafka_ev *main_ev;
  uint64_t unacked_msgs, unacked_bytes;
  uint64_t high_msgs, low_msgs, high_bytes, low_bytes;
  bool pressure;
  bool closing; /* destroy started: callbacks into the server are suppressed */
  atomic_bool brokers_up;
  wsg_log_ratelimit rl_loop;

  /* --- consumer thread --- */
  rd_kafka_t *consumer;
  pthread_t thread;
  bool thread_started;
  atomic_bool stop;
  atomic_int desired_slot;
  atomic_int assigned_slot; /* -1 until the consumer reads desired_slot's partition */
  wsg_log_ratelimit rl_consumer;
  gw_kafka_ev *out_ev; /* outbound_on_loop: the consumer queue served on the loop; else NULL */

  /* --- hand-off ring, under mu --- */
  pthread_mutex_t mu;
  pthread_cond_t cv; /* consumer waits for room, a slot change or stop */
  gw_outbound *ring;
  size_t cap, head, count;
  uint64_t bytes;
  /* The dispatched position (gw_kafka_dispatched): the slot read, the offset of the last record
   * of it taken off Kafka (queued or dropped) and of the last one the loop popped. */
  int32_t pos_slot;
  int64_t taken_off, popped_off;

  /* --- metrics (NULL when no registry) --- */
  wsg_counter *m_dr_ok, *m_dr_failed;
  wsg_counter *m_full, *m_too_large, *m_refused;
  wsg_gauge *m_unacked, *m_pressure, *m_outq, *m_brokers_up;
  wsg_counter *m_pressure_events;
  wsg_counter *m_out_queued, *m_out_fenced, *m_out_invalid, *m_out_kind, *m_out_pauses;
  wsg_counter *m_out_errors;
  wsg_histogram *m_hop_acked;
};

/* Bytes an item holds, for the hand-off queue's byte bound. */
static uint64_t item_bytes(const gw_outbound *o) {
  return (o->msg ? gw_msg_len(o->msg) : 0) +
         (uint64_t)o->nconns * sizeof(uint64_t) * (o->qs ? 2 : 1) + o->user_len + o->reason_len +
         sizeof *o;
}

/* ------------------------------------------------------------------------------------------ */
/* producer side (loop thread)                                                                */

static void set_pressure(gw_kafka *k, bool on) {
  if (k->pressure == on)
    return;
  k->pressure = on;
  wsg_gauge_set(k->m_pressure, on);
  if (on) {
    wsg_counter_add(k->m_pressure_events, 1);
    WSG_WARN("kafka",
             "producer queue above its high-water mark (%llu messages, %llu bytes unacknowledged): "
             "pausing reads from clients until Kafka catches up",
             (unsigned long long)k->unacked_msgs, (unsigned long long)k->unacked_bytes);
  } else {
    WSG_INFO("kafka", "producer queue below its low-water mark: resuming reads from clients");
  }
  if (!k->closing && k->o.on_pressure)
    k->o.on_pressure(k->o.arg, on);
}

static void check_low_water(gw_kafka *k) {
  if (k->pressure && k->unacked_msgs <= k->low_msgs && k->unacked_bytes <= k->low_bytes)
    set_pressure(k, false);
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  (void)rk;
  gw_kafka *k = opaque;
  uint64_t sz = (uint64_t)m->len + m->key_len;
  k->unacked_msgs = k->unacked_msgs ? k->unacked_msgs - 1 : 0;
  k->unacked_bytes = k->unacked_bytes >= sz ? k->unacked_bytes - sz : 0;
  uint64_t conn_id = (uint64_t)(uintptr_t)m->_private;
  if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
    wsg_counter_add(k->m_dr_ok, 1);
    /* librdkafka's own stamp of the produce() call, kept in the message: no clock read here for
     * the start, no room taken in the opaque (which carries the connection id). */
    int64_t lat_us = rd_kafka_message_latency(m);
    if (lat_us >= 0)
      wsg_histogram_observe(k->m_hop_acked, (double)lat_us / 1e6);
    atomic_store_explicit(&k->brokers_up, true, memory_order_relaxed);
    return;
  }
  wsg_counter_add(k->m_dr_failed, 1);
  if (k->closing)
    return;
  wsg_log_limited(&k->rl_loop, LOG_LIMIT_PER_S, wsg_now_mono_ms(), WSG_LOG_ERROR, "kafka",
                  "delivery to %s failed for connection %llu: %s", k->in_topic,
                  (unsigned long long)conn_id, rd_kafka_err2str(m->err));
  if (!k->closing && k->o.on_delivery_failed)
    k->o.on_delivery_failed(k->o.arg, conn_id, rd_kafka_err2str(m->err));
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
  (void)rk;
  gw_kafka *k = opaque;
  if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
    atomic_store_explicit(&k->brokers_up, false, memory_order_relaxed);
    wsg_gauge_set(k->m_brokers_up, 0);
  }
  /* Transient errors are retried by librdkafka: log only. A fatal one fails deliveries and
   * readiness (docs/notes/librdkafka-2.0.2.md#errors). */
  wsg_log_limited(&k->rl_loop, LOG_LIMIT_PER_S, wsg_now_mono_ms(),
                  err == RD_KAFKA_RESP_ERR__FATAL ? WSG_LOG_ERROR : WSG_LOG_WARN, "kafka",
                  "producer: %s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
  if (err == RD_KAFKA_RESP_ERR__FATAL)
    atomic_store_explicit(&k->brokers_up, false, memory_order_relaxed);
}

void gw_kafka_poll(gw_kafka *k) {
  rd_kafka_poll(k->producer, 0);
  wsg_gauge_set(k->m_unacked, (int64_t)k->unacked_msgs);
  check_low_water(k);
}

/* gw_kafka_ev's serve callback for the producer's main queue: one poll serves it all. */
static bool serve_main(void *arg) {
  gw_kafka_poll(arg);
  return false;
}

int gw_kafka_produce(gw_kafka *k, const char *key, size_t keylen, const void *value, size_t len,
                     uint64_t conn_id) {
  rd_kafka_resp_err_t e = rd_kafka_producev(
      k->producer, RD_KAFKA_V_RKT(k->in_rkt), RD_KAFKA_V_PARTITION(RD_KAFKA_PARTITION_UA),
      RD_KAFKA_V_KEY(key, keylen), RD_KAFKA_V_VALUE((void *)value, len),
      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE((void *)(uintptr_t)conn_id),
      RD_KAFKA_V_END);
  switch (e) {
  case RD_KAFKA_RESP_ERR_NO_ERROR:
    k->unacked_msgs++;
    k->unacked_bytes += (uint64_t)len + keylen;
    if (!k->pressure && (k->unacked_msgs >= k->high_msgs || k->unacked_bytes >= k->high_bytes))
      set_pressure(k, true);
    return GW_KAFKA_OK;
  case RD_KAFKA_RESP_ERR__QUEUE_FULL:
    wsg_counter_add(k->m_full, 1);
    set_pressure(k, true);
    return GW_KAFKA_FULL;
  case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    wsg_counter_add(k->m_too_large, 1);
    return GW_KAFKA_TOO_LARGE;
  default:
    wsg_counter_add(k->m_refused, 1);
    wsg_log_limited(&k->rl_loop, LOG_LIMIT_PER_S, wsg_now_mono_ms(), WSG_LOG_ERROR, "kafka",
                    "produce to %s refused: %s", k->in_topic, rd_kafka_err2str(e));
    return GW_KAFKA_FAILED;
  }
}

bool gw_kafka_pressure(const gw_kafka *k) {
  return k->pressure;
}

uint64_t gw_kafka_unacked(const gw_kafka *k) {
  return k->unacked_msgs;
}

bool gw_kafka_ready(const gw_kafka *k, char *why, size_t whylen) {
  if (!atomic_load_explicit(&k->brokers_up, memory_order_relaxed)) {
    snprintf(why, whylen, "kafka: no broker reachable");
    return false;
  }
  return true;
}

bool gw_kafka_slot_assigned(const gw_kafka *k) {
  int want = atomic_load(&k->desired_slot);
  return want >= 0 && atomic_load(&k->assigned_slot) == want;
}

/* ------------------------------------------------------------------------------------------ */
/* consumer thread                                                                             */

static void consumer_wait(gw_kafka *k, int ms) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&k->mu);
  if (!atomic_load(&k->stop))
    pthread_cond_timedwait(&k->cv, &k->mu, &ts);
  pthread_mutex_unlock(&k->mu);
}

/* Assigns the slot's partition at its current high watermark, or unassigns for slot < 0. */
static int reassign(gw_kafka *k, int slot) {
  rd_kafka_resp_err_t e;
  if (slot < 0) {
    e = rd_kafka_assign(k->consumer, NULL);
    if (e) {
      WSG_ERROR("kafka", "unassign %s: %s", k->out_topic, rd_kafka_err2str(e));
      return -1;
    }
    pthread_mutex_lock(&k->mu);
    k->pos_slot = -1;
    pthread_mutex_unlock(&k->mu);
    atomic_store(&k->assigned_slot, -1);
    WSG_INFO("kafka", "no slot held: not reading %s", k->out_topic);
    return 0;
  }
  int64_t lo = 0, hi = 0;
  e = rd_kafka_query_watermark_offsets(k->consumer, k->out_topic, slot, &lo, &hi,
                                       WATERMARK_TIMEOUT_MS);
  if (e) {
    wsg_log_limited(&k->rl_consumer, LOG_LIMIT_PER_S, wsg_now_mono_ms(), WSG_LOG_WARN, "kafka",
                    "cannot read the end offset of %s [%d] (retrying): %s", k->out_topic, slot,
                    rd_kafka_err2str(e));
    return -1;
  }
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(l, k->out_topic, slot)->offset = hi;
  e = rd_kafka_assign(k->consumer, l);
  rd_kafka_topic_partition_list_destroy(l);
  if (e) {
    WSG_ERROR("kafka", "assign %s [%d]: %s", k->out_topic, slot, rd_kafka_err2str(e));
    return -1;
  }
  pthread_mutex_lock(&k->mu);
  k->pos_slot = slot;
  k->taken_off = k->popped_off = hi - 1; /* nothing before hi will be read */
  pthread_mutex_unlock(&k->mu);
  atomic_store(&k->assigned_slot, slot);
  WSG_INFO("kafka", "reading %s [%d] from offset %lld", k->out_topic, slot, (long long)hi);
  return 0;
}

static void pause_partition(gw_kafka *k, int slot, bool pause) {
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(l, k->out_topic, slot);
  rd_kafka_resp_err_t e = pause ? rd_kafka_pause_partitions(k->consumer, l)
                                : rd_kafka_resume_partitions(k->consumer, l);
  rd_kafka_topic_partition_list_destroy(l);
  if (e)
    WSG_WARN("kafka", "%s %s [%d]: %s", pause ? "pause" : "resume", k->out_topic, slot,
             rd_kafka_err2str(e));
}

/* Under mu, with room: appends `it` (taken); returns whether the ring was empty. */
static bool ring_put(gw_kafka *k, gw_outbound *it, uint64_t sz) {
  bool was_empty = k->count == 0;
  if (it->partition == k->pos_slot && it->offset > k->taken_off)
    k->taken_off = it->offset;
  k->ring[(k->head + k->count) % k->cap] = *it;
  k->count++;
  k->bytes += sz;
  wsg_gauge_set(k->m_outq, (int64_t)k->count);
  return was_empty;
}

/*
 * Pushes `it` (taken) into the ring, waiting for room while it is full: the partition is paused
 * meanwhile so librdkafka stops prefetching. Returns false if stop was requested (it is freed).
 */
static bool handoff_push(gw_kafka *k, gw_outbound *it, int slot) {
  uint64_t sz = item_bytes(it);
  bool paused = false, was_empty;
  pthread_mutex_lock(&k->mu);
  while (k->count == k->cap || (k->count > 0 && k->bytes + sz > k->o.outbound_queue_bytes)) {
    if (atomic_load(&k->stop)) {
      pthread_mutex_unlock(&k->mu);
      gw_outbound_finish(it);
      if (paused)
        pause_partition(k, slot, false);
      return false;
    }
    if (!paused) {
      paused = true;
      wsg_counter_add(k->m_out_pauses, 1);
      pthread_mutex_unlock(&k->mu);
      pause_partition(k, slot, true);
      pthread_mutex_lock(&k->mu);
      continue;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += CONSUMER_POLL_MS * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&k->cv, &k->mu, &ts);
  }
  was_empty = ring_put(k, it, sz);
  pthread_mutex_unlock(&k->mu);
  if (paused)
    pause_partition(k, slot, false);
  wsg_counter_add(k->m_out_queued, 1);
  /* One wake per empty -> non-empty transition: the loop empties the ring on every wake. */
  if (was_empty && k->o.wake)
    k->o.wake(k->o.arg);
  return true;
}

/* Decodes one outbound record into a hand-off item (gw_outdecode.c); returns false (counted,
 * logged) to drop it. */
static bool build_item(gw_kafka *k, const rd_kafka_message_t *m, gw_outbound *it) {
  wsg_envelope env;
  const char *field = NULL;
  int rc = WSG_ENV_OK;
  switch (gw_outbound_decode(m->payload, m->len, k->gw_id, k->gw_id_len, it, &env, &rc, &field)) {
  case GW_OUTDEC_OK:
    return true;
  case GW_OUTDEC_INVALID:
    wsg_counter_add(k->m_out_invalid, 1);
    wsg_log_limited(&k->rl_consumer, LOG_LIMIT_PER_S, wsg_now_mono_ms(), WSG_LOG_WARN, "kafka",
                    "dropping an invalid envelope at %s [%d] offset %lld: %s (field \"%s\")",
                    k->out_topic, m->partition, (long long)m->offset, wsg_env_strerror(rc),
                    field ? field : "");
    return false;
  case GW_OUTDEC_KIND:
    wsg_counter_add(k->m_out_kind, 1);
    wsg_log_limited(&k->rl_consumer, LOG_LIMIT_PER_S, wsg_now_mono_ms(), WSG_LOG_WARN, "kafka",
                    "dropping a \"%s\" envelope at %s [%d] offset %lld: gateways accept only "
                    "deliver, close, publish, subscribe and unsubscribe",
                    wsg_env_kind_name(env.kind), k->out_topic, m->partition, (long long)m->offset);
    return false;
  case GW_OUTDEC_FENCED:
    wsg_counter_add(k->m_out_fenced, 1);
    WSG_DEBUG("kafka", "dropping an envelope for gateway %.*s at offset %lld (we are %s)",
              (int)env.gateway_len, env.gateway, (long long)m->offset, k->gw_id);
    return false;
  case GW_OUTDEC_NOT_UTF8:
    wsg_counter_add(k->m_out_invalid, 1);
    wsg_log_limited(&k->rl_consumer, LOG_LIMIT_PER_S, wsg_now_mono_ms(), WSG_LOG_WARN, "kafka",
                    "dropping a text deliver at %s [%d] offset %lld: its payload is not UTF-8 "
                    "(send it with b=true)",
                    k->out_topic, m->partition, (long long)m->offset);
    return false;
  case GW_OUTDEC_NOMEM:
    break;
  }
  wsg_counter_add(k->m_out_errors, 1);
  WSG_ERROR("kafka", "out of memory decoding an outbound envelope at offset %lld: dropped",
            (long long)m->offset);
  return false;
}

/* While the producer reports no broker, ask for metadata from here (this thread may block) so
 * readiness comes back without waiting for a client frame to be acknowledged. */
static void probe_brokers(gw_kafka *k, uint64_t *last_probe_ms) {
  if (atomic_load_explicit(&k->brokers_up, memory_order_relaxed))
    return;
  uint64_t now = wsg_now_mono_ms();
  if (now - *last_probe_ms < BROKER_PROBE_MS)
    return;
  *last_probe_ms = now;
  const struct rd_kafka_metadata *md = NULL;
  if (rd_kafka_metadata(k->producer, 0, k->in_rkt, &md, BROKER_PROBE_MS) ==
      RD_KAFKA_RESP_ERR_NO_ERROR) {
    rd_kafka_metadata_destroy(md);
    atomic_store_explicit(&k->brokers_up, true, memory_order_relaxed);
    wsg_gauge_set(k->m_brokers_up, 1);
    WSG_INFO("kafka", "Kafka brokers reachable");
  }
}

/* One polled message (taken: destroyed here): errors are counted, a record of another slot than
 * `slot` dropped; true with *it built when it is to be handed off. */
static bool take_record(gw_kafka *k, rd_kafka_message_t *m, int slot, gw_outbound *it) {
  if (m->err) {
    if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      wsg_counter_add(k->m_out_errors, 1);
      wsg_log_limited(&k->rl_consumer, LOG_LIMIT_PER_S, wsg_now_mono_ms(), WSG_LOG_WARN, "kafka",
                      "outbound consumer: %s", rd_kafka_message_errstr(m));
    }
    rd_kafka_message_destroy(m);
    return false;
  }
  /* A record fetched before a re-assignment may still arrive: it belongs to the old slot. */
  bool ok = m->partition == slot && build_item(k, m, it);
  if (ok) {
    it->partition = m->partition;
    it->offset = m->offset;
  } else if (m->partition == slot) {
    /* Dropped, so dispatched as far as a direct barrier is concerned. */
    pthread_mutex_lock(&k->mu);
    if (m->partition == k->pos_slot && m->offset > k->taken_off)
      k->taken_off = m->offset;
    pthread_mutex_unlock(&k->mu);
  }
  rd_kafka_message_destroy(m);
  return ok;
}

static void *consumer_main(void *arg) {
  gw_kafka *k = arg;
  int current = -1;
  uint64_t last_probe = 0;
  while (!atomic_load(&k->stop)) {
    probe_brokers(k, &last_probe);
    int want = atomic_load(&k->desired_slot);
    if (want != current) {
      if (reassign(k, want) != 0) {
        consumer_wait(k, 500);
        continue;
      }
      current = want;
    }
    if (current < 0) {
      consumer_wait(k, CONSUMER_POLL_MS);
      continue;
    }
    if (k->out_ev) {
      consumer_wait(k, CONSUMER_POLL_MS); /* the loop reads the records (loop_serve) */
      continue;
    }
    rd_kafka_message_t *m = rd_kafka_consumer_poll(k->consumer, CONSUMER_POLL_MS);
    gw_outbound it;
    if (m && take_record(k, m, current, &it) && !handoff_push(k, &it, current))
      break;
  }
  return NULL;
}

/*
 * outbound_on_loop, loop thread (gw_kafka_ev.c calls it when librdkafka signals the consumer
 * queue): reads what is there while the ring has room, up to LOOP_SERVE_MAX, and has the server
 * dispatch it at once. No thread hand-off and no wait: when the ring is full the records stay in
 * librdkafka's queue, whose own bound (queued.max.messages.kbytes) stops the fetching. Returns
 * true when it stopped with records possibly left (called again next iteration).
 */
static bool loop_serve(void *arg) {
  gw_kafka *k = arg;
  size_t n = 0;
  bool more = false;
  int slot = atomic_load(&k->assigned_slot);
  for (;;) {
    pthread_mutex_lock(&k->mu);
    bool room = k->count < k->cap && (k->count == 0 || k->bytes < k->o.outbound_queue_bytes);
    pthread_mutex_unlock(&k->mu);
    if (!room || n == LOOP_SERVE_MAX) {
      more = true;
      break;
    }
    rd_kafka_message_t *m = rd_kafka_consumer_poll(k->consumer, 0);
    if (!m)
      break;
    n++;
    gw_outbound it;
    if (!take_record(k, m, slot, &it))
      continue;
    pthread_mutex_lock(&k->mu);
    ring_put(k, &it, item_bytes(&it));
    pthread_mutex_unlock(&k->mu);
    wsg_counter_add(k->m_out_queued, 1);
  }
  if (n > 0 && !k->closing && k->o.drain)
    k->o.drain(k->o.arg);
  return more;
}

/* ------------------------------------------------------------------------------------------ */
/* loop-thread side of the hand-off                                                           */

void gw_kafka_set_slot(gw_kafka *k, int32_t slot) {
  atomic_store(&k->desired_slot, slot);
  pthread_mutex_lock(&k->mu);
  pthread_cond_broadcast(&k->cv);
  pthread_mutex_unlock(&k->mu);
}

size_t gw_kafka_outbound_pop(gw_kafka *k, gw_outbound *items, size_t max) {
  size_t n = 0;
  pthread_mutex_lock(&k->mu);
  bool was_full = k->count == k->cap;
  while (n < max && k->count > 0) {
    items[n] = k->ring[k->head];
    k->bytes -= item_bytes(&items[n]);
    memset(&k->ring[k->head], 0, sizeof k->ring[k->head]);
    k->head = (k->head + 1) % k->cap;
    k->count--;
    n++;
  }
  if (n > 0 && items[n - 1].partition == k->pos_slot)
    k->popped_off = items[n - 1].offset;
  if (n > 0 && (was_full || k->count < k->cap / 2))
    pthread_cond_broadcast(&k->cv);
  wsg_gauge_set(k->m_outq, (int64_t)k->count);
  pthread_mutex_unlock(&k->mu);
  return n;
}

int64_t gw_kafka_dispatched(gw_kafka *k, int32_t *slot) {
  pthread_mutex_lock(&k->mu);
  *slot = k->pos_slot;
  /* An empty ring: whatever was taken is dispatched (the loop dispatches what it pops at once). */
  int64_t off = k->count == 0 ? k->taken_off : k->popped_off;
  pthread_mutex_unlock(&k->mu);
  return off;
}

/* ------------------------------------------------------------------------------------------ */
/* lifecycle                                                                                   */

static uint64_t conf_u64(rd_kafka_conf_t *conf, const char *key, uint64_t def) {
  char buf[64];
  size_t sz = sizeof buf;
  if (rd_kafka_conf_get(conf, key, buf, &sz) != RD_KAFKA_CONF_OK)
    return def;
  char *end;
  unsigned long long v = strtoull(buf, &end, 10);
  return end != buf ? (uint64_t)v : def;
}

static const double hop_bounds[] = WSG_HOP_BOUNDS;

#define DELIVERED           "wsgate_gateway_kafka_delivered_total"
#define DELIVERED_HELP      "Inbound envelopes Kafka acknowledged (ok) or failed for good (failed)."
#define PRODUCE_ERRORS      "wsgate_gateway_kafka_produce_errors_total"
#define PRODUCE_ERRORS_HELP "Inbound envelopes librdkafka refused at produce time, by reason."
#define OUT_RECORDS         "wsgate_gateway_outbound_records_total"
#define OUT_RECORDS_HELP    "Outbound records read from the slot partition, by what became of them."

static const wsg_metric_def metric_rows[] = {
    WSG_COUNTER_ROW(gw_kafka, m_dr_ok, DELIVERED, DELIVERED_HELP, "result=\"ok\""),
    WSG_COUNTER_ROW(gw_kafka, m_dr_failed, DELIVERED, DELIVERED_HELP, "result=\"failed\""),
    WSG_COUNTER_ROW(gw_kafka, m_full, PRODUCE_ERRORS, PRODUCE_ERRORS_HELP, "reason=\"queue_full\""),
    WSG_COUNTER_ROW(gw_kafka, m_too_large, PRODUCE_ERRORS, PRODUCE_ERRORS_HELP,
                    "reason=\"too_large\""),
    WSG_COUNTER_ROW(gw_kafka, m_refused, PRODUCE_ERRORS, PRODUCE_ERRORS_HELP, "reason=\"other\""),
    WSG_GAUGE_ROW(gw_kafka, m_unacked, "wsgate_gateway_kafka_unacked",
                  "Inbound envelopes produced and not yet acknowledged.", NULL),
    WSG_GAUGE_ROW(gw_kafka, m_pressure, "wsgate_gateway_kafka_backpressure",
                  "1 while reads from clients are paused because the producer queue is full.",
                  NULL),
    WSG_COUNTER_ROW(gw_kafka, m_pressure_events, "wsgate_gateway_kafka_backpressure_total",
                    "Times reads from clients were paused because the producer queue filled.",
                    NULL),
    WSG_GAUGE_ROW(gw_kafka, m_brokers_up, "wsgate_gateway_kafka_brokers_up",
                  "1 while the producer reaches a Kafka broker.", NULL),
    WSG_COUNTER_ROW(gw_kafka, m_out_queued, OUT_RECORDS, OUT_RECORDS_HELP, "result=\"queued\""),
    WSG_COUNTER_ROW(gw_kafka, m_out_fenced, OUT_RECORDS, OUT_RECORDS_HELP,
                    "result=\"other_gateway\""),
    WSG_COUNTER_ROW(gw_kafka, m_out_invalid, OUT_RECORDS, OUT_RECORDS_HELP, "result=\"invalid\""),
    WSG_COUNTER_ROW(gw_kafka, m_out_kind, OUT_RECORDS, OUT_RECORDS_HELP, "result=\"wrong_type\""),
    WSG_COUNTER_ROW(gw_kafka, m_out_errors, "wsgate_gateway_outbound_errors_total",
                    "Outbound consumer errors (fetch errors, out of memory).", NULL),
    WSG_HISTOGRAM_ROW(gw_kafka, m_hop_acked, "wsgate_gateway_hop_inbound_acked_seconds",
                      "Hop 1: from producing an inbound envelope (as its frame is read, unless the "
                      "gateway held it) to Kafka's acknowledgement.",
                      NULL, hop_bounds),
    WSG_GAUGE_ROW(gw_kafka, m_outq, "wsgate_gateway_outbound_queue",
                  "Outbound envelopes waiting for the WebSocket thread.", NULL),
    WSG_COUNTER_ROW(
        gw_kafka, m_out_pauses, "wsgate_gateway_outbound_pauses_total",
        "Times the outbound partition was paused because the WebSocket thread fell behind.", NULL),
};

const wsg_metric_table gw_kafka_metric_table = WSG_METRIC_TABLE("gateway/gw_kafka.c", metric_rows);

/* Whether the user's -X list names key (its alias included by the caller). */
static bool props_set(const wsg_kvlist *props, const char *key) {
  for (size_t i = 0; props && i < props->count; i++)
    if (strcmp(props->keys[i], key) == 0)
      return true;
  return false;
}

int gw_kafka_create(gw_kafka **out, const gw_kafka_options *o, char *err, size_t errlen) {
  *out = NULL;
  if (!o->loop || !o->inbound_topic || !o->outbound_topic || !o->gw_id || o->outbound_queue == 0 ||
      o->outbound_queue_bytes == 0) {
    snprintf(err, errlen, "gw_kafka_create: missing option");
    return GW_KAFKA_CONFIG;
  }
  gw_kafka *k = calloc(1, sizeof *k);
  if (!k) {
    snprintf(err, errlen, "out of memory");
    return GW_KAFKA_NOMEM;
  }
  k->o = *o;
  atomic_init(&k->stop, false);
  atomic_init(&k->desired_slot, -1);
  atomic_init(&k->assigned_slot, -1);
  k->pos_slot = -1;
  atomic_init(&k->brokers_up, false);
  pthread_mutex_init(&k->mu, NULL);
  pthread_cond_init(&k->cv, NULL);
  int rc = GW_KAFKA_NOMEM;
  k->in_topic = strdup(o->inbound_topic);
  k->out_topic = strdup(o->outbound_topic);
  k->gw_id = strdup(o->gw_id);
  k->cap = o->outbound_queue;
  k->ring = calloc(k->cap, sizeof *k->ring);
  if (!k->in_topic || !k->out_topic || !k->gw_id || !k->ring) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  k->gw_id_len = strlen(k->gw_id);
  wsg_metrics_register_table(o->metrics, &gw_kafka_metric_table, k);

  /* --- producer --- */
  rc = GW_KAFKA_CONFIG;
  rd_kafka_conf_t *conf = wsg_kafka_conf_new(WSG_KAFKA_PRODUCER, o->brokers, o->props, err, errlen);
  if (!conf)
    goto fail;
  if (o->producer_linger_ms && !props_set(o->props, "linger.ms") &&
      !props_set(o->props, "queue.buffering.max.ms")) {
    if (wsg_kafka_conf_set(conf, "linger.ms", o->producer_linger_ms, err, errlen) != 0) {
      rd_kafka_conf_destroy(conf);
      goto fail;
    }
    WSG_INFO("kafka", "inbound producer linger.ms=%s (direct replies: the one Kafka hop left)",
             o->producer_linger_ms);
  }
  /* Pause clients at 3/4 of librdkafka's own limits and resume at 1/2: QUEUE_FULL then stays an
   * exception (a burst between two polls) rather than the steady state. */
  uint64_t max_msgs = conf_u64(conf, "queue.buffering.max.messages", 100000);
  uint64_t max_bytes = conf_u64(conf, "queue.buffering.max.kbytes", 65536) * 1024;
  k->high_msgs = max_msgs * 3 / 4;
  k->low_msgs = max_msgs / 2;
  k->high_bytes = max_bytes * 3 / 4;
  k->low_bytes = max_bytes / 2;
  rd_kafka_conf_set_opaque(conf, k);
  rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
  rd_kafka_conf_set_error_cb(conf, error_cb);
  k->producer = wsg_kafka_new(RD_KAFKA_PRODUCER, conf, err, errlen);
  if (!k->producer)
    goto fail;
  k->in_rkt = rd_kafka_topic_new(k->producer, k->in_topic, NULL);
  if (!k->in_rkt) {
    snprintf(err, errlen, "topic %s: %s", k->in_topic, rd_kafka_err2str(rd_kafka_last_error()));
    goto fail;
  }

  /* Delivery reports on the loop thread, woken by librdkafka itself through a pipe. */
  k->main_ev =
      gw_kafka_ev_create(o->loop, rd_kafka_queue_get_main(k->producer), serve_main, k, err, errlen);
  if (!k->main_ev)
    goto fail;

  /* --- outbound consumer --- */
  conf = wsg_kafka_conf_new(WSG_KAFKA_CONSUMER_ASSIGN, o->brokers, o->props, err, errlen);
  if (!conf)
    goto fail;
  /* Ask for EOF events never: an idle partition is normal. */
  if (wsg_kafka_conf_set(conf, "enable.partition.eof", "false", err, errlen) != 0) {
    rd_kafka_conf_destroy(conf);
    goto fail;
  }
  k->consumer = wsg_kafka_new(RD_KAFKA_CONSUMER, conf, err, errlen);
  if (!k->consumer)
    goto fail;
  rd_kafka_poll_set_consumer(k->consumer);
  if (o->outbound_on_loop) {
    /* The consumer queue, which the main queue now forwards to: the final queue, the only one
     * librdkafka signals (docs/notes/librdkafka-2.0.2.md#event-delivery). */
    rd_kafka_queue_t *cq = rd_kafka_queue_get_consumer(k->consumer);
    if (!cq) {
      snprintf(err, errlen, "the outbound consumer has no consumer queue");
      goto fail;
    }
    k->out_ev = gw_kafka_ev_create(o->loop, cq, loop_serve, k, err, errlen);
    if (!k->out_ev)
      goto fail;
    WSG_INFO("kafka",
             "outbound records are read on the WebSocket thread (--outbound-consume loop)");
  }

  if (pthread_create(&k->thread, NULL, consumer_main, k) != 0) {
    snprintf(err, errlen, "cannot start the outbound consumer thread");
    rc = GW_KAFKA_THREAD;
    goto fail;
  }
  /* Named beside librdkafka's rdk:* threads so top -H and the bench's per-thread CPU tell it from
   * the event loop (a name is a hint: failing to set it changes nothing). */
  (void)pthread_setname_np(k->thread, "gw:outbound");
  k->thread_started = true;
  *out = k;
  return GW_KAFKA_OK;
fail:
  gw_kafka_destroy(k);
  return rc;
}

/* Partitions of one of our topics (`which` names it in the message), or a gw_kafka_err. */
static int check_topic(gw_kafka *k, const char *topic, const char *which, int timeout_ms,
                       const volatile sig_atomic_t *stop, char *err, size_t errlen) {
  char e[512];
  int n = wsg_kafka_topic_partitions_until(k->producer, topic, timeout_ms, stop, e, sizeof e);
  if (n == WSG_KAFKA_STOPPED) {
    snprintf(err, errlen, "%s", e);
    return GW_KAFKA_STOPPED;
  }
  if (n < 0) {
    snprintf(err, errlen, "%s topic: %s (create it with wsgate-admin or scripts/kafka)", which, e);
    return GW_KAFKA_TOPIC;
  }
  return n;
}

int gw_kafka_check_topics(gw_kafka *k, int timeout_ms, const volatile sig_atomic_t *stop, char *err,
                          size_t errlen) {
  int n = check_topic(k, k->in_topic, "inbound", timeout_ms, stop, err, errlen);
  if (n < 0)
    return n;
  n = check_topic(k, k->out_topic, "outbound", timeout_ms, stop, err, errlen);
  if (n < 0)
    return n;
  atomic_store_explicit(&k->brokers_up, true, memory_order_relaxed);
  wsg_gauge_set(k->m_brokers_up, 1);
  return n;
}

void gw_kafka_stop_consumer(gw_kafka *k) {
  if (!k)
    return;
  gw_kafka_ev_stop(k->out_ev); /* no drain into a server that is going away */
  if (!k->thread_started)
    return;
  pthread_mutex_lock(&k->mu);
  atomic_store(&k->stop, true);
  pthread_cond_broadcast(&k->cv);
  pthread_mutex_unlock(&k->mu);
  pthread_join(k->thread, NULL);
  k->thread_started = false;
}

void gw_kafka_destroy(gw_kafka *k) {
  if (!k)
    return;
  gw_kafka_stop_consumer(k);
  k->closing = true;
  gw_kafka_ev_destroy(k->out_ev); /* its queue must go before rd_kafka_consumer_close */
  k->out_ev = NULL;
  if (k->consumer) {
    rd_kafka_consumer_close(k->consumer);
    rd_kafka_destroy(k->consumer);
  }
  gw_kafka_ev_stop(k->main_ev);
  if (k->producer) {
    /* The drain flushed what it could; anything left would only delay the exit. */
    rd_kafka_poll(k->producer, 0);
    if (k->unacked_msgs)
      WSG_WARN("kafka", "%llu inbound envelopes were not acknowledged by Kafka before exit",
               (unsigned long long)k->unacked_msgs);
    k->o.on_delivery_failed = NULL;
    rd_kafka_purge(k->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    gw_kafka_ev_destroy(k->main_ev); /* detaches and destroys the main queue, closes the pipe */
    if (k->in_rkt)
      rd_kafka_topic_destroy(k->in_rkt);
    rd_kafka_destroy(k->producer);
  }
  if (k->ring) {
    for (size_t i = 0; i < k->count; i++)
      gw_outbound_finish(&k->ring[(k->head + i) % k->cap]);
    free(k->ring);
  }
  pthread_mutex_destroy(&k->mu);
  pthread_cond_destroy(&k->cv);
  free(k->in_topic);
  free(k->out_topic);
  free(k->gw_id);
  free(k);
}
