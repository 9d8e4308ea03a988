/*
 * The echo handler through the processor's own dispatch and outbox: a frame comes back to exactly
 * the connection that sent it (its gateway, slot and id, from the envelope alone), with the same
 * bytes and kind; what cannot be echoed is rejected, never sent.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "proc_testutil.h"

Test(proc_echo, text_frame_comes_back_to_its_connection) {
  ptest_proc t;
  ptest_proc_init(&t, "echo", NULL, NULL, 16);
  cr_assert_eq(ptest_msg(&t, "alice", 77, "gw-a", 5, "hello", 5, false, NULL, 0), WSGATE_OK);
  ptest_flush(&t);
  cr_assert_eq(t.nout, 1);
  const ptest_out *o = &t.out[0];
  cr_assert_eq(o->partition, 5, "outbound partition = the origin's slot");
  cr_assert_eq(o->env.kind, WSG_ENV_DELIVER);
  cr_assert_eq(o->env.gateway_len, 4);
  cr_assert_eq(memcmp(o->env.gateway, "gw-a", 4), 0, "g = the origin gateway (fencing)");
  cr_assert_eq(o->env.slot, 5);
  cr_assert(o->env.fields & WSG_F_CONN);
  cr_assert_not(o->env.fields & WSG_F_CONNS);
  cr_assert_eq(o->env.conn, 77);
  cr_assert_eq(o->env.data_len, 5);
  cr_assert_eq(memcmp(o->env.data, "hello", 5), 0);
  cr_assert_not(o->env.binary);
  cr_assert_eq(t.stats.undeliverable, 0);
  ptest_proc_finish(&t);
}

Test(proc_echo, binary_frame_keeps_its_kind_and_bytes) {
  ptest_proc t;
  ptest_proc_init(&t, "echo", NULL, NULL, 16);
  const uint8_t bin[] = {0x00, 0xff, 0x80, 0xc1, 0x01};
  cr_assert_eq(ptest_msg(&t, "bob", 1, "gw-b", 0, bin, sizeof(bin), true, NULL, 0), WSGATE_OK);
  const uint8_t empty[] = {0};
  cr_assert_eq(ptest_msg(&t, "bob", 1, "gw-b", 0, empty, 0, false, NULL, 0), WSGATE_OK);
  ptest_flush(&t);
  cr_assert_eq(t.nout, 2);
  cr_assert(t.out[0].env.binary);
  cr_assert_eq(t.out[0].env.data_len, sizeof(bin));
  cr_assert_eq(memcmp(t.out[0].env.data, bin, sizeof(bin)), 0);
  cr_assert_eq(t.out[1].env.data_len, 0, "an empty frame echoes as an empty frame");
  cr_assert_eq(t.out[0].rec, 0);
  cr_assert_eq(t.out[1].rec, 1, "each output is tagged with the record that caused it");
  ptest_proc_finish(&t);
}

Test(proc_echo, connect_and_disconnect_send_nothing) {
  ptest_proc t;
  ptest_proc_init(&t, "echo", NULL, NULL, 16);
  cr_assert_eq(ptest_event(&t, WSG_ENV_CONNECT, "alice", 1, "gw-a", 1), WSGATE_OK);
  cr_assert_eq(ptest_event(&t, WSG_ENV_DISCONNECT, "alice", 1, "gw-a", 1), WSGATE_OK);
  ptest_flush(&t);
  cr_assert_eq(t.nout, 0);
  ptest_proc_finish(&t);
}

Test(proc_echo, invalid_utf8_text_is_rejected_not_sent) {
  ptest_proc t;
  ptest_proc_init(&t, "echo", NULL, NULL, 16);
  char why[256];
  const char bad[] = {'a', (char)0xc3, (char)0x28};
  cr_assert_eq(ptest_msg(&t, "eve", 9, "gw-a", 1, bad, sizeof(bad), false, why, sizeof(why)),
               WSGATE_REJECT);
  cr_assert(strstr(why, "invalid argument"), "%s", why);
  ptest_flush(&t);
  cr_assert_eq(t.nout, 0);
  ptest_proc_finish(&t);
}

Test(proc_echo, oversized_payload_is_rejected) {
  ptest_proc t;
  ptest_proc_init(&t, "echo", NULL, NULL, 16);
  t.denv.max_payload = 8;
  char why[256];
  cr_assert_eq(ptest_msg(&t, "eve", 9, "gw-a", 1, "123456789", 9, false, why, sizeof(why)),
               WSGATE_REJECT);
  cr_assert(strstr(why, "--max-payload"), "%s", why);
  cr_assert_eq(ptest_msg(&t, "eve", 9, "gw-a", 1, "12345678", 8, false, NULL, 0), WSGATE_OK);
  ptest_flush(&t);
  cr_assert_eq(t.nout, 1);
  ptest_proc_finish(&t);
}

Test(proc_echo, outbound_kinds_on_the_inbound_topic_are_rejected) {
  ptest_proc t;
  ptest_proc_init(&t, "echo", NULL, NULL, 16);
  wsg_envelope env = {.kind = WSG_ENV_DELIVER,
                      .fields = WSG_F_GATEWAY | WSG_F_CONN,
                      .gateway = "gw",
                      .gateway_len = 2,
                      .conn = 1};
  char why[256];
  cr_assert_eq(proc_handler_dispatch(t.h, &t.denv, 0, &env, 0, 0, why, sizeof(why)), WSGATE_REJECT);
  cr_assert(strstr(why, "deliver"), "%s", why);
  ptest_proc_finish(&t);
}

Test(proc_echo, unknown_handler_names_say_what_exists) {
  proc_handler *h = NULL;
  char err[512];
  cr_assert_eq(proc_handler_open(&h, "ehco", NULL, err, sizeof(err)), -1);
  cr_assert(strstr(err, "echo, chat"), "%s", err);
  cr_assert_eq(proc_handler_open(&h, "./no-such-plugin.so", NULL, err, sizeof(err)), -1);
  cr_assert(strstr(err, "cannot load"), "%s", err);
  proc_handler_close(NULL);
}
