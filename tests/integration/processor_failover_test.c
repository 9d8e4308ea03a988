/*
 * At-least-once across processors: while a stream of envelopes flows, processors join, leave and
 * crash. Every envelope acknowledged to its producer gets its reply (nothing lost); a graceful
 * hand-over (a new member's cooperative rebalance, a SIGTERM) produces no duplicate at all, because
 * partitions are released only after their replies are acknowledged and committed; a kill -9
 * produces duplicates only for what the dead processor had not committed, and they are counted and
 * reported.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"
#include "harness_kafka.h"

#define USERS 100

typedef struct {
  itest_cluster c;
  rd_kafka_t *prod;
  itest_reader out;
  int total;      /* produced so far */
  uint8_t *seen;  /* replies per message id (saturating) */
  int distinct;   /* ids with at least one reply */
  int duplicates; /* replies beyond the first */
} stream;

static void stream_init(stream *s, int max) {
  itest_cluster_init(&s->c, 8, 4, false);
  s->prod = itest_producer();
  itest_reader_open(&s->out, s->c.out_topic, s->c.out_partitions);
  s->seen = calloc((size_t)max, 1);
  s->total = s->distinct = s->duplicates = 0;
}

static void stream_finish(stream *s) {
  itest_reader_close(&s->out);
  rd_kafka_destroy(s->prod);
  free(s->seen);
}

/* Produces messages [total, total + n) and waits for their acknowledgements. */
static void produce(stream *s, int n) {
  char user[16], data[24];
  for (int i = s->total; i < s->total + n; i++) {
    int u = i % USERS;
    snprintf(user, sizeof(user), "user%03d", u);
    int len = snprintf(data, sizeof(data), "m%d", i);
    wsg_envelope env =
        itest_msg(user, 5000 + (uint64_t)u, "gw-x", (uint32_t)(u % 4), data, (size_t)len, false);
    itest_produce(s->prod, &s->c, &env);
  }
  itest_flush(s->prod);
  s->total += n;
}

/* Counts one reply. */
static void count_reply(stream *s, rd_kafka_message_t *m) {
  wsg_envelope e;
  cr_assert_eq(wsg_envelope_decode(&e, m->payload, m->len, NULL), WSG_ENV_OK);
  cr_assert(e.data_len > 1 && e.data[0] == 'm');
  char num[24];
  snprintf(num, sizeof(num), "%.*s", (int)e.data_len - 1, (const char *)e.data + 1);
  int id = atoi(num);
  cr_assert(id >= 0 && id < s->total, "a reply to a message never sent: %d", id);
  if (s->seen[id] == 0)
    s->distinct++;
  else
    s->duplicates++;
  if (s->seen[id] < 255)
    s->seen[id]++;
  rd_kafka_message_destroy(m);
}

/* Reads replies until `want` distinct messages have one (fails the test at the deadline). */
static void read_until(stream *s, int want, int timeout_ms) {
  uint64_t deadline = itest_now_ms() + (uint64_t)timeout_ms;
  while (s->distinct < want) {
    uint64_t now = itest_now_ms();
    cr_assert_lt(now, deadline, "only %d of %d messages got a reply", s->distinct, want);
    rd_kafka_message_t *m = itest_reader_next(&s->out, (int)(deadline - now));
    if (m)
      count_reply(s, m);
  }
}

/* Reads whatever else arrives until the topic has been quiet for quiet_ms (late duplicates). */
static void drain(stream *s, int quiet_ms) {
  rd_kafka_message_t *m;
  while ((m = itest_reader_next(&s->out, quiet_ms)) != NULL)
    count_reply(s, m);
}

static bool nothing_uncommitted(void *arg) {
  return itest_uncommitted(arg) == 0;
}

static double assigned(const itest_processor *p) {
  return itest_metric(p->http_port, "wsgate_processor_assigned_partitions");
}

typedef struct {
  const itest_processor *a, *b;
  int want_a, want_b; /* -1: at least one */
} split;

static bool matches(double have, int want) {
  return want < 0 ? have >= 1 : have == want;
}

/* All 8 partitions owned, split as asked. */
static bool assignment_is(void *arg) {
  split *s = arg;
  double a = s->a ? assigned(s->a) : 0, b = s->b ? assigned(s->b) : 0;
  return a + b == 8 && (!s->a || matches(a, s->want_a)) && (!s->b || matches(b, s->want_b));
}

Test(processor_failover, graceful_handover_loses_nothing_and_duplicates_nothing, .timeout = 240,
     .fini = itest_fini) {
  stream s;
  stream_init(&s, 40000);
  itest_processor a, b;
  itest_processor_start(&a, &s.c, "proc-a", "echo", NULL);
  split only_a = {.a = &a, .want_a = 8};
  cr_assert(itest_wait_until(assignment_is, &only_a, ITEST_TIMEOUT_MS), "A owns all 8 partitions");

  produce(&s, 10000);
  read_until(&s, 2000, ITEST_TIMEOUT_MS);
  /* B joins mid-stream: cooperative-sticky moves some of A's partitions; A waits for their
   * replies, commits them, and only then lets them go. */
  itest_processor_start(&b, &s.c, "proc-b", "echo", NULL);
  split both = {.a = &a, .b = &b, .want_a = -1, .want_b = -1};
  cr_assert(itest_wait_until(assignment_is, &both, ITEST_TIMEOUT_MS),
            "the group settles with partitions on both");
  produce(&s, 10000);
  read_until(&s, 12000, ITEST_TIMEOUT_MS);
  /* A leaves with SIGTERM mid-stream: it finishes, commits and leaves; B takes the rest. */
  int status = itest_processor_stop(&a, SIGTERM, 60000);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "A exits 0, status %d", status);
  produce(&s, 10000);
  read_until(&s, s.total, 90000);
  cr_assert(itest_wait_until(nothing_uncommitted, &s.c, ITEST_TIMEOUT_MS),
            "everything is committed in the end");
  /* Late duplicates would arrive after the last first reply: give them a moment to show. */
  drain(&s, 2000);
  cr_log_info("graceful hand-over: %d messages, %d duplicates", s.total, s.duplicates);
  fprintf(stderr, "graceful hand-over: %d messages, %d duplicates\n", s.total, s.duplicates);
  cr_assert_eq(s.duplicates, 0, "a graceful hand-over handles nothing twice");
  cr_assert_geq(itest_metric(b.http_port, "wsgate_processor_rebalances_total{kind=\"assign\"}"), 2);
  itest_processor_stop(&b, SIGTERM, 60000);
  itest_processor_cleanup(&a);
  itest_processor_cleanup(&b);
  stream_finish(&s);
}

Test(processor_failover, kill_9_loses_nothing_and_counts_duplicates, .timeout = 240,
     .fini = itest_fini) {
  stream s;
  stream_init(&s, 40000);
  itest_processor a, b;
  itest_processor_start(&a, &s.c, "proc-a", "echo", NULL);
  itest_processor_start(&b, &s.c, "proc-b", "echo", NULL);
  split both = {.a = &a, .b = &b, .want_a = -1, .want_b = -1};
  cr_assert(itest_wait_until(assignment_is, &both, ITEST_TIMEOUT_MS),
            "the group settles with partitions on both");
  double a_parts = assigned(&a);
  cr_assert_gt(a_parts, 0);

  produce(&s, 15000);
  read_until(&s, 3000, ITEST_TIMEOUT_MS);
  /* Mid-stream, A dies without a word: nothing committed since its last commit is lost to the
   * group, which hands A's partitions to B after the session timeout; B starts from A's last
   * committed offsets and handles those records again. */
  int status = itest_processor_stop(&a, SIGKILL, 10000);
  cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  produce(&s, 15000);
  read_until(&s, s.total, 120000);
  split only_b = {.b = &b, .want_b = 8};
  cr_assert(itest_wait_until(assignment_is, &only_b, ITEST_TIMEOUT_MS), "B owns all partitions");
  cr_assert(itest_wait_until(nothing_uncommitted, &s.c, ITEST_TIMEOUT_MS),
            "everything is committed in the end");
  drain(&s, 2000);
  cr_log_info("kill -9 of 1 of 2 processors: %d messages, every one answered, %d duplicates "
              "(A owned %.0f of 8 partitions)",
              s.total, s.duplicates, a_parts);
  fprintf(stderr,
          "kill -9 of 1 of 2 processors: %d messages, every one answered, %d duplicates "
          "(A owned %.0f of 8 partitions)\n",
          s.total, s.duplicates, a_parts);
  itest_processor_stop(&b, SIGTERM, 60000);
  itest_processor_cleanup(&a);
  itest_processor_cleanup(&b);
  stream_finish(&s);
}
