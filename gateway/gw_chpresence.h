/*
 * gw_chpresence: the client's presence op, the parts with no server state (docs/PROTOCOL.md,
 * "Presence"): the Lua script that summarises ch:{c:<channel>}:p in Redis, its reply copied into
 * a gw_chpres_read, the tally once the gateways' liveness is known, and the answer frame (JSON or
 * MessagePack). The asynchronous query itself is gw_chpresq.c's.
 *
 * Why a script and not HGETALL: a channel of 50,000 subscribers would send megabytes to the
 * gateway per query, and walking its hash costs Redis about half a second (measured: 532 ms for
 * 50,000 entries, 27 ms for 10,000). The counts come from ch:{c:<channel>}:pc, which each gateway
 * keeps (its id -> its subscriptions of the channel: O(gateways) to read), and the names from an
 * HSCAN of :p that stops at `4 * max_users` distinct user|gateway pairs or GW_CHPRES_SCAN_BUDGET
 * entries: the work and the reply are bounded whatever the channel's size.
 *
 * Threads: none of its own; every function is reentrant.
 */
#ifndef GW_CHPRESENCE_H
#define GW_CHPRESENCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gw_chops.h"

struct redisReply;

#define GW_CHPRES_USERS_DEFAULT  100  /* --channel-presence-users */
#define GW_CHPRES_USERS_MAX      1000 /* its bound: an answer stays under ~260 KiB */
#define GW_CHPRES_PAIRS_PER_USER 4    /* pairs the script returns per user the answer may hold */
#define GW_CHPRES_GWS_MAX        256  /* gateways in one channel's presence (else unavailable) */
#define GW_CHPRES_PER_CONN       4    /* queries in flight per connection */
#define GW_CHPRES_SCAN_BUDGET    4000 /* :p entries one query reads at most */

/* KEYS[1] = the :p hash, KEYS[2] = the :pc hash, ARGV[1] = the most user|gateway pairs to
 * return, ARGV[2] = the most :p entries to read. Returns {more, ngws, gw1, conns1, ..., pair1,
 * pair2, ...}: `more` 1 when the scan stopped before the end (pairs may have been left out). */
extern const char GW_CHPRES_LUA_READ[];
/* KEYS[1] = the :p hash, KEYS[2] = the :pc hash, ARGV = ids of gateways whose gw:<id> record is
 * gone: deletes their entries and counts, returns how many entries. */
extern const char GW_CHPRES_LUA_DROP[];

/* What the script said, copied (the reply is gone by the time the liveness checks answer). */
typedef struct {
  bool more;
  uint32_t ngws;
  struct {
    char id[WSG_MAX_GATEWAY_LEN + 1];
    uint64_t conns;
    bool dead; /* set by the caller: no gw:<id> record */
  } gw[GW_CHPRES_GWS_MAX];
  uint32_t npairs;
  char **pairs; /* owned: npairs NUL-terminated "user|gw" strings */
} gw_chpres_read;

/* Copies a GW_CHPRES_LUA_READ reply into a new read (caller frees with gw_chpres_read_free).
 * NULL when rep is not one (or has more than GW_CHPRES_GWS_MAX gateways), or out of memory. */
gw_chpres_read *gw_chpres_read_parse(const struct redisReply *rep);
void gw_chpres_read_free(gw_chpres_read *rd); /* NULL is a no-op */

/* The answer's numbers: connections of live gateways, their distinct users (sorted, at most
 * max_users, pointing into rd), truncated when some were left out. */
typedef struct {
  uint64_t connections;
  uint32_t nusers;
  bool truncated;
  const char **users; /* owned array (free()), strings borrowed from rd */
  size_t *user_lens;  /* owned, with users */
} gw_chpres_result;

/* 0, or -1 when out of memory. */
int gw_chpres_tally(const gw_chpres_read *rd, uint32_t max_users, gw_chpres_result *res);
void gw_chpres_result_free(gw_chpres_result *res);

/*
 * The answer {"wsgate":"presence","id":..,"channel":..,"connections":N,"users":[..]} (and
 * "truncated":true when it is) in op's format, into a new buffer *out (caller frees). Returns its
 * length, or 0 when out of memory. Users that are not valid UTF-8 are left out of a JSON answer.
 */
size_t gw_chpres_answer(const gw_chop *op, const gw_chpres_result *res, uint8_t **out);

#endif
