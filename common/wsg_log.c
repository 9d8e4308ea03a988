/*
 * wsg_log: formats one log line on the stack and hands it to the kernel with one write(2).
 *
 * Why no stdio and no malloc: a line must be writable from any thread, from a path that is
 * already short of memory, and must never interleave with a line of another thread. A single
 * write(2) of at most PIPE_BUF bytes to a pipe is atomic, so the line buffer is 4 KiB and
 * longer lines are cut, ending in "…(truncated)".
 *
 * Messages may carry bytes a client sent (user ids, bad frames): control characters are escaped
 * and invalid UTF-8 is replaced by U+FFFD, so a hostile value can neither forge a second log line
 * nor make a JSON line unparsable.
 *
 * Threads: any. wsg_log_setup() runs once in main() before other threads start.
 */
#include "wsg_log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES   4096
#define TRUNC_MARK       "\xe2\x80\xa6(truncated)"
#define REPLACEMENT_CHAR "\xef\xbf\xbd"

wsg_log_level wsg_log_min_level = WSG_LOG_INFO;

/* Process settings: written by wsg_log_setup() before threads start, read-only afterwards. The
 * output fd is atomic only because tests redirect it (wsg_log_set_fd) to capture lines. */
static bool log_json;
static char log_program[64] = "wsgate";
static atomic_int log_fd = 2;

static const char *const level_names[] = {"debug", "info", "warn", "error"};
static const char *const level_text[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
static const char *const level_json[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void wsg_log_setup(wsg_log_level min_level, bool json, const char *program) {
  wsg_log_min_level = min_level;
  log_json = json;
  if (program && *program)
    snprintf(log_program, sizeof log_program, "%s", program);
}

int wsg_log_set_fd(int fd) {
  return atomic_exchange_explicit(&log_fd, fd, memory_order_relaxed);
}

int wsg_log_level_parse(const char *name, wsg_log_level *out) {
  if (!name)
    return -1;
  for (int i = WSG_LOG_DEBUG; i <= WSG_LOG_ERROR; i++) {
    if (strcasecmp(name, level_names[i]) == 0) {
      *out = (wsg_log_level)i;
      return 0;
    }
  }
  if (strcasecmp(name, "warning") == 0) {
    *out = WSG_LOG_WARN;
    return 0;
  }
  return -1;
}

const char *wsg_log_level_name(wsg_log_level level) {
  if ((int)level < WSG_LOG_DEBUG || level > WSG_LOG_ERROR)
    return "unknown";
  return level_names[level];
}

/* A bounded output cursor: appends never write past `end`, and report failure instead. */
typedef struct {
  char *p;
  char *end;
} out_buf;

static bool put(out_buf *o, const char *s, size_t n) {
  if ((size_t)(o->end - o->p) < n)
    return false;
  memcpy(o->p, s, n);
  o->p += n;
  return true;
}

static bool puts_(out_buf *o, const char *s) {
  return put(o, s, strlen(s));
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if the bytes there are not one (overlong
 * forms, surrogates, code points above U+10FFFF and cut sequences are all invalid). */
static size_t utf8_valid_len(const unsigned char *s, size_t n) {
  unsigned char c = s[0];
  size_t len;
  unsigned cp;
  if (c < 0x80)
    return 1;
  if (c >= 0xc2 && c <= 0xdf) {
    len = 2;
    cp = c & 0x1fu;
  } else if (c >= 0xe0 && c <= 0xef) {
    len = 3;
    cp = c & 0x0fu;
  } else if (c >= 0xf0 && c <= 0xf4) {
    len = 4;
    cp = c & 0x07u;
  } else {
    return 0;
  }
  if (n < len)
    return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xc0u) != 0x80u)
      return 0;
    cp = (cp << 6) | (s[i] & 0x3fu);
  }
  if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
      (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return len;
}

/*
 * Appends `s[0..n)` escaped for the current format. Stops before the first unit that does not fit
 * whole (an escape or a UTF-8 sequence is never cut) and returns false then. In text mode only
 * control characters are escaped; in JSON mode also quotes and backslashes.
 */
static bool put_escaped(out_buf *o, const char *s, size_t n, bool json) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0;
  while (i < n) {
    unsigned char c = u[i];
    char esc[8];
    const char *rep = NULL;
    size_t replen = 0, adv = 1;
    if (c < 0x20 || c == 0x7f) {
      switch (c) {
      case '\n':
        rep = "\\n";
        break;
      case '\r':
        rep = "\\r";
        break;
      case '\t':
        rep = json ? "\\t" : "\t";
        break;
      default:
        snprintf(esc, sizeof esc, json ? "\\u%04x" : "\\x%02x", c);
        rep = esc;
        break;
      }
      replen = strlen(rep);
    } else if (json && (c == '"' || c == '\\')) {
      rep = c == '"' ? "\\\"" : "\\\\";
      replen = 2;
    } else if (c < 0x80) {
      rep = (const char *)u + i;
      replen = 1;
    } else {
      size_t len = utf8_valid_len(u + i, n - i);
      if (len == 0) {
        rep = REPLACEMENT_CHAR;
        replen = sizeof REPLACEMENT_CHAR - 1;
      } else {
        rep = (const char *)u + i;
        replen = adv = len;
      }
    }
    if (!put(o, rep, replen))
      return false;
    i += adv;
  }
  return true;
}

/* The basename of __FILE__, which meson passes as a path relative to the build directory. */
static const char *base_name(const char *file) {
  const char *slash = file ? strrchr(file, '/') : NULL;
  return slash ? slash + 1 : (file ? file : "?");
}

static void format_time(char *buf, size_t len) {
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
           tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ts.tv_nsec / 1000000L) % 1000);
}

static void write_line(const char *buf, size_t len) {
  int fd = atomic_load_explicit(&log_fd, memory_order_relaxed);
  while (len > 0) {
    ssize_t w = write(fd, buf, len);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return; /* nowhere left to report a failing log stream: drop the line */
    }
    buf += w;
    len -= (size_t)w;
  }
}

void wsg_log_write(wsg_log_level level, const char *subsys, const char *file, int line,
                   const char *fmt, ...) {
  char msg[LINE_MAX_BYTES];
  char line_buf[LINE_MAX_BYTES];
  char ts[96];
  char num[16];
  if ((int)level < WSG_LOG_DEBUG || level > WSG_LOG_ERROR)
    level = WSG_LOG_ERROR;
  if (!subsys)
    subsys = "-";

  va_list ap;
  va_start(ap, fmt);
  int mlen = vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (mlen < 0) {
    snprintf(msg, sizeof msg, "(log format error: %s)", fmt);
    mlen = (int)strlen(msg);
  }
  bool truncated = (size_t)mlen >= sizeof msg;
  size_t msg_len = truncated ? sizeof msg - 1 : (size_t)mlen;
  /* vsnprintf may have cut a multi-byte character: drop its leftover bytes rather than show a
   * replacement character that was never in the message. */
  if (truncated) {
    size_t k = msg_len, back = 0;
    while (k > 0 && back < 3 && ((unsigned char)msg[k - 1] & 0xc0u) == 0x80u) {
      k--;
      back++;
    }
    if (k > 0 && (unsigned char)msg[k - 1] >= 0xc0u &&
        utf8_valid_len((const unsigned char *)msg + k - 1, msg_len - (k - 1)) == 0)
      msg_len = k - 1;
  }

  format_time(ts, sizeof ts);
  bool json = log_json;
  const char *tail = json ? "\"}\n" : "\n";
  /* Room for the truncation mark and the line's end is held back while the message is copied. */
  size_t reserve = sizeof TRUNC_MARK - 1 + strlen(tail);
  out_buf o = {line_buf, line_buf + sizeof line_buf - reserve};

  if (json) {
    snprintf(num, sizeof num, "%d", line);
    puts_(&o, "{\"ts\":\"");
    puts_(&o, ts);
    puts_(&o, "\",\"level\":\"");
    puts_(&o, level_json[level]);
    puts_(&o, "\",\"prog\":\"");
    put_escaped(&o, log_program, strlen(log_program), true);
    puts_(&o, "\",\"file\":\"");
    const char *b = base_name(file);
    put_escaped(&o, b, strnlen(b, 256), true);
    puts_(&o, "\",\"line\":");
    puts_(&o, num);
    puts_(&o, ",\"subsys\":\"");
    put_escaped(&o, subsys, strnlen(subsys, 64), true);
    puts_(&o, "\",\"msg\":\"");
  } else {
    snprintf(num, sizeof num, ":%d] ", line);
    puts_(&o, ts);
    puts_(&o, " ");
    puts_(&o, level_text[level]);
    puts_(&o, " [");
    const char *b = base_name(file);
    put_escaped(&o, b, strnlen(b, 256), false);
    puts_(&o, num);
    put_escaped(&o, subsys, strnlen(subsys, 64), false);
    puts_(&o, ": ");
  }
  if (!put_escaped(&o, msg, msg_len, json))
    truncated = true;
  o.end = line_buf + sizeof line_buf;
  if (truncated)
    puts_(&o, TRUNC_MARK);
  puts_(&o, tail);
  write_line(line_buf, (size_t)(o.p - line_buf));
}

bool wsg_log_ratelimit_allow(wsg_log_ratelimit *rl, uint32_t per_second, uint64_t now_ms,
                             const char *subsys) {
  /* A clock that went backwards (or a fresh limiter) starts a new window. */
  if (now_ms < rl->window_start_ms || now_ms - rl->window_start_ms >= 1000 ||
      (rl->emitted == 0 && rl->suppressed == 0)) {
    if (rl->suppressed > 0)
      WSG_WARN(
          subsys, "%u similar lines suppressed in the last %llu ms", rl->suppressed,
          (unsigned long long)(now_ms >= rl->window_start_ms ? now_ms - rl->window_start_ms : 0));
    rl->window_start_ms = now_ms;
    rl->emitted = 0;
    rl->suppressed = 0;
  }
  if (rl->emitted < per_second) {
    rl->emitted++;
    return true;
  }
  if (rl->suppressed < UINT32_MAX)
    rl->suppressed++;
  return false;
}
