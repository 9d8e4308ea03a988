/*
 * gw_chpub: a `publish` record to this gateway's subscribers of its channel (docs/ARCHITECTURE.md,
 * "Channels"). The client frame is encoded once per format (JSON, MessagePack) into one
 * refcounted gw_msg that every subscriber's send queue shares, as a batched `deliver` shares its
 * payload: a publication costs one encode per format plus one queue node per subscriber.
 *
 * Order: per channel the gateway keeps the epoch and the next offset it expects. An earlier
 * offset of the same epoch is a duplicate (a processor's retry, or two produce paths) and is
 * dropped; a later one is delivered after a `gap` frame naming what was skipped; a new epoch
 * (the channel's history was lost) starts over from its offset.
 *
 * Tail: a missing publication shows only when a later one arrives, so after a quiet period the
 * tail check (gw_chtail) reads the channel's :m and gw_chpub_tail fills what this gateway has
 * not delivered from the history, through the same reads and rules as before a held one.
 *
 * Threads: the loop thread only.
 */
#include <stdlib.h>
#include <string.h>

#include "gw_chframe.h"
#include "gw_chhist.h"
#include "gw_session.h"
#include "wsg_time.h"

/* One publication as the channel's stream carries it. */
typedef struct {
  uint64_t offset, epoch;
  const uint8_t *data;
  size_t len;
  bool binary;
} pubv;

/* Publications held per channel, and their payload bytes: beyond, the gap is reported at once. */
#define HELD_MAX       1024
#define HELD_BYTES_MAX ((uint64_t)1 << 20)

typedef struct {
  uint64_t offset;
  gw_msg *raw; /* the record's payload, a reference */
} held;

struct gw_chwait {
  held *v; /* sorted by offset, one epoch: the channel's */
  size_t n, cap;
  uint64_t bytes;
  uint64_t tail; /* the tail check saw offsets up to this one numbered (0: none); fill to it */
  bool reading;
  bool restart; /* a new epoch seen by the tail check: start at its first offset, no gap */
};

/* The frame of p in one format, made on first use. */
static gw_msg *frame(gw_msg **slot, const char *name, size_t len, const pubv *p, bool msgpack) {
  if (!*slot)
    *slot = gw_chframe_pub(name, len, p->offset, p->epoch, p->data, p->len, p->binary, msgpack);
  return *slot;
}

static void queue(gw_server *s, const gw_chsub *sub, gw_msg *m, uint64_t now_ms) {
  if (gw_chsub_flags(sub) & GW_CHSUB_RECOVERING)
    return; /* it reads the history up to and past this one (gw_chrecover) */
  gw_session *ss = gw_conn_map_get(&s->conns, gw_chsub_conn(sub));
  if (!ss || (ss->flags & (F_CLOSING | F_RELEASED)))
    return;
  /* Tag 0: on a +seq connection the frame carries the empty header, outside the user's sequence. */
  if (gw_outbound_queue(s, ss, m, 0, now_ms))
    wsg_counter_add(s->m_pub_frames, 1);
}

/* Tells every subscriber that offsets from..to of the channel will not come. */
static void report_gap(gw_server *s, gw_channel *ch, uint64_t from, uint64_t to, uint64_t now_ms) {
  size_t len;
  const char *name = gw_channel_name(ch, &len);
  gw_msg *f[2] = {NULL, NULL};
  for (const gw_chsub *sub = gw_channel_first(ch); sub; sub = gw_chsub_next(sub)) {
    bool mp = gw_chsub_flags(sub) & GW_CHSUB_MSGPACK;
    if (!f[mp] && !(f[mp] = gw_chframe_gap(name, len, from, to, mp)))
      continue;
    queue(s, sub, f[mp], now_ms);
  }
  gw_msg_unref(f[0]);
  gw_msg_unref(f[1]);
  wsg_counter_add(s->m_pub_gaps, to - from + 1);
  gw_chtail_touch(s, gw_channel_pos(ch), now_ms);
}

/* p to every live subscriber of ch, one shared frame per format; advances the channel. */
static void deliver(gw_server *s, gw_channel *ch, const pubv *p, uint64_t now_ms) {
  gw_chpos *pos = gw_channel_pos(ch);
  if (pos->epoch != p->epoch) {
    gw_channel_reset_from(ch); /* recovered positions belong to the old epoch */
    if (pos->wait)
      pos->wait->tail = 0; /* and so does a known tail */
  }
  pos->epoch = p->epoch;
  pos->next = p->offset + 1;
  size_t nlen;
  const char *name = gw_channel_name(ch, &nlen);
  gw_msg *f[2] = {NULL, NULL}; /* JSON, MessagePack */
  bool nomem = false, too_big = false;
  for (const gw_chsub *sub = gw_channel_first(ch); sub;) {
    /* Queueing may close a slow subscriber, never unsubscribe it: the list stays intact. */
    const gw_chsub *next = gw_chsub_next(sub);
    bool mp = gw_chsub_flags(sub) & GW_CHSUB_MSGPACK;
    if (p->offset < gw_chsub_from(sub)) {
      sub = next; /* a recovery gave it this one from the history */
      continue;
    }
    gw_msg *m = frame(&f[mp], name, nlen, p, mp);
    if (!m)
      nomem = true;
    else if (gw_msg_len(m) + GW_SENDQ_MSG_OVERHEAD > s->cfg->sendq_hard)
      too_big = true; /* would close every subscriber as a slow consumer, none at fault */
    else
      queue(s, sub, m, now_ms);
    sub = next;
  }
  gw_msg_unref(f[0]);
  gw_msg_unref(f[1]);
  wsg_counter_add(s->m_pubs[nomem ? GW_PUB_NOMEM : too_big ? GW_PUB_TOO_BIG : GW_PUB_DELIVERED], 1);
  gw_chtail_touch(s, pos, now_ms);
}

/* --- early publications: held while the missing ones are read from the history ----------- */

static pubv held_pub(const held *h, uint64_t epoch) {
  return (pubv){h->offset, epoch, gw_msg_payload(h->raw), gw_msg_len(h->raw),
                gw_msg_binary(h->raw)};
}

static void pop_head(gw_chwait *w) {
  w->bytes -= gw_msg_len(w->v[0].raw);
  gw_msg_unref(w->v[0].raw);
  memmove(w->v, w->v + 1, (w->n - 1) * sizeof *w->v);
  w->n--;
}

/* Delivers the held publications that are next in line. */
static void drain(gw_server *s, gw_channel *ch, uint64_t now_ms) {
  gw_chpos *pos = gw_channel_pos(ch);
  while (pos->wait && pos->wait->n && pos->wait->v[0].offset <= pos->next) {
    pubv p = held_pub(&pos->wait->v[0], pos->epoch);
    if (p.offset == pos->next)
      deliver(s, ch, &p, now_ms);
    pop_head(pos->wait);
  }
}

/* The missing ones are gone: a gap before each held run, then the held ones, in order, then a
 * gap up to the known tail. */
static void give_up(gw_server *s, gw_channel *ch, uint64_t now_ms) {
  gw_chpos *pos = gw_channel_pos(ch);
  while (pos->wait && pos->wait->n) {
    if (pos->wait->v[0].offset > pos->next)
      report_gap(s, ch, pos->next, pos->wait->v[0].offset - 1, now_ms);
    pos->next = pos->wait->v[0].offset;
    drain(s, ch, now_ms);
  }
  gw_chwait *w = pos->wait;
  if (w && w->tail >= pos->next) {
    if (!w->restart) /* a new epoch starts where it can, as a record of it would */
      report_gap(s, ch, pos->next, w->tail, now_ms);
    pos->next = w->tail + 1;
  }
  if (w)
    w->restart = false;
}

/* The history lacks pos->next..target-1 (trimmed, or never kept): a gap for each run of them,
 * the held ones among them delivered in order. */
static void skip_to(gw_server *s, gw_channel *ch, uint64_t target, uint64_t now_ms) {
  gw_chpos *pos = gw_channel_pos(ch);
  while (pos->next < target) {
    gw_chwait *w = pos->wait;
    uint64_t stop = w->n && w->v[0].offset < target ? w->v[0].offset : target;
    if (stop > pos->next)
      report_gap(s, ch, pos->next, stop - 1, now_ms);
    pos->next = stop;
    drain(s, ch, now_ms);
  }
}

/* Nothing is held and the known tail is delivered. */
static bool filled(const gw_chpos *pos) {
  return !pos->wait->n && pos->next > pos->wait->tail;
}

void gw_chpub_pos_free(void *arg, gw_chpos *pos) {
  gw_chtail_forget(arg, pos);
  gw_chwait *w = pos->wait;
  if (!w)
    return;
  for (size_t i = 0; i < w->n; i++)
    gw_msg_unref(w->v[i].raw);
  free(w->v);
  if (w->reading)
    w->reading = false; /* the read finds no channel of that name, or a new one */
  free(w);
  pos->wait = NULL;
}

typedef struct {
  gw_server *s;
  uint64_t epoch;
  size_t len;
  char name[]; /* the channel's, NUL-terminated */
} fill_req;

static void read_missing(gw_server *s, gw_channel *ch);

static void on_fill(void *arg, const gw_chhist_page *page, bool destroyed) {
  fill_req *f = arg;
  gw_server *s = f->s;
  gw_channel *ch = destroyed ? NULL : gw_channels_find(s->channels, f->name, f->len);
  gw_chpos *pos = ch ? gw_channel_pos(ch) : NULL;
  bool same_epoch = pos && pos->epoch == f->epoch;
  free(f);
  if (!pos || !pos->wait)
    return; /* gone: nothing to fill */
  gw_chwait *w = pos->wait;
  w->reading = false;
  if (!same_epoch) {
    /* A new epoch started meanwhile: this page is of no use, but what came since may need one. */
    if (!filled(pos))
      read_missing(s, ch);
    return;
  }
  if (w->restart) {
    /* The first offset of the new epoch this gateway can have: the history's first, or an
     * earlier held record's. */
    uint64_t start = page && page->epoch == pos->epoch
                         ? (page->n ? page->e[0].offset : page->last + 1)
                         : w->tail + 1;
    if (w->n && w->v[0].offset < start)
      start = w->v[0].offset;
    if (start > pos->next)
      pos->next = start;
    w->restart = false;
  }
  uint64_t now_ms = wsg_now_mono_ms();
  for (size_t i = 0; page && page->epoch == pos->epoch && i < page->n; i++) {
    const gw_chhist_entry *e = &page->e[i];
    if (e->offset > pos->next)
      skip_to(s, ch, e->offset, now_ms);
    if (e->offset != pos->next)
      continue; /* delivered already: its record came first */
    pubv p = {e->offset, page->epoch, e->data, e->len, e->binary};
    bool for_tail = !w->n; /* no later record waits: only the tail check knew of it */
    deliver(s, ch, &p, now_ms);
    wsg_counter_add(s->m_pub_filled, 1);
    if (for_tail)
      wsg_counter_add(s->m_tail_filled, 1);
    drain(s, ch, now_ms);
    if (filled(pos))
      return;
  }
  if (filled(pos))
    return;
  if (page && page->epoch == pos->epoch && page->more && page->n)
    read_missing(s, ch); /* a bounded page, each one delivering: there is more to read */
  else
    give_up(s, ch, now_ms);
}

/* Reads what lies between the channel's next offset and its first held publication, or the known
 * tail when none is held. */
static void read_missing(gw_server *s, gw_channel *ch) {
  gw_chpos *pos = gw_channel_pos(ch);
  gw_chwait *w = pos->wait;
  uint64_t upto = w->n ? w->v[0].offset - 1 : w->tail;
  if (upto < pos->next) {
    give_up(s, ch, wsg_now_mono_ms()); /* nothing to read: callers do not get here */
    return;
  }
  size_t len;
  const char *name = gw_channel_name(ch, &len);
  fill_req *f = malloc(sizeof *f + len + 1);
  if (!f) {
    give_up(s, ch, wsg_now_mono_ms());
    return;
  }
  f->s = s;
  f->epoch = pos->epoch;
  f->len = len;
  memcpy(f->name, name, len + 1);
  uint64_t missing = upto - pos->next + 1;
  uint64_t bytes = s->cfg->sendq_soft / 4 ? s->cfg->sendq_soft / 4 : 65536;
  pos->wait->reading = true;
  if (gw_chhist_read(s->chreg, name, len, pos->next - 1,
                     (uint32_t)(missing < GW_CHHIST_PAGE_MAX ? missing : GW_CHHIST_PAGE_MAX), bytes,
                     on_fill, f) != 0) {
    free(f);
    pos->wait->reading = false;
    give_up(s, ch, wsg_now_mono_ms());
  }
}

/* Holds an early publication; false when it cannot wait (bounds, memory): then the caller
 * reports the gap. */
static bool hold(gw_server *s, gw_channel *ch, const gw_outbound *it) {
  gw_chpos *pos = gw_channel_pos(ch);
  if (!pos->wait && !(pos->wait = calloc(1, sizeof *pos->wait)))
    return false;
  gw_chwait *w = pos->wait;
  if (w->n >= HELD_MAX || w->bytes + gw_msg_len(it->msg) > HELD_BYTES_MAX)
    return false;
  if (w->n == w->cap) {
    size_t cap = w->cap ? w->cap * 2 : 8;
    held *v = realloc(w->v, cap * sizeof *v);
    if (!v)
      return false;
    w->v = v;
    w->cap = cap;
  }
  size_t i = w->n;
  while (i > 0 && w->v[i - 1].offset > it->ch_offset)
    i--;
  if (i > 0 && w->v[i - 1].offset == it->ch_offset)
    return true; /* held already: a duplicate */
  memmove(w->v + i + 1, w->v + i, (w->n - i) * sizeof *w->v);
  w->v[i] = (held){it->ch_offset, gw_msg_ref(it->msg)};
  w->n++;
  w->bytes += gw_msg_len(it->msg);
  wsg_counter_add(s->m_pub_held, 1);
  if (!w->reading && i == 0)
    read_missing(s, ch);
  return true;
}

void gw_chpub_dispatch(gw_server *s, const gw_outbound *it, uint64_t now_ms) {
  gw_channel *ch = gw_channels_find(s->channels, it->user, it->user_len);
  if (!ch) {
    /* Its subscribers left since the processor read the gateway set: nothing to do. */
    wsg_counter_add(s->m_pubs[GW_PUB_NOBODY], 1);
    return;
  }
  gw_chpos *pos = gw_channel_pos(ch);
  pubv p = {it->ch_offset, it->ch_epoch, gw_msg_payload(it->msg), gw_msg_len(it->msg),
            gw_msg_binary(it->msg)};
  if (pos->epoch == it->ch_epoch && it->ch_offset < pos->next) {
    wsg_counter_add(s->m_pubs[GW_PUB_DUPLICATE], 1);
    return;
  }
  if (pos->epoch == it->ch_epoch && it->ch_offset > pos->next) {
    /* Early: another processor's record with the ones before it is likely on its way; they are
     * stored already (numbered before this one), so read them while waiting. */
    if (hold(s, ch, it))
      return;
    if (pos->wait && pos->wait->tail >= it->ch_offset)
      pos->wait->tail = it->ch_offset - 1; /* the rest: the next tail check */
    give_up(s, ch, now_ms);
    if (it->ch_offset > pos->next)
      report_gap(s, ch, pos->next, it->ch_offset - 1, now_ms);
  } else if (pos->epoch != it->ch_epoch) {
    give_up(s, ch, now_ms); /* the old epoch's held ones, in order, before the new epoch */
  }
  deliver(s, ch, &p, now_ms);
  drain(s, ch, now_ms);
}

int gw_chpub_tail(gw_server *s, gw_channel *ch, uint64_t epoch, uint64_t last) {
  gw_chpos *pos = gw_channel_pos(ch);
  if (epoch == 0)
    return GW_TAIL_HISTORY_GONE; /* nothing numbered since; the next one starts a new epoch */
  if (epoch == pos->epoch && last < pos->next)
    return GW_TAIL_CURRENT;
  if (!pos->wait && !(pos->wait = calloc(1, sizeof *pos->wait)))
    return GW_TAIL_SKIPPED; /* out of memory: the channel's next activity checks again */
  gw_chwait *w = pos->wait;
  bool busy = w->n || w->reading;
  if (epoch == pos->epoch) {
    if (last > w->tail)
      w->tail = last; /* a read in flight carries on to it (filled() says when it is done) */
    if (!busy)
      read_missing(s, ch);
    return GW_TAIL_BEHIND;
  }
  if (busy)
    return GW_TAIL_NEW_EPOCH; /* the old epoch's fill ends first; its frames start a new check */
  /* As a record of the new epoch would: the old positions go, the stream starts over at the
   * first offset of the new epoch the history still has. */
  gw_channel_reset_from(ch);
  pos->epoch = epoch;
  pos->next = 1;
  w->tail = last;
  if (last) {
    w->restart = true;
    read_missing(s, ch);
  }
  return GW_TAIL_NEW_EPOCH;
}
