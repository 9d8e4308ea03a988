/*
 * gw_chperm: which channels a connection may subscribe to, from its token's channels claim
 * (docs/PROTOCOL.md, "Channels"): an array of exact names, or prefixes ending with '*'. Checked
 * at the gateway with no round trip.
 *
 * A permission list is a compact byte string: the patterns, each followed by a NUL, then one
 * more NUL ("" alone: nothing allowed). GW_CHPERM_ANY (development users) allows everything.
 *
 * Threads: none of its own; every function is reentrant.
 */
#ifndef GW_CHPERM_H
#define GW_CHPERM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GW_CHPERM_MAX_BYTES 4096 /* a longer claim is cut at the last pattern that fits */

extern const char GW_CHPERM_ANY[];

/*
 * Reads claim `name` from the claims JSON (claims[0..len)) into out[0..cap) as a permission list
 * and returns its length (at least 1: the final NUL). A missing or malformed claim, and entries
 * that are not non-empty strings without NUL, yield the empty list. cap >= 1.
 */
size_t gw_chperm_from_claims(const uint8_t *claims, size_t len, const char *name, char *out,
                             size_t cap);

/* True if the list allows channel[0..len). perm: a list or GW_CHPERM_ANY; NULL allows nothing. */
bool gw_chperm_allows(const char *perm, const char *channel, size_t len);

/* Bytes of a list including its final NUL (for copying it). */
size_t gw_chperm_size(const char *perm);

#endif
