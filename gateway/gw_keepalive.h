/*
 * gw_keepalive: when each connection is next due for a liveness check, kept in a wheel of
 * one-second buckets of connection ids. Scheduling and each check are O(1) per connection.
 *
 * Why not libwebsockets' own keepalive: its validity timers cost O(connections) per ping and pong
 * in 4.1.6 (docs/notes/libwebsockets-4.1.6.md#keepalive; measured in docs/BENCHMARKS.md).
 *
 * Entries are never removed: a connection that closed or was checked meanwhile is found stale
 * by its caller when its bucket comes due (a lookup of the id), which is cheaper than keeping
 * links in every connection. Loop thread only.
 */
#ifndef GW_KEEPALIVE_H
#define GW_KEEPALIVE_H

#include <stddef.h>
#include <stdint.h>

typedef struct gw_keepalive gw_keepalive;

/* A wheel for delays of 1 to horizon_s seconds, starting at second now_s. NULL without memory. */
gw_keepalive *gw_keepalive_new(uint32_t horizon_s, uint32_t now_s);
void gw_keepalive_free(gw_keepalive *k);

/* Checks conn_id at second due_s, clamped to [the next second, now + horizon]. -1 without memory
 * (the connection is then not checked: the caller closes it). */
int gw_keepalive_schedule(gw_keepalive *k, uint64_t conn_id, uint32_t due_s);

/* Calls due(arg, conn_id) for every id due at or before now_s, each once, then forgets them;
 * due() may schedule again (always into a later second). */
void gw_keepalive_run(gw_keepalive *k, uint32_t now_s, void (*due)(void *arg, uint64_t conn_id),
                      void *arg);

/* Ids waiting (stale ones included), for the metrics. */
size_t gw_keepalive_pending(const gw_keepalive *k);

#endif
