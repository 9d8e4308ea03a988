/*
 * wsg_redis_keys: builds wsgate's Redis key names and holds the Lua scripts that keep leases and
 * connection entries consistent when several gateways race for them.
 *
 * Threads: any (pure functions and constants).
 */
#include "wsg_redis_keys.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* <prefix><kind><name> into buf. Names may hold any byte (user ids are opaque), so they are
 * copied by length; the result is NUL-terminated for logs, and its length is returned for
 * binary-safe use (hiredis' %b). */
static int build_key(char *buf, size_t len, const char *prefix, const char *kind, const char *name,
                     size_t name_len) {
  if (!buf || !prefix || !name)
    return -1;
  size_t prefix_len = strlen(prefix), kind_len = strlen(kind);
  size_t total = prefix_len + kind_len + name_len;
  if (name_len == 0 || total >= len || total > INT32_MAX)
    return -1;
  memcpy(buf, prefix, prefix_len);
  memcpy(buf + prefix_len, kind, kind_len);
  memcpy(buf + prefix_len + kind_len, name, name_len);
  buf[total] = '\0';
  return (int)total;
}

int wsg_key_gateway(char *buf, size_t len, const char *prefix, const char *gw_id) {
  return gw_id ? build_key(buf, len, prefix, "gw:", gw_id, strlen(gw_id)) : -1;
}

int wsg_key_slot(char *buf, size_t len, const char *prefix, uint32_t slot) {
  char num[16];
  int n = snprintf(num, sizeof(num), "%" PRIu32, slot);
  return build_key(buf, len, prefix, "slot:", num, (size_t)n);
}

int wsg_key_user(char *buf, size_t len, const char *prefix, const char *user, size_t user_len) {
  return build_key(buf, len, prefix, "user:", user, user_len);
}

int wsg_key_room(char *buf, size_t len, const char *prefix, const char *room, size_t room_len) {
  return build_key(buf, len, prefix, "room:", room, room_len);
}

int wsg_conn_id_format(char *buf, size_t len, uint64_t conn_id) {
  if (!buf || len == 0)
    return -1;
  int n = snprintf(buf, len, "%" PRIu64, conn_id);
  return n > 0 && (size_t)n < len ? n : -1;
}

/*
 * The scripts compare and act in one step on the server: a GET followed by a SET or DEL from the
 * client could act on a lease another gateway took in between. Each touches only KEYS[1], so they
 * run unchanged on Redis Cluster. The lease is in milliseconds (PX/PEXPIRE) so tests can use
 * short ones.
 */

/* Take the slot if nobody holds it, or extend it if we already do. */
const char WSG_LUA_LEASE_ACQUIRE[] =
    "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end\n"
    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
    "  redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "  return 1\n"
    "end\n"
    "return 0\n";

/* Extend only our own lease: a gateway that lost its slot (paused past the lease) must not take
 * it back silently from the gateway that holds it now. */
const char WSG_LUA_LEASE_RENEW[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                                   "  redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
                                   "  return 1\n"
                                   "end\n"
                                   "return 0\n";

const char WSG_LUA_LEASE_RELEASE[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                                     "  return redis.call('DEL', KEYS[1])\n"
                                     "end\n"
                                     "return 0\n";

/* A closing connection removes its entry only if it still names this gateway: a reconnect that
 * registered the same connection id elsewhere in the meantime keeps its newer mapping. */
const char WSG_LUA_CONN_DELETE[] = "if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then\n"
                                   "  return redis.call('HDEL', KEYS[1], ARGV[1])\n"
                                   "end\n"
                                   "return 0\n";
