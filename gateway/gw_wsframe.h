/*
 * gw_wsframe: WebSocket frame headers as a server writes them (RFC 6455 5.2: FIN set, no mask,
 * 7-, 16- or 64-bit payload length), for the frames the gateway writes to libwebsockets raw
 * (gw_outbound.c: several whole messages in one write; an empty message to a compressed client).
 *
 * Threads: pure functions, any thread.
 */
#ifndef GW_WSFRAME_H
#define GW_WSFRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The longest header: 2 bytes and a 64-bit length. */
#define GW_WSFRAME_HEADER_MAX 10

/* The header's length for a payload of `len` bytes: 2, 4 or 10. */
size_t gw_wsframe_header_len(uint64_t len);

/* Writes the header of one whole unmasked message (FIN, text or binary) of `len` payload bytes
 * into out (at least gw_wsframe_header_len(len) bytes) and returns its length. len must be below
 * 2^63 (RFC 6455: the top bit is 0); larger lengths are clamped to that bound. */
size_t gw_wsframe_header(uint8_t *out, bool binary, uint64_t len);

#endif
