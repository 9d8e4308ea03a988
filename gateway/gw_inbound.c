/*
 * gw_inbound: what clients send. A message is reassembled up to --max-message (within the global
 * --rx-memory-max), checked against the rate limits (a paused connection waits on one ev_timer
 * over a heap of deadlines), and produced to Kafka as a `msg` envelope; when Kafka pushes back
 * (its queue is full) reading stops for that connection, which waits in the stalled FIFO until
 * the queue drains. `connect`, and `disconnect` with what a closing connection still held, are
 * produced here too; a `disconnect` Kafka refuses is kept (bounded, in order) and retried.
 *
 * Threads: the loop thread only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_session.h"
#include "wsg_envelope.h"
#include "wsg_time.h"

/* Disconnect envelopes kept while Kafka refuses them (a queue-full burst). */
#define ORPHAN_MAX_BYTES (16u << 20)
/* The rest of an oversized message is dropped before its 1009 goes, so the client reads the
 * 1009 and the close ends with a FIN (docs/notes/libwebsockets-4.1.6.md#oversized-frame). The
 * client must keep up DISCARD_MIN_RATE on average, after DISCARD_GRACE_S, and never gets more
 * than DISCARD_MAX_S: then the 1009 goes anyway (lws gives 5 s more, then resets). A message
 * the --rate-bytes pace cannot drop within DISCARD_MAX_S gets its 1009 at once. */
#define DISCARD_GRACE_S  5u
#define DISCARD_MIN_RATE ((uint64_t)1 << 20)
#define DISCARD_MAX_S    60u
/* A paced discard resumes once this much of --rate-bytes is free again: one pause per 64 KiB,
 * not per piece of --rx-buffer. */
#define DISCARD_QUANTUM ((uint64_t)64 << 10)

/* ts_us: the message's arrival for `msg` (read once, in on_message), now for the others. */
static void env_base(gw_server *s, const gw_session *ss, wsg_envelope *e, wsg_env_kind kind,
                     uint64_t ts_us) {
  memset(e, 0, sizeof *e);
  e->kind = kind;
  e->version = WSG_ENVELOPE_VERSION;
  e->fields = WSG_F_USER | WSG_F_CONN | WSG_F_GATEWAY | WSG_F_SLOT | WSG_F_TS;
  e->user = ss->user->id;
  e->user_len = ss->user->len;
  e->conn = ss->conn_id;
  e->gateway = s->cfg->gateway_id;
  e->gateway_len = strlen(s->cfg->gateway_id);
  e->slot = s->slot >= 0 ? (uint32_t)s->slot : 0;
  e->ts_us = ts_us;
}

/* Encodes and produces; returns a gw_kafka_err (GW_KAFKA_FAILED when encoding failed). */
static int produce_env(gw_server *s, const gw_session *ss, const wsg_envelope *e) {
  int rc = wsg_envelope_encode(e, &s->enc);
  if (rc != WSG_ENV_OK) {
    wsg_log_limited(&s->rl_misc, LOG_LIMIT_PER_S, wsg_now_mono_ms(), WSG_LOG_ERROR, "server",
                    "cannot encode a %s envelope for connection %llu: %s",
                    wsg_env_kind_name(e->kind), (unsigned long long)ss->conn_id,
                    wsg_env_strerror(rc));
    return GW_KAFKA_FAILED;
  }
  return gw_kafka_produce(s->o.kafka, ss->user->id, ss->user->len, s->enc.data, s->enc.len,
                          ss->conn_id);
}

int gw_inbound_subscribe_request(gw_server *s, const gw_session *ss, const char *ch, size_t len,
                                 uint64_t rq) {
  wsg_envelope e;
  env_base(s, ss, &e, WSG_ENV_SUB_REQUEST, gw_clock_wall_us(&s->clock));
  e.fields |= WSG_F_CHANNEL | WSG_F_REQUEST;
  e.channel = ch;
  e.channel_len = len;
  e.request = rq;
  return produce_env(s, ss, &e);
}

void gw_inbound_rx_free(gw_server *s, gw_session *ss) {
  if (ss->rx) {
    s->rx_bytes -= ss->rx_cap;
    if (ss->user)
      ss->user->rx_bytes -= ss->rx_cap;
    free(ss->rx);
    ss->rx = NULL;
    wsg_gauge_set(s->m_rx_bytes, (int64_t)s->rx_bytes);
  }
  ss->rx_len = ss->rx_cap = 0;
  ss->flags &= (uint16_t) ~(F_MSG_READY | F_IN_MSG);
}

/* Makes room for `need` bytes in rx within the global --rx-memory-max budget and the user's
 * share of it, --rx-memory-per-user (so one account's unfinished messages, over many
 * connections, cannot hold the budget every user shares). 0, or -1 over the global budget, or
 * -2 over the user's share. */
static int rx_reserve(gw_server *s, gw_session *ss, size_t need) {
  if (need <= ss->rx_cap)
    return 0;
  size_t ncap = ss->rx_cap ? (size_t)ss->rx_cap * 2 : 4096;
  if (ncap < need)
    ncap = need;
  if (ncap > s->cfg->max_message)
    ncap = need > s->cfg->max_message ? need : s->cfg->max_message;
  if (s->rx_bytes - ss->rx_cap + ncap > s->cfg->rx_memory_max)
    return -1;
  gw_user *u = ss->user;
  if (s->cfg->rx_memory_per_user && u->rx_bytes - ss->rx_cap + ncap > s->cfg->rx_memory_per_user)
    return -2;
  uint8_t *n = realloc(ss->rx, ncap);
  if (!n)
    return -1;
  s->rx_bytes = s->rx_bytes - ss->rx_cap + ncap;
  u->rx_bytes = u->rx_bytes - ss->rx_cap + ncap;
  ss->rx = n;
  ss->rx_cap = (uint32_t)ncap;
  wsg_gauge_set(s->m_rx_bytes, (int64_t)s->rx_bytes);
  return 0;
}

static void stalled_push(gw_server *s, gw_session *ss) {
  if (ss->flags & F_STALLED)
    return;
  if (s->stalled_count == s->stalled_cap) {
    size_t ncap = s->stalled_cap ? s->stalled_cap * 2 : 64;
    uint64_t *n = malloc(ncap * sizeof *n);
    if (!n) {
      /* Cannot track it: the connection could wait forever, so end it instead. */
      gw__close_async(s, ss, GW_CLOSE_TRY_AGAIN, NULL, false);
      return;
    }
    for (size_t i = 0; i < s->stalled_count; i++)
      n[i] = s->stalled[(s->stalled_head + i) % s->stalled_cap];
    free(s->stalled);
    s->stalled = n;
    s->stalled_cap = ncap;
    s->stalled_head = 0;
  }
  s->stalled[(s->stalled_head + s->stalled_count) % s->stalled_cap] = ss->conn_id;
  s->stalled_count++;
  ss->flags |= F_STALLED;
  set_hold(ss, HOLD_STALL, true);
  wsg_counter_add(s->m_kafka_stalls, 1);
  wsg_gauge_set(s->m_stalled, (int64_t)s->stalled_count);
}

/*
 * Tries to produce what the session holds: `connect` first if Kafka refused it earlier, then the
 * held message. Returns 0 when nothing is held any more, 1 when Kafka is (still) full, -1 when
 * the session was closed (gw__close_async) because Kafka refused for good.
 */
static int flush_held(gw_server *s, gw_session *ss) {
  if ((ss->flags & F_REGISTERED) && !(ss->flags & F_CONNECT_SENT)) {
    wsg_envelope e;
    env_base(s, ss, &e, WSG_ENV_CONNECT, gw_clock_wall_us(&s->clock));
    int rc = produce_env(s, ss, &e);
    if (rc == GW_KAFKA_FULL)
      return 1;
    if (rc != GW_KAFKA_OK) {
      gw__close_async(s, ss, GW_CLOSE_INTERNAL, NULL, false);
      return -1;
    }
    ss->flags |= F_CONNECT_SENT;
  }
  if (!(ss->flags & F_MSG_READY))
    return 0;
  if (!(ss->flags & F_CONNECT_SENT) || s->pressure)
    return 1; /* not registered yet (on_registered flushes), or Kafka still full */
  if (gw_chops_marked(ss->rx, ss->rx_len, (ss->flags & F_BINARY) != 0) &&
      !gw__control_op(s, ss, ss->rx, ss->rx_len, (ss->flags & F_BINARY) != 0)) {
    gw_inbound_rx_free(s, ss);
    return 0;
  }
  wsg_envelope e;
  env_base(s, ss, &e, WSG_ENV_MSG, ss->rx_ts_us);
  e.fields |= WSG_F_SEQ | WSG_F_DATA | WSG_F_BINARY;
  e.seq = ss->seq + 1;
  e.data = ss->rx;
  e.data_len = ss->rx_len;
  e.binary = (ss->flags & F_BINARY) != 0;
  int rc = produce_env(s, ss, &e);
  if (rc == GW_KAFKA_FULL)
    return 1;
  if (rc != GW_KAFKA_OK) {
    gw__close_async(s, ss, rc == GW_KAFKA_TOO_LARGE ? GW_CLOSE_TOO_BIG : GW_CLOSE_INTERNAL, NULL,
                    false);
    gw_inbound_rx_free(s, ss);
    return -1;
  }
  ss->seq++;
  wsg_counter_add(s->m_msgs_in, 1);
  wsg_counter_add(s->m_bytes_in, ss->rx_len);
  gw_inbound_rx_free(s, ss);
  return 0;
}

/* The registration, the stall and the rate limit all hold reading; release what no longer
 * applies once the session holds nothing. */
static void release_holds(gw_session *ss) {
  if (ss->flags & (F_MSG_READY | F_STALLED))
    return;
  if (!(ss->flags & F_CONNECT_SENT))
    return;
  set_hold(ss, HOLD_STALL | HOLD_RATE | HOLD_REGISTER, false);
}

void gw_inbound_flush(gw_server *s, gw_session *ss) {
  int r = flush_held(s, ss);
  if (r > 0)
    stalled_push(s, ss);
  else if (r == 0)
    release_holds(ss);
}

void gw_inbound_finish(gw_server *s) {
  while (s->orphan_head) {
    orphan *o = s->orphan_head;
    s->orphan_head = o->next;
    free(o);
  }
  free(s->stalled);
  gw_deadline_heap_finish(&s->rate_heap);
}

/* Copies a borrowed complete message into the session so it can wait. 0 or -1 (no memory). */
static int keep_message(gw_server *s, gw_session *ss, const uint8_t *data, size_t len, bool in_rx) {
  if (!in_rx) {
    if (rx_reserve(s, ss, len ? len : 1) != 0)
      return -1;
    if (len)
      memcpy(ss->rx, data, len);
    ss->rx_len = (uint32_t)len;
  }
  ss->flags |= F_MSG_READY;
  return 0;
}

/* Nanoseconds until both rate limits allow a message of len bytes (0: now). */
static uint64_t rate_wait(gw_server *s, gw_session *ss, size_t len, uint64_t now_ns) {
  uint64_t w1 = gw_rate_wait_ns(&s->rate_msgs, ss->tat_msgs, now_ns, 1);
  uint64_t w2 = gw_rate_wait_ns(&s->rate_bytes, ss->tat_bytes, now_ns, len);
  return w1 > w2 ? w1 : w2;
}

static void rate_take(gw_server *s, gw_session *ss, size_t len, uint64_t now_ns) {
  gw_rate_allow(&s->rate_msgs, &ss->tat_msgs, now_ns, 1);
  gw_rate_allow(&s->rate_bytes, &ss->tat_bytes, now_ns, len);
}

/* Rate-limit pauses wake from one ev_timer over a heap of deadlines: lws' per-wsi timer fires
 * late on a foreign libev loop (docs/notes/libwebsockets-4.1.6.md#timers). */
static void rate_timer_arm(gw_server *s) {
  gw__deadline_timer_arm(s, &s->rate_w, &s->rate_heap);
}

static int rate_timer_add(gw_server *s, gw_session *ss, uint64_t wait_ns) {
  if (gw_deadline_push(&s->rate_heap, wsg_now_mono_us() + wait_ns / 1000 + 1, ss->conn_id) != 0)
    return -1;
  rate_timer_arm(s);
  return 0;
}

static void on_rate_due(gw_server *s, gw_session *ss);

void gw_inbound_rate_timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop;
  (void)revents;
  gw_server *s = w->data;
  gw__deadline_run(s, &s->rate_heap, w, on_rate_due);
}

/*
 * A complete client message, either borrowed from lws (`in_rx` false) or in ss->rx. Returns 0, or
 * -1 after gw__close_now (the caller returns -1 to lws).
 */
static int on_message(gw_server *s, struct lws *wsi, gw_session *ss, const uint8_t *data,
                      size_t len, bool in_rx) {
  ss->rx_ts_us = gw_clock_wall_us(&s->clock);
  uint64_t t = gw_clock_mono_ns(&s->clock);
  uint64_t wait = rate_wait(s, ss, len, t);
  if (wait > 0) {
    wsg_counter_add(s->m_rate_limited, 1);
    if (s->cfg->rate_action_kind == GW_RATE_CLOSE)
      return gw__close_now(s, wsi, ss, GW_CLOSE_POLICY, NULL);
    /* Pause: the message waits in the session, reading stops (TCP pushes back on the client),
     * and the wsi timer resumes it when the bucket allows. Nothing is dropped. */
    if (keep_message(s, ss, data, len, in_rx) != 0)
      return gw__close_now(s, wsi, ss, GW_CLOSE_TRY_AGAIN, NULL);
    if (rate_timer_add(s, ss, wait) != 0)
      return gw__close_now(s, wsi, ss, GW_CLOSE_TRY_AGAIN, NULL);
    set_hold(ss, HOLD_RATE, true);
    return 0;
  }
  rate_take(s, ss, len, t);
  /* A control op (an exact prefix, never a parse) is answered here, not produced. */
  if ((ss->flags & F_CONNECT_SENT) && gw_chops_marked(data, len, (ss->flags & F_BINARY) != 0) &&
      !gw__control_op(s, ss, data, len, (ss->flags & F_BINARY) != 0)) {
    if (in_rx)
      gw_inbound_rx_free(s, ss);
    return 0;
  }
  if (!in_rx) {
    /* The common case, a message that arrived in one piece: produce straight from lws' buffer. */
    if ((ss->flags & F_CONNECT_SENT) && !s->pressure) {
      wsg_envelope e;
      env_base(s, ss, &e, WSG_ENV_MSG, ss->rx_ts_us);
      e.fields |= WSG_F_SEQ | WSG_F_DATA | WSG_F_BINARY;
      e.seq = ss->seq + 1;
      e.data = data;
      e.data_len = len;
      e.binary = (ss->flags & F_BINARY) != 0;
      int rc = produce_env(s, ss, &e);
      if (rc == GW_KAFKA_OK) {
        ss->seq++;
        wsg_counter_add(s->m_msgs_in, 1);
        wsg_counter_add(s->m_bytes_in, len);
        return 0;
      }
      if (rc == GW_KAFKA_TOO_LARGE)
        return gw__close_now(s, wsi, ss, GW_CLOSE_TOO_BIG, NULL);
      if (rc != GW_KAFKA_FULL)
        return gw__close_now(s, wsi, ss, GW_CLOSE_INTERNAL, NULL);
    }
    if (keep_message(s, ss, data, len, false) != 0)
      return gw__close_now(s, wsi, ss, GW_CLOSE_TRY_AGAIN, NULL);
  } else {
    ss->flags |= F_MSG_READY;
  }
  int r = flush_held(s, ss);
  if (r < 0)
    return 0; /* gw__close_async already scheduled */
  if (r > 0) {
    if (ss->flags & F_REGISTERED)
      stalled_push(s, ss);
    else
      set_hold(ss, HOLD_REGISTER, true); /* on_registered flushes it */
  }
  return 0;
}

/* The monotonic clock in ms, cut to 32 bits (compared by difference) and never 0, which means
 * "not discarding". */
static uint32_t mono_ms32(void) {
  uint32_t t = (uint32_t)wsg_now_mono_ms();
  return t ? t : 1;
}

/* The discard is over (the message ended, or its deadline came): the 1009 goes from WRITEABLE,
 * and the connection ends GW_CLOSE_BACKSTOP_MS later if the client has not answered by then. */
static void discard_end(gw_server *s, gw_session *ss) {
  ss->discard_until_ms = 0;
  set_hold(ss, HOLD_DISCARD, false);
  lws_callback_on_writable(ss->wsi);
  gw__close_backstop(s, ss, GW_CLOSE_BACKSTOP_MS);
}

/*
 * A piece of an oversized message's rest, dropped: counted against --rate-bytes (reading pauses
 * once it runs ahead by the burst, and resumes from the rate timer) until the message's final
 * fragment ends. 0, or -1 after gw__close_now.
 */
static int discard_piece(gw_server *s, struct lws *wsi, gw_session *ss, size_t len) {
  uint64_t t = gw_clock_mono_ns(&s->clock);
  wsg_counter_add(s->m_discarded, len);
  if (lws_is_final_fragment(wsi)) {
    discard_end(s, ss);
    return 0;
  }
  gw_rate_charge(&s->rate_bytes, &ss->tat_bytes, t, len);
  /* Already held: lws still hands over the rest of its current read, and one timer is due. */
  if ((ss->hold & HOLD_DISCARD) || gw_rate_wait_ns(&s->rate_bytes, ss->tat_bytes, t, 0) == 0)
    return 0;
  uint64_t wait = gw_rate_wait_ns(&s->rate_bytes, ss->tat_bytes, t, DISCARD_QUANTUM);
  if (rate_timer_add(s, ss, wait) != 0)
    return gw__close_now(s, wsi, ss, GW_CLOSE_TOO_BIG, NULL);
  set_hold(ss, HOLD_DISCARD, true);
  return 0;
}

/*
 * The message passed --max-message with `left` bytes of its frame still due (uncompressed).
 * A -1 here would make lws drop the rest of this read while counting its payload bytes as due: it
 * would take the client's close frame for payload and never see it. A close frame sent now would
 * leave the client 5 s to finish (lws' close-ack timeout), then a reset. So the 1009 is decided
 * now (counted, the queue dropped) but waits for the message's end while its rest is dropped
 * here, paced by --rate-bytes, within a deadline
 * (docs/notes/libwebsockets-4.1.6.md#oversized-frame).
 */
static int discard_begin(gw_server *s, struct lws *wsi, gw_session *ss, size_t len, uint64_t left,
                         const char *reason) {
  if (!gw_rate_unlimited(&s->rate_bytes) &&
      left / DISCARD_MAX_S > 1000000000u / s->rate_bytes.interval_ns) {
    gw__close_async(s, ss, GW_CLOSE_TOO_BIG, reason, true);
    return 0; /* cannot be dropped in time: the 1009 goes now, F_CLOSING drops what arrives */
  }
  uint64_t allow = DISCARD_GRACE_S + left / DISCARD_MIN_RATE;
  if (allow > DISCARD_MAX_S)
    allow = DISCARD_MAX_S;
  uint32_t until = mono_ms32() + (uint32_t)allow * 1000u;
  /* Set first: gw__close_async leaves the backstop to discard_end while it is. */
  ss->discard_until_ms = until ? until : 1;
  gw__close_async(s, ss, GW_CLOSE_TOO_BIG, reason, true);
  if (rate_timer_add(s, ss, allow * 1000000000u) != 0) {
    ss->discard_until_ms = 0;
    gw__close_backstop(s, ss, GW_CLOSE_BACKSTOP_MS);
    return gw__close_now(s, wsi, ss, GW_CLOSE_TOO_BIG, reason);
  }
  /* lws' own timeout, should ours not come: the deadline and the close frame's own time. */
  lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, (int)allow + 5);
  wsg_counter_add(s->m_discards, 1);
  return discard_piece(s, wsi, ss, len);
}

int gw_inbound_receive(gw_server *s, struct lws *wsi, gw_session *ss, const uint8_t *in,
                       size_t len) {
  /* After our -1, lws may deliver more of this read and keeps only the last return: keep saying
   * -1 until lws begins its close (docs/notes/libwebsockets-4.1.6.md#receive-after-close). */
  if (ss->flags & F_LWS_CLOSING)
    return 0;
  if (ss->flags & F_CLOSE_SENT)
    return -1;
  if (ss->discard_until_ms)
    return discard_piece(s, wsi, ss, len);
  if (!ss->user || (ss->flags & (F_CLOSING | F_RELEASED)))
    return 0; /* a close is on its way through WRITEABLE: ignore the data */
  if (ss->flags & F_MSG_READY) {
    /* Reading is held while a message waits, so lws should not deliver more; if it does (data
     * it had already decompressed), holding a second message would unbound memory. */
    WSG_WARN("server", "connection %llu: data arrived while a message was held; closing",
             (unsigned long long)ss->conn_id);
    return gw__close_now(s, wsi, ss, GW_CLOSE_TRY_AGAIN, NULL);
  }
  if (!(ss->flags & F_IN_MSG)) {
    ss->flags |= F_IN_MSG;
    ss->rx_len = 0;
    if (lws_frame_is_binary(wsi))
      ss->flags |= F_BINARY;
    else
      ss->flags &= (uint16_t)~F_BINARY;
  }
  uint64_t max = s->cfg->max_message;
  uint64_t total = (uint64_t)ss->rx_len + len;
  /* Without compression the rest of the frame's length is known now: refuse before reading it. */
  if (!(ss->flags & F_DEFLATE))
    total += lws_remaining_packet_payload(wsi);
  if (total > max) {
    char reason[64];
    snprintf(reason, sizeof reason, "message too big (limit %llu bytes)", (unsigned long long)max);
    gw_inbound_rx_free(s, ss);
    if (ss->flags & F_DEFLATE)
      return gw__close_now(s, wsi, ss, GW_CLOSE_TOO_BIG, reason);
    if (!lws_is_final_fragment(wsi))
      return discard_begin(s, wsi, ss, len, lws_remaining_packet_payload(wsi), reason);
    /* Its last piece: no -1 either, the client's close frame may follow in this read. */
    gw__close_async(s, ss, GW_CLOSE_TOO_BIG, reason, true);
    return 0;
  }
  bool fin = lws_is_final_fragment(wsi);
  if (fin && ss->rx_len == 0) {
    ss->flags &= (uint16_t)~F_IN_MSG;
    return on_message(s, wsi, ss, in, len, false);
  }
  int rrc = rx_reserve(s, ss, (size_t)ss->rx_len + len);
  if (rrc != 0) {
    bool user_share = rrc == -2;
    wsg_log_limited(
        &s->rl_misc, LOG_LIMIT_PER_S, wsg_now_mono_ms(), WSG_LOG_WARN, "server",
        "%s (%llu bytes) reached: closing connection %llu of user %s with 1013",
        user_share ? "--rx-memory-per-user" : "--rx-memory-max",
        (unsigned long long)(user_share ? s->cfg->rx_memory_per_user : s->cfg->rx_memory_max),
        (unsigned long long)ss->conn_id, ss->user->id);
    gw_inbound_rx_free(s, ss);
    return gw__close_now(s, wsi, ss, GW_CLOSE_TRY_AGAIN, NULL);
  }
  if (len)
    memcpy(ss->rx + ss->rx_len, in, len);
  ss->rx_len += (uint32_t)len;
  if (!fin)
    return 0;
  ss->flags &= (uint16_t)~F_IN_MSG;
  return on_message(s, wsi, ss, ss->rx, ss->rx_len, true);
}

/* A discarding connection's timer came: its deadline (the 1009 goes), or room in --rate-bytes
 * to read again. */
static void on_discard_due(gw_server *s, gw_session *ss) {
  int32_t late_ms = (int32_t)(mono_ms32() - ss->discard_until_ms);
  if (late_ms >= 0) {
    discard_end(s, ss);
    return;
  }
  if (!(ss->hold & HOLD_DISCARD)) {
    /* Only the deadline's own timer finds the connection reading; never early, but if it were,
     * the deadline must not be lost. */
    if (rate_timer_add(s, ss, (uint64_t)-late_ms * 1000000u) != 0)
      discard_end(s, ss);
    return;
  }
  uint64_t t = gw_clock_mono_ns(&s->clock);
  uint64_t wait = gw_rate_wait_ns(&s->rate_bytes, ss->tat_bytes, t, DISCARD_QUANTUM);
  if (wait > 0) {
    if (rate_timer_add(s, ss, wait) != 0)
      discard_end(s, ss);
    return;
  }
  set_hold(ss, HOLD_DISCARD, false);
}

/* A rate-limited connection's deadline came: produce what it holds and read again. */
static void on_rate_due(gw_server *s, gw_session *ss) {
  if (ss->discard_until_ms && !(ss->flags & F_RELEASED)) {
    on_discard_due(s, ss);
    return;
  }
  if (!(ss->hold & HOLD_RATE) || (ss->flags & (F_CLOSING | F_RELEASED)))
    return;
  uint64_t t = gw_clock_mono_ns(&s->clock);
  uint64_t wait = rate_wait(s, ss, ss->rx_len, t);
  if (wait > 0) {
    if (rate_timer_add(s, ss, wait) != 0)
      gw__close_async(s, ss, GW_CLOSE_TRY_AGAIN, NULL, false);
    return;
  }
  rate_take(s, ss, ss->rx_len, t);
  set_hold(ss, HOLD_RATE, false);
  gw_inbound_flush(s, ss);
}

/*
 * Produces an envelope of a session that is going away; if Kafka's queue is full it is kept (in
 * order, bounded) and retried when the queue drains, since the session cannot wait for it.
 */
static void produce_or_orphan(gw_server *s, gw_session *ss, const wsg_envelope *e) {
  int rc = wsg_envelope_encode(e, &s->enc);
  if (rc == WSG_ENV_OK && !s->orphan_head)
    rc = gw_kafka_produce(s->o.kafka, ss->user->id, ss->user->len, s->enc.data, s->enc.len,
                          ss->conn_id);
  else if (rc == WSG_ENV_OK)
    rc = GW_KAFKA_FULL; /* keep the order behind what already waits */
  else
    rc = GW_KAFKA_FAILED;
  if (rc == GW_KAFKA_OK)
    return;
  if (rc == GW_KAFKA_FULL && s->orphan_bytes + s->enc.len + ss->user->len <= ORPHAN_MAX_BYTES) {
    orphan *o = malloc(sizeof *o + ss->user->len + s->enc.len);
    if (o) {
      o->next = NULL;
      o->conn_id = ss->conn_id;
      o->keylen = ss->user->len;
      o->len = (uint32_t)s->enc.len;
      memcpy(o->data, ss->user->id, o->keylen);
      memcpy(o->data + o->keylen, s->enc.data, o->len);
      if (s->orphan_tail)
        s->orphan_tail->next = o;
      else
        s->orphan_head = o;
      s->orphan_tail = o;
      s->orphan_bytes += o->keylen + o->len;
      return;
    }
  }
  wsg_counter_add(s->m_events_lost, 1);
  wsg_log_limited(&s->rl_misc, LOG_LIMIT_PER_S, wsg_now_mono_ms(), WSG_LOG_ERROR, "server",
                  "the %s event of connection %llu (user %s) was lost: %s",
                  wsg_env_kind_name(e->kind), (unsigned long long)ss->conn_id, ss->user->id,
                  gw_kafka_strerror(rc));
}

/* The session ends: what it still held, then `disconnect` with the close code. */
void gw_inbound_produce_final(gw_server *s, gw_session *ss) {
  wsg_envelope e;
  if (!(ss->flags & F_CONNECT_SENT)) {
    if (ss->flags & F_MSG_READY)
      wsg_counter_add(s->m_events_lost,
                      1); /* never announced by `connect`: nobody may see its data */
    return;
  }
  if (ss->flags & F_MSG_READY) {
    env_base(s, ss, &e, WSG_ENV_MSG, ss->rx_ts_us);
    e.fields |= WSG_F_SEQ | WSG_F_DATA | WSG_F_BINARY;
    e.seq = ++ss->seq;
    e.data = ss->rx;
    e.data_len = ss->rx_len;
    e.binary = (ss->flags & F_BINARY) != 0;
    produce_or_orphan(s, ss, &e);
  }
  env_base(s, ss, &e, WSG_ENV_DISCONNECT, gw_clock_wall_us(&s->clock));
  e.fields |= WSG_F_CLOSE_CODE | WSG_F_SEQ;
  e.seq = ss->seq; /* the `n` of its last msg: a processor can tell it saw them all */
  e.close_code = ss->disconnect_code ? ss->disconnect_code : 1006;
  produce_or_orphan(s, ss, &e);
}

/* Kafka drained below its low-water mark: retry what waited, oldest first. */
static void flush_stalled(gw_server *s) {
  while (s->orphan_head && !s->pressure) {
    orphan *o = s->orphan_head;
    int rc = gw_kafka_produce(s->o.kafka, (const char *)o->data, o->keylen, o->data + o->keylen,
                              o->len, o->conn_id);
    if (rc == GW_KAFKA_FULL)
      return;
    if (rc != GW_KAFKA_OK)
      wsg_counter_add(s->m_events_lost, 1);
    s->orphan_head = o->next;
    if (!s->orphan_head)
      s->orphan_tail = NULL;
    s->orphan_bytes -= o->keylen + o->len;
    free(o);
  }
  while (s->stalled_count > 0 && !s->pressure) {
    uint64_t id = s->stalled[s->stalled_head];
    gw_session *ss = gw_conn_map_get(&s->conns, id);
    if (ss && (ss->flags & F_STALLED) && !(ss->flags & (F_CLOSING | F_RELEASED))) {
      if (flush_held(s, ss) > 0)
        return; /* still full: stays first in line */
      ss->flags &= (uint16_t)~F_STALLED;
      release_holds(ss);
    } else if (ss) {
      ss->flags &= (uint16_t)~F_STALLED;
    }
    s->stalled_head = (s->stalled_head + 1) % s->stalled_cap;
    s->stalled_count--;
  }
  wsg_gauge_set(s->m_stalled, (int64_t)s->stalled_count);
}

void gw_server_on_pressure(gw_server *s, bool paused) {
  s->pressure = paused;
  if (!paused)
    flush_stalled(s);
}

void gw_server_on_delivery_failed(gw_server *s, uint64_t conn_id, const char *errstr) {
  gw_session *ss = gw_conn_map_get(&s->conns, conn_id);
  if (!ss)
    return;
  /* At-least-once towards the processors is broken for this client: tell it, so it reconnects
   * and resends what it has not seen acknowledged by the application. */
  wsg_log_limited(&s->rl_misc, LOG_LIMIT_PER_S, wsg_now_mono_ms(), WSG_LOG_WARN, "server",
                  "closing connection %llu with 1011: Kafka did not take its message: %s",
                  (unsigned long long)conn_id, errstr);
  gw__close_async(s, ss, GW_CLOSE_INTERNAL, "internal error: message not delivered", false);
}
