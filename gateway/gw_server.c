/*
 * gw_server: the WebSocket side of the gateway (see gw_server.h): the one file that owns the
 * libwebsockets context and its protocol callback, which hands each event to the file of its
 * concern (gw_session.h lists them).
 *
 * A connection's life:
 *   1. LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: admission and authentication (gw_upgrade.c); a refusal
 *      costs no Redis write and no Kafka message.
 *   2. LWS_CALLBACK_ESTABLISHED (here): connection id, index entries, Redis registration; reading
 *      is held until Redis confirms, then `connect` is produced and reading starts.
 *   3. LWS_CALLBACK_RECEIVE: reassembly up to --max-message, rate limits, `msg` produced (or held
 *      when Kafka pushes back: reading stops for that connection until it drains) (gw_inbound.c).
 *   4. Outbound: the Kafka consumer thread wakes the loop (lws_cancel_service); every envelope
 *      waiting is dispatched to the send queues of its target connections; one lws_write per
 *      LWS_CALLBACK_SERVER_WRITEABLE (gw_outbound.c).
 *   5. LWS_CALLBACK_CLOSED (here): `disconnect` produced (if `connect` was), Redis entry removed.
 *
 * Resumable delivery (subprotocol <subprotocol>+seq, docs/PROTOCOL.md "Resume after reconnect")
 * is gw_resume's state machine (gw_resume.h says how it works); this file gives it its ops: the
 * replay read (gw_registry_replay_read), queueing, closes and the end of the catch-up.
 *
 * Threads: the loop thread, except gw_server_wake() (the Kafka consumer thread; it calls only
 * lws_cancel_service, the one libwebsockets call that is safe from another thread).
 */
#include "gw_session.h"

#include <errno.h>
#include <ev.h>
#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>

#include "gw_metrics.h"
#include "wsg_envelope.h"
#include "wsg_log.h"
#include "wsg_time.h"

static_assert(GW_MSG_HEADROOM == LWS_PRE, "gw_msg headroom must fit libwebsockets' frame header");

/* Upper bound of one send() (tx_packet_size): a fragment plus its header. */
#define TX_PACKET_SIZE (FRAG_SIZE + 16)
/* The per-address table: 2 rows of 2^15 buckets, 1 MiB (gw_peers.h). */
#define PEERS_BITS 15
static_assert(PEERS_BITS <= GW_DOOR_BUCKET_BITS, "gw_door's entries index the per-address table");
/* Entries in one page of a replay read (its bytes are bounded by the send queue's limits). */
#define REPLAY_PAGE_ENTRIES 256

/* libwebsockets' log callback has no user pointer: this limiter is process-level log state, like
 * the log settings themselves, and only the loop thread (where lws logs) touches it. */
static wsg_log_ratelimit lws_log_rl;

/* ------------------------------------------------------------------------------------------ */
/* small helpers                                                                               */

static gw_server *server_of(struct lws *wsi) {
  return lws_context_user(lws_get_context(wsi));
}

static void lws_log_emit(int level, const char *line) {
  size_t n = strlen(line);
  while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
    n--;
  wsg_log_level lv = (level & LLL_ERR)    ? WSG_LOG_ERROR
                     : (level & LLL_WARN) ? WSG_LOG_WARN
                                          : WSG_LOG_DEBUG;
  wsg_log_limited(&lws_log_rl, 10, wsg_now_mono_ms(), lv, "lws", "%.*s", (int)n, line);
}

/* ------------------------------------------------------------------------------------------ */
/* deadline heaps' timers                                                                      */

void gw__deadline_timer_arm(gw_server *s, ev_timer *w, const gw_deadline_heap *h) {
  gw_deadline d;
  ev_timer_stop(s->o.loop, w);
  if (!gw_deadline_peek(h, &d))
    return;
  uint64_t now = wsg_now_mono_us();
  ev_timer_set(w, d.at > now ? (double)(d.at - now) / 1e6 : 0., 0.);
  ev_timer_start(s->o.loop, w);
}

void gw__deadline_run(gw_server *s, gw_deadline_heap *h, ev_timer *w,
                      void (*due)(gw_server *, gw_session *)) {
  uint64_t now = wsg_now_mono_us();
  gw_deadline d;
  while (gw_deadline_peek(h, &d) && d.at <= now) {
    gw_deadline_pop(h);
    gw_session *ss = gw_conn_map_get(&s->conns, d.conn);
    if (ss)
      due(s, ss);
  }
  gw__deadline_timer_arm(s, w, h);
}

/* ------------------------------------------------------------------------------------------ */
/* keepalive                                                                                   */

static uint32_t ka_now(const gw_server *s) {
  return (uint32_t)((wsg_now_mono_ms() - s->ka_t0_ms) / 1000);
}

void gw__ping_token(const gw_server *s, const gw_session *ss, char out[GW_PING_TOKEN_LEN]) {
  /* alive_s changes only with an answered ping, so the token of the ping in flight is stable. */
  uint64_t in[2] = {ss->conn_id, ss->alive_s};
  uint64_t h = gw_siphash(s->users.k0 ^ 0x70696e67u, s->users.k1, in, sizeof in);
  static const char hex[] = "0123456789abcdef";
  for (int i = 0; i < GW_PING_TOKEN_LEN; i++)
    out[i] = hex[(h >> (4 * i)) & 15];
}

/* A pong keeps ss alive only if it answers our ping: a client that stopped reading cannot. */
static bool pong_answers_ping(const gw_server *s, const gw_session *ss, const void *in,
                              size_t len) {
  char want[GW_PING_TOKEN_LEN];
  if (!(ss->flags & F_PINGED) || (ss->flags & F_PING_DUE) || len != GW_PING_TOKEN_LEN)
    return false;
  gw__ping_token(s, ss, want);
  return memcmp(in, want, GW_PING_TOKEN_LEN) == 0;
}

/* A connection's check came due: ping it once --ping-interval has passed without a pong, hang it
 * up once --idle-timeout has, and otherwise look again when the next of those is reached (or
 * sooner, while its send queue is over the soft limit: gw_sendmem_check). */
static void keepalive_due(void *arg, uint64_t conn_id) {
  gw_server *s = arg;
  gw_session *ss = gw_conn_map_get(&s->conns, conn_id);
  if (!ss || !ss->wsi || (ss->flags & (F_CLOSING | F_RELEASED | F_LWS_CLOSING)))
    return; /* gone, or closing: a close ends by a timeout of its own */
  uint32_t now_s = ka_now(s);
  uint32_t since = now_s - ss->alive_s;
  if (since >= s->idle_s) {
    /* No close frame: a peer that answers no ping would not read it either. */
    wsg_counter_add(s->m_idle_closes, 1);
    wsg_log_limited(&s->rl_misc, LOG_LIMIT_PER_S, wsg_now_mono_ms(), WSG_LOG_INFO, "server",
                    "connection %llu of user %s: no pong for %u s (--idle-timeout); dropped",
                    (unsigned long long)conn_id, ss->user ? ss->user->id : "?", since);
    mark_closing(ss);
    ss->disconnect_code = 1006;
    /* From the kill timer, not lws' (late on a quiet connection), nor at once (in the wheel). */
    gw__close_backstop(s, ss, 0);
    return;
  }
  if (since >= s->ping_s && !(ss->flags & F_PINGED)) {
    ss->flags |= F_PINGED | F_PING_DUE;
    lws_callback_on_writable(ss->wsi);
  }
  uint32_t next = ss->alive_s + ((ss->flags & F_PINGED) ? s->idle_s : s->ping_s);
  /* At least every --ping-interval, for the send queue's soft limit even while a pong is due. */
  if (next > now_s + s->ping_s)
    next = now_s + s->ping_s;
  next = gw_sendmem_check(s, ss, wsg_now_mono_ms(), now_s, next);
  if (next == 0)
    return; /* closed as a slow consumer */
  /* The user's entry hash expires unless touched (GW_REG_USER_TTL_MS): once per user per period
   * (and once after a slot was reacquired), from whichever of its connections comes due first. */
  gw_user *u = ss->user;
  if (u && (now_s - u->touched_s >= GW_REG_USER_TOUCH_S || u->touched_s <= s->retouch_s)) {
    u->touched_s = now_s;
    bool resumable = false;
    for (const gw_session *o = u->head; o && !resumable; o = o->unext)
      resumable = o->sq != NULL;
    gw_registry_user_touch(s->o.registry, u->id, u->len, resumable);
  }
  if (gw_keepalive_schedule(s->ka, conn_id, next) != 0)
    gw__close_async(s, ss, GW_CLOSE_TRY_AGAIN, NULL, true); /* out of memory: not left unchecked */
}

static void keepalive_timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop;
  (void)revents;
  gw_server *s = w->data;
  gw_keepalive_run(s->ka, ka_now(s), keepalive_due, s);
  gw_expiry_tick(s);
}

/* ------------------------------------------------------------------------------------------ */
/* resume glue: what gw_resume asks of a connection (gw_resume_ops)                             */

static void on_replay(void *arg, uint64_t conn_id, int status, const gw_replay_page *page) {
  gw_server *s = arg;
  gw_session *ss = gw_conn_map_get(&s->conns, conn_id);
  if (!ss || !ss->sq || (ss->flags & (F_CLOSING | F_RELEASED)))
    return;
  gw_resume_on_replay(&s->resume, ss->sq, status, page, wsg_now_mono_ms());
}

static int resume_read(void *arg, void *conn, bool position_only, uint64_t after) {
  gw_server *s = arg;
  gw_session *ss = conn;
  return gw_registry_replay_read(s->o.registry, ss->user->id, ss->user->len, ss->conn_id,
                                 position_only, after, &s->replay_limits, on_replay, s);
}

static bool resume_queue(void *arg, void *conn, gw_msg *m, uint64_t tag, uint64_t now_ms) {
  return gw_outbound_queue(arg, conn, m, tag, now_ms);
}

static void resume_close(void *arg, void *conn, int code, bool urgent) {
  gw__close_async(arg, conn, code, NULL, urgent);
}

static void resume_synced(void *arg, void *conn) {
  (void)arg;
  set_hold(conn, HOLD_RESUME, false);
}

static uint64_t resume_queued_bytes(void *arg, void *conn) {
  (void)arg;
  return gw_sendq_bytes(&((gw_session *)conn)->q);
}

static void on_registered(void *arg, uint64_t conn_id, int status);

/* gw_registry_conn_add of ss; on_registered follows. A gw_registry_err (logged, counted). */
static int session_register(gw_server *s, gw_session *ss) {
  int rc = gw_registry_conn_add(s->o.registry, ss->user->id, ss->user->len, ss->conn_id,
                                on_registered, s);
  if (rc != GW_REG_OK) {
    wsg_counter_add(s->m_reg_failed, 1);
    wsg_log_limited(&s->rl_misc, LOG_LIMIT_PER_S, wsg_now_mono_ms(), WSG_LOG_WARN, "server",
                    "cannot register connection %llu of user %s: %s; closing with 1013",
                    (unsigned long long)ss->conn_id, ss->user->id, gw_registry_strerror(rc));
    return rc;
  }
  ss->flags |= F_REGISTERING | F_ADD_ISSUED;
  return GW_REG_OK;
}

static int resume_register(void *arg, void *conn) {
  return session_register(arg, conn);
}

static const gw_resume_ops resume_ops = {
    .read = resume_read,
    .register_conn = resume_register,
    .queue = resume_queue,
    .close = resume_close,
    .synced = resume_synced,
    .queued_bytes = resume_queued_bytes,
    .page_entry = gw_replay_page_entry,
};

/* A resumable connection, before its registration: requests wait for its sync frame. Returns -1
 * if it must be refused. */
static int resume_start(gw_server *s, gw_session *ss, uint64_t resume) {
  set_hold(ss, HOLD_RESUME, true);
  return gw_resume_start(&s->resume, ss, ss->conn_id, ss->user->id, resume, wsg_now_mono_ms(),
                         &ss->sq);
}

/* ------------------------------------------------------------------------------------------ */
/* established, registered, closed                                                             */

static uint64_t next_conn_id(gw_server *s) {
  if (++s->conn_counter == 0)
    ++s->conn_counter; /* after 2^32 connections; the prefix keeps ids distinct from others' */
  return s->conn_prefix | s->conn_counter;
}

static void user_link(gw_session *ss, gw_user *u) {
  ss->user = u;
  ss->uprev = NULL;
  ss->unext = u->head;
  if (u->head)
    ((gw_session *)u->head)->uprev = ss;
  u->head = ss;
  u->nconns++;
}

static void user_unlink(gw_server *s, gw_session *ss) {
  gw_user *u = ss->user;
  if (!u)
    return;
  if (ss->uprev)
    ss->uprev->unext = ss->unext;
  else
    u->head = ss->unext;
  if (ss->unext)
    ss->unext->uprev = ss->uprev;
  ss->unext = ss->uprev = NULL;
  if (--u->nconns == 0)
    gw_user_map_remove(&s->users, u);
}

static void on_registered(void *arg, uint64_t conn_id, int status) {
  gw_server *s = arg;
  gw_session *ss = gw_conn_map_get(&s->conns, conn_id);
  if (!ss)
    return; /* closed meanwhile; its conn_remove follows the add on the same Redis connection */
  ss->flags &= (uint16_t)~F_REGISTERING;
  if (ss->flags & (F_CLOSING | F_RELEASED))
    return;
  if (status == GW_REG_USER_LIMIT) {
    wsg_log_limited(&s->rl_misc, LOG_LIMIT_PER_S, wsg_now_mono_ms(), WSG_LOG_INFO, "server",
                    "connection %llu of user %s refused: %s; closing with 4003",
                    (unsigned long long)conn_id, ss->user->id, gw_registry_strerror(status));
    gw__close_async(s, ss, GW_CLOSE_USER_LIMIT, NULL, true);
    return;
  }
  if (status != GW_REG_OK) {
    wsg_counter_add(s->m_reg_failed, 1);
    wsg_log_limited(&s->rl_misc, LOG_LIMIT_PER_S, wsg_now_mono_ms(), WSG_LOG_WARN, "server",
                    "connection %llu of user %s could not be registered in Redis: %s",
                    (unsigned long long)conn_id, ss->user->id, gw_registry_strerror(status));
    bool transient = status == GW_REG_NOT_CONNECTED || status == GW_REG_BUSY ||
                     status == GW_REG_RELEASED || status == GW_REG_LOST;
    gw__close_async(s, ss, transient ? GW_CLOSE_TRY_AGAIN : GW_CLOSE_INTERNAL, NULL, false);
    return;
  }
  ss->flags |= F_REGISTERED;
  gw_inbound_flush(s, ss);
  /* A resumable connection catches up from its position now that deliveries find it. */
  if (ss->sq && !(ss->flags & F_CLOSING))
    gw_resume_on_registered(&s->resume, ss->sq, wsg_now_mono_ms());
}

static int on_established(gw_server *s, struct lws *wsi, gw_session *ss) {
  gw_pending *p = gw_conn_map_del(&s->pending, (uint64_t)(uintptr_t)wsi);
  if (!p) {
    /* Did not pass CONFIRM_UPGRADE (e.g. WebSocket over HTTP/2): never serve it. */
    WSG_WARN("server", "refusing a WebSocket that skipped the upgrade checks");
    return gw__close_now(s, wsi, NULL, GW_CLOSE_POLICY, "unauthenticated");
  }
  if (s->draining) {
    free(p);
    return gw__close_now(s, wsi, NULL, GW_CLOSE_GOING_AWAY, NULL);
  }
  ss->wsi = wsi;
  if ((ss->flags & F_DEFLATE) && lws_set_extension_option(wsi, "permessage-deflate", "tx_buf_size",
                                                          DEFLATE_TX_BUF_PWR2_STR) != 0) {
    free(p);
    WSG_WARN("server", "cannot size the permessage-deflate output buffer; closing with 1011");
    return gw__close_now(s, wsi, NULL, GW_CLOSE_INTERNAL, NULL);
  }
  ss->conn_id = next_conn_id(s);
  gw_user *u = gw_user_map_intern(&s->users, p->user, p->len);
  uint64_t resume = p->resume;
  int64_t exp_s = p->exp_s;
  char *chperm = gw__chperm_take(p);
  free(p);
  if (!u) {
    gw__chperm_free(chperm);
    return gw__close_now(s, wsi, NULL, GW_CLOSE_INTERNAL, NULL);
  }
  user_link(ss, u);
  if (u->nconns == 1)
    u->touched_s = ka_now(s); /* the registration below sets the key's TTL */
  if (gw_conn_map_put(&s->conns, ss->conn_id, ss) != 0) {
    gw__chperm_free(chperm);
    user_unlink(s, ss);
    ss->user = NULL;
    return gw__close_now(s, wsi, NULL, GW_CLOSE_INTERNAL, NULL);
  }
  ss->chperm = chperm; /* freed by session_release from here on */
  wsg_counter_add(s->m_upgrades[UPG_OK], 1);
  wsg_gauge_set(s->m_conns, (int64_t)s->conns.count);
  ss->alive_s = ka_now(s);
  if (gw_keepalive_schedule(s->ka, ss->conn_id, ss->alive_s + s->ping_s) != 0 ||
      gw_expiry_start(s, ss, exp_s) != 0)
    return gw__close_now(s, wsi, ss, GW_CLOSE_TRY_AGAIN, NULL);
  /* Hold reading until Redis confirms: a reply must find the connection registered. */
  set_hold(ss, HOLD_REGISTER, true);
  const struct lws_protocols *proto = lws_get_protocol(wsi);
  if (proto && proto->name && strcmp(proto->name, s->seq_protocol) == 0 &&
      resume_start(s, ss, resume) != 0)
    return gw__close_now(s, wsi, ss, GW_CLOSE_TRY_AGAIN, NULL);
  if (!gw_resume_registers_later(ss->sq) && session_register(s, ss) != GW_REG_OK)
    return gw__close_now(s, wsi, ss, GW_CLOSE_TRY_AGAIN, NULL);
  WSG_DEBUG("server", "connection %llu of user %s established", (unsigned long long)ss->conn_id,
            u->id);
  return 0;
}

static void session_release(gw_server *s, gw_session *ss) {
  if (!ss)
    return;
  if (ss->flags & F_DEFLATE) {
    ss->flags &= (uint16_t)~F_DEFLATE;
    s->deflate_conns--;
  }
  if (!ss->wsi || (ss->flags & F_RELEASED))
    return;
  ss->flags |= F_RELEASED;
  if (!ss->user)
    return;
  gw_inbound_produce_final(s, ss);
  if (ss->flags & F_ADD_ISSUED)
    gw_registry_conn_remove(s->o.registry, ss->user->id, ss->user->len, ss->conn_id);
  if (gw_conn_map_get(&s->conns, ss->conn_id) == ss)
    gw_conn_map_del(&s->conns, ss->conn_id);
  gw_inbound_rx_free(s, ss);   /* before the user goes: it is charged to the user too */
  gw_chjlserve_release(s, ss); /* its leave events name the user */
  user_unlink(s, ss);
  ss->user = NULL;
  gw_sendmem_clear(s, ss);
  gw_resume_free(&s->resume, ss->sq);
  ss->sq = NULL;
  gw_chserve_release(s, ss);
  free(ss->close_reason);
  ss->close_reason = NULL;
  wsg_gauge_set(s->m_conns, (int64_t)s->conns.count);
}

/* ------------------------------------------------------------------------------------------ */
/* the protocol callback                                                                       */

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len) {
  gw_session *ss = user;
  switch (reason) {
  case LWS_CALLBACK_FILTER_NETWORK_CONNECTION:
    /* Right after accept(): `user` is the peer's address, not a session (gw_door.c). */
    return gw_door_filter(server_of(wsi), user);
  case LWS_CALLBACK_WSI_CREATE:
    gw_door_created(server_of(wsi), wsi);
    return 0;
  case LWS_CALLBACK_RAW_ADOPT:
    /* A CONNECT request: lws 4.1.6 turns the socket raw, clears its timeout and hands it to us. */
    return gw_upgrade_raw(server_of(wsi), wsi);
  case LWS_CALLBACK_RAW_RX:
  case LWS_CALLBACK_RAW_WRITEABLE:
    return -1; /* never served: close */
  case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
    return gw_upgrade_confirm(server_of(wsi), wsi);
  case LWS_CALLBACK_HTTP:
    wsg_counter_add(server_of(wsi)->m_not_websocket, 1);
    return gw_upgrade_plain_http(wsi);
  case LWS_CALLBACK_CONFIRM_EXTENSION_OKAY: {
    gw_server *s = server_of(wsi);
    if (!ss || s->deflate_conns >= (uint64_t)s->cfg->deflate_max_conns)
      return 1; /* refuse compression for this connection; it runs uncompressed */
    if (!(ss->flags & F_DEFLATE)) {
      ss->flags |= F_DEFLATE;
      s->deflate_conns++;
    }
    return 0;
  }
  case LWS_CALLBACK_OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS:
    /* While the vhost is created: `user` is its server SSL_CTX, kept for certificate reloads
     * (gw_tls_install; lws 4.1.6 has no other way to reach a server vhost's context). */
    server_of(wsi)->tls_ctx = user;
    return 0;
  case LWS_CALLBACK_ESTABLISHED:
    gw_door_upgraded(server_of(wsi), wsi);
    return on_established(server_of(wsi), wsi, ss);
  case LWS_CALLBACK_RECEIVE:
    return gw_inbound_receive(server_of(wsi), wsi, ss, in, len);
  case LWS_CALLBACK_SERVER_WRITEABLE:
    return gw_outbound_writeable(server_of(wsi), wsi, ss);
  case LWS_CALLBACK_RECEIVE_PONG:
    if (ss && ss->user) {
      gw_server *s = server_of(wsi);
      if (!pong_answers_ping(s, ss, in, len)) {
        wsg_counter_add(s->m_pongs_ignored, 1);
        return 0;
      }
      ss->alive_s = ka_now(s);
      ss->flags &= (uint16_t)~F_PINGED;
    }
    return 0;
  case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
    if (ss && !(ss->flags & F_CLOSING)) {
      const uint8_t *b = in;
      unsigned code = len >= 2 ? (unsigned)((b[0] << 8) | b[1]) : 1005;
      /* lws 4.1.6 accepts codes no peer may send; the disconnect envelope must stay valid
       * (docs/notes/libwebsockets-4.1.6.md#closing). */
      ss->disconnect_code = wsg_close_code_valid(WSG_ENV_DISCONNECT, code) ? (uint16_t)code : 1002;
      wsg_counter_add(server_of(wsi)->m_peer_closes, 1);
    } else if (ss && ss->discard_until_ms && len >= 2) {
      /* The client closed while its oversized message's 1009 waited for the message's end: lws
       * answers with the client's own payload, so make that answer carry our code
       * (docs/notes/libwebsockets-4.1.6.md#oversized-frame). */
      uint8_t *b = in;
      b[0] = (uint8_t)(ss->close_code >> 8);
      b[1] = (uint8_t)ss->close_code;
    }
    return 0;
  case LWS_CALLBACK_WS_SERVER_DROP_PROTOCOL:
    /* lws calls this as it begins a close (core-net/close.c), before sending its close frame. */
    if (ss)
      ss->flags |= F_LWS_CLOSING;
    return 0;
  case LWS_CALLBACK_CLOSED:
    gw_close_discard_unread(server_of(wsi), wsi);
    session_release(server_of(wsi), ss);
    return 0;
  case LWS_CALLBACK_WSI_DESTROY: {
    gw_server *s = server_of(wsi);
    free(gw_conn_map_del(&s->pending, (uint64_t)(uintptr_t)wsi));
    gw_door_destroyed(s, wsi);
    /* Normally CLOSED released it already; this also drops a deflate count taken by a
     * connection that never reached ESTABLISHED. */
    session_release(s, ss);
    return 0;
  }
  case LWS_CALLBACK_EVENT_WAIT_CANCELLED: {
    /* Once per protocol of every vhost: drain only in ours; must return 0
     * (docs/notes/libwebsockets-4.1.6.md#cancel-service). */
    gw_server *s = server_of(wsi);
    const struct lws_protocols *p = lws_get_protocol(wsi);
    if (p && p->name && strcmp(p->name, s->protocols[0].name) == 0)
      gw_outbound_drain(s);
    return 0;
  }
  default:
    break;
  }
  return lws_callback_http_dummy(wsi, reason, user, in, len);
}

/* ------------------------------------------------------------------------------------------ */
/* drain                                                                                       */

static void drain_reason(char *buf, size_t len) {
  uint32_t r = 0;
  if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r)
    r = (uint32_t)wsg_now_mono_us();
  snprintf(buf, len, "draining; reconnect_ms=%u", r % 1000);
}

static void drain_close(gw_server *s, gw_session *ss) {
  if (ss->flags & (F_CLOSING | F_RELEASED))
    return;
  char reason[64];
  drain_reason(reason, sizeof reason);
  gw__close_async(s, ss, GW_CLOSE_GOING_AWAY, reason, false);
}

static void drain_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)revents;
  gw_server *s = w->data;
  uint64_t elapsed = wsg_now_mono_ms() - s->drain_start_ms;
  bool last = elapsed >= s->drain_window_ms;
  size_t target =
      last ? s->drain_total
           : (size_t)((double)s->drain_total * (double)elapsed / (double)s->drain_window_ms) + 1;
  void *val;
  while (s->drain_done < target && gw_conn_map_next(&s->conns, &s->drain_pos, NULL, &val)) {
    drain_close(s, val);
    s->drain_done++;
  }
  if (last || s->drain_done >= s->drain_total) {
    /* A final sweep: deletions may have moved entries behind the cursor. */
    size_t pos = 0;
    while (gw_conn_map_next(&s->conns, &pos, NULL, &val))
      drain_close(s, val);
    ev_timer_stop(loop, w);
  }
}

void gw_server_drain(gw_server *s, uint64_t window_ms) {
  if (s->draining)
    return;
  s->draining = true;
  s->drain_start_ms = wsg_now_mono_ms();
  s->drain_window_ms = window_ms ? window_ms : 1;
  s->drain_total = s->conns.count;
  s->drain_done = 0;
  s->drain_pos = 0;
  WSG_INFO("server", "draining: closing %zu connections with 1001 over %llu ms", s->drain_total,
           (unsigned long long)window_ms);
  ev_timer_init(&s->drain_w, drain_cb, 0., 0.05);
  s->drain_w.data = s;
  ev_timer_start(s->o.loop, &s->drain_w);
}

/* ------------------------------------------------------------------------------------------ */
/* registry and kafka glue                                                                     */

void gw_server_wake(gw_server *s) {
  if (s && s->ctx)
    lws_cancel_service(s->ctx);
}

void gw_server_drain_outbound(gw_server *s) {
  if (s && s->ctx)
    gw_outbound_drain(s);
}

void gw_server_set_slot(gw_server *s, int32_t slot) {
  if (slot >= 0) {
    s->slot = slot;
    /* A slot (re)acquired may follow a Redis that lost its data: touch every user again soon
     * (keepalive_due), which recreates the sequences of resumable connections. */
    s->retouch_s = ka_now(s);
  }
}

void gw_server_foreach_conn(gw_server *s, gw_registry_emit_fn emit, void *ctx) {
  size_t pos = 0;
  void *val;
  while (gw_conn_map_next(&s->conns, &pos, NULL, &val)) {
    gw_session *ss = val;
    if ((ss->flags & F_ADD_ISSUED) && !(ss->flags & F_RELEASED) && ss->user)
      emit(ctx, ss->user->id, ss->user->len, ss->conn_id);
  }
}

uint64_t gw_server_conn_count(const gw_server *s) {
  return s->conns.count;
}

SSL_CTX *gw_server_tls_ctx(const gw_server *s) {
  return s->tls_ctx;
}

int gw_server_port(const gw_server *s) {
  return s->port;
}

/* ------------------------------------------------------------------------------------------ */
/* lifecycle                                                                                   */

/*
 * lws_create_context() with libwebsockets kept to lws_fds descriptors, the rest of RLIMIT_NOFILE
 * left to Kafka, Redis and the operations port. lws 4.1.6 sizes its fd table from the soft
 * RLIMIT_NOFILE at creation (context.c) and refuses any socket whose descriptor is past it
 * (pollfd.c: "Socket fd %d is too high"). Setting info.fd_limit_per_thread below the limit
 * instead would switch lws to its "unrelated to ulimit" mode, which finds a connection by a
 * linear scan of the whole table on every event (unix-fds.c): O(connections) per event. So the
 * soft limit is lowered for the call and put back after it.
 */
static struct lws_context *create_context(struct lws_context_creation_info *info, int lws_fds) {
  struct rlimit rl;
  bool lowered = false;
  if (lws_fds > 0 && getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur > (rlim_t)lws_fds) {
    struct rlimit low = {(rlim_t)lws_fds, rl.rlim_max};
    lowered = setrlimit(RLIMIT_NOFILE, &low) == 0;
  }
  struct lws_context *ctx = lws_create_context(info);
  if (lowered && setrlimit(RLIMIT_NOFILE, &rl) != 0)
    WSG_WARN("server", "cannot restore RLIMIT_NOFILE to %llu after creating the listener: %s",
             (unsigned long long)rl.rlim_cur, strerror(errno));
  return ctx;
}

int gw_server_create(gw_server **out, const gw_server_options *o, char *err, size_t errlen) {
  *out = NULL;
  gw_server *s = calloc(1, sizeof *s);
  if (!s) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  const gw_config *cfg = o->cfg;
  s->o = *o;
  s->cfg = cfg;
  s->slot = -1;
  if (gw_user_map_init(&s->users) != 0) {
    snprintf(err, errlen, "getrandom failed");
    free(s);
    return -1;
  }
  uint32_t prefix = 0;
  while (prefix == 0) {
    if (getrandom(&prefix, sizeof prefix, 0) != (ssize_t)sizeof prefix) {
      snprintf(err, errlen, "getrandom failed");
      gw_user_map_finish(&s->users);
      free(s);
      return -1;
    }
  }
  s->conn_prefix = (uint64_t)prefix << 32;
  gw_clock_init(&s->clock, o->loop, cfg->loop_clock); /* from here, destroy stops its watcher */
  wsg_buf_init(&s->enc, cfg->max_message + (size_t)64 * 1024);
  s->scratch = malloc(LWS_PRE + FRAG_SIZE);
  if (!s->scratch) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }

  gw_rate_init(&s->rate_msgs, (uint64_t)cfg->rate_msgs,
               (uint64_t)(cfg->rate_burst ? cfg->rate_burst : cfg->rate_msgs));
  gw_rate_init(&s->rate_bytes, cfg->rate_bytes, cfg->max_message);
  gw_rate_init(&s->rate_upgrades, (uint64_t)cfg->max_upgrades_per_sec,
               (uint64_t)cfg->max_upgrades_per_sec);
  s->sendq_limits.hard_bytes = cfg->sendq_hard;
  s->sendq_limits.soft_bytes = cfg->sendq_soft;
  s->sendq_limits.soft_ms = cfg->sendq_soft_time_ms;
  /* Resume: what waits while a connection catches up is bounded like its send queue; a page of
   * the replay stream is a quarter of the soft limit, read once the queue is down to as much, so
   * a catch-up keeps the queue around half the soft limit whatever the backlog. */
  s->resume.held_limits.hard_bytes = cfg->sendq_hard;
  s->resume.room = cfg->sendq_soft / 4 > 0 ? cfg->sendq_soft / 4 : 1;
  s->replay_limits.max_entries = REPLAY_PAGE_ENTRIES;
  s->replay_limits.max_bytes = s->resume.room;
  s->replay_limits.max_age_ms = cfg->resume_max_age_ms;
  s->replay_limits.max_distance = cfg->resume_max > 0 ? (uint64_t)cfg->resume_max : 0;
  s->max_handshakes = (uint64_t)cfg->max_handshakes;
  gw_rate_init(&s->rate_addr_upgrades, (uint64_t)cfg->max_upgrades_per_addr,
               (uint64_t)cfg->max_upgrades_per_addr);
  s->peers = gw_peers_new(PEERS_BITS);
  if (!s->peers || gw_door_init(s) != 0) {
    snprintf(err, errlen, "cannot allocate the door's tables (out of memory or getrandom)");
    goto fail;
  }
  /* libwebsockets' share of the descriptors (create_context() says how it is kept to it). */
  int lws_fds = gw_server_lws_fds(o->fd_limit);
  if (cfg->max_connections > 0)
    s->max_conns = (uint64_t)cfg->max_connections;
  else if ((uint64_t)lws_fds > s->max_handshakes * 2)
    s->max_conns = (uint64_t)lws_fds - s->max_handshakes;
  else
    s->max_conns = lws_fds > 2 ? (uint64_t)lws_fds / 2 : 1;
  wsg_metrics_register_table(o->metrics, &gw_server_metric_table, s);
  s->resume.ops = &resume_ops;
  s->resume.arg = s;
  s->resume.sendq_hard = cfg->sendq_hard;
  s->resume.rl = &s->rl_misc;
  s->resume.m_resumes_complete = s->m_resumes_complete;
  s->resume.m_resumes_incomplete = s->m_resumes_incomplete;
  s->resume.m_replay_reads = s->m_replay_reads;
  s->resume.m_replayed = s->m_replayed;
  s->resume.m_gaps = s->m_seq_gaps;
  s->resume.m_dups = s->m_seq_dups;
  s->resume.m_too_big = s->m_out_too_big;
  s->resume.m_conns = s->m_seq_conns;
  ev_timer_init(&s->rate_w, gw_inbound_rate_timer_cb, 0., 0.);
  s->rate_w.data = s;
  ev_timer_init(&s->kill_w, gw_close_backstop_timer_cb, 0., 0.);
  s->kill_w.data = s;
  s->ping_s = (uint32_t)(cfg->ping_interval_ms / 1000);
  s->idle_s = (uint32_t)(cfg->idle_timeout_ms / 1000);
  s->ka_t0_ms = wsg_now_mono_ms();
  s->ka = gw_keepalive_new(s->idle_s + 1, 0);
  if (!s->ka) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  ev_timer_init(&s->ka_w, keepalive_timer_cb, 1., 1.);
  s->ka_w.data = s;
  ev_timer_start(o->loop, &s->ka_w);
  if (gw_chserve_init(s, err, errlen) != 0 || gw_expiry_init(s, err, errlen) != 0)
    goto fail;

  /* lws' libev plugin logs every watcher change at NOTICE: only with --log-level debug
   * (docs/notes/libwebsockets-4.1.6.md#logging). */
  lws_set_log_level(LLL_ERR | LLL_WARN | (wsg_log_min_level <= WSG_LOG_DEBUG ? LLL_NOTICE : 0),
                    lws_log_emit);

  s->protocols[0].name = cfg->subprotocol;
  s->protocols[0].callback = callback;
  s->protocols[0].per_session_data_size = sizeof(gw_session);
  s->protocols[0].rx_buffer_size = cfg->rx_buffer;
  s->protocols[0].tx_packet_size = TX_PACKET_SIZE;
  if (cfg->resume_max > 0) {
    /* The same protocol with sequenced framing: one callback, told apart by name. */
    if ((size_t)snprintf(s->seq_protocol, sizeof s->seq_protocol, "%s+seq", cfg->subprotocol) >=
        sizeof s->seq_protocol) {
      snprintf(err, errlen, "--subprotocol is longer than %zu bytes", sizeof s->seq_protocol - 5);
      goto fail;
    }
    s->protocols[1] = s->protocols[0];
    s->protocols[1].name = s->seq_protocol;
  }
  if (cfg->deflate) {
    s->exts[0].name = "permessage-deflate";
    s->exts[0].callback = lws_extension_callback_pm_deflate;
    s->exts[0].client_offer = "permessage-deflate; client_no_context_takeover; "
                              "client_max_window_bits";
  }
  /* Keepalive is ours (keepalive_due): both at 0, lws arms no validity timer, whose cost is
   * O(connections) per ping (docs/notes/libwebsockets-4.1.6.md#keepalive). */
  s->retry.secs_since_valid_ping = 0;
  s->retry.secs_since_valid_hangup = 0;

  struct lws_context_creation_info info;
  memset(&info, 0, sizeof info);
  void *loops[] = {o->loop};
  info.options = LWS_SERVER_OPTION_LIBEV | LWS_SERVER_OPTION_VALIDATE_UTF8;
  if (!strchr(cfg->listen_addr, ':'))
    info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
  info.foreign_loops = loops;
  info.pcontext = &s->ctx;
  info.user = s;
  info.vhost_name = "wsgate";
  info.port = (int)cfg->listen_port;
  info.iface = strcmp(cfg->listen_addr, "0.0.0.0") == 0 ? NULL : cfg->listen_addr;
  info.protocols = s->protocols;
  info.extensions = cfg->deflate ? s->exts : NULL;
  info.retry_and_idle_policy = &s->retry;
  info.max_http_header_data = GW_MAX_HTTP_HEADER_DATA;
  /* Handshake resources set explicitly (lws' defaults: 5 s, then 10 s more once a header buffer
   * is attached, and a pool as large as the descriptor limit): a socket gets at most
   * --handshake-timeout from accept to its upgrade, kept by gw_door's timer (lws' own, a little
   * later, fire late on a quiet gateway), and at most --max-handshakes of them hold a header
   * buffer (the others wait for one, within the same timeout). */
  info.timeout_secs = gw_door_lws_timeout_s(s);
  info.timeout_secs_ah_idle = info.timeout_secs;
  info.max_http_header_pool2 = (unsigned)s->max_handshakes;
  if (cfg->tls_cert) {
    info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.ssl_cert_filepath = cfg->tls_cert;
    info.ssl_private_key_filepath = cfg->tls_key;
    /* No HTTP/2: WebSocket over h2 would skip CONFIRM_UPGRADE, and so authentication
     * (docs/notes/libwebsockets-4.1.6.md#http2). */
    info.alpn = "http/1.1";
  }

  s->ctx = create_context(&info, lws_fds);
  if (!s->ctx) {
    snprintf(err, errlen,
             "cannot start the WebSocket listener on %s:%lld (see the libwebsockets error above: "
             "port in use? libwebsockets-evlib-ev installed? TLS files readable?)",
             cfg->listen_addr, (long long)cfg->listen_port);
    goto fail;
  }
  s->vh = lws_get_vhost_by_name(s->ctx, "wsgate");
  s->port = s->vh ? lws_get_vhost_listen_port(s->vh) : (int)cfg->listen_port;
  WSG_INFO("server", "WebSocket listener on %s:%d (%s, subprotocol %s, max %llu connections)",
           cfg->listen_addr, s->port, cfg->tls_cert ? "wss" : "ws", cfg->subprotocol,
           (unsigned long long)s->max_conns);
  wsg_gauge_set(s->m_fd_limit, lws_fds);
  WSG_INFO("server",
           "libwebsockets may use %d of %d file descriptors (%d kept for Kafka, Redis and the "
           "operations port); %llu sockets may wait for their upgrade, %llu s each; per address: "
           "%lld open, %lld before their upgrade, %lld upgrades/s (0: no cap); per-address table "
           "%llu KiB",
           lws_fds, o->fd_limit, o->fd_limit - lws_fds, (unsigned long long)s->max_handshakes,
           (unsigned long long)(cfg->handshake_timeout_ms / 1000),
           (long long)cfg->max_conns_per_addr, (long long)cfg->max_pending_per_addr,
           (long long)cfg->max_upgrades_per_addr,
           (unsigned long long)(gw_peers_memory(s->peers) / 1024));
  *out = s;
  return 0;
fail:
  gw_server_destroy(s);
  return -1;
}

void gw_server_destroy(gw_server *s) {
  if (!s)
    return;
  if (s->o.loop) {
    ev_timer_stop(s->o.loop, &s->drain_w);
    ev_timer_stop(s->o.loop, &s->rate_w);
    ev_timer_stop(s->o.loop, &s->kill_w);
    ev_timer_stop(s->o.loop, &s->ka_w);
  }
  gw_clock_finish(&s->clock);
  if (s->ctx)
    lws_context_destroy(s->ctx); /* CLOSED and WSI_DESTROY run for every connection in here */
  s->ctx = NULL;
  /* Registrations still in flight would call on_registered() with `s` after it is freed. */
  gw_registry_cancel_conn_callbacks(s->o.registry);
  size_t pos = 0;
  void *val;
  while (gw_conn_map_next(&s->pending, &pos, NULL, &val))
    free(val);
  gw_conn_map_finish(&s->pending);
  gw_conn_map_finish(&s->conns);
  gw_door_finish(s);
  gw_user_map_finish(&s->users);
  gw_inbound_finish(s);
  gw_deadline_heap_finish(&s->kill_heap);
  gw_chserve_finish(s);
  gw_expiry_finish(s);
  gw_keepalive_free(s->ka);
  free(s->scratch);
  free(s->batch);
  wsg_buf_finish(&s->enc);
  free(s);
}
