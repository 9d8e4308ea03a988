/*
 * wsg_redis_sync: synchronous, pipelined Redis for a thread that may block (the processor's
 * consumer thread), on one node or on a Redis Cluster, behind one call: wsg_redis_sync_pipeline().
 *
 * One node (no seeds): every command goes to host:port. A cluster (seeds "h:p,h:p"): the slot map
 * is read with CLUSTER SLOTS from the first seed or known node that answers; each command goes to
 * the primary serving its key's slot (wsg_redis_slots.h says which argument is the key; keyless
 * commands go to any node), a pipeline is split per node, every node's commands are written
 * before any reply is read, and the replies come back in the caller's order. MOVED updates the
 * map and resends the command to the named node (a full CLUSTER SLOTS refresh follows); ASK sends
 * ASKING then the command to the named node once; at most 5 redirections per command. A node
 * that fails (I/O error, timeout) drops every connection and marks the map stale: the next
 * connect reads it again, which is how a failover is followed.
 *
 * Every new node connection runs AUTH (user and password, or password only), SELECT (one node
 * only: a cluster has only db 0) and SCRIPT LOAD of every script the owner loaded so far, so
 * EVALSHA works on any node.
 *
 * TLS: Debian 12's hiredis 0.14.1 has no hiredis_ssl (docs/ARCHITECTURE.md, "Redis connections").
 *
 * Threads: one owner thread; nothing here is shared.
 */
#ifndef WSG_REDIS_SYNC_H
#define WSG_REDIS_SYNC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wsg_redis_slots.h"

struct redisReply;

typedef struct wsg_redis_sync wsg_redis_sync;

typedef struct {
  const char *host;                  /* one node: borrowed during create (copied) */
  int port;                          /* one node: 1..65535 */
  const char *seeds;                 /* cluster when non-empty: "host:port,host:port" (copied) */
  const char *user;                  /* ACL user; NULL or "": AUTH with the password only */
  const char *password;              /* NULL or "": no AUTH */
  int db;                            /* SELECT when > 0; must be 0 on a cluster */
  uint64_t timeout_ms;               /* connect and per-reply timeout; > 0 */
  wsg_redis_cluster_metrics metrics; /* a cluster only; primaries_ready is not used */
} wsg_redis_sync_options;

/* Does not connect. Returns 0 with *out set (caller destroys), or -1 with a message. */
int wsg_redis_sync_create(wsg_redis_sync **out, const wsg_redis_sync_options *o, char *err,
                          size_t errlen);
void wsg_redis_sync_destroy(wsg_redis_sync *s); /* NULL is a no-op */

bool wsg_redis_sync_is_cluster(const wsg_redis_sync *s);
const char *wsg_redis_sync_where(const wsg_redis_sync *s); /* "host:port" or "cluster h:p,..." */

/* Connects (one node) or reads the slot map (cluster) if not done since the last drop. 0, or -1
 * with a message (the caller's backoff decides when to try again). */
int wsg_redis_sync_connect(wsg_redis_sync *s, char *err, size_t errlen);
bool wsg_redis_sync_connected(const wsg_redis_sync *s);

/* Drops every connection; the next connect starts over (and re-reads the slot map). */
void wsg_redis_sync_drop(wsg_redis_sync *s);

/* SCRIPT LOAD on every connected node, and on every node connected from now on. script:
 * borrowed for the life of s (a string literal). sha: 41+ bytes. 0, or -1 with a message. */
int wsg_redis_sync_script_load(wsg_redis_sync *s, const char *script, char *sha, size_t shalen,
                               char *err, size_t errlen);

/* Builds command i: argv/lens borrowed until the next call. False: cannot be built. */
typedef bool (*wsg_redis_sync_build_fn)(void *ctx, size_t i, int *argc, const char ***argv,
                                        const size_t **lens);

/*
 * Runs commands [from, to) made by build() as one pipeline per node and stores their replies in
 * reps[0 .. to-from) (the caller frees them). Error replies are replies. On an I/O error, a
 * command that cannot be built or a slot no node serves: every connection is dropped, reps[] is
 * NULL-filled and -1 returned with a message naming `what`.
 */
int wsg_redis_sync_pipeline(wsg_redis_sync *s, size_t from, size_t to,
                            wsg_redis_sync_build_fn build, void *ctx, const char *what,
                            struct redisReply **reps, char *err, size_t errlen);

/* Redirections followed since create (MOVED, ASK) and slot map reads: for tests and logs. */
typedef struct {
  uint64_t moved, ask, map_reads;
} wsg_redis_sync_stats;
void wsg_redis_sync_get_stats(const wsg_redis_sync *s, wsg_redis_sync_stats *out);

#endif
