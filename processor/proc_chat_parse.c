/*
 * proc_chat_parse: a client frame to a chat command (proc_chat_parse() in proc_chat.h). The op and
 * the keys each op requires come from the command table (proc_chat_cmds.h); every key is checked
 * here, before anything uses it: client input is hostile.
 *
 * Threads: the consumer thread.
 */
#include <jansson.h>
#include <msgpack.h>
#include <stdio.h>
#include <string.h>

#include "proc_chat.h"
#include "proc_chat_cmds.h"
#include "wsg_envelope.h"

/* Nesting a command may have: a map of scalars is depth 1; unknown keys may hold a little more. */
#define MP_MAX_DEPTH 4

typedef enum { V_STR, V_INT, V_OTHER } vtype;

typedef struct {
  vtype t;
  const char *s;
  size_t len;
  int64_t i;
  bool overflow; /* an integer outside int64 */
} val;

/* The keys a command may carry, in the order a missing one is reported. */
static const struct {
  const char *name;
  unsigned bit;
} keys[] = {{"op", PROC_CHAT_K_OP},
            {"room", PROC_CHAT_K_ROOM},
            {"to", PROC_CHAT_K_TO},
            {"text", PROC_CHAT_K_TEXT},
            {"id", PROC_CHAT_K_ID}};

static bool has_control(const char *s, size_t len) {
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20 || c == 0x7f)
      return true;
  }
  return false;
}

/* A string field: present once, a string, non-empty, bounded, UTF-8. */
static int take_str(const char *name, const val *v, size_t max, const char **dst, size_t *dlen,
                    char *err, size_t errlen) {
  if (v->t != V_STR) {
    snprintf(err, errlen, "%s: must be a string", name);
    return -1;
  }
  if (v->len == 0) {
    snprintf(err, errlen, "%s: must not be empty", name);
    return -1;
  }
  if (v->len > max) {
    snprintf(err, errlen, "%s: longer than %zu bytes", name, max);
    return -1;
  }
  if (!wsg_utf8_valid(v->s, v->len)) {
    snprintf(err, errlen, "%s: not valid UTF-8", name);
    return -1;
  }
  *dst = v->s;
  *dlen = v->len;
  return 0;
}

static int take_field(proc_chat_cmd *cmd, unsigned *seen, const char *key, size_t klen,
                      const val *v, const proc_chat_limits *lim, char *err, size_t errlen) {
  unsigned bit = 0;
  for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
    if (strlen(keys[k].name) == klen && memcmp(keys[k].name, key, klen) == 0)
      bit = keys[k].bit;
  if (bit == 0)
    return 0; /* unknown keys are ignored: a newer client may send more */
  if (*seen & bit) {
    snprintf(err, errlen, "%.*s: given twice", (int)klen, key);
    return -1;
  }
  *seen |= bit;
  switch (bit) {
  case PROC_CHAT_K_OP: {
    if (v->t != V_STR) {
      snprintf(err, errlen, "op: must be a string");
      return -1;
    }
    const proc_chat_cmd_def *def = proc_chat_cmds_find(v->s, v->len);
    if (!def) {
      char names[128];
      snprintf(err, errlen, "op: unknown command (%s)", proc_chat_cmds_names(names, sizeof(names)));
      return -1;
    }
    cmd->op = def->op;
    return 0;
  }
  case PROC_CHAT_K_ROOM:
    if (take_str("room", v, PROC_CHAT_ROOM_MAX, &cmd->room, &cmd->room_len, err, errlen) != 0)
      return -1;
    if (has_control(cmd->room, cmd->room_len)) {
      snprintf(err, errlen, "room: control characters are not allowed");
      return -1;
    }
    return 0;
  case PROC_CHAT_K_TO:
    return take_str("to", v, WSG_MAX_USER_LEN, &cmd->to, &cmd->to_len, err, errlen);
  case PROC_CHAT_K_TEXT:
    return take_str("text", v, lim->max_text, &cmd->text, &cmd->text_len, err, errlen);
  case PROC_CHAT_K_ID:
    if (v->t == V_INT && !v->overflow) {
      cmd->id_kind = PROC_CHAT_ID_INT;
      cmd->id_int = v->i;
      return 0;
    }
    if (v->t == V_STR) {
      if (take_str("id", v, PROC_CHAT_ID_MAX, &cmd->id_str, &cmd->id_len, err, errlen) != 0)
        return -1;
      cmd->id_kind = PROC_CHAT_ID_STR;
      return 0;
    }
    snprintf(err, errlen, "id: must be a string or a 64-bit integer");
    return -1;
  }
  return 0;
}

static int check_required(const proc_chat_cmd *cmd, unsigned seen, char *err, size_t errlen) {
  if (!(seen & PROC_CHAT_K_OP)) {
    char names[128];
    snprintf(err, errlen, "op: missing (%s)", proc_chat_cmds_names(names, sizeof(names)));
    return -1;
  }
  unsigned missing = proc_chat_cmds_get(cmd->op)->requires & ~seen;
  for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
    if (missing & keys[k].bit) {
      snprintf(err, errlen, "%s: missing", keys[k].name);
      return -1;
    }
  return 0;
}

static int parse_json(const uint8_t *frame, size_t len, const proc_chat_limits *lim,
                      proc_chat_cmd *cmd, char *err, size_t errlen) {
  json_error_t jerr;
  /* Duplicate keys are refused, not resolved silently; "\u0000" is refused (no JSON_ALLOW_NUL).
   * The size was bounded before, which bounds jansson's work and nesting. */
  json_t *root = json_loadb((const char *)frame, len, JSON_REJECT_DUPLICATES, &jerr);
  if (!root) {
    snprintf(err, errlen, "not valid JSON: %s (at byte %d)", jerr.text, jerr.position);
    return -1;
  }
  cmd->json_root = root;
  if (!json_is_object(root)) {
    snprintf(err, errlen, "a command is a JSON object");
    return -1;
  }
  unsigned seen = 0;
  const char *key;
  json_t *value;
  json_object_foreach(root, key, value) {
    val v = {.t = V_OTHER};
    if (json_is_string(value)) {
      v.t = V_STR;
      v.s = json_string_value(value);
      v.len = json_string_length(value);
    } else if (json_is_integer(value)) {
      v.t = V_INT;
      v.i = (int64_t)json_integer_value(value);
    }
    if (take_field(cmd, &seen, key, strlen(key), &v, lim, err, errlen) != 0)
      return -1;
  }
  return check_required(cmd, seen, err, errlen);
}

static int parse_msgpack(const uint8_t *frame, size_t len, const proc_chat_limits *lim,
                         proc_chat_cmd *cmd, char *err, size_t errlen) {
  /* msgpack-c's unpacker allocates from declared counts before the bytes arrive; only input that
   * wsg_msgpack_validate accepted (every count backed by bytes, bounded depth) reaches it. */
  int vrc = wsg_msgpack_validate(frame, len, MP_MAX_DEPTH);
  if (vrc != WSG_ENV_OK) {
    snprintf(err, errlen, "not valid MessagePack: %s", wsg_env_strerror(vrc));
    return -1;
  }
  msgpack_unpacked up;
  msgpack_unpacked_init(&up);
  size_t off = 0;
  int rc = -1;
  msgpack_unpack_return ur = msgpack_unpack_next(&up, (const char *)frame, len, &off);
  if (ur != MSGPACK_UNPACK_SUCCESS || off != len) {
    snprintf(err, errlen, "not valid MessagePack");
    goto out;
  }
  if (up.data.type != MSGPACK_OBJECT_MAP) {
    snprintf(err, errlen, "a command is a MessagePack map");
    goto out;
  }
  unsigned seen = 0;
  const msgpack_object_map *m = &up.data.via.map;
  for (uint32_t i = 0; i < m->size; i++) {
    const msgpack_object *k = &m->ptr[i].key, *o = &m->ptr[i].val;
    if (k->type != MSGPACK_OBJECT_STR) {
      snprintf(err, errlen, "map keys must be strings");
      goto out;
    }
    val v = {.t = V_OTHER};
    switch (o->type) {
    case MSGPACK_OBJECT_STR:
      /* Strings point into `frame` (msgpack-c references the input), not into `up`. */
      v.t = V_STR;
      v.s = o->via.str.ptr;
      v.len = o->via.str.size;
      break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
      v.t = V_INT;
      v.overflow = o->via.u64 > INT64_MAX;
      v.i = v.overflow ? 0 : (int64_t)o->via.u64;
      break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
      v.t = V_INT;
      v.i = o->via.i64;
      break;
    default:
      break;
    }
    if (take_field(cmd, &seen, k->via.str.ptr, k->via.str.size, &v, lim, err, errlen) != 0)
      goto out;
  }
  rc = check_required(cmd, seen, err, errlen);
out:
  msgpack_unpacked_destroy(&up);
  return rc;
}

int proc_chat_parse(const uint8_t *frame, size_t len, bool binary, const proc_chat_limits *lim,
                    proc_chat_cmd *cmd, char *err, size_t errlen) {
  memset(cmd, 0, sizeof(*cmd));
  cmd->msgpack = binary;
  if (len == 0) {
    snprintf(err, errlen, "empty frame");
    return -1;
  }
  if (len > lim->max_frame) {
    snprintf(err, errlen, "frame of %zu bytes is larger than %zu", len, lim->max_frame);
    return -1;
  }
  return binary ? parse_msgpack(frame, len, lim, cmd, err, errlen)
                : parse_json(frame, len, lim, cmd, err, errlen);
}

void proc_chat_cmd_finish(proc_chat_cmd *cmd) {
  if (cmd->json_root)
    json_decref(cmd->json_root);
  cmd->json_root = NULL;
}
