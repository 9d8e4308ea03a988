/*
 * harness_tls: certificates for the TLS tests (gateway_tls, gateway_reload).
 */
#ifndef ITEST_HARNESS_TLS_H
#define ITEST_HARNESS_TLS_H

/* A self-signed P-256 certificate for IP 127.0.0.1 (also its own CA, so a client trusts exactly
 * it), valid for a day, and its key, written as PEM; CN `cn`. Fails the test on error. */
void itest_make_cert(const char *cert_path, const char *key_path, const char *cn);

#endif
