/*
 * harness_tls: certificates for the TLS tests (harness_tls.h), made with OpenSSL: nothing is read
 * from the machine.
 */
#include "harness_tls.h"

#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

void itest_make_cert(const char *cert_path, const char *key_path, const char *cn) {
  EVP_PKEY *pkey = EVP_EC_gen("P-256");
  cr_assert_not_null(pkey, "EVP_EC_gen failed");
  X509 *x = X509_new();
  cr_assert_not_null(x);
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), (long)(getpid() ^ rand()));
  X509_gmtime_adj(X509_getm_notBefore(x), -60);
  X509_gmtime_adj(X509_getm_notAfter(x), 86400);
  X509_set_pubkey(x, pkey);
  X509_NAME *name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
  X509_set_issuer_name(x, name);
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
  const char *exts[][2] = {{"subjectAltName", "IP:127.0.0.1"},
                           {"basicConstraints", "critical,CA:TRUE"},
                           {"keyUsage", "critical,digitalSignature,keyCertSign"}};
  for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++) {
    X509_EXTENSION *ext = X509V3_EXT_conf(NULL, &v3, exts[i][0], exts[i][1]);
    cr_assert_not_null(ext, "extension %s", exts[i][0]);
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
  }
  cr_assert(X509_sign(x, pkey, EVP_sha256()) > 0, "X509_sign failed");
  FILE *f = fopen(cert_path, "w");
  cr_assert_not_null(f, "%s", cert_path);
  cr_assert(PEM_write_X509(f, x) == 1);
  fclose(f);
  f = fopen(key_path, "w");
  cr_assert_not_null(f, "%s", key_path);
  cr_assert(PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL) == 1);
  fclose(f);
  X509_free(x);
  EVP_PKEY_free(pkey);
}
