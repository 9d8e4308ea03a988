/*
 * gw_jwt: JWT verification and minting (gw_jwt.h lists what a token must satisfy); the signature
 * primitives are in gw_jwt_crypto.c, the keys in gw_keyset.c.
 *
 * Untrusted input is bounded before anything is decoded (GW_JWT_MAX_TOKEN), decoded into stack
 * buffers of that size, and parsed by jansson only for the small header and, after the signature
 * matched, the claims. jansson itself rejects invalid UTF-8, duplicate keys (we ask it to) and
 * trailing bytes after the JSON value.
 *
 * Threads: reentrant; no state of its own.
 */
#include "gw_jwt.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_b64url.h"
#include "gw_jwt_crypto.h"

/* Largest decoded segment: 3 bytes per 4 characters of the longest token. */
#define SEGMENT_MAX (GW_JWT_MAX_TOKEN / 4 * 3 + 3)

#define GW_JWT_ERR_STR(name, value, msg)                                                           \
  case value:                                                                                      \
    return msg;
const char *gw_jwt_strerror(int err) {
  switch (err) { GW_JWT_ERRNO_MAP(GW_JWT_ERR_STR) }
  return "unknown JWT error";
}
#undef GW_JWT_ERR_STR

#define GW_JWT_ERR_NAME(name, value, msg)                                                          \
  case value:                                                                                      \
    return "GW_JWT_" #name;
const char *gw_jwt_err_name(int err) {
  switch (err) { GW_JWT_ERRNO_MAP(GW_JWT_ERR_NAME) }
  return "GW_JWT_UNKNOWN";
}
#undef GW_JWT_ERR_NAME

/* --- algorithms ------------------------------------------------------------------------------- */

static const struct {
  const char *name;
  gw_key_type key;
} ALGS[GW_JWT_ALG_COUNT] = {
#define GW_JWT_ALG_ROW(name, fam, bits, key) [GW_JWT_ALG_##name] = {#name, GW_KEY_##key},
    GW_JWT_ALG_MAP(GW_JWT_ALG_ROW)
#undef GW_JWT_ALG_ROW
};

const char *gw_jwt_alg_name(gw_jwt_alg alg) {
  return (unsigned)alg < GW_JWT_ALG_COUNT ? ALGS[alg].name : "?";
}

gw_key_type gw_jwt_alg_key_type(gw_jwt_alg alg) {
  return (unsigned)alg < GW_JWT_ALG_COUNT ? ALGS[alg].key : GW_KEY_OCT;
}

int gw_jwt_alg_from_name(const char *name, size_t len) {
  for (int i = 0; i < GW_JWT_ALG_COUNT; i++)
    if (strlen(ALGS[i].name) == len && memcmp(ALGS[i].name, name, len) == 0)
      return i;
  return GW_JWT_UNKNOWN_ALG;
}

int gw_jwt_algs_parse(const char *list, uint32_t *algs, char *err, size_t errlen) {
  *algs = 0;
  const char *p = list ? list : "";
  while (*p) {
    p += strspn(p, ", \t");
    size_t n = strcspn(p, ", \t");
    if (n == 0)
      break;
    int a = gw_jwt_alg_from_name(p, n);
    if (a < 0) {
      snprintf(err, errlen,
               "unknown algorithm \"%.*s\"; accepted: HS256, HS384, HS512, RS256, RS384, RS512, "
               "PS256, ES256, ES384, EdDSA (case matters; \"none\" is never accepted)",
               (int)(n > 64 ? 64 : n), p);
      return GW_JWT_UNKNOWN_ALG;
    }
    *algs |= 1u << a;
    p += n;
  }
  if (*algs == 0) {
    snprintf(err, errlen, "the list of accepted algorithms is empty");
    return GW_JWT_UNKNOWN_ALG;
  }
  return GW_JWT_OK;
}

/* --- verification ----------------------------------------------------------------------------- */

static bool json_str_eq(const json_t *s, const char *want, size_t n) {
  return json_is_string(s) && json_string_length(s) == n &&
         memcmp(json_string_value(s), want, n) == 0;
}

/* Parses a decoded segment as exactly one JSON object (NULL otherwise). Caller json_decref()s. */
static json_t *parse_object(const uint8_t *buf, size_t len) {
  json_error_t jerr;
  /* JSON_ALLOW_NUL lets "\u0000" through the parser so the user-claim check can name it. */
  json_t *j = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
  if (j != NULL && !json_is_object(j)) {
    json_decref(j);
    return NULL;
  }
  return j;
}

/* What the header says, once checked. */
typedef struct {
  gw_jwt_alg alg;
  bool has_kid;
  bool kid_too_long; /* longer than any key's: matches none */
  char kid[GW_KEYSET_MAX_KID + 1];
} header_info;

static int check_header(const gw_jwt_config *cfg, const uint8_t *buf, size_t len, header_info *h) {
  json_t *j = parse_object(buf, len);
  if (j == NULL)
    return GW_JWT_BAD_HEADER;
  int rc = GW_JWT_OK;
  uint32_t allowed = cfg->algs ? cfg->algs : 1u << GW_JWT_ALG_HS256;
  /* The algorithm must be configured; its name is compared exactly (case, NUL, spaces). */
  const json_t *alg = json_object_get(j, "alg");
  int a = json_is_string(alg)
              ? gw_jwt_alg_from_name(json_string_value(alg), json_string_length(alg))
              : GW_JWT_UNKNOWN_ALG;
  const json_t *kid = json_object_get(j, "kid");
  if (a < 0 || !(allowed & (1u << a)))
    rc = GW_JWT_BAD_ALG;
  else if (json_object_get(j, "crit") != NULL)
    rc = GW_JWT_CRIT;
  else if (kid != NULL && (!json_is_string(kid) || json_string_length(kid) == 0))
    rc = GW_JWT_BAD_KID;
  if (rc == GW_JWT_OK) {
    h->alg = (gw_jwt_alg)a;
    h->has_kid = kid != NULL;
    if (kid != NULL) {
      size_t n = json_string_length(kid);
      h->kid_too_long = n > GW_KEYSET_MAX_KID || memchr(json_string_value(kid), 0, n) != NULL;
      if (!h->kid_too_long)
        memcpy(h->kid, json_string_value(kid), n + 1);
    }
  }
  json_decref(j);
  return rc;
}

/* Whether key k may verify alg: same type, and its JWK "alg" (if any) the same algorithm. */
static bool key_fits(const gw_key *k, gw_jwt_alg alg) {
  const char *ka = gw_key_alg(k);
  return gw_key_get_type(k) == gw_jwt_alg_key_type(alg) &&
         (ka == NULL || strcmp(ka, gw_jwt_alg_name(alg)) == 0);
}

static bool kid_is(const gw_key *k, const header_info *h) {
  return gw_key_kid(k) != NULL && !h->kid_too_long && strcmp(gw_key_kid(k), h->kid) == 0;
}

/*
 * Picks the keys for the token (gw_jwt.h, "key") and checks the signature with each until one
 * matches; at most GW_KEYSET_MAX_KEYS tries. On success *used is the key.
 */
static int verify_with_keys(const gw_keyset *ks, const header_info *h, const char *data, size_t len,
                            const uint8_t *sig, size_t siglen, const gw_key **used) {
  size_t n = gw_keyset_count(ks);
  bool kid_known = false;
  for (size_t i = 0; h->has_kid && i < n && !kid_known; i++)
    kid_known = kid_is(gw_keyset_key(ks, i), h);
  size_t tried = 0;
  for (size_t i = 0; i < n; i++) {
    const gw_key *k = gw_keyset_key(ks, i);
    /* With a known kid only its keys; with an unknown one only keys without a kid (a secret
     * given on the command line), so a token naming a rotated-out key fails as such. */
    if (kid_known ? !kid_is(k, h) : (h->has_kid && gw_key_kid(k) != NULL))
      continue;
    if (!key_fits(k, h->alg))
      continue;
    tried++;
    size_t slen = 0;
    const uint8_t *secret = gw_key_secret(k, &slen);
    int rc = gw_jwt__verify_sig(h->alg, secret, slen, gw_key_pkey(k), data, len, sig, siglen);
    if (rc == GW_JWT_OK) {
      *used = k;
      return GW_JWT_OK;
    }
    if (rc != GW_JWT_BAD_SIGNATURE)
      return rc;
  }
  if (tried > 0)
    return GW_JWT_BAD_SIGNATURE;
  if (kid_known)
    return GW_JWT_KEY_ALG_MISMATCH;
  return h->has_kid ? GW_JWT_UNKNOWN_KID : GW_JWT_NO_KEY;
}

/* Reads an optional NumericDate claim. Returns 1 if present (value in *out), 0 if absent, or
 * GW_JWT_BAD_TIME. */
static int numeric_date(const json_t *claims, const char *name, double *out) {
  const json_t *v = json_object_get(claims, name);
  if (v == NULL)
    return 0;
  if (!json_is_number(v))
    return GW_JWT_BAD_TIME;
  double d = json_number_value(v);
  if (!isfinite(d))
    return GW_JWT_BAD_TIME;
  *out = d;
  return 1;
}

static int check_times(const gw_jwt_config *cfg, const json_t *claims, int64_t now_s,
                       gw_jwt_claims *out) {
  double exp = 0, nbf = 0, iat = 0;
  int has_exp = numeric_date(claims, "exp", &exp);
  int has_nbf = numeric_date(claims, "nbf", &nbf);
  int has_iat = numeric_date(claims, "iat", &iat);
  if (has_exp < 0 || has_nbf < 0 || has_iat < 0)
    return GW_JWT_BAD_TIME;
  double now = (double)now_s, leeway = (double)cfg->leeway_s;
  if (!has_exp && !cfg->exp_optional)
    return GW_JWT_NO_EXP;
  /* RFC 7519 §4.1.4: valid only while now < exp; §4.1.5: from nbf on. */
  if (has_exp && now >= exp + leeway)
    return GW_JWT_EXPIRED;
  if (has_nbf && now + leeway < nbf)
    return GW_JWT_NOT_YET_VALID;
  out->has_exp = has_exp == 1;
  /* Clamped: 1e308 is a valid (if silly) exp. */
  out->exp_s = !has_exp ? INT64_MAX : exp >= 9.2e18 ? INT64_MAX : (int64_t)floor(exp);
  return GW_JWT_OK;
}

/* Whether the string claim v equals one element of a comma-separated list. */
static bool in_list(const json_t *v, const char *list) {
  for (const char *p = list; *p;) {
    p += strspn(p, ", \t");
    size_t n = strcspn(p, ", \t");
    if (n > 0 && json_str_eq(v, p, n))
      return true;
    p += n;
  }
  return false;
}

/* With an audience configured, "aud" must be that string or an array containing it. Without,
 * "aud" is not looked at: setting jwt-audience is how a deployment scopes shared secrets. */
static int check_audience(const gw_jwt_config *cfg, const json_t *claims) {
  if (cfg->audience == NULL)
    return GW_JWT_OK;
  size_t n = strlen(cfg->audience);
  const json_t *aud = json_object_get(claims, "aud");
  if (json_str_eq(aud, cfg->audience, n))
    return GW_JWT_OK;
  if (json_is_array(aud)) {
    size_t i;
    const json_t *v;
    json_array_foreach(aud, i, v) {
      if (json_str_eq(v, cfg->audience, n))
        return GW_JWT_OK;
    }
  }
  return GW_JWT_BAD_AUDIENCE;
}

/* With issuers configured, "iss" must be exactly one of them (a provider's issuer URL, compared
 * as a string, trailing slash included: RFC 8414 §3.3). */
static int check_issuer(const gw_jwt_config *cfg, const json_t *claims) {
  if (cfg->issuers == NULL ||
      cfg->issuers[cfg->issuers[0] ? strspn(cfg->issuers, ", \t") : 0] == '\0')
    return GW_JWT_OK;
  return in_list(json_object_get(claims, "iss"), cfg->issuers) ? GW_JWT_OK : GW_JWT_BAD_ISSUER;
}

static int extract_user(const gw_jwt_config *cfg, const json_t *claims, gw_jwt_claims *out) {
  const char *name = cfg->user_claim != NULL ? cfg->user_claim : "sub";
  const json_t *v = json_object_get(claims, name);
  if (v == NULL)
    return GW_JWT_NO_USER;
  if (!json_is_string(v))
    return GW_JWT_BAD_USER;
  const char *s = json_string_value(v);
  size_t n = json_string_length(v);
  if (n == 0 || n > WSG_MAX_USER_LEN || memchr(s, '\0', n) != NULL || !wsg_utf8_valid(s, n))
    return GW_JWT_BAD_USER;
  memcpy(out->user, s, n);
  out->user[n] = '\0';
  out->user_len = n;
  return GW_JWT_OK;
}

/* Splits the compact form; returns GW_JWT_OK with the two dots, or GW_JWT_MALFORMED. */
static int split(const char *token, size_t token_len, const char **dot1, const char **dot2) {
  *dot1 = memchr(token, '.', token_len);
  if (*dot1 == NULL)
    return GW_JWT_MALFORMED;
  *dot2 = memchr(*dot1 + 1, '.', token_len - (size_t)(*dot1 + 1 - token));
  if (*dot2 == NULL || memchr(*dot2 + 1, '.', token_len - (size_t)(*dot2 + 1 - token)) != NULL)
    return GW_JWT_MALFORMED;
  if (*dot1 == token || *dot2 == *dot1 + 1)
    return GW_JWT_MALFORMED;
  return GW_JWT_OK;
}

static int verify_claims(const gw_jwt_config *cfg, const char *seg, size_t len, int64_t now_s,
                         gw_jwt_claims *out) {
  uint8_t buf[SEGMENT_MAX];
  long n = gw_b64url_decode(seg, len, buf, sizeof(buf));
  if (n < 0)
    return GW_JWT_MALFORMED;
  json_t *claims = parse_object(buf, (size_t)n);
  if (claims == NULL)
    return GW_JWT_BAD_CLAIMS;
  int rc = check_times(cfg, claims, now_s, out);
  if (rc == GW_JWT_OK)
    rc = check_audience(cfg, claims);
  if (rc == GW_JWT_OK)
    rc = check_issuer(cfg, claims);
  if (rc == GW_JWT_OK)
    rc = extract_user(cfg, claims, out);
  json_decref(claims);
  return rc;
}

static int verify_token(const gw_jwt_config *cfg, const char *token, size_t token_len,
                        int64_t now_s, gw_jwt_claims *out) {
  if (cfg->keys ? gw_keyset_count(cfg->keys) == 0 : cfg->secret == NULL || cfg->secret_len == 0)
    return GW_JWT_BAD_KEY;
  if (token_len > GW_JWT_MAX_TOKEN)
    return GW_JWT_TOO_LONG;
  const char *dot1, *dot2;
  int rc = split(token, token_len, &dot1, &dot2);
  if (rc != GW_JWT_OK)
    return rc;
  size_t hlen = (size_t)(dot1 - token), slen = token_len - (size_t)(dot2 + 1 - token);

  uint8_t buf[SEGMENT_MAX];
  long n = gw_b64url_decode(token, hlen, buf, sizeof(buf));
  if (n < 0)
    return GW_JWT_MALFORMED;
  header_info h = {0};
  rc = check_header(cfg, buf, (size_t)n, &h);
  if (rc != GW_JWT_OK)
    return rc;

  long siglen = gw_b64url_decode(dot2 + 1, slen, buf, GW_JWT_SIG_MAX);
  if (siglen < 0) {
    /* Tell a mangled encoding from a wrong signature: both refuse, but the first is a bug. */
    for (size_t i = 0; i < slen; i++)
      if (!gw_b64url_is_char((unsigned char)dot2[1 + i]))
        return GW_JWT_MALFORMED;
    return slen % 4 == 1 ? GW_JWT_MALFORMED : GW_JWT_BAD_SIGNATURE;
  }
  size_t signed_len = (size_t)(dot2 - token);
  if (cfg->keys != NULL) {
    rc = verify_with_keys(cfg->keys, &h, token, signed_len, buf, (size_t)siglen, &out->key);
  } else {
    /* The secret alone: an HMAC key without a kid, as before key sets existed. */
    rc = gw_jwt_alg_key_type(h.alg) != GW_KEY_OCT
             ? GW_JWT_NO_KEY
             : gw_jwt__verify_sig(h.alg, cfg->secret, cfg->secret_len, NULL, token, signed_len, buf,
                                  (size_t)siglen);
  }
  if (rc != GW_JWT_OK)
    return rc;
  out->alg = h.alg;
  return verify_claims(cfg, dot1 + 1, (size_t)(dot2 - dot1 - 1), now_s, out);
}

int gw_jwt_verify_token(const gw_jwt_config *cfg, const char *token, size_t token_len,
                        int64_t now_s, gw_jwt_claims *out) {
  memset(out, 0, sizeof *out);
  int rc = verify_token(cfg, token, token_len, now_s, out);
  if (rc != GW_JWT_OK) {
    out->user_len = 0;
    out->user[0] = '\0';
  }
  return rc;
}

int gw_jwt_verify(const gw_jwt_config *cfg, const char *token, size_t token_len, int64_t now_s,
                  char *user, size_t user_cap, size_t *user_len) {
  *user_len = 0;
  gw_jwt_claims c;
  int rc = gw_jwt_verify_token(cfg, token, token_len, now_s, &c);
  if (rc != GW_JWT_OK)
    return rc;
  if (user_cap <= c.user_len)
    return GW_JWT_BUFFER;
  memcpy(user, c.user, c.user_len + 1);
  *user_len = c.user_len;
  return GW_JWT_OK;
}

/* --- minting ---------------------------------------------------------------------------------- */

/* The default header: {"alg":...,"typ":"JWT"} plus "kid" when given (jansson escapes it). */
static char *default_header(const gw_jwt_signer *signer) {
  json_t *h = json_object();
  if (!h)
    return NULL;
  int rc = json_object_set_new(h, "alg", json_string(gw_jwt_alg_name(signer->alg)));
  rc |= json_object_set_new(h, "typ", json_string("JWT"));
  if (signer->kid)
    rc |= json_object_set_new(h, "kid", json_string(signer->kid));
  char *s = rc == 0 ? json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
  json_decref(h);
  return s;
}

static int sign_parts(const gw_jwt_signer *signer, const char *header_json, const char *claims_json,
                      char *out, size_t outlen) {
  size_t hn = strlen(header_json), cn = strlen(claims_json);
  if (hn > INT_MAX / 2 || cn > INT_MAX / 2)
    return GW_JWT_TOO_LONG;
  size_t he = gw_b64url_encoded_len(hn), ce = gw_b64url_encoded_len(cn);
  /* The signing input is written into out first, so out must hold it even before the check. */
  if (outlen <= he + 1 + ce)
    return GW_JWT_BUFFER;
  gw_b64url_encode((const uint8_t *)header_json, hn, out);
  out[he] = '.';
  gw_b64url_encode((const uint8_t *)claims_json, cn, out + he + 1);
  uint8_t sig[GW_JWT_SIG_MAX];
  int sl = gw_jwt__sign_sig(signer, out, he + 1 + ce, sig);
  if (sl < 0)
    return sl;
  size_t total = he + 1 + ce + 1 + gw_b64url_encoded_len((size_t)sl);
  if (total > INT_MAX)
    return GW_JWT_TOO_LONG;
  if (outlen <= total)
    return GW_JWT_BUFFER;
  out[he + 1 + ce] = '.';
  gw_b64url_encode(sig, (size_t)sl, out + he + 1 + ce + 1);
  out[total] = '\0';
  return (int)total;
}

int gw_jwt_sign_as(const gw_jwt_signer *signer, const char *header_json, const char *claims_json,
                   char *out, size_t outlen) {
  if ((unsigned)signer->alg >= GW_JWT_ALG_COUNT)
    return GW_JWT_UNKNOWN_ALG;
  if (header_json != NULL)
    return sign_parts(signer, header_json, claims_json, out, outlen);
  char *h = default_header(signer);
  if (!h)
    return GW_JWT_NOMEM;
  int rc = sign_parts(signer, h, claims_json, out, outlen);
  free(h);
  return rc;
}

int gw_jwt_sign_with_header(const uint8_t *secret, size_t secret_len, const char *header_json,
                            const char *claims_json, char *out, size_t outlen) {
  gw_jwt_signer s = {.alg = GW_JWT_ALG_HS256, .secret = secret, .secret_len = secret_len};
  if (secret == NULL || secret_len == 0)
    return GW_JWT_BAD_KEY;
  return sign_parts(&s, header_json, claims_json, out, outlen);
}

int gw_jwt_sign(const uint8_t *secret, size_t secret_len, const char *claims_json, char *out,
                size_t outlen) {
  return gw_jwt_sign_with_header(secret, secret_len, "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
                                 claims_json, out, outlen);
}

int gw_jwt_claims_json(const char *token, size_t token_len, uint8_t *out, size_t cap) {
  const char *dot1 = token_len <= GW_JWT_MAX_TOKEN ? memchr(token, '.', token_len) : NULL;
  const char *dot2 = dot1 ? memchr(dot1 + 1, '.', token_len - (size_t)(dot1 + 1 - token)) : NULL;
  if (!dot2)
    return GW_JWT_MALFORMED;
  long n = gw_b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), out, cap);
  return n < 0 ? GW_JWT_MALFORMED : (int)n;
}
