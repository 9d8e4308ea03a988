/*
 * wsg_envelope_json: an envelope as one line of JSON, the rendering shared by wsgate-dump and the
 * golden vectors (the .json files in tests/golden/vectors). docs/PROTOCOL.md, "JSON rendering",
 * specifies it.
 *
 * For tools and tests, not for the hot path: rendering `m` goes through msgpack-c's unpacker
 * (after wsg_msgpack_validate()), which allocates.
 *
 * Threads: none of its own; reentrant.
 */
#ifndef WSG_ENVELOPE_JSON_H
#define WSG_ENVELOPE_JSON_H

#include "wsg_command.h"
#include "wsg_envelope.h"

/*
 * Replaces b's contents with the JSON rendering of `env` (borrowed; a decoded envelope, or any
 * envelope wsg_envelope_encode() accepts). b->data[b->len] is a NUL not counted in b->len, so the
 * text can be printed as a C string. Returns WSG_ENV_OK, or WSG_ENV_INVALID / WSG_ENV_TOO_DEEP if
 * `m` is not valid metadata, WSG_ENV_NOMEM, or WSG_ENV_TOO_LONG when b's cap is reached.
 */
int wsg_envelope_to_json(const wsg_envelope *env, wsg_buf *b);

/* The same for a command of the commands topic (wsg_command.h): its keys in wire order, `d` as
 * base64 and `d_text` as above. Returns WSG_ENV_OK, WSG_ENV_NOMEM or WSG_ENV_TOO_LONG. */
int wsg_command_to_json(const wsg_command *cmd, wsg_buf *b);

#endif
