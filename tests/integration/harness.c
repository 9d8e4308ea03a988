/*
 * harness: helpers of the integration tests (see harness.h).
 *
 * Threads: the test's thread. A test process may already run librdkafka's threads when it
 * spawns a child, so everything the child needs between fork() and exec() is prepared before the
 * fork: the child only calls async-signal-safe functions.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "wsg_redis_keys.h"
#include "wsg_redis_slots.h"
#include "wsg_time.h"

extern char **environ;

#define HTTP_RESPONSE_MAX ((size_t)64 * 1024)
#define IO_TIMEOUT_S      5

uint64_t itest_now_ms(void) {
  return wsg_now_mono_ms();
}

static void sleep_ms(unsigned ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

bool itest_wait_until(bool (*fn)(void *arg), void *arg, int timeout_ms) {
  uint64_t deadline = itest_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
  unsigned pause = 1;
  for (;;) {
    if (fn(arg))
      return true;
    uint64_t now = itest_now_ms();
    if (now >= deadline)
      return false;
    uint64_t left = deadline - now;
    sleep_ms(left < pause ? (unsigned)left : pause);
    if (pause < 50)
      pause *= 2;
  }
}

static void loop_tick(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop;
  (void)w;
  (void)revents;
}

bool itest_loop_until(struct ev_loop *loop, bool (*fn)(void *arg), void *arg, int timeout_ms) {
  uint64_t deadline = itest_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
  ev_timer tick;
  ev_timer_init(&tick, loop_tick, 0.005, 0.005);
  ev_timer_start(loop, &tick);
  bool ok;
  while (!(ok = fn(arg)) && itest_now_ms() < deadline)
    ev_run(loop, EVRUN_ONCE);
  ev_timer_stop(loop, &tick);
  return ok;
}

/* --- servers ------------------------------------------------------------------------------- */

const char *itest_kafka_bootstrap(void) {
  const char *v = getenv("WSGATE_TEST_KAFKA");
  return v && *v ? v : NULL;
}

int itest_redis_port(void) {
  const char *v = getenv("WSGATE_TEST_REDIS_PORT");
  if (!v || !*v)
    return 0;
  char *end = NULL;
  long port = strtol(v, &end, 10);
  return *end == '\0' && port > 0 && port < 65536 ? (int)port : 0;
}

void itest_require_kafka(void) {
  if (!itest_kafka_bootstrap())
    cr_skip_test("WSGATE_TEST_KAFKA is not set: run scripts/test, or start scripts/kafka and "
                 "export WSGATE_TEST_KAFKA=127.0.0.1:<port>");
}

void itest_require_redis(void) {
  if (itest_redis_port() == 0)
    cr_skip_test("WSGATE_TEST_REDIS_PORT is not set (or not a port): run scripts/test, or start "
                 "scripts/redis and export WSGATE_TEST_REDIS_PORT=<port>");
}

void itest_require_servers(void) {
  itest_require_kafka();
  itest_require_redis();
}

/* --- names and Kafka ----------------------------------------------------------------------- */

char *itest_unique(const char *prefix) {
  static atomic_uint counter;
  uint32_t rnd = 0;
  if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
    rnd = (uint32_t)itest_now_ms();
  char *name = NULL;
  cr_assert(asprintf(&name, "%s-%ld-%u-%08x", prefix, (long)getpid(),
                     atomic_fetch_add(&counter, 1) + 1, rnd) > 0,
            "out of memory");
  return name;
}

rd_kafka_conf_t *itest_kafka_conf(wsg_kafka_role role, const char *const *overrides) {
  const char *bootstrap = itest_kafka_bootstrap();
  cr_assert(bootstrap, "WSGATE_TEST_KAFKA is not set (call itest_require_kafka() first)");
  char err[512];
  rd_kafka_conf_t *conf = wsg_kafka_conf_new(role, bootstrap, NULL, err, sizeof(err));
  cr_assert(conf, "kafka configuration: %s", err);
  bool has_group = false;
  for (size_t i = 0; overrides && overrides[i]; i += 2) {
    cr_assert(overrides[i + 1], "kafka override %s has no value", overrides[i]);
    if (strcmp(overrides[i], "group.id") == 0)
      has_group = true;
    if (wsg_kafka_conf_set(conf, overrides[i], overrides[i + 1], err, sizeof(err)) != 0) {
      rd_kafka_conf_destroy(conf);
      cr_assert_fail("%s", err);
    }
  }
  /* A consumer group of its own unless the test names one: tests never share offsets. */
  if (role == WSG_KAFKA_CONSUMER_GROUP && !has_group) {
    char *group = itest_unique("itest-group");
    int rc = wsg_kafka_conf_set(conf, "group.id", group, err, sizeof(err));
    free(group);
    cr_assert(rc == 0, "%s", err);
  }
  return conf;
}

rd_kafka_t *itest_kafka_client(wsg_kafka_role role, const char *const *overrides) {
  bool consumer = role == WSG_KAFKA_CONSUMER_GROUP || role == WSG_KAFKA_CONSUMER_ASSIGN;
  char err[512];
  rd_kafka_t *rk = wsg_kafka_new(consumer ? RD_KAFKA_CONSUMER : RD_KAFKA_PRODUCER,
                                 itest_kafka_conf(role, overrides), err, sizeof(err));
  cr_assert(rk, "%s", err);
  /* One queue to poll: rd_kafka_consumer_poll() serves events and messages alike. */
  if (consumer)
    rd_kafka_poll_set_consumer(rk);
  return rk;
}

void itest_topic_create(const char *topic, int partitions) {
  rd_kafka_t *rk = itest_kafka_client(WSG_KAFKA_ADMIN, NULL);
  char err[512];
  int rc = wsg_kafka_topic_ensure(rk, topic, partitions, 1, ITEST_TIMEOUT_MS, err, sizeof(err));
  rd_kafka_destroy(rk);
  cr_assert(rc == 0, "creating topic %s on %s: %s", topic, itest_kafka_bootstrap(), err);
}

/* --- programs ------------------------------------------------------------------------------ */

const char *itest_bin(const char *env_name) {
  const char *path = getenv(env_name);
  cr_assert(path && *path,
            "%s is not set: run the test through meson (tests/integration/meson.build sets it)",
            env_name);
  cr_assert(access(path, X_OK) == 0, "%s=%s is not executable: %s", env_name, path,
            strerror(errno));
  return path;
}

char *itest_log_path(const char *name) {
  const char *dir = getenv("WSGATE_TEST_LOG_DIR");
  if (!dir || !*dir)
    dir = ".";
  if (mkdir(dir, 0755) != 0 && errno != EEXIST)
    cr_assert_fail("cannot create the log directory %s: %s", dir, strerror(errno));
  char *path = NULL;
  cr_assert(asprintf(&path, "%s/%s", dir, name) > 0, "out of memory");
  return path;
}

/* environ with `extra` ("NAME=value") replacing or adding variables. Caller frees the array (not
 * the strings, which are borrowed). */
static char **build_env(const char *const extra[]) {
  static const char *const none[] = {NULL};
  if (!extra)
    extra = none;
  size_t n_env = 0, n_extra = 0;
  while (environ[n_env])
    n_env++;
  while (extra[n_extra])
    n_extra++;
  char **env = calloc(n_env + n_extra + 1, sizeof(*env));
  cr_assert(env, "out of memory");
  size_t n = 0;
  for (size_t i = 0; i < n_env; i++) {
    const char *eq = strchr(environ[i], '=');
    size_t name_len = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
    bool replaced = false;
    for (size_t j = 0; j < n_extra && !replaced; j++)
      replaced = strncmp(extra[j], environ[i], name_len) == 0 && extra[j][name_len] == '=';
    if (!replaced)
      env[n++] = environ[i];
  }
  for (size_t j = 0; j < n_extra; j++) {
    cr_assert(strchr(extra[j], '='), "env_extra entry '%s' is not NAME=value", extra[j]);
    env[n++] = (char *)extra[j];
  }
  env[n] = NULL;
  return env;
}

pid_t itest_spawn(const char *const argv[], const char *const env_extra[], const char *log_path) {
  cr_assert(argv && argv[0], "itest_spawn: no program");
  char **env = build_env(env_extra);
  int log_fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  cr_assert(log_fd >= 0, "cannot open %s: %s", log_path, strerror(errno));
  int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  cr_assert(null_fd >= 0, "cannot open /dev/null: %s", strerror(errno));
  /* The child reports an exec failure's errno through this pipe; a successful exec closes it. */
  int report[2];
  cr_assert(pipe2(report, O_CLOEXEC) == 0, "pipe2: %s", strerror(errno));

  pid_t test = getpid();
  pid_t pid = fork();
  cr_assert(pid >= 0, "fork: %s", strerror(errno));
  if (pid == 0) {
    /* Only async-signal-safe calls from here on. */
    setpgid(0, 0);
    /* A test killed by a signal (Ctrl-C, meson's timeout) runs no .fini: what it started dies
     * with it rather than keep a private redis-server's port or a gateway for the next run. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != test)
      _exit(127);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* exec keeps ignored signals ignored: give the program the defaults it expects. */
    signal(SIGPIPE, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    if (dup2(null_fd, STDIN_FILENO) < 0 || dup2(log_fd, STDOUT_FILENO) < 0 ||
        dup2(log_fd, STDERR_FILENO) < 0) {
      int e = errno;
      ssize_t w = write(report[1], &e, sizeof(e));
      (void)w;
      _exit(127);
    }
    execvpe(argv[0], (char *const *)argv, env);
    int e = errno;
    ssize_t w = write(report[1], &e, sizeof(e));
    (void)w;
    _exit(127);
  }
  /* Also from the parent, so a signal to the group right after this returns reaches it. */
  setpgid(pid, pid);
  close(report[1]);
  close(log_fd);
  close(null_fd);
  free(env);
  int child_errno = 0;
  ssize_t got;
  do {
    got = read(report[0], &child_errno, sizeof(child_errno));
  } while (got < 0 && errno == EINTR);
  close(report[0]);
  if (got > 0) {
    waitpid(pid, NULL, 0);
    cr_assert_fail("cannot run %s: %s", argv[0], strerror(child_errno));
  }
  return pid;
}

bool itest_alive(pid_t pid, int *status) {
  int st = 0;
  pid_t r;
  do {
    r = waitpid(pid, &st, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == 0)
    return true;
  if (r == pid && status)
    *status = st;
  return false;
}

int itest_stop(pid_t pid, int sig, int timeout_ms, int *status) {
  if (pid <= 0)
    return -1;
  if (sig != 0)
    kill(pid, sig);
  uint64_t deadline = itest_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
  unsigned pause = 1;
  int st = 0;
  for (;;) {
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid || (r < 0 && errno == ECHILD)) {
      if (status)
        *status = st;
      /* Anything the program left behind in its group goes with it. */
      kill(-pid, SIGKILL);
      return r == pid ? 0 : -1;
    }
    if (itest_now_ms() >= deadline)
      break;
    sleep_ms(pause);
    if (pause < 50)
      pause *= 2;
  }
  fprintf(stderr, "itest: pid %ld still running %d ms after signal %d; killing its group\n",
          (long)pid, timeout_ms, sig);
  kill(-pid, SIGKILL);
  kill(pid, SIGKILL);
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (status)
    *status = st;
  return -1;
}

char *itest_read_file(const char *path, char *buf, size_t len) {
  FILE *f = fopen(path, "r");
  cr_assert(f, "cannot read %s: %s", path, strerror(errno));
  size_t n = fread(buf, 1, len - 1, f);
  buf[n] = '\0';
  fclose(f);
  return buf;
}

void itest_dump_log(const char *path, int lines) {
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "itest: cannot read %s: %s\n", path, strerror(errno));
    return;
  }
  /* The tail of a file fits in the last 64 KiB for any sane line count. */
  char buf[64 * 1024];
  long start = 0;
  if (fseek(f, 0, SEEK_END) == 0) {
    long size = ftell(f);
    start = size > (long)sizeof(buf) - 1 ? size - (long)sizeof(buf) + 1 : 0;
  }
  fseek(f, start, SEEK_SET);
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  /* Back from the end (a final newline does not count) to the start of the lines-th last line. */
  size_t i = n > 0 && buf[n - 1] == '\n' ? n - 1 : n;
  int seen = 0;
  while (i > 0 && !(buf[i - 1] == '\n' && ++seen == lines))
    i--;
  const char *p = buf + i;
  fprintf(stderr, "---- last %d lines of %s ----\n%s%s---- end of %s ----\n", lines, path, p,
          n > 0 && buf[n - 1] != '\n' ? "\n" : "", path);
}

/* --- network ------------------------------------------------------------------------------- */

int itest_free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  cr_assert(fd >= 0, "socket: %s", strerror(errno));
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(sa);
  int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
  if (rc == 0)
    rc = getsockname(fd, (struct sockaddr *)&sa, &len);
  int e = errno;
  close(fd);
  cr_assert(rc == 0, "finding a free port: %s", strerror(e));
  return ntohs(sa.sin_port);
}

static int connect_loopback(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)port),
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

int itest_http_get(int port, const char *path, char *body, size_t body_len) {
  if (body && body_len > 0)
    body[0] = '\0';
  int fd = connect_loopback(port);
  if (fd < 0)
    return -1;
  char req[1024];
  int n =
      snprintf(req, sizeof(req),
               "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n", path, port);
  if (n < 0 || (size_t)n >= sizeof(req) || send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
    close(fd);
    return -1;
  }
  char *resp = malloc(HTTP_RESPONSE_MAX + 1);
  cr_assert(resp, "out of memory");
  size_t got = 0;
  for (;;) {
    char scratch[4096];
    /* Past the buffer, keep reading into scratch so the server sees its response consumed. */
    char *dst = got < HTTP_RESPONSE_MAX ? resp + got : scratch;
    size_t room = got < HTTP_RESPONSE_MAX ? HTTP_RESPONSE_MAX - got : sizeof(scratch);
    ssize_t r = recv(fd, dst, room, 0);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    if (dst != scratch)
      got += (size_t)r;
  }
  close(fd);
  resp[got] = '\0';
  int status = -1;
  int major = 0, minor = 0;
  if (sscanf(resp, "HTTP/%d.%d %d", &major, &minor, &status) != 3)
    status = -1;
  if (status > 0 && body && body_len > 0) {
    const char *start = strstr(resp, "\r\n\r\n");
    if (start) {
      start += 4;
      size_t len = got - (size_t)(start - resp);
      if (len > body_len - 1)
        len = body_len - 1;
      memcpy(body, start, len);
      body[len] = '\0';
    }
  }
  free(resp);
  return status;
}

typedef struct {
  int port;
  const char *path;
  int expect;
  int last;
  int last_errno;
} http_wait;

static bool http_ready(void *arg) {
  http_wait *w = arg;
  errno = 0;
  w->last = itest_http_get(w->port, w->path, NULL, 0);
  w->last_errno = errno;
  return w->last == w->expect;
}

int itest_wait_http(int port, const char *path, int expect_status, int timeout_ms) {
  http_wait w = {.port = port, .path = path, .expect = expect_status, .last = -1};
  if (itest_wait_until(http_ready, &w, timeout_ms))
    return 0;
  if (w.last > 0)
    fprintf(stderr, "itest: GET 127.0.0.1:%d%s answered %d, not %d, for %d ms\n", port, path,
            w.last, expect_status, timeout_ms);
  else
    fprintf(stderr, "itest: GET 127.0.0.1:%d%s failed for %d ms (last error: %s)\n", port, path,
            timeout_ms, w.last_errno ? strerror(w.last_errno) : "no HTTP response");
  return -1;
}

/* --- Redis --------------------------------------------------------------------------------- */

redisContext *itest_redis_connect_port(int port) {
  struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
  redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
  if (!c)
    return NULL;
  if (c->err || redisSetTimeout(c, tv) != REDIS_OK) {
    redisFree(c);
    return NULL;
  }
  return c;
}

const char *itest_redis_cluster_seed(void) {
  const char *s = getenv("WSGATE_TEST_REDIS_CLUSTER");
  return s != NULL && *s != '\0' ? s : NULL;
}

int itest_redis_default_port(void) {
  const char *seed = itest_redis_cluster_seed();
  return seed != NULL ? atoi(strrchr(seed, ':') + 1) : itest_redis_port();
}

redisContext *itest_redis_connect(void) {
  int port = itest_redis_default_port();
  cr_assert(port > 0, "WSGATE_TEST_REDIS_PORT is not set (call itest_require_redis() first)");
  redisContext *c = itest_redis_connect_port(port);
  cr_assert(c, "cannot connect to redis on 127.0.0.1:%d", port);
  return c;
}

redisReply *itest_redis_vcmd(redisContext *rc, const char *fmt, va_list ap) {
  va_list again;
  va_copy(again, ap);
  redisReply *r = redisvCommand(rc, fmt, ap);
  wsg_redis_redirect rd;
  if (r != NULL && r->type == REDIS_REPLY_ERROR && wsg_redis_redirect_parse(r->str, r->len, &rd)) {
    freeReplyObject(r);
    /* A connection of its own to the owner: rc stays on the node the caller chose. */
    redisContext *to = itest_redis_connect_port(rd.port);
    cr_assert(to, "cannot connect to redis on 127.0.0.1:%d (%s)", rd.port,
              rd.kind == WSG_REDIS_ASK ? "ASK" : "MOVED");
    if (rd.kind == WSG_REDIS_ASK)
      freeReplyObject(redisCommand(to, "ASKING"));
    r = redisvCommand(to, fmt, again);
    redisFree(to);
  }
  va_end(again);
  return r;
}

redisReply *itest_redis_cmd(redisContext *rc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  redisReply *r = itest_redis_vcmd(rc, fmt, ap);
  va_end(ap);
  return r;
}

/* Runs one command; fails the test on no reply or an error reply. */
static void redis_run(redisContext *rc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  redisReply *rep = itest_redis_vcmd(rc, fmt, ap);
  va_end(ap);
  cr_assert_not_null(rep, "redis: %s", rc->errstr);
  cr_assert_neq(rep->type, REDIS_REPLY_ERROR, "redis: %s", rep->str);
  freeReplyObject(rep);
}

void itest_fake_gateway(redisContext *rc, const char *prefix, const char *gw, int slot,
                        int ttl_ms) {
  char key[WSG_REDIS_KEY_MAX];
  cr_assert_gt(wsg_key_gateway(key, sizeof(key), prefix, gw), 0);
  redis_run(rc, "HSET %s slot %d addr 127.0.0.1:0 version test boot " ITEST_FAKE_BOOT, key, slot);
  redis_run(rc, "PEXPIRE %s %d", key, ttl_ms);
}

void itest_fake_conn(redisContext *rc, const char *prefix, const char *user, uint64_t conn,
                     const char *gw) {
  char key[WSG_REDIS_KEY_MAX], id[24];
  cr_assert_gt(wsg_key_user(key, sizeof(key), prefix, user, strlen(user)), 0);
  wsg_conn_id_format(id, sizeof(id), conn);
  redis_run(rc, "HSET %s %s %s", key, id, gw);
}

typedef struct {
  itest_redis_server *srv;
  bool died;
} redis_wait;

static bool redis_answers(void *arg) {
  redis_wait *w = arg;
  if (!itest_alive(w->srv->pid, NULL)) {
    w->died = true;
    return true;
  }
  redisContext *c = itest_redis_connect_port(w->srv->port);
  if (!c)
    return false;
  redisReply *r = redisCommand(c, "PING");
  bool ok = r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
  if (r)
    freeReplyObject(r);
  redisFree(c);
  return ok;
}

void itest_redis_server_start(itest_redis_server *srv, int port) {
  cr_assert(srv->pid == 0, "redis-server on port %d is already running", srv->port);
  if (port == 0)
    port = srv->port ? srv->port : itest_free_port();
  srv->port = port;
  char name[64];
  snprintf(name, sizeof(name), "redis-%d.log", port);
  char *log = itest_log_path(name);
  snprintf(srv->log, sizeof(srv->log), "%s", log);
  free(log);
  char *dir = itest_log_path("");
  const char *bin = getenv("WSGATE_REDIS_SERVER_BIN");
  char port_text[16];
  snprintf(port_text, sizeof(port_text), "%d", port);
  /* Loopback, nothing persisted: a restart must start empty, as after a crash without disk. */
  const char *argv[] = {bin && *bin ? bin : "redis-server",
                        "--port",
                        port_text,
                        "--bind",
                        "127.0.0.1",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--daemonize",
                        "no",
                        "--dir",
                        dir,
                        NULL};
  srv->pid = itest_spawn(argv, NULL, srv->log);
  free(dir);
  redis_wait w = {.srv = srv};
  bool ok = itest_wait_until(redis_answers, &w, ITEST_TIMEOUT_MS);
  if (!ok || w.died) {
    itest_dump_log(srv->log, 20);
    if (!w.died)
      itest_stop(srv->pid, SIGKILL, 5000, NULL);
    srv->pid = 0;
    cr_assert_fail("redis-server on port %d %s", port,
                   w.died ? "exited during start-up" : "did not answer PING in time");
  }
}

int itest_redis_server_stop(itest_redis_server *srv, int sig) {
  if (srv->pid == 0)
    return 0;
  int rc = itest_stop(srv->pid, sig, 10000, NULL);
  srv->pid = 0;
  return rc;
}
