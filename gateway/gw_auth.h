/*
 * gw_auth: the token verifier's configuration as the gateway runs it: the key set built from
 * --jwt-secret(-file), --jwt-key-file, --jwt-jwks-file and --jwt-jwks-url, and the policy
 * (--jwt-algorithms,
 * --jwt-issuer, --jwt-audience, --jwt-user-claim, --jwt-leeway) in one gw_jwt_config.
 *
 * Key rotation: a JWKS URL fetched on another thread (or a reload) gives a new gw_keyset that is
 * swapped into the config on the loop thread; gw_jwt_config borrows the set only for the duration
 * of one verify call, so a caller keeps the config's pointer, never a copy of it.
 *
 * Threads: created and destroyed on the main thread; read and swapped on the loop thread; the
 * JWKS URL is fetched on a thread of its own (gw_jwks_fetch).
 */
#ifndef GW_AUTH_H
#define GW_AUTH_H

#include <stddef.h>

#include "gw_config.h"
#include "gw_jwt.h"
#include "wsg_metrics.h"

struct ev_loop;

typedef struct gw_auth gw_auth;

/* Loads every key file cfg names and logs what was loaded. Returns 0 with *out set (caller
 * destroys), or -1 with the file and the problem in err. cfg: borrowed for the auth's life. */
int gw_auth_create(gw_auth **out, const gw_config *cfg, struct ev_loop *loop, wsg_metrics *metrics,
                   char *err, size_t errlen);

/* NULL is a no-op. Joins the JWKS fetch thread. */
void gw_auth_destroy(gw_auth *a);

/* Once per process, on the main thread before any other thread starts: libcurl's global set-up
 * (curl_global_init is not thread-safe). 0, or -1 with a message. */
int gw_auth_global_init(char *err, size_t errlen);

/* Loop thread: a token named a kid no key has; with --jwt-jwks-url, the URL is fetched again soon
 * (rate-limited: --jwt-jwks-min-interval). auth: a gw_auth (void * to serve as a callback). */
void gw_auth_unknown_kid(void *auth);

/* Loop thread: reads the key files again (--jwt-secret-file, --jwt-key-file, --jwt-jwks-file)
 * and swaps the new keys in. 0, or -1 with the file and the problem in err and the keys in use
 * unchanged. */
int gw_auth_reload(gw_auth *a, char *err, size_t errlen);

/* The metric table (always registered, so /metrics is the same with or without a URL). */
extern const wsg_metric_table gw_auth_metric_table;

/* The verifier configuration; valid until gw_auth_destroy. */
const gw_jwt_config *gw_auth_jwt(const gw_auth *a);

#endif
