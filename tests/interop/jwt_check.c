/*
 * jwt_check: verifies tokens with gw_jwt as the gateway would, for tests that mint tokens with
 * another implementation (jwt_pyjwt_test.py). Prints one line per token argument:
 * "<GW_JWT_... name> <user>" ("-" for no user). Exit status: 0 when every token was judged,
 * 2 on a usage or key-loading error (message on stderr).
 *
 * Usage: jwt_check [--algs LIST] [--secret-file F] [--key-file F] [--jwks-file F]
 *                  [--issuer LIST] [--audience A] [--leeway S] TOKEN...
 *
 * Threads: main only.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gw_jwt.h"
#include "gw_keyset.h"

/* Reads a secret file into buf, one trailing newline dropped. Returns its length or -1. */
static long read_secret(const char *path, uint8_t *buf, size_t cap) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return -1;
  size_t n = fread(buf, 1, cap, f);
  fclose(f);
  if (n > 0 && buf[n - 1] == '\n')
    n--;
  return (long)n;
}

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"algs", required_argument, NULL, 'a'},     {"secret-file", required_argument, NULL, 's'},
      {"key-file", required_argument, NULL, 'k'}, {"jwks-file", required_argument, NULL, 'j'},
      {"issuer", required_argument, NULL, 'i'},   {"audience", required_argument, NULL, 'u'},
      {"leeway", required_argument, NULL, 'l'},   {NULL, 0, NULL, 0},
  };
  gw_keyset *ks = gw_keyset_create();
  gw_jwt_config cfg = {.keys = ks};
  char err[1024];
  uint8_t secret[4096];
  int c, rc;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'a':
      if (gw_jwt_algs_parse(optarg, &cfg.algs, err, sizeof err) != GW_JWT_OK)
        goto fail;
      break;
    case 's': {
      long n = read_secret(optarg, secret, sizeof secret);
      if (n < 0) {
        snprintf(err, sizeof err, "%s: cannot read", optarg);
        goto fail;
      }
      if (gw_keyset_add_secret(ks, secret, (size_t)n, NULL, err, sizeof err) != GW_KEYSET_OK)
        goto fail;
      break;
    }
    case 'k':
      if ((rc = gw_keyset_add_pem_file(ks, optarg, err, sizeof err)) != GW_KEYSET_OK)
        goto fail;
      break;
    case 'j':
      if ((rc = gw_keyset_add_jwks_file(ks, optarg, err, sizeof err)) != GW_KEYSET_OK)
        goto fail;
      break;
    case 'i':
      cfg.issuers = optarg;
      break;
    case 'u':
      cfg.audience = optarg;
      break;
    case 'l':
      cfg.leeway_s = (uint32_t)strtoul(optarg, NULL, 10);
      break;
    default:
      snprintf(err, sizeof err, "usage: see the top of jwt_check.c");
      goto fail;
    }
  }
  for (int i = optind; i < argc; i++) {
    gw_jwt_claims out;
    rc = gw_jwt_verify_token(&cfg, argv[i], strlen(argv[i]), (int64_t)time(NULL), &out);
    printf("%s %s\n", gw_jwt_err_name(rc), rc == GW_JWT_OK ? out.user : "-");
  }
  gw_keyset_unref(ks);
  return 0;
fail:
  fprintf(stderr, "jwt_check: %s\n", err);
  gw_keyset_unref(ks);
  return 2;
}
