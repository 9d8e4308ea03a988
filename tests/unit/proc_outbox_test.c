/*
 * proc_outbox: recorded actions become the right envelopes: one deliver per gateway for a fan-out,
 * split only when a record would be too large; each connection once; fallbacks for offline users;
 * closes per connection; rollback forgets a retried handler's actions.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proc_outbox.h"

typedef struct {
  int32_t partition;
  uint32_t rec;
  uint8_t *buf;
  size_t len;
} item;

typedef struct {
  item v[256];
  size_t n;
} sink;

static int collect(void *arg, uint32_t rec, const char *gw, size_t gw_len, int32_t partition,
                   const uint8_t *buf, size_t len) {
  (void)gw;
  (void)gw_len;
  sink *s = arg;
  cr_assert_lt(s->n, 256);
  item *it = &s->v[s->n++];
  it->partition = partition;
  it->rec = rec;
  it->buf = malloc(len);
  memcpy(it->buf, buf, len);
  it->len = len;
  return 0;
}

static void sink_free(sink *s) {
  for (size_t i = 0; i < s->n; i++)
    free(s->v[i].buf);
  s->n = 0;
}

static wsg_envelope decode(const item *it) {
  wsg_envelope env;
  const char *field = NULL;
  int rc = wsg_envelope_decode(&env, it->buf, it->len, &field);
  cr_assert_eq(rc, WSG_ENV_OK, "%s (%s)", wsg_env_strerror(rc), field ? field : "");
  return env;
}

/* Routes built by hand, as proc_redis_resolve() would fill them. */
static void add_gw(proc_routes *rt, const char *id, int32_t slot) {
  rt->gws = realloc(rt->gws, (rt->ngws + 1) * sizeof(proc_route_gw));
  proc_route_gw *g = &rt->gws[rt->ngws++];
  memset(g, 0, sizeof(*g));
  strcpy(g->id, id);
  g->len = (uint16_t)strlen(id);
  g->slot = slot;
}

static void set_user(proc_routes *rt, size_t user, const uint32_t *gws, const uint64_t *conns,
                     size_t n) {
  rt->first[user] = (uint32_t)rt->ntargets;
  rt->count[user] = (uint32_t)n;
  for (size_t i = 0; i < n; i++)
    rt->targets[rt->ntargets++] = (proc_target){.gw = gws[i], .conn = conns[i]};
}

static void routes_alloc(proc_routes *rt, size_t users, size_t targets) {
  proc_routes_init(rt);
  rt->first = calloc(users, sizeof(uint32_t));
  rt->count = calloc(users, sizeof(uint32_t));
  rt->targets = calloc(targets, sizeof(proc_target));
}

static const proc_origin origin = {.gateway = "gw-o", .gateway_len = 4, .slot = 9, .conn = 99};

Test(proc_outbox, fanout_groups_by_gateway_and_dedups) {
  proc_outbox *b = proc_outbox_create();
  proc_strref users[] = {{"u1", 2}, {"u2", 2}, {"u1", 2}, {"u3", 2}};
  cr_assert_eq(proc_outbox_send(b, 4, users, 4, "msg", 3, false, NULL, NULL, 0, false), 0);
  size_t n;
  const proc_strref *distinct = proc_outbox_users(b, &n);
  cr_assert_eq(n, 3, "u1 listed twice is looked up once");
  cr_assert_eq(memcmp(distinct[0].ptr, "u1", 2), 0);

  proc_routes rt;
  routes_alloc(&rt, 3, 8);
  add_gw(&rt, "gw-a", 1);
  add_gw(&rt, "gw-b", 2);
  set_user(&rt, 0, (uint32_t[]){0, 1}, (uint64_t[]){10, 11}, 2); /* u1 on both */
  set_user(&rt, 1, (uint32_t[]){0}, (uint64_t[]){20}, 1);        /* u2 on gw-a */
  set_user(&rt, 2, NULL, NULL, 0);                               /* u3 offline */

  sink s = {0};
  proc_emit_stats st = {0};
  cr_assert_eq(proc_outbox_emit(b, &rt, 1000000, 1, collect, &s, &st), 0);
  cr_assert_eq(s.n, 2, "one envelope per gateway");
  wsg_envelope a = decode(&s.v[0]), c = decode(&s.v[1]);
  cr_assert_eq(s.v[0].partition, 1);
  cr_assert_eq(s.v[0].rec, 4);
  cr_assert(a.fields & WSG_F_CONNS);
  cr_assert_eq(a.conns.count, 2);
  size_t pos = 0;
  uint64_t id;
  wsg_conns_next(&a.conns, &pos, &id);
  cr_assert_eq(id, 10);
  wsg_conns_next(&a.conns, &pos, &id);
  cr_assert_eq(id, 20);
  cr_assert_eq(s.v[1].partition, 2);
  cr_assert(c.fields & WSG_F_CONN, "a single connection uses c, not cs");
  cr_assert_eq(c.conn, 11);
  cr_assert_eq(st.deliveries, 3);
  cr_assert_eq(st.undeliverable, 1);
  cr_assert_eq(st.envelopes, 2);
  sink_free(&s);
  proc_routes_finish(&rt);
  proc_outbox_destroy(b);
}

Test(proc_outbox, large_fanout_splits_to_fit_a_record) {
  proc_outbox *b = proc_outbox_create();
  proc_strref user = {"crowd", 5};
  char payload[1000];
  memset(payload, 'p', sizeof(payload));
  cr_assert_eq(
      proc_outbox_send(b, 0, &user, 1, payload, sizeof(payload), true, NULL, NULL, 0, false), 0);
  proc_routes rt;
  routes_alloc(&rt, 1, 1000);
  add_gw(&rt, "gw-a", 1);
  rt.first[0] = 0;
  rt.count[0] = 1000;
  for (uint32_t i = 0; i < 1000; i++)
    rt.targets[rt.ntargets++] = (proc_target){.gw = 0, .conn = (uint64_t)1 << 40 | i};
  sink s = {0};
  proc_emit_stats st = {0};
  size_t max_record = 6000;
  cr_assert_eq(proc_outbox_emit(b, &rt, max_record, 1, collect, &s, &st), 0);
  cr_assert_gt(s.n, 1, "1000 connections of 9 bytes do not fit 6000 bytes");
  uint32_t total = 0;
  for (size_t i = 0; i < s.n; i++) {
    cr_assert_leq(s.v[i].len, max_record);
    wsg_envelope e = decode(&s.v[i]);
    total += (e.fields & WSG_F_CONNS) ? e.conns.count : 1;
  }
  cr_assert_eq(total, 1000);
  sink_free(&s);
  proc_routes_finish(&rt);
  proc_outbox_destroy(b);
}

Test(proc_outbox, fallback_and_closes) {
  proc_outbox *b = proc_outbox_create();
  proc_strref off = {"offline", 7}, on = {"online", 6};
  cr_assert_eq(proc_outbox_send(b, 0, &off, 1, "dm", 2, false, &origin, "gone", 4, false), 0);
  cr_assert_eq(proc_outbox_send(b, 0, &on, 1, "dm", 2, false, &origin, "gone", 4, false), 0);
  cr_assert_eq(proc_outbox_close(b, 1, &origin, 4000, "bye", 3), 0);
  cr_assert_eq(proc_outbox_close_users(b, 2, &on, 1, 1008, "", 0), 0);
  proc_routes rt;
  routes_alloc(&rt, 2, 4);
  add_gw(&rt, "gw-a", 1);
  set_user(&rt, 0, NULL, NULL, 0);
  set_user(&rt, 1, (uint32_t[]){0, 0}, (uint64_t[]){5, 6}, 2);
  sink s = {0};
  proc_emit_stats st = {0};
  cr_assert_eq(proc_outbox_emit(b, &rt, 1000000, 1, collect, &s, &st), 0);
  cr_assert_eq(s.n, 5);
  wsg_envelope e0 = decode(&s.v[0]);
  cr_assert_eq(e0.conn, 99, "the fallback goes to the origin");
  cr_assert_eq(s.v[0].partition, 9);
  cr_assert_eq(e0.data_len, 4);
  wsg_envelope e1 = decode(&s.v[1]);
  cr_assert_eq(e1.conns.count, 2);
  wsg_envelope e2 = decode(&s.v[2]);
  cr_assert_eq(e2.kind, WSG_ENV_CLOSE);
  cr_assert_eq(e2.close_code, 4000);
  cr_assert_eq(e2.close_reason_len, 3);
  cr_assert_eq(e2.conn, 99);
  wsg_envelope e3 = decode(&s.v[3]), e4 = decode(&s.v[4]);
  cr_assert_eq(e3.kind, WSG_ENV_CLOSE);
  cr_assert_eq(e3.conn, 5);
  cr_assert_not(e3.fields & WSG_F_CLOSE_REASON);
  cr_assert_eq(e4.conn, 6);
  cr_assert_eq(st.fallbacks, 1);
  cr_assert_eq(st.undeliverable, 1);
  sink_free(&s);
  proc_routes_finish(&rt);
  proc_outbox_destroy(b);
}

Test(proc_outbox, rollback_forgets_actions_and_users) {
  proc_outbox *b = proc_outbox_create();
  proc_strref u1 = {"keep", 4}, u2 = {"drop", 4};
  proc_outbox_send(b, 0, &u1, 1, "a", 1, false, NULL, NULL, 0, false);
  proc_outbox_mark m = proc_outbox_get_mark(b);
  proc_outbox_send(b, 1, &u2, 1, "b", 1, false, NULL, NULL, 0, false);
  proc_outbox_reply(b, 1, &origin, "c", 1, false);
  cr_assert_eq(proc_outbox_count(b), 3);
  proc_outbox_rollback(b, m);
  cr_assert_eq(proc_outbox_count(b), 1);
  size_t n;
  const proc_strref *users = proc_outbox_users(b, &n);
  cr_assert_eq(n, 1);
  cr_assert_eq(memcmp(users[0].ptr, "keep", 4), 0);
  /* The index still finds "keep" and does not find "drop". */
  proc_outbox_send(b, 2, &u1, 1, "d", 1, false, NULL, NULL, 0, false);
  proc_outbox_send(b, 2, &u2, 1, "e", 1, false, NULL, NULL, 0, false);
  proc_outbox_users(b, &n);
  cr_assert_eq(n, 2);
  proc_outbox_reset(b);
  cr_assert_eq(proc_outbox_count(b), 0);
  proc_outbox_users(b, &n);
  cr_assert_eq(n, 0);
  proc_outbox_destroy(b);
  proc_outbox_destroy(NULL);
}

Test(proc_outbox, many_distinct_users_index_grows) {
  proc_outbox *b = proc_outbox_create();
  static char names[5000][12];
  static proc_strref users[5000];
  for (int i = 0; i < 5000; i++) {
    snprintf(names[i], sizeof(names[i]), "u%d", i);
    users[i] = (proc_strref){names[i], strlen(names[i])};
  }
  cr_assert_eq(proc_outbox_send(b, 0, users, 5000, "x", 1, false, NULL, NULL, 0, false), 0);
  cr_assert_eq(proc_outbox_send(b, 0, users, 2500, "y", 1, false, NULL, NULL, 0, false), 0);
  size_t n;
  const proc_strref *d = proc_outbox_users(b, &n);
  cr_assert_eq(n, 5000);
  for (int i = 0; i < 5000; i++)
    cr_assert_eq(d[i].len, users[i].len);
  proc_outbox_destroy(b);
}

/* Resume: every (send, user) is listed in order for the router to number; the envelopes carry
 * each connection's user's q (`q` for one, `qs` beside `cs`), replies and fallbacks none. */
Test(proc_outbox, numbered_sends_carry_each_users_q) {
  proc_outbox *b = proc_outbox_create();
  proc_strref room[] = {{"u1", 2}, {"u2", 2}};
  proc_strref one[] = {{"u2", 2}};
  cr_assert_eq(proc_outbox_reply(b, 0, &origin, "r", 1, false), 0);
  cr_assert_eq(proc_outbox_send(b, 1, room, 2, "a", 1, false, NULL, NULL, 0, false), 0);
  cr_assert_eq(proc_outbox_send(b, 2, one, 1, "b", 1, false, &origin, "off", 3, false), 0);
  size_t n, nusers;
  proc_append *ap = proc_outbox_appends(b, &n);
  proc_outbox_users(b, &nusers);
  cr_assert_eq(n, 3, "one delivery per user of each send, replies not");
  cr_assert_eq(nusers, 2);
  cr_assert_eq(ap[0].user, 0);
  cr_assert_eq(ap[1].user, 1);
  cr_assert_eq(ap[2].user, 1);
  cr_assert_eq(ap[2].len, 1);
  cr_assert_eq(memcmp(ap[2].data, "b", 1), 0);
  ap[0].q = 1795602833455812; /* what proc_redis_append would assign */
  ap[1].q = 41;
  ap[2].q = 42;

  proc_routes rt;
  routes_alloc(&rt, 2, 4);
  add_gw(&rt, "gw-a", 1);
  set_user(&rt, 0, (uint32_t[]){0}, (uint64_t[]){10}, 1);
  set_user(&rt, 1, (uint32_t[]){0, 0}, (uint64_t[]){20, 21}, 2);
  sink s = {0};
  proc_emit_stats st = {0};
  cr_assert_eq(proc_outbox_emit(b, &rt, 1000000, 1, collect, &s, &st), 0);
  cr_assert_eq(s.n, 3);
  wsg_envelope r = decode(&s.v[0]), f = decode(&s.v[1]), d = decode(&s.v[2]);
  cr_assert(!(r.fields & WSG_F_USEQ), "a reply is not sequenced");
  cr_assert(f.fields & WSG_F_USEQS);
  cr_assert_eq(f.useqs.count, 3);
  uint64_t want_c[] = {10, 20, 21}, want_q[] = {1795602833455812, 41, 41};
  size_t pc = 0, pq = 0;
  for (int i = 0; i < 3; i++) {
    uint64_t c, q;
    cr_assert(wsg_conns_next(&f.conns, &pc, &c));
    cr_assert(wsg_conns_next(&f.useqs, &pq, &q));
    cr_assert_eq(c, want_c[i]);
    cr_assert_eq(q, want_q[i], "connection %llu: q %llu", (unsigned long long)c,
                 (unsigned long long)q);
  }
  cr_assert(d.fields & WSG_F_CONNS);
  pq = 0;
  uint64_t q;
  cr_assert(wsg_conns_next(&d.useqs, &pq, &q));
  cr_assert_eq(q, 42);
  sink_free(&s);

  /* A send recorded after the list was built is not numbered: no q rather than a wrong one. */
  cr_assert_eq(proc_outbox_send(b, 3, one, 1, "c", 1, false, NULL, NULL, 0, false), 0);
  cr_assert_eq(proc_outbox_emit(b, &rt, 1000000, 1, collect, &s, &st), 0);
  wsg_envelope late = decode(&s.v[s.n - 1]);
  cr_assert(!(late.fields & (WSG_F_USEQ | WSG_F_USEQS)));
  sink_free(&s);
  proc_routes_finish(&rt);
  proc_outbox_destroy(b);
}

/* A publication is one `publish` per gateway that proc_publish_store() found, in the order the
 * actions were taken; one never stored (no list asked for, or offset 0) sends nothing; rollback
 * forgets it. */
Test(proc_outbox, publish_one_record_per_gateway) {
  proc_outbox *b = proc_outbox_create();
  cr_assert_eq(proc_outbox_publish(b, 0, "news:eu", 7, "hello", 5, false), 0);
  proc_outbox_mark m = proc_outbox_get_mark(b);
  cr_assert_eq(proc_outbox_publish(b, 1, "gone", 4, "x", 1, false), 0);
  proc_outbox_rollback(b, m);
  cr_assert_eq(proc_outbox_publish(b, 2, "quiet", 5, "y", 1, true), 0);
  size_t n;
  proc_pub *p = proc_outbox_pubs(b, &n);
  cr_assert_eq(n, 2);
  cr_expect(p[0].channel_len == 7 && memcmp(p[0].channel, "news:eu", 7) == 0);
  cr_expect(p[1].binary && p[1].len == 1);
  /* What proc_publish_store() would fill: two gateways for the first, none for the second. */
  proc_route_gw gws[2] = {{.id = "gw-a", .len = 4, .slot = 3}, {.id = "gw-b", .len = 4, .slot = 7}};
  p[0].offset = 42;
  p[0].epoch = 1795602833455812;
  p[0].gws = gws;
  p[0].ngws = 2;
  p[1].offset = 1;
  p[1].epoch = 5;
  sink s = {0};
  proc_emit_stats st = {0};
  cr_assert_eq(proc_outbox_emit(b, NULL, 1 << 20, 1000, collect, &s, &st), 0);
  cr_assert_eq(s.n, 2, "one record per gateway with subscribers, none for the quiet channel");
  for (size_t i = 0; i < 2; i++) {
    wsg_envelope e = decode(&s.v[i]);
    cr_expect_eq(e.kind, WSG_ENV_PUBLISH);
    cr_expect_eq(s.v[i].partition, gws[i].slot);
    cr_expect(e.gateway_len == 4 && memcmp(e.gateway, gws[i].id, 4) == 0);
    cr_expect(e.channel_len == 7 && memcmp(e.channel, "news:eu", 7) == 0);
    cr_expect_eq(e.ch_offset, 42);
    cr_expect_eq(e.ch_epoch, 1795602833455812);
    cr_expect(e.data_len == 5 && memcmp(e.data, "hello", 5) == 0);
  }
  sink_free(&s);
  /* Not stored (the list was never asked for after a change): nothing goes out. */
  proc_outbox_reset(b);
  cr_assert_eq(proc_outbox_publish(b, 0, "news:eu", 7, "again", 5, false), 0);
  cr_assert_eq(proc_outbox_emit(b, NULL, 1 << 20, 1000, collect, &s, &st), 0);
  cr_expect_eq(s.n, 0);
  proc_outbox_destroy(b);
}

/* wsgate_subscribe: the origin connection gets one `subscribe` with `c` (no lookup); a user's
 * connections get one per gateway (`cs` when several), and wsgate_unsubscribe the same. */
Test(proc_outbox, subscribe_origin_and_users_per_gateway) {
  proc_outbox *b = proc_outbox_create();
  proc_strref u = {"u1", 2};
  cr_assert_eq(proc_outbox_chsub(b, 1, &origin, NULL, 0, "room:x", 6, true), 0);
  cr_assert_eq(proc_outbox_chsub(b, 2, NULL, &u, 1, "room:x", 6, true), 0);
  cr_assert_eq(proc_outbox_chsub(b, 3, NULL, &u, 1, "room:y", 6, false), 0);
  size_t n;
  proc_outbox_users(b, &n);
  cr_assert_eq(n, 1, "the origin is not looked up; u1 once");

  proc_routes rt;
  routes_alloc(&rt, 1, 4);
  add_gw(&rt, "gw-a", 1);
  add_gw(&rt, "gw-b", 2);
  set_user(&rt, 0, (uint32_t[]){0, 1, 0}, (uint64_t[]){10, 11, 12}, 3);

  sink s = {0};
  proc_emit_stats st = {0};
  cr_assert_eq(proc_outbox_emit(b, &rt, 1000000, 1, collect, &s, &st), 0);
  cr_assert_eq(s.n, 5, "origin + two gateways, twice (subscribe, unsubscribe)");
  wsg_envelope e = decode(&s.v[0]);
  cr_expect_eq(e.kind, WSG_ENV_SUBSCRIBE);
  cr_expect_eq(s.v[0].partition, 9);
  cr_expect(e.fields & WSG_F_CONN);
  cr_expect_eq(e.conn, 99);
  cr_expect_eq(e.gateway_len, 4);
  cr_expect_eq(memcmp(e.gateway, "gw-o", 4), 0);
  cr_expect_eq(e.channel_len, 6);
  cr_expect_eq(memcmp(e.channel, "room:x", 6), 0);
  cr_expect_not(e.fields & WSG_F_DATA);

  e = decode(&s.v[1]);
  cr_expect_eq(e.kind, WSG_ENV_SUBSCRIBE);
  cr_expect_eq(s.v[1].partition, 1);
  cr_expect_eq(s.v[1].rec, 2);
  cr_assert(e.fields & WSG_F_CONNS);
  cr_assert_eq(e.conns.count, 2);
  size_t pos = 0;
  uint64_t id;
  cr_assert(wsg_conns_next(&e.conns, &pos, &id));
  cr_expect_eq(id, 10);
  cr_assert(wsg_conns_next(&e.conns, &pos, &id));
  cr_expect_eq(id, 12);
  e = decode(&s.v[2]);
  cr_expect_eq(s.v[2].partition, 2);
  cr_expect(e.fields & WSG_F_CONN, "one connection: c");
  cr_expect_eq(e.conn, 11);

  e = decode(&s.v[3]);
  cr_expect_eq(e.kind, WSG_ENV_UNSUBSCRIBE);
  cr_expect_eq(memcmp(e.channel, "room:y", 6), 0);
  cr_expect_eq(s.v[3].rec, 3);
  cr_expect_eq(decode(&s.v[4]).kind, WSG_ENV_UNSUBSCRIBE);
  cr_expect_eq(st.deliveries, 0, "subscriptions are not deliveries");
  sink_free(&s);
  proc_routes_finish(&rt);
  proc_outbox_destroy(b);
}

/* A user without connections: nothing to subscribe, counted like an undeliverable send. */
Test(proc_outbox, subscribe_offline_user_emits_nothing) {
  proc_outbox *b = proc_outbox_create();
  proc_strref u = {"u1", 2};
  cr_assert_eq(proc_outbox_chsub(b, 0, NULL, &u, 1, "a", 1, true), 0);
  proc_routes rt;
  routes_alloc(&rt, 1, 1);
  set_user(&rt, 0, NULL, NULL, 0);
  sink s = {0};
  proc_emit_stats st = {0};
  cr_assert_eq(proc_outbox_emit(b, &rt, 1000000, 1, collect, &s, &st), 0);
  cr_expect_eq(s.n, 0);
  cr_expect_eq(st.undeliverable, 1);
  proc_routes_finish(&rt);
  proc_outbox_destroy(b);
}
