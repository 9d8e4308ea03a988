/*
 * wsg_redis_keys: wsgate's Redis keys and Lua scripts, the contract shared by the gateway, the
 * processor, tools and processors written in other languages (docs/ARCHITECTURE.md lists them).
 *
 *   <prefix>gw:<gw_id>        hash {slot, addr, started, conns, version}, TTL = lease
 *   <prefix>slot:<k>          string gw_id, TTL = lease, renewed only by its holder
 *   <prefix>user:<user_id>    hash {conn_id: gw_id}, every live connection of a user
 *   <prefix>room:<room>       set of user ids (the chat handler)
 *
 * Every script touches exactly one key, so the layout works on Redis Cluster unchanged.
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

/* Connection ids travel in Redis as decimal strings. Returns the length written. */
int wsg_conn_id_format(char *buf, size_t len, uint64_t conn_id);

/*
 * KEYS[1] = slot key, ARGV[1] = gw_id, ARGV[2] = lease ms.
 * Takes the slot if free, or renews it if `gw_id` holds it. Returns 1 if held by gw_id after the
 * call, 0 if another gateway holds it.
 */
extern const char WSG_LUA_LEASE_ACQUIRE[];
/* KEYS[1] = slot key, ARGV[1] = gw_id, ARGV[2] = lease ms. Renews only if gw_id holds it: 1, else 0. */
extern const char WSG_LUA_LEASE_RENEW[];
/* KEYS[1] = slot key, ARGV[1] = gw_id. Deletes only if gw_id holds it: 1, else 0. */
extern const char WSG_LUA_LEASE_RELEASE[];
/* KEYS[1] = user key, ARGV[1] = conn_id, ARGV[2] = gw_id. HDEL only if the field still names gw_id. */
extern const char WSG_LUA_CONN_DELETE[];

#endif
