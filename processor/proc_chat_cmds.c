/*
 * proc_chat_cmds: the chat handler's commands and their table (see proc_chat_cmds.h).
 *
 * A room R is the channel room:R (docs/HANDLERS.md, "The chat handler"): join subscribes, say
 * publishes once, members reads the channel's presence. Redis keys (under the configured prefix,
 * hash-tagged per user so they shard on Redis Cluster):
 *   chat:{u:<user>}:rooms  set of the rooms the user is in, at most max_rooms; TTL room_ttl,
 *                          renewed by each join and each connection of the user
 *   chat:{u:<user>}:fmt    "json" or "msgpack": the encoding of the user's latest command (a
 *                          day's TTL), the encoding direct messages to that user use
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
/* The channel of a room: this prefix and the room's name (docs/HANDLERS.md). */
#define ROOM_NS     "room:"
#define ROOM_NS_LEN 5
#define CHANNEL_MAX (ROOM_NS_LEN + PROC_CHAT_ROOM_MAX)

/* Join in one step, so concurrent joins cannot exceed max_rooms: the user's room count, or -1
 * when full (docs/notes/redis-keys.md#chat-join). KEYS[1] the user's rooms; ARGV room, max, ttl. */
static const char JOIN_LUA[] =
    "if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then\n"
    "  if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return -1 end\n"
    "  redis.call('SADD', KEYS[1], ARGV[1])\n"
    "end\n"
    "redis.call('EXPIRE', KEYS[1], ARGV[3])\n"
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

/* <prefix>chat:{u:<user>}:<kind> into buf; returns the length. */
static size_t user_key(wsgate_ctx *ctx, char *buf, const char *user, size_t user_len,
                       const char *kind) {
  char tag[WSG_MAX_USER_LEN + 8];
  size_t ul = user_len < WSG_MAX_USER_LEN ? user_len : WSG_MAX_USER_LEN, kl = strlen(kind);
  memcpy(tag, user, ul);
  memcpy(tag + ul, "}:", 2);
  memcpy(tag + ul + 2, kind, kl);
  return make_key(ctx, buf, "chat:{u:", tag, ul + 2 + kl);
}

/* room:<room> into buf (CHANNEL_MAX bytes); returns the length. */
static size_t room_channel(char *buf, const char *room, size_t len) {
  memcpy(buf, ROOM_NS, ROOM_NS_LEN);
  memcpy(buf + ROOM_NS_LEN, room, len);
  return ROOM_NS_LEN + len;
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

/* One command on one of the user's keys: VERB <prefix>chat:{u:<user>}:<kind> [arg]. */
typedef struct {
  char key[KEY_MAX];
  const char *argv[5];
  size_t argvlen[5];
} kcmd;

static wsgate_redis_cmd kcmd_make(kcmd *c, wsgate_ctx *ctx, const char *verb, const char *user,
                                  size_t user_len, const char *kind, const char *arg,
                                  size_t arg_len) {
  c->argv[0] = verb;
  c->argvlen[0] = strlen(verb);
  c->argv[1] = c->key;
  c->argvlen[1] = user_key(ctx, c->key, user, user_len, kind);
  int argc = 2;
  if (arg) {
    c->argv[2] = arg;
    c->argvlen[2] = arg_len;
    argc = 3;
  }
  return (wsgate_redis_cmd){.argc = argc, .argv = c->argv, .argvlen = c->argvlen};
}

/*
 * Runs cmds[0..n) and, in the same round trip, SET chat:{u:<sender>}:fmt to the sender's encoding
 * (cmds must have room for it at [n]). Returns WSGATE_OK, or the callback's status for a failure.
 */
static int run(wsgate_ctx *ctx, const wsgate_event *ev, bool msgpack, wsgate_redis_cmd *cmds,
               size_t n, const wsgate_redis_reply **r) {
  kcmd fc;
  const char *fmt = msgpack ? "msgpack" : "json";
  cmds[n] = kcmd_make(&fc, ctx, "SET", ev->user, ev->user_len, "fmt", fmt, strlen(fmt));
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

/* A reply's status as the callback's. */
static int replied(wsgate_ctx *ctx, int rc) {
  return rc == WSGATE_OK ? WSGATE_OK : action_failed(ctx, "reply", rc);
}

/* The sender's membership of cmd->room (SISMEMBER on their rooms; in the same round trip their
 * rooms' TTL is renewed, an active member's rooms never lapse, and their encoding stored): 1
 * member, 0 not (answered `not_member`), or -1 with the callback's status in *status. The first
 * thing say and members do: a non-member costs one round trip and nothing else. */
static int membership(const proc_chat_state *st, wsgate_ctx *ctx, const wsgate_event *ev,
                      const proc_chat_cmd *cmd, const char *what, int *status) {
  kcmd rooms, exp;
  char ttl[16];
  snprintf(ttl, sizeof(ttl), "%u", st->room_ttl_s);
  wsgate_redis_cmd cmds[3] = {
      kcmd_make(&rooms, ctx, "SISMEMBER", ev->user, ev->user_len, "rooms", cmd->room,
                cmd->room_len),
      kcmd_make(&exp, ctx, "EXPIRE", ev->user, ev->user_len, "rooms", ttl, strlen(ttl))};
  const wsgate_redis_reply *r[3];
  if ((*status = run(ctx, ev, cmd->msgpack, cmds, 2, r)) != WSGATE_OK)
    return -1;
  if (r[0]->type != WSGATE_REDIS_INTEGER) {
    *status = unexpected(ctx, cmd->msgpack, cmd, what, r[0]);
    return -1;
  }
  if (r[0]->integer == 1)
    return 1;
  *status = replied(
      ctx, proc_chat_frame_error(ctx, cmd->msgpack, cmd, "not_member", "join the room first"));
  return 0;
}

static int do_join(const proc_chat_state *st, wsgate_ctx *ctx, const wsgate_event *ev,
                   const proc_chat_cmd *cmd) {
  kcmd rooms;
  char limit[16], ttl[16];
  snprintf(limit, sizeof(limit), "%u", st->max_rooms);
  snprintf(ttl, sizeof(ttl), "%u", st->room_ttl_s);
  size_t rk = user_key(ctx, rooms.key, ev->user, ev->user_len, "rooms");
  const char *jargv[] = {"EVAL", JOIN_LUA, "1", rooms.key, cmd->room, limit, ttl};
  size_t jlen[] = {4, sizeof(JOIN_LUA) - 1, 1, rk, cmd->room_len, strlen(limit), strlen(ttl)};
  wsgate_redis_cmd cmds[2] = {{.argc = 7, .argv = jargv, .argvlen = jlen}};
  const wsgate_redis_reply *r[2];
  int rc = run(ctx, ev, cmd->msgpack, cmds, 1, r);
  if (rc != WSGATE_OK)
    return rc;
  if (r[0]->type != WSGATE_REDIS_INTEGER)
    return unexpected(ctx, cmd->msgpack, cmd, "join", r[0]);
  long long nrooms = r[0]->integer;
  if (nrooms < 0) {
    char msg[128];
    snprintf(msg, sizeof(msg), "you are in %u rooms already (max_rooms): leave one first",
             st->max_rooms);
    return replied(ctx, proc_chat_frame_error(ctx, cmd->msgpack, cmd, "too_many_rooms", msg));
  }
  /* Every connection of the user, on every gateway: also when already a member, so a
   * connection that lost its subscription gets it back. */
  char ch[CHANNEL_MAX];
  size_t chl = room_channel(ch, cmd->room, cmd->room_len);
  if ((rc = wsgate_subscribe(ctx, ev->user, ev->user_len, ch, chl)) != WSGATE_OK)
    return action_failed(ctx, "subscribe", rc);
  proc_chat_fv f[] = {F_CSTR("type", "joined"), F_STR("room", cmd->room, cmd->room_len),
                      F_INT("rooms", nrooms), F_ID(cmd)};
  return replied(ctx, proc_chat_frame_reply(ctx, cmd->msgpack, f, sizeof(f) / sizeof(f[0])));
}

static int do_leave(const proc_chat_state *st, wsgate_ctx *ctx, const wsgate_event *ev,
                    const proc_chat_cmd *cmd) {
  (void)st;
  kcmd rooms;
  wsgate_redis_cmd cmds[2] = {
      kcmd_make(&rooms, ctx, "SREM", ev->user, ev->user_len, "rooms", cmd->room, cmd->room_len)};
  const wsgate_redis_reply *r[2];
  int rc = run(ctx, ev, cmd->msgpack, cmds, 1, r);
  if (rc != WSGATE_OK)
    return rc;
  if (r[0]->type != WSGATE_REDIS_INTEGER)
    return unexpected(ctx, cmd->msgpack, cmd, "leave", r[0]);
  char ch[CHANNEL_MAX];
  size_t chl = room_channel(ch, cmd->room, cmd->room_len);
  if ((rc = wsgate_unsubscribe(ctx, ev->user, ev->user_len, ch, chl)) != WSGATE_OK)
    return action_failed(ctx, "unsubscribe", rc);
  proc_chat_fv f[] = {F_CSTR("type", "left"), F_STR("room", cmd->room, cmd->room_len),
                      F_BOOL("was_member", r[0]->integer > 0), F_ID(cmd)};
  return replied(ctx, proc_chat_frame_reply(ctx, cmd->msgpack, f, sizeof(f) / sizeof(f[0])));
}

static int cmp_str(const void *a, const void *b) {
  const wsgate_str *x = a, *y = b;
  size_t n = x->len < y->len ? x->len : y->len;
  int c = memcmp(x->ptr, y->ptr, n);
  if (c)
    return c;
  return x->len < y->len ? -1 : x->len > y->len;
}

/* The distinct users of presence entries e[0..n), sorted, as views into the entries. Caller frees
 * the array; NULL when out of memory. */
static wsgate_str *online_users(const wsgate_presence_entry *e, size_t n, size_t *out) {
  *out = 0;
  wsgate_str *v = malloc((n ? n : 1) * sizeof(*v));
  if (!v)
    return NULL;
  for (size_t i = 0; i < n; i++)
    v[i] = (wsgate_str){.ptr = e[i].user, .len = e[i].user_len};
  qsort(v, n, sizeof(*v), cmp_str);
  for (size_t i = 0; i < n; i++)
    if (*out == 0 || cmp_str(&v[*out - 1], &v[i]) != 0)
      v[(*out)++] = v[i];
  return v;
}

static int do_members(const proc_chat_state *st, wsgate_ctx *ctx, const wsgate_event *ev,
                      const proc_chat_cmd *cmd) {
  int rc;
  if (membership(st, ctx, ev, cmd, "members", &rc) != 1)
    return rc;
  char ch[CHANNEL_MAX];
  size_t chl = room_channel(ch, cmd->room, cmd->room_len);
  const wsgate_presence_entry *e;
  size_t ne;
  if ((rc = wsgate_presence(ctx, ch, chl, &e, &ne)) != WSGATE_OK)
    return rc == WSGATE_E_REDIS ? WSGATE_RETRY : action_failed(ctx, "presence", rc);
  size_t n;
  wsgate_str *list = online_users(e, ne, &n);
  if (!list)
    return action_failed(ctx, "members", WSGATE_E_NOMEM);
  size_t shown = 0, bytes = 0;
  while (shown < n && bytes + list[shown].len <= MEMBERS_REPLY_MAX)
    bytes += list[shown++].len;
  proc_chat_fv f[] = {F_CSTR("type", "members"),      F_STR("room", cmd->room, cmd->room_len),
                      F_STRS("members", list, shown), F_INT("count", (int64_t)n),
                      F_BOOL("truncated", shown < n), F_ID(cmd)};
  rc = replied(ctx, proc_chat_frame_reply(ctx, cmd->msgpack, f, sizeof(f) / sizeof(f[0])));
  free(list);
  return rc;
}

/* Membership first (one SISMEMBER), then ONE publication to the room's channel, whatever the
 * number of members: the gateways holding subscribers write it to each of them. */
static int do_say(const proc_chat_state *st, wsgate_ctx *ctx, const wsgate_event *ev,
                  const proc_chat_cmd *cmd) {
  int rc;
  if (membership(st, ctx, ev, cmd, "say", &rc) != 1)
    return rc;
  /* JSON, whatever the sender spoke: one payload for every subscriber, and a client of either
   * encoding reads JSON text (a MessagePack subscription carries it as a str). */
  proc_chat_fv f[] = {F_CSTR("type", "message"), F_STR("room", cmd->room, cmd->room_len),
                      F_STR("from", ev->user, ev->user_len),
                      F_STR("text", cmd->text, cmd->text_len), F_INT("ts", stamp_ms(ev))};
  proc_chat_frame fr;
  if (proc_chat_frame_build(false, f, sizeof(f) / sizeof(f[0]), &fr) != 0)
    return action_failed(ctx, "say", WSGATE_E_NOMEM);
  char ch[CHANNEL_MAX];
  size_t chl = room_channel(ch, cmd->room, cmd->room_len);
  rc = wsgate_publish(ctx, ch, chl, fr.data, fr.len, false);
  free(fr.data);
  return rc == WSGATE_OK ? WSGATE_OK : action_failed(ctx, "publish", rc);
}

static int do_dm(const proc_chat_state *st, wsgate_ctx *ctx, const wsgate_event *ev,
                 const proc_chat_cmd *cmd) {
  kcmd fmt;
  wsgate_redis_cmd cmds[2] = {kcmd_make(&fmt, ctx, "GET", cmd->to, cmd->to_len, "fmt", NULL, 0)};
  const wsgate_redis_reply *r[2];
  int rc = run(ctx, ev, cmd->msgpack, cmds, 1, r);
  if (rc != WSGATE_OK)
    return rc;
  /* A recipient who never sent a command gets JSON, the encoding any client can read. */
  bool to_mp =
      r[0]->type == WSGATE_REDIS_STRING && r[0]->len == 7 && memcmp(r[0]->str, "msgpack", 7) == 0;
  proc_chat_fv f[] = {F_CSTR("type", "dm"), F_STR("from", ev->user, ev->user_len),
                      F_STR("text", cmd->text, cmd->text_len), F_INT("ts", stamp_ms(ev))};
  proc_chat_frame fr;
  if (proc_chat_frame_build(to_mp, f, sizeof(f) / sizeof(f[0]), &fr) != 0)
    return action_failed(ctx, "dm", WSGATE_E_NOMEM);
  if (st->dm_offline == PROC_CHAT_DM_SILENT) {
    rc = wsgate_send_user(ctx, cmd->to, cmd->to_len, fr.data, fr.len, fr.binary);
    free(fr.data);
    return rc == WSGATE_OK ? WSGATE_OK : action_failed(ctx, "send", rc);
  }
  char msg[WSG_MAX_USER_LEN + 64];
  snprintf(msg, sizeof(msg), "%.*s is not connected", (int)cmd->to_len, cmd->to);
  proc_chat_fv e[] = {F_CSTR("type", "error"), F_CSTR("code", "offline"), F_CSTR("message", msg),
                      F_STR("to", cmd->to, cmd->to_len), F_ID(cmd)};
  proc_chat_frame fb;
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

int proc_chat_may_subscribe(const proc_chat_state *st, wsgate_ctx *ctx, const wsgate_event *ev) {
  (void)st;
  if (ev->channel_len <= ROOM_NS_LEN || ev->channel_len > CHANNEL_MAX ||
      memcmp(ev->channel, ROOM_NS, ROOM_NS_LEN) != 0) {
    wsgate_set_error(ctx, "the chat handler only grants room:<room> channels");
    return WSGATE_REJECT;
  }
  const char *room = ev->channel + ROOM_NS_LEN;
  size_t len = ev->channel_len - ROOM_NS_LEN;
  kcmd rooms;
  wsgate_redis_cmd cmd =
      kcmd_make(&rooms, ctx, "SISMEMBER", ev->user, ev->user_len, "rooms", room, len);
  const wsgate_redis_reply *r;
  int rc = wsgate_redis(ctx, &cmd, 1, &r);
  if (rc != WSGATE_OK)
    return redis_failed(ctx, rc);
  if (r->type == WSGATE_REDIS_INTEGER && r->integer == 1)
    return WSGATE_OK;
  wsgate_set_error(ctx, "join the room first");
  return WSGATE_REJECT;
}

int proc_chat_resubscribe(const proc_chat_state *st, wsgate_ctx *ctx, const wsgate_event *ev) {
  kcmd get, exp;
  char ttl[16];
  snprintf(ttl, sizeof(ttl), "%u", st->room_ttl_s);
  wsgate_redis_cmd cmds[2] = {
      kcmd_make(&get, ctx, "SMEMBERS", ev->user, ev->user_len, "rooms", NULL, 0),
      kcmd_make(&exp, ctx, "EXPIRE", ev->user, ev->user_len, "rooms", ttl, strlen(ttl))};
  const wsgate_redis_reply *r[2];
  int rc = wsgate_redis(ctx, cmds, 2, r);
  if (rc != WSGATE_OK)
    return redis_failed(ctx, rc);
  if (r[0]->type != WSGATE_REDIS_ARRAY) {
    wsgate_set_error(ctx, "connect: unexpected Redis reply to SMEMBERS of the user's rooms");
    return WSGATE_ERROR;
  }
  /* At most max_rooms, also when the set is larger (max_rooms lowered since it was filled). */
  size_t done = 0;
  for (size_t i = 0; i < r[0]->count && done < st->max_rooms; i++) {
    const wsgate_redis_reply *m = &r[0]->items[i];
    if (m->type != WSGATE_REDIS_STRING || m->len == 0 || m->len > PROC_CHAT_ROOM_MAX)
      continue;
    char ch[CHANNEL_MAX];
    size_t chl = room_channel(ch, m->str, m->len);
    rc = wsgate_subscribe(ctx, NULL, 0, ch, chl);
    if (rc == WSGATE_E_INVAL)
      continue; /* not a room name: not ours */
    if (rc != WSGATE_OK)
      return action_failed(ctx, "subscribe", rc);
    done++;
  }
  return WSGATE_OK;
}

/* --- the table ----------------------------------------------------------------------------- */

/* In the order clients see them listed ("op: unknown command (join, leave, ...)"). */
static const proc_chat_cmd_def cmds[] = {
    {"join", PROC_CHAT_JOIN, PROC_CHAT_K_ROOM, do_join,
     "become a member of room R: every connection of yours subscribes to channel `room:R` (at "
     "most `max_rooms` rooms)"},
    {"leave", PROC_CHAT_LEAVE, PROC_CHAT_K_ROOM, do_leave,
     "stop being a member: every connection of yours unsubscribes"},
    {"say", PROC_CHAT_SAY, PROC_CHAT_K_ROOM | PROC_CHAT_K_TEXT, do_say,
     "publish T to channel `room:R` (you must be a member)"},
    {"dm", PROC_CHAT_DM, PROC_CHAT_K_TO | PROC_CHAT_K_TEXT, do_dm,
     "send T to every connection of user U"},
    {"members", PROC_CHAT_MEMBERS, PROC_CHAT_K_ROOM, do_members,
     "list the members of R connected now (you must be a member)"},
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
