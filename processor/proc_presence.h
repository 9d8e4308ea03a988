/*
 * proc_presence: who is subscribed to a channel (docs/ARCHITECTURE.md, "Channels"), for
 * wsgate_presence(): common/wsg_chkeys.h's presence recipe, as the gateways' presence op and
 * wsgate-api read it. One WSG_LUA_PRESENCE_READ ("e" mode: entries, at most PROC_PRESENCE_MAX,
 * reading at most as many: bounded work whatever the channel's size), the leases of the members
 * its :pc counts name (one pipelined HGET gw:<id> boot each, uncached: a restarted gateway's
 * previous life is seen at once), entries of dead or uncounted members left out, and the dead
 * ones' hashes and counts deleted (WSG_LUA_PRESENCE_DROP), so a crashed gateway's subscribers
 * vanish within its lease.
 *
 * Threads: the consumer thread (it blocks on Redis).
 */
#ifndef PROC_PRESENCE_H
#define PROC_PRESENCE_H

#include <stddef.h>

#include "proc_redis.h"
#include "wsg_chkeys.h"
#include "wsgate_handler.h"

/* Entries one wsgate_presence() returns at most (and :p entries it reads). */
#define PROC_PRESENCE_MAX WSG_PRESENCE_SCAN_BUDGET

/*
 * The live entries of `channel` into *out[0..*n) (users may repeat: one entry per connection), at
 * most PROC_PRESENCE_MAX: a bigger channel gives the ones read first.
 * Everything lives in one allocation returned in *block (caller frees). Returns WSGATE_OK,
 * WSGATE_E_REDIS (err says why) or WSGATE_E_NOMEM.
 */
int proc_presence_read(proc_redis *r, const char *channel, size_t len,
                       const wsgate_presence_entry **out, size_t *n, void **block, char *err,
                       size_t errlen);

/* Frees what proc_presence_read() returned in *block. NULL is a no-op. */
void proc_presence_free(void *block);

#endif
