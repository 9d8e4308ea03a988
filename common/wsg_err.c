/*
 * wsg_err: see wsg_err.h.
 *
 * Threads: any.
 */
#include "wsg_err.h"

#include <stdarg.h>
#include <stdio.h>

int wsg_err_set(char *err, size_t errlen, const char *fmt, ...) {
  if (err && errlen > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return -1;
}
