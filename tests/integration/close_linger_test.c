/*
 * A gateway-initiated close must reach a client that still has data in flight (reliability suite,
 * docs/RELIABILITY.md). When the gateway closes a connection while bytes the client sent are still
 * unread in the gateway's socket, the kernel answers the close() with a TCP reset, and a reset
 * makes the client's kernel discard whatever it had not read yet: the replies queued before the
 * close and the close frame itself. The client then sees 1006 instead of the documented code,
 * and loses replies the gateway had already written. Servers avoid this by a "lingering close"
 * (nginx's lingering_close): after the close frame, keep reading and discarding until the peer's
 * close frame, EOF or a timeout, and only then close the socket.
 *
 * The client here makes its data unread on purpose: the gateway's rate limit (--rate-msgs 1,
 * pause) stops reading from it after the first message, so the rest stays in the socket; and it
 * has not read 512 KiB of replies, more than its receive window, so part of them is still unsent
 * in the gateway's socket. Then the gateway is drained (SIGTERM, --drain-window 0), and the
 * client reads only after the gateway has exited, as a busy client on a slow network would.
 *
 * Regression test of known bug 4 (docs/RELIABILITY.md), fixed by the gateway's lingering close:
 * a closing connection keeps reading and discarding, and discards what is still unread right
 * before its socket is closed.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>

#include "harness_kafka.h"
#include "harness.h"

static itest_gateway gw;
static itest_reader rd;

static void teardown(void) {
  itest_reader_close(&rd);
  itest_gateway_cleanup(&gw);
}

TestSuite(close_linger, .fini = teardown, .timeout = 120);

typedef struct {
  const char *series;
  double want;
} metric_wait;

static bool metric_reaches(void *arg) {
  const metric_wait *w = arg;
  return itest_metric(gw.http_port, w->series) >= w->want;
}

Test(close_linger, drain_1001_survives_unread_client_data) {
  const char *extra[] = {"--rate-msgs",
                         "1",
                         "--rate-burst",
                         "1",
                         "--rate-action",
                         "pause",
                         "--drain-window",
                         "0s",
                         "--drain-grace",
                         "8s",
                         NULL};
  itest_gateway_start(&gw, NULL, "linger", &(itest_daemon_opts){.extra = extra});
  itest_reader_open(&rd, gw.cluster.in_topic, gw.cluster.in_partitions);
  ws_client *c = itest_connect(&gw, "chatty");
  wsg_envelope e;
  itest_reader_expect(&rd, WSG_ENV_CONNECT, "chatty", &e, ITEST_TIMEOUT_MS);
  uint64_t conn = e.conn;
  /* 64 x 1 KiB: the gateway reads the first, then pauses reading this connection. */
  char msg[1024];
  memset(msg, 'm', sizeof msg);
  for (int i = 0; i < 64; i++)
    cr_assert_eq(ws_client_send_text(c, msg, sizeof msg), WS_CLIENT_OK);
  itest_reader_expect(&rd, WSG_ENV_MSG, "chatty", &e, ITEST_TIMEOUT_MS);
  /* Replies it has not read yet: more than its receive window, so some are still in the
   * gateway's socket, unsent, when the gateway closes. */
  itest_deliver_many(&gw, itest_gateway_slot(&gw), conn, 16 * 1024, 32);
  metric_wait queued = {"wsgate_gateway_messages_out_total", 32};
  cr_assert(itest_wait_until(metric_reaches, &queued, ITEST_TIMEOUT_MS),
            "the replies were not sent");

  int status = itest_gateway_stop(&gw, SIGTERM, 15000);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the drained gateway failed");

  /* Everything the gateway wrote, then its close frame. */
  ws_message m;
  int rc, replies = 0;
  while ((rc = ws_client_recv(c, &m, 5000)) == WS_CLIENT_OK && m.opcode != WS_OP_CLOSE)
    replies++;
  cr_assert(rc == WS_CLIENT_OK,
            "after %d of 32 replies the connection ended without the drain's close "
            "frame (%s): the gateway closed its socket with client data unread, and the reset "
            "discarded what it had not sent yet",
            replies, ws_client_strerror(rc));
  cr_assert_eq(replies, 32);
  cr_assert_eq(m.close_code, 1001);
  ws_client_destroy(c);
}
