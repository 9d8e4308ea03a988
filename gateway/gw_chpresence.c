/*
 * gw_chpresence: the presence op's script, tally and answer (see gw_chpresence.h).
 *
 * Threads: none of its own; every function is reentrant.
 */
#include "gw_chpresence.h"

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "wsg_chkeys.h"

static bool uint_of(const redisReply *r, uint64_t *out) {
  if (r->type != REDIS_REPLY_INTEGER || r->integer < 0)
    return false;
  *out = (uint64_t)r->integer;
  return true;
}

void gw_chpres_read_free(gw_chpres_read *rd) {
  if (!rd)
    return;
  for (uint32_t i = 0; i < rd->npairs; i++)
    free(rd->pairs[i]);
  free(rd->pairs);
  free(rd);
}

gw_chpres_read *gw_chpres_read_parse(const redisReply *rep) {
  uint64_t more, ngws;
  if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements < 2 ||
      !uint_of(rep->element[0], &more) || !uint_of(rep->element[1], &ngws) ||
      ngws > WSG_PRESENCE_GWS_MAX || rep->elements < 2 + 2 * ngws)
    return NULL;
  gw_chpres_read *rd = calloc(1, sizeof *rd);
  size_t npairs = rep->elements - 2 - 2 * ngws;
  if (!rd || !(rd->pairs = calloc(npairs ? npairs : 1, sizeof *rd->pairs))) {
    free(rd);
    return NULL;
  }
  rd->more = more != 0;
  for (size_t g = 0; g < ngws; g++) {
    const redisReply *id = rep->element[2 + 2 * g];
    if (id->type != REDIS_REPLY_STRING || id->len == 0 || id->len > WSG_PRESENCE_MEMBER_MAX ||
        !uint_of(rep->element[3 + 2 * g], &rd->gw[g].conns))
      goto bad;
    memcpy(rd->gw[g].id, id->str, id->len);
    rd->gw[g].id[id->len] = '\0';
    rd->ngws++;
  }
  for (size_t i = 0; i < npairs; i++) {
    const redisReply *p = rep->element[2 + 2 * ngws + i];
    if (p->type != REDIS_REPLY_STRING || !(rd->pairs[i] = malloc(p->len + 1)))
      goto bad;
    memcpy(rd->pairs[i], p->str, p->len);
    rd->pairs[i][p->len] = '\0';
    rd->npairs++;
  }
  return rd;
bad:
  gw_chpres_read_free(rd);
  return NULL;
}

typedef struct {
  const char *s;
  size_t len;
} strref;

static int strref_cmp(const void *a, const void *b) {
  const strref *x = a, *y = b;
  int c = memcmp(x->s, y->s, x->len < y->len ? x->len : y->len);
  return c ? c : (x->len > y->len) - (x->len < y->len);
}

static bool gw_dead(const gw_chpres_read *rd, const char *id, size_t len) {
  for (uint32_t g = 0; g < rd->ngws; g++)
    if (strlen(rd->gw[g].id) == len && memcmp(rd->gw[g].id, id, len) == 0)
      return rd->gw[g].dead;
  return true; /* a pair names a gateway the counts did not: not trusted */
}

int gw_chpres_tally(const gw_chpres_read *rd, uint32_t max_users, gw_chpres_result *res) {
  memset(res, 0, sizeof *res);
  for (uint32_t g = 0; g < rd->ngws; g++)
    if (!rd->gw[g].dead)
      res->connections += rd->gw[g].conns;
  strref *u = malloc((rd->npairs ? rd->npairs : 1) * sizeof *u);
  if (!u)
    return -1;
  size_t n = 0;
  for (uint32_t i = 0; i < rd->npairs; i++) {
    const char *p = rd->pairs[i], *gw;
    size_t ulen, gwlen;
    if (wsg_presence_split(p, strlen(p), &ulen, &gw, &gwlen) && !gw_dead(rd, gw, gwlen))
      u[n++] = (strref){p, ulen};
  }
  qsort(u, n, sizeof *u, strref_cmp);
  size_t distinct = 0;
  for (size_t i = 0; i < n; i++)
    if (distinct == 0 || strref_cmp(&u[distinct - 1], &u[i]) != 0)
      u[distinct++] = u[i];
  res->truncated = rd->more || distinct > max_users;
  res->nusers = (uint32_t)(distinct > max_users ? max_users : distinct);
  res->users = malloc((res->nusers ? res->nusers : 1) * sizeof *res->users);
  res->user_lens = malloc((res->nusers ? res->nusers : 1) * sizeof *res->user_lens);
  if (!res->users || !res->user_lens) {
    free(u);
    gw_chpres_result_free(res);
    return -1;
  }
  for (uint32_t i = 0; i < res->nusers; i++) {
    res->users[i] = u[i].s;
    res->user_lens[i] = u[i].len;
  }
  free(u);
  return 0;
}

void gw_chpres_result_free(gw_chpres_result *res) {
  free(res->users);
  free(res->user_lens);
  res->users = NULL;
  res->user_lens = NULL;
  res->nusers = 0;
}

static size_t answer_msgpack(const gw_chop *op, const gw_chpres_result *res, uint8_t **out) {
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 4 + (op->has_id ? 1 : 0) + (res->truncated ? 1 : 0));
  msgpack_pack_str_with_body(&pk, "wsgate", 6);
  msgpack_pack_str_with_body(&pk, "presence", 8);
  if (op->has_id) {
    msgpack_pack_str_with_body(&pk, "id", 2);
    msgpack_pack_uint64(&pk, op->id);
  }
  msgpack_pack_str_with_body(&pk, "channel", 7);
  msgpack_pack_str_with_body(&pk, op->channel, op->channel_len);
  msgpack_pack_str_with_body(&pk, "connections", 11);
  msgpack_pack_uint64(&pk, res->connections);
  msgpack_pack_str_with_body(&pk, "users", 5);
  msgpack_pack_array(&pk, res->nusers);
  for (uint32_t i = 0; i < res->nusers; i++)
    msgpack_pack_str_with_body(&pk, res->users[i], res->user_lens[i]);
  if (res->truncated) {
    msgpack_pack_str_with_body(&pk, "truncated", 9);
    msgpack_pack_true(&pk);
  }
  /* msgpack_sbuffer_write aborts nothing: on out of memory it returns -1 and stops growing. */
  if (!sb.data || sb.size == 0) {
    msgpack_sbuffer_destroy(&sb);
    return 0;
  }
  *out = (uint8_t *)sb.data; /* malloc'd by sbuffer: the caller's free() releases it */
  return sb.size;
}

static size_t answer_json(const gw_chop *op, const gw_chpres_result *res, uint8_t **out) {
  json_t *j = json_object(), *users = json_array();
  if (!j || !users) {
    json_decref(j);
    json_decref(users);
    return 0;
  }
  json_object_set_new(j, "wsgate", json_string("presence"));
  if (op->has_id)
    json_object_set_new(j, "id", json_integer((json_int_t)op->id));
  json_object_set_new(j, "channel", json_stringn(op->channel, op->channel_len));
  json_object_set_new(j, "connections", json_integer((json_int_t)res->connections));
  for (uint32_t i = 0; i < res->nusers; i++) {
    json_t *s = json_stringn(res->users[i], res->user_lens[i]);
    if (s)
      json_array_append_new(users, s);
  }
  json_object_set_new(j, "users", users);
  if (res->truncated)
    json_object_set_new(j, "truncated", json_true());
  char *text = json_dumps(j, JSON_COMPACT);
  json_decref(j);
  if (!text)
    return 0;
  *out = (uint8_t *)text;
  return strlen(text);
}

size_t gw_chpres_answer(const gw_chop *op, const gw_chpres_result *res, uint8_t **out) {
  *out = NULL;
  return op->msgpack ? answer_msgpack(op, res, out) : answer_json(op, res, out);
}
