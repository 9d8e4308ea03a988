/*
 * wsg_command: the command envelope backends produce to the commands topic (wsgate.commands),
 * directly or through wsgate-api (docs/PROTOCOL.md, "Commands", is the specification;
 * tests/golden/vectors/cmd_*.bin pin the bytes). Processors execute the commands with the same
 * routing, resume numbering and per-gateway batching as handler sends.
 *
 * One MessagePack map with short string keys, written in this order:
 *   v  uint   version (1)                   t  str   command: send disconnect publish presence
 *   id str    command id (idempotency key)           history info
 *   u  str    user                          us array of str: users (send)
 *   c  uint   connection (with u)           ch str   channel
 *   cc uint   close code (disconnect)       cr str   close reason
 *   b  bool   payload is binary             d  bin   payload
 *   ts uint   microseconds since the epoch: when the command was accepted
 * Unknown keys are skipped (a newer writer may add keys); known keys are checked like the
 * envelope's (wsg_envelope.h): types, lengths, UTF-8, duplicates, trailing bytes.
 *
 * Decoding never allocates; the decoded strings and payload point INTO the input buffer.
 *
 * Threads: none of its own; every function is reentrant.
 */
#ifndef WSG_COMMAND_H
#define WSG_COMMAND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wsg_envelope.h"

#define WSG_COMMAND_VERSION 1
#define WSG_MAX_CMD_ID_LEN  128  /* bytes of `id` */
#define WSG_MAX_CMD_USERS   1000 /* entries of `us` */

/* X-macro: name, wire name, what it does. Generates the enum and the name table. */
#define WSG_CMD_MAP(X)                                                                             \
  X(SEND, "send", "send d to every connection of u, of each user of us, or to connection c of u")  \
  X(DISCONNECT, "disconnect", "close every connection of u, or connection c of u, with cc/cr")     \
  X(PUBLISH, "publish", "publish d to channel ch")                                                 \
  X(PRESENCE, "presence", "who is subscribed to channel ch (a query: HTTP only)")                  \
  X(HISTORY, "history", "the recent publications of channel ch (a query: HTTP only)")              \
  X(INFO, "info", "gateways, slots and connection counts (a query: HTTP only)")

typedef enum {
  WSG_CMD_NONE = 0,
#define WSG_CMD_ENUM(name, wire, help) WSG_CMD_##name,
  WSG_CMD_MAP(WSG_CMD_ENUM)
#undef WSG_CMD_ENUM
} wsg_cmd_kind;

const char *wsg_cmd_name(wsg_cmd_kind kind); /* "send", ...; "?" for others. Static. */
/* The kind named s[0..len), or WSG_CMD_NONE. */
wsg_cmd_kind wsg_cmd_lookup(const char *s, size_t len);

enum {
  WSG_CF_ID = 1u << 0,
  WSG_CF_USER = 1u << 1,
  WSG_CF_USERS = 1u << 2,
  WSG_CF_CONN = 1u << 3,
  WSG_CF_CHANNEL = 1u << 4,
  WSG_CF_CLOSE_CODE = 1u << 5,
  WSG_CF_CLOSE_REASON = 1u << 6,
  WSG_CF_BINARY = 1u << 7,
  WSG_CF_DATA = 1u << 8,
  WSG_CF_TS = 1u << 9,
};

/* A string of a command, borrowed. */
typedef struct {
  const char *ptr;
  size_t len;
} wsg_cmd_str;

typedef struct {
  wsg_cmd_kind kind;
  uint32_t fields; /* WSG_CF_* */
  wsg_cmd_str id;
  wsg_cmd_str user;
  /* us. Decode: the array's MessagePack bytes, read with wsg_cmd_users_next(); encode: `user_list`
   * (users.count entries) when not NULL, else the raw bytes. */
  struct {
    const uint8_t *raw;
    size_t raw_len;
    uint32_t count;
  } users;
  const wsg_cmd_str *user_list; /* encode only; borrowed */
  uint64_t conn;
  wsg_cmd_str channel;
  uint16_t close_code;
  wsg_cmd_str close_reason;
  bool binary;
  const uint8_t *data;
  size_t data_len;
  uint64_t ts_us;
} wsg_command;

/*
 * Decodes one command from exactly `len` bytes; `cmd`'s pointers borrow from `buf`. Returns
 * WSG_ENV_OK or a negative wsg_env_err, with *err_field (may be NULL) naming the key at fault, or
 * "" for the map as a whole. Besides types and bounds, checks each command's required fields:
 * send needs d and exactly one of u and us (c only with u); disconnect needs u (c optional); a
 * close code must be one an application may use (1000, 3000-3999, 4100-4999) and cr needs cc;
 * publish needs ch and d; presence and history need ch; every key not used by its command is
 * rejected (BAD_VALUE).
 */
int wsg_command_decode(wsg_command *cmd, const uint8_t *buf, size_t len, const char **err_field);

/*
 * A MessagePack array of commands (wsgate-api's batch body): decodes element i into cmds[i], for
 * at most `max` elements (more: WSG_ENV_TOO_LONG). Returns WSG_ENV_OK with *n set, or the first
 * error with *index the element at fault (SIZE_MAX: the array itself) and *err_field as above.
 */
int wsg_command_decode_array(const uint8_t *buf, size_t len, wsg_command *cmds, size_t max,
                             size_t *n, size_t *index, const char **err_field);

/* Iterates a decoded `us`: returns 1 and sets *u, 0 at the end. *pos starts at 0. */
int wsg_cmd_users_next(const wsg_command *cmd, size_t *pos, wsg_cmd_str *u);

/* Encodes `cmd` into `b` (replacing its contents), after the checks of the decoder, so what is
 * encoded decodes. Returns WSG_ENV_OK or a negative wsg_env_err with *err_field as above. */
int wsg_command_encode(const wsg_command *cmd, wsg_buf *b, const char **err_field);

/* The Kafka key that keeps order: the user (u, or the first of us), the channel (ch), or NULL
 * with *len 0 (info). Borrowed from `cmd`. */
const char *wsg_command_key(const wsg_command *cmd, size_t *len);

#endif
