/*
 * wsg_chkeys: channel keys and scripts (see wsg_chkeys.h).
 */
#include "wsg_chkeys.h"

#include <stdio.h>
#include <string.h>

int wsg_key_channel(char *buf, size_t len, const char *prefix, const char *ch, size_t ch_len,
                    const char *suffix) {
  if (!buf || len == 0 || !ch || ch_len == 0 || ch_len > 1024)
    return -1;
  /* The tag starts with "c:" so it is never empty whatever the channel's name holds. */
  int n = snprintf(buf, len, "%sch:{c:%.*s}:%s", prefix ? prefix : "", (int)ch_len, ch, suffix);
  return n > 0 && (size_t)n < len ? n : -1;
}

/* One round trip per publication whatever its audience: number, store, and return who to tell. */
const char WSG_LUA_CHANNEL_PUBLISH[] =
    "local now = redis.call('TIME')\n"
    "local e = redis.call('HGET', KEYS[1], 'e')\n"
    "if not e then\n"
    /* History lost (or never kept): a new epoch, above any earlier one of this channel. */
    "  e = string.format('%.0f', tonumber(now[1]) * 1000000 + tonumber(now[2]))\n"
    "  redis.call('DEL', KEYS[2])\n"
    "  redis.call('HSET', KEYS[1], 'e', e, 'o', 0)\n"
    "end\n"
    "local o = redis.call('HINCRBY', KEYS[1], 'o', 1)\n"
    "local size = tonumber(ARGV[1])\n"
    "if size > 0 then\n"
    "  redis.call('XADD', KEYS[2], 'MAXLEN', '~', size, o .. '-0', 't', now[1], ARGV[3], ARGV[4])\n"
    "  redis.call('PEXPIRE', KEYS[2], ARGV[2])\n"
    "end\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "local out = {o, tonumber(e)}\n"
    "for _, g in ipairs(redis.call('SMEMBERS', KEYS[3])) do out[#out + 1] = g end\n"
    "return out\n";

const char WSG_LUA_CHANNEL_GATEWAYS[] = "local g = redis.call('SMEMBERS', KEYS[3])\n"
                                        "local out = {1, 1}\n"
                                        "for i = 1, #g do out[i + 2] = g[i] end\n"
                                        "return out\n";

const char WSG_LUA_CHANNEL_HISTORY[] =
    "local m = redis.call('HMGET', KEYS[1], 'e', 'o')\n"
    "local out = {tonumber(m[1] or '0'), tonumber(m[2] or '0'), 0}\n"
    "if not m[1] then return out end\n"
    "local after = tonumber(ARGV[1])\n"
    "local maxn, maxb = tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local es = redis.call('XRANGE', KEYS[2], '(' .. string.format('%.0f', after) .. '-0', '+',\n"
    "                      'COUNT', maxn + 1)\n"
    "local n, bytes = 0, 0\n"
    "for _, en in ipairs(es) do\n"
    "  if n >= maxn or (n > 0 and bytes >= maxb) then out[3] = 1 break end\n"
    "  local id = en[1]\n"
    "  local f = en[2]\n"
    "  local bin, d = 0, ''\n"
    "  for i = 1, #f, 2 do\n"
    "    if f[i] == 'd' then d = f[i + 1] elseif f[i] == 'b' then d = f[i + 1] bin = 1 end\n"
    "  end\n"
    "  out[#out + 1] = tonumber(string.sub(id, 1, string.find(id, '-') - 1))\n"
    "  out[#out + 1] = bin\n"
    "  out[#out + 1] = d\n"
    "  n = n + 1\n"
    "  bytes = bytes + #d\n"
    "end\n"
    "return out\n";

#define STR_(x)  #x
#define STR(x)   STR_(x)
#define GMAX_LUA "local gmax = " STR(WSG_PRESENCE_GWS_MAX) "\n"

/* Items stop at ARGV[1], reading at ARGV[2]; both bounded whatever the channel's size. The
 * members' hashes are named from :p (KEYS[1]), so they share its hash tag: one cluster slot.
 * Past WSG_PRESENCE_GWS_MAX members a random sample of that many: a fixed choice could keep
 * returning the same live ones, and the dead ones past them would never be dropped. */
const char WSG_LUA_PRESENCE_READ[] =
    GMAX_LUA "local c, more = nil, 0\n"
             "if redis.call('HLEN', KEYS[2]) > gmax then\n"
             "  c, more = redis.call('HRANDFIELD', KEYS[2], gmax, 'WITHVALUES'), 1\n"
             "else\n"
             "  c = redis.call('HGETALL', KEYS[2])\n"
             "end\n"
             "local cap, budget, entries = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == 'e'\n"
             "local out = {more, #c / 2}\n"
             "for i = 1, #c do out[#out + 1] = c[i] end\n"
             "for i = 4, #out, 2 do out[i] = tonumber(out[i]) or 0 end\n"
             "local np, scanned = 0, 0\n"
             "for g = 1, #c, 2 do\n"
             "  local m, seen, cursor = c[g], {}, '0'\n"
             "  repeat\n"
             "    if np >= cap or scanned >= budget then out[1] = 1 break end\n"
             "    local r = redis.call('HSCAN', KEYS[1] .. ':' .. m, cursor, 'COUNT', 200)\n"
             "    cursor = r[1]\n"
             "    for i = 2, #r[2], 2 do\n"
             "      local u = r[2][i]\n"
             "      scanned = scanned + 1\n"
             "      if entries or not seen[u] then\n"
             "        if np >= cap then out[1] = 1\n"
             "        else\n"
             "          seen[u] = true; np = np + 1\n"
             "          if entries then out[#out + 1] = r[2][i - 1] end\n"
             "          out[#out + 1] = u .. '|' .. m\n"
             "        end\n"
             "      end\n"
             "    end\n"
             "  until cursor == '0'\n"
             "end\n"
             "return out\n";

/* O(members): a member's hash goes whole (UNLINK frees a big one off Redis' main thread). */
const char WSG_LUA_PRESENCE_DROP[] = "local n = 0\n"
                                     "for _, m in ipairs(ARGV) do\n"
                                     "  local k = KEYS[1] .. ':' .. m\n"
                                     "  n = n + redis.call('HLEN', k)\n"
                                     "  redis.call('UNLINK', k)\n"
                                     "  redis.call('HDEL', KEYS[2], m)\n"
                                     "end\n"
                                     "return n\n";

int wsg_key_presence(char *buf, size_t len, const char *prefix, const char *ch, size_t ch_len,
                     const char *member) {
  char suffix[2 + WSG_PRESENCE_MEMBER_MAX + 1];
  int n = member ? snprintf(suffix, sizeof suffix, "p:%s", member) : -1;
  if (n <= 2 || (size_t)n >= sizeof suffix)
    return -1;
  return wsg_key_channel(buf, len, prefix, ch, ch_len, suffix);
}

int wsg_presence_member(char *buf, size_t len, const char *gw_id, const char *boot) {
  size_t gl = gw_id ? strlen(gw_id) : 0;
  if (gl == 0 || !boot || strlen(boot) != WSG_GW_BOOT_LEN ||
      strspn(boot, "0123456789abcdef") != WSG_GW_BOOT_LEN ||
      gl + 1 + WSG_GW_BOOT_LEN > WSG_PRESENCE_MEMBER_MAX)
    return -1;
  int n = snprintf(buf, len, "%s#%s", gw_id, boot);
  return n > 0 && (size_t)n < len ? n : -1;
}

bool wsg_presence_member_split(const char *m, size_t len, size_t *gw_len, const char **boot) {
  if (len < 2 + WSG_GW_BOOT_LEN || len > WSG_PRESENCE_MEMBER_MAX ||
      m[len - WSG_GW_BOOT_LEN - 1] != '#')
    return false;
  for (size_t i = len - WSG_GW_BOOT_LEN; i < len; i++)
    if (!((m[i] >= '0' && m[i] <= '9') || (m[i] >= 'a' && m[i] <= 'f')))
      return false;
  *gw_len = len - WSG_GW_BOOT_LEN - 1;
  *boot = m + *gw_len + 1;
  return true;
}

bool wsg_presence_split(const char *v, size_t len, size_t *user_len, const char **gw,
                        size_t *gw_len) {
  size_t bar = len;
  while (bar > 0 && v[bar - 1] != '|')
    bar--;
  if (bar < 2 || bar == len) /* no '|', an empty user, or an empty gateway */
    return false;
  *user_len = bar - 1;
  *gw = v + bar;
  *gw_len = len - bar;
  return true;
}
