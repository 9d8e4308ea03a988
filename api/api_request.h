/*
 * api_request: decodes the body of a wsgate-api request into commands (wsg_command.h). The
 * request decides what a hostile body gets: every error names the field at fault.
 *
 *   JSON (application/json, the default): one object per command, with the names of docs/API.md
 *   ("user", "users", "conn", "data", "data_base64", "code", "reason", "channel"; in a batch also
 *   "command"); a batch is {"commands": [...]}. Unknown fields, wrong types, values out of range
 *   and nesting jansson refuses are errors.
 *   MessagePack (application/msgpack or application/x-msgpack): the command envelope itself, as
 *   on Kafka (docs/PROTOCOL.md, "Commands"); a batch is an array of them.
 *
 * Threads: any; a decoded batch belongs to the caller's thread.
 */
#ifndef API_REQUEST_H
#define API_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "wsg_command.h"

/* What the path asks for; a batch may mix send and disconnect. */
typedef enum {
  API_OP_SEND,
  API_OP_DISCONNECT,
  API_OP_PUBLISH,
  API_OP_BATCH,
} api_op;

typedef struct {
  wsg_command *cmds; /* n commands; their strings point into the body or into `priv` */
  size_t n;
  void *priv; /* what the commands borrow (the parsed JSON, decoded base64) */
} api_batch;

/*
 * Decodes `body` for `op` with at most `max_cmds` commands and payloads of at most `max_payload`
 * bytes. `content_type` may be NULL (JSON). Returns 0, or an HTTP status (400, 413 for a payload
 * over the limit, 415 for an unsupported type) with the problem in `why` and the field in
 * `field` ("" when the body as a whole is wrong; "commands[3].user" inside a batch). Release
 * `b` with api_batch_finish() whatever the result.
 */
int api_request_decode(api_batch *b, api_op op, const char *content_type, const uint8_t *body,
                       size_t len, size_t max_cmds, size_t max_payload, char *field,
                       size_t fieldlen, char *why, size_t whylen);
void api_batch_finish(api_batch *b);

#endif
