/*
 * gw_dack: a direct peer's cumulative ack (see gw_dack.h).
 *
 * Threads: none of its own.
 */
#include "gw_dack.h"

void gw_dack_due(gw_dack *a, uint64_t seq) {
  if (seq > a->due)
    a->due = seq;
}

bool gw_dack_next(gw_dack *a, const uint8_t **bytes, size_t *n) {
  if (a->off == 0) {
    /* Nothing of a frame on the wire: (re)build one for the newest sequence, if any is owed. */
    if (a->due <= a->acked) {
      a->len = 0;
      return false;
    }
    if (a->len == 0 || a->in_frame != a->due) {
      wsg_dframe_put32(a->frame, WSG_DFRAME_SEQ);
      wsg_dframe_put64(a->frame + WSG_DFRAME_HDR, a->due);
      a->in_frame = a->due;
      a->len = sizeof a->frame;
    }
  }
  *bytes = a->frame + a->off;
  *n = a->len - a->off;
  return true;
}

bool gw_dack_wrote(gw_dack *a, size_t n) {
  a->off += n;
  if (a->off < a->len)
    return false;
  a->acked = a->in_frame;
  a->off = a->len = 0;
  return true;
}

uint64_t gw_dack_acked(const gw_dack *a) {
  return a->acked;
}
