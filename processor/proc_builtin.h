/*
 * proc_builtin: the table of handlers built into wsgate-processor, the one place a built-in is
 * registered. It drives `--handler NAME` lookup, the error that lists the built-ins, the names
 * the `--handler` option's help quotes (PROC_BUILTIN_NAMES, a string literal), and the list in
 * docs/HANDLERS.md (tests/unit/proc_builtin_test.c fails when that list and this table differ).
 *
 * Adding a built-in: its own proc_<name>.{c,h} returning a static wsgate_handler, one row in
 * PROC_BUILTINS below, its header in proc_builtin.c, its file in processor/meson.build, and its row
 * in docs/HANDLERS.md.
 *
 * Threads: any (the table is constant).
 */
#ifndef PROC_BUILTIN_H
#define PROC_BUILTIN_H

#include <stddef.h>

#include "wsgate_handler.h"

/*
 * X(name, constructor, help) per built-in, SEP between rows; the first row is the default of
 * --handler. `help` is one line without Markdown, quoted by docs/HANDLERS.md after "built in: ".
 */
#define PROC_BUILTINS(X, SEP)                                                                      \
  X(echo, proc_echo_handler,                                                                       \
    "every client frame back to its sender, same bytes, same text/binary kind")                    \
  SEP X(chat, proc_chat_handler, "rooms and direct messages, JSON or MessagePack clients") SEP X(  \
      publish, proc_pubsub_handler,                                                                \
      "a frame <channel>\\n<payload> is published to the channel (tests, benchmarks)")

#define PROC_BUILTIN__NAME(name, ctor, help) #name
/* "echo, chat": the built-ins' names as one string literal, usable in a static initialiser. */
#define PROC_BUILTIN_NAMES PROC_BUILTINS(PROC_BUILTIN__NAME, ", ")

typedef struct {
  const char *name;                    /* what --handler takes */
  const wsgate_handler *(*open)(void); /* returns the static table; never NULL */
  const char *help;                    /* one line, no Markdown */
} proc_builtin;

/* Every built-in, in PROC_BUILTINS' order; *count set to their number. Static. */
const proc_builtin *proc_builtin_list(size_t *count);
/* The built-in handler called `name`; NULL if there is none. Static. */
const wsgate_handler *proc_builtin_find(const char *name);

#endif
