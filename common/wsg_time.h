/* wsg_time: clocks. Monotonic for timeouts and rates, wall clock for envelope timestamps. */
#ifndef WSG_TIME_H
#define WSG_TIME_H

#include <stdint.h>
#include <time.h>

static inline uint64_t wsg_now_mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline uint64_t wsg_now_mono_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* now - then, or 0 when `then` is later: a time another thread stored after `now` was read is
 * 0 ms old, never 2^64 (readiness probes compare such times). */
static inline uint64_t wsg_elapsed(uint64_t now, uint64_t then) {
  return now > then ? now - then : 0;
}

/* Microseconds since the Unix epoch: the envelope's `ts`. */
static inline uint64_t wsg_now_wall_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

#endif
