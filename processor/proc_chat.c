/*
 * proc_chat: the `chat` handler (see proc_chat.h; docs/HANDLERS.md documents the protocol).
 *
 * Built only on the public handler API (wsgate_handler.h), like a plugin would be, plus jansson
 * and msgpack-c for the two client encodings.
 *
 * Redis keys (all under the configured prefix):
 *   room:<room>       set of member user ids (the documented contract; other processors may read
 * it) chat:mp:<room>    set of the members that joined speaking MessagePack (room events are
 * encoded per member, so a JSON client never receives a binary frame it cannot read)
 *   chat:fmt:<user>   "json" or "msgpack": the encoding of the user's latest command (a day's TTL),
 *                     the encoding direct messages to that user use
 *
 * Threads: the consumer thread.
 */
#include "proc_chat.h"

#include <errno.h>
#include <jansson.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "wsg_envelope.h"

#define DEFAULT_MAX_MEMBERS 10000
#define DEFAULT_MAX_TEXT    4096
#define DEFAULT_MAX_FRAME   16384
/* How long a user's encoding is remembered after their latest command. */
#define FORMAT_TTL "86400"
/* Member names listed in one `members` reply at most (bytes); the rest is reported by count. */
#define MEMBERS_REPLY_MAX 65536
/* Nesting a command may have: a map of scalars is depth 1; unknown keys may hold a little more. */
#define MP_MAX_DEPTH 4
#define KEY_MAX      600

/*
 * join as one step on the server, so concurrent joins cannot overfill a room: returns the member
 * count after the join, or -1 if the room is full. One key: runs on Redis Cluster unchanged.
 */
static const char JOIN_LUA[] =
    "if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return redis.call('SCARD', KEYS[1]) "
    "end\n"
    "if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return -1 end\n"
    "redis.call('SADD', KEYS[1], ARGV[1])\n"
    "return redis.call('SCARD', KEYS[1])\n";

typedef struct {
  uint32_t max_members;
  proc_chat_limits lim;
} chat_state;

/* --- parsing ------------------------------------------------------------------------------- */

enum { SEEN_OP = 1, SEEN_ROOM = 2, SEEN_TO = 4, SEEN_TEXT = 8, SEEN_ID = 16 };

typedef enum { V_STR, V_INT, V_OTHER } vtype;

typedef struct {
  vtype t;
  const char *s;
  size_t len;
  int64_t i;
  bool overflow; /* an integer outside int64 */
} val;

static const struct {
  const char *name;
  proc_chat_op op;
} ops[] = {
    {"join", PROC_CHAT_JOIN}, {"leave", PROC_CHAT_LEAVE},     {"say", PROC_CHAT_SAY},
    {"dm", PROC_CHAT_DM},     {"members", PROC_CHAT_MEMBERS},
};

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
  static const struct {
    const char *name;
    unsigned bit;
  } keys[] = {
      {"op", SEEN_OP}, {"room", SEEN_ROOM}, {"to", SEEN_TO}, {"text", SEEN_TEXT}, {"id", SEEN_ID}};
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
  case SEEN_OP: {
    if (v->t != V_STR) {
      snprintf(err, errlen, "op: must be a string");
      return -1;
    }
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
      if (strlen(ops[i].name) == v->len && memcmp(ops[i].name, v->s, v->len) == 0)
        cmd->op = ops[i].op;
    if (cmd->op == 0) {
      snprintf(err, errlen, "op: unknown command (join, leave, say, dm, members)");
      return -1;
    }
    return 0;
  }
  case SEEN_ROOM:
    if (take_str("room", v, PROC_CHAT_ROOM_MAX, &cmd->room, &cmd->room_len, err, errlen) != 0)
      return -1;
    if (has_control(cmd->room, cmd->room_len)) {
      snprintf(err, errlen, "room: control characters are not allowed");
      return -1;
    }
    return 0;
  case SEEN_TO:
    return take_str("to", v, WSG_MAX_USER_LEN, &cmd->to, &cmd->to_len, err, errlen);
  case SEEN_TEXT:
    return take_str("text", v, lim->max_text, &cmd->text, &cmd->text_len, err, errlen);
  case SEEN_ID:
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
  if (!(seen & SEEN_OP)) {
    snprintf(err, errlen, "op: missing (join, leave, say, dm, members)");
    return -1;
  }
  bool room = cmd->op != PROC_CHAT_DM;
  bool text = cmd->op == PROC_CHAT_SAY || cmd->op == PROC_CHAT_DM;
  if (room && !(seen & SEEN_ROOM)) {
    snprintf(err, errlen, "room: missing");
    return -1;
  }
  if (cmd->op == PROC_CHAT_DM && !(seen & SEEN_TO)) {
    snprintf(err, errlen, "to: missing");
    return -1;
  }
  if (text && !(seen & SEEN_TEXT)) {
    snprintf(err, errlen, "text: missing");
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

/* --- frames to clients --------------------------------------------------------------------- */

typedef enum { FV_STR, FV_INT, FV_BOOL, FV_STRS, FV_ID } fv_type;

typedef struct {
  const char *key;
  fv_type t;
  const char *s;
  size_t n;
  int64_t i;
  const wsgate_str *strs;
  size_t nstrs;
  const proc_chat_cmd *cmd; /* FV_ID: the command's id, omitted when it had none */
} fv;

#define F_STR(k, p, l)                                                                             \
  { .key = (k), .t = FV_STR, .s = (p), .n = (l) }
#define F_CSTR(k, p)                                                                               \
  { .key = (k), .t = FV_STR, .s = (p), .n = strlen(p) }
#define F_INT(k, v)                                                                                \
  { .key = (k), .t = FV_INT, .i = (v) }
#define F_BOOL(k, v)                                                                               \
  { .key = (k), .t = FV_BOOL, .i = (v) }
#define F_STRS(k, a, c)                                                                            \
  { .key = (k), .t = FV_STRS, .strs = (a), .nstrs = (c) }
#define F_ID(c)                                                                                    \
  { .key = "id", .t = FV_ID, .cmd = (c) }

typedef struct {
  uint8_t *data; /* malloc'ed */
  size_t len;
  bool binary;
} frame;

static bool omitted(const fv *f) {
  return f->t == FV_ID && f->cmd->id_kind == PROC_CHAT_ID_NONE;
}

static int build_json(const fv *f, size_t n, frame *out) {
  json_t *o = json_object();
  if (!o)
    return -1;
  for (size_t i = 0; i < n; i++) {
    if (omitted(&f[i]))
      continue;
    json_t *v = NULL;
    switch (f[i].t) {
    case FV_STR:
      v = json_stringn(f[i].s, f[i].n);
      break;
    case FV_INT:
      v = json_integer(f[i].i);
      break;
    case FV_BOOL:
      v = json_boolean(f[i].i);
      break;
    case FV_STRS:
      v = json_array();
      for (size_t k = 0; v && k < f[i].nstrs; k++)
        if (json_array_append_new(v, json_stringn(f[i].strs[k].ptr, f[i].strs[k].len)) != 0) {
          json_decref(v);
          v = NULL;
        }
      break;
    case FV_ID:
      v = f[i].cmd->id_kind == PROC_CHAT_ID_INT ? json_integer(f[i].cmd->id_int)
                                                : json_stringn(f[i].cmd->id_str, f[i].cmd->id_len);
      break;
    }
    /* json_object_set_new takes v even when it fails; a NULL v (invalid UTF-8) fails it. */
    if (!v || json_object_set_new(o, f[i].key, v) != 0) {
      json_decref(o);
      return -1;
    }
  }
  char *s = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  if (!s)
    return -1;
  out->data = (uint8_t *)s;
  out->len = strlen(s);
  out->binary = false;
  return 0;
}

static void pack_str(msgpack_packer *pk, const char *s, size_t n) {
  msgpack_pack_str(pk, n);
  msgpack_pack_str_body(pk, s, n);
}

static int build_msgpack(const fv *f, size_t n, frame *out) {
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  size_t count = 0;
  for (size_t i = 0; i < n; i++)
    count += !omitted(&f[i]);
  msgpack_pack_map(&pk, count);
  for (size_t i = 0; i < n; i++) {
    if (omitted(&f[i]))
      continue;
    pack_str(&pk, f[i].key, strlen(f[i].key));
    switch (f[i].t) {
    case FV_STR:
      pack_str(&pk, f[i].s, f[i].n);
      break;
    case FV_INT:
      msgpack_pack_int64(&pk, f[i].i);
      break;
    case FV_BOOL:
      if (f[i].i)
        msgpack_pack_true(&pk);
      else
        msgpack_pack_false(&pk);
      break;
    case FV_STRS:
      msgpack_pack_array(&pk, f[i].nstrs);
      for (size_t k = 0; k < f[i].nstrs; k++)
        pack_str(&pk, f[i].strs[k].ptr, f[i].strs[k].len);
      break;
    case FV_ID:
      if (f[i].cmd->id_kind == PROC_CHAT_ID_INT)
        msgpack_pack_int64(&pk, f[i].cmd->id_int);
      else
        pack_str(&pk, f[i].cmd->id_str, f[i].cmd->id_len);
      break;
    }
  }
  /* msgpack_sbuffer grows with realloc: its data is ours to free(). A failed realloc leaves the
   * packer's writes short; an empty buffer means nothing was written. */
  if (!sb.data) {
    msgpack_sbuffer_destroy(&sb);
    return -1;
  }
  out->data = (uint8_t *)sb.data;
  out->len = sb.size;
  out->binary = true;
  return 0;
}

static int build(bool msgpack, const fv *f, size_t n, frame *out) {
  memset(out, 0, sizeof(*out));
  return msgpack ? build_msgpack(f, n, out) : build_json(f, n, out);
}

/* Builds fields f[0..n) in the client's encoding and replies it to the origin. */
static int reply_frame(wsgate_ctx *ctx, bool msgpack, const fv *f, size_t n) {
  frame fr;
  if (build(msgpack, f, n, &fr) != 0)
    return WSGATE_E_NOMEM;
  int rc = wsgate_reply(ctx, fr.data, fr.len, fr.binary);
  free(fr.data);
  return rc;
}

/* The time a client's message is stamped with: the gateway's, else now (milliseconds). */
static int64_t stamp_ms(const wsgate_event *ev) {
  if (ev->ts_us)
    return (int64_t)(ev->ts_us / 1000);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Replies {"type":"error","code":code,"message":msg,"id":...} in the client's encoding. */
static int reply_error(wsgate_ctx *ctx, bool msgpack, const proc_chat_cmd *cmd, const char *code,
                       const char *msg) {
  proc_chat_cmd none = {0};
  fv f[] = {F_CSTR("type", "error"), F_CSTR("code", code), F_CSTR("message", msg),
            F_ID(cmd ? cmd : &none)};
  return reply_frame(ctx, msgpack, f, sizeof(f) / sizeof(f[0]));
}

/* --- Redis --------------------------------------------------------------------------------- */

/* <prefix><kind><name> into buf (binary-safe); returns the length. */
static size_t make_key(wsgate_ctx *ctx, char *buf, const char *kind, const char *name, size_t len) {
  const char *prefix = wsgate_redis_prefix(ctx);
  size_t pl = strlen(prefix), kl = strlen(kind);
  /* The processor bounds the prefix at 200 bytes; names are bounded by the parser. */
  if (pl + kl + len >= KEY_MAX)
    len = KEY_MAX - 1 - pl - kl;
  memcpy(buf, prefix, pl);
  memcpy(buf + pl, kind, kl);
  memcpy(buf + pl + kl, name, len);
  buf[pl + kl + len] = '\0';
  return pl + kl + len;
}

/* Maps a failed wsgate_redis() to the callback's status: a connection failure is retried. */
static int redis_failed(wsgate_ctx *ctx, int rc) {
  if (rc == WSGATE_E_REDIS)
    return WSGATE_RETRY;
  wsgate_set_error(ctx, "wsgate_redis: %s", wsgate_strerror(rc));
  return WSGATE_ERROR;
}

/* A reply of an unexpected type (WRONGTYPE: foreign data under our prefix) is a handler error. */
static int unexpected(wsgate_ctx *ctx, bool msgpack, const proc_chat_cmd *cmd, const char *what,
                      const wsgate_redis_reply *r) {
  reply_error(ctx, msgpack, cmd, "internal", "the server could not handle this command");
  wsgate_set_error(
      ctx, "%s: unexpected Redis reply%s%.*s", what, r->type == WSGATE_REDIS_ERROR ? ": " : "",
      r->type == WSGATE_REDIS_ERROR ? (int)r->len : 0, r->type == WSGATE_REDIS_ERROR ? r->str : "");
  return WSGATE_ERROR;
}

/* One command on one of our keys: VERB <prefix><kind><name> [arg]. */
typedef struct {
  char key[KEY_MAX];
  const char *argv[5];
  size_t argvlen[5];
} kcmd;

static wsgate_redis_cmd kcmd_make(kcmd *c, wsgate_ctx *ctx, const char *verb, const char *kind,
                                  const char *name, size_t name_len, const char *arg,
                                  size_t arg_len) {
  c->argv[0] = verb;
  c->argvlen[0] = strlen(verb);
  c->argv[1] = c->key;
  c->argvlen[1] = make_key(ctx, c->key, kind, name, name_len);
  int argc = 2;
  if (arg) {
    c->argv[2] = arg;
    c->argvlen[2] = arg_len;
    argc = 3;
  }
  return (wsgate_redis_cmd){.argc = argc, .argv = c->argv, .argvlen = c->argvlen};
}

/*
 * Runs cmds[0..n) and, in the same round trip, SET chat:fmt:<sender> to the sender's encoding
 * (cmds must have room for it at [n]). Returns WSGATE_OK, or the callback's status for a failure.
 */
static int run(wsgate_ctx *ctx, const wsgate_event *ev, bool msgpack, wsgate_redis_cmd *cmds,
               size_t n, const wsgate_redis_reply **r) {
  kcmd fc;
  const char *fmt = msgpack ? "msgpack" : "json";
  cmds[n] = kcmd_make(&fc, ctx, "SET", "chat:fmt:", ev->user, ev->user_len, fmt, strlen(fmt));
  fc.argv[3] = "EX";
  fc.argvlen[3] = 2;
  fc.argv[4] = FORMAT_TTL;
  fc.argvlen[4] = strlen(FORMAT_TTL);
  cmds[n].argc = 5;
  int rc = wsgate_redis(ctx, cmds, n + 1, r);
  return rc == WSGATE_OK ? WSGATE_OK : redis_failed(ctx, rc);
}

/* --- commands ------------------------------------------------------------------------------ */

/* Maps an action's failure to the callback's status. */
static int action_failed(wsgate_ctx *ctx, const char *what, int rc) {
  wsgate_set_error(ctx, "%s: %s", what, wsgate_strerror(rc));
  return WSGATE_ERROR;
}

static int do_join(chat_state *st, wsgate_ctx *ctx, const wsgate_event *ev,
                   const proc_chat_cmd *cmd) {
  char room_key[KEY_MAX], limit[16];
  size_t rk = make_key(ctx, room_key, "room:", cmd->room, cmd->room_len);
  snprintf(limit, sizeof(limit), "%u", st->max_members);
  const char *jargv[] = {"EVAL", JOIN_LUA, "1", room_key, ev->user, limit};
  size_t jlen[] = {4, sizeof(JOIN_LUA) - 1, 1, rk, ev->user_len, strlen(limit)};
  wsgate_redis_cmd join = {.argc = 6, .argv = jargv, .argvlen = jlen};
  const wsgate_redis_reply *r[2];
  int rc = wsgate_redis(ctx, &join, 1, r);
  if (rc != WSGATE_OK)
    return redis_failed(ctx, rc);
  if (r[0]->type != WSGATE_REDIS_INTEGER)
    return unexpected(ctx, cmd->msgpack, cmd, "join", r[0]);
  long long members = r[0]->integer;
  if (members < 0) {
    char msg[128];
    snprintf(msg, sizeof(msg), "room is full (%u members)", st->max_members);
    rc = reply_error(ctx, cmd->msgpack, cmd, "room_full", msg);
    return rc == WSGATE_OK ? WSGATE_OK : action_failed(ctx, "reply", rc);
  }
  /* Then the member's encoding, in a second round trip only a successful join pays. */
  kcmd mp;
  wsgate_redis_cmd cmds[2] = {kcmd_make(&mp, ctx, cmd->msgpack ? "SADD" : "SREM", "chat:mp:",
                                        cmd->room, cmd->room_len, ev->user, ev->user_len)};
  if ((rc = run(ctx, ev, cmd->msgpack, cmds, 1, r)) != WSGATE_OK)
    return rc;
  fv f[] = {F_CSTR("type", "joined"), F_STR("room", cmd->room, cmd->room_len),
            F_INT("members", members), F_ID(cmd)};
  rc = reply_frame(ctx, cmd->msgpack, f, sizeof(f) / sizeof(f[0]));
  return rc == WSGATE_OK ? WSGATE_OK : action_failed(ctx, "reply", rc);
}

static int do_leave(wsgate_ctx *ctx, const wsgate_event *ev, const proc_chat_cmd *cmd) {
  kcmd room, mp;
  wsgate_redis_cmd cmds[3] = {
      kcmd_make(&room, ctx, "SREM", "room:", cmd->room, cmd->room_len, ev->user, ev->user_len),
      kcmd_make(&mp, ctx, "SREM", "chat:mp:", cmd->room, cmd->room_len, ev->user, ev->user_len)};
  const wsgate_redis_reply *r[3];
  int rc = run(ctx, ev, cmd->msgpack, cmds, 2, r);
  if (rc != WSGATE_OK)
    return rc;
  if (r[0]->type != WSGATE_REDIS_INTEGER)
    return unexpected(ctx, cmd->msgpack, cmd, "leave", r[0]);
  fv f[] = {F_CSTR("type", "left"), F_STR("room", cmd->room, cmd->room_len),
            F_BOOL("was_member", r[0]->integer > 0), F_ID(cmd)};
  rc = reply_frame(ctx, cmd->msgpack, f, sizeof(f) / sizeof(f[0]));
  return rc == WSGATE_OK ? WSGATE_OK : action_failed(ctx, "reply", rc);
}

static int cmp_str(const void *a, const void *b) {
  const wsgate_str *x = a, *y = b;
  size_t n = x->len < y->len ? x->len : y->len;
  int c = memcmp(x->ptr, y->ptr, n);
  if (c)
    return c;
  return x->len < y->len ? -1 : x->len > y->len;
}

/* The members of a SMEMBERS reply that are usable user ids, as views into the reply. Caller
 * frees the array. */
static wsgate_str *member_list(const wsgate_redis_reply *r, size_t *n) {
  *n = 0;
  wsgate_str *v = malloc((r->count ? r->count : 1) * sizeof(*v));
  if (!v)
    return NULL;
  for (size_t i = 0; i < r->count; i++) {
    const wsgate_redis_reply *m = &r->items[i];
    if (m->type != WSGATE_REDIS_STRING || m->len == 0 || m->len > WSG_MAX_USER_LEN ||
        !wsg_utf8_valid(m->str, m->len))
      continue;
    v[(*n)++] = (wsgate_str){.ptr = m->str, .len = m->len};
  }
  return v;
}

static bool contains(const wsgate_str *sorted, size_t n, const char *s, size_t len) {
  wsgate_str key = {.ptr = s, .len = len};
  return bsearch(&key, sorted, n, sizeof(wsgate_str), cmp_str) != NULL;
}

static int do_members(wsgate_ctx *ctx, const wsgate_event *ev, const proc_chat_cmd *cmd) {
  kcmd room;
  wsgate_redis_cmd cmds[2] = {
      kcmd_make(&room, ctx, "SMEMBERS", "room:", cmd->room, cmd->room_len, NULL, 0)};
  const wsgate_redis_reply *r[2];
  int rc = run(ctx, ev, cmd->msgpack, cmds, 1, r);
  if (rc != WSGATE_OK)
    return rc;
  if (r[0]->type != WSGATE_REDIS_ARRAY)
    return unexpected(ctx, cmd->msgpack, cmd, "members", r[0]);
  size_t n;
  wsgate_str *list = member_list(r[0], &n);
  if (!list)
    return action_failed(ctx, "members", WSGATE_E_NOMEM);
  qsort(list, n, sizeof(*list), cmp_str);
  size_t shown = 0, bytes = 0;
  while (shown < n && bytes + list[shown].len <= MEMBERS_REPLY_MAX)
    bytes += list[shown++].len;
  fv f[] = {F_CSTR("type", "members"),      F_STR("room", cmd->room, cmd->room_len),
            F_STRS("members", list, shown), F_INT("count", (int64_t)n),
            F_BOOL("truncated", shown < n), F_ID(cmd)};
  rc = reply_frame(ctx, cmd->msgpack, f, sizeof(f) / sizeof(f[0]));
  free(list);
  return rc == WSGATE_OK ? WSGATE_OK : action_failed(ctx, "reply", rc);
}

static int do_say(wsgate_ctx *ctx, const wsgate_event *ev, const proc_chat_cmd *cmd) {
  kcmd room, mpset;
  wsgate_redis_cmd cmds[3] = {
      kcmd_make(&room, ctx, "SMEMBERS", "room:", cmd->room, cmd->room_len, NULL, 0),
      kcmd_make(&mpset, ctx, "SMEMBERS", "chat:mp:", cmd->room, cmd->room_len, NULL, 0)};
  const wsgate_redis_reply *r[3];
  int rc = run(ctx, ev, cmd->msgpack, cmds, 2, r);
  if (rc != WSGATE_OK)
    return rc;
  if (r[0]->type != WSGATE_REDIS_ARRAY)
    return unexpected(ctx, cmd->msgpack, cmd, "say", r[0]);
  if (r[1]->type != WSGATE_REDIS_ARRAY)
    return unexpected(ctx, cmd->msgpack, cmd, "say", r[1]);

  size_t nm = 0, nmp = 0;
  wsgate_str *members = member_list(r[0], &nm);
  wsgate_str *mp = member_list(r[1], &nmp);
  wsgate_str *json_to = malloc((nm ? nm : 1) * sizeof(wsgate_str));
  wsgate_str *mp_to = malloc((nm ? nm : 1) * sizeof(wsgate_str));
  if (!members || !mp || !json_to || !mp_to) {
    rc = action_failed(ctx, "say", WSGATE_E_NOMEM);
    goto out;
  }
  qsort(members, nm, sizeof(wsgate_str), cmp_str);
  if (!contains(members, nm, ev->user, ev->user_len)) {
    rc = reply_error(ctx, cmd->msgpack, cmd, "not_member", "join the room before saying anything");
    rc = rc == WSGATE_OK ? WSGATE_OK : action_failed(ctx, "reply", rc);
    goto out;
  }
  qsort(mp, nmp, sizeof(wsgate_str), cmp_str);
  size_t nj = 0, nb = 0;
  for (size_t i = 0; i < nm; i++) {
    if (contains(mp, nmp, members[i].ptr, members[i].len))
      mp_to[nb++] = members[i];
    else
      json_to[nj++] = members[i];
  }
  fv f[] = {F_CSTR("type", "message"), F_STR("room", cmd->room, cmd->room_len),
            F_STR("from", ev->user, ev->user_len), F_STR("text", cmd->text, cmd->text_len),
            F_INT("ts", stamp_ms(ev))};
  size_t nf = sizeof(f) / sizeof(f[0]);
  rc = WSGATE_OK;
  for (int enc = 0; enc < 2 && rc == WSGATE_OK; enc++) {
    const wsgate_str *to = enc ? mp_to : json_to;
    size_t n = enc ? nb : nj;
    if (n == 0)
      continue;
    frame fr;
    if (build(enc == 1, f, nf, &fr) != 0) {
      rc = action_failed(ctx, "say", WSGATE_E_NOMEM);
      break;
    }
    int src = wsgate_send_users(ctx, to, n, fr.data, fr.len, fr.binary);
    free(fr.data);
    if (src != WSGATE_OK)
      rc = action_failed(ctx, "send", src);
  }
out:
  free(members);
  free(mp);
  free(json_to);
  free(mp_to);
  return rc;
}

static int do_dm(wsgate_ctx *ctx, const wsgate_event *ev, const proc_chat_cmd *cmd) {
  kcmd fmt;
  wsgate_redis_cmd cmds[2] = {
      kcmd_make(&fmt, ctx, "GET", "chat:fmt:", cmd->to, cmd->to_len, NULL, 0)};
  const wsgate_redis_reply *r[2];
  int rc = run(ctx, ev, cmd->msgpack, cmds, 1, r);
  if (rc != WSGATE_OK)
    return rc;
  /* A recipient who never sent a command gets JSON, the encoding any client can read. */
  bool to_mp =
      r[0]->type == WSGATE_REDIS_STRING && r[0]->len == 7 && memcmp(r[0]->str, "msgpack", 7) == 0;
  fv f[] = {F_CSTR("type", "dm"), F_STR("from", ev->user, ev->user_len),
            F_STR("text", cmd->text, cmd->text_len), F_INT("ts", stamp_ms(ev))};
  char msg[WSG_MAX_USER_LEN + 64];
  snprintf(msg, sizeof(msg), "%.*s is not connected", (int)cmd->to_len, cmd->to);
  fv e[] = {F_CSTR("type", "error"), F_CSTR("code", "offline"), F_CSTR("message", msg),
            F_STR("to", cmd->to, cmd->to_len), F_ID(cmd)};
  frame fr, fb;
  if (build(to_mp, f, sizeof(f) / sizeof(f[0]), &fr) != 0)
    return action_failed(ctx, "dm", WSGATE_E_NOMEM);
  if (build(cmd->msgpack, e, sizeof(e) / sizeof(e[0]), &fb) != 0) {
    free(fr.data);
    return action_failed(ctx, "dm", WSGATE_E_NOMEM);
  }
  rc = wsgate_send_user_or_reply(ctx, cmd->to, cmd->to_len, fr.data, fr.len, fr.binary, fb.data,
                                 fb.len, fb.binary);
  free(fr.data);
  free(fb.data);
  return rc == WSGATE_OK ? WSGATE_OK : action_failed(ctx, "send", rc);
}

static int chat_message(void *state, wsgate_ctx *ctx, const wsgate_event *ev) {
  chat_state *st = state;
  proc_chat_cmd cmd;
  char err[256];
  if (proc_chat_parse(ev->payload, ev->payload_len, ev->binary, &st->lim, &cmd, err, sizeof(err)) !=
      0) {
    /* The client hears why; the processor counts and logs it (and dead-letters the record). */
    reply_error(ctx, ev->binary, &cmd, "bad_request", err);
    proc_chat_cmd_finish(&cmd);
    wsgate_set_error(ctx, "bad chat command: %s", err);
    return WSGATE_REJECT;
  }
  int rc = WSGATE_ERROR;
  switch (cmd.op) {
  case PROC_CHAT_JOIN:
    rc = do_join(st, ctx, ev, &cmd);
    break;
  case PROC_CHAT_LEAVE:
    rc = do_leave(ctx, ev, &cmd);
    break;
  case PROC_CHAT_MEMBERS:
    rc = do_members(ctx, ev, &cmd);
    break;
  case PROC_CHAT_SAY:
    rc = do_say(ctx, ev, &cmd);
    break;
  case PROC_CHAT_DM:
    rc = do_dm(ctx, ev, &cmd);
    break;
  }
  proc_chat_cmd_finish(&cmd);
  return rc;
}

/* --- lifecycle ----------------------------------------------------------------------------- */

static int parse_u64(const char *s, size_t len, uint64_t min, uint64_t max, uint64_t *out) {
  if (len == 0 || len > 12)
    return -1;
  uint64_t v = 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    v = v * 10 + (uint64_t)(s[i] - '0');
  }
  if (v < min || v > max)
    return -1;
  *out = v;
  return 0;
}

/* --handler-arg: comma-separated key=value pairs. */
static int parse_arg(chat_state *st, const char *arg, char *err, size_t errlen) {
  static const struct {
    const char *key;
    uint64_t min, max;
  } keys[] = {
      {"max_members", 1, 10000000}, {"max_text", 1, 1u << 20}, {"max_frame", 64, 16u << 20}};
  const char *p = arg;
  while (p && *p) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    const char *eq = memchr(p, '=', len);
    if (!eq) {
      snprintf(err, errlen, "chat: '%.*s' is not key=value", (int)len, p);
      return -1;
    }
    size_t klen = (size_t)(eq - p), vlen = len - klen - 1;
    size_t k;
    for (k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
      if (strlen(keys[k].key) == klen && memcmp(keys[k].key, p, klen) == 0)
        break;
    if (k == sizeof(keys) / sizeof(keys[0])) {
      snprintf(err, errlen, "chat: unknown setting '%.*s' (max_members, max_text, max_frame)",
               (int)klen, p);
      return -1;
    }
    uint64_t v;
    if (parse_u64(eq + 1, vlen, keys[k].min, keys[k].max, &v) != 0) {
      snprintf(err, errlen, "chat: %s must be a number in %llu..%llu", keys[k].key,
               (unsigned long long)keys[k].min, (unsigned long long)keys[k].max);
      return -1;
    }
    if (k == 0)
      st->max_members = (uint32_t)v;
    else if (k == 1)
      st->lim.max_text = v;
    else
      st->lim.max_frame = v;
    p = end ? end + 1 : NULL;
  }
  if (st->lim.max_text >= st->lim.max_frame) {
    snprintf(err, errlen, "chat: max_text (%zu) must be below max_frame (%zu)", st->lim.max_text,
             st->lim.max_frame);
    return -1;
  }
  return 0;
}

static int chat_init(void **state, const wsgate_api *api, const char *arg, char *err,
                     size_t errlen) {
  (void)api;
  chat_state *st = calloc(1, sizeof(*st));
  if (!st) {
    snprintf(err, errlen, "chat: out of memory");
    return -1;
  }
  st->max_members = DEFAULT_MAX_MEMBERS;
  st->lim.max_text = DEFAULT_MAX_TEXT;
  st->lim.max_frame = DEFAULT_MAX_FRAME;
  if (parse_arg(st, arg, err, errlen) != 0) {
    free(st);
    return -1;
  }
  *state = st;
  return 0;
}

static void chat_destroy(void *state) {
  free(state);
}

static const wsgate_handler chat_handler = {
    .abi_version = WSGATE_HANDLER_ABI_VERSION,
    .name = "chat",
    .init = chat_init,
    .destroy = chat_destroy,
    .on_message = chat_message,
};

const wsgate_handler *proc_chat_handler(void) {
  return &chat_handler;
}
