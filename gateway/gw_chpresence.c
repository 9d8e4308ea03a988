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

/* An entry's value is <user>|<gw id>, split at the last '|' (user ids may hold '|'). The counts
 * come from :pc (O(gateways)); the names from an HSCAN of :p that stops at ARGV[1] distinct pairs
 * or ARGV[2] entries, so a query costs Redis the same on a channel of 50 or of 50,000. */
const char GW_CHPRES_LUA_READ[] =
    "local c = redis.call('HGETALL', KEYS[2])\n"
    "local cap, budget = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
    "local out = {0, #c / 2}\n"
    "for i = 1, #c do out[#out + 1] = c[i] end\n"
    "for i = 4, #out, 2 do out[i] = tonumber(out[i]) or 0 end\n"
    "local seen, np, scanned, cursor = {}, 0, 0, '0'\n"
    "repeat\n"
    "  local r = redis.call('HSCAN', KEYS[1], cursor, 'COUNT', 200)\n"
    "  cursor = r[1]\n"
    "  for i = 2, #r[2], 2 do\n"
    "    local v = r[2][i]\n"
    "    scanned = scanned + 1\n"
    "    if not seen[v] and np < cap then seen[v] = true; np = np + 1; out[#out + 1] = v end\n"
    "  end\n"
    "until cursor == '0' or np >= cap or scanned >= budget\n"
    "if cursor ~= '0' then out[1] = 1 end\n"
    "return out\n";

/* Rare (after a gateway crashed): walks :p with HSCAN, deleting the dead gateways' entries. */
const char GW_CHPRES_LUA_DROP[] =
    "local dead = {}\n"
    "for _, g in ipairs(ARGV) do dead[g] = true; redis.call('HDEL', KEYS[2], g) end\n"
    "local n, cursor = 0, '0'\n"
    "repeat\n"
    "  local r = redis.call('HSCAN', KEYS[1], cursor, 'COUNT', 1000)\n"
    "  cursor = r[1]\n"
    "  for i = 2, #r[2], 2 do\n"
    "    local v = r[2][i]\n"
    "    local bar = string.find(v, '|[^|]*$')\n"
    "    if bar and dead[string.sub(v, bar + 1)] then\n"
    "      n = n + redis.call('HDEL', KEYS[1], r[2][i - 1])\n"
    "    end\n"
    "  end\n"
    "until cursor == '0'\n"
    "return n\n";

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
      ngws > GW_CHPRES_GWS_MAX || rep->elements < 2 + 2 * ngws)
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
    if (id->type != REDIS_REPLY_STRING || id->len == 0 || id->len > WSG_MAX_GATEWAY_LEN ||
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
    const char *p = rd->pairs[i], *bar = strrchr(p, '|');
    if (bar && bar > p && !gw_dead(rd, bar + 1, strlen(bar + 1)))
      u[n++] = (strref){p, (size_t)(bar - p)};
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
