/*
 * gw_auth: builds the gateway's gw_jwt_config from its options (gw_auth.h).
 *
 * Threads: main thread (create, destroy); the result is read on the loop thread.
 */
#include "gw_auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_keyset.h"
#include "wsg_log.h"

struct gw_auth {
  gw_keyset *keys; /* one reference, ours */
  gw_jwt_config jwt;
};

/* "RS256, ES256" for the start-up log. */
static void algs_text(uint32_t algs, char *buf, size_t cap) {
  size_t n = 0;
  buf[0] = '\0';
  for (int a = 0; a < GW_JWT_ALG_COUNT; a++)
    if (algs & (1u << a))
      n += (size_t)snprintf(buf + n, n < cap ? cap - n : 0, "%s%s", n ? ", " : "",
                            gw_jwt_alg_name((gw_jwt_alg)a));
}

/* Every key source the options name, each error prefixed with its option (the file is in it). */
static int add_keys(gw_keyset *ks, const gw_config *cfg, char *err, size_t errlen) {
  char kerr[512];
  if (cfg->jwt_key &&
      gw_keyset_add_secret(ks, cfg->jwt_key, cfg->jwt_key_len, NULL, kerr, sizeof kerr) != 0) {
    snprintf(err, errlen, "--jwt-secret: %s", kerr);
    return -1;
  }
  if (cfg->jwt_key_file && gw_keyset_add_pem_file(ks, cfg->jwt_key_file, kerr, sizeof kerr) != 0) {
    snprintf(err, errlen, "--jwt-key-file %s", kerr);
    return -1;
  }
  if (cfg->jwt_jwks_file &&
      gw_keyset_add_jwks_file(ks, cfg->jwt_jwks_file, kerr, sizeof kerr) != 0) {
    snprintf(err, errlen, "--jwt-jwks-file %s", kerr);
    return -1;
  }
  return 0;
}

int gw_auth_create(gw_auth **out, const gw_config *cfg, char *err, size_t errlen) {
  *out = NULL;
  gw_auth *a = calloc(1, sizeof *a);
  if (!a || !(a->keys = gw_keyset_create())) {
    free(a);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  char kerr[512];
  if (add_keys(a->keys, cfg, err, errlen) != 0) {
    gw_auth_destroy(a);
    return -1;
  }
  if (gw_jwt_algs_parse(cfg->jwt_algorithms, &a->jwt.algs, kerr, sizeof kerr) != GW_JWT_OK) {
    snprintf(err, errlen, "--jwt-algorithms: %s", kerr);
    gw_auth_destroy(a);
    return -1;
  }
  a->jwt.keys = a->keys;
  a->jwt.audience = cfg->jwt_audience;
  a->jwt.user_claim = cfg->jwt_user_claim;
  a->jwt.leeway_s = (uint32_t)(cfg->jwt_leeway_ms / 1000);
  a->jwt.issuers = cfg->jwt_issuer;
  char algs[160];
  algs_text(a->jwt.algs, algs, sizeof algs);
  WSG_INFO("auth", "JWT: %zu key(s), algorithms %s, issuer %s", gw_keyset_count(a->keys), algs,
           cfg->jwt_issuer && cfg->jwt_issuer[0] ? cfg->jwt_issuer : "(not checked)");
  *out = a;
  return 0;
}

void gw_auth_destroy(gw_auth *a) {
  if (!a)
    return;
  gw_keyset_unref(a->keys);
  free(a);
}

const gw_jwt_config *gw_auth_jwt(const gw_auth *a) {
  return &a->jwt;
}
