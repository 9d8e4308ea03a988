/*
 * wsgate-token: mints JWTs that wsgate-gateway accepts, for development and tests (the local
 * cluster, the browser demo, curl and websocat sessions by hand): HS256 with the gateway's secret
 * by default, or any algorithm gw_jwt knows (--alg) with a key file (a PEM private key, or a
 * secret file for HS*). It signs with the same gw_jwt the gateway verifies with and reads the
 * same environment variables as the gateway (WSGATE_JWT_SECRET, WSGATE_JWT_AUDIENCE,
 * WSGATE_JWT_USER_CLAIM), so one environment configures both.
 *
 * A real deployment mints tokens in its own identity service; this tool exists so nobody has to
 * paste a secret into a website to get one.
 *
 * Output: the token and a newline on stdout, or with --json one line
 * {"token":...,"user":...,"exp":...}. Exit status: 0 minted, 1 signing failed, 2 usage error.
 *
 * Threads: main only.
 */
#include <jansson.h>
#include <openssl/pem.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gw_config.h"
#include "gw_jwt.h"
#include "wsg_config.h"
#include "wsg_envelope.h"

extern char **environ;

enum { EXIT_SIGN = 1, EXIT_USAGE = 2 };

/* The longest claim name accepted: a JSON key a person would type, not a document. */
#define CLAIM_NAME_MAX 64
/* Room for the claims a tool user can add (user, audience, claim name) plus the numbers. */
#define CLAIMS_MAX (WSG_MAX_USER_LEN * 6 + 1024)

typedef struct {
  char *secret;
  char *alg;
  char *key_file;
  char *kid;
  char *issuer;
  char *user;
  uint64_t ttl_ms;
  char *audience;
  char *claim;
  int64_t not_before_s;
  bool json;
} token_config;

#define OPT(field) offsetof(token_config, field)

// clang-format off
static const wsg_option token_options[] = {
    {"secret", 's', "WSGATE_JWT_SECRET", WSG_OPT_STRING, OPT(secret), NULL, 0, 0, NULL,
     WSG_OPTF_SECRET,
     "HS* secret, the gateway's --jwt-secret (at least 32 bytes); prefer the environment "
     "variable, which `ps` does not show."},
    {"alg", 0, NULL, WSG_OPT_STRING, OPT(alg), "HS256", 0, 0, NULL, 0,
     "Algorithm: HS256, HS384, HS512, RS256, RS384, RS512, PS256, ES256, ES384 or EdDSA."},
    {"key-file", 'k', NULL, WSG_OPT_STRING, OPT(key_file), NULL, 0, 0, NULL, 0,
     "PEM private key (RS*, PS256, ES*, EdDSA), or for HS* a file holding the secret (one "
     "trailing newline ignored), instead of --secret."},
    {"kid", 0, NULL, WSG_OPT_STRING, OPT(kid), NULL, 0, 0, NULL, 0,
     "`kid` header naming the key in the gateway's --jwt-jwks-file; unset: no `kid`."},
    {"iss", 0, NULL, WSG_OPT_STRING, OPT(issuer), NULL, 0, 0, NULL, 0,
     "`iss` claim, one of the gateway's --jwt-issuer; unset: no `iss`."},
    {"user", 'u', "WSGATE_TOKEN_USER", WSG_OPT_STRING, OPT(user), NULL, 0, 0, NULL,
     WSG_OPTF_REQUIRED,
     "User id the token names (non-empty UTF-8, at most 256 bytes)."},
    {"ttl", 't', "WSGATE_TOKEN_TTL", WSG_OPT_DURATION, OPT(ttl_ms), "1h", 1000, 366LL * 24 * 3600 * 1000,
     NULL, 0, "Lifetime: `exp` is now plus this (whole seconds)."},
    {"audience", 'a', "WSGATE_JWT_AUDIENCE", WSG_OPT_STRING, OPT(audience), NULL, 0, 0, NULL, 0,
     "`aud` claim, the gateway's --jwt-audience; unset: no `aud`."},
    {"claim", 'c', "WSGATE_JWT_USER_CLAIM", WSG_OPT_STRING, OPT(claim), "sub", 0, 0, NULL, 0,
     "Claim that carries the user id, the gateway's --jwt-user-claim."},
    {"not-before", 0, NULL, WSG_OPT_INT, OPT(not_before_s), "0", -86400, 86400, NULL, 0,
     "Adds `nbf` = now plus this many seconds (tests of a token not valid yet); 0: no `nbf`."},
    {"json", 'j', NULL, WSG_OPT_BOOL, OPT(json), "false", 0, 0, NULL, 0,
     "Print {\"token\":...,\"user\":...,\"exp\":...} instead of the bare token."},
};
// clang-format on

static const wsg_config_spec token_spec = {
    .program = "wsgate-token",
    .summary = "Mints a JSON Web Token that wsgate-gateway accepts (development and tests only: a "
               "real deployment's identity service issues tokens). Claims: the user claim, iat, "
               "exp, and aud, iss and nbf when asked for. Exit status: 0 minted, 1 signing "
               "failed, 2 usage error.",
    .options = token_options,
    .count = WSG_COUNTOF(token_options),
};

static const char examples[] =
    "\nExamples:\n"
    "  WSGATE_JWT_SECRET=\"$(cat /tmp/wsgate-run/cluster/jwt-secret)\" wsgate-token --user alice\n"
    "  python3 -m websockets \"ws://127.0.0.1:18080/?token=$(wsgate-token -u alice --ttl 10m)\"\n"
    "  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out es.key\n"
    "  wsgate-token --alg ES256 --key-file es.key --kid k1 --iss https://idp.example -u alice\n";

static bool asked_for_help(int argc, char **argv) {
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
      return true;
  return false;
}

/* The checks the gateway makes on its side, made here first so a bad token is never minted. */
static int validate(const token_config *cfg, char *err, size_t errlen) {
  int alg = gw_jwt_alg_from_name(cfg->alg, strlen(cfg->alg));
  if (alg < 0) {
    snprintf(err, errlen,
             "--alg %s: want HS256, HS384, HS512, RS256, RS384, RS512, PS256, ES256, ES384 or "
             "EdDSA",
             cfg->alg);
    return -1;
  }
  bool hmac = gw_jwt_alg_key_type((gw_jwt_alg)alg) == GW_KEY_OCT;
  if (!hmac ? cfg->key_file == NULL : (cfg->secret == NULL) == (cfg->key_file == NULL)) {
    snprintf(err, errlen,
             hmac ? "--alg %s: give one of --secret (WSGATE_JWT_SECRET) and --key-file"
                  : "--alg %s needs --key-file with a PEM private key",
             cfg->alg);
    return -1;
  }
  if (cfg->secret && strlen(cfg->secret) < GW_JWT_SECRET_MIN) {
    snprintf(err, errlen,
             "--secret is %zu bytes; the gateway refuses secrets under %d bytes (HS256, RFC 7518 "
             "3.2): use the gateway's own secret",
             strlen(cfg->secret), GW_JWT_SECRET_MIN);
    return -1;
  }
  size_t ulen = strlen(cfg->user);
  if (ulen == 0 || ulen > WSG_MAX_USER_LEN || !wsg_utf8_valid(cfg->user, ulen)) {
    snprintf(err, errlen, "--user must be non-empty UTF-8 of at most %d bytes", WSG_MAX_USER_LEN);
    return -1;
  }
  size_t clen = strlen(cfg->claim);
  if (clen == 0 || clen > CLAIM_NAME_MAX || !wsg_utf8_valid(cfg->claim, clen)) {
    snprintf(err, errlen, "--claim must be a non-empty UTF-8 name of at most %d bytes",
             CLAIM_NAME_MAX);
    return -1;
  }
  /* The gateway reads exp, iat, nbf and aud itself: a user claim of that name would be ambiguous.
   */
  static const char *const reserved[] = {"exp", "iat", "nbf", "aud", "iss"};
  for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++) {
    if (strcmp(cfg->claim, reserved[i]) == 0) {
      snprintf(err, errlen, "--claim %s is a registered time/audience claim; name another",
               cfg->claim);
      return -1;
    }
  }
  if (cfg->audience) {
    size_t alen = strlen(cfg->audience);
    if (alen == 0 || alen > WSG_MAX_USER_LEN || !wsg_utf8_valid(cfg->audience, alen)) {
      snprintf(err, errlen, "--audience must be non-empty UTF-8 of at most %d bytes",
               WSG_MAX_USER_LEN);
      return -1;
    }
  }
  return 0;
}

/* The claims as compact JSON (jansson escapes the user id); caller frees. NULL if out of memory. */
static char *claims_json(const token_config *cfg, int64_t now, int64_t exp) {
  json_t *c = json_object();
  if (!c)
    return NULL;
  int rc = json_object_set_new(c, cfg->claim, json_string(cfg->user));
  rc |= json_object_set_new(c, "iat", json_integer(now));
  rc |= json_object_set_new(c, "exp", json_integer(exp));
  if (cfg->not_before_s != 0)
    rc |= json_object_set_new(c, "nbf", json_integer(now + cfg->not_before_s));
  if (cfg->audience)
    rc |= json_object_set_new(c, "aud", json_string(cfg->audience));
  if (cfg->issuer)
    rc |= json_object_set_new(c, "iss", json_string(cfg->issuer));
  char *s = rc == 0 ? json_dumps(c, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
  json_decref(c);
  return s;
}

/* Fills the signer's key: --secret, the secret file, or the PEM private key (signer->pkey, the
 * caller frees). secret: GW_JWT_SECRET_MAX + 1 bytes of the caller's, wiped by the caller. */
static int load_key(const token_config *cfg, gw_jwt_signer *signer, uint8_t *secret, char *err,
                    size_t errlen) {
  if (cfg->secret) {
    signer->secret = (const uint8_t *)cfg->secret;
    signer->secret_len = strlen(cfg->secret);
    return 0;
  }
  FILE *f = fopen(cfg->key_file, "rb");
  if (!f) {
    snprintf(err, errlen, "--key-file %s: %s", cfg->key_file, strerror(errno));
    return -1;
  }
  int rc = 0;
  if (gw_jwt_alg_key_type(signer->alg) == GW_KEY_OCT) {
    size_t n = fread(secret, 1, GW_JWT_SECRET_MAX + 1, f);
    while (n > 0 && (secret[n - 1] == '\n' || secret[n - 1] == '\r'))
      n--;
    if (n < GW_JWT_SECRET_MIN || n > GW_JWT_SECRET_MAX) {
      snprintf(err, errlen, "--key-file %s: a secret of %zu bytes; want %d to %d", cfg->key_file, n,
               GW_JWT_SECRET_MIN, GW_JWT_SECRET_MAX);
      rc = -1;
    }
    signer->secret = secret;
    signer->secret_len = n;
  } else {
    signer->pkey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    if (!signer->pkey) {
      snprintf(err, errlen, "--key-file %s: not a PEM private key (unencrypted)", cfg->key_file);
      rc = -1;
    } else if (gw_key_type_of_pkey(signer->pkey) != (int)gw_jwt_alg_key_type(signer->alg)) {
      snprintf(err, errlen, "--key-file %s: a %s key cannot sign %s", cfg->key_file,
               gw_key_type_of_pkey(signer->pkey) < 0
                   ? "unsupported"
                   : gw_key_type_name((gw_key_type)gw_key_type_of_pkey(signer->pkey)),
               cfg->alg);
      rc = -1;
    }
  }
  fclose(f);
  return rc;
}

static int print_json(const char *token, const token_config *cfg, int64_t exp) {
  json_t *o =
      json_pack("{s:s, s:s, s:I}", "token", token, "user", cfg->user, "exp", (json_int_t)exp);
  char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  if (!s)
    return -1;
  int rc = printf("%s\n", s) < 0 ? -1 : 0;
  free(s);
  return rc;
}

int main(int argc, char **argv) {
  token_config cfg = {0};
  char err[512];
  int status = 0;

  switch (wsg_config_parse(&token_spec, &cfg, argc, argv, environ, err, sizeof err)) {
  case WSG_CONFIG_OK:
    break;
  case WSG_CONFIG_EXIT:
    if (asked_for_help(argc, argv))
      fputs(examples, stdout);
    wsg_config_finish(&token_spec, &cfg);
    return 0;
  default:
    fprintf(stderr, "wsgate-token: %s\nTry 'wsgate-token --help'.\n", err);
    wsg_config_finish(&token_spec, &cfg);
    return EXIT_USAGE;
  }
  if (validate(&cfg, err, sizeof err) != 0) {
    fprintf(stderr, "wsgate-token: %s\n", err);
    wsg_config_finish(&token_spec, &cfg);
    return EXIT_USAGE;
  }

  int64_t now = (int64_t)time(NULL);
  int64_t exp = now + (int64_t)(cfg.ttl_ms / 1000);
  char *claims = claims_json(&cfg, now, exp);
  char token[GW_JWT_MAX_TOKEN + 1];
  gw_jwt_signer signer = {.alg = (gw_jwt_alg)gw_jwt_alg_from_name(cfg.alg, strlen(cfg.alg)),
                          .kid = cfg.kid};
  uint8_t secret[GW_JWT_SECRET_MAX + 1];
  if (load_key(&cfg, &signer, secret, err, sizeof err) != 0) {
    fprintf(stderr, "wsgate-token: %s\n", err);
    free(claims);
    wsg_config_finish(&token_spec, &cfg);
    return EXIT_USAGE;
  }
  int n = claims ? gw_jwt_sign_as(&signer, NULL, claims, token, sizeof token) : GW_JWT_NOMEM;
  free(claims);
  EVP_PKEY_free(signer.pkey);
  explicit_bzero(secret, sizeof secret);
  if (n < 0) {
    fprintf(stderr, "wsgate-token: cannot sign: %s\n", gw_jwt_strerror(n));
    status = EXIT_SIGN;
  } else if (cfg.json ? print_json(token, &cfg, exp) != 0 : printf("%s\n", token) < 0) {
    fprintf(stderr, "wsgate-token: cannot write the token to stdout\n");
    status = EXIT_SIGN;
  } else if (fflush(stdout) != 0) {
    fprintf(stderr, "wsgate-token: cannot write the token to stdout\n");
    status = EXIT_SIGN;
  }
  explicit_bzero(token, sizeof token);
  wsg_config_finish(&token_spec, &cfg);
  return status;
}
