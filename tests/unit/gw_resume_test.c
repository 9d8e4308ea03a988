/*
 * Unit tests for gw_resume: the per-user sequence of a resumable connection, driven through fake
 * ops (a send queue of our own, replay reads recorded and answered by hand, pages built here) with
 * injected time. What the client would see is read back from the fake send queue: each frame's
 * tag (its q, 0 for a reply, GW_RESUME_CONTROL for "wsgate\n{...}") and payload.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "gw_resume.h"
#include "gw_server.h"

/* One fake connection: what gw_resume asked of it. */
typedef struct {
  gw_sendq q;
  int reads;
  bool last_position_only;
  uint64_t last_after;
  int read_rc;       /* what the next read returns */
  int registers;     /* register_conn calls */
  int register_rc;   /* what register_conn returns */
  bool queue_refuse; /* the next queue closes the connection (over its limits) */
  int closed;        /* close code, 0 while open */
  bool close_urgent;
  bool synced;
  uint64_t queued_over; /* added to queued_bytes, to fake a full send queue */
} fake_conn;

static int fake_read(void *arg, void *conn, bool position_only, uint64_t after) {
  (void)arg;
  fake_conn *c = conn;
  c->reads++;
  c->last_position_only = position_only;
  c->last_after = after;
  return c->read_rc;
}

static int fake_register(void *arg, void *conn) {
  (void)arg;
  fake_conn *c = conn;
  c->registers++;
  return c->register_rc;
}

static bool fake_queue(void *arg, void *conn, gw_msg *m, uint64_t tag, uint64_t now_ms) {
  (void)arg;
  fake_conn *c = conn;
  if (c->queue_refuse) {
    c->closed = GW_CLOSE_SLOW_CONSUMER;
    return false;
  }
  static const gw_sendq_limits nolimit = {0, 0, 0};
  cr_assert_eq(gw_sendq_push_tagged(&c->q, m, tag, &nolimit, now_ms), GW_SENDQ_OK);
  return true;
}

static void fake_close(void *arg, void *conn, int code, bool urgent) {
  (void)arg;
  fake_conn *c = conn;
  c->closed = code;
  c->close_urgent = urgent;
}

static void fake_synced(void *arg, void *conn) {
  (void)arg;
  ((fake_conn *)conn)->synced = true;
}

static uint64_t fake_queued_bytes(void *arg, void *conn) {
  (void)arg;
  fake_conn *c = conn;
  return gw_sendq_bytes(&c->q) + c->queued_over;
}

/* A page's entries are ours: priv points at an array of gw_replay_entry. */
static void fake_page_entry(const gw_replay_page *page, size_t i, gw_replay_entry *out) {
  *out = ((const gw_replay_entry *)page->priv)[i];
}

static const gw_resume_ops ops = {
    .read = fake_read,
    .register_conn = fake_register,
    .queue = fake_queue,
    .close = fake_close,
    .synced = fake_synced,
    .queued_bytes = fake_queued_bytes,
    .page_entry = fake_page_entry,
};

static wsg_metrics *metrics;
static wsg_log_ratelimit rl;
static gw_resume r;
static fake_conn conn;
static gw_seq *sq;
static const uint64_t NOW = 1000;

static void setup(void) {
  memset(&conn, 0, sizeof conn);
  memset(&r, 0, sizeof r);
  metrics = wsg_metrics_create();
  cr_assert_not_null(metrics);
  r.ops = &ops;
  r.arg = NULL;
  r.held_limits.hard_bytes = 1 << 20;
  r.room = 4096;
  r.sendq_hard = 1 << 20;
  r.rl = &rl;
  r.m_resumes_complete = wsg_metrics_counter(metrics, "resumes", "h", "result=\"complete\"");
  r.m_resumes_incomplete = wsg_metrics_counter(metrics, "resumes", "h", "result=\"incomplete\"");
  r.m_replay_reads = wsg_metrics_counter(metrics, "reads", "h", NULL);
  r.m_replayed = wsg_metrics_counter(metrics, "replayed", "h", NULL);
  r.m_gaps = wsg_metrics_counter(metrics, "gaps", "h", NULL);
  r.m_dups = wsg_metrics_counter(metrics, "dups", "h", NULL);
  r.m_too_big = wsg_metrics_counter(metrics, "too_big", "h", NULL);
  r.m_conns = wsg_metrics_gauge(metrics, "conns", "h", NULL);
  sq = NULL;
}

static void teardown(void) {
  gw_resume_free(&r, sq);
  gw_sendq_clear(&conn.q);
  cr_assert_eq(wsg_gauge_get(r.m_conns), 0, "every started sequence is freed");
  wsg_metrics_destroy(metrics);
}

static gw_msg *msg(const char *s) {
  gw_msg *m = gw_msg_create(s, strlen(s), false);
  cr_assert_not_null(m);
  return m;
}

static void deliver(uint64_t q, const char *payload) {
  gw_msg *m = msg(payload);
  gw_resume_deliver(&r, sq, m, q, NOW);
  gw_msg_unref(m);
}

static void answer(const gw_replay_entry *entries, size_t n, bool more, uint64_t counter) {
  gw_replay_page page = {.counter = counter, .more = more, .count = n, .priv = entries};
  gw_resume_on_replay(&r, sq, GW_REG_OK, &page, NOW);
}

#define ENTRY(q_, s_)                                                                              \
  { .q = (q_), .binary = false, .data = (const uint8_t *)(s_), .len = sizeof(s_) - 1 }

/* The next frame the client would get: its tag, and its payload in buf. */
static uint64_t next_frame(char *buf, size_t cap) {
  cr_assert(!gw_sendq_empty(&conn.q), "a frame is queued");
  gw_msg *m = gw_sendq_peek(&conn.q);
  uint64_t tag = gw_sendq_peek_tag(&conn.q);
  size_t n = gw_msg_len(m) < cap - 1 ? gw_msg_len(m) : cap - 1;
  memcpy(buf, gw_msg_payload(m), n);
  buf[n] = '\0';
  gw_sendq_pop(&conn.q);
  return tag;
}

static void expect_frame(uint64_t tag, const char *payload) {
  char buf[512];
  uint64_t got = next_frame(buf, sizeof buf);
  cr_assert_eq(got, tag, "frame tag %llu, expected %llu (payload %s)", (unsigned long long)got,
               (unsigned long long)tag, buf);
  cr_assert_str_eq(buf, payload);
}

static void expect_empty(void) {
  cr_assert(gw_sendq_empty(&conn.q), "no other frame is queued");
}

/* A connection with ?resume=<from>, registered, whose first read found nothing new: in step. */
static void live_at(uint64_t from) {
  cr_assert_eq(gw_resume_start(&r, &conn, 7, "alice", from, NOW, &sq), 0);
  gw_resume_on_registered(&r, sq, NOW);
  answer(NULL, 0, false, from);
  char json[200];
  snprintf(json, sizeof json,
           "{\"type\":\"sync\",\"resume\":%llu,\"last\":%llu,\"replayed\":0,\"complete\":true}",
           (unsigned long long)from, (unsigned long long)from);
  expect_frame(GW_RESUME_CONTROL, json);
  expect_empty();
  cr_assert(conn.synced);
}

TestSuite(resume, .init = setup, .fini = teardown);

Test(resume, free_null_is_a_noop) {
  gw_resume_free(&r, NULL);
}

Test(resume, a_fresh_connection_reads_its_position_then_catches_up_after_registering) {
  cr_assert_eq(gw_resume_start(&r, &conn, 7, "alice", 0, NOW, &sq), 0);
  cr_assert_eq(conn.reads, 1);
  cr_assert(conn.last_position_only, "the position is read before the registration");
  cr_assert(gw_resume_registers_later(sq), "the server does not register it yet");
  cr_assert_eq(wsg_gauge_get(r.m_conns), 1);
  cr_assert_eq(conn.registers, 0, "registered only once the position is known");
  answer(NULL, 0, false, 500);
  cr_assert_eq(conn.registers, 1, "the position known, it registers");
  cr_assert(!gw_resume_registers_later(sq));
  cr_assert_eq(conn.reads, 1, "nothing is read before the registration");
  gw_resume_on_registered(&r, sq, NOW);
  cr_assert_eq(conn.reads, 2);
  cr_assert(!conn.last_position_only);
  cr_assert_eq(conn.last_after, 500);
  cr_assert(!conn.synced, "requests wait for the sync");
  answer(NULL, 0, false, 500);
  expect_frame(GW_RESUME_CONTROL,
               "{\"type\":\"sync\",\"resume\":null,\"last\":500,\"replayed\":0,\"complete\":true}");
  cr_assert(conn.synced);
  cr_assert_eq(gw_resume_last(sq), 500);
  cr_assert_eq(wsg_counter_get(r.m_replay_reads), 2);
  /* A fresh connection is not a resume: neither complete nor incomplete is counted. */
  cr_assert_eq(wsg_counter_get(r.m_resumes_complete), 0);
  cr_assert_eq(wsg_counter_get(r.m_resumes_incomplete), 0);
}

Test(resume, in_order_delivers_go_straight_to_the_send_queue) {
  live_at(100);
  int reads = conn.reads;
  deliver(101, "a");
  deliver(0, "reply");
  deliver(102, "b");
  expect_frame(101, "a");
  expect_frame(0, "reply");
  expect_frame(102, "b");
  expect_empty();
  cr_assert_eq(conn.reads, reads, "in step: nothing is read from the stream");
  cr_assert_eq(gw_resume_last(sq), 102);
  cr_assert_eq(conn.closed, 0);
}

Test(resume, a_deliver_ahead_of_its_turn_waits_for_the_missing_ones) {
  live_at(100);
  int reads = conn.reads;
  deliver(102, "b"); /* 101 was sent by another processor and has not arrived */
  expect_empty();
  cr_assert_eq(conn.reads, reads + 1, "the missing one is read from the stream");
  cr_assert_eq(conn.last_after, 100);
  deliver(103, "c");   /* arrives while reading: waits too */
  deliver(0, "reply"); /* so does a reply: it must not overtake */
  cr_assert_eq(conn.reads, reads + 1, "one read at a time");
  expect_empty();
  /* The read ran before 103 was stored: the stream ends at 102. */
  const gw_replay_entry page[] = {ENTRY(101, "a"), ENTRY(102, "b")};
  answer(page, 2, false, 102);
  expect_frame(101, "a");
  expect_frame(102, "b");
  expect_frame(103, "c");
  expect_frame(0, "reply");
  expect_empty();
  cr_assert_eq(gw_resume_last(sq), 103);
  cr_assert_eq(wsg_counter_get(r.m_dups), 1, "102 came twice (stream and Kafka): sent once");
  cr_assert_eq(wsg_counter_get(r.m_gaps), 0);
  /* In step again: the next one goes straight through. */
  deliver(104, "d");
  expect_frame(104, "d");
  cr_assert_eq(conn.reads, reads + 1);
}

Test(resume, late_duplicates_are_dropped) {
  live_at(100);
  deliver(101, "a");
  deliver(102, "b");
  deliver(101, "a again");
  deliver(100, "old");
  expect_frame(101, "a");
  expect_frame(102, "b");
  expect_empty();
  cr_assert_eq(wsg_counter_get(r.m_dups), 2);
  /* Entries of a page the client already has are skipped as well. */
  deliver(104, "d");
  const gw_replay_entry page[] = {ENTRY(101, "a"), ENTRY(102, "b"), ENTRY(103, "c"),
                                  ENTRY(104, "d")};
  answer(page, 4, false, 104);
  expect_frame(103, "c");
  expect_frame(104, "d");
  expect_empty();
}

Test(resume, a_catch_up_replays_pages_then_sends_a_complete_sync) {
  cr_assert_eq(gw_resume_start(&r, &conn, 7, "alice", 100, NOW, &sq), 0);
  cr_assert_eq(conn.reads, 0, "with ?resume= the position is known");
  gw_resume_on_registered(&r, sq, NOW);
  cr_assert_eq(conn.reads, 1);
  cr_assert_eq(conn.last_after, 100);
  deliver(104, "d"); /* sent while catching up: waits */
  const gw_replay_entry p1[] = {ENTRY(101, "a"), ENTRY(102, "b")};
  answer(p1, 2, true, 104);
  cr_assert_eq(conn.reads, 2, "the next page is read at once while the queue has room");
  cr_assert_eq(conn.last_after, 102);
  cr_assert(!conn.synced);
  const gw_replay_entry p2[] = {ENTRY(103, "c"), ENTRY(104, "d")};
  answer(p2, 2, false, 104);
  expect_frame(101, "a");
  expect_frame(102, "b");
  expect_frame(103, "c");
  expect_frame(104, "d");
  expect_frame(GW_RESUME_CONTROL,
               "{\"type\":\"sync\",\"resume\":100,\"last\":104,\"replayed\":4,\"complete\":true}");
  expect_empty();
  cr_assert(conn.synced);
  cr_assert_eq(wsg_counter_get(r.m_resumes_complete), 1);
  cr_assert_eq(wsg_counter_get(r.m_replayed), 4);
  cr_assert_eq(wsg_counter_get(r.m_dups), 1, "104 waited, then came from the stream first");
}

Test(resume, the_next_page_waits_for_room_in_the_send_queue) {
  cr_assert_eq(gw_resume_start(&r, &conn, 7, "alice", 100, NOW, &sq), 0);
  gw_resume_on_registered(&r, sq, NOW);
  conn.queued_over = r.room + 1; /* the client reads slowly */
  const gw_replay_entry p1[] = {ENTRY(101, "a")};
  answer(p1, 1, true, 102);
  cr_assert_eq(conn.reads, 1, "no read while the queue is full");
  cr_assert(!gw_resume_wants_room(&r, sq, r.room + 1));
  cr_assert(gw_resume_wants_room(&r, sq, r.room));
  conn.queued_over = 0;
  gw_resume_on_room(&r, sq, NOW);
  cr_assert_eq(conn.reads, 2);
  cr_assert_eq(conn.last_after, 101);
  cr_assert(!gw_resume_wants_room(&r, sq, 0), "reading: no second read");
  const gw_replay_entry p2[] = {ENTRY(102, "b")};
  answer(p2, 1, false, 102);
  expect_frame(101, "a");
  expect_frame(102, "b");
  expect_frame(GW_RESUME_CONTROL,
               "{\"type\":\"sync\",\"resume\":100,\"last\":102,\"replayed\":2,\"complete\":true}");
}

Test(resume, messages_gone_before_the_sync_make_it_incomplete) {
  cr_assert_eq(gw_resume_start(&r, &conn, 7, "alice", 100, NOW, &sq), 0);
  gw_resume_on_registered(&r, sq, NOW);
  /* 101..104 are older than the window: the stream starts at 105. */
  const gw_replay_entry page[] = {ENTRY(105, "e")};
  answer(page, 1, false, 105);
  expect_frame(105, "e");
  expect_frame(GW_RESUME_CONTROL,
               "{\"type\":\"sync\",\"resume\":100,\"last\":105,\"replayed\":1,\"complete\":false}");
  expect_empty();
  cr_assert_eq(wsg_counter_get(r.m_gaps), 0, "before the sync, the sync itself says so");
  cr_assert_eq(wsg_counter_get(r.m_resumes_incomplete), 1);
}

Test(resume, a_position_the_sequence_never_reached_starts_over_incomplete) {
  cr_assert_eq(gw_resume_start(&r, &conn, 7, "alice", 900, NOW, &sq), 0);
  gw_resume_on_registered(&r, sq, NOW);
  answer(NULL, 0, false, 300); /* Redis lost the counter: it is behind the client */
  expect_frame(GW_RESUME_CONTROL,
               "{\"type\":\"sync\",\"resume\":900,\"last\":300,\"replayed\":0,\"complete\":false}");
  deliver(301, "x");
  expect_frame(301, "x");
}

Test(resume, messages_gone_after_the_sync_are_reported_as_a_gap) {
  live_at(100);
  deliver(104, "d"); /* 101..103 missing: read them */
  cr_assert_eq(conn.last_after, 100);
  /* Trimmed from the stream meanwhile: only 103 and 104 are left. */
  const gw_replay_entry page[] = {ENTRY(103, "c"), ENTRY(104, "d")};
  answer(page, 2, false, 104);
  expect_frame(GW_RESUME_CONTROL, "{\"type\":\"gap\",\"from\":101,\"to\":102}");
  expect_frame(103, "c");
  expect_frame(104, "d");
  expect_empty();
  cr_assert_eq(wsg_counter_get(r.m_gaps), 1);
  /* The counter assigned more than the stream holds: the rest is a gap too. */
  deliver(107, "g");
  answer(NULL, 0, false, 106);
  expect_frame(GW_RESUME_CONTROL, "{\"type\":\"gap\",\"from\":105,\"to\":106}");
  expect_frame(107, "g");
  expect_empty();
  cr_assert_eq(gw_resume_last(sq), 107);
  cr_assert_eq(conn.closed, 0);
}

Test(resume, a_transient_registry_failure_closes_with_try_again) {
  cr_assert_eq(gw_resume_start(&r, &conn, 7, "alice", 100, NOW, &sq), 0);
  gw_resume_on_registered(&r, sq, NOW);
  gw_resume_on_replay(&r, sq, GW_REG_NOT_CONNECTED, NULL, NOW);
  cr_assert_eq(conn.closed, GW_CLOSE_TRY_AGAIN, "the client reconnects and resumes");
  cr_assert(!conn.close_urgent);
  cr_assert(!conn.synced);
  expect_empty();
}

Test(resume, a_broken_reply_closes_with_internal_error) {
  cr_assert_eq(gw_resume_start(&r, &conn, 7, "alice", 100, NOW, &sq), 0);
  gw_resume_on_registered(&r, sq, NOW);
  gw_resume_on_replay(&r, sq, GW_REG_REPLY, NULL, NOW);
  cr_assert_eq(conn.closed, GW_CLOSE_INTERNAL);
}

Test(resume, a_read_that_cannot_be_issued_closes) {
  live_at(100);
  conn.read_rc = GW_REG_BUSY;
  deliver(102, "b");
  cr_assert_eq(conn.closed, GW_CLOSE_TRY_AGAIN);
  expect_empty();
}

Test(resume, a_fresh_connection_that_cannot_register_is_closed_with_1013) {
  cr_assert_eq(gw_resume_start(&r, &conn, 7, "alice", 0, NOW, &sq), 0);
  conn.register_rc = GW_REG_NOT_CONNECTED;
  answer(NULL, 0, false, 500);
  cr_assert_eq(conn.registers, 1);
  cr_assert_eq(conn.closed, GW_CLOSE_TRY_AGAIN);
  cr_assert_eq(conn.reads, 1, "nothing more is read");
}

Test(resume, a_fresh_connection_whose_position_cannot_be_read_is_refused) {
  conn.read_rc = GW_REG_NOT_CONNECTED;
  cr_assert_eq(gw_resume_start(&r, &conn, 7, "alice", 0, NOW, &sq), -1);
  cr_assert_null(sq);
  cr_assert_eq(wsg_gauge_get(r.m_conns), 0);
}

Test(resume, a_message_larger_than_the_hard_limit_is_skipped_not_queued) {
  live_at(100);
  r.sendq_hard = GW_SENDQ_MSG_OVERHEAD + 10;
  deliver(101, "far too long for the limit");
  deliver(102, "ok");
  expect_frame(102, "ok");
  expect_empty();
  cr_assert_eq(wsg_counter_get(r.m_too_big), 1);
  cr_assert_eq(wsg_counter_get(r.m_gaps), 0, "skipped, not lost: no gap");
  cr_assert_eq(gw_resume_last(sq), 102);
  cr_assert_eq(conn.closed, 0);
}

Test(resume, a_reply_that_cannot_wait_closes_a_connection_too_far_behind) {
  live_at(100);
  r.held_limits.hard_bytes = GW_SENDQ_MSG_OVERHEAD + 8;
  deliver(102, "b");   /* waits */
  deliver(0, "reply"); /* does not fit beside it */
  cr_assert_eq(conn.closed, GW_CLOSE_SLOW_CONSUMER);
  cr_assert(conn.close_urgent);
}
