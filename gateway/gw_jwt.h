/*
 * gw_jwt: HS256 JSON Web Token verification (RFC 7519 / RFC 7515 compact form) for the upgrade
 * request, and minting for tests and tools.
 *
 * What a token must be to pass:
 *   - three base64url segments (no padding), at most GW_JWT_MAX_TOKEN bytes in all;
 *   - header: a JSON object whose "alg" is exactly "HS256" (anything else, a missing alg,
 *     "none", "RS256", "hs256", refused: the algorithm is pinned, never taken from the token);
 *     "typ" ignored; a "crit" member refused (we understand no extension, RFC 7515 §4.1.11);
 *   - signature: HMAC-SHA256 of "<header>.<claims>" with the secret, compared in constant time;
 *   - claims: a JSON object; "exp" a number, required unless cfg->exp_optional; "nbf" honoured
 *     when present; both with cfg->leeway_s; "aud" (string or array of strings) must contain
 *     cfg->audience when that is set;
 *   - the user claim (cfg->user_claim, default "sub"): a non-empty string of at most
 *     WSG_MAX_USER_LEN bytes of valid UTF-8.
 * The header is checked before the signature (so "alg":"none" gets its own error), the claims
 * only after it: untrusted claims never reach the JSON parser.
 *
 * Threads: none of its own; every function is reentrant (the gateway calls it on the loop
 * thread).
 */
#ifndef GW_JWT_H
#define GW_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest token accepted (the whole compact form). Bounds every allocation made while verifying. */
#define GW_JWT_MAX_TOKEN 8192

/* X-macro: name, value, message. Generates the enum, gw_jwt_strerror() and gw_jwt_err_name(). */
#define GW_JWT_ERRNO_MAP(X)                                                                        \
  X(OK, 0, "success")                                                                              \
  X(MALFORMED, -1, "token is not three base64url segments separated by '.'")                       \
  X(TOO_LONG, -2, "token is longer than the 8192-byte limit")                                      \
  X(BAD_HEADER, -3, "token header is not a JSON object")                                           \
  X(BAD_ALG, -4, "token algorithm is not HS256 (the only one accepted)")                           \
  X(CRIT, -5, "token header has a \"crit\" member (no JWS extension is supported)")                \
  X(BAD_SIGNATURE, -6, "token signature does not match the configured secret")                     \
  X(BAD_CLAIMS, -7, "token claims are not a JSON object")                                          \
  X(NO_EXP, -8, "token has no \"exp\" claim (expiry is required)")                                 \
  X(BAD_TIME, -9, "token \"exp\", \"nbf\" or \"iat\" is not a number")                             \
  X(EXPIRED, -10, "token has expired (\"exp\" is in the past)")                                    \
  X(NOT_YET_VALID, -11, "token is not valid yet (\"nbf\" is in the future)")                       \
  X(BAD_AUDIENCE, -12, "token \"aud\" does not name this service")                                 \
  X(NO_USER, -13, "token has no user claim")                                                       \
  X(BAD_USER, -14, "token user claim is not a non-empty UTF-8 string within the length limit")     \
  X(BAD_KEY, -15, "JWT secret is empty")                                                           \
  X(BUFFER, -16, "output buffer is too small")                                                     \
  X(NOMEM, -17, "out of memory")                                                                   \
  X(CRYPTO, -18, "OpenSSL HMAC failed")

typedef enum {
#define GW_JWT_ERR_ENUM(name, value, msg) GW_JWT_##name = value,
  GW_JWT_ERRNO_MAP(GW_JWT_ERR_ENUM)
#undef GW_JWT_ERR_ENUM
} gw_jwt_err;

/* Message for a gw_jwt_err (either sign); "unknown error" for anything else. Static string. */
const char *gw_jwt_strerror(int err);
/* "GW_JWT_EXPIRED" etc.: stable names for logs and metrics labels. Static string. */
const char *gw_jwt_err_name(int err);

typedef struct {
  const uint8_t *secret; /* borrowed, must outlive every verify call */
  size_t secret_len;
  const char *audience;   /* borrowed; NULL: "aud" is not checked */
  const char *user_claim; /* borrowed; NULL: "sub" */
  uint32_t leeway_s;      /* clock skew allowed on exp and nbf */
  bool exp_optional;      /* false (default): a token without "exp" is refused */
} gw_jwt_config;

/*
 * Verifies token[0..token_len) at time `now_s` (Unix seconds). On success writes the user id to
 * user[0..*user_len) plus a NUL (user_cap must be > WSG_MAX_USER_LEN to hold any accepted id)
 * and returns GW_JWT_OK; otherwise returns a negative gw_jwt_err and leaves *user_len 0.
 * token, user, user_len: borrowed.
 */
int gw_jwt_verify(const gw_jwt_config *cfg, const char *token, size_t token_len, int64_t now_s,
                  char *user, size_t user_cap, size_t *user_len);

/*
 * Mints "<b64url(header)>.<b64url(claims_json)>.<b64url(HMAC-SHA256)>" with the header
 * {"alg":"HS256","typ":"JWT"}. claims_json is signed as given (not re-serialised), so tests can
 * sign whatever bytes they need. Writes a NUL-terminated token to out and returns its length, or
 * a negative gw_jwt_err. secret, claims_json, out: borrowed.
 */
int gw_jwt_sign(const uint8_t *secret, size_t secret_len, const char *claims_json, char *out,
                size_t outlen);

/* The claims segment of a token gw_jwt_verify() accepted, base64url-decoded into out[0..cap)
 * (cap >= GW_JWT_MAX_TOKEN covers any token): its length, or a negative gw_jwt_err. For claims
 * other modules read themselves (the channels claim); it verifies nothing. */
int gw_jwt_claims_json(const char *token, size_t token_len, uint8_t *out, size_t cap);

/* The same with a caller-chosen header JSON (tests: "alg":"none", "crit", ...). */
int gw_jwt_sign_with_header(const uint8_t *secret, size_t secret_len, const char *header_json,
                            const char *claims_json, char *out, size_t outlen);

#endif
