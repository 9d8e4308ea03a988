/*
 * gw_replay_page: the shape of a replay read's reply (WSG_LUA_REPLAY_READ), checked whole before
 * the registry hands the page to its caller, and the entries read from it (gw_registry.h).
 *
 * Threads: any (pure; the loop thread calls it).
 */
#include "gw_replay_page.h"

#include <hiredis/hiredis.h>

/* Whether `rep` has the shape WSG_LUA_REPLAY_READ returns: {counter} for a position, else
 * {counter, more, q, b, d, ...}. Checked whole before the callback, so reading entries never
 * meets a surprise. */
bool gw__replay_page_parse(const redisReply *rep, bool position_only, gw_replay_page *page) {
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 1 ||
      rep->element[0]->type != REDIS_REPLY_INTEGER || rep->element[0]->integer < 0)
    return false;
  page->counter = (uint64_t)rep->element[0]->integer;
  page->more = false;
  page->count = 0;
  page->priv = rep;
  if (position_only)
    return rep->elements == 1;
  if (rep->elements < 2 || rep->element[1]->type != REDIS_REPLY_INTEGER ||
      (rep->elements - 2) % 3 != 0)
    return false;
  page->more = rep->element[1]->integer != 0;
  page->count = (rep->elements - 2) / 3;
  for (size_t i = 0; i < page->count; i++) {
    redisReply *const *e = rep->element + 2 + 3 * i;
    if (e[0]->type != REDIS_REPLY_INTEGER || e[0]->integer <= 0 ||
        e[1]->type != REDIS_REPLY_INTEGER || e[2]->type != REDIS_REPLY_STRING)
      return false;
  }
  return true;
}

void gw_replay_page_entry(const gw_replay_page *page, size_t i, gw_replay_entry *out) {
  const redisReply *rep = page->priv;
  redisReply *const *e = rep->element + 2 + 3 * i;
  out->q = (uint64_t)e[0]->integer;
  out->binary = e[1]->integer != 0;
  out->data = (const uint8_t *)e[2]->str;
  out->len = e[2]->len;
}
