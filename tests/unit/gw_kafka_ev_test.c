/*
 * Unit tests of gw_kafka_ev (--outbound-consume loop) without a broker: a producer handle whose
 * log lines go to a queue of ours (log.queue), served on a libev loop. Events must reach `serve`
 * through librdkafka's pipe write, before the safety-net timer's first tick (0.25 s), and serving
 * stops with gw_kafka_ev_stop.
 *
 * Threads: Criterion's worker (the loop) and librdkafka's threads (they log).
 */
#include <criterion/criterion.h>
#include <ev.h>
#include <librdkafka/rdkafka.h>

#include "gw_kafka_ev.h"

typedef struct {
  rd_kafka_queue_t *q; /* borrowed: gw_kafka_ev owns it */
  int serves, events;
} served;

static bool serve(void *arg) {
  served *s = arg;
  s->serves++;
  rd_kafka_event_t *ev;
  while ((ev = rd_kafka_queue_poll(s->q, 0)) != NULL) {
    s->events++;
    rd_kafka_event_destroy(ev);
  }
  return false;
}

static void deadline_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)w;
  (void)revents;
  ev_break(loop, EVBREAK_ALL);
}

/* A producer that keeps logging (it cannot reach its broker) into a queue of ours. */
static rd_kafka_t *logging_producer(void) {
  char err[256];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  cr_assert_eq(rd_kafka_conf_set(conf, "bootstrap.servers", "127.0.0.1:1", err, sizeof err),
               RD_KAFKA_CONF_OK, "%s", err);
  cr_assert_eq(rd_kafka_conf_set(conf, "log.queue", "true", err, sizeof err), RD_KAFKA_CONF_OK);
  cr_assert_eq(rd_kafka_conf_set(conf, "debug", "broker,generic", err, sizeof err),
               RD_KAFKA_CONF_OK);
  cr_assert_eq(rd_kafka_conf_set(conf, "reconnect.backoff.ms", "10", err, sizeof err),
               RD_KAFKA_CONF_OK);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  cr_assert_not_null(rk, "%s", err);
  return rk;
}

Test(gw_kafka_ev, the_pipe_wakes_the_loop_before_the_safety_net) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  rd_kafka_t *rk = logging_producer();
  served s = {.q = rd_kafka_queue_new(rk)};
  char err[256];
  gw_kafka_ev *e = gw_kafka_ev_create(loop, s.q, serve, &s, err, sizeof err);
  cr_assert_not_null(e, "%s", err);
  cr_assert_eq(rd_kafka_set_log_queue(rk, s.q), RD_KAFKA_RESP_ERR_NO_ERROR);
  ev_timer deadline;
  ev_timer_init(&deadline, deadline_cb, 0.2, 0.);
  ev_timer_start(loop, &deadline);
  ev_run(loop, 0);
  cr_assert_gt(s.events, 0, "no log event served within 0.2 s (%d serves)", s.serves);
  cr_assert_gt(s.serves, 0);
  /* Stopped: nothing is served any more, although librdkafka keeps logging. */
  gw_kafka_ev_stop(e);
  int before = s.serves;
  ev_timer_set(&deadline, 0.4, 0.);
  ev_timer_start(loop, &deadline);
  ev_run(loop, 0);
  cr_assert_eq(s.serves, before);
  rd_kafka_set_log_queue(rk, NULL);
  gw_kafka_ev_destroy(e);
  rd_kafka_destroy(rk);
  ev_loop_destroy(loop);
}

Test(gw_kafka_ev, destroy_null_is_a_no_op) {
  gw_kafka_ev_stop(NULL);
  gw_kafka_ev_destroy(NULL);
}
