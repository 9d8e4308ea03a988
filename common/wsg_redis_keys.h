/*
 * wsg_redis_keys: wsgate's Redis keys and Lua scripts, the contract shared by the gateway, the
 * processor, tools and processors written in other languages (docs/ARCHITECTURE.md lists them).
 *
 *   <prefix>gw:<gw_id>        hash {slot, addr, started, conns, version}, TTL = lease
 *   <prefix>slot:<k>          string gw_id, TTL = lease, renewed only by its holder
 *   <prefix>user:<user_id>    hash {conn_id: gw_id}, every live connection of a user
 *   <prefix>room:<room>       set of user ids (the chat handler)
 *   <prefix>replay:{u:<user>}      stream of the user's recent deliveries, ids 0-<q> (resume)
 *   <prefix>replay:{u:<user>}:seq  string: the user's delivery sequence, the last q assigned
 *
 * Every script touches exactly one key, except the two replay scripts, whose two keys share the
 * hash tag {u:<user>}: the layout works on Redis Cluster unchanged. (The tag starts with "u:" so
 * it is never empty, whatever the user id holds: a user id starting with '}' would otherwise make
 * an empty tag, and Redis would hash the two whole names to different slots.)
 * Key builders write into a caller buffer and return the length, or -1 if it does not fit (or
 * the name is empty).
 */
#ifndef WSG_REDIS_KEYS_H
#define WSG_REDIS_KEYS_H

#include <stddef.h>
#include <stdint.h>

#define WSG_REDIS_KEY_MAX 512

int wsg_key_gateway(char *buf, size_t len, const char *prefix, const char *gw_id);
int wsg_key_slot(char *buf, size_t len, const char *prefix, uint32_t slot);
int wsg_key_user(char *buf, size_t len, const char *prefix, const char *user, size_t user_len);
int wsg_key_room(char *buf, size_t len, const char *prefix, const char *room, size_t room_len);
int wsg_key_replay(char *buf, size_t len, const char *prefix, const char *user, size_t user_len);
int wsg_key_replay_seq(char *buf, size_t len, const char *prefix, const char *user,
                       size_t user_len);

/* Connection ids travel in Redis as decimal strings. Returns the length written. */
int wsg_conn_id_format(char *buf, size_t len, uint64_t conn_id);

/*
 * KEYS[1] = slot key, ARGV[1] = gw_id, ARGV[2] = lease ms.
 * Takes the slot if free, or renews it if `gw_id` holds it. Returns 1 if held by gw_id after the
 * call, 0 if another gateway holds it.
 */
extern const char WSG_LUA_LEASE_ACQUIRE[];
/* KEYS[1] = slot key, ARGV[1] = gw_id, ARGV[2] = lease ms. Renews only if gw_id holds it: 1, else
 * 0. */
extern const char WSG_LUA_LEASE_RENEW[];
/* KEYS[1] = slot key, ARGV[1] = gw_id. Deletes only if gw_id holds it: 1, else 0. */
extern const char WSG_LUA_LEASE_RELEASE[];
/* KEYS[1] = user key, ARGV[1] = conn_id, ARGV[2] = gw_id. HDEL only if the field still names gw_id.
 */
extern const char WSG_LUA_CONN_DELETE[];
/*
 * KEYS[1] = user key, ARGV[1] = conn_id, ARGV[2] = gw_id, ARGV[3] = most entries (0: no limit),
 * ARGV[4] = the key's TTL ms. HSET, PEXPIRE and 1, unless the key already holds that many entries
 * (and not this one): then nothing is written and the entries' values (gateway ids) are returned,
 * an array.
 */
extern const char WSG_LUA_CONN_ADD[];
/* KEYS[1] = user key, ARGV = ids of gateways whose lease is gone. Deletes every entry naming one of
 * them; returns how many. */
extern const char WSG_LUA_CONN_PRUNE[];

/*
 * Resume (docs/ARCHITECTURE.md, "Resume"). KEYS[1] = replay stream, KEYS[2] = its :seq counter.
 *
 * APPEND, run by processors for every delivery to a user. ARGV[1] = approximate entries kept
 * (MAXLEN ~), ARGV[2] = stream TTL ms, ARGV[3] = counter TTL ms, ARGV[4] = "d" for a text payload,
 * "b" for a binary one, ARGV[5] = payload. Without a counter (only READ creates one, when a
 * resumable connection registers) it stores nothing and returns 0: a send to a user who never
 * connected with +seq costs no memory. Otherwise assigns the next q, stores the payload as stream
 * entry 0-<q> with fields t (server time, seconds) and d or b, refreshes both TTLs and returns q.
 */
extern const char WSG_LUA_REPLAY_APPEND[];
/* TOUCH, run by gateways for users with a live resumable connection: KEYS[1] = the :seq counter,
 * ARGV[1] = its TTL ms. Renews it, or creates it at the server's time in microseconds as READ
 * does (Redis lost it), so such a user's deliveries keep being numbered. Returns 1. */
extern const char WSG_LUA_SEQ_TOUCH[];
/*
 * READ, run by gateways. ARGV[1] = "" for the position only, else the q to read after; ARGV[2] =
 * most entries, ARGV[3] = most payload bytes (at least one entry is returned), ARGV[4] = age limit
 * ms (entries older are skipped; 0: none), ARGV[5] = farthest distance behind the counter to read
 * from (0: none), ARGV[6] = TTL ms of a counter created here. An absent counter is created at the
 * server's time in microseconds: the position a client is given then stays valid.
 * Returns {counter} for a position, else {counter, more, q1, b1, d1, q2, b2, d2, ...}: entries
 * after ARGV[1] in order (integers q and b, bulk d); more = 1 when a bound stopped the page.
 * Anything skipped (too old, beyond the distance, trimmed, expired) shows as a jump in q.
 */
extern const char WSG_LUA_REPLAY_READ[];

#endif
