/*
 * wsg_command: the command envelope (see wsg_command.h). Decoding reads with the bounded cursor
 * of wsg_mp.h (no allocation, every length checked against what remains); encoding uses
 * msgpack-c's packer into a wsg_buf, like wsg_envelope.c.
 *
 * Threads: none of its own; every function is reentrant.
 */
#include "wsg_command.h"

#include <msgpack.h>
#include <string.h>

#include "wsg_mp.h"

static const char *const cmd_names[] = {[WSG_CMD_NONE] = "?",
#define WSG_CMD_NAME(name, wire, help) [WSG_CMD_##name] = wire,
                                        WSG_CMD_MAP(WSG_CMD_NAME)
#undef WSG_CMD_NAME
};
#define NCMDS (sizeof cmd_names / sizeof cmd_names[0])

const char *wsg_cmd_name(wsg_cmd_kind kind) {
  return (unsigned)kind < NCMDS ? cmd_names[kind] : "?";
}

wsg_cmd_kind wsg_cmd_lookup(const char *s, size_t len) {
  for (size_t k = 1; k < NCMDS; k++)
    if (strlen(cmd_names[k]) == len && memcmp(cmd_names[k], s, len) == 0)
      return (wsg_cmd_kind)k;
  return WSG_CMD_NONE;
}

/* The keys, in the order they are written. */
typedef enum { K_V, K_T, K_ID, K_U, K_US, K_C, K_CH, K_CC, K_CR, K_B, K_D, K_TS, K_COUNT } key_id;

static const struct {
  const char *name;
  uint32_t flag;
} keys[K_COUNT] = {
    [K_V] = {"v", 0},
    [K_T] = {"t", 0},
    [K_ID] = {"id", WSG_CF_ID},
    [K_U] = {"u", WSG_CF_USER},
    [K_US] = {"us", WSG_CF_USERS},
    [K_C] = {"c", WSG_CF_CONN},
    [K_CH] = {"ch", WSG_CF_CHANNEL},
    [K_CC] = {"cc", WSG_CF_CLOSE_CODE},
    [K_CR] = {"cr", WSG_CF_CLOSE_REASON},
    [K_B] = {"b", WSG_CF_BINARY},
    [K_D] = {"d", WSG_CF_DATA},
    [K_TS] = {"ts", WSG_CF_TS},
};

static int key_lookup(const uint8_t *s, size_t len) {
  for (int k = 0; k < K_COUNT; k++)
    if (strlen(keys[k].name) == len && memcmp(keys[k].name, s, len) == 0)
      return k;
  return -1;
}

static const char *key_name(uint32_t flag) {
  for (int k = 0; k < K_COUNT; k++)
    if (keys[k].flag == flag)
      return keys[k].name;
  return "";
}

/* Which optional keys each command may carry, and which it needs. */
static const struct {
  uint32_t allowed, required;
} shapes[NCMDS] = {
    [WSG_CMD_SEND] = {WSG_CF_USER | WSG_CF_USERS | WSG_CF_CONN | WSG_CF_BINARY | WSG_CF_DATA,
                      WSG_CF_DATA},
    [WSG_CMD_DISCONNECT] = {WSG_CF_USER | WSG_CF_CONN | WSG_CF_CLOSE_CODE | WSG_CF_CLOSE_REASON,
                            WSG_CF_USER},
    [WSG_CMD_PUBLISH] = {WSG_CF_CHANNEL | WSG_CF_BINARY | WSG_CF_DATA,
                         WSG_CF_CHANNEL | WSG_CF_DATA},
    [WSG_CMD_PRESENCE] = {WSG_CF_CHANNEL, WSG_CF_CHANNEL},
    [WSG_CMD_HISTORY] = {WSG_CF_CHANNEL, WSG_CF_CHANNEL},
    [WSG_CMD_INFO] = {0, 0},
};
#define ALWAYS_ALLOWED (WSG_CF_ID | WSG_CF_TS)

static int check_str(wsg_cmd_str s, size_t max) {
  if (s.len == 0 || s.len > max)
    return s.len == 0 ? WSG_ENV_BAD_VALUE : WSG_ENV_TOO_LONG;
  return wsg_utf8_valid(s.ptr, s.len) ? WSG_ENV_OK : WSG_ENV_BAD_UTF8;
}

#define FAIL(rc, key)                                                                              \
  do {                                                                                             \
    *field = (key);                                                                                \
    return (rc);                                                                                   \
  } while (0)

/* The checks shared by decode and encode, on a filled-in command. */
static int check_command(const wsg_command *cmd, const char **field) {
  int rc;
  if (cmd->kind <= WSG_CMD_NONE || (size_t)cmd->kind >= NCMDS)
    FAIL(WSG_ENV_BAD_KIND, "t");
  uint32_t f = cmd->fields, allowed = shapes[cmd->kind].allowed | ALWAYS_ALLOWED;
  for (uint32_t bit = 1; bit <= WSG_CF_TS; bit <<= 1) {
    if ((f & bit) && !(allowed & bit))
      FAIL(WSG_ENV_BAD_VALUE, key_name(bit)); /* a field this command does not use */
    if ((shapes[cmd->kind].required & bit) && !(f & bit))
      FAIL(WSG_ENV_MISSING, key_name(bit));
  }
  if ((f & WSG_CF_ID) && (rc = check_str(cmd->id, WSG_MAX_CMD_ID_LEN)) != WSG_ENV_OK)
    FAIL(rc, "id");
  if ((f & WSG_CF_USER) && (rc = check_str(cmd->user, WSG_MAX_USER_LEN)) != WSG_ENV_OK)
    FAIL(rc, "u");
  if ((f & WSG_CF_CHANNEL) && (rc = check_str(cmd->channel, WSG_MAX_CHANNEL_LEN)) != WSG_ENV_OK)
    FAIL(rc, "ch");
  /* The names the gateway lets clients subscribe to (no C0, DEL or C1 controls), so a publish
   * accepted here is one a processor can store and a client can receive. */
  if ((f & WSG_CF_CHANNEL) && !wsg_channel_name_valid(cmd->channel.ptr, cmd->channel.len))
    FAIL(WSG_ENV_BAD_VALUE, "ch");
  if ((f & WSG_CF_USERS) && (cmd->users.count == 0 || cmd->users.count > WSG_MAX_CMD_USERS))
    FAIL(cmd->users.count ? WSG_ENV_TOO_LONG : WSG_ENV_BAD_VALUE, "us");
  if (cmd->kind == WSG_CMD_SEND && !(f & WSG_CF_USER) == !(f & WSG_CF_USERS))
    FAIL((f & WSG_CF_USER) ? WSG_ENV_BAD_VALUE : WSG_ENV_MISSING, "u|us");
  if ((f & WSG_CF_CONN) && !(f & WSG_CF_USER))
    FAIL(WSG_ENV_MISSING, "u"); /* a connection is found through its user's entry */
  /* The codes an application may ask for (docs/PROTOCOL.md, "Close codes the gateway sends");
   * 4000-4099 are wsgate's own. */
  unsigned cc = cmd->close_code;
  if ((f & WSG_CF_CLOSE_CODE) && cc != 1000 && !(cc >= 3000 && cc <= 3999) &&
      !(cc >= 4100 && cc <= 4999))
    FAIL(WSG_ENV_BAD_VALUE, "cc");
  if (f & WSG_CF_CLOSE_REASON) {
    if (!(f & WSG_CF_CLOSE_CODE))
      FAIL(WSG_ENV_MISSING, "cc");
    if (cmd->close_reason.len > WSG_MAX_REASON_LEN)
      FAIL(WSG_ENV_TOO_LONG, "cr");
    if (!wsg_utf8_valid(cmd->close_reason.ptr, cmd->close_reason.len))
      FAIL(WSG_ENV_BAD_UTF8, "cr");
  }
  if ((f & WSG_CF_DATA) && cmd->data_len > WSG_MAX_PAYLOAD)
    FAIL(WSG_ENV_TOO_LONG, "d");
  return WSG_ENV_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Decoding */

static int read_str(wsg__mp_cur *cur, wsg_cmd_str *out) {
  wsg__mp_item it;
  int rc = wsg__mp_read(cur, &it);
  if (rc != WSG_ENV_OK)
    return rc;
  if (it.type != WSG__MP_STR)
    return WSG_ENV_BAD_TYPE;
  out->ptr = (const char *)it.v.s.ptr;
  out->len = it.v.s.len;
  return WSG_ENV_OK;
}

static int read_uint(wsg__mp_cur *cur, uint64_t max, uint64_t *out) {
  wsg__mp_item it;
  int rc = wsg__mp_read(cur, &it);
  if (rc != WSG_ENV_OK)
    return rc;
  if (it.type != WSG__MP_UINT)
    return it.type == WSG__MP_NINT ? WSG_ENV_BAD_VALUE : WSG_ENV_BAD_TYPE;
  if (it.v.u > max)
    return WSG_ENV_BAD_VALUE;
  *out = it.v.u;
  return WSG_ENV_OK;
}

/* `us`: an array of non-empty UTF-8 strings, each at most WSG_MAX_USER_LEN. */
static int read_users(wsg__mp_cur *cur, wsg_command *cmd) {
  wsg__mp_item it;
  int rc = wsg__mp_read(cur, &it);
  if (rc != WSG_ENV_OK)
    return rc;
  if (it.type != WSG__MP_ARRAY)
    return WSG_ENV_BAD_TYPE;
  if (it.v.n > WSG_MAX_CMD_USERS)
    return WSG_ENV_TOO_LONG;
  cmd->users.raw = cur->p;
  cmd->users.count = it.v.n;
  for (uint32_t i = 0; i < it.v.n; i++) {
    wsg_cmd_str u;
    if ((rc = read_str(cur, &u)) != WSG_ENV_OK || (rc = check_str(u, WSG_MAX_USER_LEN)) != 0)
      return rc;
  }
  cmd->users.raw_len = (size_t)(cur->p - cmd->users.raw);
  return WSG_ENV_OK;
}

static int read_field(wsg__mp_cur *cur, key_id k, wsg_command *cmd, uint64_t *version) {
  wsg__mp_item it;
  uint64_t u = 0;
  int rc;
  switch (k) {
  case K_V:
    return read_uint(cur, UINT32_MAX, version);
  case K_T: {
    wsg_cmd_str t;
    if ((rc = read_str(cur, &t)) != WSG_ENV_OK)
      return rc;
    cmd->kind = wsg_cmd_lookup(t.ptr, t.len);
    return cmd->kind == WSG_CMD_NONE ? WSG_ENV_BAD_KIND : WSG_ENV_OK;
  }
  case K_ID:
    return read_str(cur, &cmd->id);
  case K_U:
    return read_str(cur, &cmd->user);
  case K_US:
    return read_users(cur, cmd);
  case K_C:
    return read_uint(cur, UINT64_MAX, &cmd->conn);
  case K_CH:
    return read_str(cur, &cmd->channel);
  case K_CC:
    rc = read_uint(cur, 4999, &u);
    cmd->close_code = (uint16_t)u;
    return rc;
  case K_CR:
    return read_str(cur, &cmd->close_reason);
  case K_B:
    if ((rc = wsg__mp_read(cur, &it)) != WSG_ENV_OK)
      return rc;
    if (it.type != WSG__MP_BOOL)
      return WSG_ENV_BAD_TYPE;
    cmd->binary = it.v.b;
    return WSG_ENV_OK;
  case K_D:
    if ((rc = wsg__mp_read(cur, &it)) != WSG_ENV_OK)
      return rc;
    /* bin, or str from writers without a bin type (as the envelope's d) */
    if (it.type != WSG__MP_BIN && it.type != WSG__MP_STR)
      return WSG_ENV_BAD_TYPE;
    cmd->data = it.v.s.ptr;
    cmd->data_len = it.v.s.len;
    return WSG_ENV_OK;
  case K_TS:
    return read_uint(cur, UINT64_MAX, &cmd->ts_us);
  default:
    return WSG_ENV_INVALID;
  }
}

int wsg_command_decode(wsg_command *cmd, const uint8_t *buf, size_t len, const char **err_field) {
  const char *dummy;
  const char **field = err_field ? err_field : &dummy;
  *field = "";
  memset(cmd, 0, sizeof *cmd);
  wsg__mp_cur cur = {buf, buf + len};
  wsg__mp_item top;
  int rc = wsg__mp_read(&cur, &top);
  if (rc != WSG_ENV_OK)
    return rc;
  if (top.type != WSG__MP_MAP)
    return WSG_ENV_NOT_MAP;
  uint64_t version = 0;
  uint32_t seen = 0;
  for (uint32_t i = 0; i < top.v.n; i++) {
    wsg__mp_item key;
    if ((rc = wsg__mp_read(&cur, &key)) != WSG_ENV_OK)
      return rc;
    if (key.type != WSG__MP_STR)
      return WSG_ENV_BAD_TYPE;
    int k = key_lookup(key.v.s.ptr, key.v.s.len);
    if (k < 0) {
      if ((rc = wsg__mp_skip(&cur, WSG_MSGPACK_MAX_DEPTH)) != WSG_ENV_OK)
        return rc;
      continue;
    }
    if (seen & (1u << k))
      FAIL(WSG_ENV_DUPLICATE, keys[k].name);
    seen |= 1u << k;
    if ((rc = read_field(&cur, (key_id)k, cmd, &version)) != WSG_ENV_OK)
      FAIL(rc, keys[k].name);
    cmd->fields |= keys[k].flag;
  }
  if (cur.p != cur.end)
    return WSG_ENV_TRAILING;
  if (!(seen & (1u << K_V)))
    FAIL(WSG_ENV_MISSING, "v");
  if (version != WSG_COMMAND_VERSION)
    FAIL(WSG_ENV_BAD_VERSION, "v");
  if (!(seen & (1u << K_T)))
    FAIL(WSG_ENV_MISSING, "t");
  return check_command(cmd, field);
}

int wsg_command_decode_array(const uint8_t *buf, size_t len, wsg_command *cmds, size_t max,
                             size_t *n, size_t *index, const char **err_field) {
  const char *dummy;
  const char **field = err_field ? err_field : &dummy;
  *field = "";
  *n = 0;
  *index = SIZE_MAX;
  wsg__mp_cur cur = {buf, buf + len};
  wsg__mp_item top;
  int rc = wsg__mp_read(&cur, &top);
  if (rc != WSG_ENV_OK)
    return rc;
  if (top.type != WSG__MP_ARRAY)
    return WSG_ENV_BAD_TYPE;
  if (top.v.n == 0 || top.v.n > max)
    return top.v.n ? WSG_ENV_TOO_LONG : WSG_ENV_MISSING;
  for (uint32_t i = 0; i < top.v.n; i++) {
    const uint8_t *start = cur.p;
    *index = i;
    if ((rc = wsg__mp_skip(&cur, WSG_MSGPACK_MAX_DEPTH)) != WSG_ENV_OK)
      return rc;
    if ((rc = wsg_command_decode(&cmds[i], start, (size_t)(cur.p - start), field)) != WSG_ENV_OK)
      return rc;
  }
  if (cur.p != cur.end) {
    *index = SIZE_MAX;
    return WSG_ENV_TRAILING;
  }
  *n = top.v.n;
  return WSG_ENV_OK;
}

int wsg_cmd_users_next(const wsg_command *cmd, size_t *pos, wsg_cmd_str *u) {
  if (cmd->user_list) {
    if (*pos >= cmd->users.count)
      return 0;
    *u = cmd->user_list[(*pos)++];
    return 1;
  }
  if (*pos >= cmd->users.raw_len)
    return 0;
  wsg__mp_cur cur = {cmd->users.raw + *pos, cmd->users.raw + cmd->users.raw_len};
  if (read_str(&cur, u) != WSG_ENV_OK)
    return 0; /* validated by the decoder: cannot happen */
  *pos = (size_t)(cur.p - cmd->users.raw);
  return 1;
}

const char *wsg_command_key(const wsg_command *cmd, size_t *len) {
  wsg_cmd_str first = {NULL, 0};
  size_t pos = 0;
  if (cmd->fields & WSG_CF_USER)
    first = cmd->user;
  else if (cmd->fields & WSG_CF_USERS)
    wsg_cmd_users_next(cmd, &pos, &first);
  else if (cmd->fields & WSG_CF_CHANNEL)
    first = cmd->channel;
  *len = first.len;
  return first.ptr;
}

/* ---------------------------------------------------------------------------------------------
 * Encoding */

typedef struct {
  wsg_buf *b;
  int err;
} sink;

static int sink_write(void *data, const char *bytes, size_t len) {
  sink *s = data;
  int rc = wsg__buf_append(s->b, bytes, len);
  if (rc != WSG_ENV_OK) {
    s->err = rc;
    return -1;
  }
  return 0;
}

static int pack_str(msgpack_packer *pk, const char *s, size_t len) {
  int rc = msgpack_pack_str(pk, len);
  return rc ? rc : msgpack_pack_str_body(pk, s, len);
}

static int pack_field(msgpack_packer *pk, const wsg_command *cmd, key_id k) {
  int rc = pack_str(pk, keys[k].name, strlen(keys[k].name));
  if (rc)
    return rc;
  switch (k) {
  case K_V:
    return msgpack_pack_uint64(pk, WSG_COMMAND_VERSION);
  case K_T:
    return pack_str(pk, wsg_cmd_name(cmd->kind), strlen(wsg_cmd_name(cmd->kind)));
  case K_ID:
    return pack_str(pk, cmd->id.ptr, cmd->id.len);
  case K_U:
    return pack_str(pk, cmd->user.ptr, cmd->user.len);
  case K_US: {
    if ((rc = msgpack_pack_array(pk, cmd->users.count)) != 0)
      return rc;
    size_t pos = 0;
    wsg_cmd_str u;
    while (rc == 0 && wsg_cmd_users_next(cmd, &pos, &u) == 1)
      rc = pack_str(pk, u.ptr, u.len);
    return rc;
  }
  case K_C:
    return msgpack_pack_uint64(pk, cmd->conn);
  case K_CH:
    return pack_str(pk, cmd->channel.ptr, cmd->channel.len);
  case K_CC:
    return msgpack_pack_uint64(pk, cmd->close_code);
  case K_CR:
    return pack_str(pk, cmd->close_reason.ptr, cmd->close_reason.len);
  case K_B:
    return cmd->binary ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
  case K_D:
    if ((rc = msgpack_pack_bin(pk, cmd->data_len)) != 0)
      return rc;
    return msgpack_pack_bin_body(pk, cmd->data, cmd->data_len);
  case K_TS:
    return msgpack_pack_uint64(pk, cmd->ts_us);
  default:
    return -1;
  }
}

int wsg_command_encode(const wsg_command *cmd, wsg_buf *b, const char **err_field) {
  const char *dummy;
  const char **field = err_field ? err_field : &dummy;
  *field = "";
  b->len = 0;
  int rc = check_command(cmd, field);
  if (rc != WSG_ENV_OK)
    return rc;
  if (cmd->fields & WSG_CF_USERS) {
    size_t pos = 0, n = 0;
    wsg_cmd_str u;
    while (wsg_cmd_users_next(cmd, &pos, &u) == 1) {
      if ((rc = check_str(u, WSG_MAX_USER_LEN)) != WSG_ENV_OK)
        FAIL(rc, "us");
      n++;
    }
    if (n != cmd->users.count)
      FAIL(WSG_ENV_BAD_VALUE, "us");
  }
  size_t pairs = 2;
  for (int k = K_ID; k < K_COUNT; k++)
    pairs += (cmd->fields & keys[k].flag) != 0;
  sink s = {b, WSG_ENV_OK};
  msgpack_packer pk;
  msgpack_packer_init(&pk, &s, sink_write);
  rc = msgpack_pack_map(&pk, pairs);
  for (int k = 0; rc == 0 && k < K_COUNT; k++)
    if (k == K_V || k == K_T || (cmd->fields & keys[k].flag))
      rc = pack_field(&pk, cmd, (key_id)k);
  if (rc != 0) {
    b->len = 0;
    return s.err != WSG_ENV_OK ? s.err : WSG_ENV_INVALID;
  }
  return WSG_ENV_OK;
}
