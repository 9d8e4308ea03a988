/*
 * gw_dack: the cumulative ack a direct reply peer is owed (gw_direct.c), as a pure state machine:
 * no I/O, no allocation, so the rules below are what the unit test runs.
 *
 * An ack is one frame of WSG_DFRAME_HDR + WSG_DFRAME_SEQ bytes carrying the highest sequence
 * number dispatched. At most one frame is built at a time. A frame not yet started on the wire is
 * rebuilt with the newest sequence due; one partly written must be finished first (the stream
 * would be corrupt otherwise), and once it is, the newest sequence due is owed a frame of its own.
 * Without that last rule a newer ack due while one is half written was lost when the peer sent
 * nothing more, and the processor fell back to Kafka after its --direct-ack-timeout, duplicating
 * what it had sent.
 *
 * The struct is the caller's (embedded in its peer); its fields are private to gw_dack.c. An
 * all-zero gw_dack is valid: nothing due, nothing sent.
 *
 * Threads: none of its own; the caller's (the loop thread).
 */
#ifndef GW_DACK_H
#define GW_DACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wsg_dframe.h"

typedef struct {
  uint8_t frame[WSG_DFRAME_HDR + WSG_DFRAME_SEQ];
  size_t off, len;   /* frame[0..len) built, frame[0..off) written; len 0: none built */
  uint64_t in_frame; /* the sequence number frame[] carries */
  uint64_t due;      /* the highest sequence number dispatched */
  uint64_t acked;    /* the highest sequence number whose ack frame was written whole */
} gw_dack;

/* seq was dispatched: it is owed an ack (a lower or equal one changes nothing). */
void gw_dack_due(gw_dack *a, uint64_t seq);

/* The bytes to write next: true with *bytes[0..*n) (inside a, valid until the next call on a),
 * false when every ack due is written. */
bool gw_dack_next(gw_dack *a, const uint8_t **bytes, size_t *n);

/* n bytes of what gw_dack_next() returned were written (n > 0, at most what it returned). True
 * when that completed an ack frame. */
bool gw_dack_wrote(gw_dack *a, size_t n);

/* The highest sequence number acknowledged in a whole frame. */
uint64_t gw_dack_acked(const gw_dack *a);

#endif
