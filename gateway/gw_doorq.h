/*
 * gw_doorq: the handshake deadlines of sockets before their upgrade, in accept order. Every
 * socket gets the same timeout, so deadlines come in the order they are pushed and a FIFO ring
 * replaces a heap: push, the earliest deadline and popping one are O(1).
 *
 * Entries are never removed when their socket upgrades or closes (that would need a link in a
 * socket lws owns): the caller tells a live entry from a stale one by its key and tag when it
 * comes due. So that stale entries cannot grow the ring beyond the live ones, a full ring is
 * first compacted (the caller's live() decides), and grows only if more than half of it is
 * live: with at most L live entries the ring stays under 4 L slots, and a compaction, O(ring),
 * comes at most once per half a ring of pushes (amortized O(1)).
 *
 * Threads: one (the loop thread).
 */
#ifndef GW_DOORQ_H
#define GW_DOORQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gw_doorq gw_doorq;

/* Tells whether the entry (key, tag) still stands for a socket waiting for its upgrade. */
typedef bool (*gw_doorq_live_fn)(void *arg, uint64_t key, uint32_t tag);

/* An empty queue; NULL without memory. live(arg, ...) is called by pushes that compact. */
gw_doorq *gw_doorq_new(gw_doorq_live_fn live, void *arg);
void gw_doorq_free(gw_doorq *q);

/* Adds (key, tag) due at at_ms; at_ms is clamped up to the latest deadline pushed, so the ring
 * stays in deadline order. 0, or -1 without memory (nothing added). */
int gw_doorq_push(gw_doorq *q, uint64_t key, uint32_t tag, uint64_t at_ms);

/* The earliest deadline in *at_ms; false when empty. */
bool gw_doorq_next(const gw_doorq *q, uint64_t *at_ms);

/* Removes the earliest entry due at or before now_ms into *key, *tag: true, or false when none
 * is due. The caller checks the entry (it may be stale). */
bool gw_doorq_pop_due(gw_doorq *q, uint64_t now_ms, uint64_t *key, uint32_t *tag);

/* Entries held (stale ones included) and slots allocated, for tests and the metrics. */
size_t gw_doorq_len(const gw_doorq *q);
size_t gw_doorq_cap(const gw_doorq *q);

#endif
