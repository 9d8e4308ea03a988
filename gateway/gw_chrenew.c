/*
 * gw_chrenew: keeps the TTL of the channel keys this gateway holds (docs/ARCHITECTURE.md,
 * "Lifetime of a channel's keys"). Every key a gateway writes for a channel (its member of :gws,
 * its :pc count, its :p:<member> hash) carries --channel-key-ttl, so what a crashed gateway left
 * expires; a live gateway renews them here, each channel once per --channel-key-renew.
 *
 * The walk is a clock hand over the channel index (gw_channels_sweep): every tick it visits its
 * share of the channels, count x tick / period, so the load is even (50,000 channels every 6 h:
 * 2.3 channels a second) and no snapshot is kept. A channel is one pipeline of plain commands on
 * its own hash slot (gw_chreg_renew); at most RENEW_INFLIGHT channels wait for Redis, the share of
 * a tick beyond waits for the next tick (credit kept up to that bound, so a slow Redis is not
 * answered with a burst): at most 2,560 channels a second, a lap of a million in 7 minutes. While
 * the channel registry's Redis is not ready the hand stops: nothing is counted and nothing is lost,
 * since the reconnect's rewrite (gw_chresync) writes every key again with its TTL; then the hand
 * goes on where it stopped.
 *
 * The tick runs only while channels are held: the tick that finds none stops it, and the first
 * channel created starts it again (gw_chrenew_wake). Nothing is missed while it is off: there was
 * nothing to renew, and a new channel's keys are written with their TTL when it is created.
 *
 * A failure is counted and logged once per lap (a lap: as many visits as channels when it began).
 * One failed renewal is harmless: the TTL is at least twice the period, and the next lap renews.
 *
 * Threads: the loop thread only.
 */
#include <stdio.h>
#include <stdlib.h>

#include "gw_metrics.h"
#include "gw_session.h"
#include "wsg_redis_cluster.h"

#define TICK_S         0.1 /* 10 ticks a second: even at the smallest period (1 s) */
#define RENEW_INFLIGHT 256 /* channels waiting for Redis, at most; also the most per tick */

typedef struct gw_chrenew {
  gw_server *s; /* borrowed: owns this */
  ev_timer w;
  double credit;      /* channels owed to the walk, fractions included */
  uint32_t inflight;  /* renewals waiting for Redis */
  uint64_t lap_left;  /* visits until this lap ends */
  uint64_t lap_fails; /* failures seen in this lap */
  wsg_counter *m_ok, *m_failed, *m_skipped, *m_laps;
} gw_chrenew;

#define RENEWALS "wsgate_gateway_channel_key_renewals_total"
#define RENEWALS_HELP                                                                              \
  "Channels whose Redis keys' TTL this gateway renewed (--channel-key-renew), by result: ok, "     \
  "failed (an error or a lost reply) or skipped (the channel's Redis node not connected)."

static const wsg_metric_def metric_rows[] = {
    WSG_COUNTER_ROW(gw_chrenew, m_ok, RENEWALS, RENEWALS_HELP, "result=\"ok\""),
    WSG_COUNTER_ROW(gw_chrenew, m_failed, RENEWALS, RENEWALS_HELP, "result=\"failed\""),
    WSG_COUNTER_ROW(gw_chrenew, m_skipped, RENEWALS, RENEWALS_HELP, "result=\"skipped\""),
    WSG_COUNTER_ROW(gw_chrenew, m_laps, "wsgate_gateway_channel_key_renew_laps_total",
                    "Laps of the channel key renewal walk completed (each channel held once).",
                    NULL),
};

const wsg_metric_table gw_chrenew_metric_table =
    WSG_METRIC_TABLE("gateway/gw_chrenew.c", metric_rows);

static void failed(gw_chrenew *r) {
  wsg_counter_add(r->m_failed, 1);
  r->lap_fails++;
}

static void on_renewed(void *arg, bool ok, bool destroyed) {
  if (destroyed)
    return; /* shutting down: r may be gone */
  gw_chrenew *r = arg;
  r->inflight--;
  if (ok)
    wsg_counter_add(r->m_ok, 1);
  else
    failed(r);
}

/* A lap ends after as many visits as there were channels when it began. */
static void lap_visited(gw_chrenew *r) {
  if (r->lap_left > 0 && --r->lap_left > 0)
    return;
  if (r->lap_fails > 0)
    WSG_WARN("chrenew",
             "%llu channel key renewals failed in the last walk (of %zu channels held); their "
             "keys keep the TTL of their last write (--channel-key-ttl) and the next walk "
             "retries; see wsgate_gateway_channel_redis_commands_total",
             (unsigned long long)r->lap_fails, gw_channels_count(r->s->channels));
  wsg_counter_add(r->m_laps, 1);
  r->lap_fails = 0;
  r->lap_left = gw_channels_count(r->s->channels);
}

static void visit(void *arg, gw_channel *ch) {
  gw_chrenew *r = arg;
  gw_server *s = r->s;
  size_t len;
  const char *name = gw_channel_name(ch, &len);
  uint64_t n = wsg_chns_of(s->chns, name, len)->presence ? gw_channel_nsubs(ch) : 0;
  if (gw_chreg_renew(s->chreg, name, len, n, on_renewed, r) == 0)
    r->inflight++;
  else
    wsg_counter_add(r->m_skipped, 1); /* its node reconnects, and gw_chresync rewrites it */
  lap_visited(r);
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)revents;
  gw_chrenew *r = w->data;
  gw_server *s = r->s;
  size_t count = gw_channels_count(s->channels);
  if (count == 0) {
    ev_timer_stop(loop, w); /* idle: no wake-ups until a channel is created */
    return;
  }
  if (!wsg_redis_cluster_ready(gw_chreg_conn(s->chreg))) {
    r->credit = 0; /* the hand waits; the reconnect rewrites every key with its TTL */
    return;
  }
  r->credit += (double)count * TICK_S * 1000.0 / (double)s->cfg->channel_key_renew_ms;
  if (r->credit > RENEW_INFLIGHT)
    r->credit = RENEW_INFLIGHT;
  size_t room = RENEW_INFLIGHT - r->inflight, n = (size_t)r->credit;
  if (n > room)
    n = room;
  if (r->lap_left == 0)
    r->lap_left = count;
  r->credit -= (double)gw_channels_sweep(s->channels, n, visit, r);
}

int gw_chrenew_init(gw_server *s, char *err, size_t errlen) {
  gw_chrenew *r = calloc(1, sizeof *r);
  if (!r) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  r->s = s;
  ev_timer_init(&r->w, on_tick, TICK_S, TICK_S);
  r->w.data = r;
  wsg_metrics_register_table(s->o.metrics, &gw_chrenew_metric_table, r);
  s->chrenew = r; /* the tick starts with the first channel (gw_chrenew_wake) */
  return 0;
}

void gw_chrenew_wake(gw_server *s) {
  gw_chrenew *r = s->chrenew;
  if (r && !ev_is_active(&r->w)) {
    ev_timer_set(&r->w, TICK_S, TICK_S);
    ev_timer_start(s->o.loop, &r->w);
  }
}

void gw_chrenew_finish(gw_server *s) {
  gw_chrenew *r = s->chrenew;
  if (!r)
    return;
  ev_timer_stop(s->o.loop, &r->w);
  free(r);
  s->chrenew = NULL;
}
