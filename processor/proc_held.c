/*
 * proc_held: outputs that complete later than a produce call, sent another way than Kafka (the
 * direct reply path, proc_direct), and the hook that serves them wherever the consumer waits
 * (see proc_consumer.h, "the direct reply path"). Shares proc_consumer.c's tickets through
 * proc_consumer_priv.h.
 *
 * Threads: the consumer thread.
 */
#include <stdatomic.h>

#include "proc_consumer_priv.h"
#include "wsg_time.h"

void proc_consumer__wait(proc_consumer *c, int ms) {
  if (c->side && !c->in_side) {
    /* Not re-entered: a fallback inside the side may produce and wait here. */
    c->in_side = true;
    bool waiting = c->side(c->side_arg);
    c->in_side = false;
    if (waiting && ms > 1)
      ms = 1;
  }
  rd_kafka_poll(c->prod, ms);
}

bool proc_consumer_wait_side(proc_consumer *c) {
  if (atomic_load(&c->failed))
    return false;
  proc_consumer__wait(c, POLL_SLICE_MS);
  return !atomic_load(&c->failed);
}

void proc_consumer_set_side(proc_consumer *c, proc_consumer_side_fn fn, void *arg) {
  c->side = fn;
  c->side_arg = arg;
}

uint32_t proc_consumer_kafka_inflight(const proc_consumer *c, int32_t partition) {
  return partition >= 0 && partition < c->out_partitions ? c->out_inflight[partition] : 0;
}

int64_t proc_consumer_kafka_acked(const proc_consumer *c, int32_t partition) {
  return partition >= 0 && partition < c->out_partitions ? c->out_acked[partition] : -1;
}

proc_ticket *proc_consumer_hold(proc_consumer *c, proc_record *r, int32_t partition) {
  ticket *t = proc_consumer__ticket_for(c, r);
  if (!t) {
    proc_consumer__fail(c, "out of memory tracking an outbound record");
    return NULL;
  }
  t->handler_us = r->handler_us;
  t->out_part = partition;
  proc_consumer__produced(
      c, t); /* in flight like a produced record: revokes and shutdown wait for it */
  return t;
}

/* The end of a held ticket that was not produced: in flight no more. */
static void unhold(proc_consumer *c, ticket *t) {
  if (t->p->inflight)
    t->p->inflight--;
  if (c->inflight_total)
    c->inflight_total--;
}

void proc_consumer_release(proc_consumer *c, proc_ticket *t) {
  unhold(c, t);
  if (t->handler_us && c->m_hop_acked) {
    uint64_t now_us = wsg_now_wall_us();
    if (now_us > t->handler_us)
      wsg_histogram_observe(c->m_hop_acked, (double)(now_us - t->handler_us) / 1e6);
  }
  proc_consumer__complete(t->p, t->epoch, t->seq);
  proc_consumer__ticket_put(c, t);
}

int proc_consumer_produce_held(proc_consumer *c, proc_ticket *t, const void *buf, size_t len) {
  for (;;) {
    if (rd_kafka_produce(c->out_topic, t->out_part, RD_KAFKA_MSG_F_COPY, (void *)buf, len, NULL, 0,
                         t) == 0) {
      proc_consumer__out_produced(c, t);
      count(c->m_produced, 1);
      return 0;
    }
    rd_kafka_resp_err_t err = rd_kafka_last_error();
    if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || atomic_load(&c->failed)) {
      unhold(c, t);
      return proc_consumer__produce_failed(c, t, err, c->outbound, t->out_part, len);
    }
    proc_consumer__wait(c, POLL_SLICE_MS);
  }
}
