/*
 * lws_echo: a bare libwebsockets echo server, the ceiling of the gateway-only benchmarks
 * (docs/BENCHMARKS.md). It sets libwebsockets up exactly as wsgate-gateway does (Debian's 4.1.6
 * on a foreign libev loop, the same receive buffer, tx packet size, header limit, keepalive policy
 * and UTF-8 validation) and does nothing else: no authentication, no Kafka, no Redis. Every
 * message is echoed once, whole, to the connection that sent it; each connection may hold at most
 * --queue-max bytes of unsent replies (like the gateway's --sendq-hard) and is closed with 4001
 * beyond that, so a client that does not read cannot grow the server without bound.
 *
 * Usage: lws_echo [--addr 127.0.0.1] [--port 0] [--rx-buffer 512] [--queue-max 1048576]
 *                 [--ping-interval 30] [--sink]
 * --sink reads and reassembles every message as the echo does but sends nothing back: the
 * receive path alone, the like-for-like ceiling of the gateway's ingest (frames in, records out to
 * Kafka, nothing written to the client). SIGUSR1 prints "lws_echo: received N messages" (all
 * modes), so scripts/bench can take the rate between two readings.
 * --ping-interval 0 switches libwebsockets' keepalive off (hangup after twice the interval
 * otherwise): docs/BENCHMARKS.md measures what its per-connection timers cost. Prints "lws_echo:
 * listening on <addr>:<port>" once it accepts connections; SIGTERM or SIGINT stops it.
 *
 * Threads: one; libwebsockets runs on the libev loop of the main thread.
 */
#include <errno.h>
#include <ev.h>
#include <libwebsockets.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>

/* The gateway's values (gateway/gw_server.c), so the two differ only in what they do. */
#define TX_PACKET_SIZE       ((size_t)64 * 1024 + 16)
#define MAX_HTTP_HEADER_DATA 12288
/* Largest message reassembled (the gateway's --max-message default). */
#define MSG_MAX ((size_t)1 << 20)

typedef struct echo_msg {
  struct echo_msg *next;
  size_t len;
  bool binary;
  unsigned char buf[]; /* LWS_PRE bytes of headroom, then the payload */
} echo_msg;

typedef struct {
  echo_msg *head, *tail;
  size_t queued; /* bytes of replies not written yet */
  echo_msg *rx;  /* message being reassembled */
  size_t rx_cap; /* payload capacity of rx */
  bool over;     /* queue limit hit: close at the next WRITEABLE */
} echo_session;

typedef struct {
  size_t queue_max;
  bool sink;                   /* --sink: count and drop instead of echoing */
  unsigned long long received; /* whole messages received, read on SIGUSR1 */
  struct lws_context *ctx;
  struct ev_loop *loop;
} echo_server;

static void session_free(echo_session *s) {
  if (!s)
    return;
  for (echo_msg *m = s->head, *n; m; m = n) {
    n = m->next;
    free(m);
  }
  free(s->rx);
  memset(s, 0, sizeof *s);
}

static int on_receive(struct lws *wsi, echo_session *s, const void *in, size_t len) {
  echo_server *srv = lws_context_user(lws_get_context(wsi));
  if (lws_is_first_fragment(wsi)) {
    free(s->rx);
    size_t want = len + lws_remaining_packet_payload(wsi);
    s->rx_cap = want > 256 ? want : 256;
    if (s->rx_cap > MSG_MAX)
      s->rx_cap = MSG_MAX;
    s->rx = malloc(sizeof *s->rx + LWS_PRE + s->rx_cap);
    if (!s->rx)
      return -1;
    s->rx->len = 0;
    s->rx->next = NULL;
    s->rx->binary = lws_frame_is_binary(wsi);
  }
  if (!s->rx)
    return -1;
  if (s->rx->len + len > MSG_MAX) {
    lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, NULL, 0);
    return -1;
  }
  if (s->rx->len + len > s->rx_cap) {
    size_t cap = s->rx_cap * 2 < s->rx->len + len ? s->rx->len + len : s->rx_cap * 2;
    if (cap > MSG_MAX)
      cap = MSG_MAX;
    echo_msg *n = realloc(s->rx, sizeof *n + LWS_PRE + cap);
    if (!n)
      return -1;
    s->rx = n;
    s->rx_cap = cap;
  }
  memcpy(s->rx->buf + LWS_PRE + s->rx->len, in, len);
  s->rx->len += len;
  if (!lws_is_final_fragment(wsi))
    return 0;
  echo_msg *m = s->rx;
  s->rx = NULL;
  srv->received++;
  if (srv->sink) {
    free(m);
    return 0;
  }
  if (s->queued + m->len > srv->queue_max) {
    free(m);
    s->over = true;
  } else {
    if (s->tail)
      s->tail->next = m;
    else
      s->head = m;
    s->tail = m;
    s->queued += m->len;
  }
  lws_callback_on_writable(wsi);
  return 0;
}

/* One lws_write per WRITEABLE callback, as libwebsockets requires (and as the gateway does). */
static int on_writeable(struct lws *wsi, echo_session *s) {
  if (s->over) {
    lws_close_reason(wsi, (enum lws_close_status)4001, (unsigned char *)"slow consumer", 13);
    return -1;
  }
  echo_msg *m = s->head;
  if (!m)
    return 0;
  int n = lws_write(wsi, m->buf + LWS_PRE, m->len, m->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
  if (n < (int)m->len)
    return -1;
  s->head = m->next;
  if (!s->head)
    s->tail = NULL;
  s->queued -= m->len;
  free(m);
  if (s->head)
    lws_callback_on_writable(wsi);
  return 0;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len) {
  echo_session *s = user;
  switch (reason) {
  case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: {
    /* The gateway's CVE-2025-11677 guard costs one header copy; do the same work here. */
    char up[16];
    if (lws_hdr_copy(wsi, up, sizeof up, WSI_TOKEN_UPGRADE) <= 0 ||
        strcasecmp(up, "websocket") != 0)
      return -1;
    return 0;
  }
  case LWS_CALLBACK_ESTABLISHED:
    memset(s, 0, sizeof *s);
    return 0;
  case LWS_CALLBACK_RECEIVE:
    return s ? on_receive(wsi, s, in, len) : -1;
  case LWS_CALLBACK_SERVER_WRITEABLE:
    return s ? on_writeable(wsi, s) : 0;
  case LWS_CALLBACK_CLOSED:
    session_free(s);
    return 0;
  default:
    break;
  }
  return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static void on_stop_signal(struct ev_loop *loop, ev_signal *w, int revents) {
  (void)revents;
  echo_server *srv = w->data;
  if (srv->ctx)
    lws_context_destroy(srv->ctx); /* synchronous on a foreign libev loop */
  srv->ctx = NULL;
  ev_break(loop, EVBREAK_ALL);
}

static void on_count_signal(struct ev_loop *loop, ev_signal *w, int revents) {
  (void)loop;
  (void)revents;
  const echo_server *srv = w->data;
  printf("lws_echo: received %llu messages\n", srv->received);
  fflush(stdout);
}

static int parse_num(const char *flag, const char *v, long long min, long long max,
                     long long *out) {
  char *end;
  errno = 0;
  long long n = strtoll(v, &end, 10);
  if (errno || *end || n < min || n > max) {
    fprintf(stderr, "lws_echo: %s %s: give a number in %lld..%lld\n", flag, v, min, max);
    return -1;
  }
  *out = n;
  return 0;
}

int main(int argc, char **argv) {
  const char *addr = "127.0.0.1";
  long long port = 0, rx = 512, qmax = 1 << 20, ping = 30;
  bool sink = false;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      printf("usage: lws_echo [--addr 127.0.0.1] [--port 0] [--rx-buffer 512] "
             "[--queue-max 1048576] [--ping-interval 30] [--sink]\n");
      return 0;
    }
    if (strcmp(a, "--sink") == 0) {
      sink = true;
      continue;
    }
    if (!v) {
      fprintf(stderr, "lws_echo: %s needs a value (see --help)\n", a);
      return 2;
    }
    i++;
    int rc = 0;
    if (strcmp(a, "--addr") == 0)
      addr = v;
    else if (strcmp(a, "--port") == 0)
      rc = parse_num(a, v, 0, 65535, &port);
    else if (strcmp(a, "--rx-buffer") == 0)
      rc = parse_num(a, v, 128, 1 << 20, &rx);
    else if (strcmp(a, "--queue-max") == 0)
      rc = parse_num(a, v, 1024, 1LL << 30, &qmax);
    else if (strcmp(a, "--ping-interval") == 0)
      rc = parse_num(a, v, 0, 3600, &ping);
    else {
      fprintf(stderr, "lws_echo: unknown option %s (see --help)\n", a);
      return 2;
    }
    if (rc != 0)
      return 2;
  }

  /* Each connection is a descriptor: take the hard limit, as the gateway does. */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  lws_set_log_level(LLL_ERR | LLL_WARN, NULL);

  echo_server srv = {.queue_max = (size_t)qmax, .sink = sink};
  srv.loop = ev_default_loop(EVFLAG_AUTO);
  if (!srv.loop) {
    fprintf(stderr, "lws_echo: cannot create the libev loop\n");
    return 1;
  }
  struct lws_protocols protocols[2];
  memset(protocols, 0, sizeof protocols);
  protocols[0].name = "wsgate.v1";
  protocols[0].callback = callback;
  protocols[0].per_session_data_size = sizeof(echo_session);
  protocols[0].rx_buffer_size = (size_t)rx;
  protocols[0].tx_packet_size = TX_PACKET_SIZE;
  /* The gateway's defaults: ping after 30 s, hang up after 60 s. A zero hangup time makes
   * libwebsockets schedule no validity timer at all (wsi-timeout.c, _lws_validity_confirmed_role).
   */
  lws_retry_bo_t retry = {.secs_since_valid_ping = (uint16_t)ping,
                          .secs_since_valid_hangup = (uint16_t)(2 * ping)};

  struct lws_context_creation_info info;
  memset(&info, 0, sizeof info);
  void *loops[] = {srv.loop};
  info.options =
      LWS_SERVER_OPTION_LIBEV | LWS_SERVER_OPTION_VALIDATE_UTF8 | LWS_SERVER_OPTION_DISABLE_IPV6;
  info.foreign_loops = loops;
  info.pcontext = &srv.ctx;
  info.user = &srv;
  info.vhost_name = "lws_echo";
  info.port = (int)port;
  info.iface = addr;
  info.protocols = protocols;
  info.retry_and_idle_policy = &retry;
  info.max_http_header_data = MAX_HTTP_HEADER_DATA;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
    info.fd_limit_per_thread = (unsigned)rl.rlim_cur;
  srv.ctx = lws_create_context(&info);
  if (!srv.ctx) {
    fprintf(stderr,
            "lws_echo: cannot listen on %s:%lld (port in use? libwebsockets-evlib-ev "
            "installed?)\n",
            addr, port);
    return 1;
  }
  struct lws_vhost *vh = lws_get_vhost_by_name(srv.ctx, "lws_echo");
  printf("lws_echo: listening on %s:%d\n", addr, vh ? lws_get_vhost_listen_port(vh) : (int)port);
  fflush(stdout);

  ev_signal sig_term, sig_int, sig_usr1;
  ev_signal_init(&sig_term, on_stop_signal, SIGTERM);
  ev_signal_init(&sig_int, on_stop_signal, SIGINT);
  ev_signal_init(&sig_usr1, on_count_signal, SIGUSR1);
  sig_term.data = sig_int.data = sig_usr1.data = &srv;
  ev_signal_start(srv.loop, &sig_term);
  ev_signal_start(srv.loop, &sig_int);
  ev_signal_start(srv.loop, &sig_usr1);
  ev_run(srv.loop, 0);
  ev_signal_stop(srv.loop, &sig_term);
  ev_signal_stop(srv.loop, &sig_int);
  ev_signal_stop(srv.loop, &sig_usr1);
  if (srv.ctx)
    lws_context_destroy(srv.ctx);
  ev_loop_destroy(srv.loop);
  return 0;
}
