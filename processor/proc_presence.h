/*
 * proc_presence: who is subscribed to a channel (docs/ARCHITECTURE.md, "Channels"), for
 * wsgate_presence(): HGETALL ch:{c:<channel>}:p (written by gateways for namespaces with
 * presence=true), the entries of gateways whose gw:<id> record is gone skipped and removed
 * (HDEL), so a crashed gateway's subscribers vanish within its lease.
 *
 * Threads: the consumer thread (it blocks on Redis).
 */
#ifndef PROC_PRESENCE_H
#define PROC_PRESENCE_H

#include <stddef.h>

#include "proc_redis.h"
#include "wsgate_handler.h"

/*
 * The live entries of `channel` into *out[0..*n) (users may repeat: one entry per connection).
 * Everything lives in one allocation returned in *block (caller frees). Returns WSGATE_OK,
 * WSGATE_E_REDIS (err says why) or WSGATE_E_NOMEM. rt: the caller's scratch.
 */
int proc_presence_read(proc_redis *r, proc_routes *rt, const char *channel, size_t len,
                       const wsgate_presence_entry **out, size_t *n, void **block, char *err,
                       size_t errlen);

/* Frees what proc_presence_read() returned in *block. NULL is a no-op. */
void proc_presence_free(void *block);

#endif
