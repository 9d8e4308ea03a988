/*
 * proc_commands: executes the commands backends produce to the commands topic (wsg_command.h,
 * docs/API.md): sends to users, to one connection, disconnects, publications to channels. They
 * are recorded in the batch's outbox like a handler's actions, so they get the same routing (one
 * pipelined lookup per batch), resume numbering (proc_redis_append), channel numbering and
 * storage (proc_publish) and per-gateway batching.
 *
 * The queries (presence, history, info) are refused with a reason: they have no reply path on
 * Kafka and are answered by wsgate-api over HTTP.
 *
 * Threads: the consumer thread.
 */
#ifndef PROC_COMMANDS_H
#define PROC_COMMANDS_H

#include <stddef.h>
#include <stdint.h>

#include "proc_handler.h"

typedef struct proc_commands proc_commands;

proc_commands *proc_commands_create(void);    /* NULL when out of memory; caller destroys */
void proc_commands_destroy(proc_commands *c); /* NULL is a no-op */

/*
 * Decodes the record value `buf` as a command and records what it asks in `denv->box`, tagged
 * `rec`. Returns WSGATE_OK; WSGATE_REJECT with `why` for a command that is malformed or cannot
 * be executed (dead-lettered); WSGATE_RETRY when Redis failed looking up a connection (nothing
 * recorded: call again after a backoff). *ts_us is the command's `ts` (when it was accepted), 0
 * when it has none or does not decode.
 */
int proc_commands_execute(proc_commands *c, const proc_dispatch_env *denv, uint32_t rec,
                          const uint8_t *buf, size_t len, uint64_t *ts_us, char *why,
                          size_t whylen);

#endif
