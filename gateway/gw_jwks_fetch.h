/*
 * gw_jwks_fetch: keeps a JWKS document fetched from an HTTPS URL (--jwt-jwks-url), on a thread of
 * its own so a slow or dead identity provider never stalls the event loop.
 *
 * The thread fetches with libcurl (HTTPS only, bounded size and time), parses the document into a
 * new gw_keyset there, and hands a good set to the loop thread through an ev_async; the loop
 * thread's on_keys then swaps it in. A failed fetch hands nothing over: the last good set stays
 * in use. Fetches happen every `refresh_ms`, every `min_interval_ms` after a failure, and on
 * request (an unknown "kid" arrived), at most once per `min_interval_ms`, so a flood of tokens with
 * made-up kids costs the provider one request per interval.
 *
 * Threads: create, request and destroy on the loop thread; on_keys runs on the loop thread; the
 * fetch thread touches only its own state, the mutex-guarded hand-over slot and the metrics.
 */
#ifndef GW_JWKS_FETCH_H
#define GW_JWKS_FETCH_H

#include <stdint.h>

#include "gw_keyset.h"
#include "wsg_metrics.h"

struct ev_loop;

/* X-macro: name, metric label, meaning. One counter per result (wsgate_gateway_jwks_fetches_total).
 */
#define GW_JWKS_RESULTS(X)                                                                         \
  X(OK, "ok", "a document with usable keys was fetched and swapped in")                            \
  X(NETWORK, "network", "no HTTP answer: DNS, connect, TLS (certificate) or time-out")             \
  X(HTTP_STATUS, "http_status", "an answer other than 200")                                        \
  X(BAD_DOCUMENT, "bad_document", "the body is not a JWKS document with a usable signing key")

typedef enum {
#define GW_JWKS_RESULT_ENUM(name, label, text) GW_JWKS_##name,
  GW_JWKS_RESULTS(GW_JWKS_RESULT_ENUM)
#undef GW_JWKS_RESULT_ENUM
      GW_JWKS_RESULT_COUNT
} gw_jwks_result;

typedef struct {
  const char *url;          /* borrowed, copied: https://... */
  const char *ca_file;      /* borrowed, copied; NULL: the system's trust store */
  uint64_t refresh_ms;      /* fetch this often */
  uint64_t min_interval_ms; /* at most one requested fetch (and retry after a failure) this often */
  struct ev_loop *loop;     /* borrowed */
  /* Loop thread: a new good set; ks is the callee's reference. */
  void (*on_keys)(void *arg, gw_keyset *ks);
  void *arg;
  /* borrowed series (NULL accepted): one counter per result, the last success (Unix seconds) */
  wsg_counter *m_results[GW_JWKS_RESULT_COUNT];
  wsg_gauge *m_last_success;
} gw_jwks_fetch_options;

typedef struct gw_jwks_fetch gw_jwks_fetch;

/*
 * Fetches once synchronously (so the keys are there before the first client; a failure is only
 * logged: the thread retries) and starts the thread. Returns 0 with *out set (caller destroys),
 * or -1 with a message in err (no memory, no thread). When the first fetch succeeded, its set has
 * been given to on_keys before this returns. o: borrowed.
 */
int gw_jwks_fetch_create(gw_jwks_fetch **out, const gw_jwks_fetch_options *o, char *err,
                         size_t errlen);

/* Loop thread: a token named an unknown kid; fetch soon (rate-limited). */
void gw_jwks_fetch_request(gw_jwks_fetch *f);

/* Stops and joins the thread (waits for a fetch in progress, at most its time-out). NULL: no-op. */
void gw_jwks_fetch_destroy(gw_jwks_fetch *f);

#endif
