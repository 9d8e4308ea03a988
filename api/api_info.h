/*
 * api_info: GET /v1/info: the gateways, their slots and connection counts, as Redis records them
 * (docs/ARCHITECTURE.md, "Redis keys"): slot:<k> for every slot, then the gw:<id> record of each
 * holder, in two pipelined round trips; nothing scans the keyspace. Every read is of one key, so
 * on a Redis Cluster each goes to its own slot's node (api_redis pipelines per node).
 *
 * Threads: any (api_redis' per-thread connections).
 */
#ifndef API_INFO_H
#define API_INFO_H

#include <jansson.h>
#include <stddef.h>

#include "api_redis.h"

/* {"slots": N, "slots_held": n, "connections": total, "gateways": [{"id", "slot", "addr",
 * "conns", "started", "version"}...]} for slots 0..slots-1; NULL with `why` when Redis failed.
 * Caller json_decref()s. */
json_t *api_info_read(api_redis *r, int slots, char *why, size_t whylen);

#endif
