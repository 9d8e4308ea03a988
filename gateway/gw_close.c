/*
 * gw_close: the closes the gateway decides (gw_session.h: gw__close_now, gw__close_async), their
 * count by code, and the backstop that ends a close the client does not answer in time
 * (GW_CLOSE_BACKSTOP_MS, from our own timer: lws' fire late on a quiet connection,
 * docs/notes/libwebsockets-4.1.6.md#timers). docs/GATEWAY.md "Closes and their bounds" tells the
 * bounds; the close codes themselves are gw_server.h's GW_CLOSE_MAP.
 *
 * Threads: the loop thread only.
 */
#include "gw_session.h"

#include <linux/sockios.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "wsg_envelope.h"
#include "wsg_time.h"

/* lws' own timeout of a close, in seconds: the same bound as ours, should ours not come. */
#define CLOSE_TIMEOUT_S ((int)(GW_CLOSE_BACKSTOP_MS / 1000))
/* At most this much unread client input is discarded right before a socket is closed. */
#define LINGER_DISCARD_MAX ((size_t)8 << 20)

/* ------------------------------------------------------------------------------------------ */
/* codes                                                                                       */

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

/* Codes outside the table (an application's own, from a close envelope) count as "app". */
static size_t close_idx(int code) {
  switch (code) {
#define CLOSE_INDEX(name, c, when, reason)                                                         \
  case c:                                                                                          \
    return CLOSE_IDX_##name;
    GW_CLOSE_MAP(CLOSE_INDEX)
#undef CLOSE_INDEX
  default:
    return CLOSE_IDX_APP_CODE;
  }
}

static void count_close(gw_server *s, int code) {
  wsg_counter_add(s->m_closes[close_idx(code)], 1);
}

/* ------------------------------------------------------------------------------------------ */
/* closes                                                                                      */

/* Called in CLOSED, between lws' shutdown() and close(): drops unread input (at most
 * LINGER_DISCARD_MAX) so the close is a FIN (docs/notes/libwebsockets-4.1.6.md#lingering-close). */
void gw_close_discard_unread(gw_server *s, struct lws *wsi) {
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
int gw__close_now(gw_server *s, struct lws *wsi, gw_session *ss, int code, const char *reason) {
  if (ss && (ss->flags & F_CLOSE_SENT))
    return -1; /* lws may call back again while it flushes the close: decide once */
  if (!reason)
    reason = gw_close_reason(code);
  size_t rlen = strnlen(reason, WSG_MAX_REASON_LEN);
  /* A close decided earlier (gw__close_async) was counted then, whether or not its close frame
   * can ever be written; one decided here is counted here. */
  if (!ss || !(ss->flags & F_CLOSING))
    count_close(s, code);
  if (ss) {
    /* Decided here (not earlier by gw__close_async, which armed the backstop then). */
    bool arm = !(ss->flags & F_CLOSING);
    mark_closing(ss);
    ss->flags |= F_CLOSE_SENT;
    ss->close_code = (uint16_t)code;
    ss->disconnect_code = (uint16_t)code;
    if (arm)
      gw__close_backstop(s, ss, GW_CLOSE_BACKSTOP_MS);
  }
  lws_close_reason(wsi, (enum lws_close_status)code, (unsigned char *)reason, rlen);
  /* lws 4.1.6 ignores RECEIVE's -1 while it drains deflate output: also close from WRITEABLE,
   * at worst by timeout (docs/notes/libwebsockets-4.1.6.md#deflate-assertion). */
  if (ss) {
    lws_callback_on_writable(wsi);
    lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, CLOSE_TIMEOUT_S);
  }
  return -1;
}

/*
 * Closes from anywhere on the loop thread (outbound close envelope, drain, slow consumer, Kafka
 * failure): the close frame goes out from WRITEABLE, after what is queued unless urgent. A
 * timeout drops the connection if even the close frame cannot be written (a client that stopped
 * reading), so a close always ends.
 */
void gw__close_async(gw_server *s, gw_session *ss, int code, const char *reason, bool urgent) {
  if (ss->flags & F_RELEASED)
    return;
  if (ss->flags & F_CLOSING) {
    if (urgent && !(ss->flags & F_CLOSE_URGENT)) {
      ss->flags |= F_CLOSE_URGENT;
      gw_sendmem_clear(s, ss);
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
    gw_sendmem_clear(s, ss);
  }
  ss->close_code = (uint16_t)code;
  ss->disconnect_code = (uint16_t)code;
  if (reason && *reason && strcmp(reason, gw_close_reason(code)) != 0)
    ss->close_reason = strndup(reason, WSG_MAX_REASON_LEN); /* NULL: the default text is used */
  lws_set_timeout(ss->wsi, PENDING_TIMEOUT_USER_OK, CLOSE_TIMEOUT_S);
  lws_callback_on_writable(ss->wsi);
  /* An oversized message's 1009 waits for the message's end: its discard arms the backstop
   * when it ends (gw_inbound discard_end). */
  if (!ss->discard_until_ms)
    gw__close_backstop(s, ss, GW_CLOSE_BACKSTOP_MS);
}

/* ------------------------------------------------------------------------------------------ */
/* the backstop                                                                                */

void gw__close_backstop(gw_server *s, gw_session *ss, uint32_t after_ms) {
  /* Out of memory: lws' own close-ack timeout remains, late or not. */
  if (gw_deadline_push(&s->kill_heap, wsg_now_mono_us() + (uint64_t)after_ms * 1000u,
                       ss->conn_id) == 0)
    gw__deadline_timer_arm(s, &s->kill_w, &s->kill_heap);
}

/*
 * Ended from our own timer, outside lws' service: closed at once (CLOSED still runs and frees the
 * send queue). A close with a code (not the idle hang-up, which sends none) that gets here was
 * not answered in time: counted. If the client left our last bytes unread, the close is a reset:
 * a FIN would wait behind them, and the kernel would hold that orphan's buffer for minutes. Its
 * write side is shut first: lws waits to flush output it still holds before it closes, on a timer
 * of its own that fires late (docs/notes/libwebsockets-4.1.6.md#closing); a shut socket fails
 * that flush at once.
 */
static void kill_due(gw_server *s, gw_session *ss) {
  if (!ss->wsi || (ss->flags & F_RELEASED))
    return;
  if (ss->close_code)
    wsg_counter_add(s->m_backstops[close_idx(ss->close_code)], 1);
  lws_sockfd_type fd = lws_get_socket_fd(ss->wsi);
  int unsent = 0;
  if (fd >= 0 && ioctl(fd, SIOCOUTQ, &unsent) == 0 && unsent > 0) {
    struct linger l = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    shutdown(fd, SHUT_WR);
  }
  lws_set_timeout(ss->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_SYNC);
}

void gw_close_backstop_timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop;
  (void)revents;
  gw_server *s = w->data;
  gw__deadline_run(s, &s->kill_heap, w, kill_due);
}
