/*
 * proc_redis_reply: hiredis replies of a handler's pipeline turned into the handler-facing
 * wsgate_redis_reply views (wsgate_handler.h), all in one allocation, so a handler frees one block
 * and never sees a hiredis type.
 *
 * Threads: any (pure; the consumer thread calls it).
 */
#ifndef PROC_REDIS_REPLY_H
#define PROC_REDIS_REPLY_H

#include <stddef.h>

#include "wsgate_handler.h"

struct redisReply;

/*
 * Converts reps[0..n) (borrowed; a NULL reply becomes a nil) into replies[0..n), which point into
 * one block returned in *block (caller frees with free(), after which replies[] dangle).
 * Returns WSGATE_OK, or WSGATE_E_NOMEM with a message in err and *block NULL.
 */
int proc_redis_reply_convert(const struct redisReply *const *reps, size_t n,
                             const wsgate_redis_reply **replies, void **block, char *err,
                             size_t errlen);

#endif
