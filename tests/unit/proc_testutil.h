/*
 * proc_testutil: what the processor's unit tests share: a Redis to test against (the shared test
 * server under a unique key prefix, or a private redis-server on a free port) and a small harness
 * that dispatches envelopes to a handler, routes the batch and collects the outbound envelopes
 * exactly as the processor would produce them.
 *
 * Threads: the test's own.
 */
#ifndef PROC_TESTUTIL_H
#define PROC_TESTUTIL_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "harness.h"
#include "proc_handler.h"
#include "proc_outbox.h"
#include "proc_publish.h"
#include "proc_redis.h"
#include "wsg_envelope.h"

typedef struct {
  itest_redis_server srv; /* pid 0 when the shared server is used */
  int port;
  char prefix[96]; /* unique per test */
  redisContext *rc;
} ptest_redis;

/* Uses WSGATE_TEST_REDIS_PORT when set, else starts a private redis-server. Fails the test if
 * neither works. */
void ptest_redis_start(ptest_redis *r);
/* Always a private redis-server: for tests that read the server's own statistics. */
void ptest_redis_start_private(ptest_redis *r);
void ptest_redis_stop(ptest_redis *r);
/* `.fini` of every test that starts a Redis: stops a private server the test left running (a
 * failed assertion ends the test before its own clean-up). */
void ptest_fini(void);
/* After restarting r's private server by hand: ptest_fini stops the new one. */
void ptest_redis_tracked(const ptest_redis *r);

/* Gateway records and connection entries: itest_fake_gateway(r->rc, r->prefix, ...) and
 * itest_fake_conn (harness.h). */
/* A Redis command's integer reply (fails the test on anything else). */
long long ptest_redis_int(ptest_redis *r, const char *fmt, ...);

typedef struct {
  int32_t partition;
  uint32_t rec;
  uint8_t *buf;
  size_t len;
  wsg_envelope env; /* decoded from buf */
} ptest_out;

typedef struct {
  proc_handler *h;
  proc_outbox *box;
  proc_redis *router;  /* NULL without Redis */
  proc_publisher *pub; /* numbers and stores publications (NULL without Redis) */
  proc_routes routes;
  proc_dispatch_env denv;
  proc_emit_stats stats;
  ptest_out *out;
  size_t nout;
  uint32_t next_rec;
} ptest_proc;

/* Opens `handler` with `arg`; `redis` may be NULL (no router). `slots` = outbound partitions. */
void ptest_proc_init(ptest_proc *t, const char *handler, const char *arg, ptest_redis *redis,
                     int32_t slots);
void ptest_proc_finish(ptest_proc *t);

/* Dispatches a `msg` envelope from (user, conn on gateway gw, slot). Returns the handler status. */
int ptest_msg(ptest_proc *t, const char *user, uint64_t conn, const char *gw, uint32_t slot,
              const void *payload, size_t len, bool binary, char *why, size_t whylen);
/* The same for connect/disconnect. */
int ptest_event(ptest_proc *t, wsg_env_kind kind, const char *user, uint64_t conn, const char *gw,
                uint32_t slot);

/* Stores the batch's publications (wsgate_publish) as the processor does, routes what was
 * recorded and collects the envelopes (appended to t->out). Fails on errors. */
void ptest_flush(ptest_proc *t);
void ptest_clear_out(ptest_proc *t);

/* The `cs` (or `c`) of an outbound deliver, sorted, into ids[] (at most cap). Returns the count. */
size_t ptest_targets(const ptest_out *o, uint64_t *ids, size_t cap);

#endif
