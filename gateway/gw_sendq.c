/*
 * gw_sendq: refcounted outbound messages and the per-connection bounded send queue
 * (gw_sendq.h has the model and the threading rules).
 *
 * Threads: gw_msg_create on the Kafka consumer thread; everything else on the loop thread.
 */
#include "gw_sendq.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct gw_msg {
  uint32_t refs; /* not atomic: see the header (one hand-off, then one thread) */
  bool binary;
  size_t len;
  uint64_t ts_us;
  void (*release)(void *arg, const gw_msg *m);
  void *release_arg;
  uint8_t buf[]; /* GW_MSG_HEADROOM scratch bytes, then the payload */
};

struct gw_sendq_node {
  struct gw_sendq_node *next;
  gw_msg *msg;
  uint64_t tag;
};

gw_msg *gw_msg_create(const void *payload, size_t len, bool binary) {
  if (len > SIZE_MAX / 2)
    return NULL;
  gw_msg *m = malloc(sizeof(*m) + GW_MSG_HEADROOM + len);
  if (m == NULL)
    return NULL;
  m->refs = 1;
  m->binary = binary;
  m->len = len;
  m->ts_us = 0;
  m->release = NULL;
  m->release_arg = NULL;
  if (payload != NULL && len > 0)
    memcpy(m->buf + GW_MSG_HEADROOM, payload, len);
  return m;
}

gw_msg *gw_msg_ref(gw_msg *m) {
  m->refs++;
  return m;
}

void gw_msg_unref(gw_msg *m) {
  if (m == NULL)
    return;
  if (--m->refs > 0)
    return;
  if (m->release != NULL)
    m->release(m->release_arg, m);
  free(m);
}

uint8_t *gw_msg_payload(gw_msg *m) {
  return m->buf + GW_MSG_HEADROOM;
}

size_t gw_msg_len(const gw_msg *m) {
  return m->len;
}

bool gw_msg_binary(const gw_msg *m) {
  return m->binary;
}

unsigned gw_msg_refcount(const gw_msg *m) {
  return m->refs;
}

void gw_msg_set_ts(gw_msg *m, uint64_t ts_us) {
  m->ts_us = ts_us;
}

uint64_t gw_msg_ts(const gw_msg *m) {
  return m->ts_us;
}

void gw_msg_set_release_hook(gw_msg *m, void (*fn)(void *arg, const gw_msg *m), void *arg) {
  m->release = fn;
  m->release_arg = arg;
}

#define GW_SENDQ_ERR_STR(name, value, msg)                                                         \
  case value:                                                                                      \
    return msg;
const char *gw_sendq_strerror(int err) {
  switch (err) { GW_SENDQ_ERRNO_MAP(GW_SENDQ_ERR_STR) }
  return "unknown send queue error";
}
#undef GW_SENDQ_ERR_STR

#define GW_SENDQ_ERR_NAME(name, value, msg)                                                        \
  case value:                                                                                      \
    return "GW_SENDQ_" #name;
const char *gw_sendq_err_name(int err) {
  switch (err) { GW_SENDQ_ERRNO_MAP(GW_SENDQ_ERR_NAME) }
  return "GW_SENDQ_UNKNOWN";
}
#undef GW_SENDQ_ERR_NAME

void gw_sendq_init(gw_sendq *q) {
  q->tail = NULL;
  q->bytes = 0;
  q->soft_over_at = 0;
}

static uint64_t msg_cost(const gw_msg *m) {
  return (uint64_t)m->len + GW_SENDQ_MSG_OVERHEAD;
}

static int soft_verdict(const gw_sendq *q, const gw_sendq_limits *lim, uint64_t now_ms) {
  /* soft_over_at stores start + 1 so that a zeroed queue means "under the limit". */
  uint64_t since = q->soft_over_at - 1;
  if (now_ms < since)
    return GW_SENDQ_OK;
  return now_ms - since >= lim->soft_ms ? GW_SENDQ_OVER_SOFT : GW_SENDQ_OK;
}

int gw_sendq_push(gw_sendq *q, gw_msg *m, const gw_sendq_limits *lim, uint64_t now_ms) {
  return gw_sendq_push_tagged(q, m, 0, lim, now_ms);
}

int gw_sendq_push_tagged(gw_sendq *q, gw_msg *m, uint64_t tag, const gw_sendq_limits *lim,
                         uint64_t now_ms) {
  uint64_t after = q->bytes + msg_cost(m);
  if (lim->hard_bytes != 0 && after > lim->hard_bytes)
    return GW_SENDQ_OVER_HARD;
  if (lim->soft_bytes != 0 && after > lim->soft_bytes) {
    /* Bytes only grow here, so a queue that was at or under the limit before this push starts
     * a new over-the-limit period now, however long an earlier one lasted. */
    if (q->bytes <= lim->soft_bytes || q->soft_over_at == 0)
      q->soft_over_at = now_ms + 1;
    if (soft_verdict(q, lim, now_ms) != GW_SENDQ_OK)
      return GW_SENDQ_OVER_SOFT;
  }
  struct gw_sendq_node *n = malloc(sizeof(*n));
  if (n == NULL)
    return GW_SENDQ_NOMEM;
  n->msg = gw_msg_ref(m);
  n->tag = tag;
  if (q->tail == NULL) {
    n->next = n;
  } else {
    n->next = q->tail->next;
    q->tail->next = n;
  }
  q->tail = n;
  q->bytes = after;
  return GW_SENDQ_OK;
}

int gw_sendq_check(const gw_sendq *q, const gw_sendq_limits *lim, uint64_t now_ms) {
  if (lim->soft_bytes == 0 || q->bytes <= lim->soft_bytes || q->soft_over_at == 0)
    return GW_SENDQ_OK;
  return soft_verdict(q, lim, now_ms);
}

gw_msg *gw_sendq_peek(const gw_sendq *q) {
  return q->tail == NULL ? NULL : q->tail->next->msg;
}

uint64_t gw_sendq_peek_tag(const gw_sendq *q) {
  return q->tail == NULL ? 0 : q->tail->next->tag;
}

size_t gw_sendq_peek_n(const gw_sendq *q, gw_sendq_item *out, size_t max) {
  if (q->tail == NULL)
    return 0;
  size_t n = 0;
  const struct gw_sendq_node *it = q->tail->next;
  while (n < max) {
    out[n++] = (gw_sendq_item){it->msg, it->tag};
    if (it == q->tail)
      break;
    it = it->next;
  }
  return n;
}

void gw_sendq_pop(gw_sendq *q) {
  if (q->tail == NULL)
    return;
  struct gw_sendq_node *head = q->tail->next;
  if (head == q->tail)
    q->tail = NULL;
  else
    q->tail->next = head->next;
  q->bytes -= msg_cost(head->msg);
  if (q->tail == NULL)
    q->soft_over_at = 0;
  gw_msg_unref(head->msg);
  free(head);
}

void gw_sendq_clear(gw_sendq *q) {
  while (q->tail != NULL)
    gw_sendq_pop(q);
}
