/*
 * gw_outbound: what reaches clients. The Kafka consumer thread wakes the loop
 * (lws_cancel_service); every envelope waiting is dispatched to the send queues of its target
 * connections (a resumable connection's deliveries go through gw_resume first), and each
 * connection writes one frame per LWS_CALLBACK_SERVER_WRITEABLE, as libwebsockets requires:
 * a message in one frame straight from the shared gw_msg, or in fragments through a scratch
 * buffer, behind a resumable connection's "<q>\n" header. Keepalive pings and the close frame
 * go out from here too, between messages. With --eager-write, a message for a connection with
 * nothing queued is written at once instead (eager_write), except while a wake-up dispatches
 * several records: then such a connection's messages queue and go out together at the wake-up's
 * end (batch_flush); with --coalesce-writes, several whole messages at a queue's head go out
 * framed by us in one raw write (coalesce_write).
 *
 * Threads: the loop thread only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_server.h"
#include "gw_session.h"
#include "gw_wsframe.h"
#include "wsg_time.h"

/* Outbound envelopes dispatched per wake-up before other events get a turn. */
#define OUTBOUND_BATCH    256
#define OUTBOUND_PER_WAKE 4096

/* EW_BATCH: queue it without arming WRITEABLE; it goes out at the batch's end (batch_flush). */
typedef enum { EW_QUEUE, EW_BATCH, EW_WRITTEN, EW_FAILED } ew_result;
static ew_result eager_write(gw_server *s, gw_session *ss, gw_msg *m, uint64_t tag);
static bool batch_add(gw_server *s, gw_session *ss);
static void write_queued_now(gw_server *s, gw_session *ss);

/* Queues m with `tag` for ss, within its send queue's limits; over a limit the connection is
 * closed (4001). With --eager-write, writes it at once instead when nothing is queued. Returns
 * false when it was closed. */
bool gw_outbound_queue(gw_server *s, gw_session *ss, gw_msg *m, uint64_t tag, uint64_t now_ms) {
  ew_result ew = eager_write(s, ss, m, tag);
  if (ew == EW_WRITTEN || ew == EW_FAILED)
    return ew == EW_WRITTEN;
  uint64_t before = gw_sendq_bytes(&ss->q);
  int rc = gw_sendq_push_tagged(&ss->q, m, tag, &s->sendq_limits, now_ms);
  if (rc == GW_SENDQ_OK) {
    s->sendq_bytes += gw_sendq_bytes(&ss->q) - before;
    wsg_gauge_set(s->m_sendq_bytes, (int64_t)s->sendq_bytes);
    /* Listed (now or by an earlier message of this batch): written at the batch's end, or now
     * once it holds a coalesced write's worth, so that a burst fills the socket as eager writes
     * would rather than the queue up to its limits. */
    if (ss->batched) {
      if (gw_sendq_bytes(&ss->q) >= FRAG_SIZE)
        write_queued_now(s, ss);
    } else if (ew != EW_BATCH || !batch_add(s, ss)) {
      lws_callback_on_writable(ss->wsi);
    }
    return s->sendq_bytes <= s->cfg->sendq_max || gw_sendmem_enforce(s, ss);
  }
  if (rc == GW_SENDQ_NOMEM) {
    gw__close_async(s, ss, GW_CLOSE_INTERNAL, NULL, true);
    return false;
  }
  wsg_log_limited(&s->rl_misc, LOG_LIMIT_PER_S, now_ms, WSG_LOG_INFO, "server",
                  "closing connection %llu of user %s with 4001: %s (%llu bytes queued)",
                  (unsigned long long)ss->conn_id, ss->user->id, gw_sendq_strerror(rc),
                  (unsigned long long)gw_sendq_bytes(&ss->q));
  gw__close_async(s, ss, GW_CLOSE_SLOW_CONSUMER, NULL, true);
  return false;
}

static void deliver_to(gw_server *s, gw_session *ss, gw_msg *m, uint64_t q, uint64_t now_ms) {
  if (ss->flags & (F_CLOSING | F_RELEASED))
    return;
  if (ss->sq)
    gw_resume_deliver(&s->resume, ss->sq, m, q, now_ms);
  else
    gw_outbound_queue(s, ss, m, 0, now_ms);
}

static void dispatch(gw_server *s, gw_outbound *it, uint64_t now_ms) {
  if (it->kind == WSG_ENV_CLOSE) {
    gw_session *ss = gw_conn_map_get(&s->conns, it->conn);
    if (!ss) {
      wsg_counter_add(s->m_out_nobody, 1);
      return;
    }
    int code = it->close_code;
    const char *reason = it->reason;
    if (!gw_close_code_app_allowed(code)) {
      code = GW_CLOSE_APP_CLOSE;
      if (!reason)
        reason = gw_close_reason(GW_CLOSE_APP_CLOSE);
    }
    gw__close_async(s, ss, code, reason ? reason : "", false);
    return;
  }
  if ((it->kind == WSG_ENV_PUBLISH || it->kind == WSG_ENV_JOINLEAVE) &&
      !gw_channels_find(s->channels, it->user, it->user_len)) {
    /* Sent here for a channel this gateway does not hold: its subscribers left since the
     * processor read the gateway set, or a previous life under this id held it (the id's lease
     * lives on, so publishers would keep it in the set forever). Leave the set; a new local
     * subscriber's SADD goes after this SREM on the same connection. */
    gw_chreg_update(s->chreg, it->user, it->user_len, false);
  }
  if (it->kind == WSG_ENV_PUBLISH) {
    gw_chpub_dispatch(s, it, now_ms);
    return;
  }
  if (it->kind == WSG_ENV_JOINLEAVE) {
    gw_chjlserve_dispatch(s, it, now_ms);
    return;
  }
  if (it->kind == WSG_ENV_SUBSCRIBE || it->kind == WSG_ENV_UNSUBSCRIBE) {
    gw_chserve_server_op(s, it, now_ms);
    return;
  }
  gw_msg *m = it->msg;
  if (gw_msg_len(m) + GW_SENDQ_MSG_OVERHEAD > s->cfg->sendq_hard) {
    /* Would close every recipient as a slow consumer although none is at fault. */
    wsg_counter_add(s->m_out_too_big, 1);
    wsg_log_limited(&s->rl_misc, LOG_LIMIT_PER_S, now_ms, WSG_LOG_WARN, "server",
                    "dropping a %zu-byte deliver: larger than --sendq-hard (%llu bytes)",
                    gw_msg_len(m), (unsigned long long)s->cfg->sendq_hard);
    return;
  }
  if (it->ts_us && s->m_latency) {
    uint64_t now_us = gw_clock_wall_us(&s->clock);
    if (now_us > it->ts_us)
      wsg_histogram_observe(s->m_latency, (double)(now_us - it->ts_us) / 1e6);
  }
  switch (it->target) {
  case GW_TARGET_CONN: {
    gw_session *ss = gw_conn_map_get(&s->conns, it->conn);
    if (ss)
      deliver_to(s, ss, m, it->q, now_ms);
    else
      wsg_counter_add(s->m_out_nobody, 1);
    break;
  }
  case GW_TARGET_CONNS:
    for (uint32_t i = 0; i < it->nconns; i++) {
      gw_session *ss = gw_conn_map_get(&s->conns, it->conns[i]);
      if (ss)
        deliver_to(s, ss, m, it->qs ? it->qs[i] : it->q, now_ms);
      else
        wsg_counter_add(s->m_out_nobody, 1);
    }
    break;
  case GW_TARGET_CHANNEL: /* PUBLISH went to gw_chpub_dispatch above */
    break;
  case GW_TARGET_USER: {
    gw_user *u = gw_user_map_get(&s->users, it->user, it->user_len);
    if (!u) {
      wsg_counter_add(s->m_out_nobody, 1);
      break;
    }
    for (gw_session *ss = u->head; ss;) {
      gw_session *next = ss->unext; /* deliver_to never unlinks, but stay safe */
      deliver_to(s, ss, m, it->q, now_ms);
      ss = next;
    }
    break;
  }
  }
}

void gw_server_dispatch(gw_server *s, gw_outbound *it) {
  dispatch(s, it, wsg_now_mono_ms());
}

static void batch_flush(gw_server *s);

void gw_outbound_drain(gw_server *s) {
  gw_outbound items[OUTBOUND_BATCH];
  size_t total = 0, n;
  uint64_t now_ms = wsg_now_mono_ms();
  while (total < OUTBOUND_PER_WAKE &&
         (n = gw_kafka_outbound_pop(s->o.kafka, items, OUTBOUND_BATCH)) > 0) {
    /* Several records in one wake-up: the loop is behind, or a burst came. A connection may get
     * several messages; eager writes would send them one system call each, so they queue and
     * go out together at the end (docs/notes/libwebsockets-4.1.6.md#eager-write). One record
     * gives each connection at most one message: written eagerly, as before. */
    if (n > 1)
      s->batching = s->cfg->eager_write;
    for (size_t i = 0; i < n; i++) {
      dispatch(s, &items[i], now_ms);
      gw_outbound_finish(&items[i]);
    }
    total += n;
  }
  batch_flush(s);
  /* More may be waiting: let other events run first, then come back. */
  if (total >= OUTBOUND_PER_WAKE)
    lws_cancel_service(s->ctx);
}

/* A resumable connection's frame header: "<q>\n" for a sequenced message, "\n" for one that is
 * not (a reply to this connection), "wsgate\n" for a control frame. Returns its length. */
#define SEQ_HEADER_MAX 24
static size_t seq_header(uint64_t tag, char hdr[SEQ_HEADER_MAX]) {
  if (tag == GW_RESUME_CONTROL) {
    memcpy(hdr, "wsgate\n", 7);
    return 7;
  }
  if (tag == 0) {
    hdr[0] = '\n';
    return 1;
  }
  return (size_t)snprintf(hdr, SEQ_HEADER_MAX, "%llu\n", (unsigned long long)tag);
}

/* Bytes [off, off + n) of the framed message hdr ++ payload into dst. */
static void copy_framed(uint8_t *dst, const char *hdr, size_t hlen, const uint8_t *payload,
                        size_t off, size_t n) {
  size_t done = 0;
  if (off < hlen) {
    done = hlen - off < n ? hlen - off : n;
    memcpy(dst, hdr + off, done);
    off += done;
  }
  if (done < n)
    memcpy(dst + done, payload + (off - hlen), n - done);
}

/* Hop 4 (docs/GATEWAY.md "Where the time goes"): from the processor building the reply to its
 * last byte handed to lws_write(). Messages the gateway made itself carry no ts. */
static void hop_written(gw_server *s, const gw_msg *m) {
  uint64_t ts = gw_msg_ts(m);
  if (!ts || !s->m_hop_written)
    return;
  uint64_t now_us = gw_clock_wall_us(&s->clock);
  if (now_us > ts)
    wsg_histogram_observe(s->m_hop_written, (double)(now_us - ts) / 1e6);
}

static void message_written(gw_server *s, const gw_msg *m) {
  hop_written(s, m);
  wsg_counter_add(s->m_msgs_out, 1);
  wsg_counter_add(s->m_bytes_out, gw_msg_len(m));
}

/* Writes m's next frame from ss->sent_off (behind its header on a resumable connection): all of
 * m in one frame when it fits in `frag`, else its next fragment. Returns 1 when m is all written
 * (sent_off back to 0), 0 when fragments remain, -1 when lws could not write (the connection is
 * gone). lws buffers what the socket did not take and holds back WRITEABLE until it is out. */
static int write_next(gw_server *s, gw_session *ss, gw_msg *m, uint64_t tag, size_t frag) {
  size_t len = gw_msg_len(m);
  int type = gw_msg_binary(m) ? LWS_WRITE_BINARY : LWS_WRITE_TEXT;
  char hdr[SEQ_HEADER_MAX];
  size_t hlen = ss->sq ? seq_header(tag, hdr) : 0;
  size_t total = hlen + len;
  size_t chunk;
  int n;
  if (total == 0 && (ss->flags & F_DEFLATE)) {
    /* lws 4.1.6's compressor aborts the process on an empty message
     * (docs/notes/libwebsockets-4.1.6.md#deflate-assertion): our own empty frame instead,
     * uncompressed (RSV1 clear: RFC 7692 lets any message go uncompressed), written raw. */
    uint8_t *f = s->scratch + LWS_PRE;
    size_t flen = gw_wsframe_header(f, gw_msg_binary(m), 0);
    return lws_write(ss->wsi, f, flen, LWS_WRITE_RAW) < (int)flen ? -1 : 1;
  }
  if (hlen == 0 && len <= frag) {
    chunk = len;
    n = lws_write(ss->wsi, gw_msg_payload(m), len, (enum lws_write_protocol)type);
  } else {
    /* The headroom in front of a fragment would be the previous fragment's bytes, shared by
     * every recipient of this message, and a resumable connection's header is its own: write
     * through scratch. */
    size_t off = ss->sent_off;
    chunk = total - off < frag ? total - off : frag;
    copy_framed(s->scratch + LWS_PRE, hdr, hlen, gw_msg_payload(m), off, chunk);
    int flags = lws_write_ws_flags(type, off == 0, off + chunk == total);
    n = lws_write(ss->wsi, s->scratch + LWS_PRE, chunk, (enum lws_write_protocol)flags);
  }
  if (n < (int)chunk)
    return -1;
  ss->sent_off += (uint32_t)chunk;
  if (ss->sent_off < total)
    return 0;
  ss->sent_off = 0;
  return 1;
}

/* eager_write's conditions on the connection (below), also re-checked at a batch's end. */
static bool writable_now(gw_server *s, gw_session *ss) {
  return s->cfg->eager_write && ss->wsi && ss->user && !ss->disconnect_code && !ss->sent_off &&
         !(ss->flags & (F_CLOSING | F_RELEASED | F_CLOSE_SENT | F_LWS_CLOSING | F_DEFLATE)) &&
         !lws_partial_buffered(ss->wsi);
}

/* The socket is gone. Not closed from here (the caller may be walking a list of connections):
 * from the kill timer, outside lws' service, as an idle hang-up is. */
static void write_failed(gw_server *s, gw_session *ss) {
  mark_closing(ss);
  ss->disconnect_code = 1006;
  gw__close_backstop(s, ss, 0);
}

static bool one_frame(const gw_session *ss, const gw_msg *m) {
  return gw_msg_len(m) + (ss->sq ? SEQ_HEADER_MAX : 0) <= FRAG_SIZE;
}

/*
 * --eager-write: a message for a connection with nothing queued goes out now, not from the next
 * WRITEABLE, which costs an epoll_ctl to arm POLLOUT, a loop wake-up and an epoll_ctl to disarm
 * it. Only where that cannot reorder, overfill or break a close
 * (docs/notes/libwebsockets-4.1.6.md#eager-write): nothing queued or half-written; lws holds none
 * of the connection's earlier output (lws_partial_buffered: so lws holds at most this one frame,
 * as on the WRITEABLE path, and later messages queue under the queue's limits); no close decided
 * or begun by either side (a peer's close sets disconnect_code); no permessage-deflate (its
 * compressor drains across WRITEABLE callbacks); a message that fits one frame and the queue's
 * hard limit (over it, the queue's refusal closes with 4001, as without eager writes). While a
 * wake-up dispatches several records (s->batching), EW_BATCH instead: write_queued_now sends it
 * with the connection's later messages of that wake-up.
 */
static ew_result eager_write(gw_server *s, gw_session *ss, gw_msg *m, uint64_t tag) {
  if (!s->cfg->eager_write || !gw_sendq_empty(&ss->q))
    return EW_QUEUE;
  uint64_t hard = s->sendq_limits.hard_bytes;
  if (!one_frame(ss, m) || (hard && gw_msg_len(m) + GW_SENDQ_MSG_OVERHEAD > hard) ||
      !writable_now(s, ss))
    return EW_QUEUE;
  if (s->batching)
    return EW_BATCH;
  int done = write_next(s, ss, m, tag, FRAG_SIZE);
  if (done < 0) {
    write_failed(s, ss);
    return EW_FAILED;
  }
  if (done == 0)
    return EW_QUEUE; /* cannot happen (one frame): the rest would go from the queue's head */
  wsg_counter_add(s->m_eager_writes, 1);
  message_written(s, m);
  return EW_WRITTEN;
}

/* Messages one coalesced write may carry; the byte bound (FRAG_SIZE) usually comes first. */
#define COALESCE_MAX_MSGS 128

/*
 * --coalesce-writes: whole messages from the queue's head, each behind our own frame header (and
 * a resumable connection's "<q>\n"), copied into the scratch buffer and handed to lws as ONE raw
 * write, which lws sends as it is (docs/notes/libwebsockets-4.1.6.md#coalesce): one WRITEABLE
 * round and one send() for all of them. At most FRAG_SIZE bytes, so lws' tx_packet_size lets it
 * go in one send() and lws buffers at most that much, as for one fragment. Returns how many
 * messages it wrote, 0 when fewer than two fit (the head goes the usual way, without a copy), or
 * -1 when lws could not write.
 */
static int coalesce_write(gw_server *s, gw_session *ss) {
  gw_sendq_item it[COALESCE_MAX_MSGS];
  size_t n = gw_sendq_peek_n(&ss->q, it, COALESCE_MAX_MSGS);
  char hdr[SEQ_HEADER_MAX];
  size_t k = 0, total = 0;
  for (; k < n; k++) { /* sizes first: copy nothing unless at least two fit */
    size_t len = (ss->sq ? seq_header(it[k].tag, hdr) : 0) + gw_msg_len(it[k].msg);
    size_t framed = gw_wsframe_header_len(len) + len;
    if (framed > FRAG_SIZE - total)
      break;
    total += framed;
  }
  if (k < 2)
    return 0;
  uint8_t *buf = s->scratch + LWS_PRE, *p = buf;
  for (size_t i = 0; i < k; i++) {
    size_t hlen = ss->sq ? seq_header(it[i].tag, hdr) : 0, len = gw_msg_len(it[i].msg);
    p += gw_wsframe_header(p, gw_msg_binary(it[i].msg), hlen + len);
    memcpy(p, hdr, hlen);
    memcpy(p + hlen, gw_msg_payload(it[i].msg), len);
    p += hlen + len;
  }
  if (lws_write(ss->wsi, buf, total, LWS_WRITE_RAW) < (int)total)
    return -1;
  for (size_t i = 0; i < k; i++)
    message_written(s, it[i].msg);
  wsg_counter_add(s->m_coalesced_writes, 1);
  wsg_counter_add(s->m_coalesced_msgs, k);
  return (int)k;
}

/* Drops the n messages just written from ss's queue, with the server's byte count, and gives a
 * resumable connection's replay room when it waits for it. */
static void written_from_queue(gw_server *s, gw_session *ss, size_t n) {
  uint64_t before = gw_sendq_bytes(&ss->q);
  for (size_t i = 0; i < n; i++)
    gw_sendq_pop(&ss->q);
  s->sendq_bytes -= before - gw_sendq_bytes(&ss->q);
  wsg_gauge_set(s->m_sendq_bytes, (int64_t)s->sendq_bytes);
  if (ss->sq && !(ss->flags & F_CLOSING) &&
      gw_resume_wants_room(&s->resume, ss->sq, gw_sendq_bytes(&ss->q)))
    gw_resume_on_room(&s->resume, ss->sq, wsg_now_mono_ms());
}

/* Lists ss to be written at the batch's end; false (ss is armed for WRITEABLE instead) when the
 * list cannot grow. */
static bool batch_add(gw_server *s, gw_session *ss) {
  if (s->nbatch == s->batch_cap) {
    size_t cap = s->batch_cap ? 2 * s->batch_cap : 256;
    uint64_t *b = realloc(s->batch, cap * sizeof *b);
    if (!b)
      return false;
    s->batch = b;
    s->batch_cap = cap;
  }
  s->batch[s->nbatch++] = ss->conn_id;
  ss->batched = 1;
  return true;
}

/*
 * A listed connection's queue, which began with a message eager_write would have written, goes
 * out now the same way, outside WRITEABLE: several messages to one coalesced write where they
 * fit (--coalesce-writes), until the queue is empty, lws holds output (the socket is full), the
 * head needs fragments or the connection is no longer writable now (closing); the rest waits for
 * WRITEABLE.
 */
static void write_queued_now(gw_server *s, gw_session *ss) {
  ss->batched = 0;
  gw_msg *m;
  while ((m = gw_sendq_peek(&ss->q)) && one_frame(ss, m) && writable_now(s, ss)) {
    int done = s->cfg->coalesce_writes ? coalesce_write(s, ss) : 0;
    if (done == 0 && (done = write_next(s, ss, m, gw_sendq_peek_tag(&ss->q), FRAG_SIZE)) > 0)
      message_written(s, m);
    if (done < 0) {
      write_failed(s, ss);
      return;
    }
    if (done == 0)
      break; /* cannot happen (one frame): the rest goes from WRITEABLE */
    wsg_counter_add(s->m_eager_writes, (uint64_t)done);
    wsg_counter_add(s->m_batched_msgs, (uint64_t)done);
    written_from_queue(s, ss, (size_t)done);
  }
  if (ss->wsi && (!gw_sendq_empty(&ss->q) || ss->sent_off || (ss->flags & F_CLOSING)))
    lws_callback_on_writable(ss->wsi);
}

/* The end of a batch: each listed connection still listed. Conn ids, not pointers: a listed
 * connection may be gone. */
static void batch_flush(gw_server *s) {
  s->batching = false;
  for (size_t i = 0; i < s->nbatch; i++) {
    gw_session *ss = gw_conn_map_get(&s->conns, s->batch[i]);
    if (ss && ss->batched)
      write_queued_now(s, ss);
  }
  s->nbatch = 0;
}

int gw_outbound_writeable(gw_server *s, struct lws *wsi, gw_session *ss) {
  /* lws is closing (its close frame sent or on its way, waiting for the client's answer): a -1
   * here would drop the socket without waiting, so the client's answer would meet a reset. */
  if (ss->flags & F_LWS_CLOSING)
    return 0;
  if (ss->flags & F_CLOSE_SENT)
    return -1; /* the close frame's reason is already set (gw__close_now) */
  if (!ss->user || (ss->flags & F_RELEASED))
    return 0;
  /* Not while an oversized message's rest is dropped: its 1009 waits for its end (gw_inbound). */
  if ((ss->flags & F_CLOSING) && !ss->discard_until_ms &&
      ((ss->flags & F_CLOSE_URGENT) || (gw_sendq_empty(&ss->q) && ss->sent_off == 0))) {
    return gw__close_now(s, wsi, ss, ss->close_code,
                         ss->close_reason ? ss->close_reason : gw_close_reason(ss->close_code));
  }
  /* A ping goes between messages (one write per WRITEABLE). Not empty: lws 4.1.6 drops an empty
   * pong (docs/notes/libwebsockets-4.1.6.md#keepalive). */
  if ((ss->flags & F_PING_DUE) && ss->sent_off == 0) {
    ss->flags &= (uint16_t)~F_PING_DUE;
    unsigned char ping[LWS_PRE + GW_PING_TOKEN_LEN];
    gw__ping_token(s, ss, (char *)ping + LWS_PRE);
    if (lws_write(wsi, ping + LWS_PRE, GW_PING_TOKEN_LEN, LWS_WRITE_PING) < 0) {
      ss->disconnect_code = 1006;
      return -1; /* lws could not write: the connection is gone */
    }
    wsg_counter_add(s->m_pings, 1);
    if (!gw_sendq_empty(&ss->q))
      lws_callback_on_writable(wsi);
    return 0;
  }
  gw_msg *m = gw_sendq_peek(&ss->q);
  if (!m)
    return 0;
  /* Not compressed (lws' compressor frames), not inside a fragmented message, not closing. */
  int done = 0;
  if (s->cfg->coalesce_writes && ss->sent_off == 0 && !ss->disconnect_code &&
      !(ss->flags & (F_DEFLATE | F_CLOSING)))
    done = coalesce_write(s, ss);
  if (done == 0) {
    size_t frag = (ss->flags & F_DEFLATE) ? DEFLATE_FRAG_SIZE : FRAG_SIZE;
    done = write_next(s, ss, m, gw_sendq_peek_tag(&ss->q), frag);
    if (done > 0)
      message_written(s, m);
  }
  if (done < 0) {
    ss->disconnect_code = 1006;
    return -1; /* lws could not write: the connection is gone */
  }
  if (done > 0)
    written_from_queue(s, ss, (size_t)done);
  if (!gw_sendq_empty(&ss->q) || (ss->flags & (F_CLOSING | F_PING_DUE)))
    lws_callback_on_writable(wsi);
  return 0;
}
