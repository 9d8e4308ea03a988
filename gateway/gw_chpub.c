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
 * Threads: the loop thread only.
 */
#include "gw_chframe.h"
#include "gw_session.h"

/* The frame of `it` in one format, made on first use. */
static gw_msg *frame(gw_msg **slot, const gw_outbound *it, bool msgpack) {
  if (!*slot)
    *slot =
        gw_chframe_pub(it->user, it->user_len, it->ch_offset, it->ch_epoch, gw_msg_payload(it->msg),
                       gw_msg_len(it->msg), gw_msg_binary(it->msg), msgpack);
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
}

void gw_chpub_dispatch(gw_server *s, const gw_outbound *it, uint64_t now_ms) {
  gw_channel *ch = gw_channels_find(s->channels, it->user, it->user_len);
  if (!ch) {
    /* Its subscribers left since the processor read the gateway set: nothing to do. */
    wsg_counter_add(s->m_pubs[GW_PUB_NOBODY], 1);
    return;
  }
  gw_chpos *pos = gw_channel_pos(ch);
  if (pos->epoch == it->ch_epoch && it->ch_offset < pos->next) {
    wsg_counter_add(s->m_pubs[GW_PUB_DUPLICATE], 1);
    return;
  }
  if (pos->epoch == it->ch_epoch && it->ch_offset > pos->next)
    report_gap(s, ch, pos->next, it->ch_offset - 1, now_ms);
  if (pos->epoch != it->ch_epoch)
    gw_channel_reset_from(ch); /* recovered positions belong to the old epoch */
  pos->epoch = it->ch_epoch;
  pos->next = it->ch_offset + 1;

  gw_msg *f[2] = {NULL, NULL}; /* JSON, MessagePack */
  bool nomem = false, too_big = false;
  for (const gw_chsub *sub = gw_channel_first(ch); sub;) {
    /* Queueing may close a slow subscriber, never unsubscribe it: the list stays intact. */
    const gw_chsub *next = gw_chsub_next(sub);
    bool mp = gw_chsub_flags(sub) & GW_CHSUB_MSGPACK;
    if (it->ch_offset < gw_chsub_from(sub)) {
      sub = next; /* a recovery gave it this one from the history */
      continue;
    }
    gw_msg *m = frame(&f[mp], it, mp);
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
}
