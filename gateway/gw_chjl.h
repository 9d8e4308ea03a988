/*
 * gw_chjl: a channel's join/leave events, batched (docs/PROTOCOL.md, "Join and leave";
 * docs/ARCHITECTURE.md, "Channels"). No server state: the batch, its wire form (the `d` of a
 * `joinleave` envelope, the same bytes from the origin gateway through a processor to every
 * gateway with subscribers) and the client's presence_change frame. gw_chjlserve.c moves them.
 *
 * A batch holds one user name per event while it has at most GW_CHJL_LIST_MAX events; past it
 * only the counts (the names are freed): memory per batch is bounded, and so is every frame.
 *
 *   wire, names:   {"j":["alice"],"l":["bob"]}         (MessagePack map, each key only if
 * non-empty) wire, counts:  {"jn":250,"ln":3} frame, names:
 * {"wsgate":"presence_change","channel":"room:x","joined":["alice"],"left":["bob"]} frame, counts:
 * {"wsgate":"presence_change","channel":"room:x","joined_count":250,"left_count":3}
 *
 * Threads: none of its own; every function is reentrant.
 */
#ifndef GW_CHJL_H
#define GW_CHJL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gw_sendq.h"

#define GW_CHJL_LIST_MAX 100 /* events named in one frame; past it, counts only */

typedef struct {
  uint64_t joined, left; /* events, exact */
  uint32_t n;            /* names held: n == joined + left while <= GW_CHJL_LIST_MAX, else 0 */
  struct {
    char *user; /* owned, NUL-terminated */
    bool joined;
  } ev[GW_CHJL_LIST_MAX];
} gw_chjl_batch;

void gw_chjl_init(gw_chjl_batch *b);  /* empty */
void gw_chjl_clear(gw_chjl_batch *b); /* frees the names; empty again */
bool gw_chjl_empty(const gw_chjl_batch *b);
bool gw_chjl_counts_only(const gw_chjl_batch *b);

/* One event. 0, or -1 out of memory (the event is still counted, the batch turns counts-only). */
int gw_chjl_add(gw_chjl_batch *b, const char *user, size_t len, bool joined);

/* Adds a wire batch d[0..len) (another gateway's, via a processor). 0, or -1 when d is not a
 * batch (nothing added): bounded, validated MessagePack, names 1..WSG_MAX_USER_LEN bytes. */
int gw_chjl_merge(gw_chjl_batch *b, const uint8_t *d, size_t len);

/* The wire form into a new buffer *out (caller frees). Its length, or 0 when out of memory. */
size_t gw_chjl_encode(const gw_chjl_batch *b, uint8_t **out);

/* The client frame for channel ch[0..len), JSON (text) or MessagePack (binary). NULL when out of
 * memory. Names that are not UTF-8 are left out of a JSON frame. */
gw_msg *gw_chjl_frame(const gw_chjl_batch *b, const char *ch, size_t len, bool msgpack);

#endif
