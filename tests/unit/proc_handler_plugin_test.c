/*
 * The example plugin (processor/examples/uppercase.c, built as a shared module) loaded the way
 * --handler ./libwsgate_uppercase.so loads it: dlopen, the wsgate_handler_v1 entry, its init
 * with --handler-arg, and its callbacks acting through the context's function table.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "proc_testutil.h"

#ifndef WSG_UPPERCASE_PLUGIN
#error "meson passes the path of the built example plugin"
#endif

Test(proc_handler_plugin, uppercase_replies_and_greets) {
  ptest_proc t;
  ptest_proc_init(&t, WSG_UPPERCASE_PLUGIN, "> ", NULL, 16);
  cr_assert_str_eq(proc_handler_name(t.h), "uppercase");
  cr_assert_eq(ptest_event(&t, WSG_ENV_CONNECT, "zoë", 5, "gw-a", 2), WSGATE_OK);
  cr_assert_eq(ptest_msg(&t, "zoë", 5, "gw-a", 2, "héllo, world", 13, false, NULL, 0), WSGATE_OK);
  ptest_flush(&t);
  cr_assert_eq(t.nout, 2);
  cr_assert_eq(t.out[0].env.data_len, strlen("HELLO zoë"));
  cr_assert_eq(memcmp(t.out[0].env.data, "HELLO zoë", t.out[0].env.data_len), 0);
  const char *want = "> HéLLO, WORLD";
  cr_assert_eq(t.out[1].env.data_len, strlen(want));
  cr_assert_eq(memcmp(t.out[1].env.data, want, strlen(want)), 0,
               "ASCII letters upper-cased, UTF-8 untouched");
  cr_assert_eq(t.out[1].env.conn, 5);
  cr_assert_eq(t.out[1].partition, 2);
  ptest_proc_finish(&t);
}

Test(proc_handler_plugin, binary_frames_are_rejected_with_a_reason) {
  ptest_proc t;
  ptest_proc_init(&t, WSG_UPPERCASE_PLUGIN, NULL, NULL, 16);
  char why[256];
  cr_assert_eq(ptest_msg(&t, "u", 1, "gw-a", 0, "\x01\x02", 2, true, why, sizeof(why)),
               WSGATE_REJECT);
  cr_assert_str_eq(why, "binary frames are not supported");
  ptest_flush(&t);
  cr_assert_eq(t.nout, 0);
  ptest_proc_finish(&t);
}

Test(proc_handler_plugin, init_errors_reach_the_operator) {
  proc_handler *h = NULL;
  char err[512];
  char arg[100];
  memset(arg, 'x', sizeof(arg) - 1);
  arg[sizeof(arg) - 1] = '\0';
  cr_assert_eq(proc_handler_open(&h, WSG_UPPERCASE_PLUGIN, arg, err, sizeof(err)), -1);
  cr_assert(strstr(err, "init failed: the prefix"), "%s", err);
}

Test(proc_handler_plugin, a_library_without_the_entry_is_refused) {
  proc_handler *h = NULL;
  char err[512];
  /* Any shared object without wsgate_handler_v1: the C library is always there. */
  cr_assert_eq(proc_handler_open(&h, "/lib/x86_64-linux-gnu/libc.so.6", NULL, err, sizeof(err)),
               -1);
  cr_assert(strstr(err, "no symbol wsgate_handler_v1") || strstr(err, "cannot load"), "%s", err);
}
