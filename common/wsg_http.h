/*
 * wsg_http: the operations endpoint of a daemon: GET /healthz, /readyz and /metrics over HTTP/1.1
 * on a port of its own (kept off the WebSocket port so probes and scrapes never pass through the
 * public balancer).
 *
 * A small server on its own thread: poll(2), at most 64 clients, requests up to 4 KiB, 5 s to send
 * a request, one response per connection. Nothing here touches the daemon's own threads: `ready`
 * reads state the daemon publishes with atomics.
 *
 * Answers: GET or HEAD only (405 with Allow otherwise); /healthz 200 "ok" or 503 "unhealthy:
 * <why>"; /readyz 200 "ready" or 503 "not ready: <why>"; /metrics 200 in the Prometheus text format
 * 0.0.4 (404 without a registry); the extra routes; 404 for anything else; 400 for a malformed
 * request line, 431 past 4 KiB, 408 after 5 s without a complete request. Every response has
 * Content-Length and Connection: close. With 64 clients open, new connections wait in the kernel's
 * accept backlog (they are not reset) until a slot frees. The thread blocks every signal.
 */
#ifndef WSG_HTTP_H
#define WSG_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "wsg_metrics.h"

typedef struct wsg_http wsg_http;

/*
 * Returns 0 when the daemon is ready (or, as `health`, alive), else nonzero and a one-line reason
 * in `why` (shown in the 503 body, e.g. "kafka: no broker reachable"). Runs on the HTTP thread.
 */
typedef int (*wsg_http_ready_fn)(void *arg, char *why, size_t whylen);

/* An extra route, e.g. the browser demo page. Body and type are borrowed for the server's life. */
typedef struct {
  const char *path;
  const char *content_type;
  const char *body;
  size_t body_len;
} wsg_http_route;

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
} wsg_http_options;

/* Binds, then serves on a new thread. On failure returns -1 and says why in `err`, e.g.
 * "cannot listen on 0.0.0.0:9090: Address already in use (is another wsgate running? set
 * --http-port)". */
int wsg_http_start(wsg_http **out, const wsg_http_options *opts, char *err, size_t errlen);
int wsg_http_port(const wsg_http *h); /* the bound port */
void wsg_http_stop(wsg_http *h);      /* joins the thread and frees; NULL is a no-op */
/* The reason phrase of an HTTP status ("Service Unavailable"; "Unknown" for others). Static. */
const char *wsg_http_status_text(int status);

/* A request line as wsg_http_parse_request() reads it; pointers into the parsed head. */
typedef struct {
  const char *method;
  const char *path; /* starts with '/', query and fragment cut off */
  bool head;        /* HEAD: answer without a body */
} wsg_http_request;

/*
 * Parses the request line of a request head (NUL-terminated; modified in place: the line and its
 * parts are NUL-terminated). Returns 0 for GET or HEAD with *req set, 405 for another method
 * (req->method set), 400 for a malformed line. Exposed for the unit tests and the fuzz target
 * (tests/fuzz/http_request_fuzz.c): the request comes from anyone who reaches the port.
 */
int wsg_http_parse_request(char *head, wsg_http_request *req);

#endif
