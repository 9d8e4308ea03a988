/*
 * proc_chat: the built-in `chat` handler: rooms and direct messages (docs/HANDLERS.md has the
 * protocol a client speaks).
 *
 * A client sends commands as a JSON object in a text frame or a MessagePack map in a binary frame:
 *   {"op":"join","room":R}  {"op":"leave","room":R}  {"op":"members","room":R}
 *   {"op":"say","room":R,"text":T}  {"op":"dm","to":U,"text":T}      optional "id" (echoed)
 * and gets frames in the encoding it used: JSON text frames for a JSON client, MessagePack binary
 * frames for a MessagePack client. A room R is the channel room:R: join subscribes every connection
 * of the user (wsgate_subscribe), say is one wsgate_publish, members is the channel's presence.
 * The only per-user state is the bounded set of the user's rooms (its TTL renewed by joins and
 * connections), so a message costs the same in a room of 2 and of 10,000.
 *
 * The parser is exposed for tests: client input is hostile, and every limit is checked before it
 * is used (size before parsing; MessagePack validated with wsg_msgpack_validate before msgpack-c
 * unpacks it; every string's length and UTF-8).
 *
 * Files: proc_chat.c (the handler: settings, parse then dispatch), proc_chat_parse.c (the parser),
 * proc_chat_cmds.{c,h} (the command table and the commands), proc_chat_frame.{c,h} (frames to
 * clients in either encoding).
 *
 * Threads: the consumer thread.
 */
#ifndef PROC_CHAT_H
#define PROC_CHAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wsgate_handler.h"

#define PROC_CHAT_ROOM_MAX 64 /* bytes of a room name */
#define PROC_CHAT_ID_MAX   64 /* bytes of a string "id" */

const wsgate_handler *proc_chat_handler(void); /* static; never NULL */

typedef enum {
  PROC_CHAT_JOIN = 1,
  PROC_CHAT_LEAVE,
  PROC_CHAT_SAY,
  PROC_CHAT_DM,
  PROC_CHAT_MEMBERS,
} proc_chat_op;

typedef enum { PROC_CHAT_ID_NONE, PROC_CHAT_ID_STR, PROC_CHAT_ID_INT } proc_chat_id_kind;

typedef struct {
  size_t max_frame; /* bytes of one client frame */
  size_t max_text;  /* bytes of `text` */
} proc_chat_limits;

/* A parsed command. Strings are not NUL-terminated and point into the frame or into the parser's
 * state: valid until proc_chat_cmd_finish(). */
typedef struct {
  proc_chat_op op;
  bool msgpack; /* the client spoke MessagePack (binary frame) */
  const char *room;
  size_t room_len;
  const char *to;
  size_t to_len;
  const char *text;
  size_t text_len;
  proc_chat_id_kind id_kind;
  const char *id_str;
  size_t id_len;
  int64_t id_int;
  void *json_root; /* private: the jansson document the strings point into */
} proc_chat_cmd;

/*
 * Parses one client frame. Returns 0, or -1 with a message for the client in `err` (e.g. "room:
 * longer than 64 bytes"). Call proc_chat_cmd_finish() either way.
 */
int proc_chat_parse(const uint8_t *frame, size_t len, bool binary, const proc_chat_limits *lim,
                    proc_chat_cmd *cmd, char *err, size_t errlen);
void proc_chat_cmd_finish(proc_chat_cmd *cmd);

#endif
