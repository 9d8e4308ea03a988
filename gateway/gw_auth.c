/*
 * gw_auth: builds the gateway's gw_jwt_config from its options and keeps its key set current
 * (gw_auth.h).
 *
 * The set in use is made of two parts that change at different times: the keys of the files
 * (--jwt-secret(-file), --jwt-key-file, --jwt-jwks-file) and the last good keys of --jwt-jwks-url.
 * Each is an immutable gw_keyset; when either changes, a new combined set is built and swapped
 * into jwt.keys on the loop thread, where every verification runs (so the old one can go at once).
 *
 * Threads: main/loop thread (create, destroy, swaps); the JWKS fetcher hands sets over through
 * gw_jwks_fetch's ev_async.
 */
#include "gw_auth.h"

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_jwks_fetch.h"
#include "gw_keyset.h"
#include "wsg_log.h"

struct gw_auth {
  const gw_config *cfg;
  gw_keyset *files; /* the files' keys: one reference, ours */
  gw_keyset *url;   /* the URL's last good keys, or NULL: one reference, ours */
  gw_keyset *keys;  /* files + url, published in jwt.keys: one reference, ours */
  gw_jwt_config jwt;
  gw_jwks_fetch *fetch; /* NULL without --jwt-jwks-url */

  wsg_counter *m_fetch[GW_JWKS_RESULT_COUNT];
  wsg_gauge *m_last_success, *m_keys, *m_url_keys;
};

#define FETCH_HELP                                                                                 \
  "JWKS fetches from --jwt-jwks-url by result (ok: swapped in; any other: the last good keys "     \
  "stay in use)."
#define FETCH_ROW(name, label, text)                                                               \
  WSG_COUNTER_ROW(gw_auth, m_fetch[GW_JWKS_##name], "wsgate_gateway_jwks_fetches_total",           \
                  FETCH_HELP, "result=\"" label "\""),
static const wsg_metric_def metric_rows[] = {
    GW_JWKS_RESULTS(FETCH_ROW) WSG_GAUGE_ROW(
        gw_auth, m_last_success, "wsgate_gateway_jwks_last_success_seconds",
        "Unix time of the last good fetch of --jwt-jwks-url (0: none yet, or no URL).", NULL),
    WSG_GAUGE_ROW(gw_auth, m_url_keys, "wsgate_gateway_jwks_keys",
                  "Keys of the last good --jwt-jwks-url document in use.", NULL),
    WSG_GAUGE_ROW(gw_auth, m_keys, "wsgate_gateway_jwt_keys",
                  "Keys tokens are verified with: the files' and the JWKS URL's.", NULL),
};
#undef FETCH_ROW

const wsg_metric_table gw_auth_metric_table = WSG_METRIC_TABLE("gateway/gw_auth.c", metric_rows);

/* "RS256, ES256" for the start-up log. */
static void algs_text(uint32_t algs, char *buf, size_t cap) {
  size_t n = 0;
  buf[0] = '\0';
  for (int a = 0; a < GW_JWT_ALG_COUNT; a++)
    if (algs & (1u << a))
      n += (size_t)snprintf(buf + n, n < cap ? cap - n : 0, "%s%s", n ? ", " : "",
                            gw_jwt_alg_name((gw_jwt_alg)a));
}

/* Every key file the options name, each error prefixed with its option (the file is in it). */
static int add_file_keys(gw_keyset *ks, const gw_config *cfg, const uint8_t *secret,
                         size_t secret_len, char *err, size_t errlen) {
  char kerr[512];
  if (secret && gw_keyset_add_secret(ks, secret, secret_len, NULL, kerr, sizeof kerr) != 0) {
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

/* Builds files + url into a new set and publishes it. -1 (logged, the old set kept) on failure:
 * the two parts together may pass the 64-key bound. */
static int publish(gw_auth *a) {
  gw_keyset *ks = gw_keyset_create();
  char kerr[512] = "out of memory";
  if (!ks || gw_keyset_add_set(ks, a->files, "key files", kerr, sizeof kerr) != 0 ||
      (a->url && gw_keyset_add_set(ks, a->url, "--jwt-jwks-url", kerr, sizeof kerr) != 0)) {
    gw_keyset_unref(ks);
    WSG_ERROR("auth", "cannot combine the key sets (%s); keeping the keys in use", kerr);
    return -1;
  }
  gw_keyset_unref(a->keys);
  a->keys = ks;
  a->jwt.keys = ks;
  wsg_gauge_set(a->m_keys, (int64_t)gw_keyset_count(ks));
  wsg_gauge_set(a->m_url_keys, a->url ? (int64_t)gw_keyset_count(a->url) : 0);
  return 0;
}

/* Loop thread: the fetcher's new set (our reference). */
static void on_url_keys(void *arg, gw_keyset *ks) {
  gw_auth *a = arg;
  gw_keyset *old = a->url;
  a->url = ks;
  if (publish(a) != 0) {
    a->url = old;
    gw_keyset_unref(ks);
    return;
  }
  gw_keyset_unref(old);
}

int gw_auth_create(gw_auth **out, const gw_config *cfg, struct ev_loop *loop, wsg_metrics *metrics,
                   char *err, size_t errlen) {
  *out = NULL;
  gw_auth *a = calloc(1, sizeof *a);
  if (!a || !(a->files = gw_keyset_create())) {
    free(a);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  a->cfg = cfg;
  wsg_metrics_register_table(metrics, &gw_auth_metric_table, a);
  char kerr[512];
  if (add_file_keys(a->files, cfg, cfg->jwt_key, cfg->jwt_key_len, err, errlen) != 0 ||
      publish(a) != 0) {
    gw_auth_destroy(a);
    return -1;
  }
  if (gw_jwt_algs_parse(cfg->jwt_algorithms, &a->jwt.algs, kerr, sizeof kerr) != GW_JWT_OK) {
    snprintf(err, errlen, "--jwt-algorithms: %s", kerr);
    gw_auth_destroy(a);
    return -1;
  }
  a->jwt.audience = cfg->jwt_audience;
  a->jwt.user_claim = cfg->jwt_user_claim;
  a->jwt.leeway_s = (uint32_t)(cfg->jwt_leeway_ms / 1000);
  a->jwt.issuers = cfg->jwt_issuer;
  if (cfg->jwt_jwks_url) {
    gw_jwks_fetch_options fo = {
        .url = cfg->jwt_jwks_url,
        .ca_file = cfg->jwt_jwks_ca_file,
        .refresh_ms = cfg->jwt_jwks_refresh_ms,
        .min_interval_ms = cfg->jwt_jwks_min_interval_ms,
        .loop = loop,
        .on_keys = on_url_keys,
        .arg = a,
        .m_last_success = a->m_last_success,
    };
    memcpy(fo.m_results, a->m_fetch, sizeof fo.m_results);
    if (gw_jwks_fetch_create(&a->fetch, &fo, err, errlen) != 0) {
      gw_auth_destroy(a);
      return -1;
    }
  }
  char algs[160];
  algs_text(a->jwt.algs, algs, sizeof algs);
  WSG_INFO("auth", "JWT: %zu key(s)%s, algorithms %s, issuer %s", gw_keyset_count(a->keys),
           cfg->jwt_jwks_url ? " (with --jwt-jwks-url's)" : "", algs,
           cfg->jwt_issuer && cfg->jwt_issuer[0] ? cfg->jwt_issuer : "(not checked)");
  *out = a;
  return 0;
}

void gw_auth_destroy(gw_auth *a) {
  if (!a)
    return;
  gw_jwks_fetch_destroy(a->fetch);
  gw_keyset_unref(a->keys);
  gw_keyset_unref(a->url);
  gw_keyset_unref(a->files);
  free(a);
}

const gw_jwt_config *gw_auth_jwt(const gw_auth *a) {
  return &a->jwt;
}

void gw_auth_unknown_kid(void *auth) {
  gw_auth *a = auth;
  gw_jwks_fetch_request(a->fetch);
}

int gw_auth_global_init(char *err, size_t errlen) {
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    snprintf(err, errlen, "libcurl failed to initialise");
    return -1;
  }
  return 0;
}

int gw_auth_reload(gw_auth *a, char *err, size_t errlen) {
  const gw_config *cfg = a->cfg;
  const uint8_t *secret = cfg->jwt_key;
  size_t slen = cfg->jwt_key_len;
  uint8_t *fresh = NULL;
  if (cfg->jwt_secret_file) {
    if (gw_config_read_secret_file(cfg->jwt_secret_file, &fresh, &slen, err, errlen) != 0)
      return -1;
    secret = fresh;
  }
  gw_keyset *files = gw_keyset_create();
  int rc = files ? add_file_keys(files, cfg, secret, slen, err, errlen) : -1;
  if (!files)
    snprintf(err, errlen, "out of memory");
  if (fresh) {
    OPENSSL_cleanse(fresh, slen);
    free(fresh);
  }
  if (rc != 0) {
    gw_keyset_unref(files);
    return -1;
  }
  gw_keyset *old = a->files;
  a->files = files;
  if (publish(a) != 0) {
    a->files = old;
    gw_keyset_unref(files);
    snprintf(err, errlen, "the files' and the JWKS URL's keys together are more than %d",
             GW_KEYSET_MAX_KEYS);
    return -1;
  }
  gw_keyset_unref(old);
  WSG_INFO("auth", "JWT key files reloaded: %zu key(s) in use", gw_keyset_count(a->keys));
  return 0;
}
