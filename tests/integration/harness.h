/*
 * harness: what every integration test needs around the real Kafka broker and redis-server that
 * scripts/test starts: a skip when they are not configured, unique names, topics, child processes
 * with a log file, HTTP readiness, free ports, Redis connections and private redis-servers, and
 * waiting for a condition with a deadline instead of sleeping.
 *
 * Environment (set by scripts/test and tests/integration/meson.build):
 *   WSGATE_TEST_KAFKA        bootstrap servers, e.g. 127.0.0.1:29092
 *   WSGATE_TEST_REDIS_PORT   port of the shared redis-server on 127.0.0.1
 *   WSGATE_GATEWAY_BIN, WSGATE_PROCESSOR_BIN, WSGATE_ADMIN_BIN, WSGATE_DUMP_BIN  the programs
 *   WSGATE_TEST_LOG_DIR      where child logs go (the test's build dir if unset)
 *
 * Functions whose name says what must hold (itest_require_*, itest_topic_create, itest_spawn,
 * itest_bin, itest_redis_connect, itest_redis_server_start) fail the current test with a message
 * when they cannot do their job; the others return a status for the test to assert on.
 *
 * Threads: the test's own thread (Criterion's assertions unwind it on failure).
 */
#ifndef WSG_ITEST_HARNESS_H
#define WSG_ITEST_HARNESS_H

#include <hiredis/hiredis.h>
#include <librdkafka/rdkafka.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "wsg_kafka.h"

/* Default deadline for a server-side condition (and a daemon's start) in the helpers. */
#define ITEST_TIMEOUT_MS 30000

/* --- servers ------------------------------------------------------------------------------- */

/* Skips the current test (cr_skip_test) with the reason unless WSGATE_TEST_KAFKA and
 * WSGATE_TEST_REDIS_PORT are both set. Call first in every integration test. */
void itest_require_servers(void);
/* The same for tests that need only one of the two. */
void itest_require_kafka(void);
void itest_require_redis(void);

/* WSGATE_TEST_KAFKA, or NULL when unset (borrowed from the environment). */
const char *itest_kafka_bootstrap(void);
/* WSGATE_TEST_REDIS_PORT, or 0 when unset or invalid. */
int itest_redis_port(void);

/* --- names and Kafka ----------------------------------------------------------------------- */

/* "<prefix>-<pid>-<counter>-<random hex>": unique across tests, processes and runs sharing a
 * broker or a Redis. Caller frees. */
char *itest_unique(const char *prefix);

/* A configuration for `role` against WSGATE_TEST_KAFKA with wsgate's defaults
 * (wsg_kafka_conf_new), plus `overrides` ("key", "value", ..., NULL; may be NULL). Caller owns the
 * result (pass it to wsg_kafka_new, which takes it). Fails the test on an invalid property. */
rd_kafka_conf_t *itest_kafka_conf(wsg_kafka_role role, const char *const *overrides);

/* A client for `role` (producer, consumer or admin handle). Caller destroys it. */
rd_kafka_t *itest_kafka_client(wsg_kafka_role role, const char *const *overrides);

/* Creates `topic` with `partitions` partitions (replication factor 1) through
 * wsg_kafka_topic_ensure and waits until the broker reports that count. Fails the test if not. */
void itest_topic_create(const char *topic, int partitions);

/* --- programs ------------------------------------------------------------------------------ */

/* The path in environment variable `env_name` (e.g. "WSGATE_GATEWAY_BIN"); fails the test if it
 * is unset or not executable. Borrowed from the environment. */
const char *itest_bin(const char *env_name);

/* "<WSGATE_TEST_LOG_DIR>/<name>": a path for a child's log. Caller frees. */
char *itest_log_path(const char *name);

/*
 * Starts argv[0] with argv (NULL-terminated) in a process group of its own, with the test's
 * environment plus `env_extra` ("NAME=value" strings, NULL-terminated; may be NULL; a name given
 * there replaces the inherited one). Its stdin is /dev/null; stdout and stderr go to `log_path`
 * (truncated). Returns the pid; fails the test if the program cannot be started (an exec failure is
 * detected before returning, not as exit status 127 later). The child is killed (SIGKILL) when the
 * test's process dies, however it dies: a signal skips .fini (itest_fini) and must leak nothing.
 */
pid_t itest_spawn(const char *const argv[], const char *const env_extra[], const char *log_path);

/*
 * Sends `sig` to `pid` (0: send nothing, just wait) and waits up to `timeout_ms` for it to exit.
 * Returns 0 with the wait status in `*status` (may be NULL) if it exited in time; otherwise kills
 * its whole process group with SIGKILL, reaps it, and returns -1. Either way the child is reaped.
 */
int itest_stop(pid_t pid, int sig, int timeout_ms, int *status);

/* True while `pid` (a child of this process) has not exited. Reaps it if it has, storing the
 * wait status in `*status` (may be NULL). */
bool itest_alive(pid_t pid, int *status);

/* Reads `path` (a child's log) into `buf`, NUL-terminated, truncated to `len` - 1 bytes. Fails
 * the test if it cannot be read. Returns `buf`. */
char *itest_read_file(const char *path, char *buf, size_t len);

/* Prints the last `lines` lines of `path` to stderr (to explain a failure). */
void itest_dump_log(const char *path, int lines);

/* --- network ------------------------------------------------------------------------------- */

/* A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then closed). */
int itest_free_port(void);

/* Polls GET http://127.0.0.1:<port><path> until the response status is `expect_status`. Returns
 * 0, or -1 after `timeout_ms` (the last status or connect error is printed to stderr). */
int itest_wait_http(int port, const char *path, int expect_status, int timeout_ms);

/*
 * GET http://127.0.0.1:<port><path> once. Returns the status code, or -1 if the connection or the
 * response failed. If `body` is not NULL the response body is copied there (NUL-terminated,
 * truncated to `body_len` - 1 bytes).
 */
int itest_http_get(int port, const char *path, char *body, size_t body_len);

/* --- Redis --------------------------------------------------------------------------------- */

/* A connection to the Redis the daemons use by default: the shared test redis-server
 * (WSGATE_TEST_REDIS_PORT), or the seed node of WSGATE_TEST_REDIS_CLUSTER=host:port. Caller frees
 * with redisFree(). Fails the test if it cannot connect. */
redisContext *itest_redis_connect(void);
/* The same for 127.0.0.1:<port>; returns NULL (no failure) if it cannot connect. */
redisContext *itest_redis_connect_port(int port);
/* WSGATE_TEST_REDIS_CLUSTER=host:port (scripts/redis start --cluster), or NULL. */
const char *itest_redis_cluster_seed(void);
/* That default port: the cluster's seed node, else WSGATE_TEST_REDIS_PORT (0 if unset). */
int itest_redis_default_port(void);

/* redisCommand on rc, following one MOVED or ASK to the owning node on a connection of its own
 * (like redis-cli -c), so a test's direct reads and writes work on one node and on a cluster.
 * Caller frees the reply; NULL on a lost connection. */
redisReply *itest_redis_cmd(redisContext *rc, const char *fmt, ...);
redisReply *itest_redis_vcmd(redisContext *rc, const char *fmt, va_list ap);

/* A gateway record with a slot (alive for ttl_ms) and a connection entry of a user on gateway gw,
 * under `prefix`, as a gateway writes them: for tests that drive the processor without one. The
 * record's boot is ITEST_FAKE_BOOT: a fake gateway's presence member is <gw>#ITEST_FAKE_BOOT. */
#define ITEST_FAKE_BOOT "00000000000000fb"
void itest_fake_gateway(redisContext *rc, const char *prefix, const char *gw, int slot, int ttl_ms);
void itest_fake_conn(redisContext *rc, const char *prefix, const char *user, uint64_t conn,
                     const char *gw);

/*
 * A private redis-server for tests that kill or restart Redis: loopback only, no persistence,
 * its own directory under the log dir. redis-server comes from PATH (or WSGATE_REDIS_SERVER_BIN).
 */
typedef struct {
  int port;      /* chosen by itest_redis_server_start, kept across restarts */
  pid_t pid;     /* 0 when stopped */
  char log[512]; /* its log file */
} itest_redis_server;

/* Starts a server on `port` (0: a free port) and waits until it answers PING. Fails the test if it
 * does not come up within ITEST_TIMEOUT_MS. Restart after a stop with the same struct. */
void itest_redis_server_start(itest_redis_server *srv, int port);
/* Stops it with `sig` (SIGKILL to simulate a crash, SIGTERM for a clean stop); waits and reaps.
 * Returns 0, or -1 if it had to be killed after the deadline. No-op if it is not running. */
int itest_redis_server_stop(itest_redis_server *srv, int sig);

/* --- waiting ------------------------------------------------------------------------------- */

/* Calls `fn(arg)` until it returns true, backing off from 1 ms to 50 ms between calls, for at most
 * `timeout_ms`. Returns true if it did, false on timeout. */
bool itest_wait_until(bool (*fn)(void *arg), void *arg, int timeout_ms);

/* Runs the libev `loop` until `fn(arg)` holds, for at most `timeout_ms`; a 5 ms tick re-checks it
 * when nothing else happens on the loop. Returns true if it held, false on timeout. For tests
 * that drive a loop-based module (gw_registry, wsg_redis_conn) themselves. */
struct ev_loop;
bool itest_loop_until(struct ev_loop *loop, bool (*fn)(void *arg), void *arg, int timeout_ms);

/* Milliseconds on the monotonic clock. */
uint64_t itest_now_ms(void);

#endif
