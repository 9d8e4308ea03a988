/*
 * gw_session.h: the WebSocket server's private state, shared by the files of the server and by no
 * one else (not a public API: gw_server.h is). One concern per file:
 *   gw_server.c    the libwebsockets context and its protocol callback, connections' lifecycle
 *                  (established, registered, released), keepalive, drain, metrics;
 *   gw_close.c     the closes the gateway decides, their count by code, and their backstop;
 *   gw_door.c      sockets from accept to upgrade: global and per-address caps (gw_peers);
 *   gw_upgrade.c   admission and authentication at the upgrade, and refusals;
 *   gw_inbound.c   reassembly, rate limits and producing to Kafka (with its back-pressure);
 *   gw_outbound.c  dispatching deliveries to send queues (or at once: --eager-write), and the
 *                  WRITEABLE path (framing; several queued messages per write: --coalesce-writes);
 *   gw_sendmem.c   the send queues' memory as a whole (--sendq-max) and their periodic check;
 *   gw_resume.c    the per-user sequence of resumable connections (no libwebsockets call);
 *   gw_chserve.c   channel ops, the local subscription index and its Redis registration;
 *   gw_chpub.c     publications to local subscribers: order, duplicates, gaps;
 *   gw_chrecover.c a subscribe with `since`: history pages, then live;
 *   gw_server_metrics.c  the metric table of all of them.
 * Cross-file internals are named gw_<file>_* (gw_upgrade_*, gw_inbound_*, gw_outbound_*) or, for
 * the server's own, gw__* (libuv's uv__); tiny helpers needed on the hot path are static inline.
 * gw__close_* kept their name when they moved to gw_close.c (called from a dozen files).
 *
 * Threads: the loop thread only.
 */
#ifndef GW_SESSION_H
#define GW_SESSION_H

#include <assert.h>
#include <ev.h>
#include <libwebsockets.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "gw_channels.h"
#include "gw_chreg.h"
#include "gw_clock.h"
#include "gw_conns.h"
#include "gw_doorq.h"
#include "gw_jwt.h"
#include "gw_keepalive.h"
#include "gw_peers.h"
#include "gw_ratelimit.h"
#include "gw_resume.h"
#include "gw_sendq.h"
#include "gw_server.h"
#include "wsg_chns.h"
#include "wsg_log.h"
#include "wsg_metrics.h"

/* Larger messages go out in fragments of this size, so libwebsockets' unbounded output buffer
 * never holds more than one fragment (docs/notes/libwebsockets-4.1.6.md#writing). */
#define FRAG_SIZE ((size_t)64 * 1024)
/* Compressed: 8 KiB fragments through a 128 KiB compressor buffer, each compressed at once, or
 * lws 4.1.6 aborts (docs/notes/libwebsockets-4.1.6.md#deflate-assertion). */
#define DEFLATE_FRAG_SIZE       ((size_t)8 * 1024)
#define DEFLATE_TX_BUF_PWR2_STR "17"
#define LOG_LIMIT_PER_S         5

/* Why reading from a connection is held: any bit set = lws_rx_flow_control(wsi, 0), unless
 * the connection is closing (F_CLOSING: it reads and discards, see reading_paused) — except
 * HOLD_DISCARD, which paces that discarding. */
enum {
  HOLD_REGISTER = 1u << 0, /* Redis has not confirmed the registration yet */
  HOLD_STALL = 1u << 1,    /* a complete message waits for Kafka (queue full) */
  HOLD_RATE = 1u << 2,     /* a complete message waits for the rate limit */
  HOLD_DISCARD = 1u << 3,  /* an oversized message's rest is dropped faster than --rate-bytes */
  HOLD_RESUME = 1u << 4,   /* a resumable connection is catching up: requests wait for the sync */
  /* gw_session.hold is 5 bits wide: a sixth HOLD_ bit needs a wider field. */
};

enum {
  F_IN_MSG = 1u << 0,       /* a message is being reassembled */
  F_BINARY = 1u << 1,       /* ... and it is binary */
  F_MSG_READY = 1u << 2,    /* rx holds a complete message not produced yet */
  F_REGISTERING = 1u << 3,  /* conn_add issued, no answer yet */
  F_REGISTERED = 1u << 4,   /* Redis confirmed */
  F_CONNECT_SENT = 1u << 5, /* `connect` is in Kafka's queue: `disconnect` must follow */
  F_STALLED = 1u << 6,      /* in the stalled FIFO */
  F_CLOSING = 1u << 7,      /* a close was decided */
  F_CLOSE_URGENT = 1u << 8, /* ... without sending what is still queued */
  F_RELEASED = 1u << 9,     /* session_release ran */
  F_DEFLATE = 1u << 10,     /* permessage-deflate negotiated */
  F_ADD_ISSUED = 1u << 11,  /* conn_add accepted: conn_remove must follow */
  F_CLOSE_SENT = 1u << 12,  /* lws_close_reason was called: lws is closing it */
  F_LWS_CLOSING = 1u << 13, /* lws began its close (WS_SERVER_DROP_PROTOCOL): hands off */
  F_PING_DUE = 1u << 14,    /* a keepalive ping waits for WRITEABLE */
  F_PINGED = 1u << 15,      /* ... was sent or is due, and no pong came since */
};

/*
 * Per-connection state, lws' per-session block (zeroed by lws). Kept lean: at a million idle
 * connections every 8 bytes here is 8 MB. Buffers (rx, close_reason) exist only while needed.
 */
typedef struct gw_session {
  struct lws *wsi;
  uint64_t conn_id;
  gw_user *user;
  struct gw_session *unext, *uprev; /* the user's sessions on this gateway */
  gw_sendq q;
  uint64_t seq;      /* `n` of the last produced msg */
  uint64_t tat_msgs; /* rate limit state (gw_ratelimit) */
  uint64_t tat_bytes;
  uint64_t rx_ts_us; /* when the held message arrived (its envelope's ts) */
  uint8_t *rx;       /* reassembly / held message */
  uint32_t rx_len, rx_cap;
  uint32_t sent_off; /* bytes of the head message already written (fragmented send) */
  uint16_t flags;
  uint16_t close_code;      /* the code to send once F_CLOSING */
  uint16_t disconnect_code; /* the `cc` of the disconnect envelope */
  uint8_t hold : 5;         /* HOLD_* bits */
  uint8_t batched : 1;   /* on the server's batch list: its queue is written at the batch's end */
  uint8_t exp_state : 2; /* gw_expiry: GW_EXP_NONE, LIVE or ASKED */
  /* The format of the client's last channel op: server-made subscriptions answer in it
   * (gw_chserve_server_op); JSON before any op. A bit here: the block has no byte to spare. */
  uint8_t ops_msgpack : 1;
  uint8_t chpending : 5; /* subscribes waiting for the handler (gw_chpend), <= 31 */
  uint32_t alive_s;      /* keepalive clock: second of the last pong, or of the upgrade */
  char *close_reason;
  struct gw_seq *sq; /* resumable connections only (subprotocol +seq), else NULL */
  gw_chsub *subs;    /* channel subscriptions (gw_channels), NULL when none */
  char *chperm;      /* channels it may subscribe to (gw_chperm), owned unless GW_CHPERM_ANY */
  uint32_t exp_s;    /* gw_expiry: the token's "exp" (LIVE) or the end of the grace (ASKED) */
  /* Nonzero while the rest of an oversized message is dropped and its 1009 waits for its end:
   * when the 1009 goes anyway, in ms of the monotonic clock cut to 32 bits (gw_inbound). */
  uint32_t discard_until_ms;
} gw_session;

/* 168: expiry on live connections (issue 17) took the last 8 bytes. */
static_assert(sizeof(gw_session) <= 168, "keep the per-connection block small");

enum { GW_EXP_NONE = 0, GW_EXP_LIVE, GW_EXP_ASKED };

/* A user authenticated in CONFIRM_UPGRADE, waiting for ESTABLISHED (side table keyed by wsi). */
typedef struct {
  uint64_t resume; /* ?resume=<q>, 0 when not given */
  int64_t exp_s;   /* the token's "exp"; 0: none (a development user) */
  uint32_t len;
  bool chperm_any; /* a development user: any channel */
  char user[];     /* the user id, its NUL, then its channel permission list (gw_chperm) */
} gw_pending;
/* A disconnect envelope Kafka refused (queue full), retried when the queue drains. */
typedef struct orphan {
  struct orphan *next;
  uint64_t conn_id;
  uint32_t keylen, len;
  uint8_t data[]; /* key, then value */
} orphan;

/* A channel subscription's flag bits (gw_channels' caller bits). */
#define GW_CHSUB_MSGPACK    1u /* frames in MessagePack, else JSON */
#define GW_CHSUB_RECOVERING 2u /* reading the history (gw_chrecover): live publications skip it */

typedef struct gw_chrec gw_chrec;

/* What became of a `publish` record (gw_chpub, metric label). */
enum {
  GW_PUB_DELIVERED,
  GW_PUB_NOBODY,
  GW_PUB_DUPLICATE,
  GW_PUB_TOO_BIG,
  GW_PUB_NOMEM,
  GW_PUB__COUNT
};

/* What a tail check found (gw_chtail, metric label). */
enum {
  GW_TAIL_CURRENT,      /* nothing newer than what was delivered */
  GW_TAIL_BEHIND,       /* newer ones: filled from the history, gaps for what it lacks */
  GW_TAIL_NEW_EPOCH,    /* the channel's history was lost since: started over */
  GW_TAIL_HISTORY_GONE, /* no :m (expired with the history): nothing numbered since */
  GW_TAIL_SKIPPED,      /* Redis not connected, or the read failed: not checked */
  GW_TAIL__COUNT
};

/* Upgrade outcomes, for the metric and the log. */
#define UPGRADE_RESULTS(X)                                                                         \
  X(OK, "ok")                                                                                      \
  X(UNAUTHORIZED, "unauthorized")                                                                  \
  X(FORBIDDEN, "forbidden_origin")                                                                 \
  X(BAD_REQUEST, "bad_request")                                                                    \
  X(DRAINING, "draining")                                                                          \
  X(NOT_READY, "not_ready")                                                                        \
  X(FULL, "connection_limit")                                                                      \
  X(RATE, "upgrade_rate")

enum {
#define UPG_ENUM(name, label) UPG_##name,
  UPGRADE_RESULTS(UPG_ENUM)
#undef UPG_ENUM
      UPG__COUNT
};

/* Why a socket was closed at accept, before reading a byte (metric label). */
/* A request head's header data (lws max_http_header_data): enough for an 8 KiB token in
 * Authorization or the query plus ordinary browser headers. Bounds every query argument too. */
#define GW_MAX_HTTP_HEADER_DATA 12288

#define GW_DOOR_REFUSALS(X)                                                                        \
  X(FULL, "full")                 /* --max-connections + --max-handshakes sockets open */          \
  X(HANDSHAKES, "handshakes")     /* --max-handshakes sockets before their upgrade */              \
  X(ADDR_OPEN, "addr_open")       /* --max-conns-per-addr */                                       \
  X(ADDR_PENDING, "addr_pending") /* --max-pending-per-addr */

enum {
#define DOOR_ENUM(name, label) GW_DOOR_##name,
  GW_DOOR_REFUSALS(DOOR_ENUM)
#undef DOOR_ENUM
      GW_DOOR__COUNT
};

enum {
#define CLOSE_IDX(name, code, when, reason) CLOSE_IDX_##name,
  GW_CLOSE_MAP(CLOSE_IDX)
#undef CLOSE_IDX
      CLOSE_IDX__COUNT,
  /* An application's own code (close envelope: 3000-3999, 4100-4999): backstop counts only. */
  CLOSE_IDX_APP_CODE = CLOSE_IDX__COUNT,
};

/* A close the client has not answered (its close frame, or its reading of what was queued
 * before ours) this long after our close frame was asked for is ended by the gateway
 * (gw__close_backstop; docs/GATEWAY.md "Closes and their bounds"). */
#define GW_CLOSE_BACKSTOP_MS 5000u

struct gw_server {
  gw_server_options o;
  const gw_config *cfg;
  struct lws_context *ctx;
  struct lws_vhost *vh;
  struct lws_protocols protocols[3]; /* <subprotocol>, <subprotocol>+seq (when resumable), end */
  char seq_protocol[160];
  struct lws_extension exts[2];
  lws_retry_bo_t retry;
  int port;

  gw_rate rate_msgs, rate_bytes, rate_upgrades;
  uint64_t upgrades_tat;
  gw_sendq_limits sendq_limits;
  gw_replay_limits replay_limits;
  gw_resume resume; /* resumable connections' settings and counters */
  uint64_t max_conns;

  /* The door (issue 16): every accepted client socket until lws frees it, keyed by wsi, valued
   * gw__sock_val() (its address' buckets and whether it is still before its upgrade). */
  gw_peers *peers;
  gw_conn_map sockets;
  uint64_t nsockets, npending_sockets;
  uint64_t max_handshakes;
  gw_rate rate_addr_upgrades;
  bool accept_stashed; /* FILTER_NETWORK_CONNECTION passed; WSI_CREATE of that socket is next */
  gw_peer_key accept_key;
  /* Each pending socket's --handshake-timeout, kept by us (lws' fire late on a quiet gateway,
   * docs/notes/libwebsockets-4.1.6.md#timers): keys are wsi, tags tell a socket from a later one
   * at the same address. */
  gw_doorq *doorq;
  ev_timer door_w;
  uint32_t door_tag;

  gw_conn_map conns;   /* conn id -> gw_session */
  gw_conn_map pending; /* (uintptr_t)wsi -> gw_pending */
  gw_user_map users;
  uint64_t conn_prefix;
  uint32_t conn_counter;
  int32_t slot; /* last slot held, for the envelopes' `s` */

  wsg_buf enc;      /* reused for every inbound envelope */
  uint8_t *scratch; /* LWS_PRE + FRAG_SIZE, for fragmented sends */
  /* --eager-write under load: while an outbound wake-up dispatches several records, connections
   * that would have been written eagerly queue instead and are written once at its end
   * (gw_outbound.c batch_flush). Their conn ids, owned; `batching` while it runs. */
  uint64_t *batch;
  size_t nbatch, batch_cap;
  bool batching;
  uint64_t rx_bytes;
  uint64_t sendq_bytes;
  uint64_t deflate_conns;

  bool pressure;
  uint64_t *stalled; /* FIFO ring of conn ids holding a message Kafka refused */
  size_t stalled_cap, stalled_head, stalled_count;
  orphan *orphan_head, *orphan_tail;
  uint64_t orphan_bytes;

  bool draining;
  uint64_t drain_start_ms, drain_window_ms;
  size_t drain_total, drain_done, drain_pos;
  ev_timer drain_w;
  gw_deadline_heap rate_heap;
  ev_timer rate_w;
  /* Closes to end by force if still open (gw__close_backstop): lws' own timeouts fire late on
   * a quiet connection (docs/notes/libwebsockets-4.1.6.md#timers). */
  gw_deadline_heap kill_heap;
  ev_timer kill_w;
  /* Keepalive: ping after --ping-interval without a pong, hang up after --idle-timeout, checked
   * once a second from a wheel instead of libwebsockets' timers (gw_keepalive.h says why). */
  gw_keepalive *ka;
  ev_timer ka_w;
  uint64_t ka_t0_ms;
  uint32_t ping_s, idle_s;
  uint32_t retouch_s; /* users touched at or before this second are touched again (slot regained) */

  wsg_log_ratelimit rl_refuse, rl_dev, rl_misc;
  gw_clock clock; /* timestamps: --loop-clock */

  wsg_counter *m_upgrades[UPG__COUNT];
  wsg_counter *m_closes[CLOSE_IDX__COUNT + 1];    /* CLOSE_IDX_APP_CODE last */
  wsg_counter *m_backstops[CLOSE_IDX__COUNT + 1]; /* CLOSE_IDX_APP_CODE last */
  wsg_gauge *m_conns, *m_sendq_bytes, *m_rx_bytes, *m_stalled;
  wsg_counter *m_msgs_in, *m_bytes_in, *m_msgs_out, *m_bytes_out, *m_eager_writes;
  wsg_counter *m_coalesced_writes, *m_coalesced_msgs; /* --coalesce-writes */
  wsg_counter *m_batched_msgs;                        /* --eager-write's batch rule */
  wsg_counter *m_out_nobody, *m_out_too_big, *m_reg_failed, *m_rate_limited, *m_kafka_stalls;
  wsg_counter *m_events_lost, *m_peer_closes, *m_linger_discarded, *m_pings, *m_idle_closes;
  wsg_counter *m_discards, *m_discarded;
  wsg_counter *m_sendq_budget_closes, *m_pongs_ignored;
  wsg_counter *m_resumes_complete, *m_resumes_incomplete, *m_replay_reads, *m_replayed;
  wsg_counter *m_seq_gaps, *m_seq_lost, *m_seq_dups;
  wsg_gauge *m_seq_conns;
  wsg_histogram *m_latency, *m_hop_written;
  wsg_counter *m_accept_refused[GW_DOOR__COUNT];
  wsg_counter *m_handshake_timeouts;
  wsg_counter *m_not_websocket;
  wsg_gauge *m_handshakes, *m_fd_limit;

  struct gw_expiry *expiry; /* gw_expiry: the wheel of token expiries, its settings, metrics */
  SSL_CTX *tls_ctx;         /* the vhost's (lws owns it), for reloads; NULL without --tls-cert */

  gw_channels *channels; /* gw_chserve: the local subscription index */
  wsg_chns *chns;        /* namespaces' options (--channel-namespace) */
  gw_chreg *chreg;
  wsg_counter *m_chops[GW_CHOP_PRESENCE + 1][GW_CHOP_ERR_COUNT];
  /* Subscriptions a handler made or ended (gw_chserve_server_op), [0] subscribe, [1] unsubscribe,
   * by result; only the results they can have are registered. */
  wsg_counter *m_chsrv[2][GW_CHOP_ERR_COUNT];
  wsg_gauge *m_channels, *m_chsubs, *m_chbytes;
  wsg_counter *m_pubs[GW_PUB__COUNT]; /* gw_chpub */
  wsg_counter *m_pub_frames, *m_pub_gaps, *m_pub_held, *m_pub_filled;
  struct gw_chtail *chtail;            /* gw_chtail: channels waiting to be quiet, checks */
  wsg_counter *m_tail[GW_TAIL__COUNT]; /* tail checks by result */
  wsg_counter *m_tail_filled;
  gw_chrec *chrecs;         /* recoveries in progress (gw_chrecover) */
  struct gw_chpend *chpend; /* subscribes waiting for the handler's decision (gw_chpend) */
  wsg_gauge *m_chpending;
  wsg_counter *m_chlate;
  uint32_t nchrecs;
  wsg_counter *m_chrecover[2]; /* recovered, not recovered */
  wsg_counter *m_chreplayed;
  wsg_counter *m_chposreads;    /* a new subscription's read of its unknown channel position */
  struct gw_chpresq *chpresq;   /* gw_chpresq: presence queries in flight */
  struct gw_chresync *chresync; /* gw_chresync: rewriting Redis after a reconnect */
  struct gw_chrenew *chrenew;   /* gw_chrenew: the channel keys' TTL renewal walk */
  struct gw_chjlserve *chjl;    /* gw_chjlserve: join/leave batches */
};
/* ------------------------------------------------------------------------------------------ */
/* holds (inline: every message on the hot path checks them)                                   */

/* A closing connection keeps reading and discards the input (lingering close): unread input would
 * turn close() into a reset (docs/notes/libwebsockets-4.1.6.md#lingering-close). */
static inline bool reading_paused(const gw_session *ss) {
  return (ss->hold & HOLD_DISCARD) || (ss->hold != 0 && !(ss->flags & F_CLOSING));
}

static inline void apply_hold(gw_session *ss, bool was_paused) {
  bool paused = reading_paused(ss);
  if (paused == was_paused)
    return;
  /* PROCESS_NOW: applied at once also when called from outside this wsi's own callback. */
  lws_rx_flow_control(ss->wsi, paused ? 0 : (1 | LWS_RXFLOW_REASON_FLAG_PROCESS_NOW));
}

static inline void set_hold(gw_session *ss, unsigned bit, bool on) {
  bool was = reading_paused(ss);
  ss->hold = on ? (uint8_t)(ss->hold | bit) : (uint8_t)(ss->hold & ~bit);
  apply_hold(ss, was);
}

/* A close was decided: from now on the client's input is read and discarded (gw_inbound_receive).
 */
static inline void mark_closing(gw_session *ss) {
  bool was = reading_paused(ss);
  ss->flags |= F_CLOSING;
  apply_hold(ss, was);
}

static inline uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------------------------------------ */
/* cross-file internals                                                                        */

/* gw_upgrade.c: LWS_CALLBACK_HTTP_CONFIRM_UPGRADE (0: admitted, the user waits in s->pending;
 * else the upgrade was refused or must be dropped) and LWS_CALLBACK_HTTP (426, closes). */
int gw_upgrade_confirm(gw_server *s, struct lws *wsi);
int gw_upgrade_plain_http(struct lws *wsi);
/* gw_upgrade.c: a CONNECT request turned the socket raw (LWS_CALLBACK_RAW_ADOPT): answer 405 and
 * close (returns -1). */
int gw_upgrade_raw(gw_server *s, struct lws *wsi);

/* gw_door.c: sockets from accept to upgrade. init: at create (-1 without memory); filter:
 * LWS_CALLBACK_FILTER_NETWORK_CONNECTION (nonzero: close it at once); created:
 * LWS_CALLBACK_WSI_CREATE (counts the socket filter let in, starts its handshake timeout);
 * upgraded: LWS_CALLBACK_ESTABLISHED (no longer pending); destroyed: LWS_CALLBACK_WSI_DESTROY;
 * key: the address of an accepted socket (false: not one we counted); finish: at destroy. */
#define GW_DOOR_BUCKET_BITS 20 /* the widest per-address table gw_door's entries can index */
int gw_door_init(gw_server *s);
/* lws' own handshake timeouts (timeout_secs): later than ours, which should always come first. */
unsigned gw_door_lws_timeout_s(const gw_server *s);
int gw_door_filter(gw_server *s, const struct lws_filter_network_conn_args *a);
void gw_door_created(gw_server *s, struct lws *wsi);
void gw_door_upgraded(gw_server *s, struct lws *wsi);
void gw_door_destroyed(gw_server *s, struct lws *wsi);
bool gw_door_key(gw_server *s, struct lws *wsi, gw_peer_key *out);
void gw_door_finish(gw_server *s);

/* gw_close.c: closes. gw__close_now from inside the wsi's own callback (returns -1, which the
 * caller returns to lws); gw__close_async from anywhere on the loop thread (the close frame goes
 * out from WRITEABLE, after what is queued unless urgent). reason NULL: the code's default. */
int gw__close_now(gw_server *s, struct lws *wsi, gw_session *ss, int code, const char *reason);
void gw__close_async(gw_server *s, gw_session *ss, int code, const char *reason, bool urgent);
/* gw_close.c: ends the connection after_ms from now if it is still open then, from our own
 * timer (lws' fire late: docs/notes/libwebsockets-4.1.6.md#timers). Every close the gateway
 * decides arms it once, GW_CLOSE_BACKSTOP_MS after its close frame is asked for (gw__close_now,
 * gw__close_async, the oversized message's discard_end); the idle hang-up arms it with 0.
 * gw_close_backstop_timer_cb: s->kill_w's callback (w->data is s). */
void gw__close_backstop(gw_server *s, gw_session *ss, uint32_t after_ms);
void gw_close_backstop_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
/* gw_close.c: LWS_CALLBACK_CLOSED, between lws' shutdown() and close(): drops the client's unread
 * input (bounded) so the close is a FIN, not a reset. */
void gw_close_discard_unread(gw_server *s, struct lws *wsi);
/* gw_server.c: (re)starts the ev_timer `w` for the earliest deadline of `h`, if any. */
void gw__deadline_timer_arm(gw_server *s, ev_timer *w, const gw_deadline_heap *h);
/* gw_server.c: pops the deadlines of `h` that are due, calls `due` for each connection still
 * known, and re-arms `w`. */
void gw__deadline_run(gw_server *s, gw_deadline_heap *h, ev_timer *w,
                      void (*due)(gw_server *, gw_session *));

/* gw_inbound.c: LWS_CALLBACK_RECEIVE (0, or -1 after gw__close_now); the registration was
 * confirmed or a pause ended: produce what the session holds, or wait among the stalled; the
 * session ends: its held message and `disconnect`; rx freed; the rate-limit timer's callback;
 * what gw_inbound allocated for the server (orphans, stalled FIFO, deadlines), at destroy. */
int gw_inbound_receive(gw_server *s, struct lws *wsi, gw_session *ss, const uint8_t *in,
                       size_t len);
void gw_inbound_flush(gw_server *s, gw_session *ss);
void gw_inbound_produce_final(gw_server *s, gw_session *ss);
void gw_inbound_rx_free(gw_server *s, gw_session *ss);
void gw_inbound_rate_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
void gw_inbound_finish(gw_server *s);

/* gw_outbound.c: queues m (borrowed) with `tag` for ss within its send queue's limits and asks
 * for a write (false: over a limit, ss was closed with 4001); dispatches what the Kafka consumer
 * handed over (LWS_CALLBACK_EVENT_WAIT_CANCELLED); LWS_CALLBACK_SERVER_WRITEABLE. */
bool gw_outbound_queue(gw_server *s, gw_session *ss, gw_msg *m, uint64_t tag, uint64_t now_ms);

/* gw_sendmem.c: over --sendq-max closes the largest queues (4001) until under it; false if that
 * closed `keep` (may be NULL). gw_sendmem_check: the soft limit from the keepalive wheel: 0 when
 * it closed ss, else the second to look again (next_s, or sooner while ss is over the limit). */
bool gw_sendmem_enforce(gw_server *s, gw_session *keep);
/* gw_sendmem.c: empties ss's send queue and takes its bytes off the total (an urgent close, the
 * session's end). */
void gw_sendmem_clear(gw_server *s, gw_session *ss);
uint32_t gw_sendmem_check(gw_server *s, gw_session *ss, uint64_t now_ms, uint32_t now_s,
                          uint32_t next_s);
/* gw_server.c: the payload of a keepalive ping to ss, which only its pong echoes (unguessable
 * without reading the ping: SipHash of the connection and its keepalive clock). */
#define GW_PING_TOKEN_LEN 16
void gw__ping_token(const gw_server *s, const gw_session *ss, char out[GW_PING_TOKEN_LEN]);
void gw_outbound_drain(gw_server *s);
int gw_outbound_writeable(gw_server *s, struct lws *wsi, gw_session *ss);

/* gw_chserve.c: the channel layer's state (0, or -1 with a message) and its end; a marked client
 * frame (gw_chops_marked) is an op: answered, never produced, except an allowed publish, for
 * which gw_chserve_op returns true (the caller produces the frame as a `msg`); a session ends:
 * its subscriptions and permissions go. */
int gw_chserve_init(gw_server *s, char *err, size_t errlen);
void gw_chserve_finish(gw_server *s);
bool gw_chserve_op(gw_server *s, gw_session *ss, const uint8_t *d, size_t len, bool binary);
void gw_chserve_release(gw_server *s, gw_session *ss);
/* A `subscribe` or `unsubscribe` record from a processor (a handler's wsgate_subscribe): applied
 * to each target connection here like the client's own op, without the permission check, and
 * told to the client ("server":true). */
void gw_chserve_server_op(gw_server *s, const gw_outbound *it, uint64_t now_ms);
/* gw_chserve.c, for gw_chpend: subscribes op (permission already decided) with its recovery,
 * returning a GW_CHOP_* or GW_CHOP_RECOVERING; and queues the answer to op (result rc, message
 * NULL for the error's own) to ss. */
int gw__chserve_join(gw_server *s, gw_session *ss, const gw_chop *op);
void gw__chserve_answer(gw_server *s, gw_session *ss, const gw_chop *op, int rc,
                        const char *message, uint64_t now_ms);

/* gw_chpend.c: subscribes waiting for the handler's decision (subscribe=handler). init: 0, or -1
 * when out of memory; ask: sends a subscribe_request and returns GW_CHOP_PENDING, or the error to
 * answer now; answer: a `subscribe` record with `rq` from a processor. */
typedef struct gw_chpend gw_chpend;
int gw_chpend_init(gw_server *s);
void gw_chpend_finish(gw_server *s);
int gw_chpend_ask(gw_server *s, gw_session *ss, const gw_chop *op);
void gw_chpend_answer(gw_server *s, const gw_outbound *it, uint64_t now_ms);
/* gw_inbound.c: produces ss's subscribe_request for channel ch[0..len) with token rq; returns a
 * gw_kafka_err. */
int gw_inbound_subscribe_request(gw_server *s, const gw_session *ss, const char *ch, size_t len,
                                 uint64_t rq);
/* gw_chpub.c: a `publish` record (it: borrowed) to this gateway's subscribers of its channel. */
void gw_chpub_dispatch(gw_server *s, const gw_outbound *it, uint64_t now_ms);
/* gw_chpub.c: frees what a channel held (gw_channels_limits.pos_free). */
void gw_chpub_pos_free(void *arg, gw_chpos *pos);
/* gw_chpub.c: the tail check's answer: :m says the channel's last publication is (epoch, last);
 * what this gateway has not delivered is filled from the history like a missing one before a held
 * publication (gaps for what it lacks). Returns a GW_TAIL_* result. */
int gw_chpub_tail(gw_server *s, gw_channel *ch, uint64_t epoch, uint64_t last);
/* gw_chtail.c: the tail check (--channel-tail-check). init/finish with the channel layer (finish
 * after the index is gone); touch: the channel ch's stream advanced here (a delivery or a gap),
 * its quiet period starts again; forget: the channel is going away. */
typedef struct gw_chtail gw_chtail;
int gw_chtail_init(gw_server *s);
void gw_chtail_finish(gw_server *s);
void gw_chtail_touch(gw_server *s, gw_chpos *pos, uint64_t now_ms);
void gw_chtail_forget(gw_server *s, gw_chpos *pos);
/* gw_chrecover.c: ss just subscribed (sub) with op's `since`: answer and replay from the
 * history, then live; without `since`, answer with the channel's position read from Redis, then
 * live; and, at shutdown after the registry is gone, what is left of them. */
void gw_chrecover_start(gw_server *s, gw_session *ss, gw_chsub *sub, const gw_chop *op);
void gw_chrecover_finish(gw_server *s);
/* Ends the recovery of ss's subscription to name, if one runs (a new subscribe with `since`
 * replaces it). */
void gw_chrecover_cancel(gw_server *s, const gw_session *ss, const char *name, size_t len);
/* gw_chpresq.c: the presence op's queries. init/finish with the channel layer (0, or -1 with a
 * message); op: a parsed presence op from ss, answered now (an error) or when Redis answers. */
int gw_chpresq_init(gw_server *s, char *err, size_t errlen);
void gw_chpresq_finish(gw_server *s);
void gw_chpresq_op(gw_server *s, gw_session *ss, const gw_chop *op);
/* gw_chserve.c: answers op (borrowed) to ss with err, counted in the op metric; closes ss when
 * out of memory. */
void gw_chserve_answer(gw_server *s, gw_session *ss, const gw_chop *op, int err);
/* gw_chresync.c: after each Redis (re)connect, writes every subscription's presence entry and
 * every channel's gateway-set member again, --channel-resync-rate subscriptions a second (start:
 * gw_chreg's resync hook, arg the server). due: a subscription to an existing channel during a
 * pass must write the channel's set member itself (true once per channel and pass). init before
 * the registry connects; finish after it is destroyed. */
int gw_chresync_init(gw_server *s, char *err, size_t errlen);
void gw_chresync_finish(gw_server *s);
void gw_chresync_start(void *server);
bool gw_chresync_due(gw_server *s, const char *name, size_t len);
/* gw_chrenew.c: renews the TTL of the channel keys this gateway holds, each channel once per
 * --channel-key-renew. init after the channel registry is created (0, or -1 with a message);
 * finish after it is destroyed (renewals still in flight then touch nothing). */
int gw_chrenew_init(gw_server *s, char *err, size_t errlen);
void gw_chrenew_finish(gw_server *s);
/* The walk's tick stops while no channel is held; a channel just created starts it again. */
void gw_chrenew_wake(gw_server *s);
/* gw_chjlserve.c: join/leave events (namespaces with join_leave=true). init/finish with the
 * channel layer; local: ss joined (or left) channel name[0..len), batched here, produced to
 * Kafka every 50 ms; release: ss ends (before its user goes), it leaves every channel; dispatch:
 * a `joinleave` record (it: borrowed) to this gateway's subscribers, coalesced per channel. */
int gw_chjlserve_init(gw_server *s, char *err, size_t errlen);
void gw_chjlserve_finish(gw_server *s);
void gw_chjlserve_local(gw_server *s, const gw_session *ss, const char *name, size_t len,
                        bool joined);
void gw_chjlserve_release(gw_server *s, const gw_session *ss);
void gw_chjlserve_dispatch(gw_server *s, const gw_outbound *it, uint64_t now_ms);
/* gw_expiry.c: tokens expiring on live connections. init/finish with the server (0, or -1 with a
 * message); start: at ESTABLISHED with the token's "exp" (0: not checked; -1 out of memory);
 * tick: from the server's one-second timer; refresh_op: a marked frame gw_expiry_marked() says is
 * a refresh op, answered, never produced. */
typedef struct gw_expiry gw_expiry;
int gw_expiry_init(gw_server *s, char *err, size_t errlen);
void gw_expiry_finish(gw_server *s);
int gw_expiry_start(gw_server *s, gw_session *ss, int64_t exp_s);
void gw_expiry_tick(gw_server *s);
void gw_expiry_refresh_op(gw_server *s, gw_session *ss, const uint8_t *d, size_t len, bool binary);
/* An exact prefix, after gw_chops_marked(): {"wsgate":"refresh" (text), or the fixstr "wsgate"
 * then the fixstr "refresh" (MessagePack); the op's own parse checks the rest. */
static inline bool gw_expiry_marked(const uint8_t *d, size_t len, bool binary) {
  if (binary)
    return len >= 16 && memcmp(d + 8, "\xa7refresh", 8) == 0;
  return len >= 19 && memcmp(d + 9, ":\"refresh\"", 10) == 0;
}
/* A marked client frame: a refresh op, or a channel op. True when the frame is still to be
 * produced to Kafka (a client publish the gateway allowed: gw_chserve_op()). */
static inline bool gw__control_op(gw_server *s, gw_session *ss, const uint8_t *d, size_t len,
                                  bool binary) {
  if (gw_expiry_marked(d, len, binary)) {
    gw_expiry_refresh_op(s, ss, d, len, binary);
    return false;
  }
  return gw_chserve_op(s, ss, d, len, binary);
}

/* A pending upgrade's channel permissions as the session keeps them (NULL: none; out of memory
 * is none too), and freeing them. */
char *gw__chperm_take(const gw_pending *p);
void gw__chperm_free(char *perm);

#endif
