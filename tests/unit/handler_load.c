/*
 * handler_load PLUGIN [ARG]: opens a handler the way `wsgate-processor --handler PLUGIN
 * --handler-arg ARG` does (proc_handler_open: dlopen, the wsgate_handler_v1 entry, the ABI
 * version check, init), prints its name and closes it. Exit 0 if it loaded, 1 with the
 * processor's message if not. Used by handler_install_test.sh on handlers built out of tree.
 */
#include <stdio.h>

#include "proc_handler.h"

int main(int argc, char **argv) {
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: handler_load PLUGIN [ARG]\n");
    return 2;
  }
  proc_handler *h = NULL;
  char err[1024];
  if (proc_handler_open(&h, argv[1], argc == 3 ? argv[2] : NULL, err, sizeof(err)) != 0) {
    fprintf(stderr, "handler_load: %s\n", err);
    return 1;
  }
  printf("%s: handler %s loaded\n", argv[1], proc_handler_name(h));
  proc_handler_close(h);
  return 0;
}
