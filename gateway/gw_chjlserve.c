/*
 * gw_chjlserve: join/leave events through the cluster (docs/ARCHITECTURE.md, "Channels"; the
 * batch and its frames are gw_chjl.c's). Two maps, channel name -> batch:
 *
 *   out: events of this gateway's own connections (subscribe, unsubscribe, end), produced every
 *        50 ms as one `joinleave` record per channel to the inbound topic (key: the channel, so
 *        a channel's batches keep their order); a processor addresses it to each gateway with
 *        subscribers, like a publication but stored nowhere;
 *   in:  batches from those records for this gateway's subscribers. A channel with fewer than
 *        --channel-join-leave-threshold local subscribers gets each batch at once; a larger
 *        one at most one frame per --channel-join-leave-interval, the batches in between merged
 *        (past GW_CHJL_LIST_MAX events, counts only).
 *
 * Cost per event: one name in a batch; per batch, one Kafka record in, one per gateway out, one
 * frame per subscriber (shared, encoded once per format). Nothing per subscriber in Kafka or
 * Redis. Bounded: at most JL_PENDING_MAX channels wait in each map (beyond, events are dropped
 * and counted), each batch at most GW_CHJL_LIST_MAX names. Events are not part of the channel's
 * history or offsets and are never recovered.
 *
 * Threads: the loop thread only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_chjl.h"
#include "gw_metrics.h"
#include "gw_session.h"
#include "wsg_time.h"

#define TICK_S         0.05
#define JL_BUCKETS     4096
#define JL_PENDING_MAX 10000 /* channels waiting per map */

typedef struct jl_entry {
  struct jl_entry *hnext;       /* its bucket's chain */
  struct jl_entry *next, *prev; /* every entry of the map */
  uint64_t last_ms;             /* in: when its channel's last frame was written (0: never) */
  gw_chjl_batch b;
  size_t len;
  char name[];
} jl_entry;

typedef struct {
  jl_entry *buckets[JL_BUCKETS];
  jl_entry *head;
  size_t n;
} jl_map;

typedef struct gw_chjlserve {
  gw_server *s; /* borrowed: owns this */
  ev_timer w;
  jl_map out, in;
  wsg_counter *m_joined, *m_left, *m_produced, *m_produce_failed, *m_frames;
  wsg_counter *m_drop_full, *m_drop_bad, *m_nobody;
  wsg_gauge *m_pending;
} gw_chjlserve;

#define JL_EVENTS       "wsgate_gateway_channel_joinleave_events_total"
#define JL_BATCHES      "wsgate_gateway_channel_joinleave_batches_total"
#define JL_DROPPED      "wsgate_gateway_channel_joinleave_dropped_total"
#define JL_EVENTS_HELP  "Join/leave events of this gateway's connections, batched for Kafka."
#define JL_BATCHES_HELP "joinleave records (one channel's batch) produced to the inbound topic."
#define JL_DROPPED_HELP "Join/leave events or batches not passed on, by reason."

static const wsg_metric_def metric_rows[] = {
    WSG_COUNTER_ROW(gw_chjlserve, m_joined, JL_EVENTS, JL_EVENTS_HELP, "event=\"joined\""),
    WSG_COUNTER_ROW(gw_chjlserve, m_left, JL_EVENTS, JL_EVENTS_HELP, "event=\"left\""),
    WSG_COUNTER_ROW(gw_chjlserve, m_produced, JL_BATCHES, JL_BATCHES_HELP, "result=\"produced\""),
    WSG_COUNTER_ROW(gw_chjlserve, m_produce_failed, JL_BATCHES, JL_BATCHES_HELP,
                    "result=\"failed\""),
    WSG_COUNTER_ROW(gw_chjlserve, m_frames, "wsgate_gateway_channel_joinleave_frames_total",
                    "presence_change frames queued to subscribers.", NULL),
    WSG_COUNTER_ROW(gw_chjlserve, m_drop_full, JL_DROPPED, JL_DROPPED_HELP,
                    "reason=\"pending_limit\""),
    WSG_COUNTER_ROW(gw_chjlserve, m_drop_bad, JL_DROPPED, JL_DROPPED_HELP, "reason=\"bad_batch\""),
    WSG_COUNTER_ROW(gw_chjlserve, m_nobody, JL_DROPPED, JL_DROPPED_HELP,
                    "reason=\"no_subscriber\""),
    WSG_GAUGE_ROW(gw_chjlserve, m_pending, "wsgate_gateway_channel_joinleave_pending",
                  "Channels with a join/leave batch waiting (to be produced, or to be written).",
                  NULL),
};

const wsg_metric_table gw_chjlserve_metric_table =
    WSG_METRIC_TABLE("gateway/gw_chjlserve.c", metric_rows);

/* ---- the maps ------------------------------------------------------------------------------ */

static size_t bucket_of(const char *name, size_t len) {
  uint64_t h = 14695981039346656037ull; /* FNV-1a */
  for (size_t i = 0; i < len; i++)
    h = (h ^ (uint8_t)name[i]) * 1099511628211ull;
  return (size_t)(h % JL_BUCKETS);
}

static jl_entry *map_find(const jl_map *m, const char *name, size_t len) {
  for (jl_entry *e = m->buckets[bucket_of(name, len)]; e; e = e->hnext)
    if (e->len == len && memcmp(e->name, name, len) == 0)
      return e;
  return NULL;
}

/* The entry, created when missing; NULL at JL_PENDING_MAX or out of memory. */
static jl_entry *map_get(jl_map *m, const char *name, size_t len) {
  jl_entry *e = map_find(m, name, len);
  if (e || m->n >= JL_PENDING_MAX || !(e = malloc(sizeof *e + len + 1)))
    return e;
  memcpy(e->name, name, len);
  e->name[len] = '\0';
  e->len = len;
  e->last_ms = 0;
  gw_chjl_init(&e->b);
  size_t k = bucket_of(name, len);
  e->hnext = m->buckets[k];
  m->buckets[k] = e;
  e->prev = NULL;
  e->next = m->head;
  if (m->head)
    m->head->prev = e;
  m->head = e;
  m->n++;
  return e;
}

static void map_del(jl_map *m, jl_entry *e) {
  jl_entry **p = &m->buckets[bucket_of(e->name, e->len)];
  while (*p != e)
    p = &(*p)->hnext;
  *p = e->hnext;
  if (e->prev)
    e->prev->next = e->next;
  else
    m->head = e->next;
  if (e->next)
    e->next->prev = e->prev;
  m->n--;
  gw_chjl_clear(&e->b);
  free(e);
}

static void map_clear(jl_map *m) {
  while (m->head)
    map_del(m, m->head);
}

/* ---- out: this gateway's events to Kafka ---------------------------------------------------- */

static void arm(gw_chjlserve *j) {
  wsg_gauge_set(j->m_pending, (int64_t)(j->out.n + j->in.n));
  if (!ev_is_active(&j->w) && (j->out.n || j->in.n)) {
    ev_timer_set(&j->w, TICK_S, TICK_S);
    ev_timer_start(j->s->o.loop, &j->w);
  }
}

void gw_chjlserve_local(gw_server *s, const gw_session *ss, const char *name, size_t len,
                        bool joined) {
  gw_chjlserve *j = s->chjl;
  if (!j || !ss->user || !wsg_chns_of(s->chns, name, len)->join_leave)
    return;
  jl_entry *e = map_get(&j->out, name, len);
  if (!e) {
    wsg_counter_add(j->m_drop_full, 1);
    return;
  }
  gw_chjl_add(&e->b, ss->user->id, ss->user->len, joined);
  wsg_counter_add(joined ? j->m_joined : j->m_left, 1);
  arm(j);
}

void gw_chjlserve_release(gw_server *s, const gw_session *ss) {
  for (gw_chsub *sub = ss->subs; sub; sub = gw_chsub_snext(sub)) {
    size_t len;
    const char *name = gw_channel_name(gw_chsub_channel(sub), &len);
    gw_chjlserve_local(s, ss, name, len, false);
  }
}

/* Produces e's batch; false when Kafka's queue is full (kept for the next tick). */
static bool produce(gw_chjlserve *j, const jl_entry *e) {
  gw_server *s = j->s;
  uint8_t *d = NULL;
  size_t n = gw_chjl_encode(&e->b, &d);
  wsg_envelope env = {
      .kind = WSG_ENV_JOINLEAVE,
      .version = WSG_ENVELOPE_VERSION,
      .fields = WSG_F_GATEWAY | WSG_F_SLOT | WSG_F_CHANNEL | WSG_F_TS | WSG_F_DATA | WSG_F_BINARY,
      .gateway = s->cfg->gateway_id,
      .gateway_len = strlen(s->cfg->gateway_id),
      .slot = s->slot >= 0 ? (uint32_t)s->slot : 0,
      .channel = e->name,
      .channel_len = e->len,
      .ts_us = gw_clock_wall_us(&s->clock),
      .data = d,
      .data_len = n,
      .binary = true,
  };
  int rc = n ? wsg_envelope_encode(&env, &s->enc) : WSG_ENV_NOMEM;
  free(d);
  if (rc != WSG_ENV_OK) {
    wsg_counter_add(j->m_produce_failed, 1);
    return true;
  }
  /* Connection id 0: a failed delivery closes no one (the batch is lost, as events may be). */
  rc = gw_kafka_produce(s->o.kafka, e->name, e->len, s->enc.data, s->enc.len, 0);
  if (rc == GW_KAFKA_FULL)
    return false;
  wsg_counter_add(rc == GW_KAFKA_OK ? j->m_produced : j->m_produce_failed, 1);
  return true;
}

/* ---- in: batches to this gateway's subscribers ------------------------------------------- */

static void write_frames(gw_chjlserve *j, const char *name, size_t len, const gw_chjl_batch *b,
                         uint64_t now_ms) {
  gw_server *s = j->s;
  gw_channel *ch = gw_channels_find(s->channels, name, len);
  if (!ch || gw_chjl_empty(b))
    return;
  gw_msg *f[2] = {NULL, NULL}; /* JSON, MessagePack: encoded once each, shared */
  for (const gw_chsub *sub = gw_channel_first(ch); sub;) {
    const gw_chsub *next = gw_chsub_next(sub); /* queueing may close, never unsubscribe */
    bool mp = gw_chsub_flags(sub) & GW_CHSUB_MSGPACK;
    gw_session *ss = gw_conn_map_get(&s->conns, gw_chsub_conn(sub));
    if (ss && !(ss->flags & (F_CLOSING | F_RELEASED)) &&
        (f[mp] || (f[mp] = gw_chjl_frame(b, name, len, mp))) &&
        gw_outbound_queue(s, ss, f[mp], 0, now_ms)) /* tag 0: outside a +seq user's sequence */
      wsg_counter_add(j->m_frames, 1);
    sub = next;
  }
  gw_msg_unref(f[0]);
  gw_msg_unref(f[1]);
}

void gw_chjlserve_dispatch(gw_server *s, const gw_outbound *it, uint64_t now_ms) {
  gw_chjlserve *j = s->chjl;
  const char *name = it->user;
  size_t len = it->user_len;
  gw_channel *ch = gw_channels_find(s->channels, name, len);
  if (!j || !ch) {
    if (j)
      wsg_counter_add(j->m_nobody, 1);
    return;
  }
  const uint8_t *d = gw_msg_payload(it->msg);
  size_t n = gw_msg_len(it->msg);
  jl_entry *e = map_find(&j->in, name, len);
  uint64_t threshold = (uint64_t)s->cfg->channel_jl_threshold;
  if (!e && (threshold == 0 || gw_channel_nsubs(ch) >= threshold))
    e = map_get(&j->in, name, len); /* NULL at the limit: written at once below */
  if (!e) {
    gw_chjl_batch b;
    gw_chjl_init(&b);
    if (gw_chjl_merge(&b, d, n) != 0)
      wsg_counter_add(j->m_drop_bad, 1);
    else
      write_frames(j, name, len, &b, now_ms);
    gw_chjl_clear(&b);
    return;
  }
  if (gw_chjl_merge(&e->b, d, n) != 0) {
    wsg_counter_add(j->m_drop_bad, 1);
    return;
  }
  if (e->last_ms == 0 || now_ms >= e->last_ms + s->cfg->channel_jl_interval_ms) {
    write_frames(j, name, len, &e->b, now_ms);
    gw_chjl_clear(&e->b);
    e->last_ms = now_ms;
  }
  arm(j);
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents) {
  gw_chjlserve *j = w->data;
  uint64_t now_ms = wsg_now_mono_ms(), interval = j->s->cfg->channel_jl_interval_ms;
  for (jl_entry *e = j->out.head, *next; e; e = next) {
    next = e->next;
    if (!produce(j, e))
      break; /* Kafka's queue is full: the rest waits for the next tick */
    map_del(&j->out, e);
  }
  for (jl_entry *e = j->in.head, *next; e; e = next) {
    next = e->next;
    if (now_ms < e->last_ms + interval)
      continue;
    if (gw_chjl_empty(&e->b)) {
      map_del(&j->in, e); /* a quiet interval: the next batch is written at once */
      continue;
    }
    write_frames(j, e->name, e->len, &e->b, now_ms);
    gw_chjl_clear(&e->b);
    e->last_ms = now_ms;
  }
  if (!j->out.n && !j->in.n)
    ev_timer_stop(loop, w);
  wsg_gauge_set(j->m_pending, (int64_t)(j->out.n + j->in.n));
}

int gw_chjlserve_init(gw_server *s, char *err, size_t errlen) {
  gw_chjlserve *j = calloc(1, sizeof *j);
  if (!j) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  j->s = s;
  ev_init(&j->w, on_tick);
  j->w.data = j;
  wsg_metrics_register_table(s->o.metrics, &gw_chjlserve_metric_table, j);
  s->chjl = j;
  return 0;
}

void gw_chjlserve_finish(gw_server *s) {
  gw_chjlserve *j = s->chjl;
  if (!j)
    return;
  ev_timer_stop(s->o.loop, &j->w);
  map_clear(&j->out); /* events not produced yet are lost with the gateway, as documented */
  map_clear(&j->in);
  free(j);
  s->chjl = NULL;
}
