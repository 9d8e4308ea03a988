/*
 * gw_kafka_ev: a librdkafka queue served on the libev loop (see gw_kafka_ev.h).
 *
 * Threads: the loop thread only.
 */
#include "gw_kafka_ev.h"

#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The safety net's period: an event lost with a full pipe waits at most this long. */
#define FALLBACK_S 0.25

struct gw_kafka_ev {
  struct ev_loop *loop;
  rd_kafka_queue_t *q;
  gw_kafka_ev_serve_fn serve;
  void *arg;
  int pipefd[2];
  ev_io io_w;
  ev_timer fallback_w;
  ev_timer again_w; /* more was waiting: a 0 s timer, so the next iteration serves again after
                       the other events of this one (an ev_idle could starve under load) */
};

static void serve(gw_kafka_ev *e) {
  ev_timer_stop(e->loop, &e->again_w);
  if (e->serve(e->arg))
    ev_timer_start(e->loop, &e->again_w);
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents) {
  (void)loop;
  (void)revents;
  gw_kafka_ev *e = w->data;
  char buf[64];
  while (read(e->pipefd[0], buf, sizeof buf) > 0) {
  }
  serve(e);
}

static void fallback_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop;
  (void)revents;
  serve(w->data);
}

static void again_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop;
  (void)revents;
  serve(w->data);
}

gw_kafka_ev *gw_kafka_ev_create(struct ev_loop *loop, rd_kafka_queue_t *q, gw_kafka_ev_serve_fn fn,
                                void *arg, char *err, size_t errlen) {
  gw_kafka_ev *e = calloc(1, sizeof *e);
  if (!e) {
    snprintf(err, errlen, "out of memory");
    rd_kafka_queue_destroy(q);
    return NULL;
  }
  e->loop = loop;
  e->q = q;
  e->serve = fn;
  e->arg = arg;
  if (pipe2(e->pipefd, O_NONBLOCK | O_CLOEXEC) != 0) {
    snprintf(err, errlen, "pipe: %s", strerror(errno));
    e->pipefd[0] = e->pipefd[1] = -1;
    gw_kafka_ev_destroy(e);
    return NULL;
  }
  rd_kafka_queue_io_event_enable(q, e->pipefd[1], "1", 1);
  ev_io_init(&e->io_w, io_cb, e->pipefd[0], EV_READ);
  e->io_w.data = e;
  ev_io_start(loop, &e->io_w);
  ev_timer_init(&e->fallback_w, fallback_cb, FALLBACK_S, FALLBACK_S);
  e->fallback_w.data = e;
  ev_timer_start(loop, &e->fallback_w);
  ev_timer_init(&e->again_w, again_cb, 0., 0.);
  e->again_w.data = e;
  return e;
}

void gw_kafka_ev_stop(gw_kafka_ev *e) {
  if (!e)
    return;
  ev_io_stop(e->loop, &e->io_w);
  ev_timer_stop(e->loop, &e->fallback_w);
  ev_timer_stop(e->loop, &e->again_w);
}

void gw_kafka_ev_destroy(gw_kafka_ev *e) {
  if (!e)
    return;
  gw_kafka_ev_stop(e);
  if (e->q) {
    rd_kafka_queue_io_event_enable(e->q, -1, NULL, 0);
    rd_kafka_queue_destroy(e->q);
  }
  if (e->pipefd[0] >= 0)
    close(e->pipefd[0]);
  if (e->pipefd[1] >= 0)
    close(e->pipefd[1]);
  free(e);
}
