/*
 * proc_chat_cmds: the chat handler's commands, one table (op name, the keys it requires, the
 * function that runs it, a help line) that drives parsing (proc_chat_parse.c looks the op up and
 * checks the keys), dispatch (proc_chat.c calls the row's function), the "unknown command" answer
 * (it lists the table's ops) and docs/HANDLERS.md's command table (checked by
 * tests/unit/proc_chat_cmds_test.c).
 *
 * Adding a command: a value in proc_chat_op (proc_chat.h), its function and its row in
 * proc_chat_cmds.c, a new key (if any) in proc_chat_parse.c's key table and PROC_CHAT_K_*, and
 * its row in docs/HANDLERS.md.
 *
 * Threads: the consumer thread.
 */
#ifndef PROC_CHAT_CMDS_H
#define PROC_CHAT_CMDS_H

#include <stddef.h>
#include <stdint.h>

#include "proc_chat.h"
#include "wsgate_handler.h"

/* The keys of a command, as bits (the order of "missing" checks is the order of the bits). */
enum {
  PROC_CHAT_K_OP = 1,
  PROC_CHAT_K_ROOM = 2,
  PROC_CHAT_K_TO = 4,
  PROC_CHAT_K_TEXT = 8,
  PROC_CHAT_K_ID = 16,
};

/* What a dm to a user with no live connection answers (docs/HANDLERS.md, `dm_offline`). */
typedef enum {
  PROC_CHAT_DM_SILENT = 0, /* nothing, as for a delivered dm: no presence oracle (the default) */
  PROC_CHAT_DM_TELL = 1,   /* an `offline` error to the sender */
} proc_chat_dm_offline;

/* The handler's state: its --handler-arg settings. */
typedef struct {
  uint32_t max_rooms;  /* rooms one user may be in */
  uint32_t room_ttl_s; /* membership lapses this long after the latest join or connection */
  proc_chat_dm_offline dm_offline;
  proc_chat_limits lim;
} proc_chat_state;

/* Runs a parsed command. Returns the callback's status (WSGATE_OK, _RETRY, _ERROR). */
typedef int (*proc_chat_run_fn)(const proc_chat_state *st, wsgate_ctx *ctx, const wsgate_event *ev,
                                const proc_chat_cmd *cmd);

typedef struct {
  const char *name;     /* the "op" a client sends */
  proc_chat_op op;      /* what the parser stores in proc_chat_cmd.op */
  unsigned requires;    /* PROC_CHAT_K_* bits the command must carry besides op */
  proc_chat_run_fn run; /* never NULL */
  const char *help;     /* its effect, one line (docs/HANDLERS.md's "effect" column) */
} proc_chat_cmd_def;

/* Every command, in the order they are listed to clients; *count set to their number. Static. */
const proc_chat_cmd_def *proc_chat_cmds_list(size_t *count);
/* The command a client calls `name` (`len` bytes, not NUL-terminated); NULL if none. Static. */
const proc_chat_cmd_def *proc_chat_cmds_find(const char *name, size_t len);
/* The row of a parsed op; NULL if none. Static. */
const proc_chat_cmd_def *proc_chat_cmds_get(proc_chat_op op);
/* Writes "join, leave, ..." (the table's ops) into buf; returns buf. */
const char *proc_chat_cmds_names(char *buf, size_t len);

/* on_subscribe (namespaces with subscribe=handler): allows room:<R> to members of R (a client
 * resubscribing with `since` after a reconnect), refuses anything else. Returns the status. */
int proc_chat_may_subscribe(const proc_chat_state *st, wsgate_ctx *ctx, const wsgate_event *ev);

/* on_connect: subscribes the new connection to the channel of each of its user's rooms and
 * renews the membership's TTL. Returns the callback's status. */
int proc_chat_resubscribe(const proc_chat_state *st, wsgate_ctx *ctx, const wsgate_event *ev);

#endif
