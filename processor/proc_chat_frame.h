/*
 * proc_chat_frame: the frames the chat handler sends to clients, built from one list of fields in
 * either encoding: a JSON object (text frame) or a MessagePack map (binary frame), same keys, same
 * order. The chat commands (proc_chat_cmds.c) and the handler's bad_request answer use it.
 *
 * Threads: the consumer thread.
 */
#ifndef PROC_CHAT_FRAME_H
#define PROC_CHAT_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "proc_chat.h"
#include "wsgate_handler.h"

typedef enum { FV_STR, FV_INT, FV_BOOL, FV_STRS, FV_ID } proc_chat_fv_type;

/* One key and its value. Every pointer is borrowed until the frame is built. */
typedef struct {
  const char *key;
  proc_chat_fv_type t;
  const char *s;
  size_t n;
  int64_t i;
  const wsgate_str *strs;
  size_t nstrs;
  const proc_chat_cmd *cmd; /* FV_ID: the command's id, omitted when it had none */
} proc_chat_fv;

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
  uint8_t *data; /* malloc'ed: the caller frees it */
  size_t len;
  bool binary;
} proc_chat_frame;

/* Builds fields f[0..n) as MessagePack (`msgpack`) or JSON into `out`. Returns 0, or -1 when out
 * of memory (or a string that is not UTF-8 for JSON); `out` then holds nothing to free. */
int proc_chat_frame_build(bool msgpack, const proc_chat_fv *f, size_t n, proc_chat_frame *out);
/* Builds fields f[0..n) in the client's encoding and replies it to the origin. Returns a
 * WSGATE_E_* code (wsgate_reply's, or WSGATE_E_NOMEM). */
int proc_chat_frame_reply(wsgate_ctx *ctx, bool msgpack, const proc_chat_fv *f, size_t n);
/* Replies {"type":"error","code":code,"message":msg,"id":...} in the client's encoding; `cmd`
 * (may be NULL) gives the id. Returns as proc_chat_frame_reply. */
int proc_chat_frame_error(wsgate_ctx *ctx, bool msgpack, const proc_chat_cmd *cmd, const char *code,
                          const char *msg);

#endif
