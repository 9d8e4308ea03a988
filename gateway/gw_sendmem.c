/*
 * gw_sendmem: the send queues' memory as a whole (issue 16 item 4). Each queue is bounded on its
 * own (--sendq-hard, --sendq-soft), but a thousand connections that stop reading each stay just
 * under their limits: --sendq-max bounds their sum, closing the largest queues first with the
 * slow consumer's code (4001), and the soft limit is checked from the keepalive wheel as well as
 * on push, so a queue that stopped growing is closed too.
 *
 * Sizes are the queues' accounted bytes (gw_sendq.h): a message fanned out to N connections
 * counts N times although it is stored once, so the bound errs on the safe side.
 *
 * Threads: the loop thread only.
 */
#include <string.h>

#include "gw_session.h"
#include "wsg_time.h"

/* Largest queues remembered per scan of the connections: a scan is O(connections), and closing
 * several per scan keeps a flood from costing one scan per message. */
#define VICTIMS 16

typedef struct {
  gw_session *ss;
  uint64_t bytes;
} victim;

static bool closable(const gw_session *ss) {
  return ss->wsi && ss->user && !(ss->flags & (F_CLOSING | F_RELEASED | F_LWS_CLOSING)) &&
         !gw_sendq_empty(&ss->q);
}

/* The VICTIMS largest open queues, largest first; returns how many. */
static size_t largest(gw_server *s, victim *v) {
  size_t n = 0, pos = 0;
  uint64_t key;
  void *val;
  while (gw_conn_map_next(&s->conns, &pos, &key, &val)) {
    gw_session *ss = val;
    if (!closable(ss))
      continue;
    uint64_t b = gw_sendq_bytes(&ss->q);
    if (n == VICTIMS && b <= v[n - 1].bytes)
      continue;
    size_t i = n < VICTIMS ? n++ : n - 1;
    while (i > 0 && v[i - 1].bytes < b) {
      v[i] = v[i - 1];
      i--;
    }
    v[i] = (victim){ss, b};
  }
  return n;
}

void gw_sendmem_clear(gw_server *s, gw_session *ss) {
  s->sendq_bytes -= gw_sendq_bytes(&ss->q);
  gw_sendq_clear(&ss->q);
  ss->sent_off = 0;
  wsg_gauge_set(s->m_sendq_bytes, (int64_t)s->sendq_bytes);
}

bool gw_sendmem_enforce(gw_server *s, gw_session *keep) {
  uint64_t max = s->cfg->sendq_max;
  while (max && s->sendq_bytes > max) {
    victim v[VICTIMS];
    size_t n = largest(s, v);
    if (n == 0)
      break; /* only closing queues hold bytes: they are being dropped */
    for (size_t i = 0; i < n && s->sendq_bytes > max; i++) {
      wsg_counter_add(s->m_sendq_budget_closes, 1);
      wsg_log_limited(&s->rl_misc, LOG_LIMIT_PER_S, wsg_now_mono_ms(), WSG_LOG_WARN, "server",
                      "send queues hold %llu bytes, over --sendq-max (%llu): closing connection "
                      "%llu of user %s, the largest (%llu bytes), with 4001",
                      (unsigned long long)s->sendq_bytes, (unsigned long long)max,
                      (unsigned long long)v[i].ss->conn_id, v[i].ss->user->id,
                      (unsigned long long)v[i].bytes);
      gw__close_async(s, v[i].ss, GW_CLOSE_SLOW_CONSUMER, NULL, true);
    }
  }
  return keep == NULL || !(keep->flags & F_CLOSING);
}

uint32_t gw_sendmem_check(gw_server *s, gw_session *ss, uint64_t now_ms, uint32_t now_s,
                          uint32_t next_s) {
  const gw_sendq_limits *lim = &s->sendq_limits;
  if (gw_sendq_check(&ss->q, lim, now_ms) != GW_SENDQ_OK) {
    wsg_log_limited(&s->rl_misc, LOG_LIMIT_PER_S, now_ms, WSG_LOG_INFO, "server",
                    "closing connection %llu of user %s with 4001: %s (%llu bytes queued)",
                    (unsigned long long)ss->conn_id, ss->user->id,
                    gw_sendq_strerror(GW_SENDQ_OVER_SOFT),
                    (unsigned long long)gw_sendq_bytes(&ss->q));
    gw__close_async(s, ss, GW_CLOSE_SLOW_CONSUMER, NULL, true);
    return 0;
  }
  if (lim->soft_bytes == 0 || ss->q.soft_over_at == 0 || gw_sendq_bytes(&ss->q) <= lim->soft_bytes)
    return next_s;
  /* Over the soft limit, not for long enough yet: look again when it will have been. */
  uint64_t due_ms = ss->q.soft_over_at - 1 + lim->soft_ms;
  uint32_t due_s = now_s + (uint32_t)((due_ms > now_ms ? due_ms - now_ms : 0) / 1000) + 1;
  return due_s < next_s ? due_s : next_s;
}
