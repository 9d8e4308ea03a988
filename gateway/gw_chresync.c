/*
 * gw_chresync: after each Redis (re)connect of the channel registry, write again what this
 * gateway holds, since Redis may have restarted empty (docs/ARCHITECTURE.md, "Channels"): every
 * subscription's presence entry (namespaces with presence=true) and every channel's member in its
 * gateway set. Paced like the registry's route rewrite: a pass walks a snapshot of the connection
 * ids, --channel-resync-rate subscriptions a second in 10 ms ticks, so a gateway of a million
 * subscriptions does not drop them on Redis in one burst. A connection gone since the snapshot is
 * skipped (its HDELs already went); one that subscribes during a pass writes its own entries, and
 * its channel's set member when the pass has not written it yet (gw_chresync_due), so nothing held
 * when the pass ends is missing. A reconnect during a pass starts a new one.
 *
 * Threads: the loop thread only.
 */
#include <stdio.h>
#include <stdlib.h>

#include "gw_metrics.h"
#include "gw_session.h"

#define TICK_S 0.01 /* 100 ticks a second */

typedef struct gw_chresync {
  gw_server *s; /* borrowed: owns this */
  ev_timer w;
  uint64_t *ids; /* owned: the pass's snapshot of connection ids, NULL between passes */
  size_t n, pos;
  uint32_t gen; /* the current (or last) pass; channels written by it carry it */
  wsg_counter *m_presence, *m_sets, *m_passes;
  wsg_gauge *m_remaining;
} gw_chresync;

#define RESYNC      "wsgate_gateway_channel_resync_total"
#define RESYNC_HELP "Entries written again after a Redis (re)connect, by kind."

static const wsg_metric_def metric_rows[] = {
    WSG_COUNTER_ROW(gw_chresync, m_presence, RESYNC, RESYNC_HELP, "what=\"presence\""),
    WSG_COUNTER_ROW(gw_chresync, m_sets, RESYNC, RESYNC_HELP, "what=\"gateway_set\""),
    WSG_COUNTER_ROW(gw_chresync, m_passes, "wsgate_gateway_channel_resync_passes_total",
                    "Rewrite passes started (one per Redis (re)connect of the channel registry).",
                    NULL),
    WSG_GAUGE_ROW(gw_chresync, m_remaining, "wsgate_gateway_channel_resync_remaining",
                  "Connections the current rewrite pass has yet to visit (0: none running).", NULL),
};

const wsg_metric_table gw_chresync_metric_table =
    WSG_METRIC_TABLE("gateway/gw_chresync.c", metric_rows);

static void end_pass(gw_chresync *r) {
  ev_timer_stop(r->s->o.loop, &r->w);
  free(r->ids);
  r->ids = NULL;
  r->n = r->pos = 0;
  wsg_gauge_set(r->m_remaining, 0);
}

/* Writes one connection's subscriptions; returns how many. */
static uint32_t write_conn(gw_chresync *r, gw_session *ss) {
  gw_server *s = r->s;
  uint32_t k = 0;
  for (gw_chsub *sub = ss->subs; sub; sub = gw_chsub_snext(sub), k++) {
    gw_channel *ch = gw_chsub_channel(sub);
    size_t len;
    const char *name = gw_channel_name(ch, &len);
    gw_chpos *pos = gw_channel_pos(ch);
    if (pos->resync_gen != r->gen) { /* the count before the entries: gw_chreg_presence */
      pos->resync_gen = r->gen;
      gw_chreg_update(s->chreg, name, len, true);
      if (wsg_chns_of(s->chns, name, len)->presence)
        gw_chreg_presence_count(s->chreg, name, len, gw_channel_nsubs(ch));
      wsg_counter_add(r->m_sets, 1);
    }
    if (ss->user && wsg_chns_of(s->chns, name, len)->presence) {
      gw_chreg_presence(s->chreg, name, len, ss->conn_id, ss->user->id, true);
      wsg_counter_add(r->m_presence, 1);
    }
  }
  return k;
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents) {
  gw_chresync *r = w->data;
  gw_server *s = r->s;
  int64_t budget = s->cfg->channel_resync_rate / 100;
  if (budget < 1)
    budget = 1;
  while (r->pos < r->n && budget > 0) {
    gw_session *ss = gw_conn_map_get(&s->conns, r->ids[r->pos++]);
    if (ss && !(ss->flags & F_RELEASED))
      budget -= write_conn(r, ss) + 1; /* + 1: a connection without subscriptions costs a look */
  }
  wsg_gauge_set(r->m_remaining, (int64_t)(r->n - r->pos));
  if (r->pos >= r->n)
    end_pass(r);
}

static void emit_add(void *arg, const char *name, size_t len) {
  gw_chreg_update(arg, name, len, true);
}

void gw_chresync_start(void *server) {
  gw_server *s = server;
  gw_chresync *r = s->chresync;
  end_pass(r);
  r->gen = r->gen + 1 ? r->gen + 1 : 1; /* 0 is "never written" */
  wsg_counter_add(r->m_passes, 1);
  size_t cap = 0, pos = 0;
  uint64_t id;
  void *val;
  for (size_t p = 0; gw_conn_map_next(&s->conns, &p, &id, &val);)
    cap++;
  r->ids = malloc((cap ? cap : 1) * sizeof *r->ids);
  if (!r->ids) {
    /* Out of memory: the channels' sets at least, in one burst; presence waits for the next
     * reconnect (readers only lose entries, never see wrong ones). */
    WSG_WARN("chresync", "out of memory for a rewrite pass of %zu connections", cap);
    gw_channels_foreach(s->channels, emit_add, s->chreg);
    return;
  }
  while (r->n < cap && gw_conn_map_next(&s->conns, &pos, &id, &val))
    r->ids[r->n++] = id;
  wsg_gauge_set(r->m_remaining, (int64_t)r->n);
  ev_timer_set(&r->w, 0., TICK_S);
  ev_timer_start(s->o.loop, &r->w);
}

bool gw_chresync_due(gw_server *s, const char *name, size_t len) {
  gw_chresync *r = s->chresync;
  if (!r || !r->ids)
    return false;
  gw_channel *ch = gw_channels_find(s->channels, name, len);
  gw_chpos *pos = ch ? gw_channel_pos(ch) : NULL;
  if (!pos || pos->resync_gen == r->gen)
    return false;
  pos->resync_gen = r->gen;
  return true;
}

int gw_chresync_init(gw_server *s, char *err, size_t errlen) {
  gw_chresync *r = calloc(1, sizeof *r);
  if (!r) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  r->s = s;
  ev_init(&r->w, on_tick);
  r->w.data = r;
  wsg_metrics_register_table(s->o.metrics, &gw_chresync_metric_table, r);
  s->chresync = r;
  return 0;
}

void gw_chresync_finish(gw_server *s) {
  if (!s->chresync)
    return;
  end_pass(s->chresync);
  free(s->chresync);
  s->chresync = NULL;
}
