/*
 * api_channels: GET /v1/presence and GET /v1/history, a channel's subscribers and recent
 * publications, read from the channel keys of common/wsg_chkeys.h (docs/ARCHITECTURE.md,
 * "Channels"). Every key of a channel carries the hash tag {c:<channel>}, so on a Redis Cluster
 * each read goes to that slot's node (api_redis routes by key).
 *
 * Presence is read with common/wsg_chkeys.h's recipe, as gateways and handlers read it: entries
 * and counts of gateways whose record is gone are left out of an answer and deleted.
 *
 * Threads: any (api_redis' per-thread connections).
 */
#ifndef API_CHANNELS_H
#define API_CHANNELS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api_redis.h"

#define API_PRESENCE_LIMIT_DEFAULT 1000
#define API_PRESENCE_LIMIT_MAX     10000
#define API_HISTORY_LIMIT_DEFAULT  100
#define API_HISTORY_LIMIT_MAX      1000
/* Payload bytes of one history answer; at least one publication is returned. */
#define API_HISTORY_MAX_BYTES (1u << 20)

/* What a presence read did about the dead gateway lives it found, for the caller's metrics and
 * log: their entries are deleted by one WSG_LUA_PRESENCE_DROP, best effort (the answer leaves
 * them out either way; a failed DROP leaves them to the next reader). */
typedef struct {
  bool dropped;       /* a DROP was sent */
  bool drop_failed;   /* ... and Redis failed it */
  char drop_why[160]; /* why, when drop_failed */
} api_presence_cleanup;

/*
 * {"channel", "connections", "subscribers": [{"user", "conn" (a string: ids use 64 bits),
 * "gateway"}...], "more": bool}: connections exact (the live gateways' :pc counts), at most
 * `limit` subscribers on live gateways, read by one WSG_LUA_PRESENCE_READ that reads at most
 * `limit` entries (bounded work whatever the channel's size); "more" when it stopped before the
 * end. `channel` must be a valid name (wsg_channel_name_valid). NULL with `why` when Redis failed.
 * Caller json_decref()s. *cleanup (borrowed, written whatever the result) says what the read did
 * about dead gateways' entries.
 */
json_t *api_presence_read(api_redis *r, const char *channel, size_t len, size_t limit,
                          api_presence_cleanup *cleanup, char *why, size_t whylen);

/*
 * {"channel", "epoch", "last", "more", "gap", "publications": [{"offset", "data" | "data_base64"}
 * ...]}: the publications after offset `since`, at most `limit` and about API_HISTORY_MAX_BYTES,
 * in order, read with WSG_LUA_CHANNEL_HISTORY (one script: a consistent page). epoch 0: no
 * history (never published, expired, or a namespace that keeps none). "gap": the first
 * publication returned is not since + 1 (the ones between were trimmed or expired). NULL with
 * `why` when Redis failed. Caller json_decref()s.
 */
json_t *api_history_read(api_redis *r, const char *channel, size_t len, uint64_t since,
                         size_t limit, char *why, size_t whylen);

#endif
