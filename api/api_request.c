/*
 * api_request: request bodies to commands (see api_request.h). JSON through jansson (the
 * project's JSON parser), MessagePack through proto's bounded command decoder; both end in the
 * same wsg_command checks (wsg_command_encode), so the HTTP and the Kafka paths accept the same
 * commands.
 *
 * Threads: any.
 */
#include "api_request.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct {
  json_t *root;
  void **blocks; /* decoded base64 and user lists */
  size_t nblocks, cap;
} arena;

static void *arena_alloc(arena *a, size_t n) {
  if (a->nblocks == a->cap) {
    size_t cap = a->cap ? a->cap * 2 : 8;
    void **nb = realloc(a->blocks, cap * sizeof *nb);
    if (!nb)
      return NULL;
    a->blocks = nb;
    a->cap = cap;
  }
  void *p = malloc(n ? n : 1);
  if (p)
    a->blocks[a->nblocks++] = p;
  return p;
}

void api_batch_finish(api_batch *b) {
  arena *a = b->priv;
  if (a) {
    for (size_t i = 0; i < a->nblocks; i++)
      free(a->blocks[i]);
    free(a->blocks);
    json_decref(a->root);
    free(a);
  }
  free(b->cmds);
  *b = (api_batch){0};
}

/* The error context: the field prefix inside a batch ("commands[3]."), and the outputs. */
typedef struct {
  char prefix[32];
  char *field;
  size_t fieldlen;
  char *why;
  size_t whylen;
} errctx;

__attribute__((format(printf, 4, 5))) static int fail(errctx *e, int status, const char *field,
                                                      const char *fmt, ...) {
  snprintf(e->field, e->fieldlen, "%s%s", field[0] ? e->prefix : "", field);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->why, e->whylen, fmt, ap);
  va_end(ap);
  return status;
}

/* The JSON name of a wire key, for messages. */
static const char *json_name(const char *wire) {
  static const char *const map[][2] = {
      {"u", "user"},     {"us", "users"},     {"u|us", "user|users"}, {"c", "conn"},
      {"ch", "channel"}, {"cc", "code"},      {"cr", "reason"},       {"d", "data"},
      {"t", "command"},  {"b", "data_base64"}};
  for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
    if (strcmp(wire, map[i][0]) == 0)
      return map[i][1];
  return wire;
}

static int str_field(errctx *e, json_t *v, const char *name, wsg_cmd_str *out) {
  *out = (wsg_cmd_str){"", 0};
  if (!json_is_string(v))
    return fail(e, 400, name, "%s must be a string", name);
  out->ptr = json_string_value(v);
  out->len = json_string_length(v);
  return 0;
}

static int data_field(errctx *e, arena *a, json_t *v, bool base64, size_t max_payload,
                      wsg_command *c) {
  const char *name = base64 ? "data_base64" : "data";
  wsg_cmd_str s = {"", 0};
  int rc = str_field(e, v, name, &s);
  if (rc)
    return rc;
  if (!base64) {
    if (s.len > max_payload)
      return fail(e, 413, name, "data has %zu bytes; at most %zu", s.len, max_payload);
    c->data = (const uint8_t *)s.ptr;
    c->data_len = s.len;
    return 0;
  }
  if (s.len % 4 != 0)
    return fail(e, 400, name, "data_base64 is not base64 (length not a multiple of 4)");
  if (s.len / 4 * 3 > max_payload + 2)
    return fail(e, 413, name, "data_base64 decodes to more than %zu bytes", max_payload);
  uint8_t *out = arena_alloc(a, s.len / 4 * 3 + 1);
  if (!out)
    return fail(e, 503, "", "out of memory");
  int n = s.len ? EVP_DecodeBlock(out, (const unsigned char *)s.ptr, (int)s.len) : 0;
  if (n < 0)
    return fail(e, 400, name, "data_base64 is not base64");
  /* EVP_DecodeBlock counts the padding as zero bytes. */
  size_t len = (size_t)n;
  if (s.len && s.ptr[s.len - 1] == '=')
    len--;
  if (s.len > 1 && s.ptr[s.len - 2] == '=')
    len--;
  if (len > max_payload)
    return fail(e, 413, name, "data_base64 decodes to %zu bytes; at most %zu", len, max_payload);
  c->data = out;
  c->data_len = len;
  c->binary = true;
  c->fields |= WSG_CF_BINARY;
  return 0;
}

static int users_field(errctx *e, arena *a, json_t *v, wsg_command *c) {
  if (!json_is_array(v))
    return fail(e, 400, "users", "users must be an array of strings");
  size_t n = json_array_size(v);
  if (n == 0 || n > WSG_MAX_CMD_USERS)
    return fail(e, 400, "users", "users must list 1..%d users", WSG_MAX_CMD_USERS);
  wsg_cmd_str *list = arena_alloc(a, n * sizeof *list);
  if (!list)
    return fail(e, 503, "", "out of memory");
  for (size_t i = 0; i < n; i++)
    if (str_field(e, json_array_get(v, i), "users", &list[i]))
      return fail(e, 400, "users", "users[%zu] must be a string", i);
  c->user_list = list;
  c->users.count = (uint32_t)n;
  return 0;
}

static int conn_field(errctx *e, json_t *v, wsg_command *c) {
  /* A string too: connection ids use all 64 bits, beyond what a JSON double holds exactly. */
  if (json_is_integer(v) && json_integer_value(v) >= 0) {
    c->conn = (uint64_t)json_integer_value(v);
    return 0;
  }
  if (json_is_string(v)) {
    const char *s = json_string_value(v);
    char *end = NULL;
    unsigned long long x = s[0] >= '0' && s[0] <= '9' ? strtoull(s, &end, 10) : 0;
    if (end && *end == '\0' && json_string_length(v) <= 20) {
      c->conn = x;
      return 0;
    }
  }
  return fail(e, 400, "conn",
              "conn must be a connection id: a non-negative integer or a string "
              "of decimal digits");
}

/* One JSON command object. `kind` is the path's, or NONE in a batch ("command" says). */
static int json_command(errctx *e, arena *a, json_t *o, wsg_cmd_kind kind, size_t max_payload,
                        wsg_command *c) {
  if (!json_is_object(o))
    return fail(e, 400, "", "a command must be a JSON object");
  memset(c, 0, sizeof *c);
  const char *k;
  json_t *v;
  int rc = 0;
  bool in_batch = kind == WSG_CMD_NONE;
  if (in_batch) {
    json_t *t = json_object_get(o, "command");
    if (!json_is_string(t))
      return fail(e, 400, "command", "command must be \"send\", \"disconnect\" or \"publish\"");
    kind = wsg_cmd_lookup(json_string_value(t), json_string_length(t));
    if (kind != WSG_CMD_SEND && kind != WSG_CMD_DISCONNECT && kind != WSG_CMD_PUBLISH)
      return fail(e, 400, "command", "command must be \"send\", \"disconnect\" or \"publish\"");
  }
  c->kind = kind;
  json_object_foreach(o, k, v) {
    if (strcmp(k, "command") == 0 && in_batch) {
      continue; /* read above */
    } else if (strcmp(k, "user") == 0) {
      rc = str_field(e, v, "user", &c->user);
      c->fields |= WSG_CF_USER;
    } else if (strcmp(k, "users") == 0 && kind == WSG_CMD_SEND) {
      rc = users_field(e, a, v, c);
      c->fields |= WSG_CF_USERS;
    } else if (strcmp(k, "conn") == 0 && kind != WSG_CMD_PUBLISH) {
      rc = conn_field(e, v, c);
      c->fields |= WSG_CF_CONN;
    } else if (strcmp(k, "channel") == 0 && kind == WSG_CMD_PUBLISH) {
      rc = str_field(e, v, "channel", &c->channel);
      c->fields |= WSG_CF_CHANNEL;
    } else if ((strcmp(k, "data") == 0 || strcmp(k, "data_base64") == 0) &&
               kind != WSG_CMD_DISCONNECT) {
      if (c->fields & WSG_CF_DATA)
        return fail(e, 400, k, "give data or data_base64, not both");
      rc = data_field(e, a, v, k[4] == '_', max_payload, c);
      c->fields |= WSG_CF_DATA;
    } else if (strcmp(k, "code") == 0 && kind == WSG_CMD_DISCONNECT) {
      if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 4999)
        return fail(e, 400, "code", "code must be 1000, 3000-3999 or 4100-4999");
      c->close_code = (uint16_t)json_integer_value(v);
      c->fields |= WSG_CF_CLOSE_CODE;
    } else if (strcmp(k, "reason") == 0 && kind == WSG_CMD_DISCONNECT) {
      rc = str_field(e, v, "reason", &c->close_reason);
      c->fields |= WSG_CF_CLOSE_REASON;
    } else {
      return fail(e, 400, k, "unknown field \"%s\" for %s (docs/API.md)", k, wsg_cmd_name(kind));
    }
    if (rc)
      return rc;
  }
  return 0;
}

/* The checks every command passes on both paths (wsg_command_encode's), with JSON names. */
static int check(errctx *e, const wsg_command *c, bool json) {
  wsg_buf b;
  wsg_buf_init(&b, 0);
  const char *f = "";
  int rc = wsg_command_encode(c, &b, &f);
  wsg_buf_finish(&b);
  if (rc == WSG_ENV_OK)
    return 0;
  const char *name = json ? json_name(f) : f;
  return fail(e, rc == WSG_ENV_NOMEM ? 503 : 400, name, "%s: %s", name[0] ? name : "command",
              wsg_env_strerror(rc));
}

static bool is_msgpack(const char *ct) {
  return ct && (strncasecmp(ct, "application/msgpack", 19) == 0 ||
                strncasecmp(ct, "application/x-msgpack", 21) == 0 ||
                strncasecmp(ct, "application/vnd.msgpack", 23) == 0);
}

static bool is_json(const char *ct) {
  return !ct || !ct[0] || strncasecmp(ct, "application/json", 16) == 0;
}

static const wsg_cmd_kind op_kind[] = {
    [API_OP_SEND] = WSG_CMD_SEND,
    [API_OP_DISCONNECT] = WSG_CMD_DISCONNECT,
    [API_OP_PUBLISH] = WSG_CMD_PUBLISH,
    [API_OP_BATCH] = WSG_CMD_NONE,
};

static int decode_msgpack(errctx *e, api_batch *b, api_op op, const uint8_t *body, size_t len,
                          size_t max_cmds, size_t max_payload) {
  const char *f = "";
  int rc;
  size_t n = 1, at = 0;
  if (op == API_OP_BATCH)
    rc = wsg_command_decode_array(body, len, b->cmds, max_cmds, &n, &at, &f);
  else
    rc = wsg_command_decode(&b->cmds[0], body, len, &f);
  if (rc != WSG_ENV_OK) {
    if (op == API_OP_BATCH && at != SIZE_MAX)
      snprintf(e->prefix, sizeof e->prefix, "[%zu].", at);
    return fail(e, 400, f, "not a valid command: %s", wsg_env_strerror(rc));
  }
  b->n = n;
  for (size_t i = 0; i < n; i++) {
    wsg_command *c = &b->cmds[i];
    if (op == API_OP_BATCH)
      snprintf(e->prefix, sizeof e->prefix, "[%zu].", i);
    if (op != API_OP_BATCH && c->kind != op_kind[op])
      return fail(e, 400, "t", "t is %s; this endpoint takes %s", wsg_cmd_name(c->kind),
                  wsg_cmd_name(op_kind[op]));
    if (c->kind != WSG_CMD_SEND && c->kind != WSG_CMD_DISCONNECT && c->kind != WSG_CMD_PUBLISH)
      return fail(e, 400, "t", "%s is not a command a batch can carry", wsg_cmd_name(c->kind));
    if (c->data_len > max_payload)
      return fail(e, 413, "d", "d has %zu bytes; at most %zu", c->data_len, max_payload);
  }
  return 0;
}

static int decode_json(errctx *e, arena *a, api_batch *b, api_op op, const uint8_t *body,
                       size_t len, size_t max_cmds, size_t max_payload) {
  json_error_t je;
  a->root = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, &je);
  if (!a->root)
    return fail(e, 400, "", "not valid JSON: %s (at byte %d)", je.text, je.position);
  json_t *list = a->root;
  size_t n = 1;
  if (op == API_OP_BATCH) {
    if (!json_is_object(a->root))
      return fail(e, 400, "", "a batch is {\"commands\": [...]}");
    const char *k;
    json_t *v;
    json_object_foreach(a->root, k, v) {
      if (strcmp(k, "commands") != 0)
        return fail(e, 400, k, "unknown field \"%s\" (a batch is {\"commands\": [...]})", k);
    }
    list = json_object_get(a->root, "commands");
    if (!json_is_array(list))
      return fail(e, 400, "commands", "commands must be an array of commands");
    n = json_array_size(list);
    if (n == 0 || n > max_cmds)
      return fail(e, n ? 413 : 400, "commands", "a batch holds 1..%zu commands", max_cmds);
  }
  for (size_t i = 0; i < n; i++) {
    if (op == API_OP_BATCH)
      snprintf(e->prefix, sizeof e->prefix, "commands[%zu].", i);
    json_t *o = op == API_OP_BATCH ? json_array_get(list, i) : a->root;
    int rc = json_command(e, a, o, op_kind[op], max_payload, &b->cmds[i]);
    if (!rc)
      rc = check(e, &b->cmds[i], true);
    if (rc)
      return rc;
  }
  b->n = n;
  return 0;
}

int api_request_decode(api_batch *b, api_op op, const char *content_type, const uint8_t *body,
                       size_t len, size_t max_cmds, size_t max_payload, char *field,
                       size_t fieldlen, char *why, size_t whylen) {
  *b = (api_batch){0};
  errctx e = {.field = field, .fieldlen = fieldlen, .why = why, .whylen = whylen};
  field[0] = why[0] = '\0';
  size_t cap = op == API_OP_BATCH ? max_cmds : 1;
  arena *a = calloc(1, sizeof *a);
  b->priv = a;
  b->cmds = calloc(cap ? cap : 1, sizeof *b->cmds);
  if (!a || !b->cmds)
    return fail(&e, 503, "", "out of memory");
  if (len == 0)
    return fail(&e, 400, "", "the body is empty; send a command (docs/API.md)");
  if (is_msgpack(content_type))
    return decode_msgpack(&e, b, op, body, len, cap, max_payload);
  if (!is_json(content_type))
    return fail(&e, 415, "",
                "Content-Type %s is not supported: use application/json or "
                "application/msgpack",
                content_type);
  return decode_json(&e, a, b, op, body, len, cap, max_payload);
}
