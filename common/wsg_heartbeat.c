/* wsg_heartbeat: see wsg_heartbeat.h. Runs on whichever thread asks (the HTTP thread). */
#include "wsg_heartbeat.h"

#include <inttypes.h>
#include <stdio.h>

int wsg_heartbeat_check(const wsg_heartbeat *h, uint64_t now_ms, uint64_t stall_ms,
                        const char *loop, char *why, size_t whylen) {
  /* The cast drops only const: C11's atomic_load takes a non-const pointer (fixed in C17). */
  uint64_t beat = atomic_load_explicit((_Atomic uint64_t *)&h->ms, memory_order_relaxed);
  /* A beat "from the future" (now_ms sampled before a racing beat) is fresh, not a huge stall. */
  if (beat == 0 || now_ms <= beat || now_ms - beat < stall_ms)
    return 0;
  snprintf(why, whylen,
           "%s stalled: it has not turned for %" PRIu64 " ms (--liveness-stall %" PRIu64 " ms)",
           loop, now_ms - beat, stall_ms);
  return -1;
}
