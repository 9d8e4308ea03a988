/*
 * proc_util: shared processor helpers (see proc_util.h).
 *
 * Threads: any.
 */
#include "proc_util.h"

#include <stdlib.h>

uint64_t proc__hash(const void *p, size_t n) {
  const unsigned char *s = p;
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; i++) {
    h ^= s[i];
    h *= 1099511628211ULL;
  }
  return h;
}

int proc__reserve(void **p, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap)
    return 0;
  size_t ncap = *cap ? *cap : 64;
  while (ncap < need) {
    if (ncap > SIZE_MAX / 2 / elem)
      return -1;
    ncap *= 2;
  }
  void *n = realloc(*p, ncap * elem);
  if (!n)
    return -1;
  *p = n;
  *cap = ncap;
  return 0;
}
