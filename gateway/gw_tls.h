/*
 * gw_tls: the gateway's certificate and key files (--tls-cert, --tls-key) loaded and checked the
 * way libwebsockets loads them, at start (so a bad file is reported by name before anything else
 * starts) and on every reload, and a checked pair installed into the SSL_CTX libwebsockets serves
 * with, so new handshakes get the new certificate while open connections keep theirs.
 *
 * Threads: any; gw_tls_install on the loop thread (where handshakes run).
 */
#ifndef GW_TLS_H
#define GW_TLS_H

#include <openssl/types.h>
#include <stddef.h>
#include <stdint.h>

/* A scratch server SSL_CTX holding cert_path's chain and key_path's key, checked to match
 * (caller frees with SSL_CTX_free), or NULL with the file and the problem in err. An expired
 * certificate is only logged: refusing it would turn a late rotation into an outage. */
SSL_CTX *gw_tls_load(const char *cert_path, const char *key_path, char *err, size_t errlen);

/* The leaf certificate's notAfter as Unix seconds, 0 when ctx holds none. ctx: borrowed. */
int64_t gw_tls_not_after(const SSL_CTX *ctx);

/* Installs the certificate, chain and key of `loaded` into `live` in one step (no moment with a
 * certificate and a key that do not match). 0, or -1 with the reason in err. Both borrowed. */
int gw_tls_install(SSL_CTX *live, SSL_CTX *loaded, char *err, size_t errlen);

#endif
