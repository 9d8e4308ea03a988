/*
 * The harness itself: child processes, their logs and exit statuses, stopping a program that
 * ignores SIGTERM, the HTTP helpers and a private redis-server that survives nothing across a
 * restart and does not outlive a test killed by a signal. Needs no Kafka; the HTTP test needs
 * python3 (always there: scripts/setup's venv).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

Test(harness, spawn_logs_output_and_exit_status) {
  char *log = itest_log_path("harness-exit.log");
  const char *argv[] = {"/bin/sh", "-c", "echo out; echo err >&2; echo \"$ITEST_X\"; exit 3", NULL};
  const char *env[] = {"ITEST_X=replaced", NULL};
  setenv("ITEST_X", "inherited", 1);
  pid_t pid = itest_spawn(argv, env, log);
  int status = 0;
  cr_assert_eq(itest_stop(pid, 0, 10000, &status), 0);
  cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 3, "status %#x", status);
  char buf[256];
  itest_read_file(log, buf, sizeof(buf));
  cr_expect_str_eq(buf, "out\nerr\nreplaced\n");
  unsetenv("ITEST_X");
  free(log);
}

/* True once the process is gone or a zombie. */
static bool pid_dead(void *arg) {
  char path[64], state = 'X';
  snprintf(path, sizeof(path), "/proc/%ld/stat", (long)*(pid_t *)arg);
  FILE *f = fopen(path, "r");
  if (!f)
    return true;
  if (fscanf(f, "%*d %*s %c", &state) != 1)
    state = 'X';
  fclose(f);
  return state == 'Z' || state == 'X';
}

Test(harness, stop_escalates_to_sigkill_for_the_whole_group) {
  char *log = itest_log_path("harness-stubborn.log");
  /* The shell ignores TERM and has a child of its own in its group. */
  const char *argv[] = {"/bin/sh", "-c", "trap '' TERM; sleep 300 & echo $!; wait", NULL};
  pid_t pid = itest_spawn(argv, NULL, log);
  char buf[64] = "";
  uint64_t deadline = itest_now_ms() + 10000;
  while (!strchr(buf, '\n') && itest_now_ms() < deadline)
    itest_read_file(log, buf, sizeof(buf));
  pid_t grandchild = (pid_t)atol(buf);
  cr_assert_gt(grandchild, 0, "no pid in the log: '%s'", buf);

  int status = 0;
  uint64_t t0 = itest_now_ms();
  cr_expect_eq(itest_stop(pid, SIGTERM, 300, &status), -1);
  cr_expect_lt(itest_now_ms() - t0, 5000);
  cr_expect(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "status %#x", status);
  /* The grandchild went with the group: gone, or a zombie until init reaps it. SIGKILL is
   * delivered asynchronously, so wait for it. */
  cr_expect(itest_wait_until(pid_dead, &grandchild, 5000), "grandchild %ld survived SIGKILL",
            (long)grandchild);
  free(log);
}

Test(harness, alive_reports_and_reaps) {
  char *log = itest_log_path("harness-alive.log");
  const char *argv[] = {"/bin/sh", "-c", "exit 0", NULL};
  pid_t pid = itest_spawn(argv, NULL, log);
  int status = -1;
  uint64_t deadline = itest_now_ms() + 10000;
  while (itest_alive(pid, &status) && itest_now_ms() < deadline)
    usleep(1000);
  cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %#x", status);
  free(log);
}

Test(harness, http_wait_and_get) {
  int port = itest_free_port();
  cr_assert(port > 0);
  cr_expect_eq(itest_http_get(port, "/", NULL, 0), -1, "something answers on a free port");

  char *log = itest_log_path("harness-http.log");
  char port_text[16];
  snprintf(port_text, sizeof(port_text), "%d", port);
  const char *argv[] = {"python3", "-m", "http.server", "--bind", "127.0.0.1", port_text, NULL};
  pid_t pid = itest_spawn(argv, NULL, log);
  cr_assert_eq(itest_wait_http(port, "/", 200, 20000), 0);
  char body[4096];
  cr_expect_eq(itest_http_get(port, "/no-such-file", body, sizeof(body)), 404);
  cr_expect_eq(itest_wait_http(port, "/no-such-file", 200, 300), -1);
  int status = 0;
  cr_expect_eq(itest_stop(pid, SIGTERM, 10000, &status), 0);
  free(log);
}

Test(harness, private_redis_restarts_empty_on_the_same_port) {
  itest_redis_server srv = {0};
  itest_redis_server_start(&srv, 0);
  cr_assert_gt(srv.port, 0);
  redisContext *c = itest_redis_connect_port(srv.port);
  cr_assert(c);
  redisReply *r = redisCommand(c, "SET k v");
  cr_assert(r && r->type == REDIS_REPLY_STATUS);
  freeReplyObject(r);
  redisFree(c);

  int port = srv.port;
  cr_expect_eq(itest_redis_server_stop(&srv, SIGKILL), 0);
  cr_expect_null(itest_redis_connect_port(port), "redis still answers after SIGKILL");
  itest_redis_server_start(&srv, 0);
  cr_expect_eq(srv.port, port, "restart moved to another port");
  c = itest_redis_connect_port(srv.port);
  cr_assert(c);
  r = redisCommand(c, "EXISTS k");
  cr_expect(r && r->type == REDIS_REPLY_INTEGER && r->integer == 0, "data survived a crash");
  freeReplyObject(r);
  redisFree(c);
  cr_expect_eq(itest_redis_server_stop(&srv, SIGTERM), 0);
  cr_expect_eq(itest_redis_server_stop(&srv, SIGTERM), 0, "second stop is a no-op");
}

/* Whether nothing answers on the port any more (the server is gone, or a zombie not listening). */
static bool redis_gone(void *arg) {
  redisContext *c = itest_redis_connect_port(*(int *)arg);
  if (c)
    redisFree(c);
  return c == NULL;
}

/* A test process killed by Ctrl-C or a timeout runs no .fini: its private redis-server (and any
 * daemon it spawned) must go with it instead of holding its port for the next run. The killed
 * "test" here is a child of this one that starts a private server and waits to be signalled. */
static void private_redis_dies_with_the_test(int sig) {
  int report[2];
  cr_assert_eq(pipe(report), 0);
  pid_t test = fork();
  cr_assert_geq(test, 0);
  if (test == 0) {
    signal(sig, SIG_DFL);
    close(report[0]);
    itest_redis_server srv = {0};
    itest_redis_server_start(&srv, 0);
    int got[2] = {srv.port, (int)srv.pid};
    if (write(report[1], got, sizeof(got)) != (ssize_t)sizeof(got))
      _exit(1);
    for (;;)
      pause();
  }
  close(report[1]);
  int got[2] = {0, 0};
  ssize_t n = read(report[0], got, sizeof(got));
  close(report[0]);
  cr_assert_eq(n, (ssize_t)sizeof(got), "the child test did not start its redis-server");
  cr_assert(!redis_gone(&got[0]), "its redis-server does not answer on port %d", got[0]);
  kill(test, sig);
  int status = 0;
  cr_assert_eq(waitpid(test, &status, 0), test);
  cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == sig);
  bool gone = itest_wait_until(redis_gone, &got[0], 5000);
  if (!gone)
    kill(-got[1], SIGKILL); /* not to leak it from this test too */
  cr_expect(gone, "redis-server pid %d still answers on port %d after its test died of signal %d",
            got[1], got[0], sig);
}

Test(harness, private_redis_dies_with_a_test_interrupted) {
  private_redis_dies_with_the_test(SIGINT);
}

Test(harness, private_redis_dies_with_a_test_terminated) {
  private_redis_dies_with_the_test(SIGTERM);
}

Test(harness, unique_names_differ) {
  char *a = itest_unique("t"), *b = itest_unique("t");
  cr_expect_str_neq(a, b);
  cr_expect_eq(strncmp(a, "t-", 2), 0);
  free(a);
  free(b);
}
