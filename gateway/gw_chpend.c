/*
 * gw_chpend: subscribes waiting for the handler's decision (namespaces with subscribe=handler,
 * docs/PROTOCOL.md "Channels"). The op is kept here under a token, a `subscribe_request` carries
 * the token to the processors, and the answer (a `subscribe` with `rq`, and `rf` when refused)
 * finds the op again; what is not answered within --channel-decide-timeout is answered
 * "timeout" and its late answer ignored.
 *
 * Bounded twice: per connection (--channel-pending-per-conn, a counter in the session) and per
 * gateway (--channel-pending-max, the size of the slot table, allocated at start: 8 bytes a slot
 * plus 4 for the free list; an entry itself, ~300 bytes, only while pending). A token is the slot
 * index in its low 32 bits and a generation in its high 32, so an answer to a slot reused since
 * is told apart in O(1). The timeout is the same for all, so the entries form one FIFO ordered by
 * deadline and one ev_timer watches its head.
 *
 * Threads: the loop thread only.
 */
#include <stdlib.h>
#include <string.h>

#include "gw_session.h"
#include "wsg_time.h"

typedef struct ent {
  struct ent *next, *prev;
  uint64_t token, conn, deadline_ms;
  gw_chop op; /* the client's subscribe: channel, id, since, format of the answer */
} ent;

struct gw_chpend {
  gw_server *s;
  ent **slots; /* cap entries; NULL: free */
  uint32_t *free_idx, nfree, cap;
  uint32_t gen;
  ent *head, *tail; /* by deadline */
  ev_timer w;
};

static void arm(gw_chpend *p, uint64_t now_ms) {
  ev_timer_stop(p->s->o.loop, &p->w);
  if (!p->head)
    return;
  uint64_t due = p->head->deadline_ms > now_ms ? p->head->deadline_ms - now_ms : 0;
  ev_timer_set(&p->w, (double)due / 1000.0, 0);
  ev_timer_start(p->s->o.loop, &p->w);
}

/* Unlinks e, frees its slot; the caller frees e. */
static void take(gw_chpend *p, ent *e) {
  if (e->prev)
    e->prev->next = e->next;
  else
    p->head = e->next;
  if (e->next)
    e->next->prev = e->prev;
  else
    p->tail = e->prev;
  uint32_t idx = (uint32_t)e->token;
  p->slots[idx] = NULL;
  p->free_idx[p->nfree++] = idx;
  wsg_gauge_set(p->s->m_chpending, (int64_t)(p->cap - p->nfree));
}

/* The session still waiting for e, or NULL (it went away); its pending count drops. */
static gw_session *waiter(gw_server *s, const ent *e) {
  gw_session *ss = gw_conn_map_get(&s->conns, e->conn);
  if (!ss || !ss->user || (ss->flags & F_RELEASED))
    return NULL;
  if (ss->chpending)
    ss->chpending--;
  return (ss->flags & F_CLOSING) ? NULL : ss;
}

static void timeout_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop;
  (void)revents;
  gw_chpend *p = w->data;
  gw_server *s = p->s;
  uint64_t now = wsg_now_mono_ms();
  while (p->head && p->head->deadline_ms <= now) {
    ent *e = p->head;
    take(p, e);
    gw_session *ss = waiter(s, e);
    wsg_counter_add(s->m_chops[GW_CHOP_SUBSCRIBE][-GW_CHOP_TIMEOUT], 1);
    if (ss)
      gw__chserve_answer(s, ss, &e->op, GW_CHOP_TIMEOUT, NULL, now);
    free(e);
  }
  arm(p, now);
}

int gw_chpend_init(gw_server *s) {
  gw_chpend *p = calloc(1, sizeof *p);
  uint32_t cap = (uint32_t)s->cfg->channel_pending_max;
  if (!p || !(p->slots = calloc(cap, sizeof *p->slots)) ||
      !(p->free_idx = malloc(sizeof *p->free_idx * cap))) {
    if (p)
      free(p->slots);
    free(p);
    return -1;
  }
  p->s = s;
  p->cap = p->nfree = cap;
  for (uint32_t i = 0; i < cap; i++)
    p->free_idx[i] = cap - 1 - i;
  ev_timer_init(&p->w, timeout_cb, 0, 0);
  p->w.data = p;
  s->chpend = p;
  return 0;
}

void gw_chpend_finish(gw_server *s) {
  gw_chpend *p = s->chpend;
  if (!p)
    return;
  ev_timer_stop(s->o.loop, &p->w);
  for (ent *e = p->head; e;) {
    ent *next = e->next;
    free(e);
    e = next;
  }
  free(p->slots);
  free(p->free_idx);
  free(p);
  s->chpend = NULL;
}

int gw_chpend_ask(gw_server *s, gw_session *ss, const gw_chop *op) {
  gw_chpend *p = s->chpend;
  if (ss->chpending >= s->cfg->channel_pending_per_conn || p->nfree == 0)
    return GW_CHOP_TOO_MANY_PENDING;
  ent *e = malloc(sizeof *e);
  if (!e)
    return GW_CHOP_UNAVAILABLE;
  uint32_t idx = p->free_idx[p->nfree - 1];
  e->token = (uint64_t)++p->gen << 32 | idx;
  e->conn = ss->conn_id;
  e->op = *op;
  uint64_t now = wsg_now_mono_ms();
  e->deadline_ms = now + s->cfg->channel_decide_timeout_ms;
  if (gw_inbound_subscribe_request(s, ss, op->channel, op->channel_len, e->token) != GW_KAFKA_OK) {
    free(e);
    return GW_CHOP_UNAVAILABLE; /* Kafka's queue is full, or the record failed: retry later */
  }
  p->nfree--;
  p->slots[idx] = e;
  e->next = NULL;
  e->prev = p->tail;
  if (p->tail)
    p->tail->next = e;
  else
    p->head = e;
  p->tail = e;
  ss->chpending++;
  wsg_gauge_set(s->m_chpending, (int64_t)(p->cap - p->nfree));
  if (p->head == e)
    arm(p, now);
  return GW_CHOP_PENDING;
}

void gw_chpend_answer(gw_server *s, const gw_outbound *it, uint64_t now_ms) {
  gw_chpend *p = s->chpend;
  uint32_t idx = (uint32_t)it->request;
  ent *e = idx < p->cap ? p->slots[idx] : NULL;
  if (!e || e->token != it->request || e->conn != it->conn) {
    /* Timed out already (the client was told), or not ours: nothing to do. */
    wsg_counter_add(s->m_chlate, 1);
    return;
  }
  bool was_head = p->head == e;
  take(p, e);
  if (was_head)
    arm(p, now_ms);
  gw_session *ss = waiter(s, e);
  int rc = it->refused ? GW_CHOP_FORBIDDEN : GW_CHOP_OK;
  if (ss && rc == GW_CHOP_OK)
    rc = gw__chserve_join(s, ss, &e->op);
  if (rc == GW_CHOP_RECOVERING)
    rc = GW_CHOP_OK; /* answered by the recovery */
  else if (ss)
    gw__chserve_answer(s, ss, &e->op, rc, it->refused && it->reason_len ? it->reason : NULL,
                       now_ms);
  wsg_counter_add(s->m_chops[GW_CHOP_SUBSCRIBE][-rc], 1);
  free(e);
}
