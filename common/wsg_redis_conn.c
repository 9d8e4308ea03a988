/*
 * wsg_redis_conn: a self-healing asynchronous hiredis connection on a libev loop
 * (wsg_redis_conn.h describes what it guarantees).
 *
 * The one file that drives hiredis' async API. hiredis 0.14 has no command timeout and resolves
 * names with a blocking getaddrinfo(): a watchdog and a resolver thread (docs/notes/hiredis.md).
 *
 * Threads: the loop thread runs everything here, except resolve_main() on the resolver thread,
 * which touches only its resolve_job and wakes the loop with ev_async_send().
 */
#include "wsg_redis_conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/socket.h>

/* hiredis' libev glue is a header of static functions; it is included here only. */
#include <hiredis/adapters/libev.h>

#include "wsg_log.h"
#include "wsg_time.h"

#define SUBSYS "redis"

#define DEFAULT_BACKOFF_MIN_MS 50
#define DEFAULT_BACKOFF_MAX_MS 2000
#define HOST_MAX               256

#define WSG_REDIS_CONN_ERR_STR(name, value, msg)                                                   \
  case value:                                                                                      \
    return msg;
const char *wsg_redis_conn_strerror(int err) {
  switch (err) { WSG_REDIS_CONN_ERRNO_MAP(WSG_REDIS_CONN_ERR_STR) }
  return "unknown Redis connection error";
}
#undef WSG_REDIS_CONN_ERR_STR

#define WSG_REDIS_CONN_ERR_NAME(name, value, msg)                                                  \
  case value:                                                                                      \
    return "WSG_REDIS_CONN_" #name;
const char *wsg_redis_conn_err_name(int err) {
  switch (err) { WSG_REDIS_CONN_ERRNO_MAP(WSG_REDIS_CONN_ERR_NAME) }
  return "WSG_REDIS_CONN_UNKNOWN";
}
#undef WSG_REDIS_CONN_ERR_NAME

/* Shared by the loop and one resolver thread; freed by whichever lets go last. */
typedef struct {
  pthread_mutex_t mu;
  int refs;
  bool cancelled;
  struct ev_loop *loop;
  ev_async *wake;
  bool done;
  int gai_err;
  char host[HOST_MAX];
  char ip[INET6_ADDRSTRLEN];
} resolve_job;

struct wsg_redis_conn {
  struct ev_loop *loop;
  char *host;     /* owned */
  char *password; /* owned; NULL: no AUTH */
  char *user;     /* owned; NULL: AUTH with the password only */
  int port;
  int db;
  uint64_t timeout_ms;
  uint32_t backoff_min_ms, backoff_max_ms;
  void (*on_handshake)(void *arg);
  void (*on_ready)(void *arg);
  void (*on_down)(void *arg);
  void *arg;
  wsg_redis_conn_metrics m;

  redisAsyncContext *ac; /* NULL while disconnected */
  bool ready;            /* handshake answered: commands may be sent */
  bool was_ready;        /* the current connection got that far (for the log line) */
  bool stopped;          /* wsg_redis_conn_stop(): no more attempts */
  uint32_t backoff_ms;
  uint32_t inflight;         /* commands sent, reply not yet seen */
  uint64_t last_progress_ms; /* last reply, or first send after being idle; moved on by the
                                time the loop was late (on_watchdog) */
  uint64_t watchdog_ms;      /* the watchdog's interval */
  uint64_t watchdog_due_ms;  /* when its next tick is due: a later tick means a late loop */
  resolve_job *job;
  uint64_t rng;

  /* reentrancy: destroy from inside one of our callbacks is deferred to the outermost frame */
  int depth;
  bool doomed;

  ev_timer reconnect_timer, watchdog_timer;
  ev_async resolve_wake;
};

static void really_destroy(wsg_redis_conn *c);
static void drop_connection(wsg_redis_conn *c, const char *why);
static void on_setup_reply(wsg_redis_conn *c, const redisReply *rep);
static void on_ping_reply(wsg_redis_conn *c, const redisReply *rep);

/* The handshake's requests carry no state, so they outlive any connection (a destroyed one still
 * gets their NULL replies, which need nothing): one static request per kind, told apart by
 * address in on_reply. */
static void handshake_released(void *arg, wsg_redis_conn_req *req, const redisReply *rep) {
  (void)arg;
  (void)req;
  (void)rep;
}
static wsg_redis_conn_req setup_req = {handshake_released};
static wsg_redis_conn_req ping_req = {handshake_released};

/* --- small helpers ---------------------------------------------------------------------------- */

static void enter(wsg_redis_conn *c) {
  c->depth++;
}

static void leave(wsg_redis_conn *c) {
  if (--c->depth == 0 && c->doomed)
    really_destroy(c);
}

static void count(wsg_counter *k) {
  if (k != NULL)
    wsg_counter_add(k, 1);
}

static void gauge(wsg_gauge *g, int64_t v) {
  if (g != NULL)
    wsg_gauge_set(g, v);
}

static uint64_t rng_next(wsg_redis_conn *c) {
  /* xorshift64: jitter only, nothing secret. */
  uint64_t x = c->rng;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return c->rng = x;
}

static void hook(wsg_redis_conn *c, void (*fn)(void *arg)) {
  if (fn != NULL && !c->doomed)
    fn(c->arg);
}

/* --- commands --------------------------------------------------------------------------------- */

/* hiredis' callback for every command: the connection's bookkeeping, then the request's own. */
static void on_reply(redisAsyncContext *ac, void *reply, void *privdata) {
  wsg_redis_conn_req *req = privdata;
  wsg_redis_conn *c = ac->data;
  if (c == NULL || c->doomed) { /* destroyed: hiredis is failing what was left */
    req->cb(NULL, req, NULL);
    return;
  }
  enter(c);
  c->inflight--;
  c->last_progress_ms = wsg_now_mono_ms();
  const redisReply *rep = reply;
  if (rep == NULL) {
    /* The connection is going away; refuse new work until the next one is ready. */
    c->ready = false;
    count(c->m.lost);
  } else if (rep->type == REDIS_REPLY_ERROR) {
    count(c->m.error);
  } else {
    count(c->m.ok);
  }
  if (req == &setup_req)
    on_setup_reply(c, rep);
  else if (req == &ping_req)
    on_ping_reply(c, rep);
  else
    req->cb(c->arg, req, rep);
  leave(c);
}

int wsg_redis_conn_command(wsg_redis_conn *c, wsg_redis_conn_req *req, int argc, const char **argv,
                           const size_t *lens) {
  if (req == NULL || req->cb == NULL || argc < 1 || argv == NULL)
    return WSG_REDIS_CONN_INVALID;
  if (c->ac == NULL || c->doomed)
    return WSG_REDIS_CONN_NOT_CONNECTED;
  if (redisAsyncCommandArgv(c->ac, on_reply, req, argc, argv, lens) != REDIS_OK)
    return WSG_REDIS_CONN_NOT_CONNECTED;
  if (c->inflight == 0)
    c->last_progress_ms = wsg_now_mono_ms();
  c->inflight++;
  return WSG_REDIS_CONN_OK;
}

bool wsg_redis_conn_ready(const wsg_redis_conn *c) {
  return c->ready;
}

bool wsg_redis_conn_open(const wsg_redis_conn *c) {
  return c->ac != NULL;
}

uint32_t wsg_redis_conn_inflight(const wsg_redis_conn *c) {
  return c->inflight;
}

/* --- connection ------------------------------------------------------------------------------- */

/* AUTH or SELECT: an error drops the connection. */
static void on_setup_reply(wsg_redis_conn *c, const redisReply *rep) {
  if (rep == NULL || rep->type != REDIS_REPLY_ERROR)
    return;
  WSG_ERROR(SUBSYS,
            "Redis at %s:%d refused AUTH/SELECT: %s (check --redis-user, --redis-password "
            "and --redis-db)",
            c->host, c->port, rep->str);
  drop_connection(c, "handshake refused");
}

/* The PING after the handshake: everything before it succeeded, the connection is usable. */
static void on_ping_reply(wsg_redis_conn *c, const redisReply *rep) {
  if (rep == NULL)
    return;
  if (rep->type == REDIS_REPLY_ERROR) {
    WSG_ERROR(SUBSYS, "Redis at %s:%d refused the connection: %s", c->host, c->port, rep->str);
    drop_connection(c, "handshake refused");
    return;
  }
  c->ready = true;
  c->backoff_ms = c->backoff_min_ms;
  gauge(c->m.connected, 1);
  WSG_INFO(SUBSYS, "connected to Redis at %s:%d", c->host, c->port);
  c->was_ready = true;
  hook(c, c->on_ready);
}

static void timer_after(wsg_redis_conn *c, ev_timer *t, uint64_t ms) {
  ev_timer_stop(c->loop, t);
  ev_timer_set(t, (double)ms / 1000.0, 0.0);
  ev_timer_start(c->loop, t);
}

static void schedule_reconnect(wsg_redis_conn *c) {
  if (c->stopped || c->doomed)
    return;
  /* Jitter in [b/2, b] so clients that lost the same Redis do not reconnect in lockstep. */
  uint32_t b = c->backoff_ms;
  uint32_t delay = b / 2 + (uint32_t)(rng_next(c) % (b / 2 + 1));
  c->backoff_ms = b * 2 > c->backoff_max_ms ? c->backoff_max_ms : b * 2;
  timer_after(c, &c->reconnect_timer, delay);
}

/* The connection `ac` is gone or being dropped: forget it, tell the owner, plan the next
 * attempt. */
static void connection_lost(wsg_redis_conn *c, const redisAsyncContext *ac, const char *why) {
  if (c->ac != ac || ac == NULL)
    return;
  bool was_ready = c->was_ready;
  c->was_ready = false;
  c->ac = NULL;
  c->ready = false;
  hook(c, c->on_down);
  gauge(c->m.connected, 0);
  if (c->stopped || c->doomed)
    return;
  if (was_ready)
    WSG_WARN(SUBSYS, "connection to Redis at %s:%d lost (%s); reconnecting", c->host, c->port, why);
  else
    WSG_WARN(SUBSYS, "cannot connect to Redis at %s:%d (%s); retrying", c->host, c->port, why);
  schedule_reconnect(c);
}

static void on_connect(const redisAsyncContext *ac, int status) {
  wsg_redis_conn *c = ac->data;
  if (c == NULL || c->doomed)
    return;
  enter(c);
  if (status != REDIS_OK)
    connection_lost(c, ac, ac->errstr != NULL ? ac->errstr : "connect failed");
  else
    redisEnableKeepAlive((redisContext *)&ac->c);
  leave(c);
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
  wsg_redis_conn *c = ac->data;
  if (c == NULL || c->doomed)
    return;
  enter(c);
  connection_lost(c, ac, status == REDIS_OK ? "closed" : (ac->errstr ? ac->errstr : "error"));
  leave(c);
}

/* Drops the connection from inside or outside hiredis' callbacks; pending commands get a NULL
 * reply (docs/notes/hiredis.md#free-inside-callback). */
static void drop_connection(wsg_redis_conn *c, const char *why) {
  redisAsyncContext *ac = c->ac;
  if (ac == NULL)
    return;
  connection_lost(c, ac, why);
  redisAsyncFree(ac);
}

static void connect_to(wsg_redis_conn *c, const char *ip) {
  redisAsyncContext *ac = redisAsyncConnect(ip, c->port);
  if (ac == NULL) {
    WSG_ERROR(SUBSYS, "out of memory creating a Redis connection; retrying");
    schedule_reconnect(c);
    return;
  }
  if (ac->err) {
    WSG_WARN(SUBSYS, "cannot connect to Redis at %s:%d (%s); retrying", c->host, c->port,
             ac->errstr);
    redisAsyncFree(ac);
    schedule_reconnect(c);
    return;
  }
  ac->data = c;
  if (redisLibevAttach(c->loop, ac) != REDIS_OK) {
    redisAsyncFree(ac);
    schedule_reconnect(c);
    return;
  }
  redisAsyncSetConnectCallback(ac, on_connect);
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
  c->ac = ac;
  count(c->m.connects);

  /* Pipelined handshake; the PING's reply means everything before it succeeded. */
  if (c->password != NULL) {
    const char *argv[] = {"AUTH", c->user != NULL ? c->user : c->password, c->password};
    size_t lens[] = {4, strlen(argv[1]), strlen(c->password)};
    if (wsg_redis_conn_command(c, &setup_req, c->user != NULL ? 3 : 2, argv, lens) !=
        WSG_REDIS_CONN_OK)
      goto fail;
  }
  if (c->db > 0) {
    char db[16];
    snprintf(db, sizeof(db), "%d", c->db);
    const char *argv[] = {"SELECT", db};
    size_t lens[] = {6, strlen(db)};
    if (wsg_redis_conn_command(c, &setup_req, 2, argv, lens) != WSG_REDIS_CONN_OK)
      goto fail;
  }
  hook(c, c->on_handshake);
  if (c->ac != ac)
    return; /* the hook dropped it */
  const char *argv[] = {"PING"};
  size_t lens[] = {4};
  if (wsg_redis_conn_command(c, &ping_req, 1, argv, lens) == WSG_REDIS_CONN_OK)
    return;
fail:
  drop_connection(c, "could not queue the handshake");
}

/* --- name resolution -------------------------------------------------------------------------- */

static void resolve_job_unref(resolve_job *j) {
  pthread_mutex_lock(&j->mu);
  bool last = --j->refs == 0;
  pthread_mutex_unlock(&j->mu);
  if (last) {
    pthread_mutex_destroy(&j->mu);
    free(j);
  }
}

static void *resolve_main(void *arg) {
  resolve_job *j = arg;
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  struct addrinfo *res = NULL;
  int gai = getaddrinfo(j->host, NULL, &hints, &res);
  char ip[INET6_ADDRSTRLEN] = "";
  if (gai == 0) {
    /* IPv4 first when the name has both: the common case for a Redis service address. */
    const struct addrinfo *pick = res;
    for (const struct addrinfo *a = res; a != NULL; a = a->ai_next)
      if (a->ai_family == AF_INET) {
        pick = a;
        break;
      }
    const void *addr = pick == NULL ? NULL
                       : pick->ai_family == AF_INET6
                           ? (const void *)&((struct sockaddr_in6 *)pick->ai_addr)->sin6_addr
                           : (const void *)&((struct sockaddr_in *)pick->ai_addr)->sin_addr;
    if (addr == NULL || inet_ntop(pick->ai_family, addr, ip, sizeof(ip)) == NULL)
      gai = EAI_FAIL;
    freeaddrinfo(res);
  }
  pthread_mutex_lock(&j->mu);
  j->done = true;
  j->gai_err = gai;
  memcpy(j->ip, ip, sizeof(ip));
  if (!j->cancelled)
    ev_async_send(j->loop, j->wake);
  pthread_mutex_unlock(&j->mu);
  resolve_job_unref(j);
  return NULL;
}

static void on_resolved(struct ev_loop *loop, ev_async *w, int revents) {
  (void)loop;
  (void)revents;
  wsg_redis_conn *c = w->data;
  resolve_job *j = c->job;
  if (j == NULL)
    return;
  char ip[INET6_ADDRSTRLEN];
  pthread_mutex_lock(&j->mu);
  bool done = j->done;
  int gai = j->gai_err;
  memcpy(ip, j->ip, sizeof(ip));
  pthread_mutex_unlock(&j->mu);
  if (!done)
    return;
  c->job = NULL;
  resolve_job_unref(j);
  enter(c);
  if (gai != 0) {
    WSG_WARN(SUBSYS, "cannot resolve Redis host %s: %s; retrying", c->host, gai_strerror(gai));
    schedule_reconnect(c);
  } else {
    connect_to(c, ip);
  }
  leave(c);
}

static void start_resolve(wsg_redis_conn *c) {
  resolve_job *j = calloc(1, sizeof(*j));
  if (j == NULL) {
    schedule_reconnect(c);
    return;
  }
  pthread_mutex_init(&j->mu, NULL);
  j->refs = 2;
  j->loop = c->loop;
  j->wake = &c->resolve_wake;
  snprintf(j->host, sizeof(j->host), "%s", c->host);
  pthread_attr_t attr;
  pthread_t t;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  int rc = pthread_create(&t, &attr, resolve_main, j);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    WSG_ERROR(SUBSYS, "cannot start a thread to resolve %s: %s; retrying", c->host, strerror(rc));
    j->refs = 1;
    resolve_job_unref(j);
    schedule_reconnect(c);
    return;
  }
  c->job = j;
}

static void start_connect(wsg_redis_conn *c) {
  if (c->ac != NULL || c->job != NULL || c->stopped)
    return;
  unsigned char addr[sizeof(struct in6_addr)];
  /* A literal address needs no resolution; anything else is resolved off the loop thread. */
  if (inet_pton(AF_INET, c->host, addr) == 1 || inet_pton(AF_INET6, c->host, addr) == 1)
    connect_to(c, c->host);
  else
    start_resolve(c);
}

static void on_reconnect_timer(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop;
  (void)revents;
  wsg_redis_conn *c = w->data;
  enter(c);
  start_connect(c);
  leave(c);
}

/* Bytes from Redis wait unread in the socket: it answered, the loop has not read them yet. */
static bool replies_waiting(const wsg_redis_conn *c) {
  int n = 0;
  return c->ac->c.fd >= 0 && ioctl(c->ac->c.fd, FIONREAD, &n) == 0 && n > 0;
}

/* No reply for timeout_ms while commands are outstanding drops the connection: hiredis 0.14 has
 * no command timeout. Silence is measured from the loop's view: time the loop was late (a
 * starved process) is not counted, and replies waiting in the socket are an answer
 * (docs/notes/hiredis.md#no-command-timeout). */
static void on_watchdog(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop;
  (void)revents;
  wsg_redis_conn *c = w->data;
  uint64_t now = wsg_now_mono_ms();
  uint64_t late = now > c->watchdog_due_ms ? now - c->watchdog_due_ms : 0;
  c->watchdog_due_ms = now + c->watchdog_ms;
  if (c->ac == NULL || c->inflight == 0)
    return;
  uint64_t silent = now - c->last_progress_ms;
  if (silent >= c->timeout_ms && replies_waiting(c)) {
    /* libev runs a due timer before the io of the same iteration: let the io read them. */
    c->last_progress_ms = now;
    count(c->m.replies_waiting);
    return;
  }
  /* The loop did not run for `late` ms: neither could we send nor read; not Redis' silence. */
  c->last_progress_ms = late < silent ? c->last_progress_ms + late : now;
  if (now - c->last_progress_ms < c->timeout_ms) {
    if (silent >= c->timeout_ms)
      count(c->m.loop_late);
    return;
  }
  enter(c);
  char why[96];
  snprintf(why, sizeof(why), "no reply for %" PRIu64 " ms with %" PRIu32 " commands outstanding",
           now - c->last_progress_ms, c->inflight);
  drop_connection(c, why);
  leave(c);
}

void wsg_redis_conn_cancel_retry(wsg_redis_conn *c) {
  ev_timer_stop(c->loop, &c->reconnect_timer);
}

void wsg_redis_conn_stop(wsg_redis_conn *c) {
  c->stopped = true;
  ev_timer_stop(c->loop, &c->reconnect_timer);
}

/* --- lifecycle -------------------------------------------------------------------------------- */

static int fail(char *err, size_t errlen, int code, const char *msg) {
  if (err != NULL && errlen > 0)
    snprintf(err, errlen, "%s", msg);
  return code;
}

int wsg_redis_conn_create(wsg_redis_conn **out, struct ev_loop *loop,
                          const wsg_redis_conn_options *o, char *err, size_t errlen) {
  *out = NULL;
  if (loop == NULL || o == NULL)
    return fail(err, errlen, WSG_REDIS_CONN_INVALID, "no loop or no options");
  if (o->host == NULL || *o->host == '\0' || strlen(o->host) >= HOST_MAX)
    return fail(err, errlen, WSG_REDIS_CONN_INVALID,
                "redis host is empty or longer than 255 bytes");
  if (o->port <= 0 || o->port > 65535)
    return fail(err, errlen, WSG_REDIS_CONN_INVALID, "redis port must be 1..65535");
  if (o->db < 0)
    return fail(err, errlen, WSG_REDIS_CONN_INVALID, "redis db must be >= 0");
  if (o->timeout_ms == 0)
    return fail(err, errlen, WSG_REDIS_CONN_INVALID, "redis timeout must be > 0");
  wsg_redis_conn *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return fail(err, errlen, WSG_REDIS_CONN_NOMEM, "out of memory");
  c->host = strdup(o->host);
  bool auth = o->password != NULL && *o->password != '\0';
  c->password = auth ? strdup(o->password) : NULL;
  bool user = auth && o->user != NULL && *o->user != '\0';
  c->user = user ? strdup(o->user) : NULL;
  if (c->host == NULL || (auth && c->password == NULL) || (user && c->user == NULL)) {
    free(c->host);
    free(c->user);
    free(c->password);
    free(c);
    return fail(err, errlen, WSG_REDIS_CONN_NOMEM, "out of memory");
  }
  c->loop = loop;
  c->port = o->port;
  c->db = o->db;
  c->timeout_ms = o->timeout_ms;
  c->backoff_min_ms = o->backoff_min_ms != 0 ? o->backoff_min_ms : DEFAULT_BACKOFF_MIN_MS;
  c->backoff_max_ms = o->backoff_max_ms != 0 ? o->backoff_max_ms : DEFAULT_BACKOFF_MAX_MS;
  if (c->backoff_max_ms < c->backoff_min_ms)
    c->backoff_max_ms = c->backoff_min_ms;
  c->backoff_ms = c->backoff_min_ms;
  c->on_handshake = o->on_handshake;
  c->on_ready = o->on_ready;
  c->on_down = o->on_down;
  c->arg = o->arg;
  c->m = o->metrics;
  if (getrandom(&c->rng, sizeof(c->rng), GRND_NONBLOCK) != sizeof(c->rng))
    c->rng = wsg_now_mono_us() ^ (uint64_t)(uintptr_t)c;
  c->rng |= 1; /* xorshift must not start at 0 */

  ev_timer_init(&c->reconnect_timer, on_reconnect_timer, 0.0, 0.0);
  uint64_t wd = c->timeout_ms / 4 < 10 ? 10 : (c->timeout_ms / 4 > 250 ? 250 : c->timeout_ms / 4);
  c->watchdog_ms = wd;
  c->watchdog_due_ms = wsg_now_mono_ms() + wd;
  ev_timer_init(&c->watchdog_timer, on_watchdog, (double)wd / 1000.0, (double)wd / 1000.0);
  ev_async_init(&c->resolve_wake, on_resolved);
  c->reconnect_timer.data = c->watchdog_timer.data = c->resolve_wake.data = c;
  ev_timer_start(loop, &c->watchdog_timer);
  ev_async_start(loop, &c->resolve_wake);
  /* Connect from the loop, so create never calls back into the caller. */
  ev_timer_start(loop, &c->reconnect_timer);
  *out = c;
  return WSG_REDIS_CONN_OK;
}

static void really_destroy(wsg_redis_conn *c) {
  ev_timer_stop(c->loop, &c->reconnect_timer);
  ev_timer_stop(c->loop, &c->watchdog_timer);
  ev_async_stop(c->loop, &c->resolve_wake);
  if (c->job != NULL) {
    pthread_mutex_lock(&c->job->mu);
    c->job->cancelled = true;
    pthread_mutex_unlock(&c->job->mu);
    resolve_job_unref(c->job);
    c->job = NULL;
  }
  if (c->ac != NULL) {
    /* Orphan the context first: the NULL replies hiredis now delivers (maybe later, if we are
     * inside one of its callbacks) see no connection and only release their requests. */
    redisAsyncContext *ac = c->ac;
    c->ac = NULL;
    ac->data = NULL;
    redisAsyncFree(ac);
  }
  free(c->host);
  free(c->user);
  if (c->password != NULL) {
    explicit_bzero(c->password, strlen(c->password));
    free(c->password);
  }
  free(c);
}

void wsg_redis_conn_destroy(wsg_redis_conn *c) {
  if (c == NULL)
    return;
  if (c->depth > 0) {
    c->doomed = true;
    return;
  }
  c->doomed = true; /* replies hiredis fails synchronously below find no owner */
  really_destroy(c);
}
