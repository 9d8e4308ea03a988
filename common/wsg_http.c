/*
 * wsg_http: the HTTP server of wsgate's programs, on GNU libmicrohttpd (see wsg_http.h).
 *
 * Why a library: request parsing is where hostile bytes arrive first; libmicrohttpd is a GNU
 * project packaged by Debian (security updates come with the distribution), handles keep-alive,
 * chunked bodies, HEAD, pipelining, TLS (GnuTLS) and connection limits, and has been fuzzed for
 * years. Our part is routing and the listening socket (so bind errors keep their actionable
 * messages and port 0 can be read back).
 *
 * Threads: wsg_http_start() and wsg_http_stop() run on the program's main thread; libmicrohttpd's
 * threads (one, or a pool of `threads` on epoll) run everything else, with every signal blocked:
 * they call `ready` and `health`, render the metrics and call the handler. wsg_http_resume() runs
 * on any thread; defer_mu orders it with the suspension (libmicrohttpd drops a resume that comes
 * before its suspend, which would leave the request waiting for ever).
 */
#include "wsg_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "wsg_log.h"

#define DEFAULT_MAX_CLIENTS 64
#define DEFAULT_MAX_HEADER  4096
#define DEFAULT_MAX_BODY    (1u << 20)
#define DEFAULT_TIMEOUT_S   5

struct wsg_http {
  wsg_http_options opts;
  char *addr; /* owned copy of opts.addr */
  char *name; /* owned copy of opts.name */
  int listen_fd;
  int port;
  struct MHD_Daemon *d;
  pthread_mutex_t defer_mu; /* req_state's suspended/resumed of deferred requests */
};

/* Per request: the body read so far (handler requests only), and a deferred answer. Freed when
 * the request completes; a deferred one completes only after its resume (it is wsg_http_deferred).
 */
typedef struct {
  wsg_http *h;
  struct MHD_Connection *conn;
  bool started;
  bool too_large;
  uint8_t *body;
  size_t len, cap;
  wsg_http_finish_fn finish; /* set by wsg_http_defer; cleared once the answer is given */
  void *ctx;
  bool suspended, resumed; /* under h->defer_mu */
} req_state;

/* ---------------------------------------------------------------------------------------------
 * Responses */

const char *wsg_http_status_text(int status) {
  switch (status) {
  case 200:
    return "OK";
  case 202:
    return "Accepted";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 408:
    return "Request Timeout";
  case 409:
    return "Conflict";
  case 413:
    return "Content Too Large";
  case 415:
    return "Unsupported Media Type";
  case 429:
    return "Too Many Requests";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 503:
    return "Service Unavailable";
  default:
    return "Unknown";
  }
}

/* Queues one response; `close` asks libmicrohttpd to close the connection after it. */
static enum MHD_Result respond(struct MHD_Connection *conn, int status, const char *type,
                               const void *body, size_t len, bool close_after,
                               const char *(*extra)[2]) {
  struct MHD_Response *r =
      MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
  if (!r)
    return MHD_NO; /* out of memory: libmicrohttpd closes the connection, the client retries */
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
  MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  if (status == 405)
    MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
  if (close_after)
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
  for (size_t i = 0; extra && i < WSG_HTTP_MAX_HEADERS && extra[i][0]; i++)
    MHD_add_response_header(r, extra[i][0], extra[i][1]);
  enum MHD_Result rc = MHD_queue_response(conn, (unsigned)status, r);
  MHD_destroy_response(r);
  return rc;
}

static enum MHD_Result respond_text(struct MHD_Connection *conn, int status, const char *text) {
  return respond(conn, status, "text/plain; charset=utf-8", text, strlen(text), true, NULL);
}

/* /healthz and /readyz: 200 `ok`, or 503 "<bad>: <why>" when the daemon's callback says so. */
static enum MHD_Result respond_probe(struct MHD_Connection *conn, wsg_http_ready_fn fn, void *arg,
                                     const char *ok, const char *bad) {
  char why[256] = "";
  if (!fn || fn(arg, why, sizeof why) == 0)
    return respond_text(conn, 200, ok);
  char body[300];
  why[sizeof why - 1] = '\0';
  why[strcspn(why, "\r\n")] = '\0'; /* the reason is one line */
  snprintf(body, sizeof body, "%s: %s\n", bad, why[0] ? why : "(no reason given)");
  return respond_text(conn, 503, body);
}

/* The ops routes; false when `path` is none of them. */
static bool is_ops_path(const wsg_http *h, const char *path) {
  if (!strcmp(path, "/healthz") || !strcmp(path, "/readyz") || !strcmp(path, "/metrics"))
    return true;
  for (size_t i = 0; i < h->opts.nroutes; i++)
    if (!strcmp(path, h->opts.routes[i].path))
      return true;
  return false;
}

/* GET or HEAD of an ops path (HEAD: libmicrohttpd sends the headers, Content-Length included,
 * and leaves the body out). */
static enum MHD_Result serve_ops(wsg_http *h, struct MHD_Connection *conn, const char *path) {
  if (strcmp(path, "/healthz") == 0)
    return respond_probe(conn, h->opts.health, h->opts.health_arg, "ok\n", "unhealthy");
  if (strcmp(path, "/readyz") == 0)
    return respond_probe(conn, h->opts.ready, h->opts.ready_arg, "ready\n", "not ready");
  if (strcmp(path, "/metrics") == 0) {
    if (!h->opts.metrics)
      return respond_text(conn, 404, "not found\n");
    char *text = NULL;
    size_t len = 0;
    if (wsg_metrics_render(h->opts.metrics, &text, &len) != 0)
      return respond_text(conn, 500, "cannot render metrics: out of memory\n");
    enum MHD_Result rc =
        respond(conn, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, true, NULL);
    free(text);
    return rc;
  }
  for (size_t i = 0; i < h->opts.nroutes; i++) {
    const wsg_http_route *r = &h->opts.routes[i];
    if (strcmp(path, r->path) == 0)
      return respond(conn, 200, r->content_type, r->body, r->body_len, true, NULL);
  }
  return respond_text(conn, 404, "not found\n");
}

/* Appends a chunk of the body; past max_body the rest is read and dropped (answered 413). */
static void body_append(req_state *s, size_t max, const char *data, size_t n) {
  if (s->too_large || n == 0)
    return;
  if (s->len + n > max) {
    s->too_large = true;
    free(s->body);
    s->body = NULL;
    s->len = s->cap = 0;
    return;
  }
  if (s->len + n > s->cap) {
    size_t cap = s->cap ? s->cap : 4096;
    while (cap < s->len + n)
      cap *= 2;
    uint8_t *nb = realloc(s->body, cap);
    if (!nb) {
      s->too_large = true; /* answered 413: the client may retry with less */
      return;
    }
    s->body = nb;
    s->cap = cap;
  }
  memcpy(s->body + s->len, data, n);
  s->len += n;
}

/* The answer of a deferred request, from its finish callback. */
static enum MHD_Result answer_deferred(struct MHD_Connection *conn, req_state *s) {
  wsg_http_finish_fn finish = s->finish;
  s->finish = NULL;
  wsg_http_response resp = {.status = 500, .content_type = "application/json"};
  finish(s->ctx, &resp);
  enum MHD_Result rc = respond(conn, resp.status, resp.content_type, resp.body ? resp.body : "",
                               resp.body_len, false, (const char *(*)[2])resp.headers);
  free(resp.body);
  return rc;
}

wsg_http_deferred *wsg_http_defer(const wsg_http_request *req, wsg_http_finish_fn finish,
                                  void *ctx) {
  req_state *s = req->state;
  s->finish = finish;
  s->ctx = ctx;
  return (wsg_http_deferred *)s;
}

void wsg_http_resume(wsg_http_deferred *d) {
  req_state *s = (req_state *)d;
  wsg_http *h = s->h;
  pthread_mutex_lock(&h->defer_mu);
  s->resumed = true;
  if (s->suspended)
    MHD_resume_connection(s->conn); /* from here on `s` may be answered and freed */
  pthread_mutex_unlock(&h->defer_mu);
}

static enum MHD_Result serve_handler(wsg_http *h, struct MHD_Connection *conn, const char *method,
                                     const char *path, req_state *s) {
  if (s->too_large) {
    char msg[128];
    snprintf(msg, sizeof msg, "{\"error\":\"body too large: at most %zu bytes\"}\n",
             h->opts.max_body);
    return respond(conn, 413, "application/json", msg, strlen(msg), true, NULL);
  }
  wsg_http_request req = {.method = method,
                          .path = path,
                          .body = s->body,
                          .body_len = s->len,
                          .priv = conn,
                          .state = s};
  wsg_http_response resp = {.status = 500, .content_type = "application/json"};
  h->opts.handler(h->opts.handler_arg, &req, &resp);
  if (s->finish) {
    pthread_mutex_lock(&h->defer_mu);
    bool now = s->resumed;
    if (!now) {
      MHD_suspend_connection(conn);
      s->suspended = true;
    }
    pthread_mutex_unlock(&h->defer_mu);
    /* Suspended: libmicrohttpd calls on_request again once resumed. */
    return now ? answer_deferred(conn, s) : MHD_YES;
  }
  enum MHD_Result rc = respond(conn, resp.status, resp.content_type, resp.body ? resp.body : "",
                               resp.body_len, false, (const char *(*)[2])resp.headers);
  free(resp.body);
  return rc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **con_cls) {
  wsg_http *h = cls;
  req_state *s = *con_cls;
  if (!s) {
    s = calloc(1, sizeof *s);
    if (!s)
      return MHD_NO;
    s->h = h;
    s->conn = conn;
    *con_cls = s;
  }
  if (s->finish) /* a deferred request, resumed */
    return answer_deferred(conn, s);
  if (!url || url[0] != '/')
    return respond_text(conn, 400, "bad request\n");
  bool get = !strcmp(method, MHD_HTTP_METHOD_GET) || !strcmp(method, MHD_HTTP_METHOD_HEAD);
  if (!h->opts.handler || is_ops_path(h, url)) {
    if (!get)
      return respond_text(conn, 405, "method not allowed: use GET or HEAD\n");
    WSG_DEBUG("http", "%s %s", method, url);
    return serve_ops(h, conn, url);
  }
  if (!s->started) {
    /* First call: headers only. A declared length past the limit is refused before the body. */
    s->started = true;
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
    if (cl && strtoull(cl, NULL, 10) > h->opts.max_body) {
      s->too_large = true;
      return serve_handler(h, conn, method, url, s);
    }
    return MHD_YES;
  }
  if (*upload_size) {
    body_append(s, h->opts.max_body, upload_data, *upload_size);
    *upload_size = 0;
    return MHD_YES;
  }
  return serve_handler(h, conn, method, url, s);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  req_state *s = *con_cls;
  if (s && s->finish) { /* resumed, but closed before its answer (stopping): finish frees ctx */
    wsg_http_response resp = {.status = 500};
    s->finish(s->ctx, &resp);
    free(resp.body);
  }
  if (s) {
    free(s->body);
    free(s);
    *con_cls = NULL;
  }
}

const char *wsg_http_header(const wsg_http_request *req, const char *name) {
  return MHD_lookup_connection_value((struct MHD_Connection *)req->priv, MHD_HEADER_KIND, name);
}

const char *wsg_http_arg(const wsg_http_request *req, const char *name, size_t *len) {
  const char *v = NULL;
  size_t n = 0;
  if (MHD_lookup_connection_value_n((struct MHD_Connection *)req->priv, MHD_GET_ARGUMENT_KIND, name,
                                    strlen(name), &v, &n) != MHD_YES)
    return NULL;
  if (len)
    *len = v ? n : 0;
  return v ? v : ""; /* "?name" without "=": present, empty */
}

typedef struct {
  const char **names;
  size_t max, n;
} arg_names;

static enum MHD_Result collect_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value) {
  (void)kind;
  (void)value;
  arg_names *a = cls;
  if (a->n < a->max)
    a->names[a->n] = key;
  a->n++;
  return MHD_YES;
}

size_t wsg_http_arg_names(const wsg_http_request *req, const char **names, size_t max) {
  arg_names a = {names, max, 0};
  MHD_get_connection_values((struct MHD_Connection *)req->priv, MHD_GET_ARGUMENT_KIND, collect_arg,
                            &a);
  return a.n;
}

void wsg_http_peer(const wsg_http_request *req, char *buf, size_t buflen) {
  buf[0] = '\0';
  const union MHD_ConnectionInfo *ci = MHD_get_connection_info((struct MHD_Connection *)req->priv,
                                                               MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  if (!ci || !ci->client_addr)
    return;
  const struct sockaddr *sa = ci->client_addr;
  if (sa->sa_family == AF_INET)
    inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, buf,
              (socklen_t)buflen);
  else if (sa->sa_family == AF_INET6)
    inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, buf,
              (socklen_t)buflen);
}

/* libmicrohttpd's own messages (protocol errors of clients, mostly): debug level. */
__attribute__((format(printf, 2, 0))) static void mhd_log(void *cls, const char *fmt, va_list ap) {
  if (WSG_LOG_DEBUG < wsg_log_min_level)
    return;
  char line[512];
  vsnprintf(line, sizeof line, fmt, ap);
  line[strcspn(line, "\r\n")] = '\0';
  WSG_DEBUG("http", "libmicrohttpd: %s", line);
}

/* ---------------------------------------------------------------------------------------------
 * Start and stop */

static int open_listener(wsg_http *h, char *err, size_t errlen) {
  char port[16], shown[300];
  /* Numeric only: a name would mean a DNS lookup at start-up, which can hang for the resolver's
   * timeout; "localhost" is the one name people type. */
  const char *addr = strcmp(h->addr, "localhost") == 0 ? "127.0.0.1" : h->addr;
  snprintf(port, sizeof port, "%d", h->opts.port);
  snprintf(shown, sizeof shown, strchr(addr, ':') ? "[%s]:%d" : "%s:%d", addr, h->opts.port);
  struct addrinfo hints = {.ai_family = AF_UNSPEC,
                           .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_PASSIVE | AI_NUMERICSERV | AI_NUMERICHOST};
  struct addrinfo *res = NULL;
  int gai = getaddrinfo(addr, port, &hints, &res);
  if (gai != 0) {
    snprintf(err, errlen, "cannot listen on %s: %s (set --http-addr to an IP address)", shown,
             gai_strerror(gai));
    return -1;
  }
  int fd = -1, saved = 0;
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      saved = errno;
      continue;
    }
    int one = 1;
    /* A restarted daemon must rebind at once even with old connections in TIME_WAIT. */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, (int)h->opts.max_clients) == 0)
      break;
    saved = errno;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) {
    const char *hint = saved == EADDRINUSE ? " (is another wsgate running? set --http-port)"
                       : saved == EACCES   ? " (ports below 1024 need privileges; set --http-port)"
                       : saved == EADDRNOTAVAIL
                           ? " (no interface has this address; set --http-addr)"
                           : "";
    snprintf(err, errlen, "cannot listen on %s: %s%s", shown, strerror(saved), hint);
    return -1;
  }
  struct sockaddr_storage ss = {0};
  socklen_t sl = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
    snprintf(err, errlen, "cannot read the bound port of %s: %s", shown, strerror(errno));
    close(fd);
    return -1;
  }
  h->port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                     : ntohs(((struct sockaddr_in *)&ss)->sin_port);
  h->listen_fd = fd;
  return 0;
}

int wsg_http_start(wsg_http **out, const wsg_http_options *opts, char *err, size_t errlen) {
  *out = NULL;
  if (opts->port < 0 || opts->port > 65535) {
    snprintf(err, errlen, "http port %d is out of range (0..65535)", opts->port);
    return -1;
  }
  if (!opts->tls_cert_pem != !opts->tls_key_pem) {
    snprintf(err, errlen, "TLS needs both a certificate and a key");
    return -1;
  }
  wsg_http *h = calloc(1, sizeof *h);
  if (!h) {
    snprintf(err, errlen, "out of memory starting the HTTP server");
    return -1;
  }
  h->opts = *opts;
  h->listen_fd = -1;
  pthread_mutex_init(&h->defer_mu, NULL);
  h->addr = strdup(opts->addr && opts->addr[0] ? opts->addr : "0.0.0.0");
  h->name = strdup(opts->name ? opts->name : "operations endpoint");
  if (!h->addr || !h->name) {
    snprintf(err, errlen, "out of memory starting the HTTP server");
    goto fail;
  }
  h->opts.addr = h->addr;
  h->opts.name = h->name;
  if (!h->opts.max_body)
    h->opts.max_body = DEFAULT_MAX_BODY;
  if (!h->opts.max_header)
    h->opts.max_header = DEFAULT_MAX_HEADER;
  if (!h->opts.max_clients)
    h->opts.max_clients = DEFAULT_MAX_CLIENTS;
  if (!h->opts.timeout_s)
    h->opts.timeout_s = DEFAULT_TIMEOUT_S;
  if (open_listener(h, err, errlen) != 0)
    goto fail;

  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG | MHD_USE_AUTO;
  if (h->opts.handler)
    flags |= MHD_ALLOW_SUSPEND_RESUME;
  if (h->opts.tls_cert_pem)
    flags |= MHD_USE_TLS;
  /* The connection's memory pool holds the request head and the read buffer; twice the header
   * limit leaves room for both, and a head past it is answered 431 by libmicrohttpd. */
  size_t pool = h->opts.max_header * 2;
  struct MHD_OptionItem tls[3] = {{MHD_OPTION_END, 0, NULL}};
  if (h->opts.tls_cert_pem) {
    tls[0] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, (void *)h->opts.tls_cert_pem};
    tls[1] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, (void *)h->opts.tls_key_pem};
    pool += 16384; /* a TLS record */
  }
  /* The threads start with every signal blocked, so SIGTERM and SIGINT reach the main thread. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  h->d = MHD_start_daemon(
      flags, 0, NULL, NULL, on_request, h, MHD_OPTION_LISTEN_SOCKET, h->listen_fd,
      MHD_OPTION_CONNECTION_LIMIT, h->opts.max_clients, MHD_OPTION_CONNECTION_TIMEOUT,
      h->opts.timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, pool, MHD_OPTION_NOTIFY_COMPLETED,
      on_completed, NULL, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_THREAD_POOL_SIZE,
      h->opts.threads > 1 ? h->opts.threads : 0, MHD_OPTION_ARRAY, tls, MHD_OPTION_END);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (!h->d) {
    snprintf(err, errlen, "cannot start the %s (libmicrohttpd refused the options%s)", h->name,
             h->opts.tls_cert_pem ? "; is the TLS certificate and key valid PEM?" : "");
    goto fail;
  }
  WSG_INFO("http", "%s on http%s://%s%s%s:%d", h->name, h->opts.tls_cert_pem ? "s" : "",
           strchr(h->addr, ':') ? "[" : "", h->addr, strchr(h->addr, ':') ? "]" : "", h->port);
  *out = h;
  return 0;
fail:
  if (h->listen_fd >= 0)
    close(h->listen_fd);
  free(h->addr);
  free(h->name);
  pthread_mutex_destroy(&h->defer_mu);
  free(h);
  return -1;
}

int wsg_http_port(const wsg_http *h) {
  return h->port;
}

void wsg_http_stop(wsg_http *h) {
  if (!h)
    return;
  /* Closes the listening socket too (libmicrohttpd owns it once started) and every client. */
  MHD_stop_daemon(h->d);
  free(h->addr);
  free(h->name);
  pthread_mutex_destroy(&h->defer_mu);
  free(h);
}
