/*
 * wsg_chkeys: the Redis keys and Lua scripts of channels (docs/ARCHITECTURE.md, "Channels"),
 * shared by gateways, processors and programs in other languages:
 *
 *   <prefix>ch:{c:<channel>}:gws  set of the ids of gateways with subscribers of the channel
 *   <prefix>ch:{c:<channel>}:h    stream, the channel's history: ids <offset>-0, fields t, d|b
 *   <prefix>ch:{c:<channel>}:m    hash {e: epoch, o: last offset}
 *   <prefix>ch:{c:<channel>}:p    hash <conn id> -> <user>|<gw id> (presence)
 *
 * Every key of a channel carries the hash tag {c:<channel>}: a script over them runs on one
 * Redis Cluster slot. Key builders write into a caller buffer and return the length, or -1 if it
 * does not fit.
 */
#ifndef WSG_CHKEYS_H
#define WSG_CHKEYS_H

#include <stddef.h>

/* suffix: "gws", "h", "m" or "p". */
int wsg_key_channel(char *buf, size_t len, const char *prefix, const char *ch, size_t ch_len,
                    const char *suffix);

/*
 * PUBLISH, run by processors once per publication. KEYS[1] = :m, KEYS[2] = :h, KEYS[3] = :gws.
 * ARGV[1] = history size (0: keep none), ARGV[2] = history TTL ms, ARGV[3] = "d" (text) or "b"
 * (binary), ARGV[4] = payload. Numbers the publication (offset = o + 1; when :m is gone a new
 * epoch starts at the server's time in microseconds and the old history is dropped), appends it
 * as entry <offset>-0 of :h (MAXLEN ~ size) and refreshes both TTLs.
 * Returns {offset, epoch, gw_id...}: the members of :gws.
 */
extern const char WSG_LUA_CHANNEL_PUBLISH[];

/*
 * HISTORY, run by gateways to recover. KEYS[1] = :m, KEYS[2] = :h. ARGV[1] = the offset to read
 * after, ARGV[2] = most entries, ARGV[3] = most payload bytes (at least one entry is returned).
 * Returns {epoch, last, more, o1, b1, d1, o2, b2, d2, ...}: epoch and last offset 0 when :m is
 * gone; the entries after ARGV[1] in order (b = 1 for binary); more = 1 when a bound stopped the
 * page. A first offset above ARGV[1] + 1 means the ones between were trimmed or expired.
 */
extern const char WSG_LUA_CHANNEL_HISTORY[];

#endif
