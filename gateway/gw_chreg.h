/*
 * gw_chreg: tells Redis which channels have subscribers on this gateway
 * (docs/ARCHITECTURE.md, "Channels"): SADD <prefix>ch:{c:<channel>}:gws <gw_id> when a channel
 * gets its first local subscriber, SREM when it loses its last, and (through the caller's resync
 * hook) every channel again after each (re)connect, since Redis may have restarted empty. Fire and
 * forget: publishers remove the ids of gateways whose gw:<id> record expired, so nothing here must
 * succeed for the set to end up right. It runs on a connection of its own
 * (common/wsg_redis_cluster: one node or a Redis Cluster), so channel churn never queues behind the
 * registry's registrations.
 *
 * Threads: the loop thread only — every function and every callback.
 */
#ifndef GW_CHREG_H
#define GW_CHREG_H

#include <stdbool.h>
#include <stddef.h>

#include "wsg_metrics.h"

struct ev_loop;

typedef struct gw_chreg gw_chreg;

typedef struct {
  const char *host; /* borrowed during create */
  int port;
  const char *password; /* NULL or "": no AUTH */
  const char *user;     /* borrowed during create; ACL user, NULL or "": none */
  const char *cluster;  /* borrowed during create; Redis Cluster seeds, NULL or "": one node */
  int db;
  const char *prefix; /* copied */
  const char *gw_id;  /* copied */
  const char *boot;   /* this process' life (WSG_GW_BOOT_LEN hex digits): its presence member */
  uint64_t timeout_ms;
  /* TTL of the keys written here (:gws, :pc, :p:<member>), set with each write that may create
   * one; 0: none (docs/ARCHITECTURE.md, "Lifetime of a channel's keys"). */
  uint64_t key_ttl_ms;
  /* Called after each (re)connect: Redis may have restarted empty, so the caller writes again
   * what it holds (gateway sets and presence entries: gw_chresync, paced). May be NULL. */
  void (*resync)(void *arg);
  void *arg;
} gw_chreg_options;

/* 0 with *out set (caller destroys), or -1 with a message in err. o: borrowed. metrics: may be
 * NULL. */
int gw_chreg_create(gw_chreg **out, struct ev_loop *loop, const gw_chreg_options *o,
                    wsg_metrics *metrics, char *err, size_t errlen);
void gw_chreg_destroy(gw_chreg *r); /* NULL is a no-op */

/* The channel gained its first (add) or lost its last (!add) local subscriber. While Redis is
 * unreachable this is skipped: the reconnect adds what is held then. An add also sets the key's
 * TTL, pipelined (PEXPIRE; so do the presence writes below): no key written here lives for ever
 * if this gateway dies. name: borrowed. */
void gw_chreg_update(gw_chreg *r, const char *name, size_t len, bool add);

/* Presence (a namespace with presence=true): HSET (add) or HDEL of <conn id> -> <user> in
 * ch:{c:<channel>}:p:<gw id>#<boot>, this life's hash. Fire and forget, skipped while Redis is
 * unreachable; readers ignore and remove the hashes of members whose gw:<id> record is gone or
 * names another boot. Set the count first when adding (a hash no :pc field names is never read
 * nor dropped). name, user: borrowed. */
void gw_chreg_presence(gw_chreg *r, const char *name, size_t len, uint64_t conn, const char *user,
                       bool add); /* user: only for add (may be NULL otherwise) */

/* Presence counts: HSET ch:{c:<channel>}:pc <gw id>#<boot> <n> (HDEL when n is 0), n this
 * gateway's subscriptions of the channel, so a presence query reads O(gateways) to count them.
 * Fire and forget, like gw_chreg_presence. name: borrowed. */
void gw_chreg_presence_count(gw_chreg *r, const char *name, size_t len, uint64_t n);

/* Renews one channel held here (gw_chrenew): SADD of this gateway to :gws (back if a publisher
 * pruned it while this gateway's lease was late) and its TTL; with presence (presence_n > 0,
 * this gateway's subscriptions of the channel) also HSET of this member's :pc count and the TTLs
 * of :pc and :p:<member>. All one pipeline on the channel's slot: no round trip waited for.
 * Returns 0 and later calls cb(arg, ok, false) once, ok when every command succeeded, or
 * cb(arg, false, true) when r is destroyed first (touch nothing then); -1 when not sent (the
 * channel's Redis node is not connected, out of memory): cb is never called. name: borrowed. */
typedef void (*gw_chreg_renew_cb)(void *arg, bool ok, bool destroyed);
int gw_chreg_renew(gw_chreg *r, const char *name, size_t len, uint64_t presence_n,
                   gw_chreg_renew_cb cb, void *arg);

/* Its connection (borrowed; NULL when r is) and key prefix, for reads that must follow its
 * updates in Redis (gw_chhist). */
struct wsg_redis_cluster *gw_chreg_conn(gw_chreg *r);
const char *gw_chreg_prefix(const gw_chreg *r);
/* This life's presence member, <gw id>#<boot>. */
const char *gw_chreg_member(const gw_chreg *r);

#endif
