/*
 * gw_auth: the token verifier's configuration as the gateway runs it: the key set built from
 * --jwt-secret(-file), --jwt-key-file and --jwt-jwks-file, and the policy (--jwt-algorithms,
 * --jwt-issuer, --jwt-audience, --jwt-user-claim, --jwt-leeway) in one gw_jwt_config.
 *
 * This is where key rotation belongs: a reload (SIGHUP, a changed file, a JWKS URL fetched on
 * another thread) builds a new gw_keyset and swaps it in on the loop thread; gw_jwt_config
 * borrows the set only for the duration of one verify call.
 *
 * Threads: created and destroyed on the main thread; read on the loop thread.
 */
#ifndef GW_AUTH_H
#define GW_AUTH_H

#include <stddef.h>

#include "gw_config.h"
#include "gw_jwt.h"

typedef struct gw_auth gw_auth;

/* Loads every key file cfg names and logs what was loaded. Returns 0 with *out set (caller
 * destroys), or -1 with the file and the problem in err. cfg: borrowed for the auth's life. */
int gw_auth_create(gw_auth **out, const gw_config *cfg, char *err, size_t errlen);

/* NULL is a no-op. */
void gw_auth_destroy(gw_auth *a);

/* The verifier configuration; valid until gw_auth_destroy. */
const gw_jwt_config *gw_auth_jwt(const gw_auth *a);

#endif
