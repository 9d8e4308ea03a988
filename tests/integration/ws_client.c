/*
 * ws_client: a small blocking RFC 6455 client for the integration tests (see ws_client.h).
 *
 * The socket is non-blocking and every wait is a poll() against a deadline, so a test never
 * hangs on a server that stops talking. Received bytes accumulate in one buffer that frames are
 * parsed from in place; a fragmented message is reassembled into a second one, bounded by
 * max_message. With TLS the same waits drive OpenSSL's non-blocking calls: a read or write that
 * needs the socket readable or writable waits for exactly that (a TLS write may need a read).
 *
 * Threads: whichever thread owns the ws_client.
 */
#include "ws_client.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WS_GUID             "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define HEADER_MAX          16384
#define WRITE_TIMEOUT_MS    10000
#define DEFAULT_MAX_MESSAGE (16u << 20)

struct ws_client {
  int fd;
  SSL_CTX *tls_ctx; /* wss:// only */
  SSL *tls;
  char alpn[32];
  bool closed;     /* a close frame arrived (and was echoed), or EOF */
  bool close_sent; /* we sent a close frame */
  unsigned pings;
  size_t max_message;
  uint8_t *rbuf; /* received, not yet parsed: rbuf[rpos..rlen) */
  size_t rpos, rlen, rcap;
  uint8_t *msg; /* message being reassembled / last returned */
  size_t mlen, mcap;
  int mop; /* opcode of the message being reassembled, -1 if none */
  uint8_t ctl[128];
  uint16_t close_code;
  char close_reason[124];
};

#define WS_ERR_STR(name, value, msg)                                                               \
  case value:                                                                                      \
    return msg;
const char *ws_client_strerror(int err) {
  switch (err) { WS_CLIENT_ERRNO_MAP(WS_ERR_STR) }
  return "unknown ws_client error";
}
#undef WS_ERR_STR

__attribute__((format(printf, 4, 5))) static int fail(char *err, size_t errlen, int code,
                                                      const char *fmt, ...) {
  if (err != NULL && errlen > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return code;
}

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int remaining(uint64_t deadline) {
  uint64_t now = now_ms();
  return now >= deadline ? 0 : (int)(deadline - now);
}

/* Waits for `events` on fd until the deadline: 1 ready, 0 timeout, -1 error. */
static int wait_fd(int fd, short events, uint64_t deadline) {
  for (;;) {
    struct pollfd p = {.fd = fd, .events = events};
    int rc = poll(&p, 1, remaining(deadline));
    if (rc < 0 && errno == EINTR)
      continue;
    if (rc < 0)
      return -1;
    return rc > 0 ? 1 : 0;
  }
}

/* What a non-blocking TLS call that did not complete waits for: POLLIN or POLLOUT; 0 if the call
 * failed for good. */
static short tls_wants(SSL *tls, int ret) {
  switch (SSL_get_error(tls, ret)) {
  case SSL_ERROR_WANT_READ:
    return POLLIN;
  case SSL_ERROR_WANT_WRITE:
    return POLLOUT;
  default:
    return 0;
  }
}

/* OpenSSL writes with write(2), not send(MSG_NOSIGNAL): a write to a peer that has gone raises
 * SIGPIPE, which would kill the test instead of failing one call. So SIGPIPE is blocked on this
 * thread around TLS writes, and one raised meanwhile is consumed before it is unblocked. */
typedef struct {
  sigset_t old;
  bool was_pending;
} sigpipe_guard;

static void sigpipe_block(sigpipe_guard *g) {
  sigset_t pipe, pending;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  sigpending(&pending);
  g->was_pending = sigismember(&pending, SIGPIPE) == 1;
  pthread_sigmask(SIG_BLOCK, &pipe, &g->old);
}

static void sigpipe_restore(sigpipe_guard *g) {
  sigset_t pipe;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  if (!g->was_pending) {
    const struct timespec none = {0, 0};
    while (sigtimedwait(&pipe, NULL, &none) > 0) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

static int tls_write_all(ws_client *c, const uint8_t *p, size_t len, uint64_t deadline) {
  sigpipe_guard guard;
  sigpipe_block(&guard);
  int rc = WS_CLIENT_OK;
  while (len > 0 && rc == WS_CLIENT_OK) {
    size_t n = 0;
    /* SSL_get_error reads the thread's whole error queue: an error another connection left
     * there would make this one look broken. */
    ERR_clear_error();
    int ret = SSL_write_ex(c->tls, p, len, &n);
    if (ret == 1) {
      p += n;
      len -= n;
      continue;
    }
    short ev = tls_wants(c->tls, ret);
    int w = ev != 0 ? wait_fd(c->fd, ev, deadline) : -1;
    if (w <= 0)
      rc = w == 0 ? WS_CLIENT_TIMEOUT : WS_CLIENT_IO;
  }
  sigpipe_restore(&guard);
  return rc;
}

static int write_all(ws_client *c, const void *data, size_t len, int timeout_ms) {
  const uint8_t *p = data;
  uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
  if (c->tls != NULL)
    return tls_write_all(c, p, len, deadline);
  int fd = c->fd;
  while (len > 0) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
    if (n > 0) {
      p += n;
      len -= (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      int w = wait_fd(fd, POLLOUT, deadline);
      if (w == 0)
        return WS_CLIENT_TIMEOUT;
      if (w < 0)
        return WS_CLIENT_IO;
      continue;
    }
    return WS_CLIENT_IO;
  }
  return WS_CLIENT_OK;
}

/* Reads what is available into rbuf, waiting until the deadline for at least one byte.
 * Returns bytes read (> 0), WS_CLIENT_CLOSED on EOF or reset, WS_CLIENT_TIMEOUT, WS_CLIENT_IO. */
static long fill(ws_client *c, uint64_t deadline) {
  if (c->rpos > 0 && c->rpos == c->rlen) {
    c->rpos = c->rlen = 0;
  } else if (c->rpos > c->rcap / 2) {
    memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
    c->rlen -= c->rpos;
    c->rpos = 0;
  }
  if (c->rcap - c->rlen < 65536) {
    size_t cap = c->rcap * 2 < c->rlen + 65536 ? c->rlen + 65536 : c->rcap * 2;
    uint8_t *nb = realloc(c->rbuf, cap);
    if (nb == NULL)
      return WS_CLIENT_NOMEM;
    c->rbuf = nb;
    c->rcap = cap;
  }
  while (c->tls != NULL) {
    size_t n = 0;
    ERR_clear_error(); /* as in tls_write_all */
    int ret = SSL_read_ex(c->tls, c->rbuf + c->rlen, c->rcap - c->rlen, &n);
    if (ret == 1) {
      c->rlen += n;
      return (long)n;
    }
    int e = SSL_get_error(c->tls, ret);
    if (e == SSL_ERROR_ZERO_RETURN ||
        (e == SSL_ERROR_SYSCALL && (errno == 0 || errno == ECONNRESET)))
      return WS_CLIENT_CLOSED; /* close_notify, EOF or reset */
    short ev = tls_wants(c->tls, ret);
    if (ev == 0)
      return WS_CLIENT_IO;
    int w = wait_fd(c->fd, ev, deadline);
    if (w == 0)
      return WS_CLIENT_TIMEOUT;
    if (w < 0)
      return WS_CLIENT_IO;
  }
  for (;;) {
    ssize_t n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
    if (n > 0) {
      c->rlen += (size_t)n;
      return n;
    }
    if (n == 0)
      return WS_CLIENT_CLOSED;
    if (errno == EINTR)
      continue;
    if (errno == ECONNRESET)
      return WS_CLIENT_CLOSED;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      return WS_CLIENT_IO;
    int w = wait_fd(c->fd, POLLIN, deadline);
    if (w == 0)
      return WS_CLIENT_TIMEOUT;
    if (w < 0)
      return WS_CLIENT_IO;
  }
}

/* --- handshake -------------------------------------------------------------------------------- */

static int tcp_connect(const char *host, int port, uint64_t deadline, char *err, size_t errlen) {
  char portstr[16];
  snprintf(portstr, sizeof(portstr), "%d", port);
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST};
  struct addrinfo *res = NULL;
  int gai = getaddrinfo(host, portstr, &hints, &res);
  if (gai != 0)
    return fail(err, errlen, WS_CLIENT_INVALID, "host %s is not an IP literal: %s", host,
                gai_strerror(gai));
  int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    freeaddrinfo(res);
    return fail(err, errlen, WS_CLIENT_CONNECT, "socket: %s", strerror(errno));
  }
  int rc = connect(fd, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  if (rc < 0 && errno != EINPROGRESS) {
    int e = errno;
    close(fd);
    return fail(err, errlen, WS_CLIENT_CONNECT, "connect to %s:%d: %s", host, port, strerror(e));
  }
  if (rc < 0) {
    int w = wait_fd(fd, POLLOUT, deadline);
    int soerr = 0;
    socklen_t sl = sizeof(soerr);
    if (w <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr != 0) {
      close(fd);
      if (w == 0)
        return fail(err, errlen, WS_CLIENT_TIMEOUT, "connect to %s:%d timed out", host, port);
      return fail(err, errlen, WS_CLIENT_CONNECT, "connect to %s:%d: %s", host, port,
                  strerror(soerr != 0 ? soerr : errno));
    }
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

/* Finds header `name` in the header block; copies its trimmed value. Returns false if absent. */
static bool header_value(const char *headers, const char *name, char *out, size_t outlen) {
  size_t nlen = strlen(name);
  const char *line = strstr(headers, "\r\n");
  while (line != NULL) {
    line += 2;
    if (strncasecmp(line, name, nlen) == 0 && line[nlen] == ':') {
      const char *v = line + nlen + 1;
      while (*v == ' ' || *v == '\t')
        v++;
      const char *end = strstr(v, "\r\n");
      size_t len = end != NULL ? (size_t)(end - v) : strlen(v);
      while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
      snprintf(out, outlen, "%.*s", (int)len, v);
      return true;
    }
    line = strstr(line, "\r\n");
  }
  return false;
}

static bool token_in_list(const char *list, const char *token) {
  size_t tl = strlen(token);
  for (const char *p = list; *p != '\0';) {
    while (*p == ' ' || *p == ',' || *p == '\t')
      p++;
    const char *e = p;
    while (*e != '\0' && *e != ',')
      e++;
    size_t l = (size_t)(e - p);
    while (l > 0 && (p[l - 1] == ' ' || p[l - 1] == '\t'))
      l--;
    if (l == tl && strncasecmp(p, token, tl) == 0)
      return true;
    p = e;
  }
  return false;
}

/* Reads a refusal's body: Content-Length bytes, or until EOF, within the deadline. */
static void read_body(ws_client *c, const char *headers, size_t hdr_end, ws_http_response *resp,
                      uint64_t deadline) {
  char clen[32];
  long want = -1;
  if (header_value(headers, "Content-Length", clen, sizeof(clen)))
    want = strtol(clen, NULL, 10);
  for (;;) {
    size_t have = c->rlen - hdr_end;
    if (want >= 0 && have >= (size_t)want)
      break;
    if (fill(c, deadline) <= 0)
      break;
  }
  size_t have = c->rlen - hdr_end;
  if (want >= 0 && have > (size_t)want)
    have = (size_t)want;
  size_t n = have < sizeof(resp->body) - 1 ? have : sizeof(resp->body) - 1;
  memcpy(resp->body, c->rbuf + hdr_end, n);
  resp->body[n] = '\0';
  resp->body_len = n;
}

static void accept_for(const char *key, char out[64]) {
  char buf[128];
  unsigned char sha[SHA_DIGEST_LENGTH];
  int n = snprintf(buf, sizeof(buf), "%s%s", key, WS_GUID);
  SHA1((const unsigned char *)buf, (size_t)n, sha);
  EVP_EncodeBlock((unsigned char *)out, sha, SHA_DIGEST_LENGTH);
}

/* The first OpenSSL error as text, for a message; clears the queue. */
static const char *tls_error(char *buf, size_t len) {
  unsigned long e = ERR_get_error();
  if (e == 0)
    snprintf(buf, len, "no OpenSSL error queued");
  else
    ERR_error_string_n(e, buf, len);
  ERR_clear_error();
  return buf;
}

/* Turns "h2,http/1.1" into ALPN's wire format (length-prefixed names). Returns its length, 0 if
 * the list is empty or does not fit. */
static size_t alpn_wire(const char *list, unsigned char *out, size_t cap) {
  size_t n = 0;
  for (const char *p = list; *p != '\0';) {
    const char *e = strchr(p, ',');
    size_t l = e != NULL ? (size_t)(e - p) : strlen(p);
    if (l == 0 || l > 255 || n + 1 + l > cap)
      return 0;
    out[n++] = (unsigned char)l;
    memcpy(out + n, p, l);
    n += l;
    p += l + (e != NULL);
  }
  return n;
}

/* TLS over the connected socket: the server's certificate must chain to o->tls_ca_file and name
 * host as an IP address. */
static int tls_handshake(ws_client *c, const char *host, const ws_client_options *o,
                         uint64_t deadline, char *err, size_t errlen) {
  char why[256];
  c->tls_ctx = SSL_CTX_new(TLS_client_method());
  if (c->tls_ctx == NULL)
    return fail(err, errlen, WS_CLIENT_NOMEM, "SSL_CTX_new: %s", tls_error(why, sizeof why));
  SSL_CTX_set_min_proto_version(c->tls_ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(c->tls_ctx, SSL_VERIFY_PEER, NULL);
  if (SSL_CTX_load_verify_locations(c->tls_ctx, o->tls_ca_file, NULL) != 1)
    return fail(err, errlen, WS_CLIENT_INVALID, "cannot load CA file %s: %s", o->tls_ca_file,
                tls_error(why, sizeof why));
  c->tls = SSL_new(c->tls_ctx);
  if (c->tls == NULL || SSL_set_fd(c->tls, c->fd) != 1)
    return fail(err, errlen, WS_CLIENT_NOMEM, "SSL_new: %s", tls_error(why, sizeof why));
  if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->tls), host) != 1)
    return fail(err, errlen, WS_CLIENT_INVALID, "%s: not an IP address to verify", host);
  if (o->tls_alpn != NULL) {
    unsigned char wire[128];
    size_t wl = alpn_wire(o->tls_alpn, wire, sizeof wire);
    if (wl == 0 || SSL_set_alpn_protos(c->tls, wire, (unsigned)wl) != 0)
      return fail(err, errlen, WS_CLIENT_INVALID, "bad ALPN list \"%s\"", o->tls_alpn);
  }
  for (;;) {
    sigpipe_guard guard;
    sigpipe_block(&guard);
    int ret = SSL_connect(c->tls);
    sigpipe_restore(&guard);
    if (ret == 1)
      break;
    short ev = tls_wants(c->tls, ret);
    if (ev == 0) {
      long v = SSL_get_verify_result(c->tls);
      if (v != X509_V_OK)
        return fail(err, errlen, WS_CLIENT_TLS, "TLS handshake: certificate not accepted: %s",
                    X509_verify_cert_error_string(v));
      return fail(err, errlen, WS_CLIENT_TLS, "TLS handshake: %s", tls_error(why, sizeof why));
    }
    int w = wait_fd(c->fd, ev, deadline);
    if (w == 0)
      return fail(err, errlen, WS_CLIENT_TIMEOUT, "TLS handshake timed out");
    if (w < 0)
      return fail(err, errlen, WS_CLIENT_IO, "poll: %s", strerror(errno));
  }
  const unsigned char *proto = NULL;
  unsigned plen = 0;
  SSL_get0_alpn_selected(c->tls, &proto, &plen);
  snprintf(c->alpn, sizeof c->alpn, "%.*s", (int)plen, proto != NULL ? (const char *)proto : "");
  return WS_CLIENT_OK;
}

int ws_client_connect(ws_client **out, const ws_client_options *o, ws_http_response *resp,
                      char *err, size_t errlen) {
  *out = NULL;
  ws_http_response scratch;
  if (resp == NULL)
    resp = &scratch;
  memset(resp, 0, sizeof(*resp));
  if (o == NULL || o->port <= 0 || o->port > 65535)
    return fail(err, errlen, WS_CLIENT_INVALID, "port must be 1..65535");
  const char *host = o->host != NULL ? o->host : "127.0.0.1";
  const char *path = o->path != NULL ? o->path : "/";
  uint64_t deadline = now_ms() + (uint64_t)(o->timeout_ms > 0 ? o->timeout_ms : 5000);

  ws_client *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return fail(err, errlen, WS_CLIENT_NOMEM, "out of memory");
  c->mop = -1;
  c->max_message = o->max_message != 0 ? o->max_message : DEFAULT_MAX_MESSAGE;
  c->fd = tcp_connect(host, o->port, deadline, err, errlen);
  if (c->fd < 0) {
    int rc = c->fd;
    free(c);
    return rc;
  }
  if (o->tls_ca_file != NULL) {
    int rc = tls_handshake(c, host, o, deadline, err, errlen);
    if (rc != WS_CLIENT_OK) {
      ws_client_destroy(c);
      return rc;
    }
  }

  unsigned char nonce[16];
  char key[32], expect[64];
  if (RAND_bytes(nonce, sizeof(nonce)) != 1) {
    ws_client_destroy(c);
    return fail(err, errlen, WS_CLIENT_IO, "RAND_bytes failed");
  }
  EVP_EncodeBlock((unsigned char *)key, nonce, sizeof(nonce));
  accept_for(key, expect);

  char *req = malloc(HEADER_MAX);
  if (req == NULL) {
    ws_client_destroy(c);
    return fail(err, errlen, WS_CLIENT_NOMEM, "out of memory");
  }
  bool v6 = strchr(host, ':') != NULL;
  int n = snprintf(req, HEADER_MAX,
                   "GET %s HTTP/1.1\r\nHost: %s%s%s:%d\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n",
                   path, v6 ? "[" : "", host, v6 ? "]" : "", o->port, key);
  if (o->subprotocol != NULL)
    n += snprintf(req + n, (size_t)(HEADER_MAX - n), "Sec-WebSocket-Protocol: %s\r\n",
                  o->subprotocol);
  for (const char *const *h = o->headers; h != NULL && *h != NULL && n < HEADER_MAX; h++)
    n += snprintf(req + n, (size_t)(HEADER_MAX - n), "%s\r\n", *h);
  if (n < HEADER_MAX)
    n += snprintf(req + n, (size_t)(HEADER_MAX - n), "\r\n");
  if (n >= HEADER_MAX) {
    free(req);
    ws_client_destroy(c);
    return fail(err, errlen, WS_CLIENT_INVALID, "request headers exceed %d bytes", HEADER_MAX);
  }
  int rc = write_all(c, req, (size_t)n, remaining(deadline));
  free(req);
  if (rc != WS_CLIENT_OK) {
    ws_client_destroy(c);
    return fail(err, errlen, rc, "sending the upgrade request: %s", ws_client_strerror(rc));
  }

  /* Read up to the end of the headers. */
  size_t hdr_end = 0;
  while (hdr_end == 0) {
    long got = fill(c, deadline);
    if (got <= 0) {
      ws_client_destroy(c);
      return fail(err, errlen, got == WS_CLIENT_TIMEOUT ? WS_CLIENT_TIMEOUT : WS_CLIENT_HANDSHAKE,
                  "no complete HTTP response to the upgrade (%s)", ws_client_strerror((int)got));
    }
    void *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
    if (end != NULL)
      hdr_end = (size_t)((uint8_t *)end - c->rbuf) + 4;
    else if (c->rlen > HEADER_MAX) {
      ws_client_destroy(c);
      return fail(err, errlen, WS_CLIENT_HANDSHAKE, "response headers exceed %d bytes", HEADER_MAX);
    }
  }
  size_t hn = hdr_end < sizeof(resp->headers) ? hdr_end : sizeof(resp->headers) - 1;
  memcpy(resp->headers, c->rbuf, hn);
  resp->headers[hn] = '\0';
  int minor = 0;
  if (sscanf(resp->headers, "HTTP/1.%d %d", &minor, &resp->status) != 2) {
    ws_client_destroy(c);
    return fail(err, errlen, WS_CLIENT_HANDSHAKE, "not an HTTP response: %.40s", resp->headers);
  }
  if (resp->status != 101) {
    read_body(c, resp->headers, hdr_end, resp, deadline);
    ws_client_destroy(c);
    return fail(err, errlen, WS_CLIENT_REFUSED, "upgrade refused with HTTP %d: %.200s",
                resp->status, resp->body);
  }

  char v[256];
  const char *problem = NULL;
  if (!header_value(resp->headers, "Upgrade", v, sizeof(v)) || strcasecmp(v, "websocket") != 0)
    problem = "Upgrade is not websocket";
  else if (!header_value(resp->headers, "Connection", v, sizeof(v)) || !token_in_list(v, "upgrade"))
    problem = "Connection does not list upgrade";
  else if (!header_value(resp->headers, "Sec-WebSocket-Accept", v, sizeof(v)) ||
           strcmp(v, expect) != 0)
    problem = "Sec-WebSocket-Accept does not match the key";
  if (problem != NULL) {
    ws_client_destroy(c);
    return fail(err, errlen, WS_CLIENT_HANDSHAKE, "bad 101 response: %s", problem);
  }
  if (header_value(resp->headers, "Sec-WebSocket-Protocol", resp->protocol,
                   sizeof(resp->protocol)) &&
      resp->protocol[0] == '\0') {
    ws_client_destroy(c);
    return fail(err, errlen, WS_CLIENT_HANDSHAKE, "empty Sec-WebSocket-Protocol in the 101");
  }
  if (resp->protocol[0] != '\0' &&
      (o->subprotocol == NULL || !token_in_list(o->subprotocol, resp->protocol))) {
    ws_client_destroy(c);
    return fail(err, errlen, WS_CLIENT_HANDSHAKE, "server chose subprotocol %s, not offered",
                resp->protocol);
  }
  /* Frames may follow the headers in the same read. */
  c->rpos = hdr_end;
  *out = c;
  return WS_CLIENT_OK;
}

void ws_client_destroy(ws_client *c) {
  if (c == NULL)
    return;
  SSL_free(c->tls); /* no close_notify: destroy is an abrupt close by contract */
  SSL_CTX_free(c->tls_ctx);
  if (c->fd >= 0)
    close(c->fd);
  free(c->rbuf);
  free(c->msg);
  free(c);
}

int ws_client_fd(const ws_client *c) {
  return c->fd;
}

size_t ws_client_buffered(const ws_client *c) {
  return c->rlen - c->rpos + (c->tls != NULL ? (size_t)SSL_pending(c->tls) : 0);
}

const char *ws_client_tls_version(const ws_client *c) {
  return c->tls != NULL ? SSL_get_version(c->tls) : NULL;
}

const char *ws_client_tls_alpn(const ws_client *c) {
  return c->tls != NULL ? c->alpn : NULL;
}

unsigned ws_client_pings_received(const ws_client *c) {
  return c->pings;
}

/* --- sending ---------------------------------------------------------------------------------- */

int ws_client_send_frame(ws_client *c, int opcode, bool fin, bool masked, const void *data,
                         size_t len) {
  if (opcode < 0 || opcode > 15 || (data == NULL && len > 0))
    return WS_CLIENT_INVALID;
  uint8_t *f = malloc(14 + len);
  if (f == NULL)
    return WS_CLIENT_NOMEM;
  size_t h = 0;
  f[h++] = (uint8_t)((fin ? 0x80 : 0) | opcode);
  uint8_t mbit = masked ? 0x80 : 0;
  if (len < 126) {
    f[h++] = (uint8_t)(mbit | len);
  } else if (len <= 0xFFFF) {
    f[h++] = mbit | 126;
    f[h++] = (uint8_t)(len >> 8);
    f[h++] = (uint8_t)len;
  } else {
    f[h++] = mbit | 127;
    for (int i = 7; i >= 0; i--)
      f[h++] = (uint8_t)((uint64_t)len >> (8 * i));
  }
  uint8_t mask[4] = {0};
  if (masked) {
    if (RAND_bytes(mask, 4) != 1) {
      free(f);
      return WS_CLIENT_IO;
    }
    memcpy(f + h, mask, 4);
    h += 4;
  }
  const uint8_t *p = data;
  for (size_t i = 0; i < len; i++)
    f[h + i] = masked ? p[i] ^ mask[i & 3] : p[i];
  int rc = write_all(c, f, h + len, WRITE_TIMEOUT_MS);
  free(f);
  return rc;
}

int ws_client_send(ws_client *c, ws_opcode op, const void *data, size_t len) {
  if (c->close_sent)
    return WS_CLIENT_CLOSED;
  return ws_client_send_frame(c, (int)op, true, true, data, len);
}

int ws_client_send_fragmented(ws_client *c, ws_opcode op, const void *data, size_t len,
                              size_t frag_len) {
  if (frag_len == 0)
    return WS_CLIENT_INVALID;
  if (c->close_sent)
    return WS_CLIENT_CLOSED;
  const uint8_t *p = data;
  size_t off = 0;
  int opcode = (int)op;
  do {
    size_t n = len - off < frag_len ? len - off : frag_len;
    bool fin = off + n == len;
    int rc = ws_client_send_frame(c, opcode, fin, true, p + off, n);
    if (rc != WS_CLIENT_OK)
      return rc;
    off += n;
    opcode = WS_OP_CONT;
  } while (off < len);
  return WS_CLIENT_OK;
}

int ws_client_send_raw(ws_client *c, const void *data, size_t len) {
  return write_all(c, data, len, WRITE_TIMEOUT_MS);
}

static int send_close_frame(ws_client *c, uint16_t code, const char *reason) {
  uint8_t p[125];
  size_t n = 0;
  if (code != 0) {
    p[0] = (uint8_t)(code >> 8);
    p[1] = (uint8_t)code;
    n = 2;
    size_t rl = reason != NULL ? strlen(reason) : 0;
    if (rl > sizeof(p) - 2)
      rl = sizeof(p) - 2;
    if (rl > 0)
      memcpy(p + 2, reason, rl);
    n += rl;
  }
  c->close_sent = true;
  return ws_client_send_frame(c, WS_OP_CLOSE, true, true, p, n);
}

/* --- receiving -------------------------------------------------------------------------------- */

static int msg_append(ws_client *c, const uint8_t *p, size_t n) {
  if (c->mlen + n > c->max_message)
    return WS_CLIENT_TOO_BIG;
  if (c->mlen + n + 1 > c->mcap) {
    size_t cap = c->mcap ? c->mcap : 4096;
    while (cap < c->mlen + n + 1)
      cap *= 2;
    uint8_t *nb = realloc(c->msg, cap);
    if (nb == NULL)
      return WS_CLIENT_NOMEM;
    c->msg = nb;
    c->mcap = cap;
  }
  if (n > 0)
    memcpy(c->msg + c->mlen, p, n);
  c->mlen += n;
  c->msg[c->mlen] = '\0';
  return WS_CLIENT_OK;
}

/*
 * Parses one complete frame at rbuf[rpos..]. Returns 1 and fills the outputs when a whole frame is
 * buffered, 0 if more bytes are needed, or a negative error.
 */
static int parse_frame(ws_client *c, bool *fin, int *opcode, const uint8_t **payload, size_t *len) {
  const uint8_t *b = c->rbuf + c->rpos;
  size_t avail = c->rlen - c->rpos;
  if (avail < 2)
    return 0;
  if (b[0] & 0x70)
    return WS_CLIENT_PROTOCOL; /* RSV bits: no extension was negotiated */
  if (b[1] & 0x80)
    return WS_CLIENT_PROTOCOL; /* servers must not mask */
  *fin = (b[0] & 0x80) != 0;
  *opcode = b[0] & 0x0F;
  uint64_t plen = b[1] & 0x7F;
  size_t h = 2;
  if (plen == 126) {
    if (avail < 4)
      return 0;
    plen = (uint64_t)b[2] << 8 | b[3];
    h = 4;
  } else if (plen == 127) {
    if (avail < 10)
      return 0;
    plen = 0;
    for (int i = 0; i < 8; i++)
      plen = plen << 8 | b[2 + i];
    h = 10;
    if (plen >> 63)
      return WS_CLIENT_PROTOCOL;
  }
  if (*opcode >= 8 && (plen > 125 || !*fin))
    return WS_CLIENT_PROTOCOL;
  if (plen > c->max_message)
    return WS_CLIENT_TOO_BIG;
  if (avail - h < plen)
    return 0;
  *payload = b + h;
  *len = (size_t)plen;
  c->rpos += h + (size_t)plen;
  return 1;
}

static int handle_close(ws_client *c, const uint8_t *p, size_t n, ws_message *m) {
  if (n == 1)
    return WS_CLIENT_PROTOCOL;
  c->close_code = n >= 2 ? (uint16_t)(p[0] << 8 | p[1]) : 1005;
  size_t rl = n >= 2 ? n - 2 : 0;
  if (rl > sizeof(c->close_reason) - 1)
    rl = sizeof(c->close_reason) - 1;
  memcpy(c->close_reason, n >= 2 ? p + 2 : p, rl);
  c->close_reason[rl] = '\0';
  /* Echo it: the close handshake (RFC 6455 §5.5.1). */
  if (!c->close_sent)
    send_close_frame(c, n >= 2 ? c->close_code : 0, NULL);
  c->closed = true;
  m->opcode = WS_OP_CLOSE;
  memcpy(c->ctl, p, n);
  c->ctl[n] = '\0';
  m->data = c->ctl;
  m->len = n;
  m->close_code = c->close_code;
  memcpy(m->close_reason, c->close_reason, sizeof(m->close_reason));
  return WS_CLIENT_OK;
}

int ws_client_recv(ws_client *c, ws_message *m, int timeout_ms) {
  memset(m, 0, sizeof(*m));
  if (c->closed)
    return WS_CLIENT_CLOSED;
  uint64_t deadline = now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
  for (;;) {
    bool fin;
    int opcode;
    const uint8_t *p;
    size_t n;
    int rc = parse_frame(c, &fin, &opcode, &p, &n);
    if (rc < 0)
      return rc;
    if (rc == 0) {
      long got = fill(c, deadline);
      if (got == WS_CLIENT_CLOSED)
        c->closed = true;
      if (got <= 0)
        return (int)got;
      continue;
    }
    switch (opcode) {
    case WS_OP_PING:
      c->pings++;
      if (!c->close_sent && (rc = ws_client_send_frame(c, WS_OP_PONG, true, true, p, n)) != 0)
        return rc;
      continue;
    case WS_OP_PONG:
      memcpy(c->ctl, p, n);
      c->ctl[n] = '\0';
      m->opcode = WS_OP_PONG;
      m->data = c->ctl;
      m->len = n;
      return WS_CLIENT_OK;
    case WS_OP_CLOSE:
      return handle_close(c, p, n, m);
    case WS_OP_TEXT:
    case WS_OP_BINARY:
      if (c->mop >= 0)
        return WS_CLIENT_PROTOCOL; /* a new message inside a fragmented one */
      c->mop = opcode;
      c->mlen = 0;
      break;
    case WS_OP_CONT:
      if (c->mop < 0)
        return WS_CLIENT_PROTOCOL;
      break;
    default:
      return WS_CLIENT_PROTOCOL;
    }
    if ((rc = msg_append(c, p, n)) != WS_CLIENT_OK)
      return rc;
    if (fin) {
      m->opcode = (ws_opcode)c->mop;
      m->data = c->msg;
      m->len = c->mlen;
      c->mop = -1;
      return WS_CLIENT_OK;
    }
  }
}

int ws_client_wait_eof(ws_client *c, int timeout_ms) {
  uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
  for (;;) {
    c->rpos = c->rlen = 0; /* discard */
    long got = fill(c, deadline);
    if (got == WS_CLIENT_CLOSED) {
      c->closed = true;
      return WS_CLIENT_OK;
    }
    if (got < 0)
      return (int)got;
  }
}

int ws_client_close(ws_client *c, uint16_t code, const char *reason, ws_message *m,
                    int timeout_ms) {
  ws_message scratch;
  if (m == NULL)
    m = &scratch;
  memset(m, 0, sizeof(*m));
  uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
  if (!c->close_sent) {
    int rc = send_close_frame(c, code, reason);
    if (rc != WS_CLIENT_OK && !c->closed)
      return rc;
  }
  while (!c->closed) {
    int rc = ws_client_recv(c, m, remaining(deadline));
    if (rc != WS_CLIENT_OK)
      return rc;
    /* Data frames that crossed our close are discarded. */
  }
  if (c->close_code != 0 && m->opcode != WS_OP_CLOSE) {
    m->opcode = WS_OP_CLOSE;
    m->close_code = c->close_code;
    memcpy(m->close_reason, c->close_reason, sizeof(m->close_reason));
  }
  if (m->opcode != WS_OP_CLOSE)
    return WS_CLIENT_CLOSED; /* EOF without a close frame */
  return ws_client_wait_eof(c, remaining(deadline));
}
