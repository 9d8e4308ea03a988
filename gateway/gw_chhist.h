/*
 * gw_chhist: reads a page of a channel's history (ch:{c:<channel>}:h, WSG_LUA_CHANNEL_HISTORY) on
 * the channel registry's Redis connection (gw_chreg), so a read issued after a subscription's
 * SADD runs after it in Redis: a publication stored after the read is routed to this gateway.
 * Reads are rare (a recovery, a missing offset): the script goes with EVAL, not cached. The
 * position alone (:m) is a plain HMGET.
 *
 * Threads: the loop thread only.
 */
#ifndef GW_CHHIST_H
#define GW_CHHIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gw_chreg.h"

struct redisReply;

typedef struct {
  uint64_t offset;
  bool binary;
  const uint8_t *data; /* borrowed from the reply */
  size_t len;
} gw_chhist_entry;

#define GW_CHHIST_PAGE_MAX 256

typedef struct {
  uint64_t epoch, last; /* the channel's; 0, 0 when its :m is gone */
  bool more;            /* a bound stopped the page */
  size_t n;
  gw_chhist_entry e[GW_CHHIST_PAGE_MAX];
} gw_chhist_page;

/* A HISTORY reply into *page (entries borrow from rep). False when it is not one. */
bool gw_chhist_parse(const struct redisReply *rep, gw_chhist_page *page);

/* Called once per read: page (borrowed for the call) or NULL when Redis failed; destroyed: the
 * registry is going away, release arg and touch nothing else. */
typedef void (*gw_chhist_cb)(void *arg, const gw_chhist_page *page, bool destroyed);

/* Reads at most `max` (<= GW_CHHIST_PAGE_MAX) entries, about `max_bytes`, after `after`. 0, or
 * -1 when Redis is not connected (cb is not called). name: borrowed for the call. */
int gw_chhist_read(gw_chreg *r, const char *name, size_t len, uint64_t after, uint32_t max,
                   uint64_t max_bytes, gw_chhist_cb cb, void *arg);

/* The channel's position as :m holds it (HMGET e o): epoch and last offset, both 0 when :m is
 * gone. ok false when Redis failed; destroyed as for gw_chhist_cb. */
typedef void (*gw_chhist_pos_cb)(void *arg, bool ok, uint64_t epoch, uint64_t last, bool destroyed);

/* One HMGET of :m, far cheaper than a history read (no script, no stream): the tail check
 * (gw_chtail). 0, or -1 when Redis is not connected (cb is not called). name: borrowed. */
int gw_chhist_position(gw_chreg *r, const char *name, size_t len, gw_chhist_pos_cb cb, void *arg);

#endif
