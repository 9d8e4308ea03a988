/*
 * Integration tests for gw_registry against a private redis-server per test (so a test may kill,
 * pause, flush or restart it): slot leases, the gateway record, connection entries, lease loss
 * and recovery, reconnection, release, and that no call ever blocks.
 *
 * The registry runs on an ev loop driven by the test itself: every wait runs the loop until a
 * condition holds, with a deadline. Redis is inspected with a separate blocking connection
 * between loop iterations.
 */
#include <criterion/criterion.h>
#include <ev.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "gw_registry.h"
#include "harness.h"
#include "wsg_metrics.h"

#define LEASE_MS   1500
#define RENEW_MS   150
#define TIMEOUT_MS 600
#define WAIT_MS    15000
/* A call that returns in less than this did not wait for Redis (generous for sanitizer builds). */
#define NONBLOCKING_MS 50

typedef struct {
  char user[64];
  uint64_t id;
  bool live;
} tconn;

/* Everything a registry's callbacks report, per registry. */
typedef struct {
  gw_registry *reg;
  const char *gw_id;
  int32_t slots_seen[64];
  int nslots_seen;
  tconn conns[16];
  int nconns;
  int foreach_calls;
  int add_status[16]; /* by conn id; 1 = not answered yet */
  int adds_answered;
  int release_done;
  bool destroy_in_cb;
} tgw;

static itest_redis_server srv;
static struct ev_loop *loop;
static char prefix[96];

static void setup(void) {
  itest_require_redis();
  memset(&srv, 0, sizeof(srv));
  itest_redis_server_start(&srv, 0);
  loop = ev_loop_new(EVFLAG_AUTO);
  char *u = itest_unique("reg");
  snprintf(prefix, sizeof(prefix), "%s:", u);
  free(u);
}

static void rclose(void);

static void teardown(void) {
  rclose();
  if (loop != NULL) {
    ev_loop_destroy(loop);
    loop = NULL;
  }
  if (srv.pid != 0) {
    kill(srv.pid, SIGCONT); /* in case a test left it paused */
    itest_redis_server_stop(&srv, SIGKILL);
  }
}

TestSuite(gw_registry, .init = setup, .fini = teardown, .timeout = 120);

/* --- callbacks -------------------------------------------------------------------------------- */

static void on_slot(void *arg, int32_t slot) {
  tgw *g = arg;
  cr_assert_lt(g->nslots_seen, 64, "too many slot changes");
  g->slots_seen[g->nslots_seen++] = slot;
}

static void foreach_conn(void *arg, gw_registry_emit_fn emit, void *ctx) {
  tgw *g = arg;
  g->foreach_calls++;
  for (int i = 0; i < g->nconns; i++)
    if (g->conns[i].live)
      emit(ctx, g->conns[i].user, strlen(g->conns[i].user), g->conns[i].id);
}

static void on_added(void *arg, uint64_t conn_id, int status) {
  tgw *g = arg;
  cr_assert_lt(conn_id, 16);
  cr_assert_eq(g->add_status[conn_id], 1, "conn %lu answered twice", (unsigned long)conn_id);
  g->add_status[conn_id] = status;
  g->adds_answered++;
  if (g->destroy_in_cb) {
    gw_registry_destroy(g->reg);
    g->reg = NULL;
  }
}

static void on_released(void *arg) {
  tgw *g = arg;
  g->release_done++;
}

/* --- helpers ---------------------------------------------------------------------------------- */

/* Runs the loop until pred(arg) holds or timeout_ms passes. */
static bool run_until(bool (*pred)(void *), void *arg, int timeout_ms) {
  return itest_loop_until(loop, pred, arg, timeout_ms);
}

static bool never(void *arg) {
  return false;
}

static void run_for(int ms) {
  run_until(never, NULL, ms);
}

static gw_registry_options opts(tgw *g, const char *gw_id, uint32_t slots) {
  g->gw_id = gw_id;
  for (int i = 0; i < 16; i++)
    g->add_status[i] = 1;
  return (gw_registry_options){
      .host = "127.0.0.1",
      .port = srv.port,
      .prefix = prefix,
      .gw_id = gw_id,
      .advertise = "10.0.0.7:8080",
      .slots = slots,
      .lease_ms = LEASE_MS,
      .renew_ms = RENEW_MS,
      .timeout_ms = TIMEOUT_MS,
      .on_slot = on_slot,
      .foreach_conn = foreach_conn,
      .arg = g,
  };
}

static void start(tgw *g, const char *gw_id, uint32_t slots) {
  gw_registry_options o = opts(g, gw_id, slots);
  char err[256] = "";
  uint64_t t0 = itest_now_ms();
  int rc = gw_registry_create(&g->reg, loop, &o, NULL, err, sizeof(err));
  cr_assert_eq(rc, GW_REG_OK, "gw_registry_create: %s (%s)", gw_registry_strerror(rc), err);
  cr_assert_lt(itest_now_ms() - t0, NONBLOCKING_MS, "create must not wait for Redis");
}

static bool has_slot(void *arg) {
  return gw_registry_slot(((tgw *)arg)->reg) >= 0;
}

static int32_t wait_slot(tgw *g) {
  cr_assert(run_until(has_slot, g, WAIT_MS), "%s took no slot within %d ms", g->gw_id, WAIT_MS);
  return gw_registry_slot(g->reg);
}

static redisContext *rc_;
static redisContext *rconn(void) {
  if (rc_ == NULL || rc_->err) {
    if (rc_ != NULL)
      redisFree(rc_);
    rc_ = itest_redis_connect_port(srv.port);
    cr_assert_not_null(rc_, "cannot connect to redis-server on port %d", srv.port);
  }
  return rc_;
}

static void rclose(void) {
  if (rc_ != NULL)
    redisFree(rc_);
  rc_ = NULL;
}

/* Runs a command on the inspection connection; returns the reply (caller frees). */
static redisReply *cmd(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  redisReply *r = redisvCommand(rconn(), fmt, ap);
  va_end(ap);
  cr_assert_not_null(r, "redis command failed: %s", rconn()->errstr);
  return r;
}

/* String value of a command's reply ("" for nil), copied into buf. */
static const char *str_cmd(char *buf, size_t len, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  redisReply *r = redisvCommand(rconn(), fmt, ap);
  va_end(ap);
  cr_assert_not_null(r);
  snprintf(buf, len, "%s", r->type == REDIS_REPLY_STRING ? r->str : "");
  freeReplyObject(r);
  return buf;
}

static long long int_cmd(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  redisReply *r = redisvCommand(rconn(), fmt, ap);
  va_end(ap);
  cr_assert_not_null(r);
  cr_assert_eq(r->type, REDIS_REPLY_INTEGER, "expected an integer reply, got type %d", r->type);
  long long v = r->integer;
  freeReplyObject(r);
  return v;
}

static char *key(char *buf, size_t len, const char *kind, const char *name) {
  snprintf(buf, len, "%s%s%s", prefix, kind, name);
  return buf;
}

static tconn *add_live(tgw *g, const char *user, uint64_t id) {
  tconn *c = &g->conns[g->nconns++];
  snprintf(c->user, sizeof(c->user), "%s", user);
  c->id = id;
  c->live = true;
  return c;
}

typedef struct {
  const char *user;
  uint64_t id;
  const char *gw;
} entry_check;

static bool entry_present(void *arg) {
  const entry_check *e = arg;
  char k[256], f[32], v[256];
  snprintf(f, sizeof(f), "%lu", (unsigned long)e->id);
  str_cmd(v, sizeof(v), "HGET %s %s", key(k, sizeof(k), "user:", e->user), f);
  return strcmp(v, e->gw) == 0;
}

static bool entry_absent(void *arg) {
  const entry_check *e = arg;
  char k[256], f[32];
  snprintf(f, sizeof(f), "%lu", (unsigned long)e->id);
  return int_cmd("HEXISTS %s %s", key(k, sizeof(k), "user:", e->user), f) == 0;
}

static bool added(void *arg) {
  tgw *g = arg;
  return g->adds_answered > 0;
}

/* Adds a connection through the registry and waits for its confirmation. */
static void register_conn(tgw *g, const char *user, uint64_t id) {
  add_live(g, user, id);
  int before = g->adds_answered;
  uint64_t t0 = itest_now_ms();
  int rc = gw_registry_conn_add(g->reg, user, strlen(user), id, on_added, g);
  cr_assert_lt(itest_now_ms() - t0, NONBLOCKING_MS);
  cr_assert_eq(rc, GW_REG_OK, "conn_add: %s", gw_registry_strerror(rc));
  cr_assert_eq(g->adds_answered, before, "the callback must not run inside conn_add");
  cr_assert(run_until(added, g, WAIT_MS) && g->add_status[id] != 1, "conn_add never answered");
  cr_assert_eq(g->add_status[id], GW_REG_OK, "conn_add status %s",
               gw_registry_err_name(g->add_status[id]));
  g->adds_answered = 0;
}

static bool slot_events_at_least(void *arg) {
  tgw *g = arg;
  return g->nslots_seen >= 3 && gw_registry_slot(g->reg) >= 0;
}

static bool released(void *arg) {
  return ((tgw *)arg)->release_done > 0;
}

static bool disconnected(void *arg) {
  return !gw_registry_connected(((tgw *)arg)->reg);
}

static bool connected(void *arg) {
  return gw_registry_connected(((tgw *)arg)->reg);
}

typedef struct {
  const char *key, *field, *want;
} field_check;

static bool field_is(void *arg) {
  const field_check *f = arg;
  char v[256];
  return strcmp(str_cmd(v, sizeof(v), "HGET %s %s", f->key, f->field), f->want) == 0;
}

/* --- tests ------------------------------------------------------------------------------------ */

Test(gw_registry, acquires_slot_and_writes_record) {
  tgw g = {0};
  start(&g, "gw-a", 4);
  cr_assert_not(gw_registry_connected(g.reg), "connecting is asynchronous");
  cr_assert_eq(gw_registry_slot(g.reg), -1);
  int32_t s = wait_slot(&g);
  cr_assert(s >= 0 && s < 4);
  cr_assert(gw_registry_connected(g.reg));
  cr_assert_eq(g.nslots_seen, 1);
  cr_assert_eq(g.slots_seen[0], s);

  char k[256], v[256], sk[16];
  snprintf(sk, sizeof(sk), "%d", s);
  cr_assert_str_eq(str_cmd(v, sizeof(v), "GET %s", key(k, sizeof(k), "slot:", sk)), "gw-a");
  long long ttl = int_cmd("PTTL %s", k);
  cr_assert(ttl > 0 && ttl <= LEASE_MS, "slot TTL %lld", ttl);
  key(k, sizeof(k), "gw:", "gw-a");
  /* The record is written right after the slot is won: wait for that write to land. */
  field_check f = {k, "slot", sk};
  cr_assert(run_until(field_is, &f, WAIT_MS), "record slot is %s, not %s",
            str_cmd(v, sizeof(v), "HGET %s slot", k), sk);
  cr_assert_str_eq(str_cmd(v, sizeof(v), "HGET %s addr", k), "10.0.0.7:8080");
  cr_assert_str_eq(str_cmd(v, sizeof(v), "HGET %s version", k), WSG_VERSION);
  cr_assert_gt(atoll(str_cmd(v, sizeof(v), "HGET %s started", k)), 1600000000);
  ttl = int_cmd("PTTL %s", k);
  cr_assert(ttl > 0 && ttl <= LEASE_MS, "record TTL %lld", ttl);

  /* The connection count reaches the record at the next renewal. */
  gw_registry_set_conn_count(g.reg, 42);
  field_check conns = {k, "conns", "42"};
  cr_assert(run_until(field_is, &conns, WAIT_MS));
  gw_registry_destroy(g.reg);
  gw_registry_destroy(NULL);
}

typedef struct {
  tgw *g;
  int n;
} multi;

static bool all_have_slots(void *arg) {
  multi *m = arg;
  for (int i = 0; i < m->n; i++)
    if (gw_registry_slot(m->g[i].reg) < 0)
      return false;
  return true;
}

Test(gw_registry, gateways_get_distinct_slots_and_wait_when_all_taken) {
  tgw g[3] = {{0}};
  start(&g[0], "gw-a", 2);
  start(&g[1], "gw-b", 2);
  multi m = {g, 2};
  cr_assert(run_until(all_have_slots, &m, WAIT_MS));
  cr_assert_neq(gw_registry_slot(g[0].reg), gw_registry_slot(g[1].reg));
  /* A third gateway finds both slots taken and keeps trying; it never steals one. */
  start(&g[2], "gw-c", 2);
  run_for(5 * RENEW_MS);
  cr_assert(gw_registry_connected(g[2].reg));
  cr_assert_eq(gw_registry_slot(g[2].reg), -1);
  cr_assert_eq(g[2].nslots_seen, 0);
  cr_assert_eq(g[0].nslots_seen, 1, "gw-a's slot never moved");
  cr_assert_eq(g[1].nslots_seen, 1, "gw-b's slot never moved");
  /* When gw-a releases, gw-c takes its slot at its next renewal. */
  int32_t freed = gw_registry_slot(g[0].reg);
  cr_assert_eq(gw_registry_release(g[0].reg, on_released, &g[0]), GW_REG_OK);
  multi m3 = {&g[2], 1};
  cr_assert(run_until(all_have_slots, &m3, WAIT_MS));
  cr_assert_eq(gw_registry_slot(g[2].reg), freed);
  cr_assert(run_until(released, &g[0], WAIT_MS));
  cr_assert_eq(g[0].release_done, 1);
  for (int i = 0; i < 3; i++)
    gw_registry_destroy(g[i].reg);
}

Test(gw_registry, conn_add_and_remove_own_mapping_only) {
  tgw g = {0};
  start(&g, "gw-a", 1);
  /* Before the connection is up, adds fail at once rather than queue. */
  cr_assert_eq(gw_registry_conn_add(g.reg, "alice", 5, 1, on_added, &g), GW_REG_NOT_CONNECTED);
  wait_slot(&g);
  cr_assert_eq(gw_registry_conn_add(g.reg, "", 0, 1, on_added, &g), GW_REG_INVALID);
  char big[300];
  memset(big, 'x', sizeof(big));
  cr_assert_eq(gw_registry_conn_add(g.reg, big, sizeof(big), 1, on_added, &g), GW_REG_INVALID);
  cr_assert_eq(g.adds_answered, 0);

  register_conn(&g, "alice", 1);
  register_conn(&g, "alice", 2);
  register_conn(&g,
                "b\xc3\xb6"
                "b with spaces",
                3);
  entry_check a1 = {"alice", 1, "gw-a"}, a2 = {"alice", 2, "gw-a"};
  entry_check b3 = {"b\xc3\xb6"
                    "b with spaces",
                    3, "gw-a"};
  cr_assert(entry_present(&a1) && entry_present(&a2) && entry_present(&b3));

  cr_assert_eq(gw_registry_conn_remove(g.reg, "alice", 5, 1), GW_REG_OK);
  g.conns[0].live = false;
  cr_assert(run_until(entry_absent, &a1, WAIT_MS));
  cr_assert(entry_present(&a2), "the user's other connection stays");

  /* A mapping that names another gateway (the connection id moved) is left alone. */
  char k[256];
  redisReply *r = cmd("HSET %s 9 gw-other", key(k, sizeof(k), "user:", "carol"));
  freeReplyObject(r);
  cr_assert_eq(gw_registry_conn_remove(g.reg, "carol", 5, 9), GW_REG_OK);
  cr_assert_eq(gw_registry_conn_remove(g.reg, "alice", 5, 2), GW_REG_OK);
  g.conns[1].live = false;
  cr_assert(run_until(entry_absent, &a2, WAIT_MS));
  entry_check c9 = {"carol", 9, "gw-other"};
  cr_assert(entry_present(&c9), "another gateway's mapping was removed");
  gw_registry_destroy(g.reg);
}

typedef struct {
  tgw *g;
  int32_t slot;
  long long min_ttl;
  int samples;
  bool record_missing;
} ttl_watch;

static bool sample_ttl(void *arg) {
  ttl_watch *w = arg;
  char k[256], sk[16];
  snprintf(sk, sizeof(sk), "%d", w->slot);
  long long t = int_cmd("PTTL %s", key(k, sizeof(k), "slot:", sk));
  if (t < w->min_ttl)
    w->min_ttl = t;
  if (int_cmd("EXISTS %s", key(k, sizeof(k), "gw:", w->g->gw_id)) != 1)
    w->record_missing = true;
  w->samples++;
  return false;
}

Test(gw_registry, renewal_keeps_the_lease) {
  tgw g = {0};
  start(&g, "gw-a", 2);
  ttl_watch w = {&g, wait_slot(&g), LEASE_MS, 0, false};
  char k[256], sk[16];
  snprintf(sk, sizeof(sk), "%d", w.slot);
  field_check f = {key(k, sizeof(k), "gw:", "gw-a"), "slot", sk};
  cr_assert(run_until(field_is, &f, WAIT_MS), "no gateway record");
  /* Three lease periods: without renewal the key would have expired twice over. */
  run_until(sample_ttl, &w, 3 * LEASE_MS);
  cr_assert_gt(w.samples, 10);
  cr_assert_gt(w.min_ttl, LEASE_MS - 3 * RENEW_MS, "TTL fell to %lld ms", w.min_ttl);
  cr_assert_not(w.record_missing, "gateway record expired");
  cr_assert_eq(g.nslots_seen, 1, "slot never changed");
  cr_assert_eq(gw_registry_slot(g.reg), w.slot);
  gw_registry_destroy(g.reg);
}

Test(gw_registry, lease_loss_is_reported_then_recovered_with_reregistration) {
  tgw g = {0};
  start(&g, "gw-a", 3);
  int32_t s = wait_slot(&g);
  register_conn(&g, "alice", 1);
  register_conn(&g, "bob", 2);
  int foreach_before = g.foreach_calls;

  /* The slot key vanishes (an operator, or a failover that lost it) together with a user hash. */
  char k[256], k2[256], sk[16];
  snprintf(sk, sizeof(sk), "%d", s);
  freeReplyObject(
      cmd("DEL %s %s", key(k, sizeof(k), "slot:", sk), key(k2, sizeof(k2), "user:", "alice")));
  cr_assert(run_until(slot_events_at_least, &g, WAIT_MS), "no loss and recovery reported");
  cr_assert_eq(g.slots_seen[1], -1, "the loss is reported first");
  cr_assert_geq(g.slots_seen[2], 0);
  cr_assert_eq(g.slots_seen[2], s, "the same slot is free again, so it is taken back");
  entry_check a1 = {"alice", 1, "gw-a"}, b2 = {"bob", 2, "gw-a"};
  cr_assert(run_until(entry_present, &a1, WAIT_MS), "alice was not re-registered");
  cr_assert(entry_present(&b2));
  cr_assert_gt(g.foreach_calls, foreach_before);
  gw_registry_destroy(g.reg);
}

typedef struct {
  tgw *g;
  entry_check *e;
} record_and_entry;

static bool record_and_entry_back(void *arg) {
  record_and_entry *x = arg;
  char k[256];
  return gw_registry_slot(x->g->reg) >= 0 &&
         int_cmd("EXISTS %s", key(k, sizeof(k), "gw:", x->g->gw_id)) == 1 && entry_present(x->e);
}

Test(gw_registry, flushall_is_like_redis_restarting_empty) {
  tgw g = {0};
  start(&g, "gw-a", 2);
  wait_slot(&g);
  register_conn(&g, "alice", 1);
  freeReplyObject(cmd("FLUSHALL"));
  cr_assert(run_until(slot_events_at_least, &g, WAIT_MS), "no loss and recovery reported");
  cr_assert_eq(g.slots_seen[1], -1);
  entry_check a1 = {"alice", 1, "gw-a"};
  record_and_entry x = {&g, &a1};
  cr_assert(run_until(record_and_entry_back, &x, WAIT_MS));
  gw_registry_destroy(g.reg);
}

Test(gw_registry, redis_killed_and_restarted) {
  tgw g = {0};
  start(&g, "gw-a", 2);
  wait_slot(&g);
  register_conn(&g, "alice", 1);
  rclose();
  itest_redis_server_stop(&srv, SIGKILL);
  cr_assert(run_until(disconnected, &g, WAIT_MS));

  /* While Redis is away nothing waits: adds fail fast, removals are kept for later. */
  uint64_t t0 = itest_now_ms();
  cr_assert_eq(gw_registry_conn_add(g.reg, "bob", 3, 2, on_added, &g), GW_REG_NOT_CONNECTED);
  cr_assert_eq(gw_registry_conn_remove(g.reg, "zed", 3, 7), GW_REG_OK);
  cr_assert_lt(itest_now_ms() - t0, NONBLOCKING_MS);
  run_for(3 * RENEW_MS); /* several failed reconnects */

  itest_redis_server_start(&srv, srv.port); /* same port, empty */
  cr_assert(run_until(connected, &g, WAIT_MS), "did not reconnect");
  entry_check a1 = {"alice", 1, "gw-a"};
  record_and_entry x = {&g, &a1};
  cr_assert(run_until(record_and_entry_back, &x, WAIT_MS), "state not restored after restart");
  gw_registry_destroy(g.reg);
}

Test(gw_registry, stalled_redis_times_out_and_queued_removals_flush) {
  tgw g = {0};
  start(&g, "gw-a", 2);
  wait_slot(&g);
  register_conn(&g, "alice", 1);
  register_conn(&g, "alice", 2);
  /* Redis stops answering without closing the socket: only the watchdog can notice. */
  cr_assert_eq(kill(srv.pid, SIGSTOP), 0);
  uint64_t t0 = itest_now_ms();
  cr_assert(run_until(disconnected, &g, WAIT_MS), "a stalled Redis was never given up on");
  cr_assert_lt(itest_now_ms() - t0, TIMEOUT_MS + 2 * RENEW_MS + 1000);
  g.conns[1].live = false;
  t0 = itest_now_ms();
  cr_assert_eq(gw_registry_conn_remove(g.reg, "alice", 5, 2), GW_REG_OK);
  cr_assert_lt(itest_now_ms() - t0, NONBLOCKING_MS);
  cr_assert_eq(kill(srv.pid, SIGCONT), 0);
  cr_assert(run_until(connected, &g, WAIT_MS), "did not reconnect after the stall");
  entry_check a1 = {"alice", 1, "gw-a"}, a2 = {"alice", 2, "gw-a"};
  cr_assert(run_until(entry_absent, &a2, WAIT_MS), "the queued removal never reached Redis");
  cr_assert(entry_present(&a1));
  cr_assert_geq(gw_registry_slot(g.reg), 0);
  gw_registry_destroy(g.reg);
}

Test(gw_registry, release_removes_everything) {
  tgw g = {0};
  start(&g, "gw-a", 2);
  int32_t s = wait_slot(&g);
  register_conn(&g, "alice", 1);
  register_conn(&g, "bob", 2);
  cr_assert_eq(gw_registry_release(g.reg, on_released, &g), GW_REG_OK);
  cr_assert_eq(g.release_done, 0, "done must not run inside release");
  cr_assert(run_until(released, &g, WAIT_MS));
  cr_assert_eq(g.release_done, 1);
  cr_assert_eq(g.slots_seen[g.nslots_seen - 1], -1, "release reports the slot as gone");
  cr_assert_eq(gw_registry_slot(g.reg), -1);
  char k[256], sk[16];
  snprintf(sk, sizeof(sk), "%d", s);
  cr_assert_eq(int_cmd("EXISTS %s", key(k, sizeof(k), "slot:", sk)), 0);
  cr_assert_eq(int_cmd("EXISTS %s", key(k, sizeof(k), "gw:", "gw-a")), 0);
  cr_assert_eq(int_cmd("EXISTS %s", key(k, sizeof(k), "user:", "alice")), 0);
  cr_assert_eq(int_cmd("EXISTS %s", key(k, sizeof(k), "user:", "bob")), 0);
  cr_assert_eq(gw_registry_conn_add(g.reg, "carl", 4, 3, on_added, &g), GW_REG_RELEASED);
  cr_assert_eq(gw_registry_release(g.reg, on_released, &g), GW_REG_RELEASED);
  /* Nothing comes back: no renewal re-creates the record. */
  run_for(3 * RENEW_MS);
  cr_assert_eq(int_cmd("EXISTS %s", key(k, sizeof(k), "gw:", "gw-a")), 0);
  cr_assert_eq(g.release_done, 1);
  gw_registry_destroy(g.reg);
}

Test(gw_registry, release_while_disconnected_still_completes) {
  tgw g = {0};
  start(&g, "gw-a", 2);
  wait_slot(&g);
  itest_redis_server_stop(&srv, SIGKILL);
  cr_assert(run_until(disconnected, &g, WAIT_MS));
  uint64_t t0 = itest_now_ms();
  cr_assert_eq(gw_registry_release(g.reg, on_released, &g), GW_REG_OK);
  cr_assert_eq(g.release_done, 0);
  cr_assert(run_until(released, &g, 1000), "release did not complete without Redis");
  cr_assert_lt(itest_now_ms() - t0, 1000);
  cr_assert_eq(gw_registry_slot(g.reg), -1);
  gw_registry_destroy(g.reg);
}

Test(gw_registry, destroy_drops_pending_callbacks) {
  tgw g = {0};
  start(&g, "gw-a", 1);
  wait_slot(&g);
  add_live(&g, "alice", 1);
  cr_assert_eq(gw_registry_conn_add(g.reg, "alice", 5, 1, on_added, &g), GW_REG_OK);
  cr_assert_eq(gw_registry_release(g.reg, on_released, &g), GW_REG_OK);
  gw_registry_destroy(g.reg);
  run_for(200);
  cr_assert_eq(g.adds_answered, 0, "a callback ran after destroy");
  cr_assert_eq(g.release_done, 0);
}

/* The server frees itself while registrations are still in flight (shutdown): their callbacks
 * must not run, yet the commands still complete. */
Test(gw_registry, cancelled_conn_callbacks_do_not_run) {
  tgw g = {0};
  start(&g, "gw-a", 1);
  wait_slot(&g);
  add_live(&g, "alice", 1);
  cr_assert_eq(gw_registry_conn_add(g.reg, "alice", 5, 1, on_added, &g), GW_REG_OK);
  gw_registry_cancel_conn_callbacks(g.reg);
  entry_check a1 = {"alice", 1, "gw-a"};
  cr_assert(run_until(entry_present, &a1, WAIT_MS), "the HSET itself was dropped");
  run_for(100);
  cr_assert_eq(g.adds_answered, 0, "a cancelled callback ran");
  /* Adds queued after the cancellation are answered again. */
  add_live(&g, "bob", 2);
  cr_assert_eq(gw_registry_conn_add(g.reg, "bob", 3, 2, on_added, &g), GW_REG_OK);
  cr_assert(run_until(added, &g, WAIT_MS));
  cr_assert_eq(g.adds_answered, 1);
  gw_registry_destroy(g.reg);
}

Test(gw_registry, destroy_from_inside_a_callback) {
  tgw g = {0};
  start(&g, "gw-a", 1);
  wait_slot(&g);
  g.destroy_in_cb = true;
  add_live(&g, "alice", 1);
  add_live(&g, "bob", 2);
  cr_assert_eq(gw_registry_conn_add(g.reg, "alice", 5, 1, on_added, &g), GW_REG_OK);
  cr_assert_eq(gw_registry_conn_add(g.reg, "bob", 3, 2, on_added, &g), GW_REG_OK);
  cr_assert(run_until(added, &g, WAIT_MS));
  cr_assert_null(g.reg);
  run_for(200); /* the sanitizer build catches any use after free here */
  cr_assert_eq(g.adds_answered, 1, "no callback after the destroying one");
}

Test(gw_registry, host_name_is_resolved_off_the_loop) {
  tgw g = {0};
  gw_registry_options o = opts(&g, "gw-a", 1);
  o.host = "localhost";
  char err[256];
  cr_assert_eq(gw_registry_create(&g.reg, loop, &o, NULL, err, sizeof(err)), GW_REG_OK, "%s", err);
  wait_slot(&g);
  gw_registry_destroy(g.reg);

  /* A name that does not resolve is retried, not fatal; destroy cancels the attempt. */
  tgw h = {0};
  o = opts(&h, "gw-b", 1);
  o.host = "no-such-host.invalid";
  cr_assert_eq(gw_registry_create(&h.reg, loop, &o, NULL, err, sizeof(err)), GW_REG_OK);
  run_for(300);
  cr_assert_not(gw_registry_connected(h.reg));
  gw_registry_destroy(h.reg);
}

Test(gw_registry, metrics_are_exported) {
  wsg_metrics *m = wsg_metrics_create();
  tgw g = {0};
  gw_registry_options o = opts(&g, "gw-a", 2);
  char err[256];
  cr_assert_eq(gw_registry_create(&g.reg, loop, &o, m, err, sizeof(err)), GW_REG_OK);
  int32_t s = wait_slot(&g);
  register_conn(&g, "alice", 1);
  char *text = NULL;
  size_t len = 0;
  cr_assert_eq(wsg_metrics_render(m, &text, &len), 0);
  char want[64];
  snprintf(want, sizeof(want), "wsgate_gateway_slot %d", s);
  cr_assert_not_null(strstr(text, want), "%s", text);
  cr_assert_not_null(strstr(text, "wsgate_gateway_redis_connected 1"), "%s", text);
  cr_assert_not_null(strstr(text, "wsgate_gateway_redis_commands_total{result=\"ok\"}"), "%s",
                     text);
  free(text);
  gw_registry_destroy(g.reg);
  wsg_metrics_destroy(m);
}

Test(gw_registry, options_are_validated) {
  tgw g = {0};
  gw_registry *r = (gw_registry *)&g; /* must be overwritten with NULL */
  char err[256];
  gw_registry_options base = opts(&g, "gw-a", 2);
  gw_registry_options o;
#define BAD(field_edit, needle)                                                                    \
  do {                                                                                             \
    o = base;                                                                                      \
    field_edit;                                                                                    \
    err[0] = '\0';                                                                                 \
    r = (gw_registry *)&g;                                                                         \
    cr_assert_eq(gw_registry_create(&r, loop, &o, NULL, err, sizeof(err)), GW_REG_INVALID);        \
    cr_assert_null(r);                                                                             \
    cr_assert_not_null(strstr(err, needle), "message '%s' lacks '%s'", err, needle);               \
  } while (0)
  BAD(o.host = "", "host");
  BAD(o.port = 0, "port");
  BAD(o.port = 70000, "port");
  BAD(o.gw_id = "", "gateway id");
  BAD(o.slots = 0, "slots");
  BAD(o.renew_ms = o.lease_ms, "shorter than the lease");
  BAD(o.renew_ms = 0, "renewal");
  BAD(o.timeout_ms = 0, "timeout");
  BAD(o.prefix = NULL, "prefix");
#undef BAD
  cr_assert_str_eq(gw_registry_strerror(GW_REG_BUSY), "too many Redis commands in flight");
  cr_assert_str_eq(gw_registry_err_name(GW_REG_LOST), "GW_REG_LOST");
  cr_assert_str_eq(gw_registry_err_name(99), "GW_REG_UNKNOWN");
}
