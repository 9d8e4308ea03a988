/*
 * gw_chrecover: a subscribe with `since: {offset, epoch}` (docs/PROTOCOL.md, "Channels"): the
 * publications the client missed are read from the channel's history in pages and queued to it,
 * then it joins the live stream with nothing lost or repeated.
 *
 * The subscription is made first (so its gateway set entry, SADD, precedes the reads on the same
 * Redis connection: a publication stored after a read is routed here) and flagged RECOVERING:
 * live publications skip it. Pages (GW_CHHIST_PAGE_MAX entries, a quarter of --sendq-soft) are
 * read while the client's send queue has room; the next page waits on a short timer otherwise,
 * so a history larger than the send queue never closes the client as a slow consumer. When a
 * page ends the history and the gateway has delivered live nothing newer than what was read, the
 * subscription goes live from the next offset (gw_chsub_set_from drops the live ones it has).
 * The answer ("subscribed" with recovered, epoch, offset) comes before the first replayed frame;
 * recovered is false when the epoch changed or the history no longer starts right after
 * `offset`: the client then resynchronises from its own source of truth. `since` with epoch 0
 * (offset 0) is "before the channel's first publication": recovered while offset 1 is still held.
 *
 * A new subscription without `since` on a channel whose position this gateway does not know
 * (`fresh`) takes the same path: the first read returns only the channel's epoch and last
 * offset, which the answer carries (no "recovered") and the live stream continues after; what
 * came live meanwhile is read like a replay. The client then has a position to recover from
 * even before its first publication.
 *
 * Threads: the loop thread only.
 */
#include <stdlib.h>
#include <string.h>

#include "gw_chframe.h"
#include "gw_chhist.h"
#include "gw_session.h"
#include "wsg_time.h"

/* Recoveries in progress per gateway: beyond, the subscribe is answered recovered: false. */
#define RECOVERIES_MAX 10000
/* Pacing while the client's send queue is above a quarter of --sendq-soft. */
#define PACE_MS 10
/* A fresh subscription's first read: after every offset, so only the epoch and last offset. */
#define AFTER_ALL ((1ull << 53) - 1)

struct gw_chrec {
  struct gw_chrec *next, *prev;
  gw_server *s;
  uint64_t conn;
  uint64_t epoch, next_off; /* the client's epoch; the next offset to give it */
  bool answered, busy, dead, fresh;
  ev_timer w;
  gw_chop op; /* the subscribe: channel, id and format of the answer */
};

static void unlink_rec(gw_server *s, gw_chrec *r) {
  if (r->prev)
    r->prev->next = r->next;
  else
    s->chrecs = r->next;
  if (r->next)
    r->next->prev = r->prev;
  s->nchrecs--;
}

/* Ends r now, or when its read returns. */
static void end(gw_chrec *r) {
  ev_timer_stop(r->s->o.loop, &r->w);
  if (r->dead)
    return;
  r->dead = true;
  unlink_rec(r->s, r);
  if (!r->busy)
    free(r);
}

/* rec NULL: a plain "subscribed" (a fresh subscription whose position could not be read). */
static void answer(gw_chrec *r, gw_session *ss, const gw_chop_recovery *rec) {
  gw_server *s = r->s;
  r->answered = true;
  if (rec && !rec->fresh)
    wsg_counter_add(s->m_chrecover[rec->recovered ? 0 : 1], 1);
  uint8_t out[GW_CHOP_ANSWER_MAX];
  size_t n = rec ? gw_chops_answer_recovery(&r->op, rec, out, sizeof out)
                 : gw_chops_answer(&r->op, GW_CHOP_OK, out, sizeof out);
  gw_msg *m = n ? gw_msg_create(out, n, r->op.msgpack) : NULL;
  if (!m) {
    gw__close_async(s, ss, GW_CLOSE_INTERNAL, NULL, false);
    return;
  }
  gw_outbound_queue(s, ss, m, 0, wsg_now_mono_ms());
  gw_msg_unref(m);
}

/* The subscription joins the live stream at r->next_off; `read`: Redis answered (epoch 0: the
 * channel has no :m, nothing is numbered). */
static void go_live(gw_chrec *r, gw_chsub *sub, uint64_t epoch, bool read) {
  gw_chsub_set_flags(sub, gw_chsub_flags(sub) & (uint8_t)~GW_CHSUB_RECOVERING);
  gw_chsub_set_from(sub, r->next_off);
  gw_chpos *pos = gw_channel_pos(gw_chsub_channel(sub));
  if (pos->epoch == 0 && epoch) {
    /* Nothing came live yet: what was read is where the channel's stream is here. */
    pos->epoch = epoch;
    pos->next = r->next_off;
  } else if (pos->epoch == 0 && read) {
    /* Known empty (gw_chpos): without it every subscriber of a channel never published to
     * would cost one read (BENCHMARKS.md, "Subscriptions that are never published to"). */
    pos->next = 1;
  }
  end(r);
}

static void read_next(gw_chrec *r);

/* The session and its subscription, or NULL when either is gone (r is then ended). */
static gw_chsub *lookup(gw_chrec *r, gw_session **ss) {
  *ss = gw_conn_map_get(&r->s->conns, r->conn);
  gw_chsub *sub = *ss && !((*ss)->flags & (F_CLOSING | F_RELEASED))
                      ? gw_channels_sub_of((*ss)->subs, r->op.channel, r->op.channel_len)
                      : NULL;
  if (!sub)
    end(r);
  return sub;
}

static void replay(gw_chrec *r, gw_session *ss, const gw_chhist_page *page, uint64_t now_ms) {
  gw_server *s = r->s;
  bool mp = r->op.msgpack;
  for (size_t i = 0; i < page->n; i++) {
    const gw_chhist_entry *e = &page->e[i];
    if (e->offset < r->next_off)
      continue;
    if (e->offset > r->next_off) {
      /* Trimmed between pages (the history is bounded): said, never skipped silently. */
      gw_msg *g = gw_chframe_gap(r->op.channel, r->op.channel_len, r->next_off, e->offset - 1, mp);
      if (g && gw_outbound_queue(s, ss, g, 0, now_ms))
        wsg_counter_add(s->m_pub_gaps, e->offset - r->next_off);
      gw_msg_unref(g);
    }
    gw_msg *m = gw_chframe_pub(r->op.channel, r->op.channel_len, e->offset, page->epoch, e->data,
                               e->len, e->binary, mp);
    if (!m || !gw_outbound_queue(s, ss, m, 0, now_ms)) {
      gw_msg_unref(m);
      end(r); /* out of memory or over the hard limit: the connection is being closed */
      return;
    }
    gw_msg_unref(m);
    wsg_counter_add(s->m_chreplayed, 1);
    r->next_off = e->offset + 1;
  }
}

static void on_page(void *arg, const gw_chhist_page *page, bool destroyed) {
  gw_chrec *r = arg;
  r->busy = false;
  if (destroyed || r->dead) {
    if (r->dead)
      free(r);
    return; /* shutting down: gw_chrecover_finish frees the live ones */
  }
  gw_session *ss;
  gw_chsub *sub = lookup(r, &ss);
  if (!sub)
    return;
  if (!page) {
    if (!r->answered)
      answer(r, ss, r->fresh ? NULL : &(gw_chop_recovery){.recovered = false});
    go_live(r, sub, 0, false);
    return;
  }
  if (!r->answered && r->fresh) {
    r->next_off = page->last + 1;
    answer(r, ss, &(gw_chop_recovery){.fresh = true, .epoch = page->epoch, .offset = page->last});
  } else if (!r->answered) {
    bool epoch_ok = r->epoch ? page->epoch == r->epoch : r->next_off == 1;
    bool covered = epoch_ok && page->last + 1 >= r->next_off &&
                   (page->n ? page->e[0].offset == r->next_off : page->last + 1 == r->next_off);
    answer(r, ss, &(gw_chop_recovery){covered, false, page->epoch, page->last});
    if (!covered) {
      r->next_off = page->last + 1;
      go_live(r, sub, page->epoch, true);
      return;
    }
  }
  replay(r, ss, page, wsg_now_mono_ms());
  if (r->dead)
    return;
  gw_chpos *pos = gw_channel_pos(gw_chsub_channel(sub));
  /* Epoch 0 read: the channel's first publications may have come live (skipped) meanwhile. */
  bool behind_live = (pos->epoch == page->epoch || page->epoch == 0) && pos->next > r->next_off;
  if (!page->more && !behind_live) {
    go_live(r, sub, page->epoch, true);
    return;
  }
  read_next(r);
}

static void issue(gw_chrec *r) {
  gw_server *s = r->s;
  r->busy = true;
  uint64_t bytes = s->cfg->sendq_soft / 4 ? s->cfg->sendq_soft / 4 : 65536;
  uint64_t after = r->fresh && !r->answered ? AFTER_ALL : r->next_off - 1;
  if (after == AFTER_ALL)
    wsg_counter_add(s->m_chposreads, 1);
  if (gw_chhist_read(s->chreg, r->op.channel, r->op.channel_len, after, GW_CHHIST_PAGE_MAX, bytes,
                     on_page, r) != 0)
    on_page(r, NULL, false); /* Redis is not connected: not recovered, live from now */
}

static void pace_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop;
  (void)revents;
  read_next(w->data);
}

/* The next page now, or after PACE_MS while the client's send queue is above a quarter of
 * --sendq-soft. */
static void read_next(gw_chrec *r) {
  gw_session *ss;
  if (!lookup(r, &ss))
    return;
  uint64_t room = r->s->cfg->sendq_soft / 4;
  if (room && gw_sendq_bytes(&ss->q) > room) {
    ev_timer_set(&r->w, PACE_MS / 1000.0, 0);
    ev_timer_start(r->s->o.loop, &r->w);
    return;
  }
  issue(r);
}

void gw_chrecover_start(gw_server *s, gw_session *ss, gw_chsub *sub, const gw_chop *op) {
  gw_chrec *r = s->nchrecs < RECOVERIES_MAX ? calloc(1, sizeof *r) : NULL;
  if (!r) {
    /* Too many at once (a reconnect storm): answered at once, not recovered. */
    gw_chrec tmp = {.s = s, .op = *op};
    answer(&tmp, ss, op->has_since ? &(gw_chop_recovery){.recovered = false} : NULL);
    return;
  }
  r->s = s;
  r->fresh = !op->has_since;
  r->conn = ss->conn_id;
  r->epoch = op->since_epoch;
  r->next_off = op->since_offset + 1;
  r->op = *op;
  ev_timer_init(&r->w, pace_cb, 0, 0);
  r->w.data = r;
  r->next = s->chrecs;
  if (s->chrecs)
    s->chrecs->prev = r;
  s->chrecs = r;
  s->nchrecs++;
  gw_chsub_set_flags(sub, gw_chsub_flags(sub) | GW_CHSUB_RECOVERING);
  issue(r);
}

void gw_chrecover_cancel(gw_server *s, const gw_session *ss, const char *name, size_t len) {
  /* A scan: only a subscribe with `since` on a subscription still recovering gets here. */
  for (gw_chrec *r = s->chrecs; r; r = r->next)
    if (r->conn == ss->conn_id && r->op.channel_len == len &&
        memcmp(r->op.channel, name, len) == 0) {
      end(r);
      return;
    }
}

void gw_chrecover_finish(gw_server *s) {
  while (s->chrecs) {
    gw_chrec *r = s->chrecs;
    ev_timer_stop(s->o.loop, &r->w);
    unlink_rec(s, r);
    if (r->busy)
      r->dead = true; /* its read's callback frees it */
    else
      free(r);
  }
}
