/*
 * gw_server: the WebSocket side of the gateway (see gw_server.h). The only file that includes
 * libwebsockets.h.
 *
 * A connection's life:
 *   1. LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: the CVE-2025-11677 guard, admission (draining, ready,
 *      connection limit, upgrade rate), subprotocol, Origin and the token; refusals are answered
 *      here with 400/401/403/503 and a JSON body, and cost no Redis write and no Kafka message.
 *      The user id is kept in a side table keyed by the wsi, because lws gives the ws protocol a
 *      new per-session block (notes/lws-4.1.6.md §2).
 *   2. LWS_CALLBACK_ESTABLISHED: connection id, index entries, Redis registration; reading is
 *      held until Redis confirms, then `connect` is produced and reading starts.
 *   3. LWS_CALLBACK_RECEIVE: reassembly up to --max-message, rate limits, `msg` produced (or held
 *      when Kafka pushes back: reading stops for that connection until it drains).
 *   4. Outbound: the Kafka consumer thread wakes the loop (lws_cancel_service); every envelope
 *      waiting is dispatched to the send queues of its target connections; one lws_write per
 *      LWS_CALLBACK_SERVER_WRITEABLE.
 *   5. LWS_CALLBACK_CLOSED: `disconnect` produced (if `connect` was), Redis entry removed.
 *
 * Resumable delivery (subprotocol <subprotocol>+seq, docs/PROTOCOL.md "Resume after reconnect"):
 * such a connection gets every message sent to its user in q order, each prefixed with "<q>\n",
 * without gaps or duplicates: a message that arrives ahead of its turn (two processors sent to the
 * user at once), and everything the client missed while away (?resume=<q>), is read from the
 * user's replay stream in Redis (gw_registry_replay_read), in pages that wait for the send queue
 * to drain; what arrives meanwhile waits in a bounded per-connection list. A control frame
 * "wsgate\n{...}" tells the client where it stands (sync) and what was lost (gap).
 *
 * Threads: the loop thread, except gw_server_wake() (the Kafka consumer thread; it calls only
 * lws_cancel_service, the one libwebsockets call that is safe from another thread).
 */
#include "gw_server.h"

#include <assert.h>
#include <ev.h>
#include <libwebsockets.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

#include "gw_conns.h"
#include "gw_jwt.h"
#include "gw_keepalive.h"
#include "gw_ratelimit.h"
#include "gw_sendq.h"
#include "wsg_envelope.h"
#include "wsg_http.h"
#include "wsg_log.h"
#include "wsg_time.h"

static_assert(GW_MSG_HEADROOM == LWS_PRE, "gw_msg headroom must fit libwebsockets' frame header");

/* Messages up to this size are written in one frame straight from the shared gw_msg; larger ones
 * in fragments of this size through a scratch buffer, so libwebsockets never copies more than
 * one fragment of a connection's output when the socket is full (notes §5). */
#define FRAG_SIZE ((size_t)64 * 1024)
/*
 * On a permessage-deflate connection: fragments of DEFLATE_FRAG_SIZE, and a compressor output
 * buffer of 2^DEFLATE_TX_BUF_PWR2 bytes (lws' default is 1 KiB), so that every lws_write()
 * compresses all of its input at once. What one write can produce: at most one full deflate
 * block completed by this fragment (16,383 symbols, each at most 4 bytes: zlib never codes a
 * block worse than fixed-length codes would) plus the rest of the fragment (8 KiB of symbols),
 * about 97 KiB. With a smaller buffer lws keeps input pending and drains it over later POLLOUTs
 * (tx_draining_ext); a ping or pong lws writes meanwhile (its keepalive ping, or the pong to a
 * client's ping) enters the compressor as a continuation of the pending message and trips the
 * assertion !priv->tx.avail_in in extension-permessage-deflate.c: SIGABRT, every connection of
 * the gateway lost (libwebsockets 4.1.6, unchanged upstream; docs/RELIABILITY.md). The buffer
 * is allocated on the first message sent and kept: 128 KiB per compressed connection, bounded
 * by --deflate-max-conns.
 */
#define DEFLATE_FRAG_SIZE       ((size_t)8 * 1024)
#define DEFLATE_TX_BUF_PWR2_STR "17"
/* Upper bound of one send() (tx_packet_size): a fragment plus its header. */
#define TX_PACKET_SIZE (FRAG_SIZE + 16)
/* Enough for an 8 KiB token in Authorization or the query plus ordinary browser headers. */
#define MAX_HTTP_HEADER_DATA 12288
/* File descriptors kept for Kafka, Redis, the operations endpoint and logs. */
#define FD_RESERVE 256
/* Entries in one page of a replay read (its bytes are bounded by the send queue's limits). */
#define REPLAY_PAGE_ENTRIES 256
/* Outbound envelopes dispatched per wake-up before other events get a turn. */
#define OUTBOUND_BATCH    256
#define OUTBOUND_PER_WAKE 4096
/* A closing connection whose close frame cannot be written within this long is dropped. */
#define CLOSE_TIMEOUT_S 5
/* At most this much unread client input is discarded right before a socket is closed. */
#define LINGER_DISCARD_MAX ((size_t)8 << 20)
/* Disconnect envelopes kept while Kafka refuses them (a queue-full burst). */
#define ORPHAN_MAX_BYTES    (16u << 20)
#define LOG_LIMIT_PER_S     5
#define SUBPROTOCOL_HDR_MAX 512
#define ORIGIN_HDR_MAX      512

/* Why reading from a connection is held: any bit set = lws_rx_flow_control(wsi, 0), unless
 * the connection is closing (F_CLOSING: it reads and discards, see reading_paused). */
enum {
  HOLD_REGISTER = 1u << 0, /* Redis has not confirmed the registration yet */
  HOLD_STALL = 1u << 1,    /* a complete message waits for Kafka (queue full) */
  HOLD_RATE = 1u << 2,     /* a complete message waits for the rate limit */
  HOLD_RESUME = 1u << 4,   /* a resumable connection is catching up: requests wait for the sync */
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
  uint8_t hold;
  uint32_t alive_s; /* keepalive clock: second of the last pong, or of the upgrade */
  char *close_reason;
  struct gw_seq *sq; /* resumable connections only (subprotocol +seq), else NULL */
} gw_session;

static_assert(sizeof(gw_session) <= 160, "keep the per-connection block small");

/* A user authenticated in CONFIRM_UPGRADE, waiting for ESTABLISHED (side table keyed by wsi). */
typedef struct {
  uint64_t resume; /* ?resume=<q>, 0 when not given */
  uint32_t len;
  char user[];
} gw_pending;

/*
 * The sequence state of a resumable connection. `last` is the client's position: the q of the
 * last sequenced message queued for it. Every message with a higher q reaches it exactly once and
 * in order: straight from Kafka when it is the next one, else from the replay stream.
 *
 * Why reading the stream after the registration loses nothing: a processor stores a message (the
 * append script) before it reads the user's connections from Redis, on one connection, so a
 * message stored after the gateway's read was routed by a lookup that already saw the
 * registration, and reaches this connection through Kafka; one stored before is in the read.
 * A fresh connection's position is read just BEFORE its registration (the two commands run in
 * that order): messages after it either reach the connection or show up as a gap to fill.
 */
typedef enum {
  SEQ_POSITION,    /* the position read of a fresh connection is in flight */
  SEQ_REGISTERING, /* waiting for the registration, then the first read */
  SEQ_READING,     /* a replay read is in flight */
  SEQ_ROOM,        /* more to read, waiting for the send queue to drain */
  SEQ_LIVE,        /* in step: the next q goes straight to the send queue */
} seq_state;

typedef struct gw_seq {
  uint64_t last;     /* q of the last sequenced message queued: the client's position */
  uint64_t hi;       /* highest q seen in a deliver; above `last` while messages are missing */
  uint64_t resume;   /* the client's ?resume=, 0 for a fresh connection */
  uint64_t replayed; /* messages the catch-up delivered, for the sync frame */
  gw_sendq held;     /* delivers that arrived while reading, in order; tag = q (0: none) */
  uint8_t state;     /* seq_state */
  bool synced;       /* the sync frame is queued and requests are read again */
  bool complete;     /* nothing since the starting position was lost (until the sync) */
} gw_seq;

/* The tag of a control frame ("wsgate\n{...}") in a send queue; every other tag is a q, 0 none. */
#define SEQ_CONTROL UINT64_MAX

/* A disconnect envelope Kafka refused (queue full), retried when the queue drains. */
typedef struct orphan {
  struct orphan *next;
  uint64_t conn_id;
  uint32_t keylen, len;
  uint8_t data[]; /* key, then value */
} orphan;

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

static const char *const upgrade_labels[] = {
#define UPG_LABEL(name, label) "result=\"" label "\"",
    UPGRADE_RESULTS(UPG_LABEL)
#undef UPG_LABEL
};

enum {
#define CLOSE_IDX(name, code, when, reason) CLOSE_IDX_##name,
  GW_CLOSE_MAP(CLOSE_IDX)
#undef CLOSE_IDX
      CLOSE_IDX__COUNT
};

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

  gw_jwt_config jwt;
  gw_rate rate_msgs, rate_bytes, rate_upgrades;
  uint64_t upgrades_tat;
  gw_sendq_limits sendq_limits;
  gw_sendq_limits held_limits; /* a resumable connection's held delivers */
  gw_replay_limits replay_limits;
  uint64_t replay_room; /* read the next page once the send queue holds at most this */
  uint64_t max_conns;

  gw_conn_map conns;   /* conn id -> gw_session */
  gw_conn_map pending; /* (uintptr_t)wsi -> gw_pending */
  gw_user_map users;
  uint64_t conn_prefix;
  uint32_t conn_counter;
  int32_t slot; /* last slot held, for the envelopes' `s` */

  wsg_buf enc;      /* reused for every inbound envelope */
  uint8_t *scratch; /* LWS_PRE + FRAG_SIZE, for fragmented sends */
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
  /* Keepalive: ping after --ping-interval without a pong, hang up after --idle-timeout, checked
   * once a second from a wheel instead of libwebsockets' timers (gw_keepalive.h says why). */
  gw_keepalive *ka;
  ev_timer ka_w;
  uint64_t ka_t0_ms;
  uint32_t ping_s, idle_s;

  wsg_log_ratelimit rl_refuse, rl_dev, rl_misc;

  wsg_counter *m_upgrades[UPG__COUNT];
  wsg_counter *m_closes[CLOSE_IDX__COUNT];
  wsg_gauge *m_conns, *m_sendq_bytes, *m_rx_bytes, *m_stalled;
  wsg_counter *m_msgs_in, *m_bytes_in, *m_msgs_out, *m_bytes_out;
  wsg_counter *m_out_nobody, *m_out_too_big, *m_reg_failed, *m_rate_limited, *m_kafka_stalls;
  wsg_counter *m_events_lost, *m_peer_closes, *m_linger_discarded, *m_pings, *m_idle_closes;
  wsg_counter *m_resumes_complete, *m_resumes_incomplete, *m_replay_reads, *m_replayed;
  wsg_counter *m_seq_gaps, *m_seq_lost, *m_seq_dups;
  wsg_gauge *m_seq_conns;
  wsg_histogram *m_latency;
};

static bool seq_read(gw_server *s, gw_session *ss);
static int seq_start(gw_server *s, gw_session *ss, uint64_t resume);
static void seq_free(gw_server *s, gw_session *ss);

/* libwebsockets' log callback has no user pointer: this limiter is process-level log state, like
 * the log settings themselves, and only the loop thread (where lws logs) touches it. */
static wsg_log_ratelimit lws_log_rl;

/* ------------------------------------------------------------------------------------------ */
/* small helpers                                                                               */

const char *gw_close_reason(int code) {
  switch (code) {
#define CLOSE_REASON(name, c, when, reason)                                                        \
  case c:                                                                                          \
    return reason;
    GW_CLOSE_MAP(CLOSE_REASON)
#undef CLOSE_REASON
  }
  return "";
}

bool gw_close_code_app_allowed(int code) {
  return code == 1000 || (code >= 3000 && code <= 3999) || (code >= 4100 && code <= 4999);
}

static void count_close(gw_server *s, int code) {
  switch (code) {
#define CLOSE_COUNT(name, c, when, reason)                                                         \
  case c:                                                                                          \
    wsg_counter_add(s->m_closes[CLOSE_IDX_##name], 1);                                             \
    break;
    GW_CLOSE_MAP(CLOSE_COUNT)
#undef CLOSE_COUNT
  default:
    break;
  }
}

static gw_server *server_of(struct lws *wsi) {
  return lws_context_user(lws_get_context(wsi));
}

/* Appends `s` as a JSON string body (quotes, backslashes and controls escaped). */
static size_t json_escape(char *out, size_t cap, const char *s) {
  size_t o = 0;
  for (; *s && o + 7 < cap; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      out[o++] = '\\';
      out[o++] = (char)c;
    } else if (c < 0x20) {
      o += (size_t)snprintf(out + o, cap - o, "\\u%04x", c);
    } else {
      out[o++] = (char)c;
    }
  }
  out[o] = '\0';
  return o;
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

static void peer_of(struct lws *wsi, char *buf, size_t len) {
  buf[0] = '\0';
  if (!lws_get_peer_simple(wsi, buf, len))
    snprintf(buf, len, "?");
}

/* ------------------------------------------------------------------------------------------ */
/* holds and closes                                                                            */

/*
 * A closing connection never stops reading: it discards what the client still sends (lingering
 * close, as nginx's lingering_close). Input left unread in the socket turns the final close()
 * into a TCP reset, and a reset makes the client's kernel throw away what it has not read yet:
 * the replies written before the close and the close frame itself (docs/RELIABILITY.md, bug 4).
 * Reading also lets libwebsockets see the client's close frame answering ours, which is what
 * ends the connection (LRS_AWAITING_CLOSE_ACK: lws drops data frames there itself).
 */
static bool reading_paused(const gw_session *ss) {
  return ss->hold != 0 && !(ss->flags & F_CLOSING);
}

static void apply_hold(gw_session *ss, bool was_paused) {
  bool paused = reading_paused(ss);
  if (paused == was_paused)
    return;
  /* PROCESS_NOW: applied at once also when called from outside this wsi's own callback. */
  lws_rx_flow_control(ss->wsi, paused ? 0 : (1 | LWS_RXFLOW_REASON_FLAG_PROCESS_NOW));
}

static void set_hold(gw_session *ss, unsigned bit, bool on) {
  bool was = reading_paused(ss);
  ss->hold = on ? (uint8_t)(ss->hold | bit) : (uint8_t)(ss->hold & ~bit);
  apply_hold(ss, was);
}

/* A close was decided: from now on the client's input is read and discarded (on_receive). */
static void mark_closing(gw_session *ss) {
  bool was = reading_paused(ss);
  ss->flags |= F_CLOSING;
  apply_hold(ss, was);
}

/*
 * Right before libwebsockets closes the socket (LWS_CALLBACK_CLOSED runs between its
 * shutdown(SHUT_WR) and close()): discard input that is still unread, so the close is a FIN
 * after what is still in the send buffer, not a reset that destroys it. This covers the closes
 * that end without the client's close frame: the close timeout, the end of a drain, lws' own
 * hangups. Bounded: a client that keeps sending is cut off at LINGER_DISCARD_MAX.
 */
static void discard_unread(gw_server *s, struct lws *wsi) {
  lws_sockfd_type fd = lws_get_socket_fd(wsi);
  if (fd < 0)
    return;
  size_t total = 0;
  while (total < LINGER_DISCARD_MAX) {
    ssize_t n = recv(fd, s->scratch, LWS_PRE + FRAG_SIZE, MSG_DONTWAIT);
    if (n <= 0)
      break; /* EOF, nothing left (EAGAIN) or an error: nothing more to discard */
    total += (size_t)n;
  }
  if (total)
    wsg_counter_add(s->m_linger_discarded, total);
}

/*
 * Closes from inside the wsi's own callback: the caller returns -1 right after. lws sends the
 * close frame and waits for the client's.
 */
static int close_now(gw_server *s, struct lws *wsi, gw_session *ss, int code, const char *reason) {
  if (ss && (ss->flags & F_CLOSE_SENT))
    return -1; /* lws may call back again while it flushes the close: decide once */
  if (!reason)
    reason = gw_close_reason(code);
  size_t rlen = strnlen(reason, WSG_MAX_REASON_LEN);
  /* A close decided earlier (close_async) was counted then, whether or not its close frame
   * can ever be written; one decided here is counted here. */
  if (!ss || !(ss->flags & F_CLOSING))
    count_close(s, code);
  if (ss) {
    mark_closing(ss);
    ss->flags |= F_CLOSE_SENT;
    ss->disconnect_code = (uint16_t)code;
  }
  lws_close_reason(wsi, (enum lws_close_status)code, (unsigned char *)reason, rlen);
  /* lws 4.1.6 ignores a RECEIVE callback's -1 while it services permessage-deflate's pending
   * output (ops-ws.c, "RX EXT draining"): also close from WRITEABLE, and at worst by timeout. */
  if (ss) {
    lws_callback_on_writable(wsi);
    lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, CLOSE_TIMEOUT_S);
  }
  return -1;
}

static void sendq_clear(gw_server *s, gw_session *ss) {
  s->sendq_bytes -= gw_sendq_bytes(&ss->q);
  gw_sendq_clear(&ss->q);
  ss->sent_off = 0;
  wsg_gauge_set(s->m_sendq_bytes, (int64_t)s->sendq_bytes);
}

/*
 * Closes from anywhere on the loop thread (outbound close envelope, drain, slow consumer, Kafka
 * failure): the close frame goes out from WRITEABLE, after what is queued unless urgent. A
 * timeout drops the connection if even the close frame cannot be written (a client that stopped
 * reading), so a close always ends.
 */
static void close_async(gw_server *s, gw_session *ss, int code, const char *reason, bool urgent) {
  if (ss->flags & F_RELEASED)
    return;
  if (ss->flags & F_CLOSING) {
    if (urgent && !(ss->flags & F_CLOSE_URGENT)) {
      ss->flags |= F_CLOSE_URGENT;
      sendq_clear(s, ss);
      lws_callback_on_writable(ss->wsi);
    }
    return;
  }
  mark_closing(ss);
  /* Counted when decided: a slow consumer's close frame may never be written (its socket is
   * full) and the connection then ends by the close timeout, but it was still closed with 4001. */
  count_close(s, code);
  if (urgent) {
    ss->flags |= F_CLOSE_URGENT;
    sendq_clear(s, ss);
  }
  ss->close_code = (uint16_t)code;
  ss->disconnect_code = (uint16_t)code;
  if (reason && *reason && strcmp(reason, gw_close_reason(code)) != 0)
    ss->close_reason = strndup(reason, WSG_MAX_REASON_LEN); /* NULL: the default text is used */
  lws_set_timeout(ss->wsi, PENDING_TIMEOUT_USER_OK, CLOSE_TIMEOUT_S);
  lws_callback_on_writable(ss->wsi);
}

/* ------------------------------------------------------------------------------------------ */
/* keepalive                                                                                   */

static uint32_t ka_now(const gw_server *s) {
  return (uint32_t)((wsg_now_mono_ms() - s->ka_t0_ms) / 1000);
}

/* A connection's check came due: ping it once --ping-interval has passed without a pong, hang it
 * up once --idle-timeout has, and otherwise look again when the next of those is reached. */
static void keepalive_due(void *arg, uint64_t conn_id) {
  gw_server *s = arg;
  gw_session *ss = gw_conn_map_get(&s->conns, conn_id);
  if (!ss || !ss->wsi || (ss->flags & (F_CLOSING | F_RELEASED | F_LWS_CLOSING)))
    return; /* gone, or closing: a close ends by a timeout of its own */
  uint32_t since = ka_now(s) - ss->alive_s;
  if (since >= s->idle_s) {
    /* No close frame: a peer that answers no ping would not read it either. */
    wsg_counter_add(s->m_idle_closes, 1);
    wsg_log_limited(&s->rl_misc, LOG_LIMIT_PER_S, wsg_now_mono_ms(), WSG_LOG_INFO, "server",
                    "connection %llu of user %s: no pong for %u s (--idle-timeout); dropped",
                    (unsigned long long)conn_id, ss->user ? ss->user->id : "?", since);
    mark_closing(ss);
    ss->disconnect_code = 1006;
    lws_set_timeout(ss->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
    return;
  }
  if (since >= s->ping_s && !(ss->flags & F_PINGED)) {
    ss->flags |= F_PINGED | F_PING_DUE;
    lws_callback_on_writable(ss->wsi);
  }
  uint32_t next = ss->alive_s + ((ss->flags & F_PINGED) ? s->idle_s : s->ping_s);
  if (gw_keepalive_schedule(s->ka, conn_id, next) != 0)
    close_async(s, ss, GW_CLOSE_TRY_AGAIN, NULL, true); /* out of memory: not left unchecked */
}

static void keepalive_timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop;
  (void)revents;
  gw_server *s = w->data;
  gw_keepalive_run(s->ka, ka_now(s), keepalive_due, s);
}

/* ------------------------------------------------------------------------------------------ */
/* producing envelopes                                                                         */

static void env_base(gw_server *s, const gw_session *ss, wsg_envelope *e, wsg_env_kind kind) {
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
  e->ts_us = wsg_now_wall_us();
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

static void rx_free(gw_server *s, gw_session *ss) {
  if (ss->rx) {
    s->rx_bytes -= ss->rx_cap;
    free(ss->rx);
    ss->rx = NULL;
    wsg_gauge_set(s->m_rx_bytes, (int64_t)s->rx_bytes);
  }
  ss->rx_len = ss->rx_cap = 0;
  ss->flags &= (uint16_t) ~(F_MSG_READY | F_IN_MSG);
}

/* Makes room for `need` bytes in rx within the global --rx-memory-max budget. 0 or -1. */
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
  uint8_t *n = realloc(ss->rx, ncap);
  if (!n)
    return -1;
  s->rx_bytes = s->rx_bytes - ss->rx_cap + ncap;
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
      close_async(s, ss, GW_CLOSE_TRY_AGAIN, NULL, false);
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
 * the session was closed (close_async) because Kafka refused for good.
 */
static int flush_held(gw_server *s, gw_session *ss) {
  if ((ss->flags & F_REGISTERED) && !(ss->flags & F_CONNECT_SENT)) {
    wsg_envelope e;
    env_base(s, ss, &e, WSG_ENV_CONNECT);
    int rc = produce_env(s, ss, &e);
    if (rc == GW_KAFKA_FULL)
      return 1;
    if (rc != GW_KAFKA_OK) {
      close_async(s, ss, GW_CLOSE_INTERNAL, NULL, false);
      return -1;
    }
    ss->flags |= F_CONNECT_SENT;
  }
  if (!(ss->flags & F_MSG_READY))
    return 0;
  if (!(ss->flags & F_CONNECT_SENT) || s->pressure)
    return 1; /* not registered yet (on_registered flushes), or Kafka still full */
  wsg_envelope e;
  env_base(s, ss, &e, WSG_ENV_MSG);
  e.fields |= WSG_F_SEQ | WSG_F_DATA | WSG_F_BINARY;
  e.ts_us = ss->rx_ts_us;
  e.seq = ss->seq + 1;
  e.data = ss->rx;
  e.data_len = ss->rx_len;
  e.binary = (ss->flags & F_BINARY) != 0;
  int rc = produce_env(s, ss, &e);
  if (rc == GW_KAFKA_FULL)
    return 1;
  if (rc != GW_KAFKA_OK) {
    close_async(s, ss, rc == GW_KAFKA_TOO_LARGE ? GW_CLOSE_TOO_BIG : GW_CLOSE_INTERNAL, NULL,
                false);
    rx_free(s, ss);
    return -1;
  }
  ss->seq++;
  wsg_counter_add(s->m_msgs_in, 1);
  wsg_counter_add(s->m_bytes_in, ss->rx_len);
  rx_free(s, ss);
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

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * Rate-limit pauses wake up from one ev_timer over a heap of deadlines: lws' per-wsi timer
 * (lws_set_timer_usecs) is only rescheduled when lws' idle watcher runs on a foreign libev loop,
 * and was measured firing tens of seconds late.
 */
static void rate_timer_arm(gw_server *s) {
  gw_deadline d;
  ev_timer_stop(s->o.loop, &s->rate_w);
  if (!gw_deadline_peek(&s->rate_heap, &d))
    return;
  uint64_t now = wsg_now_mono_us();
  double in = d.at > now ? (double)(d.at - now) / 1e6 : 0.;
  ev_timer_set(&s->rate_w, in, 0.);
  ev_timer_start(s->o.loop, &s->rate_w);
}

static int rate_timer_add(gw_server *s, gw_session *ss, uint64_t wait_ns) {
  if (gw_deadline_push(&s->rate_heap, wsg_now_mono_us() + wait_ns / 1000 + 1, ss->conn_id) != 0)
    return -1;
  rate_timer_arm(s);
  return 0;
}

static void on_rate_due(gw_server *s, gw_session *ss);

static void rate_timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop;
  (void)revents;
  gw_server *s = w->data;
  uint64_t now = wsg_now_mono_us();
  gw_deadline d;
  while (gw_deadline_peek(&s->rate_heap, &d) && d.at <= now) {
    gw_deadline_pop(&s->rate_heap);
    gw_session *ss = gw_conn_map_get(&s->conns, d.conn);
    if (ss)
      on_rate_due(s, ss);
  }
  rate_timer_arm(s);
}

/*
 * A complete client message, either borrowed from lws (`in_rx` false) or in ss->rx. Returns 0, or
 * -1 after close_now (the caller returns -1 to lws).
 */
static int on_message(gw_server *s, struct lws *wsi, gw_session *ss, const uint8_t *data,
                      size_t len, bool in_rx) {
  ss->rx_ts_us = wsg_now_wall_us();
  uint64_t t = now_ns();
  uint64_t wait = rate_wait(s, ss, len, t);
  if (wait > 0) {
    wsg_counter_add(s->m_rate_limited, 1);
    if (s->cfg->rate_action_kind == GW_RATE_CLOSE)
      return close_now(s, wsi, ss, GW_CLOSE_POLICY, NULL);
    /* Pause: the message waits in the session, reading stops (TCP pushes back on the client),
     * and the wsi timer resumes it when the bucket allows. Nothing is dropped. */
    if (keep_message(s, ss, data, len, in_rx) != 0)
      return close_now(s, wsi, ss, GW_CLOSE_TRY_AGAIN, NULL);
    if (rate_timer_add(s, ss, wait) != 0)
      return close_now(s, wsi, ss, GW_CLOSE_TRY_AGAIN, NULL);
    set_hold(ss, HOLD_RATE, true);
    return 0;
  }
  rate_take(s, ss, len, t);
  if (!in_rx) {
    /* The common case, a message that arrived in one piece: produce straight from lws' buffer. */
    if ((ss->flags & F_CONNECT_SENT) && !s->pressure) {
      wsg_envelope e;
      env_base(s, ss, &e, WSG_ENV_MSG);
      e.fields |= WSG_F_SEQ | WSG_F_DATA | WSG_F_BINARY;
      e.ts_us = ss->rx_ts_us;
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
        return close_now(s, wsi, ss, GW_CLOSE_TOO_BIG, NULL);
      if (rc != GW_KAFKA_FULL)
        return close_now(s, wsi, ss, GW_CLOSE_INTERNAL, NULL);
    }
    if (keep_message(s, ss, data, len, false) != 0)
      return close_now(s, wsi, ss, GW_CLOSE_TRY_AGAIN, NULL);
  } else {
    ss->flags |= F_MSG_READY;
  }
  int r = flush_held(s, ss);
  if (r < 0)
    return 0; /* close_async already scheduled */
  if (r > 0) {
    if (ss->flags & F_REGISTERED)
      stalled_push(s, ss);
    else
      set_hold(ss, HOLD_REGISTER, true); /* on_registered flushes it */
  }
  return 0;
}

static int on_receive(gw_server *s, struct lws *wsi, gw_session *ss, const uint8_t *in,
                      size_t len) {
  /* lws may deliver more of the same read after we returned -1 (notes §6), and with
   * permessage-deflate it keeps only the LAST return value of the chunks it inflates: keep
   * answering -1 or the close we asked for is forgotten; but once lws has begun its close, a -1
   * would make it drop the socket at once (no close frame; a reset if input is unread): from then
   * on the data is discarded (lingering close, mark_closing). */
  if (ss->flags & F_LWS_CLOSING)
    return 0;
  if (ss->flags & F_CLOSE_SENT)
    return -1;
  if (!ss->user || (ss->flags & (F_CLOSING | F_RELEASED)))
    return 0; /* a close is on its way through WRITEABLE: ignore the data */
  if (ss->flags & F_MSG_READY) {
    /* Reading is held while a message waits, so lws should not deliver more; if it does (data
     * it had already decompressed), holding a second message would unbound memory. */
    WSG_WARN("server", "connection %llu: data arrived while a message was held; closing",
             (unsigned long long)ss->conn_id);
    return close_now(s, wsi, ss, GW_CLOSE_TRY_AGAIN, NULL);
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
    rx_free(s, ss);
    return close_now(s, wsi, ss, GW_CLOSE_TOO_BIG, reason);
  }
  bool fin = lws_is_final_fragment(wsi);
  if (fin && ss->rx_len == 0) {
    ss->flags &= (uint16_t)~F_IN_MSG;
    return on_message(s, wsi, ss, in, len, false);
  }
  if (rx_reserve(s, ss, (size_t)ss->rx_len + len) != 0) {
    wsg_log_limited(&s->rl_misc, LOG_LIMIT_PER_S, wsg_now_mono_ms(), WSG_LOG_WARN, "server",
                    "--rx-memory-max (%llu bytes) reached: closing connection %llu with 1013",
                    (unsigned long long)s->cfg->rx_memory_max, (unsigned long long)ss->conn_id);
    rx_free(s, ss);
    return close_now(s, wsi, ss, GW_CLOSE_TRY_AGAIN, NULL);
  }
  if (len)
    memcpy(ss->rx + ss->rx_len, in, len);
  ss->rx_len += (uint32_t)len;
  if (!fin)
    return 0;
  ss->flags &= (uint16_t)~F_IN_MSG;
  return on_message(s, wsi, ss, ss->rx, ss->rx_len, true);
}

/* A rate-limited connection's deadline came: produce what it holds and read again. */
static void on_rate_due(gw_server *s, gw_session *ss) {
  if (!(ss->hold & HOLD_RATE) || (ss->flags & (F_CLOSING | F_RELEASED)))
    return;
  uint64_t t = now_ns();
  uint64_t wait = rate_wait(s, ss, ss->rx_len, t);
  if (wait > 0) {
    if (rate_timer_add(s, ss, wait) != 0)
      close_async(s, ss, GW_CLOSE_TRY_AGAIN, NULL, false);
    return;
  }
  rate_take(s, ss, ss->rx_len, t);
  set_hold(ss, HOLD_RATE, false);
  int r = flush_held(s, ss);
  if (r > 0)
    stalled_push(s, ss);
  else if (r == 0)
    release_holds(ss);
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
static void produce_final(gw_server *s, gw_session *ss) {
  wsg_envelope e;
  if (!(ss->flags & F_CONNECT_SENT)) {
    if (ss->flags & F_MSG_READY)
      wsg_counter_add(s->m_events_lost,
                      1); /* never announced by `connect`: nobody may see its data */
    return;
  }
  if (ss->flags & F_MSG_READY) {
    env_base(s, ss, &e, WSG_ENV_MSG);
    e.fields |= WSG_F_SEQ | WSG_F_DATA | WSG_F_BINARY;
    e.ts_us = ss->rx_ts_us;
    e.seq = ++ss->seq;
    e.data = ss->rx;
    e.data_len = ss->rx_len;
    e.binary = (ss->flags & F_BINARY) != 0;
    produce_or_orphan(s, ss, &e);
  }
  env_base(s, ss, &e, WSG_ENV_DISCONNECT);
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
  close_async(s, ss, GW_CLOSE_INTERNAL, "internal error: message not delivered", false);
}

/* ------------------------------------------------------------------------------------------ */
/* upgrade                                                                                     */

/*
 * Why the status line is written here rather than by lws_add_http_common_headers(): libwebsockets
 * 4.1.6 takes the response's version from wsi->http.request_version, which the WebSocket upgrade
 * path never sets, so every refused upgrade went out as "HTTP/1.0", and strict clients (Python's
 * websockets among them) then fail with an invalid-response error instead of reading our 401,
 * 429 or 503. An upgrade is HTTP/1.1 by definition (RFC 6455 4.1).
 */
static int http_reply(struct lws *wsi, unsigned status, const char *body, const char *www_auth,
                      int retry_after) {
  unsigned char buf[LWS_PRE + 2048];
  unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
  size_t blen = strlen(body);
  char line[64];
  int n = snprintf(line, sizeof line, "HTTP/1.1 %u %s", status, wsg_http_status_text((int)status));
  static const char json[] = "application/json", close_it[] = "close";
  if (lws_add_http_header_by_name(wsi, NULL, (const unsigned char *)line, n, &p, end) ||
      lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE, (const unsigned char *)json,
                                   (int)sizeof json - 1, &p, end) ||
      lws_add_http_header_content_length(wsi, blen, &p, end) ||
      lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION, (const unsigned char *)close_it,
                                   (int)sizeof close_it - 1, &p, end))
    return -1;
  if (www_auth &&
      lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_WWW_AUTHENTICATE,
                                   (const unsigned char *)www_auth, (int)strlen(www_auth), &p, end))
    return -1;
  if (retry_after > 0) {
    char ra[16];
    int ralen = snprintf(ra, sizeof ra, "%d", retry_after);
    if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_RETRY_AFTER, (unsigned char *)ra, ralen,
                                     &p, end))
      return -1;
  }
  if (lws_finalize_http_header(wsi, &p, end))
    return -1;
  if ((size_t)(end - p) < blen)
    return -1;
  memcpy(p, body, blen);
  p += blen;
  int len = (int)(p - start);
  if (lws_write(wsi, start, (size_t)len, LWS_WRITE_HTTP) != len)
    return -1;
  return 1; /* we answered: lws closes the connection */
}

/* Refuses an upgrade with a JSON body {"error": code, "message": text}. */
static int refuse(gw_server *s, struct lws *wsi, int result, unsigned status, const char *code,
                  const char *message, const char *www_auth, int retry_after) {
  wsg_counter_add(s->m_upgrades[result], 1);
  char peer[64];
  peer_of(wsi, peer, sizeof peer);
  wsg_log_limited(&s->rl_refuse, LOG_LIMIT_PER_S, wsg_now_mono_ms(), WSG_LOG_INFO, "server",
                  "upgrade from %s refused with %u %s: %s", peer, status, code, message);
  char esc[512], body[700];
  json_escape(esc, sizeof esc, message);
  snprintf(body, sizeof body, "{\"error\":\"%s\",\"message\":\"%s\"}", code, esc);
  return http_reply(wsi, status, body, www_auth, retry_after);
}

/* Which of our subprotocols libwebsockets will pick from the client's comma-separated list: the
 * first one it names (1: plain, 2: resumable, when `seq` is not empty), else 0. Case-sensitive,
 * as subprotocols are. */
static int pick_subprotocol(const char *list, const char *plain, const char *seq) {
  size_t pl = strlen(plain), sl = strlen(seq);
  const char *p = list;
  while (*p) {
    while (*p == ' ' || *p == '\t' || *p == ',')
      p++;
    const char *start = p;
    while (*p && *p != ',' && *p != ' ' && *p != '\t')
      p++;
    size_t n = (size_t)(p - start);
    if (n == pl && memcmp(start, plain, pl) == 0)
      return 1;
    if (sl > 0 && n == sl && memcmp(start, seq, sl) == 0)
      return 2;
  }
  return 0;
}

/* A resume position: decimal digits only, 1 .. 2^53-1 (every q is below 2^53: a sequence starts
 * at a time in microseconds, about 1.8e15, and JSON clients hold it exactly). */
static bool parse_resume(const char *v, uint64_t *out) {
  size_t n = strlen(v);
  if (n == 0 || n > 20)
    return false;
  uint64_t x = 0;
  for (size_t i = 0; i < n; i++) {
    if (v[i] < '0' || v[i] > '9')
      return false;
    unsigned d = (unsigned)(v[i] - '0');
    if (x > (UINT64_MAX - d) / 10)
      return false;
    x = x * 10 + d;
  }
  *out = x;
  return x > 0 && x < ((uint64_t)1 << 53);
}

static bool origin_allowed(const gw_config *cfg, char *origin) {
  size_t n = strlen(origin);
  while (n > 0 && origin[n - 1] == '/')
    origin[--n] = '\0';
  for (char *c = origin; *c; c++)
    *c = (char)((*c >= 'A' && *c <= 'Z') ? *c - 'A' + 'a' : *c);
  for (size_t i = 0; i < cfg->norigins; i++) {
    if (strcmp(cfg->origins[i], origin) == 0)
      return true;
  }
  return false;
}

/*
 * The bearer token from "Authorization: Bearer <token>", else from "?token=<token>". Returns
 * its length, 0 when the request carries none, -1 (and sets *problem) when it is unusable.
 */
static int request_token(struct lws *wsi, char *buf, size_t cap, const char **problem) {
  int alen = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
  if (alen > 0) {
    if ((size_t)alen >= cap) {
      *problem = "the Authorization header is longer than the 8192-byte token limit";
      return -1;
    }
    if (lws_hdr_copy(wsi, buf, (int)cap, WSI_TOKEN_HTTP_AUTHORIZATION) < 0) {
      *problem = "the Authorization header cannot be read";
      return -1;
    }
    if (strncasecmp(buf, "Bearer ", 7) != 0) {
      *problem = "the Authorization header is not \"Bearer <token>\"";
      return -1;
    }
    char *t = buf + 7;
    while (*t == ' ')
      t++;
    size_t tl = strlen(t);
    while (tl > 0 && t[tl - 1] == ' ')
      tl--;
    memmove(buf, t, tl);
    buf[tl] = '\0';
    if (tl == 0) {
      *problem = "the Authorization header carries an empty token";
      return -1;
    }
    return (int)tl;
  }
  const char *v = lws_get_urlarg_by_name(wsi, "token=", buf, (int)cap);
  if (!v)
    return 0;
  size_t tl = strlen(v);
  memmove(buf, v, tl + 1);
  return (int)tl;
}

static int on_confirm_upgrade(gw_server *s, struct lws *wsi) {
  /*
   * CVE-2025-11677 guard. In 4.1.6, when a keep-alive connection that already served a plain HTTP
   * request sends an Upgrade other than websocket/h2c, lws frees the header table (answering
   * 403 itself) and still calls this callback with `in` pointing into the freed memory; if we
   * return 0, lws then reads that memory again itself. So: never look at `in`; read the Upgrade
   * header through lws_hdr_copy (safe when the table is gone: it returns <= 0), and return -1
   * unless it is exactly "websocket", which also skips lws' own read. This also refuses "h2c"
   * upgrades: WebSocket over HTTP/2 (RFC 8441) would skip this callback, and so every check
   * below. The other callbacks we use (FILTER_PROTOCOL_CONNECTION, ESTABLISHED) are not on the
   * buggy path, and ESTABLISHED refuses any connection that did not pass through here.
   */
  char up[16];
  if (lws_hdr_copy(wsi, up, sizeof up, WSI_TOKEN_UPGRADE) <= 0 || strcasecmp(up, "websocket") != 0)
    return -1;

  const gw_config *cfg = s->cfg;
  if (s->draining)
    return refuse(s, wsi, UPG_DRAINING, 503, "draining",
                  "this gateway is shutting down; connect again", NULL, 1);
  char why[160];
  if (s->o.admit && !s->o.admit(s->o.admit_arg, why, sizeof why))
    return refuse(s, wsi, UPG_NOT_READY, 503, "not_ready", why, NULL, 2);
  if (s->conns.count + s->pending.count >= s->max_conns)
    return refuse(s, wsi, UPG_FULL, 503, "connection_limit",
                  "this gateway holds as many connections as it may", NULL, 5);
  if (!gw_rate_unlimited(&s->rate_upgrades) &&
      !gw_rate_allow(&s->rate_upgrades, &s->upgrades_tat, now_ns(), 1))
    return refuse(s, wsi, UPG_RATE, 503, "upgrade_rate", "too many connection attempts right now",
                  NULL, 1);

  int plen = lws_hdr_total_length(wsi, WSI_TOKEN_PROTOCOL);
  int picked = 0;
  if (plen > 0) {
    char pbuf[SUBPROTOCOL_HDR_MAX];
    if (plen < (int)sizeof pbuf && lws_hdr_copy(wsi, pbuf, sizeof pbuf, WSI_TOKEN_PROTOCOL) >= 0)
      picked = pick_subprotocol(pbuf, cfg->subprotocol, s->seq_protocol);
    if (picked == 0) {
      char msg[300];
      if (s->seq_protocol[0])
        snprintf(msg, sizeof msg,
                 "Sec-WebSocket-Protocol offers neither %s nor %s, the subprotocols this gateway "
                 "speaks",
                 cfg->subprotocol, s->seq_protocol);
      else
        snprintf(msg, sizeof msg,
                 "Sec-WebSocket-Protocol does not offer %s, the only subprotocol this gateway "
                 "speaks (resumable delivery is off: --resume-max 0)",
                 cfg->subprotocol);
      return refuse(s, wsi, UPG_BAD_REQUEST, 400, "unsupported_subprotocol", msg, NULL, 0);
    }
  }
  /* ?resume=<q>: the client's position in its user's sequence (the last q it received). */
  uint64_t resume = 0;
  char rbuf[64];
  const char *rv = lws_get_urlarg_by_name(wsi, "resume=", rbuf, (int)sizeof rbuf);
  if (rv) {
    if (!parse_resume(rv, &resume))
      return refuse(s, wsi, UPG_BAD_REQUEST, 400, "invalid_resume",
                    "?resume= must be the q of the last message received: a positive integer", NULL,
                    0);
    if (picked != 2) {
      char msg[200];
      snprintf(msg, sizeof msg, "?resume= needs the subprotocol %s",
               s->seq_protocol[0] ? s->seq_protocol : "+seq (off on this gateway: --resume-max 0)");
      return refuse(s, wsi, UPG_BAD_REQUEST, 400, "invalid_resume", msg, NULL, 0);
    }
  }

  /* Browsers always send Origin, so the check stops cross-site pages; a client without it is not
   * a browser and is judged by its token alone. */
  if (cfg->norigins > 0) {
    int olen = lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN);
    if (olen > 0) {
      char obuf[ORIGIN_HDR_MAX];
      if (olen >= (int)sizeof obuf || lws_hdr_copy(wsi, obuf, sizeof obuf, WSI_TOKEN_ORIGIN) < 0 ||
          !origin_allowed(cfg, obuf))
        return refuse(s, wsi, UPG_FORBIDDEN, 403, "forbidden_origin",
                      "this Origin is not in the gateway's --allowed-origins", NULL, 0);
    }
  }

  static const char bearer[] = "Bearer realm=\"wsgate\"";
  static const char bearer_invalid[] = "Bearer realm=\"wsgate\", error=\"invalid_token\"";
  char tok[GW_JWT_MAX_TOKEN + 2];
  const char *problem = NULL;
  int tl = request_token(wsi, tok, sizeof tok, &problem);
  if (tl < 0)
    return refuse(s, wsi, UPG_UNAUTHORIZED, 401, "invalid_token", problem, bearer_invalid, 0);

  char user[WSG_MAX_USER_LEN + 1];
  size_t ulen = 0;
  if (tl == 0) {
    if (!cfg->insecure_dev_user)
      return refuse(s, wsi, UPG_UNAUTHORIZED, 401, "missing_token",
                    "send \"Authorization: Bearer <token>\" or ?token=<token>", bearer, 0);
    const char *u = lws_get_urlarg_by_name(wsi, "user=", tok, (int)sizeof tok);
    if (!u || !*u || strlen(u) > WSG_MAX_USER_LEN || !wsg_utf8_valid(u, strlen(u)))
      return refuse(s, wsi, UPG_UNAUTHORIZED, 401, "missing_token",
                    "no token, and no valid ?user=<id> for --insecure-dev-user", bearer, 0);
    ulen = strlen(u);
    memcpy(user, u, ulen + 1);
    char peer[64];
    peer_of(wsi, peer, sizeof peer);
    wsg_log_limited(&s->rl_dev, 1, wsg_now_mono_ms(), WSG_LOG_WARN, "server",
                    "INSECURE: %s connected as user \"%s\" without a token (--insecure-dev-user)",
                    peer, user);
  } else {
    int rc = gw_jwt_verify(&s->jwt, tok, (size_t)tl, (int64_t)time(NULL), user, sizeof user, &ulen);
    explicit_bzero(tok, (size_t)tl);
    if (rc != GW_JWT_OK)
      return refuse(s, wsi, UPG_UNAUTHORIZED, 401, "invalid_token", gw_jwt_strerror(rc),
                    bearer_invalid, 0);
  }

  gw_pending *p = malloc(sizeof *p + ulen + 1);
  if (!p)
    return -1;
  p->resume = resume;
  p->len = (uint32_t)ulen;
  memcpy(p->user, user, ulen + 1);
  free(gw_conn_map_del(&s->pending, (uint64_t)(uintptr_t)wsi));
  if (gw_conn_map_put(&s->pending, (uint64_t)(uintptr_t)wsi, p) != 0) {
    free(p);
    return -1;
  }
  return 0;
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
  if (status != GW_REG_OK) {
    wsg_counter_add(s->m_reg_failed, 1);
    wsg_log_limited(&s->rl_misc, LOG_LIMIT_PER_S, wsg_now_mono_ms(), WSG_LOG_WARN, "server",
                    "connection %llu of user %s could not be registered in Redis: %s",
                    (unsigned long long)conn_id, ss->user->id, gw_registry_strerror(status));
    bool transient = status == GW_REG_NOT_CONNECTED || status == GW_REG_BUSY ||
                     status == GW_REG_RELEASED || status == GW_REG_LOST;
    close_async(s, ss, transient ? GW_CLOSE_TRY_AGAIN : GW_CLOSE_INTERNAL, NULL, false);
    return;
  }
  ss->flags |= F_REGISTERED;
  int r = flush_held(s, ss);
  if (r > 0)
    stalled_push(s, ss);
  else if (r == 0)
    release_holds(ss);
  /* A resumable connection catches up from its position now that deliveries find it. */
  if (ss->sq && !(ss->flags & F_CLOSING) && ss->sq->state == SEQ_REGISTERING)
    seq_read(s, ss);
}

static int on_established(gw_server *s, struct lws *wsi, gw_session *ss) {
  gw_pending *p = gw_conn_map_del(&s->pending, (uint64_t)(uintptr_t)wsi);
  if (!p) {
    /* Did not pass CONFIRM_UPGRADE (e.g. WebSocket over HTTP/2): never serve it. */
    WSG_WARN("server", "refusing a WebSocket that skipped the upgrade checks");
    return close_now(s, wsi, NULL, GW_CLOSE_POLICY, "unauthenticated");
  }
  if (s->draining) {
    free(p);
    return close_now(s, wsi, NULL, GW_CLOSE_GOING_AWAY, NULL);
  }
  ss->wsi = wsi;
  if ((ss->flags & F_DEFLATE) && lws_set_extension_option(wsi, "permessage-deflate", "tx_buf_size",
                                                          DEFLATE_TX_BUF_PWR2_STR) != 0) {
    free(p);
    WSG_WARN("server", "cannot size the permessage-deflate output buffer; closing with 1011");
    return close_now(s, wsi, NULL, GW_CLOSE_INTERNAL, NULL);
  }
  ss->conn_id = next_conn_id(s);
  gw_user *u = gw_user_map_intern(&s->users, p->user, p->len);
  uint64_t resume = p->resume;
  free(p);
  if (!u)
    return close_now(s, wsi, NULL, GW_CLOSE_INTERNAL, NULL);
  user_link(ss, u);
  if (gw_conn_map_put(&s->conns, ss->conn_id, ss) != 0) {
    user_unlink(s, ss);
    ss->user = NULL;
    return close_now(s, wsi, NULL, GW_CLOSE_INTERNAL, NULL);
  }
  wsg_counter_add(s->m_upgrades[UPG_OK], 1);
  wsg_gauge_set(s->m_conns, (int64_t)s->conns.count);
  ss->alive_s = ka_now(s);
  if (gw_keepalive_schedule(s->ka, ss->conn_id, ss->alive_s + s->ping_s) != 0)
    return close_now(s, wsi, ss, GW_CLOSE_TRY_AGAIN, NULL);
  /* Hold reading until Redis confirms: a reply must find the connection registered. */
  set_hold(ss, HOLD_REGISTER, true);
  const struct lws_protocols *proto = lws_get_protocol(wsi);
  if (proto && proto->name && strcmp(proto->name, s->seq_protocol) == 0 &&
      seq_start(s, ss, resume) != 0)
    return close_now(s, wsi, ss, GW_CLOSE_TRY_AGAIN, NULL);
  int rc = gw_registry_conn_add(s->o.registry, u->id, u->len, ss->conn_id, on_registered, s);
  if (rc != GW_REG_OK) {
    wsg_counter_add(s->m_reg_failed, 1);
    wsg_log_limited(&s->rl_misc, LOG_LIMIT_PER_S, wsg_now_mono_ms(), WSG_LOG_WARN, "server",
                    "cannot register connection %llu of user %s: %s; closing with 1013",
                    (unsigned long long)ss->conn_id, u->id, gw_registry_strerror(rc));
    return close_now(s, wsi, ss, GW_CLOSE_TRY_AGAIN, NULL);
  }
  ss->flags |= F_REGISTERING | F_ADD_ISSUED;
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
  produce_final(s, ss);
  if (ss->flags & F_ADD_ISSUED)
    gw_registry_conn_remove(s->o.registry, ss->user->id, ss->user->len, ss->conn_id);
  if (gw_conn_map_get(&s->conns, ss->conn_id) == ss)
    gw_conn_map_del(&s->conns, ss->conn_id);
  user_unlink(s, ss);
  ss->user = NULL;
  sendq_clear(s, ss);
  seq_free(s, ss);
  rx_free(s, ss);
  free(ss->close_reason);
  ss->close_reason = NULL;
  wsg_gauge_set(s->m_conns, (int64_t)s->conns.count);
}

/* ------------------------------------------------------------------------------------------ */
/* outbound                                                                                    */

/* Queues m with `tag` for ss, within its send queue's limits; over a limit the connection is
 * closed (4001). Returns false when it was closed. */
static bool queue_msg(gw_server *s, gw_session *ss, gw_msg *m, uint64_t tag, uint64_t now_ms) {
  uint64_t before = gw_sendq_bytes(&ss->q);
  int rc = gw_sendq_push_tagged(&ss->q, m, tag, &s->sendq_limits, now_ms);
  if (rc == GW_SENDQ_OK) {
    s->sendq_bytes += gw_sendq_bytes(&ss->q) - before;
    wsg_gauge_set(s->m_sendq_bytes, (int64_t)s->sendq_bytes);
    lws_callback_on_writable(ss->wsi);
    return true;
  }
  if (rc == GW_SENDQ_NOMEM) {
    close_async(s, ss, GW_CLOSE_INTERNAL, NULL, true);
    return false;
  }
  wsg_log_limited(&s->rl_misc, LOG_LIMIT_PER_S, now_ms, WSG_LOG_INFO, "server",
                  "closing connection %llu of user %s with 4001: %s (%llu bytes queued)",
                  (unsigned long long)ss->conn_id, ss->user->id, gw_sendq_strerror(rc),
                  (unsigned long long)gw_sendq_bytes(&ss->q));
  close_async(s, ss, GW_CLOSE_SLOW_CONSUMER, NULL, true);
  return false;
}

/* ------------------------------------------------------------------------------------------ */
/* resumable delivery (see gw_seq)                                                             */

static void on_replay(void *arg, uint64_t conn_id, int status, const gw_replay_page *page);

static bool reg_transient(int status) {
  return status == GW_REG_NOT_CONNECTED || status == GW_REG_BUSY || status == GW_REG_RELEASED ||
         status == GW_REG_LOST;
}

/* A control frame, "wsgate\n" + json (text), queued like a message. False if closed. */
static bool seq_control(gw_server *s, gw_session *ss, const char *json, uint64_t now_ms) {
  gw_msg *m = gw_msg_create(json, strlen(json), false);
  if (!m) {
    close_async(s, ss, GW_CLOSE_INTERNAL, NULL, true);
    return false;
  }
  bool ok = queue_msg(s, ss, m, SEQ_CONTROL, now_ms);
  gw_msg_unref(m);
  return ok;
}

/* Messages from..to can no longer be delivered: older than --resume-max-age or trimmed from the
 * stream, beyond --resume-max, or their counter expired. Before the sync this only makes the
 * catch-up incomplete; afterwards the client is told at once. False if the connection closed. */
static bool seq_lost(gw_server *s, gw_session *ss, uint64_t from, uint64_t to, uint64_t now_ms) {
  gw_seq *sq = ss->sq;
  if (!sq->synced) {
    sq->complete = false;
    return true;
  }
  wsg_counter_add(s->m_seq_gaps, 1);
  char json[128];
  snprintf(json, sizeof json, "{\"type\":\"gap\",\"from\":%llu,\"to\":%llu}",
           (unsigned long long)from, (unsigned long long)to);
  return seq_control(s, ss, json, now_ms);
}

/* Queues message q, whose turn has come (q > last; anything between is lost). False if closed. */
static bool seq_put(gw_server *s, gw_session *ss, gw_msg *m, uint64_t q, uint64_t now_ms) {
  gw_seq *sq = ss->sq;
  if (q != sq->last + 1 && !seq_lost(s, ss, sq->last + 1, q - 1, now_ms))
    return false;
  sq->last = q;
  if (sq->hi < q)
    sq->hi = q;
  if (gw_msg_len(m) + GW_SENDQ_MSG_OVERHEAD > s->cfg->sendq_hard) {
    /* As for any deliver (dispatch): it would close the connection as a slow consumer. */
    wsg_counter_add(s->m_out_too_big, 1);
    return true;
  }
  return queue_msg(s, ss, m, q, now_ms);
}

/* Reads the page of the replay stream after `last`. False if the connection was closed. */
static bool seq_read(gw_server *s, gw_session *ss) {
  int rc = gw_registry_replay_read(s->o.registry, ss->user->id, ss->user->len, ss->conn_id, false,
                                   ss->sq->last, &s->replay_limits, on_replay, s);
  if (rc != GW_REG_OK) {
    wsg_log_limited(&s->rl_misc, LOG_LIMIT_PER_S, wsg_now_mono_ms(), WSG_LOG_WARN, "server",
                    "cannot read the replay stream of user %s for connection %llu: %s; closing",
                    ss->user->id, (unsigned long long)ss->conn_id, gw_registry_strerror(rc));
    close_async(s, ss, reg_transient(rc) ? GW_CLOSE_TRY_AGAIN : GW_CLOSE_INTERNAL, NULL, false);
    return false;
  }
  ss->sq->state = SEQ_READING;
  wsg_counter_add(s->m_replay_reads, 1);
  return true;
}

/* The next page, once the send queue has room for it (on_writeable comes back otherwise): a
 * large backlog never holds more than a page or two in memory. */
static void seq_next_page(gw_server *s, gw_session *ss) {
  if (gw_sendq_bytes(&ss->q) <= s->replay_room)
    seq_read(s, ss);
  else
    ss->sq->state = SEQ_ROOM;
}

/* The connection is in step: tell the client its position and whether the catch-up was complete,
 * then read its requests. False if the connection closed. */
static bool seq_sync(gw_server *s, gw_session *ss, uint64_t now_ms) {
  gw_seq *sq = ss->sq;
  char json[256], resume[24] = "null";
  if (sq->resume)
    snprintf(resume, sizeof resume, "%llu", (unsigned long long)sq->resume);
  snprintf(json, sizeof json,
           "{\"type\":\"sync\",\"resume\":%s,\"last\":%llu,\"replayed\":%llu,\"complete\":%s}",
           resume, (unsigned long long)sq->last, (unsigned long long)sq->replayed,
           sq->complete ? "true" : "false");
  sq->synced = true;
  if (sq->resume)
    wsg_counter_add(sq->complete ? s->m_resumes_complete : s->m_resumes_incomplete, 1);
  if (!seq_control(s, ss, json, now_ms))
    return false;
  set_hold(ss, HOLD_RESUME, false);
  return true;
}

/* A read reached the end of the stream: queue what waited meanwhile, in order, until the next
 * gap (read again) or the end (in step). */
static void seq_after_read(gw_server *s, gw_session *ss, uint64_t now_ms) {
  gw_seq *sq = ss->sq;
  while (!gw_sendq_empty(&sq->held)) {
    gw_msg *m = gw_sendq_peek(&sq->held);
    uint64_t q = gw_sendq_peek_tag(&sq->held);
    if (q > sq->last + 1)
      break; /* missing ones come first: read them */
    bool ok = true;
    if (q == 0)
      ok = queue_msg(s, ss, m, 0, now_ms);
    else if (q == sq->last + 1)
      ok = seq_put(s, ss, m, q, now_ms);
    else
      wsg_counter_add(s->m_seq_dups, 1);
    gw_sendq_pop(&sq->held);
    if (!ok)
      return; /* closed; session_release frees the rest */
  }
  if (!gw_sendq_empty(&sq->held) || sq->hi > sq->last)
    seq_next_page(s, ss);
  else
    sq->state = SEQ_LIVE;
}

static void on_replay(void *arg, uint64_t conn_id, int status, const gw_replay_page *page) {
  gw_server *s = arg;
  gw_session *ss = gw_conn_map_get(&s->conns, conn_id);
  if (!ss || !ss->sq || (ss->flags & (F_CLOSING | F_RELEASED)))
    return;
  gw_seq *sq = ss->sq;
  if (status != GW_REG_OK) {
    wsg_log_limited(&s->rl_misc, LOG_LIMIT_PER_S, wsg_now_mono_ms(), WSG_LOG_WARN, "server",
                    "reading the replay stream of user %s for connection %llu failed: %s; "
                    "closing (the client resumes on its next connection)",
                    ss->user->id, (unsigned long long)conn_id, gw_registry_strerror(status));
    close_async(s, ss, reg_transient(status) ? GW_CLOSE_TRY_AGAIN : GW_CLOSE_INTERNAL, NULL, false);
    return;
  }
  uint64_t now_ms = wsg_now_mono_ms();
  if (sq->state == SEQ_POSITION) {
    /* A fresh connection starts at the counter; on_registered reads what follows it. */
    sq->last = page->counter;
    sq->state = SEQ_REGISTERING;
    return;
  }
  for (size_t i = 0; i < page->count; i++) {
    gw_replay_entry e;
    gw_replay_page_entry(page, i, &e);
    /* A text entry that is not UTF-8 would make the client fail the connection: skipped, it
     * shows as lost like anything else missing from the stream. */
    if (e.q <= sq->last || (!e.binary && !wsg_utf8_valid((const char *)e.data, e.len)))
      continue;
    gw_msg *m = gw_msg_create(e.data, e.len, e.binary);
    if (!m) {
      close_async(s, ss, GW_CLOSE_INTERNAL, NULL, true);
      return;
    }
    if (!sq->synced)
      sq->replayed++;
    wsg_counter_add(s->m_replayed, 1);
    bool ok = seq_put(s, ss, m, e.q, now_ms);
    gw_msg_unref(m);
    if (!ok)
      return;
  }
  if (page->more) {
    seq_next_page(s, ss);
    return;
  }
  /* The stream ends here: whatever the counter assigned beyond its last entry is gone. */
  if (page->counter > sq->last) {
    if (!seq_lost(s, ss, sq->last + 1, page->counter, now_ms))
      return;
    sq->last = page->counter;
  } else if (page->counter < sq->last) {
    /* A position this sequence never reached (a client's own number, or Redis lost the
     * counter and the stream): what the client had cannot be checked; it starts over here. */
    sq->complete = false;
    sq->last = page->counter;
  }
  if (!sq->synced && !seq_sync(s, ss, now_ms))
    return;
  seq_after_read(s, ss, now_ms);
}

/* A deliver from Kafka for a resumable connection. */
static void seq_deliver(gw_server *s, gw_session *ss, gw_msg *m, uint64_t q, uint64_t now_ms) {
  gw_seq *sq = ss->sq;
  if (q != 0 && sq->state != SEQ_POSITION && q <= sq->last) {
    wsg_counter_add(s->m_seq_dups, 1); /* already queued, from the stream or an earlier copy */
    return;
  }
  if (sq->state == SEQ_LIVE) {
    if (q == 0) {
      queue_msg(s, ss, m, 0, now_ms); /* a reply to this connection: not sequenced */
      return;
    }
    if (q == sq->last + 1) {
      seq_put(s, ss, m, q, now_ms);
      return;
    }
  }
  /* Not its turn: it waits while the missing ones are read from the stream. */
  if (q > sq->hi)
    sq->hi = q;
  int rc = gw_sendq_push_tagged(&sq->held, m, q, &s->held_limits, now_ms);
  if (rc != GW_SENDQ_OK && (q == 0 || rc == GW_SENDQ_NOMEM)) {
    /* A sequenced message that does not fit is read from the stream later (`hi` remembers it);
     * an unsequenced one cannot be: the connection is too far behind to keep it. */
    wsg_log_limited(&s->rl_misc, LOG_LIMIT_PER_S, now_ms, WSG_LOG_INFO, "server",
                    "closing resumable connection %llu of user %s with 4001: more than "
                    "--sendq-hard waits while it catches up",
                    (unsigned long long)ss->conn_id, ss->user->id);
    close_async(s, ss, rc == GW_SENDQ_NOMEM ? GW_CLOSE_INTERNAL : GW_CLOSE_SLOW_CONSUMER, NULL,
                true);
    return;
  }
  if (sq->state == SEQ_LIVE)
    seq_read(s, ss);
}

/* Starts a resumable connection, before its registration: a fresh one reads its position first
 * (the read runs before the registration, see gw_seq). Returns -1 if it must be refused. */
static int seq_start(gw_server *s, gw_session *ss, uint64_t resume) {
  gw_seq *sq = calloc(1, sizeof *sq);
  if (!sq)
    return -1;
  ss->sq = sq;
  sq->complete = true;
  wsg_gauge_add(s->m_seq_conns, 1);
  set_hold(ss, HOLD_RESUME, true);
  if (resume) {
    sq->resume = resume;
    sq->last = resume;
    sq->state = SEQ_REGISTERING;
    return 0;
  }
  sq->state = SEQ_POSITION;
  int rc = gw_registry_replay_read(s->o.registry, ss->user->id, ss->user->len, ss->conn_id, true, 0,
                                   &s->replay_limits, on_replay, s);
  if (rc != GW_REG_OK) {
    wsg_log_limited(&s->rl_misc, LOG_LIMIT_PER_S, wsg_now_mono_ms(), WSG_LOG_WARN, "server",
                    "cannot read the sequence position of user %s: %s", ss->user->id,
                    gw_registry_strerror(rc));
    return -1;
  }
  wsg_counter_add(s->m_replay_reads, 1);
  return 0;
}

static void seq_free(gw_server *s, gw_session *ss) {
  if (!ss->sq)
    return;
  gw_sendq_clear(&ss->sq->held);
  free(ss->sq);
  ss->sq = NULL;
  wsg_gauge_add(s->m_seq_conns, -1);
}

static void deliver_to(gw_server *s, gw_session *ss, gw_msg *m, uint64_t q, uint64_t now_ms) {
  if (ss->flags & (F_CLOSING | F_RELEASED))
    return;
  if (ss->sq)
    seq_deliver(s, ss, m, q, now_ms);
  else
    queue_msg(s, ss, m, 0, now_ms);
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
    close_async(s, ss, code, reason ? reason : "", false);
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
    uint64_t now_us = wsg_now_wall_us();
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

static void drain_outbound(gw_server *s) {
  gw_outbound items[OUTBOUND_BATCH];
  size_t total = 0, n;
  uint64_t now_ms = wsg_now_mono_ms();
  while (total < OUTBOUND_PER_WAKE &&
         (n = gw_kafka_outbound_pop(s->o.kafka, items, OUTBOUND_BATCH)) > 0) {
    for (size_t i = 0; i < n; i++) {
      dispatch(s, &items[i], now_ms);
      gw_outbound_finish(&items[i]);
    }
    total += n;
  }
  /* More may be waiting: let other events run first, then come back. */
  if (total >= OUTBOUND_PER_WAKE)
    lws_cancel_service(s->ctx);
}

/* A resumable connection's frame header: "<q>\n" for a sequenced message, "\n" for one that is
 * not (a reply to this connection), "wsgate\n" for a control frame. Returns its length. */
#define SEQ_HEADER_MAX 24
static size_t seq_header(uint64_t tag, char hdr[SEQ_HEADER_MAX]) {
  if (tag == SEQ_CONTROL) {
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

static int on_writeable(gw_server *s, struct lws *wsi, gw_session *ss) {
  /* lws is closing (its close frame sent or on its way, waiting for the client's answer): a -1
   * here would drop the socket without waiting, so the client's answer would meet a reset. */
  if (ss->flags & F_LWS_CLOSING)
    return 0;
  if (ss->flags & F_CLOSE_SENT)
    return -1; /* the close frame's reason is already set (close_now) */
  if (!ss->user || (ss->flags & F_RELEASED))
    return 0;
  if ((ss->flags & F_CLOSING) &&
      ((ss->flags & F_CLOSE_URGENT) || (gw_sendq_empty(&ss->q) && ss->sent_off == 0))) {
    return close_now(s, wsi, ss, ss->close_code,
                     ss->close_reason ? ss->close_reason : gw_close_reason(ss->close_code));
  }
  /* A ping goes between messages (one write per WRITEABLE, as lws requires). Not empty:
   * libwebsockets 4.1.6 does not pass a pong with an empty payload to RECEIVE_PONG (ops-ws.c),
   * and the client's pong echoes the ping's payload. */
  if ((ss->flags & F_PING_DUE) && ss->sent_off == 0) {
    ss->flags &= (uint16_t)~F_PING_DUE;
    static const char payload[] = "wsgate";
    unsigned char ping[LWS_PRE + sizeof payload];
    memcpy(ping + LWS_PRE, payload, sizeof payload - 1);
    if (lws_write(wsi, ping + LWS_PRE, sizeof payload - 1, LWS_WRITE_PING) < 0) {
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
  size_t len = gw_msg_len(m);
  int type = gw_msg_binary(m) ? LWS_WRITE_BINARY : LWS_WRITE_TEXT;
  char hdr[SEQ_HEADER_MAX];
  size_t hlen = ss->sq ? seq_header(gw_sendq_peek_tag(&ss->q), hdr) : 0;
  size_t total = hlen + len;
  size_t frag = (ss->flags & F_DEFLATE) ? DEFLATE_FRAG_SIZE : FRAG_SIZE;
  size_t chunk;
  int n;
  if (hlen == 0 && len <= frag) {
    chunk = len;
    n = lws_write(wsi, gw_msg_payload(m), len, (enum lws_write_protocol)type);
  } else {
    /* The headroom in front of a fragment would be the previous fragment's bytes, shared by
     * every recipient of this message, and a resumable connection's header is its own: write
     * through scratch. */
    size_t off = ss->sent_off;
    chunk = total - off < frag ? total - off : frag;
    copy_framed(s->scratch + LWS_PRE, hdr, hlen, gw_msg_payload(m), off, chunk);
    int flags = lws_write_ws_flags(type, off == 0, off + chunk == total);
    n = lws_write(wsi, s->scratch + LWS_PRE, chunk, (enum lws_write_protocol)flags);
  }
  if (n < (int)chunk) {
    ss->disconnect_code = 1006;
    return -1; /* lws could not write: the connection is gone */
  }
  ss->sent_off += (uint32_t)chunk;
  if (ss->sent_off >= total) {
    ss->sent_off = 0;
    wsg_counter_add(s->m_msgs_out, 1);
    wsg_counter_add(s->m_bytes_out, len);
    uint64_t before = gw_sendq_bytes(&ss->q);
    gw_sendq_pop(&ss->q);
    s->sendq_bytes -= before - gw_sendq_bytes(&ss->q);
    wsg_gauge_set(s->m_sendq_bytes, (int64_t)s->sendq_bytes);
    if (ss->sq && ss->sq->state == SEQ_ROOM && gw_sendq_bytes(&ss->q) <= s->replay_room &&
        !(ss->flags & F_CLOSING))
      seq_read(s, ss);
  }
  if (!gw_sendq_empty(&ss->q) || (ss->flags & (F_CLOSING | F_PING_DUE)))
    lws_callback_on_writable(wsi);
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* the protocol callback                                                                       */

static int on_plain_http(struct lws *wsi) {
  /* Not a WebSocket request: the operations endpoints live on --http-port. Answer and close, so
   * the connection is never reused (keep-alive is the CVE-2025-11677 precondition). */
  static const char body[] = "{\"error\":\"upgrade_required\",\"message\":\"this port serves "
                             "WebSocket only; /healthz, /readyz and /metrics are on the "
                             "operations port\"}";
  unsigned char buf[LWS_PRE + 1024];
  unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
  if (lws_add_http_common_headers(wsi, 426, "application/json", sizeof body - 1, &p, end) ||
      lws_add_http_header_by_token(wsi, WSI_TOKEN_UPGRADE, (const unsigned char *)"websocket", 9,
                                   &p, end) ||
      lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION, (const unsigned char *)"close", 5, &p,
                                   end) ||
      lws_finalize_http_header(wsi, &p, end))
    return -1;
  memcpy(p, body, sizeof body - 1);
  p += sizeof body - 1;
  lws_write(wsi, start, (size_t)(p - start), LWS_WRITE_HTTP_FINAL);
  return -1;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len) {
  gw_session *ss = user;
  switch (reason) {
  case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
    return on_confirm_upgrade(server_of(wsi), wsi);
  case LWS_CALLBACK_HTTP:
    return on_plain_http(wsi);
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
  case LWS_CALLBACK_ESTABLISHED:
    return on_established(server_of(wsi), wsi, ss);
  case LWS_CALLBACK_RECEIVE:
    return on_receive(server_of(wsi), wsi, ss, in, len);
  case LWS_CALLBACK_SERVER_WRITEABLE:
    return on_writeable(server_of(wsi), wsi, ss);
  case LWS_CALLBACK_RECEIVE_PONG:
    if (ss && ss->user) {
      ss->alive_s = ka_now(server_of(wsi));
      ss->flags &= (uint16_t)~F_PINGED;
    }
    return 0;
  case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
    if (ss && !(ss->flags & F_CLOSING)) {
      const uint8_t *b = in;
      unsigned code = len >= 2 ? (unsigned)((b[0] << 8) | b[1]) : 1005;
      /* lws 4.1.6 accepts codes no peer may send (>= 5000, 1004, ...): the peer broke the
       * protocol, and the disconnect envelope must still be valid to be produced at all. */
      ss->disconnect_code = wsg_close_code_valid(WSG_ENV_DISCONNECT, code) ? (uint16_t)code : 1002;
      wsg_counter_add(server_of(wsi)->m_peer_closes, 1);
    }
    return 0;
  case LWS_CALLBACK_WS_SERVER_DROP_PROTOCOL:
    /* lws calls this as it begins a close (core-net/close.c), before sending its close frame. */
    if (ss)
      ss->flags |= F_LWS_CLOSING;
    return 0;
  case LWS_CALLBACK_CLOSED:
    discard_unread(server_of(wsi), wsi);
    session_release(server_of(wsi), ss);
    return 0;
  case LWS_CALLBACK_WSI_DESTROY: {
    gw_server *s = server_of(wsi);
    free(gw_conn_map_del(&s->pending, (uint64_t)(uintptr_t)wsi));
    /* Normally CLOSED released it already; this also drops a deflate count taken by a
     * connection that never reached ESTABLISHED. */
    session_release(s, ss);
    return 0;
  }
  case LWS_CALLBACK_EVENT_WAIT_CANCELLED: {
    /* Delivered once for every protocol of every vhost (notes §7): drain only in our own
     * protocol's call (today the only one; an extra call would find the queue empty anyway).
     * Must return 0: nonzero closes lws' cancel pipe. */
    gw_server *s = server_of(wsi);
    const struct lws_protocols *p = lws_get_protocol(wsi);
    if (p && p->name && strcmp(p->name, s->protocols[0].name) == 0)
      drain_outbound(s);
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
  close_async(s, ss, GW_CLOSE_GOING_AWAY, reason, false);
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

void gw_server_set_slot(gw_server *s, int32_t slot) {
  if (slot >= 0)
    s->slot = slot;
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

int gw_server_port(const gw_server *s) {
  return s->port;
}

/* ------------------------------------------------------------------------------------------ */
/* lifecycle                                                                                   */

static void register_metrics(gw_server *s, wsg_metrics *m) {
  if (!m)
    return;
  for (int i = 0; i < UPG__COUNT; i++)
    s->m_upgrades[i] =
        wsg_metrics_counter(m, "wsgate_gateway_upgrades_total",
                            "WebSocket upgrade requests by outcome.", upgrade_labels[i]);
#define CLOSE_METRIC(name, code, when, reason)                                                     \
  s->m_closes[CLOSE_IDX_##name] =                                                                  \
      wsg_metrics_counter(m, "wsgate_gateway_closes_total",                                        \
                          "Connections the gateway closed, by close code.", "code=\"" #code "\"");
  GW_CLOSE_MAP(CLOSE_METRIC)
#undef CLOSE_METRIC
  s->m_peer_closes = wsg_metrics_counter(m, "wsgate_gateway_client_closes_total",
                                         "Connections the client closed with a close frame.", NULL);
  s->m_pings = wsg_metrics_counter(m, "wsgate_gateway_pings_total",
                                   "Keepalive pings sent (--ping-interval without a pong).", NULL);
  s->m_idle_closes = wsg_metrics_counter(
      m, "wsgate_gateway_idle_closes_total",
      "Connections dropped because no pong came for --idle-timeout (no close frame: 1006).", NULL);
  s->m_linger_discarded = wsg_metrics_counter(
      m, "wsgate_gateway_linger_discarded_bytes_total",
      "Client input still unread when its connection's socket was closed, read and discarded "
      "so the close is a FIN, not a reset.",
      NULL);
  s->m_conns =
      wsg_metrics_gauge(m, "wsgate_gateway_connections", "Open WebSocket connections.", NULL);
  s->m_sendq_bytes = wsg_metrics_gauge(m, "wsgate_gateway_sendq_bytes",
                                       "Bytes queued for clients in all send queues.", NULL);
  s->m_rx_bytes = wsg_metrics_gauge(
      m, "wsgate_gateway_rx_buffer_bytes",
      "Bytes held for partly received messages and messages waiting for Kafka.", NULL);
  s->m_stalled =
      wsg_metrics_gauge(m, "wsgate_gateway_stalled_connections",
                        "Connections whose reading waits for Kafka's queue to drain.", NULL);
  s->m_msgs_in = wsg_metrics_counter(m, "wsgate_gateway_messages_in_total",
                                     "Client messages produced to Kafka.", NULL);
  s->m_bytes_in = wsg_metrics_counter(m, "wsgate_gateway_message_bytes_in_total",
                                      "Payload bytes of client messages produced to Kafka.", NULL);
  s->m_msgs_out = wsg_metrics_counter(m, "wsgate_gateway_messages_out_total",
                                      "Messages written to clients.", NULL);
  s->m_bytes_out = wsg_metrics_counter(m, "wsgate_gateway_message_bytes_out_total",
                                       "Payload bytes of messages written to clients.", NULL);
  const char *od = "wsgate_gateway_outbound_dropped_total";
  const char *odh = "Outbound deliveries not sent, by reason.";
  s->m_out_nobody = wsg_metrics_counter(m, od, odh, "reason=\"no_such_connection\"");
  s->m_out_too_big = wsg_metrics_counter(m, od, odh, "reason=\"larger_than_sendq_hard\"");
  s->m_reg_failed =
      wsg_metrics_counter(m, "wsgate_gateway_registration_failures_total",
                          "Connections closed because Redis did not register them.", NULL);
  s->m_rate_limited =
      wsg_metrics_counter(m, "wsgate_gateway_rate_limited_total",
                          "Client messages over a rate limit (paused or closed).", NULL);
  s->m_kafka_stalls = wsg_metrics_counter(
      m, "wsgate_gateway_kafka_stalls_total",
      "Times a connection stopped reading because Kafka's queue was full.", NULL);
  s->m_events_lost = wsg_metrics_counter(
      m, "wsgate_gateway_events_lost_total",
      "Envelopes of closed connections Kafka could not take, or messages of connections closed "
      "before their registration (logged as errors).",
      NULL);
  const char *rs = "wsgate_gateway_resumes_total";
  const char *rsh = "Reconnections with ?resume=, by whether every missed message was replayed.";
  s->m_resumes_complete = wsg_metrics_counter(m, rs, rsh, "result=\"complete\"");
  s->m_resumes_incomplete = wsg_metrics_counter(m, rs, rsh, "result=\"incomplete\"");
  s->m_replay_reads = wsg_metrics_counter(
      m, "wsgate_gateway_replay_reads_total",
      "Reads of replay streams: positions, catch-ups after a reconnect, gaps filled.", NULL);
  s->m_replayed = wsg_metrics_counter(
      m, "wsgate_gateway_replayed_messages_total",
      "Messages delivered from a replay stream rather than straight from Kafka.", NULL);
  s->m_seq_gaps = wsg_metrics_counter(
      m, "wsgate_gateway_sequence_gaps_total",
      "Gap frames sent: messages a connected resumable client can no longer get.", NULL);
  s->m_seq_dups = wsg_metrics_counter(
      m, "wsgate_gateway_sequence_duplicates_total",
      "Sequenced delivers dropped because the connection already had them.", NULL);
  s->m_seq_conns = wsg_metrics_gauge(m, "wsgate_gateway_resumable_connections",
                                     "Open connections with subprotocol +seq.", NULL);
  static const double bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                  0.1,   0.25,   0.5,   1,    2.5,   5};
  s->m_latency = wsg_metrics_histogram(
      m, "wsgate_gateway_outbound_latency_seconds",
      "From an outbound envelope's ts (set by its producer) to its hand-off to connections.", NULL,
      bounds, sizeof bounds / sizeof bounds[0]);
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
  wsg_buf_init(&s->enc, cfg->max_message + (size_t)64 * 1024);
  s->scratch = malloc(LWS_PRE + FRAG_SIZE);
  if (!s->scratch) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }

  s->jwt = *o->jwt;
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
  s->held_limits.hard_bytes = cfg->sendq_hard;
  s->replay_room = cfg->sendq_soft / 4 > 0 ? cfg->sendq_soft / 4 : 1;
  s->replay_limits.max_entries = REPLAY_PAGE_ENTRIES;
  s->replay_limits.max_bytes = s->replay_room;
  s->replay_limits.max_age_ms = cfg->resume_max_age_ms;
  s->replay_limits.max_distance = cfg->resume_max > 0 ? (uint64_t)cfg->resume_max : 0;
  if (cfg->max_connections > 0)
    s->max_conns = (uint64_t)cfg->max_connections;
  else
    s->max_conns = o->fd_limit > FD_RESERVE * 2 ? (uint64_t)(o->fd_limit - FD_RESERVE)
                                                : (uint64_t)(o->fd_limit > 0 ? o->fd_limit / 2 : 1);
  register_metrics(s, o->metrics);
  ev_timer_init(&s->rate_w, rate_timer_cb, 0., 0.);
  s->rate_w.data = s;
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

  /* libev's plugin logs every watcher change at NOTICE (notes §1): only with --log-level debug. */
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
  /* Only a pong proves a connection alive (notes §9). The pings and the hang-up are ours
   * (keepalive_due): with both at 0, libwebsockets arms no validity timer of its own. */
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
  info.max_http_header_data = MAX_HTTP_HEADER_DATA;
  if (o->fd_limit > 0)
    info.fd_limit_per_thread = (unsigned)o->fd_limit;
  if (cfg->tls_cert) {
    info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.ssl_cert_filepath = cfg->tls_cert;
    info.ssl_private_key_filepath = cfg->tls_key;
    /* No HTTP/2: WebSocket over h2 would skip CONFIRM_UPGRADE (and so authentication). */
    info.alpn = "http/1.1";
  }

  s->ctx = lws_create_context(&info);
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
    ev_timer_stop(s->o.loop, &s->ka_w);
  }
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
  gw_user_map_finish(&s->users);
  while (s->orphan_head) {
    orphan *o = s->orphan_head;
    s->orphan_head = o->next;
    free(o);
  }
  free(s->stalled);
  gw_deadline_heap_finish(&s->rate_heap);
  gw_keepalive_free(s->ka);
  free(s->scratch);
  wsg_buf_finish(&s->enc);
  free(s);
}
