/*
 * What the Kubernetes probes rely on (docs/KUBERNETES.md, "Probes"): /healthz fails when a
 * daemon's main loop stops turning while its operations thread still answers; SIGTERM during the
 * start-up wait for Kafka stops a daemon at once with exit status 0; a descriptor limit below
 * --max-connections is reported at start and in wsgate_gateway_fd_limit.
 *
 * The wedge: ptrace(PTRACE_SEIZE) and PTRACE_INTERRUPT stop only the traced thread, the main
 * one (the gateway's event loop, the processor's consumer loop), and leave the operations thread
 * running; SIGSTOP would stop every thread. So the binaries under test carry no test hook.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

#include "harness_daemons.h"

static itest_gateway gw;
static itest_processor proc;

static void teardown(void) {
  itest_gateway_cleanup(&gw);
  itest_processor_cleanup(&proc);
}

TestSuite(probes, .fini = teardown, .timeout = 120);

/* Stops only the main thread of `pid` (its tid is the pid); skips the test without ptrace. */
static void wedge_main_thread(pid_t pid) {
  if (ptrace(PTRACE_SEIZE, pid, NULL, NULL) != 0)
    cr_skip_test("ptrace(PTRACE_SEIZE) is not allowed here (%s): cannot wedge one thread",
                 strerror(errno));
  cr_assert_eq(ptrace(PTRACE_INTERRUPT, pid, NULL, NULL), 0, "PTRACE_INTERRUPT: %s",
               strerror(errno));
  int status = 0;
  cr_assert_eq(waitpid(pid, &status, __WALL), pid, "waitpid: %s", strerror(errno));
  cr_assert(WIFSTOPPED(status), "the main thread did not stop (status %#x)", status);
}

static void release_main_thread(pid_t pid) {
  cr_assert_eq(ptrace(PTRACE_DETACH, pid, NULL, 0), 0, "PTRACE_DETACH: %s", strerror(errno));
}

/* Wedges the loop of the daemon at `pid` for longer than its --liveness-stall of 2 s: /healthz
 * must say so within it (plus the 0.1 s tick and the test's polling), /readyz keep answering. */
static void expect_stall_detected(pid_t pid, int http_port, const char *what) {
  char body[512];
  cr_assert_eq(itest_http_get(http_port, "/healthz", body, sizeof body), 200, "%s", body);
  wedge_main_thread(pid);
  uint64_t t0 = itest_now_ms();
  int st = 0;
  while ((st = itest_http_get(http_port, "/healthz", body, sizeof body)) == 200 &&
         itest_now_ms() - t0 < 5000) {
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  uint64_t took = itest_now_ms() - t0;
  cr_assert_eq(st, 503, "/healthz still %d %llu ms after the loop stopped", st,
               (unsigned long long)took);
  cr_assert_leq(took, 3500, "/healthz took %llu ms to notice a 2 s stall",
                (unsigned long long)took);
  cr_assert(strstr(body, what), "/healthz body: %s", body);
  cr_assert(strstr(body, "--liveness-stall"), "/healthz body: %s", body);
  /* The operations thread still answers; readiness is the loop's own flag, left as it was. */
  cr_assert_eq(itest_http_get(http_port, "/readyz", body, sizeof body), 200, "%s", body);
  release_main_thread(pid);
  cr_assert_eq(itest_wait_http(http_port, "/healthz", 200, 5000), 0,
               "/healthz did not recover once the loop turned again");
}

Test(probes, healthz_fails_when_the_gateway_loop_is_wedged) {
  const char *extra[] = {"--liveness-stall", "2s", NULL};
  itest_gateway_start(&gw, NULL, "wedge", &(itest_daemon_opts){.extra = extra});
  expect_stall_detected(gw.pid, gw.http_port, "event loop stalled");
  int status = itest_gateway_stop(&gw, SIGTERM, 15000);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "gateway exit status %#x", status);
}

Test(probes, healthz_fails_when_the_processor_loop_is_wedged) {
  itest_cluster c;
  itest_cluster_init(&c, 2, 2, false);
  const char *extra[] = {"--liveness-stall", "2s", "--revoke-timeout", "1s", NULL};
  itest_processor_start(&proc, &c, "wedge", "echo", &(itest_daemon_opts){.extra = extra});
  expect_stall_detected(proc.pid, proc.http_port, "consumer loop stalled");
  int status = itest_processor_stop(&proc, SIGTERM, 30000);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "processor exit status %#x", status);
}

/* SIGTERM one second into a wait for a Kafka where nothing listens: exit 0 within 2 s. */
static void expect_prompt_stop(pid_t pid, const char *log) {
  struct timespec ts = {1, 0};
  nanosleep(&ts, NULL);
  cr_assert(itest_alive(pid, NULL), "it did not wait for Kafka");
  uint64_t t0 = itest_now_ms();
  int status = 0;
  int rc = itest_stop(pid, SIGTERM, 2000, &status);
  itest_untrack(pid);
  if (rc != 0)
    itest_dump_log(log, 20);
  cr_assert_eq(rc, 0, "still running 2 s after SIGTERM");
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
            "exit status %#x after SIGTERM during the start-up wait (%llu ms), expected exit 0",
            status, (unsigned long long)(itest_now_ms() - t0));
  char buf[65536];
  cr_assert(strstr(itest_read_file(log, buf, sizeof buf), "stopped during start-up"),
            "no 'stopped during start-up' in %s", log);
}

Test(probes, gateway_stops_on_sigterm_while_waiting_for_kafka) {
  char brokers[32];
  snprintf(brokers, sizeof brokers, "127.0.0.1:%d", itest_free_port());
  const char *extra[] = {"--kafka-brokers", brokers, NULL};
  itest_gateway_start(&gw, NULL, "nokafka", &(itest_daemon_opts){.extra = extra, .no_wait = true});
  expect_prompt_stop(gw.pid, gw.log);
  gw.pid = 0;
}

Test(probes, processor_stops_on_sigterm_while_waiting_for_kafka) {
  itest_cluster c;
  itest_cluster_init(&c, 1, 1, false);
  char brokers[32];
  snprintf(brokers, sizeof brokers, "127.0.0.1:%d", itest_free_port());
  const char *extra[] = {"--kafka-brokers", brokers, NULL};
  itest_processor_start(&proc, &c, "nokafka", "echo",
                        &(itest_daemon_opts){.extra = extra, .no_wait = true});
  expect_prompt_stop(proc.pid, proc.log);
  proc.pid = 0;
}

/* A hard RLIMIT_NOFILE of 1024 (inherited by the gateway, which cannot raise it) against
 * --max-connections 5000: a warning naming the numbers and the fix, and the metric. */
Test(probes, gateway_warns_when_the_fd_limit_is_below_max_connections) {
  struct rlimit rl = {1024, 1024};
  cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0, "setrlimit: %s", strerror(errno));
  const char *extra[] = {"--max-connections", "5000", NULL};
  itest_gateway_start(&gw, NULL, "fdlimit", &(itest_daemon_opts){.extra = extra});
  char buf[1 << 17];
  itest_read_file(gw.log, buf, sizeof buf);
  const char *w = strstr(buf, "file descriptor limit too low");
  cr_assert(w, "no warning about the descriptor limit in %s", gw.log);
  cr_assert(strstr(w, "--max-connections 5000") && strstr(w, "RLIMIT_NOFILE is 1024") &&
                strstr(w, "ulimit -n") && strstr(w, "LimitNOFILE"),
            "the warning lacks the numbers or the fix: %.600s", w);
  cr_assert_eq(itest_metric(gw.http_port, "wsgate_gateway_fd_limit"), 1024 - 256);
  int status = itest_gateway_stop(&gw, SIGTERM, 15000);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "gateway exit status %#x", status);
}

/* The same gateway with room for its connections says nothing. */
Test(probes, gateway_is_quiet_when_the_fd_limit_fits) {
  struct rlimit rl = {4096, 4096};
  cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0, "setrlimit: %s", strerror(errno));
  const char *extra[] = {"--max-connections", "1000", NULL};
  itest_gateway_start(&gw, NULL, "fdfits", &(itest_daemon_opts){.extra = extra});
  char buf[1 << 17];
  cr_assert_null(strstr(itest_read_file(gw.log, buf, sizeof buf), "file descriptor limit too low"));
  cr_assert_eq(itest_metric(gw.http_port, "wsgate_gateway_fd_limit"), 4096 - 256);
  itest_gateway_stop(&gw, SIGTERM, 15000);
}
