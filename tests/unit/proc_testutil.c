/*
 * proc_testutil: the processor's unit-test helpers (see proc_testutil.h).
 *
 * Threads: the test's own.
 */
#include "proc_testutil.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "wsg_redis_keys.h"
#include "wsg_time.h"

/* The private server of the running test (one test per process under Criterion). */
static pid_t private_server;

void ptest_fini(void) {
  if (private_server > 0)
    itest_stop(private_server, SIGKILL, 5000, NULL);
  private_server = 0;
}

void ptest_redis_tracked(const ptest_redis *r) {
  private_server = r->srv.pid;
}

static void redis_start(ptest_redis *r, bool private) {
  memset(r, 0, sizeof(*r));
  /* The harness writes the private server's log under WSGATE_TEST_LOG_DIR; unit tests run
   * without one, so keep it out of the working directory. */
  if (!getenv("WSGATE_TEST_LOG_DIR"))
    setenv("WSGATE_TEST_LOG_DIR", "/tmp/wsgate-proc-unit", 0);
  r->port = private ? 0 : itest_redis_port();
  if (r->port == 0) {
    itest_redis_server_start(&r->srv, 0);
    private_server = r->srv.pid;
    r->port = r->srv.port;
  }
  char *u = itest_unique("ptest");
  snprintf(r->prefix, sizeof(r->prefix), "%s:", u);
  free(u);
  r->rc = itest_redis_connect_port(r->port);
  cr_assert_not_null(r->rc, "cannot connect to redis on port %d", r->port);
}

void ptest_redis_start(ptest_redis *r) {
  redis_start(r, false);
}

void ptest_redis_start_private(ptest_redis *r) {
  redis_start(r, true);
}

void ptest_redis_stop(ptest_redis *r) {
  if (r->rc)
    redisFree(r->rc);
  r->rc = NULL;
  if (r->srv.pid) {
    private_server = 0;
    itest_redis_server_stop(&r->srv, SIGTERM);
    unlink(r->srv.log);
  }
}

static redisReply *command(ptest_redis *r, const char *fmt, va_list ap) {
  redisReply *rep = redisvCommand(r->rc, fmt, ap);
  cr_assert_not_null(rep, "redis: %s", r->rc->errstr);
  cr_assert_neq(rep->type, REDIS_REPLY_ERROR, "redis: %s", rep->str);
  return rep;
}

long long ptest_redis_int(ptest_redis *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  redisReply *rep = command(r, fmt, ap);
  va_end(ap);
  cr_assert_eq(rep->type, REDIS_REPLY_INTEGER, "expected an integer reply");
  long long v = rep->integer;
  freeReplyObject(rep);
  return v;
}

void ptest_proc_init(ptest_proc *t, const char *handler, const char *arg, ptest_redis *redis,
                     int32_t slots) {
  memset(t, 0, sizeof(*t));
  char err[512];
  cr_assert_eq(proc_handler_open(&t->h, handler, arg, err, sizeof(err)), 0, "%s", err);
  t->box = proc_outbox_create();
  cr_assert_not_null(t->box);
  proc_routes_init(&t->routes);
  if (redis) {
    proc_redis_options o = {.host = "127.0.0.1",
                            .port = redis->port,
                            .prefix = redis->prefix,
                            .timeout_ms = 2000,
                            .gateway_cache_ttl_ms = 1000,
                            .slots = slots};
    cr_assert_eq(proc_redis_create(&t->router, &o, err, sizeof(err)), 0, "%s", err);
    t->pub = proc_publisher_create(t->router, NULL, NULL);
    cr_assert_not_null(t->pub);
  }
  t->denv = (proc_dispatch_env){.box = t->box,
                                .router = t->router,
                                .prefix = redis ? redis->prefix : "wsgate:",
                                .max_payload = 512 * 1024};
}

void ptest_clear_out(ptest_proc *t) {
  for (size_t i = 0; i < t->nout; i++)
    free(t->out[i].buf);
  free(t->out);
  t->out = NULL;
  t->nout = 0;
  memset(&t->stats, 0, sizeof(t->stats));
}

void ptest_proc_finish(ptest_proc *t) {
  ptest_clear_out(t);
  proc_handler_close(t->h);
  proc_outbox_destroy(t->box);
  proc_publisher_destroy(t->pub);
  proc_redis_destroy(t->router);
  proc_routes_finish(&t->routes);
}

static int dispatch(ptest_proc *t, wsg_envelope *env, char *why, size_t whylen) {
  char local[256];
  if (!why) {
    why = local;
    whylen = sizeof(local);
  }
  uint32_t rec = t->next_rec++;
  return proc_handler_dispatch(t->h, &t->denv, rec, env, 0, rec, why, whylen);
}

static void base_env(wsg_envelope *env, wsg_env_kind kind, const char *user, uint64_t conn,
                     const char *gw, uint32_t slot) {
  memset(env, 0, sizeof(*env));
  env->kind = kind;
  env->version = 1;
  env->fields = WSG_F_USER | WSG_F_CONN | WSG_F_GATEWAY | WSG_F_SLOT | WSG_F_TS;
  env->user = user;
  env->user_len = strlen(user);
  env->conn = conn;
  env->gateway = gw;
  env->gateway_len = strlen(gw);
  env->slot = slot;
  env->ts_us = 1700000000123456ULL;
}

int ptest_msg(ptest_proc *t, const char *user, uint64_t conn, const char *gw, uint32_t slot,
              const void *payload, size_t len, bool binary, char *why, size_t whylen) {
  wsg_envelope env;
  base_env(&env, WSG_ENV_MSG, user, conn, gw, slot);
  env.fields |= WSG_F_DATA | WSG_F_BINARY;
  env.data = payload;
  env.data_len = len;
  env.binary = binary;
  return dispatch(t, &env, why, whylen);
}

int ptest_event(ptest_proc *t, wsg_env_kind kind, const char *user, uint64_t conn, const char *gw,
                uint32_t slot) {
  wsg_envelope env;
  base_env(&env, kind, user, conn, gw, slot);
  if (kind == WSG_ENV_DISCONNECT) {
    env.fields |= WSG_F_CLOSE_CODE;
    env.close_code = 1000;
  }
  return dispatch(t, &env, NULL, 0);
}

static int collect(void *arg, uint32_t rec, const char *gw, size_t gw_len, int32_t partition,
                   const uint8_t *buf, size_t len) {
  (void)gw;
  (void)gw_len;
  ptest_proc *t = arg;
  t->out = realloc(t->out, (t->nout + 1) * sizeof(ptest_out));
  cr_assert_not_null(t->out);
  ptest_out *o = &t->out[t->nout++];
  o->partition = partition;
  o->rec = rec;
  o->buf = malloc(len);
  memcpy(o->buf, buf, len);
  o->len = len;
  const char *field = NULL;
  int rc = wsg_envelope_decode(&o->env, o->buf, o->len, &field);
  cr_assert_eq(rc, WSG_ENV_OK, "an outbound envelope does not decode: %s (%s)",
               wsg_env_strerror(rc), field ? field : "");
  return 0;
}

void ptest_flush(ptest_proc *t) {
  size_t npubs = 0;
  proc_pub *pubs = proc_outbox_pubs(t->box, &npubs);
  if (npubs) {
    cr_assert_not_null(t->pub, "the batch publishes but the test has no Redis");
    char err[256];
    cr_assert_eq(proc_publish_store(t->pub, pubs, npubs, wsg_now_mono_ms(), err, sizeof(err)), 0,
                 "%s", err);
  }
  size_t n = 0;
  const proc_strref *users = proc_outbox_users(t->box, &n);
  const proc_routes *rt = NULL;
  if (n) {
    cr_assert_not_null(t->router, "the batch sends to users but the test has no Redis");
    char err[256];
    cr_assert_eq(
        proc_redis_resolve(t->router, users, n, wsg_now_mono_ms(), &t->routes, err, sizeof(err)), 0,
        "%s", err);
    rt = &t->routes;
  }
  cr_assert_eq(proc_outbox_emit(t->box, rt, 1000000, 1700000000000000ULL, collect, t, &t->stats),
               0);
  proc_outbox_reset(t->box);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

size_t ptest_targets(const ptest_out *o, uint64_t *ids, size_t cap) {
  size_t n = 0;
  if (o->env.fields & WSG_F_CONN) {
    if (cap)
      ids[n++] = o->env.conn;
    return n;
  }
  size_t pos = 0;
  uint64_t id;
  while (n < cap && wsg_conns_next(&o->env.conns, &pos, &id))
    ids[n++] = id;
  qsort(ids, n, sizeof(uint64_t), cmp_u64);
  return n;
}
