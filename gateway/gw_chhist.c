/*
 * gw_chhist: history pages of a channel (see gw_chhist.h).
 *
 * Threads: the loop thread only.
 */
#include "gw_chhist.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wsg_chkeys.h"
#include "wsg_redis_cluster.h"
#include "wsg_redis_keys.h"

/* One command in flight, freed by its reply's callback; cb is the member req.cb knows. */
typedef struct {
  wsg_redis_conn_req req; /* first: the callback gets it back */
  union {
    gw_chhist_cb page;         /* on_reply */
    gw_chhist_pos_cb position; /* on_position */
  } cb;
  void *arg;
} chhist_req;

/* Sends argv with a copy of *tmpl as its state: 0, or -1 (nothing left allocated). */
static int send_req(wsg_redis_cluster *conn, const chhist_req *tmpl, int argc, const char **argv,
                    const size_t *lens) {
  chhist_req *h = malloc(sizeof *h);
  if (!h)
    return -1;
  *h = *tmpl;
  if (wsg_redis_cluster_command(conn, &h->req, argc, argv, lens) != WSG_REDIS_CONN_OK) {
    free(h);
    return -1;
  }
  return 0;
}

static bool uint_of(const redisReply *r, uint64_t *out) {
  if (r->type != REDIS_REPLY_INTEGER || r->integer < 0)
    return false;
  *out = (uint64_t)r->integer;
  return true;
}

bool gw_chhist_parse(const redisReply *rep, gw_chhist_page *page) {
  page->n = 0;
  uint64_t more;
  if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 || (rep->elements - 3) % 3 != 0 ||
      (rep->elements - 3) / 3 > GW_CHHIST_PAGE_MAX || !uint_of(rep->element[0], &page->epoch) ||
      !uint_of(rep->element[1], &page->last) || !uint_of(rep->element[2], &more))
    return false;
  page->more = more != 0;
  for (size_t i = 3; i < rep->elements; i += 3) {
    gw_chhist_entry *e = &page->e[page->n];
    uint64_t bin;
    const redisReply *d = rep->element[i + 2];
    if (!uint_of(rep->element[i], &e->offset) || !uint_of(rep->element[i + 1], &bin) ||
        d->type != REDIS_REPLY_STRING)
      return false;
    e->binary = bin != 0;
    e->data = (const uint8_t *)d->str;
    e->len = d->len;
    page->n++;
  }
  return true;
}

static void on_reply(void *arg, wsg_redis_conn_req *req, const redisReply *rep) {
  chhist_req *h = (chhist_req *)req;
  if (!arg) {
    h->cb.page(h->arg, NULL, true);
  } else {
    /* A page is large (GW_CHHIST_PAGE_MAX entries): on the heap, for the call only. */
    gw_chhist_page *page = malloc(sizeof *page);
    bool ok = page && gw_chhist_parse(rep, page);
    h->cb.page(h->arg, ok ? page : NULL, false);
    free(page);
  }
  free(h);
}

int gw_chhist_read(gw_chreg *r, const char *name, size_t len, uint64_t after, uint32_t max,
                   uint64_t max_bytes, gw_chhist_cb cb, void *arg) {
  wsg_redis_cluster *conn = gw_chreg_conn(r);
  if (!conn)
    return -1;
  char km[WSG_REDIS_KEY_MAX], kh[WSG_REDIS_KEY_MAX], a[24], n[16], b[24];
  int lm = wsg_key_channel(km, sizeof km, gw_chreg_prefix(r), name, len, "m");
  int lh = wsg_key_channel(kh, sizeof kh, gw_chreg_prefix(r), name, len, "h");
  if (lm < 0 || lh < 0 || !wsg_redis_cluster_key_ready(conn, km, (size_t)lm))
    return -1;
  snprintf(a, sizeof a, "%llu", (unsigned long long)after);
  snprintf(n, sizeof n, "%u", max > GW_CHHIST_PAGE_MAX ? GW_CHHIST_PAGE_MAX : max);
  snprintf(b, sizeof b, "%llu", (unsigned long long)max_bytes);
  const char *argv[] = {"EVAL", WSG_LUA_CHANNEL_HISTORY, "2", km, kh, a, n, b};
  size_t lens[] = {
      4,        strlen(WSG_LUA_CHANNEL_HISTORY), 1, (size_t)lm, (size_t)lh, strlen(a), strlen(n),
      strlen(b)};
  const chhist_req tmpl = {.req.cb = on_reply, .cb.page = cb, .arg = arg};
  return send_req(conn, &tmpl, 8, argv, lens);
}

/* An HMGET field: nil is 0 (no :m); anything but a decimal string is a failure. */
static bool field_of(const redisReply *r, uint64_t *out) {
  *out = 0;
  if (r->type == REDIS_REPLY_NIL)
    return true;
  if (r->type != REDIS_REPLY_STRING || r->len == 0 || r->len > 20)
    return false;
  for (size_t i = 0; i < r->len; i++) {
    if (r->str[i] < '0' || r->str[i] > '9')
      return false;
    *out = *out * 10 + (uint64_t)(r->str[i] - '0');
  }
  return true;
}

static void on_position(void *arg, wsg_redis_conn_req *req, const redisReply *rep) {
  chhist_req *p = (chhist_req *)req;
  uint64_t e = 0, o = 0;
  if (!arg)
    p->cb.position(p->arg, false, 0, 0, true);
  else if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
           field_of(rep->element[0], &e) && field_of(rep->element[1], &o))
    p->cb.position(p->arg, true, e, e ? o : 0, false);
  else
    p->cb.position(p->arg, false, 0, 0, false);
  free(p);
}

int gw_chhist_position(gw_chreg *r, const char *name, size_t len, gw_chhist_pos_cb cb, void *arg) {
  wsg_redis_cluster *conn = gw_chreg_conn(r);
  if (!conn)
    return -1;
  char km[WSG_REDIS_KEY_MAX];
  int lm = wsg_key_channel(km, sizeof km, gw_chreg_prefix(r), name, len, "m");
  if (lm < 0 || !wsg_redis_cluster_key_ready(conn, km, (size_t)lm))
    return -1;
  const char *argv[] = {"HMGET", km, "e", "o"};
  size_t lens[] = {5, (size_t)lm, 1, 1};
  const chhist_req tmpl = {.req.cb = on_position, .cb.position = cb, .arg = arg};
  return send_req(conn, &tmpl, 4, argv, lens);
}
