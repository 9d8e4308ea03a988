/*
 * wsg_log: the one logger of every wsgate program.
 *
 * One line per event: time, level, [file:line], subsystem, message; or one JSON object per line.
 * The level is checked before the arguments are evaluated (like Redis' serverLog), so a DEBUG line
 * on a hot path costs one comparison when DEBUG is off.
 *
 * Threads: any. A line is written with one write(2) so lines from several threads never interleave.
 */
#ifndef WSG_LOG_H
#define WSG_LOG_H

#include <stdbool.h>
#include <stdint.h>

typedef enum {
  WSG_LOG_DEBUG = 0,
  WSG_LOG_INFO = 1,
  WSG_LOG_WARN = 2,
  WSG_LOG_ERROR = 3,
} wsg_log_level;

/* Process-wide settings, written once by main() before any thread starts. */
extern wsg_log_level wsg_log_min_level;

/*
 * Sets the minimum level, the format (JSON or text) and the program name (copied; shown as "prog"
 * in JSON lines).
 * Text: 2026-11-25T08:30:00.123Z INFO  [gw_server.c:123] ws: message
 * JSON: {"ts":"...","level":"INFO","prog":"...","file":"gw_server.c","line":123,"subsys":"ws",
 *        "msg":"..."} (one line)
 */
void wsg_log_setup(wsg_log_level min_level, bool json, const char *program);

/*
 * Redirects the lines to `fd` (default 2, stderr) and returns the previous fd. For tests that
 * capture log output through a pipe, and for a daemon that logs to a file it opened itself.
 * The fd is borrowed: the caller closes it after switching back.
 */
int wsg_log_set_fd(int fd);

/* Parses "debug", "info", "warn" or "error". Returns 0, or -1 if the name is unknown. */
int wsg_log_level_parse(const char *name, wsg_log_level *out);
const char *wsg_log_level_name(wsg_log_level level);

void wsg_log_write(wsg_log_level level, const char *subsys, const char *file, int line,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#define wsg_log(level, subsys, ...)                                                                \
  do {                                                                                             \
    if ((level) >= wsg_log_min_level)                                                              \
      wsg_log_write((level), (subsys), __FILE__, __LINE__, __VA_ARGS__);                           \
  } while (0)

#define WSG_DEBUG(subsys, ...) wsg_log(WSG_LOG_DEBUG, subsys, __VA_ARGS__)
#define WSG_INFO(subsys, ...)  wsg_log(WSG_LOG_INFO, subsys, __VA_ARGS__)
#define WSG_WARN(subsys, ...)  wsg_log(WSG_LOG_WARN, subsys, __VA_ARGS__)
#define WSG_ERROR(subsys, ...) wsg_log(WSG_LOG_ERROR, subsys, __VA_ARGS__)

/*
 * Rate limit for a log line that hostile input can trigger at line rate (bad envelopes, bad
 * frames). Caller-owned, zero-initialised; one per call site. Not thread-safe: keep one per thread.
 */
typedef struct {
  uint64_t window_start_ms;
  uint32_t emitted;    /* lines written in the current window */
  uint32_t suppressed; /* lines dropped in the current window, reported when it ends */
} wsg_log_ratelimit;

/* Returns true if a line may be written now: at most `per_second` lines per second per limiter.
 * When a window with suppressed lines ends, logs how many were suppressed. */
bool wsg_log_ratelimit_allow(wsg_log_ratelimit *rl, uint32_t per_second, uint64_t now_ms,
                             const char *subsys);

#define wsg_log_limited(rl, per_second, now_ms, level, subsys, ...)                                \
  do {                                                                                             \
    if ((level) >= wsg_log_min_level &&                                                            \
        wsg_log_ratelimit_allow((rl), (per_second), (now_ms), (subsys)))                           \
      wsg_log_write((level), (subsys), __FILE__, __LINE__, __VA_ARGS__);                           \
  } while (0)

#endif
