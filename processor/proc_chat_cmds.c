/*
 * proc_chat_cmds: the chat handler's commands and their table (see proc_chat_cmds.h).
 *
 * Redis keys (all under the configured prefix):
 *   room:<room>      set of member user ids (the documented contract: other processors may read
 *                    it)
 *   chat:mp:<room>   set of the members that joined speaking MessagePack (room events are encoded
 *                    per member, so a JSON client never receives a binary frame it cannot read)
 *   chat:fmt:<user>  "json" or "msgpack": the encoding of the user's latest command (a day's
 *                    TTL), the encoding direct messages to that user use
 *
 * Threads: the consumer thread.
 */
#include "proc_chat_cmds.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proc_chat_frame.h"
#include "wsg_envelope.h"

/* How long a user's encoding is remembered after their latest command. */
#define FORMAT_TTL "86400"
/* Member names listed in one `members` reply at most (bytes); the rest is reported by count. */
#define MEMBERS_REPLY_MAX 65536
/* Room for one of our Redis keys: the prefix (at most 200 bytes), a kind and a bounded name. */
#define KEY_MAX 600

/* Join in one step, so concurrent joins cannot overfill a room: member count, or -1 when full
 * (docs/notes/redis-keys.md#chat-join). */
static const char JOIN_LUA[] =
    "if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return redis.call('SCARD', KEYS[1]) "
    "end\n"
    "if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return -1 end\n"
    "redis.call('SADD', KEYS[1], ARGV[1])\n"
    "return redis.call('SCARD', KEYS[1])\n";

/* --- helpers ------------------------------------------------------------------------------- */

/* The time a client's message is stamped with: the gateway's, else now (milliseconds). */
static int64_t stamp_ms(const wsgate_event *ev) {
  if (ev->ts_us)
    return (int64_t)(ev->ts_us / 1000);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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
  proc_chat_frame_error(ctx, msgpack, cmd, "internal", "the server could not handle this command");
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

static int do_join(const proc_chat_state *st, wsgate_ctx *ctx, const wsgate_event *ev,
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
    rc = proc_chat_frame_error(ctx, cmd->msgpack, cmd, "room_full", msg);
    return rc == WSGATE_OK ? WSGATE_OK : action_failed(ctx, "reply", rc);
  }
  /* Then the member's encoding, in a second round trip only a successful join pays. */
  kcmd mp;
  wsgate_redis_cmd cmds[2] = {kcmd_make(&mp, ctx, cmd->msgpack ? "SADD" : "SREM", "chat:mp:",
                                        cmd->room, cmd->room_len, ev->user, ev->user_len)};
  if ((rc = run(ctx, ev, cmd->msgpack, cmds, 1, r)) != WSGATE_OK)
    return rc;
  proc_chat_fv f[] = {F_CSTR("type", "joined"), F_STR("room", cmd->room, cmd->room_len),
                      F_INT("members", members), F_ID(cmd)};
  rc = proc_chat_frame_reply(ctx, cmd->msgpack, f, sizeof(f) / sizeof(f[0]));
  return rc == WSGATE_OK ? WSGATE_OK : action_failed(ctx, "reply", rc);
}

static int do_leave(const proc_chat_state *st, wsgate_ctx *ctx, const wsgate_event *ev,
                    const proc_chat_cmd *cmd) {
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
  proc_chat_fv f[] = {F_CSTR("type", "left"), F_STR("room", cmd->room, cmd->room_len),
                      F_BOOL("was_member", r[0]->integer > 0), F_ID(cmd)};
  rc = proc_chat_frame_reply(ctx, cmd->msgpack, f, sizeof(f) / sizeof(f[0]));
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

static int do_members(const proc_chat_state *st, wsgate_ctx *ctx, const wsgate_event *ev,
                      const proc_chat_cmd *cmd) {
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
  proc_chat_fv f[] = {F_CSTR("type", "members"),      F_STR("room", cmd->room, cmd->room_len),
                      F_STRS("members", list, shown), F_INT("count", (int64_t)n),
                      F_BOOL("truncated", shown < n), F_ID(cmd)};
  rc = proc_chat_frame_reply(ctx, cmd->msgpack, f, sizeof(f) / sizeof(f[0]));
  free(list);
  return rc == WSGATE_OK ? WSGATE_OK : action_failed(ctx, "reply", rc);
}

static int do_say(const proc_chat_state *st, wsgate_ctx *ctx, const wsgate_event *ev,
                  const proc_chat_cmd *cmd) {
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
    rc = proc_chat_frame_error(ctx, cmd->msgpack, cmd, "not_member",
                               "join the room before saying anything");
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
  proc_chat_fv f[] = {F_CSTR("type", "message"), F_STR("room", cmd->room, cmd->room_len),
                      F_STR("from", ev->user, ev->user_len),
                      F_STR("text", cmd->text, cmd->text_len), F_INT("ts", stamp_ms(ev))};
  size_t nf = sizeof(f) / sizeof(f[0]);
  rc = WSGATE_OK;
  for (int enc = 0; enc < 2 && rc == WSGATE_OK; enc++) {
    const wsgate_str *to = enc ? mp_to : json_to;
    size_t n = enc ? nb : nj;
    if (n == 0)
      continue;
    proc_chat_frame fr;
    if (proc_chat_frame_build(enc == 1, f, nf, &fr) != 0) {
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

static int do_dm(const proc_chat_state *st, wsgate_ctx *ctx, const wsgate_event *ev,
                 const proc_chat_cmd *cmd) {
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
  proc_chat_fv f[] = {F_CSTR("type", "dm"), F_STR("from", ev->user, ev->user_len),
                      F_STR("text", cmd->text, cmd->text_len), F_INT("ts", stamp_ms(ev))};
  char msg[WSG_MAX_USER_LEN + 64];
  snprintf(msg, sizeof(msg), "%.*s is not connected", (int)cmd->to_len, cmd->to);
  proc_chat_fv e[] = {F_CSTR("type", "error"), F_CSTR("code", "offline"), F_CSTR("message", msg),
                      F_STR("to", cmd->to, cmd->to_len), F_ID(cmd)};
  proc_chat_frame fr, fb;
  if (proc_chat_frame_build(to_mp, f, sizeof(f) / sizeof(f[0]), &fr) != 0)
    return action_failed(ctx, "dm", WSGATE_E_NOMEM);
  if (proc_chat_frame_build(cmd->msgpack, e, sizeof(e) / sizeof(e[0]), &fb) != 0) {
    free(fr.data);
    return action_failed(ctx, "dm", WSGATE_E_NOMEM);
  }
  rc = wsgate_send_user_or_reply(ctx, cmd->to, cmd->to_len, fr.data, fr.len, fr.binary, fb.data,
                                 fb.len, fb.binary);
  free(fr.data);
  free(fb.data);
  return rc == WSGATE_OK ? WSGATE_OK : action_failed(ctx, "send", rc);
}

/* --- the table ----------------------------------------------------------------------------- */

/* In the order clients see them listed ("op: unknown command (join, leave, ...)"). */
static const proc_chat_cmd_def cmds[] = {
    {"join", PROC_CHAT_JOIN, PROC_CHAT_K_ROOM, do_join,
     "become a member of room R (at most `max_members`)"},
    {"leave", PROC_CHAT_LEAVE, PROC_CHAT_K_ROOM, do_leave, "stop being a member"},
    {"say", PROC_CHAT_SAY, PROC_CHAT_K_ROOM | PROC_CHAT_K_TEXT, do_say,
     "send T to every member of R (you must be one)"},
    {"dm", PROC_CHAT_DM, PROC_CHAT_K_TO | PROC_CHAT_K_TEXT, do_dm,
     "send T to every connection of user U"},
    {"members", PROC_CHAT_MEMBERS, PROC_CHAT_K_ROOM, do_members, "list the members of R"},
};

#define NCMDS (sizeof(cmds) / sizeof(cmds[0]))

const proc_chat_cmd_def *proc_chat_cmds_list(size_t *count) {
  *count = NCMDS;
  return cmds;
}

const proc_chat_cmd_def *proc_chat_cmds_find(const char *name, size_t len) {
  for (size_t i = 0; i < NCMDS; i++)
    if (strlen(cmds[i].name) == len && memcmp(cmds[i].name, name, len) == 0)
      return &cmds[i];
  return NULL;
}

const proc_chat_cmd_def *proc_chat_cmds_get(proc_chat_op op) {
  for (size_t i = 0; i < NCMDS; i++)
    if (cmds[i].op == op)
      return &cmds[i];
  return NULL;
}

const char *proc_chat_cmds_names(char *buf, size_t len) {
  size_t off = 0;
  if (len)
    buf[0] = '\0';
  for (size_t i = 0; i < NCMDS && off < len; i++) {
    int n = snprintf(buf + off, len - off, "%s%s", i ? ", " : "", cmds[i].name);
    if (n < 0)
      break;
    off += (size_t)n;
  }
  return buf;
}
