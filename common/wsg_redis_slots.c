/*
 * wsg_redis_slots: key slots, command keys, the slot map and redirections of Redis Cluster
 * (wsg_redis_slots.h). Written from the cluster specification; no I/O.
 */
#include "wsg_redis_slots.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

uint16_t wsg_redis_crc16(const char *buf, size_t len) {
  uint16_t crc = 0;
  for (size_t i = 0; i < len; i++) {
    crc ^= (uint16_t)((uint8_t)buf[i] << 8);
    for (int b = 0; b < 8; b++)
      crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
  }
  return crc;
}

uint16_t wsg_redis_key_slot(const char *key, size_t len) {
  const char *open = memchr(key, '{', len);
  if (open != NULL) {
    size_t off = (size_t)(open - key) + 1;
    const char *close = memchr(key + off, '}', len - off);
    if (close != NULL && close > key + off)
      return wsg_redis_crc16(key + off, (size_t)(close - (key + off))) & (WSG_REDIS_SLOTS - 1);
  }
  return wsg_redis_crc16(key, len) & (WSG_REDIS_SLOTS - 1);
}

/* How a command names its key. Anything not listed takes argv[1]. */
typedef enum { KEY_NONE, KEY_EVAL, KEY_ARG2, KEY_STREAMS } key_rule;

static const struct {
  const char *name;
  key_rule rule;
} key_rules[] = {
    {"PING", KEY_NONE},      {"ECHO", KEY_NONE},          {"SCRIPT", KEY_NONE},
    {"INFO", KEY_NONE},      {"TIME", KEY_NONE},          {"CLUSTER", KEY_NONE},
    {"COMMAND", KEY_NONE},   {"DBSIZE", KEY_NONE},        {"AUTH", KEY_NONE},
    {"SELECT", KEY_NONE},    {"HELLO", KEY_NONE},         {"CLIENT", KEY_NONE},
    {"CONFIG", KEY_NONE},    {"FLUSHALL", KEY_NONE},      {"FLUSHDB", KEY_NONE},
    {"RANDOMKEY", KEY_NONE}, {"KEYS", KEY_NONE},          {"SCAN", KEY_NONE},
    {"PUBLISH", KEY_NONE},   {"WAIT", KEY_NONE},          {"FUNCTION", KEY_NONE},
    {"READONLY", KEY_NONE},  {"ASKING", KEY_NONE},        {"EVAL", KEY_EVAL},
    {"EVALSHA", KEY_EVAL},   {"EVAL_RO", KEY_EVAL},       {"EVALSHA_RO", KEY_EVAL},
    {"FCALL", KEY_EVAL},     {"FCALL_RO", KEY_EVAL},      {"OBJECT", KEY_ARG2},
    {"MEMORY", KEY_ARG2},    {"XINFO", KEY_ARG2},         {"XGROUP", KEY_ARG2},
    {"XREAD", KEY_STREAMS},  {"XREADGROUP", KEY_STREAMS},
};

static bool arg_is(const char *a, size_t len, const char *word) {
  return strlen(word) == len && strncasecmp(a, word, len) == 0;
}

bool wsg_redis_cmd_key(int argc, const char **argv, const size_t *lens, const char **key,
                       size_t *klen) {
  if (argc < 1)
    return false;
  size_t l0 = lens != NULL ? lens[0] : strlen(argv[0]);
  key_rule rule = argc >= 2 ? (key_rule)-1 : KEY_NONE;
  for (size_t i = 0; rule == (key_rule)-1 && i < sizeof(key_rules) / sizeof(key_rules[0]); i++)
    if (arg_is(argv[0], l0, key_rules[i].name))
      rule = key_rules[i].rule;
  int at = 1;
  switch ((int)rule) {
  case KEY_NONE:
    return false;
  case KEY_EVAL:
    /* EVAL script numkeys key...: no key (numkeys 0) runs anywhere. */
    if (argc < 4 || (lens != NULL ? lens[2] : strlen(argv[2])) == 0 || argv[2][0] == '0')
      return false;
    at = 3;
    break;
  case KEY_ARG2:
    at = 2;
    break;
  case KEY_STREAMS:
    at = -1;
    for (int i = 1; i + 1 < argc; i++)
      if (arg_is(argv[i], lens != NULL ? lens[i] : strlen(argv[i]), "STREAMS")) {
        at = i + 1;
        break;
      }
    break;
  default:
    break;
  }
  if (at < 1 || at >= argc)
    return false;
  *key = argv[at];
  *klen = lens != NULL ? lens[at] : strlen(argv[at]);
  return true;
}

void wsg_redis_slot_map_reset(wsg_redis_slot_map *m) {
  m->nnodes = 0;
  for (size_t i = 0; i < WSG_REDIS_SLOTS; i++)
    m->owner[i] = WSG_REDIS_NO_NODE;
}

int wsg_redis_slot_map_node(wsg_redis_slot_map *m, const char *host, size_t hlen, int port) {
  if (hlen >= WSG_REDIS_HOST_MAX)
    return -1;
  for (uint32_t i = 0; i < m->nnodes; i++)
    if (m->nodes[i].port == port && strlen(m->nodes[i].host) == hlen &&
        memcmp(m->nodes[i].host, host, hlen) == 0)
      return (int)i;
  if (m->nnodes >= WSG_REDIS_NODES_MAX)
    return -1;
  wsg_redis_node *n = &m->nodes[m->nnodes];
  memcpy(n->host, host, hlen);
  n->host[hlen] = '\0';
  n->port = port;
  return (int)m->nnodes++;
}

int wsg_redis_slot_map_route(const wsg_redis_slot_map *m, int argc, const char **argv,
                             const size_t *lens) {
  const char *key;
  size_t klen;
  if (!wsg_redis_cmd_key(argc, argv, lens, &key, &klen))
    return WSG_REDIS_ROUTE_ANY;
  uint16_t owner = m->owner[wsg_redis_key_slot(key, klen)];
  return owner == WSG_REDIS_NO_NODE ? WSG_REDIS_ROUTE_NONE : owner;
}

static int parse_fail(char *err, size_t errlen, const char *msg) {
  if (err != NULL && errlen > 0)
    snprintf(err, errlen, "CLUSTER SLOTS: %s", msg);
  return -1;
}

/* CLUSTER SLOTS: [[start, end, [host, port, id, ...], replicas...], ...]; the first node of an
 * entry is the primary. */
int wsg_redis_slot_map_parse(wsg_redis_slot_map *m, const redisReply *rep, const char *asked_host,
                             char *err, size_t errlen) {
  if (rep == NULL || rep->type != REDIS_REPLY_ARRAY)
    return parse_fail(err, errlen,
                      rep != NULL && rep->type == REDIS_REPLY_ERROR
                          ? rep->str
                          : "not an array (is this Redis in cluster mode?)");
  wsg_redis_slot_map_reset(m);
  int covered = 0;
  for (size_t i = 0; i < rep->elements; i++) {
    const redisReply *e = rep->element[i];
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
        e->element[0]->type != REDIS_REPLY_INTEGER || e->element[1]->type != REDIS_REPLY_INTEGER ||
        e->element[2]->type != REDIS_REPLY_ARRAY || e->element[2]->elements < 2)
      return parse_fail(err, errlen, "an entry is not [start, end, [host, port, ...], ...]");
    long long lo = e->element[0]->integer, hi = e->element[1]->integer;
    const redisReply *n = e->element[2];
    if (lo < 0 || hi < lo || hi >= WSG_REDIS_SLOTS || n->element[1]->type != REDIS_REPLY_INTEGER ||
        n->element[1]->integer <= 0 || n->element[1]->integer > 65535)
      return parse_fail(err, errlen, "a slot range or a port is out of bounds");
    const char *host = asked_host;
    size_t hlen = strlen(asked_host);
    if (n->element[0]->type == REDIS_REPLY_STRING && n->element[0]->len > 0 &&
        !(n->element[0]->len == 1 && n->element[0]->str[0] == '?')) {
      host = n->element[0]->str;
      hlen = n->element[0]->len;
    }
    int idx = wsg_redis_slot_map_node(m, host, hlen, (int)n->element[1]->integer);
    if (idx < 0)
      return parse_fail(err, errlen, "too many nodes or a host name too long");
    for (long long s = lo; s <= hi; s++) {
      if (m->owner[s] == WSG_REDIS_NO_NODE)
        covered++;
      m->owner[s] = (uint16_t)idx;
    }
  }
  return covered;
}

bool wsg_redis_redirect_parse(const char *s, size_t len, wsg_redis_redirect *out) {
  out->kind = WSG_REDIS_REDIRECT_NONE;
  char buf[WSG_REDIS_HOST_MAX + 32];
  if (s == NULL || len >= sizeof(buf))
    return false;
  memcpy(buf, s, len);
  buf[len] = '\0';
  wsg_redis_redirect_kind kind;
  const char *p;
  if (strncmp(buf, "MOVED ", 6) == 0) {
    kind = WSG_REDIS_MOVED;
    p = buf + 6;
  } else if (strncmp(buf, "ASK ", 4) == 0) {
    kind = WSG_REDIS_ASK;
    p = buf + 4;
  } else {
    return false;
  }
  char *end;
  long slot = strtol(p, &end, 10);
  if (end == p || *end != ' ' || slot < 0 || slot >= WSG_REDIS_SLOTS)
    return false;
  const char *ep = end + 1;
  const char *colon = strrchr(ep, ':');
  if (colon == NULL || (size_t)(colon - ep) >= WSG_REDIS_HOST_MAX)
    return false;
  long port = strtol(colon + 1, &end, 10);
  if (end == colon + 1 || *end != '\0' || port <= 0 || port > 65535)
    return false;
  out->kind = kind;
  out->slot = (uint16_t)slot;
  memcpy(out->host, ep, (size_t)(colon - ep));
  out->host[colon - ep] = '\0';
  out->port = (int)port;
  return true;
}

int wsg_redis_seeds_parse(const char *list, wsg_redis_node *out, int max, char *err,
                          size_t errlen) {
  int n = 0;
  const char *p = list;
  while (p != NULL && *p != '\0') {
    while (*p == ' ' || *p == ',')
      p++;
    if (*p == '\0')
      break;
    const char *end = strchr(p, ',');
    size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
    while (len > 0 && p[len - 1] == ' ')
      len--;
    const char *colon = memrchr(p, ':', len);
    char *pend;
    long port = colon != NULL ? strtol(colon + 1, &pend, 10) : 0;
    size_t hlen = colon != NULL ? (size_t)(colon - p) : 0;
    if (colon == NULL || hlen == 0 || hlen >= WSG_REDIS_HOST_MAX || pend != p + len || port <= 0 ||
        port > 65535) {
      if (err != NULL && errlen > 0)
        snprintf(err, errlen, "redis cluster seed '%.*s' is not host:port", (int)len, p);
      return -1;
    }
    if (n >= max) {
      if (err != NULL && errlen > 0)
        snprintf(err, errlen, "more than %d redis cluster seeds", max);
      return -1;
    }
    memcpy(out[n].host, p, hlen);
    out[n].host[hlen] = '\0';
    out[n].port = (int)port;
    n++;
    p = end;
  }
  if (n == 0 && err != NULL && errlen > 0)
    snprintf(err, errlen, "no redis cluster seed (host:port,...)");
  return n > 0 ? n : -1;
}
