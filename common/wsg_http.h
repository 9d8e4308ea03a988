/*
 * wsg_http: the HTTP server of every wsgate program, on GNU libmicrohttpd (the only file that
 * includes microhttpd.h). Two uses:
 *
 * - the operations endpoint of a daemon: GET /healthz, /readyz and /metrics on a port of its own
 *   (kept off the WebSocket port so probes and scrapes never pass through the public balancer);
 * - an application handler (wsgate-api): any other method and path goes to `handler`, with the
 *   request body read up to `max_body` bytes (413 beyond).
 *
 * Threads: one thread of libmicrohttpd's serves every connection (epoll), or `threads` of them,
 * each with its share of the connections; at most `max_clients` (64) at once. A handler that waits
 * for something slow (the API, for Kafka's acknowledgement) defers its answer (wsg_http_defer):
 * the connection is suspended, holding no thread, until wsg_http_resume(). Every thread blocks
 * all signals. `ready`, `handler` and a deferred answer's `finish` run on those threads.
 *
 * Ops answers: GET or HEAD only (405 with Allow otherwise); /healthz 200 "ok" or 503 "unhealthy:
 * <why>"; /readyz 200 "ready" or 503 "not ready: <why>"; /metrics 200 in the Prometheus text format
 * 0.0.4 (404 without a registry); the extra routes; 404 for anything else; 400 for a malformed
 * request (a request line libmicrohttpd cannot split at all is dropped without an answer), 431 past
 * the header limit (4 KiB by default). A client idle for `timeout_s` (5 s), including one that has
 * not finished its request, is disconnected without an answer. Ops responses carry Content-Length
 * and Connection: close; handler responses keep the connection alive. With `max_clients` open, new
 * connections wait in the kernel's accept backlog (they are not reset) until a slot frees.
 */
#ifndef WSG_HTTP_H
#define WSG_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wsg_metrics.h"

typedef struct wsg_http wsg_http;

/*
 * Returns 0 when the daemon is ready (or, as `health`, alive), else nonzero and a one-line reason
 * in `why` (shown in the 503 body, e.g. "kafka: no broker reachable"). Runs on a server thread.
 */
typedef int (*wsg_http_ready_fn)(void *arg, char *why, size_t whylen);

/* An extra route, e.g. the browser demo page. Body and type are borrowed for the server's life. */
typedef struct {
  const char *path;
  const char *content_type;
  const char *body;
  size_t body_len;
} wsg_http_route;

/* A request as the application handler sees it; everything is borrowed for the call. */
typedef struct wsg_http_request wsg_http_request;
struct wsg_http_request {
  const char *method;
  const char *path; /* starts with '/', query cut off */
  const uint8_t *body;
  size_t body_len;
  const void *priv; /* the library's connection */
  void *state;      /* the library's request state (wsg_http_defer) */
};

/* A request header (case-insensitive name), or NULL. Valid for the handler call. */
const char *wsg_http_header(const wsg_http_request *req, const char *name);
/* The query argument `name`, percent-decoded, with its length in *len (may be NULL; the value may
 * hold a NUL byte, so compare strlen with *len), "" for "?name" alone, or NULL when absent (the
 * first one when repeated). Valid for the handler call. */
const char *wsg_http_arg(const wsg_http_request *req, const char *name, size_t *len);
/* The names of the query arguments, up to `max` of them into names[] (valid for the handler
 * call); returns how many there are (repeated ones counted each time). */
size_t wsg_http_arg_names(const wsg_http_request *req, const char **names, size_t max);
/* The peer's address as text ("127.0.0.1"), or "" if unknown. */
void wsg_http_peer(const wsg_http_request *req, char *buf, size_t buflen);

#define WSG_HTTP_MAX_HEADERS 3
/* What the handler answers. `body` is taken (freed with free()); headers are copied. */
typedef struct {
  int status;
  const char *content_type; /* static */
  char *body;
  size_t body_len;
  const char *headers[WSG_HTTP_MAX_HEADERS][2]; /* extra name/value pairs; NULL-terminated */
} wsg_http_response;

typedef void (*wsg_http_handler_fn)(void *arg, const wsg_http_request *req,
                                    wsg_http_response *resp);

/*
 * A deferred answer. The handler calls wsg_http_defer() and returns leaving `resp` alone; the
 * connection waits without a thread until wsg_http_resume(d) (exactly once, from any thread, even
 * before the handler has returned), then `finish(ctx, resp)` runs on a server thread and fills
 * the answer (it owns ctx: free it there). The request (its body, headers) stays valid until
 * then. Every deferred request must be resumed before wsg_http_stop().
 */
typedef struct wsg_http_deferred wsg_http_deferred;
typedef void (*wsg_http_finish_fn)(void *ctx, wsg_http_response *resp);
wsg_http_deferred *wsg_http_defer(const wsg_http_request *req, wsg_http_finish_fn finish,
                                  void *ctx);
void wsg_http_resume(wsg_http_deferred *d);

typedef struct {
  const char *addr;        /* listen address, e.g. "0.0.0.0", "::" or "127.0.0.1" (numeric, or
                              "localhost"); NULL or "" means "0.0.0.0"; copied */
  int port;                /* 0 picks a free port (see wsg_http_port) */
  wsg_metrics *metrics;    /* borrowed */
  wsg_http_ready_fn ready; /* may be NULL: always ready */
  void *ready_arg;
  wsg_http_ready_fn health; /* /healthz; may be NULL: always alive */
  void *health_arg;
  const wsg_http_route *routes; /* borrowed; may be NULL */
  size_t nroutes;
  const char *name; /* for logs and errors: "operations endpoint" by default; borrowed */
  /* The application side (all optional). */
  wsg_http_handler_fn handler; /* NULL: only the ops routes */
  void *handler_arg;
  size_t max_body;          /* handler bodies above this get 413; 0: 1 MiB */
  size_t max_header;        /* request line and headers; 0: 4 KiB */
  unsigned max_clients;     /* 0: 64 */
  unsigned timeout_s;       /* idle connection timeout; 0: 5 s */
  unsigned threads;         /* server threads; 0: 1 */
  const char *tls_cert_pem; /* both set: HTTPS; PEM text, copied by the library */
  const char *tls_key_pem;
} wsg_http_options;

/* Binds, then serves on new threads. On failure returns -1 and says why in `err`, e.g.
 * "cannot listen on 0.0.0.0:9090: Address already in use (is another wsgate running? set
 * --http-port)". */
int wsg_http_start(wsg_http **out, const wsg_http_options *opts, char *err, size_t errlen);
int wsg_http_port(const wsg_http *h); /* the bound port */
void wsg_http_stop(wsg_http *h);      /* stops the threads and frees; NULL is a no-op */
/* The reason phrase of an HTTP status ("Service Unavailable"; "Unknown" for others). Static. */
const char *wsg_http_status_text(int status);

#endif
