/* wsg_heartbeat: the liveness beat behind every daemon's /healthz.
 *
 * The loop a daemon must keep turning (the gateway's event loop, the processor's consumer loop,
 * wsgate-api's main loop) beats on every turn; the operations endpoint's health callback, on its
 * HTTP thread, fails once no beat came for --liveness-stall. A beat of 0 means "not watched"
 * (before the loop runs, or while it stops): alive. Lock-free, safe from any thread.
 */
#ifndef WSG_HEARTBEAT_H
#define WSG_HEARTBEAT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "wsg_time.h"

/* Embedded in the daemon's struct; zero-initialised memory (calloc) is a valid, unwatched beat. */
typedef struct wsg_heartbeat {
  _Atomic uint64_t ms; /* the loop's last turn on the monotonic clock; 0: not watched */
} wsg_heartbeat;

/* The watched loop's thread: one call per turn. */
static inline void wsg_heartbeat_beat(wsg_heartbeat *h) {
  atomic_store_explicit(&h->ms, wsg_now_mono_ms(), memory_order_relaxed);
}

/* Stops watching (the loop is about to stop, or has not started): /healthz stays alive. */
static inline void wsg_heartbeat_clear(wsg_heartbeat *h) {
  atomic_store_explicit(&h->ms, 0, memory_order_relaxed);
}

/* Any thread, usually the HTTP thread's health callback. Returns 0 while the beat is 0 or younger
 * than `stall_ms` at `now_ms`; else -1 and "<loop> stalled: it has not turned for N ms
 * (--liveness-stall S ms)" in `why` (truncated to `whylen`). `loop` (borrowed) names the loop:
 * "event loop", "consumer loop", "main loop". */
int wsg_heartbeat_check(const wsg_heartbeat *h, uint64_t now_ms, uint64_t stall_ms,
                        const char *loop, char *why, size_t whylen);

#endif
