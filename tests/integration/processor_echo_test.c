/*
 * wsgate-processor driven directly through Kafka (no gateway): envelopes produced to the inbound
 * topic come back as deliver envelopes on the origin's slot partition; every offset is committed
 * once its reply is acknowledged; bad input is counted, dead-lettered with its reason and skipped;
 * SIGTERM finishes, commits and exits 0; an invalid configuration exits 2.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"
#include "harness_kafka.h"

static bool nothing_uncommitted(void *arg) {
  return itest_uncommitted(arg) == 0;
}

static const char *gw_of(int u) {
  return u % 2 ? "gw-odd" : "gw-even";
}

Test(processor_echo, round_trip_order_commits_and_clean_stop, .fini = itest_fini) {
  itest_cluster c;
  itest_cluster_init(&c, 4, 4, false);
  itest_processor p;
  itest_processor_start(&p, &c, "echo", "echo", NULL);

  enum { USERS = 20, PER_USER = 10 };
  rd_kafka_t *prod = itest_producer();
  char user[16], data[32];
  for (int n = 0; n < PER_USER; n++) {
    for (int u = 0; u < USERS; u++) {
      snprintf(user, sizeof(user), "user%02d", u);
      int len = snprintf(data, sizeof(data), "%s-%03d", user, n);
      wsg_envelope env = itest_msg(user, 1000 + (uint64_t)u, gw_of(u), (uint32_t)(u % 4), data,
                                   (size_t)len, n % 3 == 0);
      env.seq = (uint64_t)n;
      env.fields |= WSG_F_SEQ;
      itest_produce(prod, &c, &env);
    }
  }
  itest_flush(prod);

  itest_reader rd;
  itest_reader_open(&rd, c.out_topic, c.out_partitions);
  int next[USERS] = {0};
  for (int got = 0; got < USERS * PER_USER; got++) {
    rd_kafka_message_t *m = itest_reader_next(&rd, ITEST_TIMEOUT_MS);
    cr_assert_not_null(m, "only %d of %d echoes arrived", got, USERS * PER_USER);
    wsg_envelope e;
    cr_assert_eq(wsg_envelope_decode(&e, m->payload, m->len, NULL), WSG_ENV_OK);
    cr_assert_eq(e.kind, WSG_ENV_DELIVER);
    int u = (int)(e.conn - 1000);
    cr_assert(u >= 0 && u < USERS);
    cr_assert_eq(m->partition, u % 4, "the reply goes to the origin's slot partition");
    cr_assert_eq(e.slot, (uint32_t)(u % 4));
    cr_assert_eq(e.gateway_len, strlen(gw_of(u)));
    cr_assert_eq(memcmp(e.gateway, gw_of(u), e.gateway_len), 0);
    int len = snprintf(data, sizeof(data), "user%02d-%03d", u, next[u]);
    cr_assert_eq(e.data_len, (size_t)len);
    cr_assert_eq(memcmp(e.data, data, (size_t)len), 0, "per-user order is kept");
    cr_assert_eq(e.binary, next[u] % 3 == 0);
    next[u]++;
    rd_kafka_message_destroy(m);
  }
  cr_assert(itest_wait_until(nothing_uncommitted, &c, ITEST_TIMEOUT_MS),
            "every handled offset is committed");
  cr_assert_eq(itest_metric(p.http_port, "wsgate_processor_consumed_total"), USERS * PER_USER);
  cr_assert_eq(itest_metric(p.http_port, "wsgate_processor_processed_total{result=\"ok\"}"),
               USERS * PER_USER);
  cr_assert_eq(itest_metric(p.http_port, "wsgate_processor_produced_total{topic=\"outbound\"}"),
               USERS * PER_USER);
  cr_assert_eq(itest_http_get(p.http_port, "/healthz", NULL, 0), 200);

  int status = itest_processor_stop(&p, SIGTERM, 30000);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "SIGTERM: exit status %d", status);
  char *log = malloc(1 << 20);
  cr_assert(itest_read_file(p.log, log, 1 << 20));
  cr_assert(strstr(log, "stopped cleanly"), "the processor says how it stopped");
  free(log);
  itest_reader_close(&rd);
  rd_kafka_destroy(prod);
  itest_processor_cleanup(&p);
}

static char *header(rd_kafka_message_t *m, const char *name, char *buf, size_t len) {
  rd_kafka_headers_t *h = NULL;
  cr_assert_eq(rd_kafka_message_headers(m, &h), RD_KAFKA_RESP_ERR_NO_ERROR, "no headers");
  const void *v;
  size_t n;
  cr_assert_eq(rd_kafka_header_get_last(h, name, &v, &n), RD_KAFKA_RESP_ERR_NO_ERROR,
               "no header %s", name);
  snprintf(buf, len, "%.*s", (int)n, (const char *)v);
  return buf;
}

Test(processor_echo, bad_input_is_counted_dead_lettered_and_skipped, .fini = itest_fini) {
  itest_cluster c;
  itest_cluster_init(&c, 2, 2, true);
  itest_processor p;
  itest_processor_start(&p, &c, "echo-dlq", "echo", NULL);
  rd_kafka_t *prod = itest_producer();

  const uint8_t garbage[] = {0xdd, 0xff, 0xff, 0xff, 0xff, 0x00};
  itest_produce_raw(prod, c.in_topic, "mallory", 7, garbage, sizeof(garbage));
  /* A well-formed envelope of a kind that does not belong on the inbound topic. */
  wsg_envelope deliver = {.kind = WSG_ENV_DELIVER,
                          .fields = WSG_F_GATEWAY | WSG_F_CONN | WSG_F_DATA,
                          .gateway = "gw",
                          .gateway_len = 2,
                          .conn = 5,
                          .data = (const uint8_t *)"x",
                          .data_len = 1};
  wsg_buf b;
  wsg_buf_init(&b, 0);
  cr_assert_eq(wsg_envelope_encode(&deliver, &b), WSG_ENV_OK);
  itest_produce_raw(prod, c.in_topic, "mallory", 7, b.data, b.len);
  wsg_buf_finish(&b);
  /* A text frame that is not UTF-8 cannot be echoed as text. */
  wsg_envelope bad_text = itest_msg("mallory", 6, "gw", 1, "\xc3\x28", 2, false);
  itest_produce(prod, &c, &bad_text);
  wsg_envelope good = itest_msg("alice", 7, "gw", 1, "still here", 10, false);
  itest_produce(prod, &c, &good);
  itest_flush(prod);

  itest_reader out;
  itest_reader_open(&out, c.out_topic, c.out_partitions);
  rd_kafka_message_t *m = itest_reader_next(&out, ITEST_TIMEOUT_MS);
  cr_assert_not_null(m, "the processor went on after the bad records");
  wsg_envelope e;
  cr_assert_eq(wsg_envelope_decode(&e, m->payload, m->len, NULL), WSG_ENV_OK);
  cr_assert_eq(e.conn, 7);
  rd_kafka_message_destroy(m);
  cr_assert_null(itest_reader_next(&out, 1000), "nothing is sent for bad input");

  itest_reader dlq;
  itest_reader_open(&dlq, c.dlq_topic, 1);
  const char *kinds[] = {"decode", "rejected", "rejected"};
  char hv[256];
  for (int i = 0; i < 3; i++) {
    m = itest_reader_next(&dlq, ITEST_TIMEOUT_MS);
    cr_assert_not_null(m, "dead letter %d missing", i);
    cr_assert_str_eq(header(m, "wsgate-error-kind", hv, sizeof(hv)), kinds[i]);
    cr_assert_str_eq(header(m, "wsgate-source-topic", hv, sizeof(hv)), c.in_topic);
    header(m, "wsgate-error", hv, sizeof(hv));
    cr_assert_gt(strlen(hv), 5, "a reason is given");
    cr_assert_eq(m->key_len, 7, "the record is kept as it was (key)");
    if (i == 0) {
      cr_assert_eq(m->len, sizeof(garbage));
      cr_assert_eq(memcmp(m->payload, garbage, sizeof(garbage)), 0, "the record as it was");
      cr_assert(strstr(hv, "not a valid envelope"), "%s", hv);
    }
    rd_kafka_message_destroy(m);
  }
  cr_assert(itest_wait_until(nothing_uncommitted, &c, ITEST_TIMEOUT_MS),
            "bad records are committed past, not retried forever");
  cr_assert_eq(itest_metric(p.http_port, "wsgate_processor_bad_envelopes_total"), 1);
  cr_assert_eq(itest_metric(p.http_port, "wsgate_processor_processed_total{result=\"rejected\"}"),
               2);
  cr_assert_eq(itest_metric(p.http_port, "wsgate_processor_produced_total{topic=\"dead_letter\"}"),
               3);
  int status = itest_processor_stop(&p, SIGTERM, 30000);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  itest_reader_close(&out);
  itest_reader_close(&dlq);
  rd_kafka_destroy(prod);
  itest_processor_cleanup(&p);
}

/* Runs the processor binary with argv and returns its exit status and log. */
static int run_config(const char *const *args, char *log, size_t loglen) {
  const char *argv[32] = {itest_bin("WSGATE_PROCESSOR_BIN")};
  size_t n = 1;
  for (size_t i = 0; args[i]; i++)
    argv[n++] = args[i];
  argv[n] = NULL;
  char *path = itest_log_path("processor-config.log");
  pid_t pid = itest_spawn(argv, NULL, path);
  int status = 0;
  cr_assert_eq(itest_stop(pid, 0, 20000, &status), 0, "did not exit");
  cr_assert(itest_read_file(path, log, loglen));
  free(path);
  return status;
}

Test(processor_echo, invalid_configuration_exits_2_with_a_message, .fini = itest_fini) {
  itest_require_kafka();
  static char log[1 << 16];
  const char *a1[] = {"--batch-max", "0", "-b", "127.0.0.1:1", NULL};
  int st = run_config(a1, log, sizeof(log));
  cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2);
  cr_assert(strstr(log, "--batch-max"), "%s", log);
  const char *a2[] = {"--handler", "nosuch", "-b", itest_kafka_bootstrap(), NULL};
  st = run_config(a2, log, sizeof(log));
  cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2, "an unknown handler is a configuration error");
  cr_assert(strstr(log, "built-ins: echo, chat"), "%s", log);
  const char *a3[] = {"--no-such-flag", NULL};
  st = run_config(a3, log, sizeof(log));
  cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2);
  const char *a4[] = {"--help", NULL};
  st = run_config(a4, log, sizeof(log));
  cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  cr_assert(strstr(log, "--dead-letter-topic"), "--help lists the options");
  const char *a5[] = {
      "-b", itest_kafka_bootstrap(), "--outbound-topic", "no-such-topic-here", "--http-port", "0",
      NULL};
  st = run_config(a5, log, sizeof(log));
  cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1, "a missing topic is not a config error");
  cr_assert(strstr(log, "no-such-topic-here does not exist"), "%s", log);
}

/* One echo through the processor; fails the test unless it comes back. */
static void echo_once(rd_kafka_t *prod, itest_reader *rd, const itest_cluster *c,
                      const char *text) {
  wsg_envelope env = itest_msg("carol", 9, "gw-c", 1, text, strlen(text), false);
  itest_produce(prod, c, &env);
  itest_flush(prod);
  for (;;) {
    rd_kafka_message_t *m = itest_reader_next(rd, ITEST_TIMEOUT_MS);
    cr_assert_not_null(m, "no echo of %s", text);
    wsg_envelope e;
    cr_assert_eq(wsg_envelope_decode(&e, m->payload, m->len, NULL), WSG_ENV_OK);
    bool match = e.data_len == strlen(text) && memcmp(e.data, text, e.data_len) == 0;
    rd_kafka_message_destroy(m);
    if (match)
      return;
  }
}

/* The eager protocol (an assignor like range) takes the rd_kafka_assign() path of the rebalance
 * callback; static membership (--group-instance-id) lets a restarted processor take its partitions
 * back under the same identity. */
Test(processor_echo, eager_assignor_and_static_membership, .timeout = 120, .fini = itest_fini) {
  itest_cluster c;
  itest_cluster_init(&c, 2, 2, false);
  char *id = itest_unique("static");
  const char *extra[] = {"-X", "partition.assignment.strategy=range", "--group-instance-id", id,
                         NULL};
  rd_kafka_t *prod = itest_producer();
  itest_reader rd;
  itest_reader_open(&rd, c.out_topic, c.out_partitions);
  for (int round = 0; round < 2; round++) {
    itest_processor p;
    itest_processor_start(&p, &c, "static", "echo", &(itest_daemon_opts){.extra = extra});
    echo_once(prod, &rd, &c, round == 0 ? "first life" : "second life");
    cr_assert(itest_wait_until(nothing_uncommitted, &c, ITEST_TIMEOUT_MS));
    int status = itest_processor_stop(&p, SIGTERM, 30000);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "round %d: status %d", round, status);
    itest_processor_cleanup(&p);
  }
  free(id);
  itest_reader_close(&rd);
  rd_kafka_destroy(prod);
}
