/*
 * gw_chperm: channel permissions from a token claim (see gw_chperm.h).
 *
 * Threads: none of its own; every function is reentrant.
 */
#include <jansson.h>
#include <string.h>

#include "gw_chperm.h"

const char GW_CHPERM_ANY[] = "*\0";

size_t gw_chperm_from_claims(const uint8_t *claims, size_t len, const char *name, char *out,
                             size_t cap) {
  size_t used = 0;
  json_error_t jerr;
  json_t *j = json_loadb((const char *)claims, len, JSON_ALLOW_NUL, &jerr); /* as gw_jwt */
  const json_t *arr = json_is_object(j) ? json_object_get(j, name) : NULL;
  if (json_is_array(arr)) {
    size_t i;
    const json_t *v;
    json_array_foreach(arr, i, v) {
      size_t n = json_is_string(v) ? json_string_length(v) : 0;
      const char *str = n ? json_string_value(v) : NULL;
      if (!str || memchr(str, '\0', n) || used + n + 2 > cap)
        continue;
      memcpy(out + used, str, n + 1);
      used += n + 1;
    }
  }
  json_decref(j);
  out[used++] = '\0';
  return used;
}

bool gw_chperm_allows(const char *perm, const char *channel, size_t len) {
  if (!perm)
    return false;
  for (const char *p = perm; *p; p += strlen(p) + 1) {
    size_t n = strlen(p);
    if (p[n - 1] == '*') {
      if (len >= n - 1 && memcmp(p, channel, n - 1) == 0)
        return true;
    } else if (n == len && memcmp(p, channel, len) == 0) {
      return true;
    }
  }
  return false;
}

size_t gw_chperm_size(const char *perm) {
  const char *p = perm;
  while (*p)
    p += strlen(p) + 1;
  return (size_t)(p - perm) + 1;
}
