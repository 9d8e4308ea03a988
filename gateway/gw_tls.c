/*
 * gw_tls: loading, checking and installing the gateway's TLS certificate (gw_tls.h).
 *
 * Installing with SSL_CTX_use_cert_and_key(..., override 1) on the vhost's SSL_CTX is enough for
 * a rotation: OpenSSL copies a context's certificate into each SSL at SSL_new, so connections
 * already open keep the one they were handshaken with, and the next accept gets the new one.
 */
#include "gw_tls.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "wsg_log.h"

static int no_passphrase(char *buf, int size, int rwflag, void *arg) {
  (void)buf, (void)size, (void)rwflag, (void)arg;
  return 0; /* never prompt on a terminal: an encrypted key is an error */
}

/* The reason of the last OpenSSL error, for a message; clears the queue. */
static const char *openssl_reason(void) {
  unsigned long e = ERR_peek_last_error();
  const char *r = e ? ERR_reason_error_string(e) : NULL;
  ERR_clear_error();
  return r ? r : "unknown OpenSSL error";
}

SSL_CTX *gw_tls_load(const char *cert_path, const char *key_path, char *err, size_t errlen) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) {
    snprintf(err, errlen, "cannot create a TLS context: %s", openssl_reason());
    return NULL;
  }
  SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
  const char *files[][2] = {{"--tls-cert", cert_path}, {"--tls-key", key_path}};
  for (size_t i = 0; i < 2; i++) {
    FILE *f = fopen(files[i][1], "r");
    if (!f) {
      snprintf(err, errlen, "%s %s: %s", files[i][0], files[i][1], strerror(errno));
      goto fail;
    }
    fclose(f);
  }
  if (SSL_CTX_use_certificate_chain_file(ctx, cert_path) != 1) {
    snprintf(err, errlen, "--tls-cert %s: not a readable PEM certificate chain (%s)", cert_path,
             openssl_reason());
    goto fail;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key_path, SSL_FILETYPE_PEM) != 1) {
    unsigned long e = ERR_peek_last_error();
    if (ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH)
      snprintf(err, errlen,
               "--tls-key %s is not the private key of the certificate in --tls-cert %s", key_path,
               cert_path);
    else
      snprintf(err, errlen, "--tls-key %s: not a readable, unencrypted PEM private key (%s)",
               key_path, openssl_reason());
    ERR_clear_error();
    goto fail;
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    snprintf(err, errlen, "--tls-key %s is not the private key of the certificate in --tls-cert %s",
             key_path, cert_path);
    ERR_clear_error();
    goto fail;
  }
  X509 *leaf = SSL_CTX_get0_certificate(ctx);
  if (leaf && X509_cmp_current_time(X509_get0_notAfter(leaf)) <= 0)
    WSG_WARN("gateway", "the certificate in --tls-cert %s has expired: clients will refuse it",
             cert_path);
  return ctx;
fail:
  SSL_CTX_free(ctx);
  return NULL;
}

int64_t gw_tls_not_after(const SSL_CTX *ctx) {
  X509 *leaf = SSL_CTX_get0_certificate(ctx);
  struct tm tm;
  if (!leaf || ASN1_TIME_to_tm(X509_get0_notAfter(leaf), &tm) != 1)
    return 0;
  return (int64_t)timegm(&tm);
}

int gw_tls_install(SSL_CTX *live, SSL_CTX *loaded, char *err, size_t errlen) {
  X509 *leaf = SSL_CTX_get0_certificate(loaded);
  EVP_PKEY *pkey = SSL_CTX_get0_privatekey(loaded);
  STACK_OF(X509) *chain = NULL;
  if (!leaf || !pkey || SSL_CTX_get0_chain_certs(loaded, &chain) != 1) {
    snprintf(err, errlen, "the loaded certificate or key is missing");
    return -1;
  }
  if (SSL_CTX_use_cert_and_key(live, leaf, pkey, chain, 1) != 1) {
    snprintf(err, errlen, "OpenSSL refused the new certificate (%s)", openssl_reason());
    return -1;
  }
  return 0;
}
