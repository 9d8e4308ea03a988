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

/* <prefix>replay:{u:<user>}<suffix>: the braces make {u:<user>} (up to the user's first '}') the
 * Redis Cluster hash tag of both replay keys of a user. */
static int build_replay_key(char *buf, size_t len, const char *prefix, const char *user,
                            size_t user_len, const char *suffix) {
  if (!buf || !prefix || !user || user_len == 0)
    return -1;
  size_t prefix_len = strlen(prefix), suffix_len = strlen(suffix);
  static const char head[] = "replay:{u:";
  size_t head_len = sizeof(head) - 1;
  size_t total = prefix_len + head_len + user_len + 1 + suffix_len;
  if (total >= len || total > INT32_MAX)
    return -1;
  char *p = buf;
  memcpy(p, prefix, prefix_len);
  p += prefix_len;
  memcpy(p, head, head_len);
  p += head_len;
  memcpy(p, user, user_len);
  p += user_len;
  *p++ = '}';
  memcpy(p, suffix, suffix_len);
  buf[total] = '\0';
  return (int)total;
}

int wsg_key_replay(char *buf, size_t len, const char *prefix, const char *user, size_t user_len) {
  return build_replay_key(buf, len, prefix, user, user_len, "");
}

int wsg_key_replay_seq(char *buf, size_t len, const char *prefix, const char *user,
                       size_t user_len) {
  return build_replay_key(buf, len, prefix, user, user_len, ":seq");
}

int wsg_conn_id_format(char *buf, size_t len, uint64_t conn_id) {
  if (!buf || len == 0)
    return -1;
  int n = snprintf(buf, len, "%" PRIu64, conn_id);
  return n > 0 && (size_t)n < len ? n : -1;
}

/* Each script compares and acts in one step on one key, so it runs on Redis Cluster unchanged
 * (docs/notes/redis-keys.md#one-key-scripts). */

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

/* The per-user connection limit: one key, so the count and the add are one atomic step on Redis
 * Cluster too; over the limit the entries' gateways go back for the caller to prune the dead. */
const char WSG_LUA_CONN_ADD[] = "local lim = tonumber(ARGV[3])\n"
                                "if lim > 0 and redis.call('HLEN', KEYS[1]) >= lim and\n"
                                "   redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then\n"
                                "  return redis.call('HVALS', KEYS[1])\n"
                                "end\n"
                                "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])\n"
                                "redis.call('PEXPIRE', KEYS[1], ARGV[4])\n"
                                "return 1\n";

const char WSG_LUA_CONN_PRUNE[] = "local dead = {}\n"
                                  "for i = 1, #ARGV do dead[ARGV[i]] = true end\n"
                                  "local all = redis.call('HGETALL', KEYS[1])\n"
                                  "local n = 0\n"
                                  "for i = 1, #all, 2 do\n"
                                  "  if dead[all[i + 1]] then\n"
                                  "    redis.call('HDEL', KEYS[1], all[i])\n"
                                  "    n = n + 1\n"
                                  "  end\n"
                                  "end\n"
                                  "return n\n";

/* A live resumable connection keeps its user's sequence: renewed, or started again at the
 * server's time (Redis lost it) as the replay read would. */
const char WSG_LUA_SEQ_TOUCH[] =
    "if redis.call('PEXPIRE', KEYS[1], ARGV[1]) == 0 then\n"
    "  local now = redis.call('TIME')\n"
    "  local q = tonumber(now[1]) * 1000000 + tonumber(now[2])\n"
    "  redis.call('SET', KEYS[1], string.format('%.0f', q), 'PX', ARGV[1])\n"
    "end\n"
    "return 1\n";

/* Resume: counter and stream in one script, so concurrent senders get increasing q stored in
 * order; kept short, it runs per delivery (docs/notes/redis-keys.md#replay-append). */
const char WSG_LUA_REPLAY_APPEND[] =
    "local now = redis.call('TIME')\n"
    "local c = redis.call('GET', KEYS[2])\n"
    /* No counter: the user has no resumable connection (a gateway creates the counter when one
     * registers), so nothing is stored for them; made-up ids cost no memory (issue 16 item 7). */
    "if not c then return 0 end\n"
    "local id = redis.call('XADD', KEYS[1], 'NOMKSTREAM', 'MAXLEN', '~', ARGV[1], '0-*',\n"
    "                      't', now[1], ARGV[4], ARGV[5])\n"
    "if id and tonumber(string.sub(id, 3)) <= tonumber(c) then\n"
    /* The stream lags its counter (a counter created by a gateway while the stream of an expired
     * one lived on: TTLs configured apart): its entries belong to no sequence a client holds. */
    "  redis.call('DEL', KEYS[1])\n"
    "  id = nil\n"
    "end\n"
    "if not id then\n"
    /* NOMKSTREAM gave no entry (nil): the stream expired. It starts again at the next q. */
    "  local q = tonumber(c) + 1\n"
    "  redis.call('DEL', KEYS[1])\n"
    "  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '0-' .. string.format('%.0f', q),\n"
    "                  't', now[1], ARGV[4], ARGV[5])\n"
    "end\n"
    "local seq = string.sub(id, 3)\n"
    "redis.call('SET', KEYS[2], seq, 'PX', ARGV[3])\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "return tonumber(seq)\n";

/* Pages bounded by entries and bytes in the script; foreign or old entries show as a gap
 * (docs/notes/redis-keys.md#replay-read). */
const char WSG_LUA_REPLAY_READ[] =
    "local now = redis.call('TIME')\n"
    "local c = redis.call('GET', KEYS[2])\n"
    "if not c then\n"
    "  c = string.format('%.0f', tonumber(now[1]) * 1000000 + tonumber(now[2]))\n"
    "  redis.call('SET', KEYS[2], c, 'PX', ARGV[6])\n"
    "end\n"
    "local counter = tonumber(c)\n"
    "if counter == nil then return redis.error_reply('the replay counter is not a number') end\n"
    "if ARGV[1] == '' then return {counter} end\n"
    "local after = tonumber(ARGV[1])\n"
    "local maxn, maxb = tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local dist = tonumber(ARGV[5])\n"
    "if dist > 0 and counter - after > dist then after = counter - dist end\n"
    "local cutoff = 0\n"
    "if tonumber(ARGV[4]) > 0 then\n"
    "  cutoff = tonumber(now[1]) - math.floor(tonumber(ARGV[4]) / 1000)\n"
    "end\n"
    "local out = {counter, 0}\n"
    "local n, bytes = 0, 0\n"
    "local from = '(0-' .. string.format('%.0f', after)\n"
    "while true do\n"
    "  local batch = redis.call('XRANGE', KEYS[1], from, '+', 'COUNT', 32)\n"
    "  if #batch == 0 then return out end\n"
    "  for i = 1, #batch do\n"
    "    local f = batch[i][2]\n"
    "    if #f == 4 and f[1] == 't' and (f[3] == 'd' or f[3] == 'b') and tonumber(f[2]) ~= nil\n"
    "        and tonumber(f[2]) >= cutoff then\n"
    "      if n >= maxn or (n > 0 and bytes + #f[4] > maxb) then\n"
    "        out[2] = 1\n"
    "        return out\n"
    "      end\n"
    "      out[#out + 1] = tonumber(string.sub(batch[i][1], 3))\n"
    "      out[#out + 1] = f[3] == 'b' and 1 or 0\n"
    "      out[#out + 1] = f[4]\n"
    "      n = n + 1\n"
    "      bytes = bytes + #f[4]\n"
    "    end\n"
    "  end\n"
    "  from = '(' .. batch[#batch][1]\n"
    "end\n";
