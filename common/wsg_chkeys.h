/*
 * wsg_chkeys: the Redis keys and Lua scripts of channels (docs/ARCHITECTURE.md, "Channels"),
 * shared by gateways, processors and programs in other languages:
 *
 *   <prefix>ch:{c:<channel>}:gws  set of the ids of gateways with subscribers of the channel
 *   <prefix>ch:{c:<channel>}:h    stream, the channel's history: ids <offset>-0, fields t, d|b
 *   <prefix>ch:{c:<channel>}:m    hash {e: epoch, o: last offset}
 *   <prefix>ch:{c:<channel>}:pc   hash <member> -> its subscriptions of the channel (presence)
 *   <prefix>ch:{c:<channel>}:p:<member>  hash <conn id> -> <user>: one member's entries
 *
 * A presence member is one life of a gateway, <gw id>#<boot>: the boot is random per process and
 * written in the gateway's lease record (gw:<id>, field boot), so a gateway restarted under the
 * same id (a StatefulSet's name) does not vouch for its previous life's entries; and a dead
 * member's entries go with one UNLINK of its hash, whatever the channel's size.
 *
 * Every key of a channel carries the hash tag {c:<channel>}: a script over them runs on one
 * Redis Cluster slot. Key builders write into a caller buffer and return the length, or -1 if it
 * does not fit.
 */
#ifndef WSG_CHKEYS_H
#define WSG_CHKEYS_H

#include <stdbool.h>
#include <stddef.h>

/* suffix: "gws", "h", "m", "p" (the base name of the members' hashes) or "pc". */
int wsg_key_channel(char *buf, size_t len, const char *prefix, const char *ch, size_t ch_len,
                    const char *suffix);

#define WSG_GW_BOOT_LEN 16 /* hex digits of a gateway's boot (64 random bits) */
/* Bytes of a member: a gateway id (WSG_MAX_GATEWAY_LEN, proto/wsg_envelope.h), '#', a boot. */
#define WSG_PRESENCE_MEMBER_MAX (128 + 1 + WSG_GW_BOOT_LEN)

/* ch:{c:<channel>}:p:<member>, a member's presence entries. */
int wsg_key_presence(char *buf, size_t len, const char *prefix, const char *ch, size_t ch_len,
                     const char *member);

/* <gw_id>#<boot> into buf: its length, or -1 (empty id, a boot not WSG_GW_BOOT_LEN lowercase hex
 * digits, or it does not fit). */
int wsg_presence_member(char *buf, size_t len, const char *gw_id, const char *boot);

/* A member split at its '#': false when it is not one (a gateway id then '#' and a boot). gw
 * ids may hold '#': the boot's length places it. */
bool wsg_presence_member_split(const char *m, size_t len, size_t *gw_len, const char **boot);

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

/* GATEWAYS: what a join/leave batch needs, the channel's gateways, in the publish script's reply
 * shape ({1, 1, gw...}) without numbering or storing anything. KEYS as the publish script's, so
 * the batch takes the same path (one slot, one round trip). */
extern const char WSG_LUA_CHANNEL_GATEWAYS[];

/*
 * Presence, read the same way by the gateways' presence op, handlers' wsgate_presence() and
 * wsgate-api's GET /v1/presence: the exact counts from :pc (O(members)), the names from HSCANs of
 * the members' hashes bounded in both what they read and what they return, so a read costs Redis
 * the same on a channel of 50 or of 50,000 subscribers (HGETALL of 50,000 entries: 532 ms). The
 * reader then checks the lease of each member's gateway (HGET gw:<id> boot, not in the channel's
 * slot: outside the script): a member whose record is gone or names another boot is dead; its
 * entries are left out and deleted with WSG_LUA_PRESENCE_DROP, so a crashed gateway's subscribers
 * vanish within its lease, and a restarted one's as soon as its new life writes its record.
 */
#define WSG_PRESENCE_SCAN_BUDGET 4000 /* entries one read walks at most */
#define WSG_PRESENCE_GWS_MAX     256  /* members of :pc one read returns at most */

/*
 * READ. KEYS[1] = :p (the base name), KEYS[2] = :pc. ARGV[1] = the most items to return,
 * ARGV[2] = the most entries to read, ARGV[3] = "u": items are distinct values <user>|<member>,
 * or "e": items are entries, two strings each (<conn id>, <user>|<member>).
 * Returns {more, nmembers, member1, conns1, ..., item1, item2, ...}: more = 1 when the scan
 * stopped before the end or an item was left out at ARGV[1] (a list may be incomplete), or when
 * :pc holds more than WSG_PRESENCE_GWS_MAX members: nmembers is then that many, picked at random
 * (HRANDFIELD), and the counts of the others are left out too. Dead lives (crashed or restarted
 * gateways) pile up until a read drops them; the random pick lets every reader drop the dead it
 * was given, so repeated reads converge however many there are, live ones included.
 */
extern const char WSG_LUA_PRESENCE_READ[];

/*
 * DROP, rare (after a gateway crashed or restarted). KEYS[1] = :p (the base name), KEYS[2] =
 * :pc, ARGV = dead members: UNLINKs their hashes and deletes their :pc fields, O(members) however
 * many entries they hold (50,000: the old whole-hash walk took 393 ms). Returns how many entries.
 */
extern const char WSG_LUA_PRESENCE_DROP[];

/* A READ item <user>|<member> split at its last '|' (user ids may hold '|'): false when it is
 * not one (no '|', an empty user or member). */
bool wsg_presence_split(const char *v, size_t len, size_t *user_len, const char **gw,
                        size_t *gw_len);

#endif
