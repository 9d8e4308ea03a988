/*
 * wsg_chns: channel namespaces and their options (docs/ARCHITECTURE.md, "Channels"), declared once
 * for the gateway and the processor. A channel's namespace is the part of its name before the
 * first ':' ("news:eu" is in "news"); a name without ':', or whose namespace is not configured,
 * gets the default options (the row named "default" replaces them).
 *
 *   --channel-namespace news=history_size=100,history_ttl=5m,presence=true,client_publish=false,
 *                       subscribe=claim
 *
 * Repeated (a KVLIST: one key per namespace), or WSGATE_CHANNEL_NAMESPACES="a=...;b=...".
 * wsg_chns_resolve() validates the rows into a table; lookups never allocate.
 *
 * Threads: parsed on the main thread; the table is read-only afterwards (any thread).
 */
#ifndef WSG_CHNS_H
#define WSG_CHNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wsg_config.h"

#define WSG_CHNS_NAME_MAX        64
#define WSG_CHNS_MAX             256
#define WSG_CHNS_HISTORY_MAX     100000
#define WSG_CHNS_DEFAULT_HISTORY 0
#define WSG_CHNS_DEFAULT_TTL_MS  (5ULL * 60 * 1000)

/* The options of one namespace. */
typedef struct {
  uint32_t history_size;   /* publications kept per channel (MAXLEN ~); 0: none */
  uint64_t history_ttl_ms; /* the history (and the offset counter) expire this long after the
                              channel's last publication */
  bool presence;           /* the gateway writes ch:{c:<channel>}:pc, :p:<member>; handlers read */
  bool join_leave;         /* subscribers get join/leave events (needs presence) */
  bool client_presence;    /* clients may ask ({"wsgate":"presence"}; needs presence) */
  bool client_publish;     /* clients may publish ({"wsgate":"publish"}) */
  bool subscribe_handler;  /* subscribe=handler: the handler's on_subscribe decides, not the
                              token's claim */
} wsg_chns_opts;

/* The option group's struct, embedded in each program's config. */
typedef struct {
  wsg_kvlist rows; /* name -> "k=v,k=v" */
} wsg_chns_options;

extern const wsg_option_group wsg_chns_group;

typedef struct wsg_chns wsg_chns;

/* Validates o's rows into a table (caller destroys). Returns 0, or -1 with the row and the
 * problem in err ("--channel-namespace news: history_size: 0..100000"). o: borrowed. */
int wsg_chns_resolve(const wsg_chns_options *o, wsg_chns **out, char *err, size_t errlen);
void wsg_chns_destroy(wsg_chns *t); /* NULL is a no-op */

/* The options of the channel name[0..len) (never NULL; the defaults when t is NULL). */
const wsg_chns_opts *wsg_chns_of(const wsg_chns *t, const char *name, size_t len);

/* Parses one row's value ("history_size=100,presence=true") over *opts. 0, or -1 with err. */
int wsg_chns_parse_opts(const char *text, wsg_chns_opts *opts, char *err, size_t errlen);

#endif
