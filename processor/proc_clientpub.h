/*
 * proc_clientpub: a client's publish op ({"wsgate":"publish","channel":..,"data":..}, or the
 * MessagePack map whose first key is "wsgate"), which its gateway forwarded as the client's
 * `msg` after checking the token's channels claim and the namespace's client_publish
 * (docs/PROTOCOL.md, "Channels"). The processor publishes it itself, before any handler sees
 * it: the namespace is the opt-in, the claim the permission.
 *
 * Threads: any; reentrant.
 */
#ifndef PROC_CLIENTPUB_H
#define PROC_CLIENTPUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
  char channel[201]; /* NUL-terminated copy */
  size_t channel_len;
  const uint8_t *data; /* points into the op (MessagePack) or into `text` (JSON, unescaped) */
  size_t len;
  bool binary;
  char *text; /* JSON: the unescaped payload, heap (proc_clientpub_finish frees it) */
} proc_clientpub;

/* 1: d[0..len) is a publish op, parsed into *out (finish it); 0: not a publish op (an ordinary
 * frame, or another op: the handler gets it); -1: a malformed publish op. d: borrowed. */
int proc_clientpub_parse(const uint8_t *d, size_t len, bool binary, proc_clientpub *out);
void proc_clientpub_finish(proc_clientpub *p);

#endif
