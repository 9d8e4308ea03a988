/*
 * The handler API as a handler sees it: every action validated with the documented error
 * (state, arguments, per-callback limits), a retry forgets the call's actions, a close of a user
 * reaches each of their connections, statuses outside the contract count as errors.
 * The handlers are tables defined here and opened with proc_handler_open_table().
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "proc_testutil.h"

/* What the test handler should do on the next message, and what it observed. */
typedef enum {
  DO_LIMITS,
  DO_VALIDATION,
  DO_RETRY_AFTER_ACTIONS,
  DO_BAD_STATUS,
  DO_CLOSES,
  DO_REDIS,
} what;

static what todo;
static int seen[32]; /* return codes the handler observed, for the test to check */
static size_t nseen;

static void note(int rc) {
  if (nseen < sizeof(seen) / sizeof(seen[0]))
    seen[nseen++] = rc;
}

static int th_message(void *state, wsgate_ctx *ctx, const wsgate_event *ev) {
  (void)state;
  nseen = 0;
  switch (todo) {
  case DO_LIMITS: {
    int rc = WSGATE_OK, n = 0;
    while ((rc = wsgate_reply(ctx, "x", 1, false)) == WSGATE_OK)
      n++;
    note(n);
    note(rc);
    return WSGATE_OK;
  }
  case DO_VALIDATION: {
    note(wsgate_reply(ctx, "\xff", 1, false));                 /* text must be UTF-8 */
    note(wsgate_reply(ctx, NULL, 3, true));                    /* NULL with a length */
    note(wsgate_send_user(ctx, "", 0, "x", 1, false));         /* empty user */
    note(wsgate_send_user(ctx, "\xc3\x28", 2, "x", 1, false)); /* user not UTF-8 */
    note(wsgate_send_user_or_reply(ctx, "u", 1, "x", 1, false, NULL, 0, false));
    note(wsgate_close(ctx, 1005, NULL)); /* never sent on the wire */
    note(wsgate_close(ctx, 2999, NULL));
    char reason[200];
    memset(reason, 'r', sizeof(reason) - 1);
    reason[sizeof(reason) - 1] = '\0';
    note(wsgate_close(ctx, 4000, reason)); /* reason > 123 bytes */
    note(wsgate_send_users(ctx, NULL, 3, "x", 1, false));
    note(wsgate_send_users(ctx, NULL, 0, "x", 1, false)); /* nobody: nothing to do */
    return WSGATE_OK;
  }
  case DO_RETRY_AFTER_ACTIONS:
    wsgate_reply(ctx, "lost", 4, false);
    wsgate_send_user(ctx, "someone", 7, "lost", 4, false);
    return WSGATE_RETRY;
  case DO_BAD_STATUS:
    return 42;
  case DO_CLOSES:
    note(wsgate_close(ctx, 4001, "bye"));
    note(wsgate_close_user(ctx, "victim", 6, 1008, "policy"));
    return WSGATE_OK;
  case DO_REDIS: {
    note(strcmp(wsgate_redis_prefix(ctx), "wsgate:") == 0);
    const char *argv[] = {"PING"};
    wsgate_redis_cmd cmd = {.argc = 1, .argv = argv};
    const wsgate_redis_reply *r[1];
    note(wsgate_redis(ctx, &cmd, 1, r));
    return WSGATE_OK;
  }
  }
  (void)ev;
  return WSGATE_OK;
}

static int th_disconnect(void *state, wsgate_ctx *ctx, const wsgate_event *ev) {
  (void)state;
  (void)ev;
  nseen = 0;
  note(wsgate_reply(ctx, "x", 1, false));
  note(wsgate_close(ctx, 1000, NULL));
  note(wsgate_send_user_or_reply(ctx, "u", 1, "x", 1, false, "fb", 2, false));
  note(wsgate_send_user(ctx, "u", 1, "x", 1, false)); /* others can still be told */
  return WSGATE_OK;
}

static const wsgate_handler test_handler = {
    .abi_version = WSGATE_HANDLER_ABI_VERSION,
    .name = "test",
    .on_message = th_message,
    .on_disconnect = th_disconnect,
};

static void open_test(ptest_proc *t, ptest_redis *redis) {
  ptest_proc_init(t, "echo", NULL, redis, 16);
  proc_handler_close(t->h);
  char err[256];
  cr_assert_eq(proc_handler_open_table(&t->h, &test_handler, NULL, err, sizeof(err)), 0, "%s", err);
}

static int run(ptest_proc *t, what w, char *why, size_t whylen) {
  todo = w;
  return ptest_msg(t, "alice", 1, "gw-a", 3, "m", 1, false, why, whylen);
}

Test(proc_handler, per_callback_limits, .fini = ptest_fini) {
  ptest_proc t;
  open_test(&t, NULL);
  cr_assert_eq(run(&t, DO_LIMITS, NULL, 0), WSGATE_OK);
  cr_assert_eq(seen[0], WSGATE_MAX_ACTIONS);
  cr_assert_eq(seen[1], WSGATE_E_LIMIT);
  /* Bytes: with a tiny --max-payload the byte budget ends first. */
  t.denv.max_payload = 1;
  proc_outbox_reset(t.box);
  cr_assert_eq(run(&t, DO_LIMITS, NULL, 0), WSGATE_OK);
  cr_assert_eq(seen[0], WSGATE_MAX_PAYLOADS_PER_CALLBACK);
  cr_assert_eq(seen[1], WSGATE_E_LIMIT);
  ptest_proc_finish(&t);
}

Test(proc_handler, arguments_are_validated, .fini = ptest_fini) {
  ptest_proc t;
  open_test(&t, NULL);
  cr_assert_eq(run(&t, DO_VALIDATION, NULL, 0), WSGATE_OK);
  int want[] = {WSGATE_E_INVAL, WSGATE_E_INVAL, WSGATE_E_INVAL, WSGATE_E_INVAL, WSGATE_E_INVAL,
                WSGATE_E_INVAL, WSGATE_E_INVAL, WSGATE_E_INVAL, WSGATE_E_INVAL, WSGATE_OK};
  cr_assert_eq(nseen, sizeof(want) / sizeof(want[0]));
  for (size_t i = 0; i < nseen; i++)
    cr_assert_eq(seen[i], want[i], "check %zu: %s", i, wsgate_strerror(seen[i]));
  cr_assert_eq(proc_outbox_count(t.box), 0, "nothing invalid was recorded");
  ptest_proc_finish(&t);
}

Test(proc_handler, disconnect_cannot_reply_but_can_send, .fini = ptest_fini) {
  ptest_proc t;
  open_test(&t, NULL);
  cr_assert_eq(ptest_event(&t, WSG_ENV_DISCONNECT, "alice", 1, "gw-a", 3), WSGATE_OK);
  cr_assert_eq(seen[0], WSGATE_E_STATE);
  cr_assert_eq(seen[1], WSGATE_E_STATE);
  cr_assert_eq(seen[2], WSGATE_E_STATE);
  cr_assert_eq(seen[3], WSGATE_OK);
  cr_assert_eq(proc_outbox_count(t.box), 1);
  ptest_proc_finish(&t);
}

Test(proc_handler, retry_forgets_the_calls_actions, .fini = ptest_fini) {
  ptest_proc t;
  open_test(&t, NULL);
  todo = DO_CLOSES;
  cr_assert_eq(ptest_msg(&t, "bob", 2, "gw-a", 3, "m", 1, false, NULL, 0), WSGATE_OK);
  size_t before = proc_outbox_count(t.box);
  size_t nusers;
  proc_outbox_users(t.box, &nusers);
  cr_assert_eq(run(&t, DO_RETRY_AFTER_ACTIONS, NULL, 0), WSGATE_RETRY);
  cr_assert_eq(proc_outbox_count(t.box), before, "the retried call's actions are gone");
  size_t after;
  proc_outbox_users(t.box, &after);
  cr_assert_eq(after, nusers, "and so is the user it would have sent to");
  ptest_proc_finish(&t);
}

Test(proc_handler, statuses_outside_the_contract_are_errors, .fini = ptest_fini) {
  ptest_proc t;
  open_test(&t, NULL);
  char why[256];
  cr_assert_eq(run(&t, DO_BAD_STATUS, why, sizeof(why)), WSGATE_ERROR);
  cr_assert(strstr(why, "returned 42"), "%s", why);
  ptest_proc_finish(&t);
}

Test(proc_handler, closes_reach_the_origin_and_every_connection_of_a_user, .fini = ptest_fini) {
  ptest_redis redis;
  ptest_redis_start(&redis);
  itest_fake_gateway(redis.rc, redis.prefix, "gw-a", 3, 60000);
  itest_fake_gateway(redis.rc, redis.prefix, "gw-b", 4, 60000);
  itest_fake_conn(redis.rc, redis.prefix, "victim", 70, "gw-a");
  itest_fake_conn(redis.rc, redis.prefix, "victim", 71, "gw-b");
  ptest_proc t;
  open_test(&t, &redis);
  cr_assert_eq(run(&t, DO_CLOSES, NULL, 0), WSGATE_OK);
  cr_assert_eq(seen[0], WSGATE_OK);
  cr_assert_eq(seen[1], WSGATE_OK);
  ptest_flush(&t);
  cr_assert_eq(t.nout, 3);
  cr_assert_eq(t.out[0].env.kind, WSG_ENV_CLOSE);
  cr_assert_eq(t.out[0].env.conn, 1, "the origin");
  cr_assert_eq(t.out[0].env.close_code, 4001);
  cr_assert_eq(t.out[0].partition, 3);
  for (int i = 1; i < 3; i++) {
    cr_assert_eq(t.out[i].env.kind, WSG_ENV_CLOSE);
    cr_assert_eq(t.out[i].env.close_code, 1008);
    cr_assert_eq(t.out[i].env.conn, 69 + (uint64_t)i);
    cr_assert_eq(t.out[i].partition, 2 + i, "on each connection's own gateway");
  }
  ptest_proc_finish(&t);
  ptest_redis_stop(&redis);
}

Test(proc_handler, redis_without_a_router, .fini = ptest_fini) {
  ptest_proc t;
  open_test(&t, NULL);
  t.denv.prefix = "wsgate:";
  cr_assert_eq(run(&t, DO_REDIS, NULL, 0), WSGATE_OK);
  cr_assert_eq(seen[0], 1);
  cr_assert_eq(seen[1], WSGATE_E_REDIS);
  ptest_proc_finish(&t);
}

Test(proc_handler, tables_of_another_abi_are_refused, .fini = ptest_fini) {
  wsgate_handler other = test_handler;
  other.abi_version = WSGATE_HANDLER_ABI_SUBSCRIBE + 1;
  proc_handler *h = NULL;
  char err[256];
  cr_assert_eq(proc_handler_open_table(&h, &other, NULL, err, sizeof(err)), -1);
  cr_assert_eq(proc_handler_open_table(&h, NULL, NULL, err, sizeof(err)), -1);
}

/* --- on_subscribe (subscribe=handler) ------------------------------------------------------- */

static int th_subscribe(void *state, wsgate_ctx *ctx, const wsgate_event *ev) {
  (void)state;
  if (strcmp(ev->channel, "ok") == 0)
    return WSGATE_OK;
  if (strcmp(ev->channel, "fail") == 0)
    return WSGATE_ERROR;
  if (strcmp(ev->channel, "later") == 0) {
    wsgate_reply(ctx, "lost", 4, false);
    return WSGATE_RETRY;
  }
  char reason[300];
  memset(reason, 'r', sizeof reason - 1);
  reason[sizeof reason - 1] = '\0';
  memcpy(reason + 122, "\xc3\xa9", 2); /* a 2-byte character across the 123-byte limit */
  wsgate_set_error(ctx, "%s", strcmp(ev->channel, "long") == 0 ? reason : "members only");
  return WSGATE_REJECT;
}

/* A subscribe_request from gw-a (slot 3), connection 9, with token rq. */
static int sub_request(ptest_proc *t, const char *channel, char *why, size_t whylen) {
  wsg_envelope env = {.kind = WSG_ENV_SUB_REQUEST,
                      .fields = WSG_F_GATEWAY | WSG_F_SLOT | WSG_F_USER | WSG_F_CONN |
                                WSG_F_CHANNEL | WSG_F_REQUEST,
                      .gateway = "gw-a",
                      .gateway_len = 4,
                      .slot = 3,
                      .user = "alice",
                      .user_len = 5,
                      .conn = 9,
                      .channel = channel,
                      .channel_len = strlen(channel),
                      .request = 77};
  return proc_handler_dispatch(t->h, &t->denv, 0, &env, 0, 0, why, whylen);
}

/* Allowed: a subscribe to the asking connection with rq; refused: the same with the handler's
 * reason in rf (cut at a character boundary within 123 bytes), and nothing to dead-letter. */
Test(proc_handler, on_subscribe_answers_the_gateway, .fini = ptest_fini) {
  static const wsgate_handler deciding = {.abi_version = WSGATE_HANDLER_ABI_SUBSCRIBE,
                                          .name = "deciding",
                                          .on_subscribe = th_subscribe};
  ptest_proc t;
  ptest_proc_init(&t, "echo", NULL, NULL, 16);
  proc_handler_close(t.h);
  char err[256], why[256];
  cr_assert_eq(proc_handler_open_table(&t.h, &deciding, NULL, err, sizeof err), 0, "%s", err);
  cr_assert_eq(sub_request(&t, "ok", why, sizeof why), WSGATE_OK);
  cr_assert_eq(sub_request(&t, "no", why, sizeof why), WSGATE_OK, "a refusal is an answer");
  cr_assert_eq(sub_request(&t, "long", why, sizeof why), WSGATE_OK);
  cr_assert_eq(sub_request(&t, "fail", why, sizeof why), WSGATE_ERROR);
  size_t before = proc_outbox_count(t.box);
  cr_assert_eq(sub_request(&t, "later", why, sizeof why), WSGATE_RETRY);
  cr_assert_eq(proc_outbox_count(t.box), before, "a retry records nothing");
  ptest_flush(&t);
  cr_assert_eq(t.nout, 4);
  for (size_t i = 0; i < 4; i++) {
    const wsg_envelope *e = &t.out[i].env;
    cr_expect_eq(e->kind, WSG_ENV_SUBSCRIBE);
    cr_expect(e->fields & WSG_F_REQUEST);
    cr_expect_eq(e->request, 77);
    cr_expect_eq(e->conn, 9);
    cr_expect_eq(t.out[i].partition, 3);
  }
  cr_expect_not(t.out[0].env.fields & WSG_F_REFUSAL);
  cr_expect(t.out[1].env.refusal_len == 12 &&
            memcmp(t.out[1].env.refusal, "members only", 12) == 0);
  cr_expect_eq(t.out[2].env.refusal_len, 122, "the character at 122..123 does not fit in 123");
  cr_expect(t.out[3].env.refusal_len == 18 &&
            memcmp(t.out[3].env.refusal, "the handler failed", 18) == 0);
  ptest_proc_finish(&t);
}

/* A handler without on_subscribe, or a table of the first ABI (never read past on_disconnect),
 * refuses every subscribe it is asked to decide. */
Test(proc_handler, without_on_subscribe_every_request_is_refused, .fini = ptest_fini) {
  ptest_proc t;
  open_test(&t, NULL);
  char why[256];
  cr_assert_eq(sub_request(&t, "ok", why, sizeof why), WSGATE_OK);
  ptest_flush(&t);
  cr_assert_eq(t.nout, 1);
  const wsg_envelope *e = &t.out[0].env;
  cr_expect(e->fields & WSG_F_REFUSAL);
  const char *want = "the handler does not decide subscriptions";
  cr_expect(e->refusal_len == strlen(want) && memcmp(e->refusal, want, e->refusal_len) == 0);
  ptest_proc_finish(&t);
}

/* The later functions of wsgate_api, seen from a plugin built against this header and loaded by
 * an older processor (a shorter table) or one that leaves them NULL. */
static int fake_publish(wsgate_ctx *ctx, const char *channel, size_t channel_len,
                        const void *payload, size_t len, bool binary) {
  (void)ctx, (void)channel, (void)channel_len, (void)payload, (void)len, (void)binary;
  return 42;
}
static int fake_unsubscribe(wsgate_ctx *ctx, const char *user, size_t user_len, const char *channel,
                            size_t channel_len) {
  (void)ctx, (void)user, (void)user_len, (void)channel, (void)channel_len;
  return 43;
}

Test(proc_handler, later_functions_of_an_older_table_answer_state) {
  wsgate_api api = {.abi_version = WSGATE_HANDLER_ABI_VERSION,
                    .size = sizeof(wsgate_api),
                    .publish = fake_publish,
                    .unsubscribe = fake_unsubscribe};
  wsgate_ctx ctx = {.api = &api};
  cr_assert(WSGATE_API_HAS(&ctx, publish));
  cr_assert_not(WSGATE_API_HAS(&ctx, presence)); /* in the table, but NULL */
  cr_assert_eq(wsgate_publish(&ctx, "c", 1, "x", 1, false), 42);
  cr_assert_eq(wsgate_unsubscribe(&ctx, NULL, 0, "c", 1), 43);
  cr_assert_eq(wsgate_presence(&ctx, "c", 1, NULL, NULL), WSGATE_E_STATE);
  cr_assert_eq(wsgate_subscribe(&ctx, NULL, 0, "c", 1), WSGATE_E_STATE);
  /* A processor from before handler-made subscriptions: its table ends after presence. */
  api.size = (uint32_t)offsetof(wsgate_api, subscribe);
  cr_assert_eq(wsgate_publish(&ctx, "c", 1, "x", 1, false), 42);
  cr_assert_eq(wsgate_unsubscribe(&ctx, NULL, 0, "c", 1), WSGATE_E_STATE);
  /* One from before channels. */
  api.size = (uint32_t)offsetof(wsgate_api, publish);
  cr_assert_not(WSGATE_API_HAS(&ctx, publish));
  cr_assert_eq(wsgate_publish(&ctx, "c", 1, "x", 1, false), WSGATE_E_STATE);
}
