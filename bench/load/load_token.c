/*
 * load_token: bearer tokens for wsgate-load (see load_token.h).
 *
 * Threads: the load process's only thread.
 */
#include "load_token.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "load_ws.h"

#define SECRET_MAX 4096

int load_token_jwt(const uint8_t *secret, size_t secret_len, const char *user, int64_t now,
                   int64_t ttl_s, char *out, size_t cap) {
  static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
  char claims[512];
  /* The channels claim lets --proto channel subscribe (wsgate's --channel-claim default). */
  int cl = snprintf(claims, sizeof claims,
                    "{\"sub\":\"%s\",\"iat\":%lld,\"exp\":%lld,\"channels\":[\"*\"]}", user,
                    (long long)now, (long long)(now + ttl_s));
  if (cl < 0 || (size_t)cl >= sizeof claims)
    return -1;
  /* base64url grows 3 bytes to 4; 43 characters of signature, two dots, the NUL. */
  size_t need = 4 * ((sizeof header - 1 + 2) / 3) + 4 * (((size_t)cl + 2) / 3) + 43 + 3;
  if (cap < need)
    return -1;
  size_t o = load_base64url((const uint8_t *)header, sizeof header - 1, out);
  out[o++] = '.';
  o += load_base64url((const uint8_t *)claims, (size_t)cl, out + o);
  uint8_t mac[EVP_MAX_MD_SIZE];
  unsigned maclen = 0;
  if (!HMAC(EVP_sha256(), secret, (int)secret_len, (const uint8_t *)out, o, mac, &maclen) ||
      maclen != 32)
    return -1;
  out[o++] = '.';
  o += load_base64url(mac, maclen, out + o);
  return (int)o;
}

int load_token_cmd(const char *cmd, const char *user, char *out, size_t cap, char *err,
                   size_t errlen) {
  size_t need = strlen(cmd) + strlen(user) + 2;
  char *line = malloc(need);
  if (!line) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  snprintf(line, need, "%s %s", cmd, user);
  FILE *f = popen(line, "r");
  free(line);
  if (!f) {
    snprintf(err, errlen, "--token-cmd: cannot run /bin/sh: %s", strerror(errno));
    return -1;
  }
  size_t len = 0;
  int c;
  bool too_long = false;
  while ((c = fgetc(f)) != EOF && c != '\n') {
    if (len + 1 >= cap) {
      too_long = true;
      continue;
    }
    out[len++] = (char)c;
  }
  while (c != EOF)
    c = fgetc(f); /* let the command finish writing; pclose would otherwise SIGPIPE it */
  int status = pclose(f);
  while (len > 0 && (out[len - 1] == ' ' || out[len - 1] == '\r' || out[len - 1] == '\t'))
    len--;
  out[len] = '\0';
  if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    snprintf(err, errlen, "--token-cmd \"%s %s\" failed (exit status %d)", cmd, user,
             status == -1 || !WIFEXITED(status) ? -1 : WEXITSTATUS(status));
    return -1;
  }
  if (too_long || len == 0) {
    snprintf(err, errlen, "--token-cmd \"%s %s\" printed %s", cmd, user,
             too_long ? "a token longer than 8191 bytes" : "no token");
    return -1;
  }
  return (int)len;
}

uint8_t *load_token_read_secret(const char *path, size_t *len, char *err, size_t errlen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    snprintf(err, errlen, "--jwt-secret-file %s: %s", path, strerror(errno));
    return NULL;
  }
  uint8_t *buf = malloc(SECRET_MAX + 1);
  size_t n = 0;
  while (buf && n <= SECRET_MAX) {
    ssize_t r = read(fd, buf + n, SECRET_MAX + 1 - n);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      snprintf(err, errlen, "--jwt-secret-file %s: %s", path, strerror(errno));
      goto fail;
    }
    if (r == 0)
      break;
    n += (size_t)r;
  }
  if (!buf) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  if (n > SECRET_MAX) {
    snprintf(err, errlen, "--jwt-secret-file %s: longer than %d bytes", path, SECRET_MAX);
    goto fail;
  }
  if (n > 0 && buf[n - 1] == '\n')
    n--;
  if (n == 0) {
    snprintf(err, errlen, "--jwt-secret-file %s is empty", path);
    goto fail;
  }
  close(fd);
  *len = n;
  return buf;
fail:
  close(fd);
  free(buf);
  return NULL;
}
