/*
 * api_idem: Idempotency-Key support for wsgate-api, stored in Redis so that every instance of
 * the stateless service sees it: key <prefix>api:idem:{<api key name>:<Idempotency-Key>}, a
 * string "pending <body hash>" while the request runs (TTL 60 s: a crashed instance's claim
 * expires), then "done <body hash> <commands>" for --idempotency-ttl (24 h). One key per
 * request, hash-tagged, so the layout works on Redis Cluster.
 *
 * A retried request with the same key and body is answered 202 again without producing
 * (`duplicate: true`); the same key with another body is refused (422); while the first is in
 * flight the retry gets 409.
 *
 * Threads: any (the connections are api_redis', per thread).
 */
#ifndef API_IDEM_H
#define API_IDEM_H

#include <stddef.h>
#include <stdint.h>

#include "api_redis.h"

typedef struct api_idem api_idem;

/* `redis` is borrowed for the life of the result; `ttl_ms` is a finished request's record's. */
int api_idem_create(api_idem **out, api_redis *redis, uint64_t ttl_ms, char *err, size_t errlen);
void api_idem_destroy(api_idem *d); /* NULL is a no-op */

typedef enum {
  API_IDEM_NEW,      /* claimed: go ahead, then api_idem_done() or api_idem_release() */
  API_IDEM_DONE,     /* already accepted: *count commands */
  API_IDEM_PENDING,  /* the same key is being processed now */
  API_IDEM_MISMATCH, /* the key was used with another body */
  API_IDEM_ERROR,    /* Redis failed: `why` */
} api_idem_state;

/* `idem` is the header's value (checked by the caller: 1..128 printable ASCII); `hash` the body's
 * digest as hex. */
api_idem_state api_idem_claim(api_idem *d, const char *keyname, const char *idem, const char *hash,
                              size_t *count, char *why, size_t whylen);
/* Records success (`count` commands). Returns 0, or -1 with why (the claim then expires). */
int api_idem_done(api_idem *d, const char *keyname, const char *idem, const char *hash,
                  size_t count, char *why, size_t whylen);
/* Drops the claim after a failure so a retry can proceed. */
void api_idem_release(api_idem *d, const char *keyname, const char *idem);

#endif
