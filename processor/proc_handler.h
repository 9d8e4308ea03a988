/*
 * proc_handler: the processor's side of wsgate_handler.h: finding a handler by name (a built-in
 * from proc_builtin's table, or a shared object loaded with dlopen), and calling it for one
 * decoded envelope with a context whose functions record the handler's actions in the batch's
 * outbox and run its Redis commands through the router.
 *
 * Threads: the consumer thread (a handler's callbacks are never called concurrently).
 */
#ifndef PROC_HANDLER_H
#define PROC_HANDLER_H

#include <stddef.h>
#include <stdint.h>

#include "proc_outbox.h"
#include "proc_redis.h"
#include "wsg_envelope.h"
#include "wsgate_handler.h"

typedef struct proc_handler proc_handler;

/*
 * Opens handler `name`: a built-in (proc_builtin.h), or a path (anything containing '/') to a
 * shared object exporting wsgate_handler_v1. Calls its init with `arg` (may be NULL). Returns 0,
 * or -1 with a message saying what to do (exit 2). Caller closes.
 */
int proc_handler_open(proc_handler **out, const char *name, const char *arg, char *err,
                      size_t errlen);
/* Opens a handler from a table linked into the program (an embedder's, or a test's); calls its
 * init with `arg`. `vt` is borrowed for the handler's life. Returns 0, or -1 with a message. */
int proc_handler_open_table(proc_handler **out, const wsgate_handler *vt, const char *arg,
                            char *err, size_t errlen);
/* Calls the handler's destroy and unloads it. NULL is a no-op. */
void proc_handler_close(proc_handler *h);
const char *proc_handler_name(const proc_handler *h); /* borrowed */

/* What a dispatch may use. Borrowed for the call. */
typedef struct {
  proc_outbox *box;
  proc_redis *router;   /* NULL: wsgate_redis() fails with WSGATE_E_REDIS */
  const char *prefix;   /* wsgate_redis_prefix() */
  uint64_t max_payload; /* --max-payload */
} proc_dispatch_env;

/*
 * Calls the callback for `env`'s kind (msg, connect, disconnect; other kinds are not for
 * processors and return WSGATE_REJECT). `rec` tags the recorded actions. Returns the callback's
 * status (WSGATE_OK when the handler has no callback for the kind). On WSGATE_RETRY the actions
 * of this call have been rolled back. On ERROR or REJECT, `why` holds the handler's reason (or a
 * generic one).
 */
int proc_handler_dispatch(proc_handler *h, const proc_dispatch_env *denv, uint32_t rec,
                          const wsg_envelope *env, int32_t partition, int64_t offset, char *why,
                          size_t whylen);

#endif
