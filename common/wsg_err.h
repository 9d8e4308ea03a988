/*
 * wsg_err: the one way a function fills its caller's error buffer (`char *err, size_t errlen`,
 * the convention of every create/open/connect in wsgate).
 *
 * Threads: any; reentrant.
 */
#ifndef WSG_ERR_H
#define WSG_ERR_H

#include <stddef.h>

/* snprintf into err[errlen] (nothing when err is NULL or errlen is 0). Returns -1, so that a
 * failing function can `return wsg_err_set(err, errlen, "...", ...);` (git's error()). */
int wsg_err_set(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
