/* Unit tests of wsg_log: line format, escaping, truncation, levels and the rate limiter. Lines are
 * captured through a pipe installed with wsg_log_set_fd(). */
#include <criterion/criterion.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "wsg_log.h"

static int pipe_fds[2] = {-1, -1};
static int saved_fd = -1;

static void capture_start(void) {
  cr_assert_eq(pipe2(pipe_fds, O_NONBLOCK), 0);
  /* Big enough that no test blocks the writer: 1 MiB. */
  fcntl(pipe_fds[1], F_SETPIPE_SZ, 1 << 20);
  saved_fd = wsg_log_set_fd(pipe_fds[1]);
}

/* Everything logged since capture_start(), NUL-terminated, in `buf`. */
static size_t capture_read(char *buf, size_t len) {
  size_t used = 0;
  while (used + 1 < len) {
    ssize_t n = read(pipe_fds[0], buf + used, len - 1 - used);
    if (n <= 0)
      break;
    used += (size_t)n;
  }
  buf[used] = '\0';
  return used;
}

static void capture_stop(void) {
  wsg_log_set_fd(saved_fd);
  close(pipe_fds[0]);
  close(pipe_fds[1]);
}

static void setup_text(void) {
  wsg_log_setup(WSG_LOG_DEBUG, false, "log_test");
  capture_start();
}

static void setup_json(void) {
  wsg_log_setup(WSG_LOG_DEBUG, true, "log_test");
  capture_start();
}

TestSuite(wsg_log_text, .init = setup_text, .fini = capture_stop);
TestSuite(wsg_log_json, .init = setup_json, .fini = capture_stop);

static bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

Test(wsg_log_text, line_format) {
  char buf[8192];
  int line = __LINE__ + 1;
  WSG_INFO("ws", "hello %d", 42);
  size_t n = capture_read(buf, sizeof buf);
  /* 2026-11-25T08:30:00.123Z INFO  [wsg_log_test.c:NN] ws: hello 42\n */
  cr_assert_geq(n, 25u);
  const char *pattern = "dddd-dd-ddTdd:dd:dd.dddZ ";
  for (size_t i = 0; pattern[i]; i++) {
    if (pattern[i] == 'd')
      cr_assert(is_digit(buf[i]), "time digit expected at %zu: %s", i, buf);
    else
      cr_assert_eq(buf[i], pattern[i], "at %zu: %s", i, buf);
  }
  char want[128];
  snprintf(want, sizeof want, "INFO  [wsg_log_test.c:%d] ws: hello 42\n", line);
  cr_assert_str_eq(buf + 25, want);
}

Test(wsg_log_text, levels_padded_and_filtered) {
  char buf[8192];
  WSG_DEBUG("a", "d");
  WSG_WARN("a", "w");
  WSG_ERROR("a", "e");
  wsg_log_setup(WSG_LOG_WARN, false, "log_test");
  int evaluated = 0;
  WSG_INFO("a", "not shown %d", ++evaluated);
  cr_assert_eq(evaluated, 0, "arguments of a filtered line must not be evaluated");
  WSG_ERROR("a", "e2");
  capture_read(buf, sizeof buf);
  cr_assert(strstr(buf, "DEBUG [wsg_log_test.c:"));
  cr_assert(strstr(buf, "WARN  [wsg_log_test.c:"));
  cr_assert(strstr(buf, "ERROR [wsg_log_test.c:"));
  cr_assert(strstr(buf, "a: e2\n"));
  cr_assert_null(strstr(buf, "not shown"));
}

Test(wsg_log_text, control_characters_cannot_forge_lines) {
  char buf[8192];
  WSG_INFO("ws", "user=%s", "evil\n2026-01-01T00:00:00.000Z ERROR [x.c:1] forged\x01\x1b[31m");
  size_t n = capture_read(buf, sizeof buf);
  cr_assert_eq(memchr(buf, '\n', n), buf + n - 1, "exactly one newline, at the end: %s", buf);
  cr_assert(strstr(buf, "evil\\n2026"));
  cr_assert(strstr(buf, "forged\\x01\\x1b[31m\n"));
}

Test(wsg_log_text, invalid_utf8_replaced_valid_kept) {
  char buf[8192];
  /* valid 2-, 3-, 4-byte sequences; a lone continuation, an overlong '/', a surrogate, 0xff. */
  WSG_INFO("ws", "%s", "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80|\x80|\xc0\xaf|\xed\xa0\x80|\xff");
  capture_read(buf, sizeof buf);
  const char *msg = strstr(buf, "ws: ");
  cr_assert_not_null(msg);
  cr_assert_str_eq(msg + 4,
                   "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80|\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd|"
                   "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd|\xef\xbf\xbd\n");
}

Test(wsg_log_text, long_line_truncated_to_one_write) {
  static char big[10000];
  char buf[16384];
  memset(big, 'a', sizeof big - 1);
  WSG_WARN("kafka", "%s", big);
  size_t n = capture_read(buf, sizeof buf);
  cr_assert_eq(n, 4096u, "one line of exactly the buffer size, got %zu", n);
  cr_assert_str_eq(buf + n - strlen("\xe2\x80\xa6(truncated)\n"), "\xe2\x80\xa6(truncated)\n");
}

Test(wsg_log_text, truncation_never_cuts_a_character) {
  static char big[6000];
  char buf[16384];
  /* 3-byte characters so the cut falls inside one unless the logger avoids it. */
  for (size_t i = 0; i + 3 < sizeof big; i += 3)
    memcpy(big + i, "\xe2\x82\xac", 3);
  WSG_INFO("x", "%s", big);
  size_t n = capture_read(buf, sizeof buf);
  cr_assert_leq(n, 4096u);
  cr_assert_null(strstr(buf, "\xef\xbf\xbd"), "no replacement character from our own cut");
  cr_assert(strstr(buf, "\xe2\x82\xac\xe2\x80\xa6(truncated)\n"));
}

Test(wsg_log_text, basename_only) {
  char buf[1024];
  wsg_log_write(WSG_LOG_INFO, "s", "../gateway/deep/gw_server.c", 7, "m");
  capture_read(buf, sizeof buf);
  cr_assert(strstr(buf, "INFO  [gw_server.c:7] s: m\n"), "%s", buf);
}

Test(wsg_log_json, object_fields_and_escaping) {
  char buf[8192];
  wsg_log_write(WSG_LOG_ERROR, "ws", "a/b/gw.c", 12, "q=\"%s\" bs=\\ nl=\n tab=\t c=\x01 bad=\xff",
                "v");
  capture_read(buf, sizeof buf);
  const char *want_tail =
      "\",\"level\":\"ERROR\",\"prog\":\"log_test\",\"file\":\"gw.c\",\"line\":12,"
      "\"subsys\":\"ws\",\"msg\":\"q=\\\"v\\\" bs=\\\\ nl=\\n tab=\\t "
      "c=\\u0001 bad=\xef\xbf\xbd\"}\n";
  cr_assert(strncmp(buf, "{\"ts\":\"", 7) == 0, "%s", buf);
  cr_assert_eq(buf[7 + 24], '"', "24-character timestamp: %s", buf);
  cr_assert_str_eq(buf + 7 + 24, want_tail);
}

Test(wsg_log_json, truncated_line_is_still_an_object) {
  static char big[10000];
  char buf[16384];
  memset(big, '"', sizeof big - 1); /* every byte doubles when escaped */
  WSG_INFO("x", "%s", big);
  size_t n = capture_read(buf, sizeof buf);
  cr_assert_leq(n, 4096u);
  cr_assert_str_eq(buf + n - strlen("\xe2\x80\xa6(truncated)\"}\n"),
                   "\xe2\x80\xa6(truncated)\"}\n");
  /* No escape was cut in half: the character before the mark is a complete \" pair. */
  const char *mark = buf + n - strlen("\xe2\x80\xa6(truncated)\"}\n");
  cr_assert_eq(mark[-1], '"');
  cr_assert_eq(mark[-2], '\\');
  size_t backslashes = 0;
  for (const char *p = mark - 2; p >= buf && *p == '\\'; p--)
    backslashes++;
  cr_assert_eq(backslashes % 2, 1u);
}

Test(wsg_log, level_names_round_trip) {
  wsg_log_level l;
  for (int i = WSG_LOG_DEBUG; i <= WSG_LOG_ERROR; i++) {
    cr_assert_eq(wsg_log_level_parse(wsg_log_level_name((wsg_log_level)i), &l), 0);
    cr_assert_eq((int)l, i);
  }
  cr_assert_eq(wsg_log_level_parse("WARNING", &l), 0);
  cr_assert_eq(l, WSG_LOG_WARN);
  cr_assert_eq(wsg_log_level_parse("verbose", &l), -1);
  cr_assert_eq(wsg_log_level_parse(NULL, &l), -1);
  cr_assert_str_eq(wsg_log_level_name((wsg_log_level)42), "unknown");
}

Test(wsg_log_text, ratelimit_window_and_report) {
  char buf[8192];
  wsg_log_ratelimit rl = {0};
  int allowed = 0;
  for (int i = 0; i < 10; i++)
    allowed += wsg_log_ratelimit_allow(&rl, 3, 5000 + (uint64_t)i, "env");
  cr_assert_eq(allowed, 3);
  cr_assert_eq(rl.suppressed, 7u);
  capture_read(buf, sizeof buf);
  cr_assert_str_eq(buf, "", "nothing reported before the window ends");
  /* Still inside the window at +999 ms. */
  cr_assert_not(wsg_log_ratelimit_allow(&rl, 3, 5999, "env"));
  /* The next window: allowed again, and the 8 suppressed lines are reported once. */
  cr_assert(wsg_log_ratelimit_allow(&rl, 3, 6000, "env"));
  capture_read(buf, sizeof buf);
  cr_assert(strstr(buf, "WARN  [wsg_log.c:"), "%s", buf);
  cr_assert(strstr(buf, "env: 8 similar lines suppressed in the last 1000 ms\n"), "%s", buf);
  cr_assert(wsg_log_ratelimit_allow(&rl, 3, 6001, "env"));
  capture_read(buf, sizeof buf);
  cr_assert_str_eq(buf, "");
}

Test(wsg_log_text, ratelimit_survives_clock_going_back) {
  wsg_log_ratelimit rl = {0};
  cr_assert(wsg_log_ratelimit_allow(&rl, 1, 10000, "x"));
  cr_assert_not(wsg_log_ratelimit_allow(&rl, 1, 10001, "x"));
  cr_assert(wsg_log_ratelimit_allow(&rl, 1, 500, "x"), "a new window starts");
}

static void *spam(void *arg) {
  for (int i = 0; i < 100; i++)
    WSG_INFO("t", "%s %d", (const char *)arg, i);
  return NULL;
}

Test(wsg_log_text, threads_never_interleave_lines) {
  static char buf[1 << 20];
  static char payload[4][1500];
  pthread_t th[4];
  for (int t = 0; t < 4; t++) {
    memset(payload[t], 'A' + t, sizeof payload[t] - 1);
    cr_assert_eq(pthread_create(&th[t], NULL, spam, payload[t]), 0);
  }
  for (int t = 0; t < 4; t++)
    pthread_join(th[t], NULL);
  capture_read(buf, sizeof buf);
  int lines = 0;
  for (char *line = buf, *nl; (nl = strchr(line, '\n')); line = nl + 1, lines++) {
    char *msg = strstr(line, "t: ");
    cr_assert(msg && msg < nl);
    char c = msg[3];
    for (char *p = msg + 3; p < msg + 3 + 1499; p++)
      cr_assert_eq(*p, c, "a line mixes output of two threads");
  }
  cr_assert_eq(lines, 400);
}
