/*
 * load_sched: the open-loop traffic schedule of a wsgate-load worker (see load_engine.c's top
 * comment on coordinated omission): message g of the whole run is due at t0 + g / rate, whatever
 * came back; each worker sends its share of the numbers, each stamped with its due time.
 *
 * Threads: a worker is single-threaded.
 */
#include <stdio.h>
#include <string.h>

#include "load_worker.h"

/* ----------------------------------------------------------------------------------------- */
/* traffic                                                                                    */

uint64_t load__sched_time(const worker *w, uint64_t g) {
  return w->t0 + (uint64_t)((double)g * w->msg_interval_ns);
}

/* How many message numbers g have their due time in [lo, hi). */
static uint64_t sched_count(const worker *w, uint64_t lo, uint64_t hi) {
  uint64_t a = (uint64_t)((double)(lo - w->t0) / w->msg_interval_ns);
  while (a > 0 && load__sched_time(w, a - 1) >= lo)
    a--;
  while (load__sched_time(w, a) < lo)
    a++;
  uint64_t b = (uint64_t)((double)(hi - w->t0) / w->msg_interval_ns);
  while (b > 0 && load__sched_time(w, b - 1) >= hi)
    b--;
  while (load__sched_time(w, b) < hi)
    b++;
  return b - a;
}

void load__begin_run(worker *w, uint64_t t0) {
  const load_plan *p = w->p;
  w->t0 = t0;
  w->t_measure = t0 + p->warmup_ns;
  w->t_end = t0 + (p->mode == LOAD_IDLE ? p->hold_ns : p->duration_ns);
  w->t_drain = w->t_end + (p->mode == LOAD_IDLE ? 0 : p->drain_ns);
  w->phase = P_RUN;
  if (p->mode == LOAD_IDLE || p->rate <= 0)
    return;
  w->msg_interval_ns = 1e9 / p->rate;
  if (p->mode == LOAD_ECHO) {
    w->sends = w->nready > 0;
    w->g_next = w->id;
    w->g_step = p->procs;
  } else if (p->mode == LOAD_API) {
    w->sends = false; /* load_api's process sends; how many arrive, only it knows */
  } else {
    w->sends = w->sender != NONE && w->c[w->sender].state == S_READY;
    w->g_next = 0;
    w->g_step = 1;
    /* Every worker knows the sender's schedule: its receivers expect each message once. */
    w->expected = sched_count(w, w->t_measure, w->t_end) * w->receivers_ready;
  }
}

/* Writes the application message carrying due time `sched` into w->msg; returns its length. */
static size_t build_message(worker *w, const conn *k, uint64_t sched, uint64_t g) {
  const load_plan *p = w->p;
  char data[LOAD_MARKER_MAX + 65536];
  size_t ml = load_marker_write(data, sizeof data, sched);
  size_t dl = p->size > ml ? p->size : ml;
  if (dl > sizeof data - 1)
    dl = sizeof data - 1;
  memset(data + ml, 'x', dl - ml);
  data[dl] = '\0';
  int n;
  switch (p->proto) {
  case LOAD_PROTO_CHAT:
    n = snprintf(w->msg, w->msg_cap, "{\"op\":\"say\",\"room\":\"%s\",\"text\":\"%s\"}", p->room,
                 data);
    break;
  case LOAD_PROTO_CHANNEL:
    n = snprintf(w->msg, w->msg_cap, "%s\n%s", p->room, data);
    break;
  case LOAD_PROTO_CENTRIFUGO:
    if (p->mode == LOAD_ECHO)
      n = snprintf(w->msg, w->msg_cap,
                   "{\"id\":%llu,\"publish\":{\"channel\":\"%s-%u\",\"data\":{\"m\":\"%s\"}}}",
                   (unsigned long long)(3 + g % 1000000000u), p->room, k->gidx, data);
    else
      n = snprintf(w->msg, w->msg_cap,
                   "{\"id\":%llu,\"publish\":{\"channel\":\"%s\",\"data\":{\"m\":\"%s\"}}}",
                   (unsigned long long)(3 + g % 1000000000u), p->room, data);
    break;
  default:
    n = (int)dl;
    memcpy(w->msg, data, dl);
    break;
  }
  return n > 0 && (size_t)n < w->msg_cap ? (size_t)n : 0;
}

static uint32_t next_sending_conn(worker *w) {
  if (w->p->mode == LOAD_FANOUT)
    return w->c[w->sender].state == S_READY ? w->sender : NONE;
  for (uint32_t tries = 0; tries < w->nready; tries++) {
    uint32_t i = w->ready_list[w->rr++ % w->nready];
    if (w->c[i].state == S_READY)
      return i;
  }
  return NONE;
}

/* Queues every message due by `now`, then sends each touched connection's bytes at once. */
void load__send_due(worker *w, uint64_t now) {
  if (!w->sends)
    return;
  for (;;) {
    uint64_t due = load__sched_time(w, w->g_next);
    if (due > now || due >= w->t_end)
      break;
    bool measured = due >= w->t_measure;
    uint32_t i = next_sending_conn(w);
    size_t len = i == NONE ? 0 : build_message(w, &w->c[i], due, w->g_next);
    if (len > 0 && load__out_frame(w, i, LOAD_WS_OP_TEXT, w->msg, len) == 0) {
      w->sent++;
      w->sent_measured += measured;
      if (measured)
        load_hist_record(&w->h_lag, now - due);
      if (!(w->c[i].flags & F_DIRTY)) {
        w->c[i].flags |= F_DIRTY;
        w->dirty[w->ndirty++] = i;
      }
    } else {
      w->dropped++;
    }
    w->g_next += w->g_step;
  }
  for (uint32_t d = 0; d < w->ndirty; d++) {
    uint32_t i = w->dirty[d];
    w->c[i].flags &= (uint8_t)~F_DIRTY;
    load__out_flush(w, i);
  }
  w->ndirty = 0;
}
