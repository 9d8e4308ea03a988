/*
 * gw_chframe: the frames a subscriber receives (docs/PROTOCOL.md, "Channels"): a publication,
 * encoded ONCE per format into a gw_msg that every local subscriber's send queue shares, and the
 * gap report. JSON is written by hand (no tree: a publication's payload is copied once, escaped),
 * MessagePack with fixed-width headers where it is simpler and still canonical enough for any
 * reader.
 *
 * Threads: any; no state.
 */
#ifndef GW_CHFRAME_H
#define GW_CHFRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gw_sendq.h"

/* {"wsgate":"pub","channel":..,"offset":..,"epoch":..,"data":".."} ("data_b64" for a binary
 * payload in JSON); a text frame for JSON, a binary one for MessagePack. NULL when out of
 * memory. Refcount 1, owned by the caller. */
gw_msg *gw_chframe_pub(const char *ch, size_t ch_len, uint64_t offset, uint64_t epoch,
                       const uint8_t *d, size_t len, bool binary, bool msgpack);

/* {"wsgate":"gap","channel":..,"from":..,"to":..}: publications from..to (inclusive) of the
 * channel could not be delivered. NULL when out of memory. */
gw_msg *gw_chframe_gap(const char *ch, size_t ch_len, uint64_t from, uint64_t to, bool msgpack);

#endif
