/*
 * gw_chpresence: the client's presence op, the parts with no server state (docs/PROTOCOL.md,
 * "Presence"): the reply of the script that summarises a channel's presence in Redis, copied into
 * a gw_chpres_read, the tally once the gateways' liveness is known, and the answer frame (JSON or
 * MessagePack). The asynchronous query itself is gw_chpresq.c's.
 *
 * Reading is common/wsg_chkeys.h's presence recipe (WSG_LUA_PRESENCE_READ in "u" mode: distinct
 * <user>|<member> values, at most `4 * max_users` of them), the one handlers and wsgate-api use
 * too.
 *
 * Threads: none of its own; every function is reentrant.
 */
#ifndef GW_CHPRESENCE_H
#define GW_CHPRESENCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gw_chops.h"
#include "wsg_chkeys.h"

struct redisReply;

#define GW_CHPRES_USERS_DEFAULT  100  /* --channel-presence-users */
#define GW_CHPRES_USERS_MAX      1000 /* its bound: an answer stays under ~260 KiB */
#define GW_CHPRES_PAIRS_PER_USER 4    /* pairs the script returns per user the answer may hold */
#define GW_CHPRES_PER_CONN       4    /* queries in flight per connection */

/* What the script said, copied (the reply is gone by the time the liveness checks answer). */
typedef struct {
  bool more;
  uint32_t ngws;
  struct {
    char id[WSG_PRESENCE_MEMBER_MAX + 1]; /* the member, <gw id>#<boot> */
    uint64_t conns;
    bool dead; /* set by the caller: no gw:<id> record, or one of another boot */
  } gw[WSG_PRESENCE_GWS_MAX];
  uint32_t npairs;
  char **pairs; /* owned: npairs NUL-terminated "user|member" strings */
} gw_chpres_read;

/* Copies a WSG_LUA_PRESENCE_READ reply into a new read (caller frees with gw_chpres_read_free).
 * NULL when rep is not one (the script never returns more than WSG_PRESENCE_GWS_MAX gateways), or
 * out of memory. */
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
