/*
 * gw_chtail: the tail check of channels (docs/ARCHITECTURE.md, "Channels", Order). A gateway
 * learns that a publication is missing when a later one arrives; the last one before a pause
 * has no later one. So when a channel has been quiet here for --channel-tail-check after its
 * stream advanced (a delivery or a gap), the gateway reads the channel's :m once (HMGET, on the
 * channel registry's connection) and hands the answer to gw_chpub_tail, which fills what it has
 * not delivered from the history as it does before a held publication.
 *
 * Costs: a touch per delivered publication is O(1) (the channel moves to the tail of one FIFO:
 * the quiet time is the same for all, so the FIFO is ordered by deadline and one ev_timer
 * watches its head). A channel gets at most one read per quiet period after activity; an idle
 * channel is never read. At most --channel-tail-inflight reads wait for Redis; the channels due
 * beyond stay queued (no memory: the links live in the channel's position) and go as reads
 * complete. While Redis is not connected a due check is skipped and counted, not retried.
 *
 * Threads: the loop thread only.
 */
#include <stdlib.h>
#include <string.h>

#include "gw_chhist.h"
#include "gw_session.h"
#include "wsg_time.h"

struct gw_chtail {
  gw_server *s;
  gw_chpos *head, *tail; /* queued channels, by deadline */
  uint64_t quiet_ms;
  uint32_t inflight, cap;
  ev_timer w;
};

typedef struct {
  gw_chtail *t;
  size_t len;
  char name[]; /* the channel's, NUL-terminated: it may go while the read runs */
} check_req;

static void unlink_pos(gw_chtail *t, gw_chpos *pos) {
  if (pos->qprev)
    pos->qprev->qnext = pos->qnext;
  else
    t->head = pos->qnext;
  if (pos->qnext)
    pos->qnext->qprev = pos->qprev;
  else
    t->tail = pos->qprev;
  pos->qprev = pos->qnext = NULL;
  pos->quiet_due_ms = 0;
}

/* The timer on the head's deadline; none while the reads in flight are at the cap (the next
 * completion pumps). */
static void arm(gw_chtail *t, uint64_t now_ms) {
  ev_timer_stop(t->s->o.loop, &t->w);
  if (!t->head || t->inflight >= t->cap)
    return;
  uint64_t due = t->head->quiet_due_ms > now_ms ? t->head->quiet_due_ms - now_ms : 0;
  ev_timer_set(&t->w, (double)due / 1000.0, 0);
  ev_timer_start(t->s->o.loop, &t->w);
}

static void pump(gw_chtail *t);

static void on_position(void *arg, bool ok, uint64_t epoch, uint64_t last, bool destroyed) {
  check_req *q = arg;
  gw_chtail *t = q->t;
  if (destroyed) {
    free(q); /* shutting down: t may be gone */
    return;
  }
  t->inflight--;
  gw_server *s = t->s;
  gw_channel *ch = gw_channels_find(s->channels, q->name, q->len);
  if (!ok)
    wsg_counter_add(s->m_tail[GW_TAIL_SKIPPED], 1);
  else if (ch) /* else its subscribers left meanwhile: nothing to deliver */
    wsg_counter_add(s->m_tail[gw_chpub_tail(s, ch, epoch, last)], 1);
  free(q);
  pump(t);
}

/* Reads pos's channel's :m; counted skipped when Redis cannot take it. */
static void check(gw_chtail *t, gw_chpos *pos) {
  gw_server *s = t->s;
  size_t len;
  const char *name = gw_channel_name(gw_channel_of(pos), &len);
  check_req *q = malloc(sizeof *q + len + 1);
  if (q) {
    q->t = t;
    q->len = len;
    memcpy(q->name, name, len + 1);
    if (gw_chhist_position(s->chreg, name, len, on_position, q) == 0) {
      t->inflight++;
      return;
    }
  }
  free(q);
  wsg_counter_add(s->m_tail[GW_TAIL_SKIPPED], 1);
}

/* Checks the channels that are due, up to the cap. */
static void pump(gw_chtail *t) {
  uint64_t now = wsg_now_mono_ms();
  while (t->head && t->head->quiet_due_ms <= now && t->inflight < t->cap) {
    gw_chpos *pos = t->head;
    unlink_pos(t, pos);
    check(t, pos);
  }
  arm(t, now);
}

static void due_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop;
  (void)revents;
  pump(w->data);
}

int gw_chtail_init(gw_server *s) {
  if (s->cfg->channel_tail_check_ms == 0)
    return 0; /* off: touch and forget find no s->chtail */
  gw_chtail *t = calloc(1, sizeof *t);
  if (!t)
    return -1;
  t->s = s;
  t->quiet_ms = s->cfg->channel_tail_check_ms;
  t->cap = (uint32_t)s->cfg->channel_tail_inflight;
  ev_timer_init(&t->w, due_cb, 0, 0);
  t->w.data = t;
  s->chtail = t;
  return 0;
}

void gw_chtail_finish(gw_server *s) {
  gw_chtail *t = s->chtail;
  if (!t)
    return;
  ev_timer_stop(s->o.loop, &t->w);
  while (t->head)
    unlink_pos(t, t->head); /* channels still indexed (an aborted start): no dangling links */
  free(t);
  s->chtail = NULL;
}

void gw_chtail_touch(gw_server *s, gw_chpos *pos, uint64_t now_ms) {
  gw_chtail *t = s->chtail;
  if (!t)
    return;
  if (pos->quiet_due_ms)
    unlink_pos(t, pos);
  pos->quiet_due_ms = now_ms + t->quiet_ms;
  pos->qprev = t->tail;
  if (t->tail)
    t->tail->qnext = pos;
  else
    t->head = pos;
  t->tail = pos;
  /* An armed timer fires no later than this deadline: at worst early, then it re-arms. */
  if (!ev_is_active(&t->w))
    arm(t, now_ms);
}

void gw_chtail_forget(gw_server *s, gw_chpos *pos) {
  if (s->chtail && pos->quiet_due_ms)
    unlink_pos(s->chtail, pos);
}
