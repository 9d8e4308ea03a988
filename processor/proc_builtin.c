/*
 * proc_builtin: the built-in handlers' table (see proc_builtin.h).
 *
 * Threads: any.
 */
#include "proc_builtin.h"

#include <string.h>

#include "proc_chat.h"
#include "proc_echo.h"
#include "proc_pubsub.h"

#define ROW(name, ctor, help) {#name, ctor, help},

static const proc_builtin builtins[] = {PROC_BUILTINS(ROW, )};

const proc_builtin *proc_builtin_list(size_t *count) {
  *count = sizeof(builtins) / sizeof(builtins[0]);
  return builtins;
}

const wsgate_handler *proc_builtin_find(const char *name) {
  for (size_t i = 0; i < sizeof(builtins) / sizeof(builtins[0]); i++)
    if (strcmp(builtins[i].name, name) == 0)
      return builtins[i].open();
  return NULL;
}
