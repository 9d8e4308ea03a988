/*
 * gw_jwt: HS256 JWT verification and minting (gw_jwt.h lists what a token must satisfy).
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
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>

#include "wsg_envelope.h"

#define HS256_LEN 32
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

/* --- base64url (RFC 4648 §5, no padding) ------------------------------------------------------ */

static const char B64URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int b64url_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  if (c == '-')
    return 62;
  if (c == '_')
    return 63;
  return -1;
}

static size_t b64url_encoded_len(size_t n) {
  return n / 3 * 4 + (n % 3 == 0 ? 0 : n % 3 + 1);
}

/* Writes b64url_encoded_len(n) characters (no NUL). */
static void b64url_encode(const uint8_t *in, size_t n, char *out) {
  size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    *out++ = B64URL[v >> 18];
    *out++ = B64URL[(v >> 12) & 63];
    *out++ = B64URL[(v >> 6) & 63];
    *out++ = B64URL[v & 63];
  }
  if (n - i == 1) {
    uint32_t v = (uint32_t)in[i] << 16;
    *out++ = B64URL[v >> 18];
    *out++ = B64URL[(v >> 12) & 63];
  } else if (n - i == 2) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
    *out++ = B64URL[v >> 18];
    *out++ = B64URL[(v >> 12) & 63];
    *out++ = B64URL[(v >> 6) & 63];
  }
}

/*
 * Strict decode: alphabet only, no padding, no length of 1 mod 4, and the unused low bits of the
 * last character zero, so every byte string has exactly one accepted encoding (a signature cannot
 * be re-encoded into a second valid token). Returns the decoded length, or -1.
 */
static long b64url_decode(const char *in, size_t n, uint8_t *out, size_t cap) {
  if (n % 4 == 1 || n / 4 * 3 + (n % 4 == 0 ? 0 : n % 4 - 1) > cap)
    return -1;
  uint32_t acc = 0;
  unsigned bits = 0;
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    int v = b64url_value((unsigned char)in[i]);
    if (v < 0)
      return -1;
    acc = acc << 6 | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (uint8_t)(acc >> bits);
      acc &= (1u << bits) - 1;
    }
  }
  if (acc != 0)
    return -1;
  return (long)o;
}

/* --- verification ----------------------------------------------------------------------------- */

static int hs256(const uint8_t *key, size_t key_len, const char *data, size_t len,
                 uint8_t mac[HS256_LEN]) {
  unsigned mac_len = 0;
  if (key_len > INT_MAX)
    return GW_JWT_BAD_KEY;
  if (HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)data, len, mac, &mac_len) ==
          NULL ||
      mac_len != HS256_LEN)
    return GW_JWT_CRYPTO;
  return GW_JWT_OK;
}

static bool json_str_eq(const json_t *s, const char *want) {
  size_t n = strlen(want);
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

static int check_header(const uint8_t *buf, size_t len) {
  json_t *h = parse_object(buf, len);
  if (h == NULL)
    return GW_JWT_BAD_HEADER;
  int rc = GW_JWT_OK;
  /* Pinned algorithm: exact, case-sensitive "HS256". */
  if (!json_str_eq(json_object_get(h, "alg"), "HS256"))
    rc = GW_JWT_BAD_ALG;
  else if (json_object_get(h, "crit") != NULL)
    rc = GW_JWT_CRIT;
  json_decref(h);
  return rc;
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

static int check_times(const gw_jwt_config *cfg, const json_t *claims, int64_t now_s) {
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
  return GW_JWT_OK;
}

/* With an audience configured, "aud" must be that string or an array containing it. Without,
 * "aud" is not looked at: setting jwt-audience is how a deployment scopes shared secrets. */
static int check_audience(const gw_jwt_config *cfg, const json_t *claims) {
  if (cfg->audience == NULL)
    return GW_JWT_OK;
  const json_t *aud = json_object_get(claims, "aud");
  if (json_str_eq(aud, cfg->audience))
    return GW_JWT_OK;
  if (json_is_array(aud)) {
    size_t i;
    const json_t *v;
    json_array_foreach(aud, i, v) {
      if (json_str_eq(v, cfg->audience))
        return GW_JWT_OK;
    }
  }
  return GW_JWT_BAD_AUDIENCE;
}

static int extract_user(const gw_jwt_config *cfg, const json_t *claims, char *user, size_t user_cap,
                        size_t *user_len) {
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
  if (user_cap <= n)
    return GW_JWT_BUFFER;
  memcpy(user, s, n);
  user[n] = '\0';
  *user_len = n;
  return GW_JWT_OK;
}

int gw_jwt_verify(const gw_jwt_config *cfg, const char *token, size_t token_len, int64_t now_s,
                  char *user, size_t user_cap, size_t *user_len) {
  *user_len = 0;
  if (cfg->secret == NULL || cfg->secret_len == 0)
    return GW_JWT_BAD_KEY;
  if (token_len > GW_JWT_MAX_TOKEN)
    return GW_JWT_TOO_LONG;
  const char *dot1 = memchr(token, '.', token_len);
  if (dot1 == NULL)
    return GW_JWT_MALFORMED;
  const char *dot2 = memchr(dot1 + 1, '.', token_len - (size_t)(dot1 + 1 - token));
  if (dot2 == NULL || memchr(dot2 + 1, '.', token_len - (size_t)(dot2 + 1 - token)) != NULL)
    return GW_JWT_MALFORMED;
  size_t hlen = (size_t)(dot1 - token), clen = (size_t)(dot2 - dot1 - 1);
  size_t slen = token_len - (size_t)(dot2 + 1 - token);
  if (hlen == 0 || clen == 0)
    return GW_JWT_MALFORMED;

  uint8_t buf[SEGMENT_MAX];
  long n = b64url_decode(token, hlen, buf, sizeof(buf));
  if (n < 0)
    return GW_JWT_MALFORMED;
  int rc = check_header(buf, (size_t)n);
  if (rc != GW_JWT_OK)
    return rc;

  uint8_t sig[HS256_LEN + 3], mac[HS256_LEN];
  long siglen = b64url_decode(dot2 + 1, slen, sig, sizeof(sig));
  if (siglen < 0) {
    /* Tell a mangled encoding from a wrong signature: both refuse, but the first is a bug. */
    for (size_t i = 0; i < slen; i++)
      if (b64url_value((unsigned char)dot2[1 + i]) < 0)
        return GW_JWT_MALFORMED;
    return slen % 4 == 1 ? GW_JWT_MALFORMED : GW_JWT_BAD_SIGNATURE;
  }
  rc = hs256(cfg->secret, cfg->secret_len, token, (size_t)(dot2 - token), mac);
  if (rc != GW_JWT_OK)
    return rc;
  if (siglen != HS256_LEN || CRYPTO_memcmp(sig, mac, HS256_LEN) != 0)
    return GW_JWT_BAD_SIGNATURE;

  n = b64url_decode(dot1 + 1, clen, buf, sizeof(buf));
  if (n < 0)
    return GW_JWT_MALFORMED;
  json_t *claims = parse_object(buf, (size_t)n);
  if (claims == NULL)
    return GW_JWT_BAD_CLAIMS;
  rc = check_times(cfg, claims, now_s);
  if (rc == GW_JWT_OK)
    rc = check_audience(cfg, claims);
  if (rc == GW_JWT_OK)
    rc = extract_user(cfg, claims, user, user_cap, user_len);
  json_decref(claims);
  return rc;
}

/* --- minting ---------------------------------------------------------------------------------- */

int gw_jwt_sign_with_header(const uint8_t *secret, size_t secret_len, const char *header_json,
                            const char *claims_json, char *out, size_t outlen) {
  if (secret == NULL || secret_len == 0)
    return GW_JWT_BAD_KEY;
  size_t hn = strlen(header_json), cn = strlen(claims_json);
  size_t he = b64url_encoded_len(hn), ce = b64url_encoded_len(cn);
  size_t se = b64url_encoded_len(HS256_LEN);
  if (hn > INT_MAX / 2 || cn > INT_MAX / 2)
    return GW_JWT_TOO_LONG;
  size_t total = he + 1 + ce + 1 + se;
  if (total > INT_MAX)
    return GW_JWT_TOO_LONG;
  if (outlen <= total)
    return GW_JWT_BUFFER;
  b64url_encode((const uint8_t *)header_json, hn, out);
  out[he] = '.';
  b64url_encode((const uint8_t *)claims_json, cn, out + he + 1);
  uint8_t mac[HS256_LEN];
  int rc = hs256(secret, secret_len, out, he + 1 + ce, mac);
  if (rc != GW_JWT_OK)
    return rc;
  out[he + 1 + ce] = '.';
  b64url_encode(mac, HS256_LEN, out + he + 1 + ce + 1);
  out[total] = '\0';
  return (int)total;
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
  long n = b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), out, cap);
  return n < 0 ? GW_JWT_MALFORMED : (int)n;
}
