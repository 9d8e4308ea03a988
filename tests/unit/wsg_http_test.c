/* Unit tests of wsg_http: every route, status codes, limits (size, clients, slow clients), stop,
 * bind errors and deferred answers, with a plain socket client on loopback. */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "wsg_http.h"
#include "wsg_log.h"
#include "wsg_time.h"

static wsg_http *srv;
static wsg_metrics *metrics;
static atomic_int ready_state;  /* 0 ready, else not */
static atomic_int health_state; /* 0 alive, else not */

static int ready_cb(void *arg, char *why, size_t whylen) {
  if (atomic_load(&ready_state) == 0)
    return 0;
  snprintf(why, whylen, "kafka: no broker reachable\r\nInjected: header");
  return 1;
}

static int health_cb(void *arg, char *why, size_t whylen) {
  if (atomic_load(&health_state) == 0)
    return 0;
  snprintf(why, whylen, "event loop stalled");
  return 1;
}

static const char page[] = "<html>demo</html>";
static const wsg_http_route routes[] = {
    {"/demo", "text/html; charset=utf-8", page, sizeof page - 1},
};

static void setup(void) {
  wsg_log_set_fd(open("/dev/null", O_WRONLY | O_CLOEXEC));
  metrics = wsg_metrics_create();
  wsg_counter_add(wsg_metrics_counter(metrics, "wsgate_test_total", "A counter.", "k=\"v\""), 7);
  atomic_store(&ready_state, 0);
  atomic_store(&health_state, 0);
  wsg_http_options o = {.addr = "127.0.0.1",
                        .port = 0,
                        .metrics = metrics,
                        .ready = ready_cb,
                        .health = health_cb,
                        .routes = routes,
                        .nroutes = 1};
  char err[256];
  cr_assert_eq(wsg_http_start(&srv, &o, err, sizeof err), 0, "%s", err);
  cr_assert_gt(wsg_http_port(srv), 0);
}

static void teardown(void) {
  wsg_http_stop(srv);
  wsg_metrics_destroy(metrics);
}

TestSuite(wsg_http, .init = setup, .fini = teardown, .timeout = 30);

static int connect_to(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  cr_assert_geq(fd, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0, "connect: %s", strerror(errno));
  return fd;
}

static void send_all(int fd, const char *data, size_t len) {
  while (len > 0) {
    ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    cr_assert_gt(n, 0, "send: %s", strerror(errno));
    data += n;
    len -= (size_t)n;
  }
}

/* Reads until the server closes or `timeout_ms` passes; returns a heap string (caller frees) and
 * sets *closed when the server closed within the deadline. */
static char *read_response(int fd, int timeout_ms, bool *closed) {
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  uint64_t deadline = wsg_now_mono_ms() + (uint64_t)timeout_ms;
  *closed = false;
  for (;;) {
    uint64_t now = wsg_now_mono_ms();
    if (now >= deadline)
      break;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, (int)(deadline - now)) <= 0)
      continue;
    ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
    if (n <= 0) {
      *closed = true;
      break;
    }
    len += (size_t)n;
    cr_assert_lt(len, cap - 1, "response too large for the test buffer");
  }
  buf[len] = '\0';
  return buf;
}

static char *request(const char *raw) {
  int fd = connect_to(wsg_http_port(srv));
  send_all(fd, raw, strlen(raw));
  bool closed;
  char *resp = read_response(fd, 5000, &closed);
  cr_assert(closed, "the server closes after one response");
  close(fd);
  return resp;
}

static char *get(const char *path) {
  char req[512];
  snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\nUser-Agent: test\r\n\r\n", path);
  return request(req);
}

static const char *body_of(const char *resp) {
  const char *b = strstr(resp, "\r\n\r\n");
  cr_assert_not_null(b, "no header end in: %s", resp);
  return b + 4;
}

/* Asserts status line, Content-Length matching the body, Connection: close. */
static void check(const char *resp, const char *status, const char *body) {
  cr_assert(strncmp(resp, status, strlen(status)) == 0, "want %s, got: %s", status, resp);
  cr_assert(strstr(resp, "\r\nConnection: close\r\n"), "%s", resp);
  char cl[64];
  snprintf(cl, sizeof cl, "\r\nContent-Length: %zu\r\n", strlen(body_of(resp)));
  cr_assert(strstr(resp, cl), "Content-Length does not match the body: %s", resp);
  if (body)
    cr_assert_str_eq(body_of(resp), body);
}

Test(wsg_http, healthz) {
  char *r = get("/healthz");
  check(r, "HTTP/1.1 200 OK\r\n", "ok\n");
  cr_assert(strstr(r, "\r\nContent-Type: text/plain; charset=utf-8\r\n"));
  free(r);
  r = get("/healthz?verbose=1");
  check(r, "HTTP/1.1 200 OK\r\n", "ok\n");
  free(r);
}

Test(wsg_http, readiness_flips) {
  char *r = get("/readyz");
  check(r, "HTTP/1.1 200 OK\r\n", "ready\n");
  free(r);
  atomic_store(&ready_state, 1);
  r = get("/readyz");
  check(r, "HTTP/1.1 503 Service Unavailable\r\n", "not ready: kafka: no broker reachable\n");
  cr_assert_null(strstr(r, "Injected"), "the reason stays one line");
  free(r);
  atomic_store(&ready_state, 0);
  r = get("/readyz");
  check(r, "HTTP/1.1 200 OK\r\n", "ready\n");
  free(r);
}

/* A stalled daemon fails /healthz alone: readiness is the daemon's other callback. */
Test(wsg_http, health_callback_fails_healthz_only) {
  atomic_store(&health_state, 1);
  char *r = get("/healthz");
  check(r, "HTTP/1.1 503 Service Unavailable\r\n", "unhealthy: event loop stalled\n");
  free(r);
  r = get("/readyz");
  check(r, "HTTP/1.1 200 OK\r\n", "ready\n");
  free(r);
  atomic_store(&health_state, 0);
  r = get("/healthz");
  check(r, "HTTP/1.1 200 OK\r\n", "ok\n");
  free(r);
}

Test(wsg_http, metrics) {
  char *r = get("/metrics");
  check(r, "HTTP/1.1 200 OK\r\n",
        "# HELP wsgate_test_total A counter.\n# TYPE wsgate_test_total counter\n"
        "wsgate_test_total{k=\"v\"} 7\n");
  cr_assert(strstr(r, "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
  free(r);
}

Test(wsg_http, extra_route_and_404) {
  char *r = get("/demo");
  check(r, "HTTP/1.1 200 OK\r\n", page);
  cr_assert(strstr(r, "\r\nContent-Type: text/html; charset=utf-8\r\n"));
  free(r);
  r = get("/nope");
  check(r, "HTTP/1.1 404 Not Found\r\n", "not found\n");
  free(r);
  r = get("/healthzz");
  check(r, "HTTP/1.1 404 Not Found\r\n", NULL);
  free(r);
}

Test(wsg_http, head_has_length_but_no_body) {
  char *r = request("HEAD /healthz HTTP/1.1\r\n\r\n");
  cr_assert(strncmp(r, "HTTP/1.1 200 OK\r\n", 17) == 0, "%s", r);
  cr_assert(strstr(r, "\r\nContent-Length: 3\r\n"));
  cr_assert_str_eq(body_of(r), "");
  free(r);
}

Test(wsg_http, method_not_allowed) {
  char *r = request("POST /healthz HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
  check(r, "HTTP/1.1 405 Method Not Allowed\r\n", NULL);
  cr_assert(strstr(r, "\r\nAllow: GET, HEAD\r\n"));
  free(r);
  r = request("DELETE /metrics HTTP/1.0\r\n\r\n");
  check(r, "HTTP/1.1 405 Method Not Allowed\r\n", NULL);
  free(r);
}

Test(wsg_http, bad_requests) {
  static const char *const bad[] = {"GET /healthz\r\n\r\n", "GET healthz HTTP/1.1\r\n\r\n",
                                    "GET /healthz SPDY/3\r\n\r\n"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char *r = request(bad[i]);
    check(r, "HTTP/1.1 400 Bad Request\r\n", NULL);
    free(r);
  }
  /* A request line libmicrohttpd cannot split at all is dropped without an answer. */
  char *r = request("GARBAGE\r\n\r\n");
  cr_assert_str_eq(r, "");
  free(r);
  r = request("GET /healthz HTTP/1.0\n\n"); /* bare LF line ends are tolerated */
  check(r, "HTTP/1.1 200 OK\r\n", "ok\n");
  free(r);
}

Test(wsg_http, oversized_request_gets_431) {
  static char big[8192];
  int n = snprintf(big, sizeof big, "GET /healthz HTTP/1.1\r\nX-Filler: ");
  memset(big + n, 'a', sizeof big - (size_t)n - 5);
  memcpy(big + sizeof big - 5, "\r\n\r\n", 5);
  int fd = connect_to(wsg_http_port(srv));
  /* The server stops reading at 4 KiB; the rest may or may not be accepted by the kernel. */
  send(fd, big, sizeof big - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
  bool closed;
  char *r = read_response(fd, 5000, &closed);
  cr_assert(closed);
  close(fd);
  check(r, "HTTP/1.1 431 Request Header Fields Too Large\r\n", NULL);
  free(r);
}

Test(wsg_http, slow_client_does_not_block_others) {
  int slow = connect_to(wsg_http_port(srv));
  send_all(slow, "GET /hea", 8); /* and then nothing */
  uint64_t t0 = wsg_now_mono_ms();
  char *r = get("/healthz");
  uint64_t took = wsg_now_mono_ms() - t0;
  check(r, "HTTP/1.1 200 OK\r\n", "ok\n");
  cr_assert_lt(took, 2000u, "second client waited %llu ms", (unsigned long long)took);
  free(r);
  /* The slow one is cut off at its 5 s deadline (libmicrohttpd closes it without an answer). */
  bool closed;
  r = read_response(slow, 9000, &closed);
  cr_assert(closed, "slow client still open after 9 s");
  took = wsg_now_mono_ms() - t0;
  cr_assert_geq(took, 4500u, "cut off too early (%llu ms)", (unsigned long long)took);
  cr_assert_str_eq(r, "");
  free(r);
  close(slow);
}

Test(wsg_http, clients_beyond_64_wait_in_the_backlog) {
  int idle[64];
  for (int i = 0; i < 64; i++)
    idle[i] = connect_to(wsg_http_port(srv));
  /* Let the server accept all 64: each answers /healthz once it is its turn, so check one that
   * was surely accepted by sending a full request on it. */
  send_all(idle[63], "GET /healthz HTTP/1.1\r\n\r\n", 25);
  bool closed;
  char *r = read_response(idle[63], 5000, &closed);
  check(r, "HTTP/1.1 200 OK\r\n", "ok\n");
  free(r);
  close(idle[63]);
  int extra[2];
  extra[0] = connect_to(wsg_http_port(srv)); /* takes the slot idle[63] freed */
  extra[1] = connect_to(wsg_http_port(srv)); /* the 65th: waits in the backlog */
  send_all(extra[1], "GET /healthz HTTP/1.1\r\n\r\n", 25);
  r = read_response(extra[1], 300, &closed);
  cr_assert_not(closed, "the 65th client must wait, not be reset");
  cr_assert_str_eq(r, "");
  free(r);
  close(idle[0]); /* frees a slot */
  r = read_response(extra[1], 4000, &closed);
  cr_assert(closed);
  check(r, "HTTP/1.1 200 OK\r\n", "ok\n");
  free(r);
  for (int i = 1; i < 63; i++)
    close(idle[i]);
  close(extra[0]);
  close(extra[1]);
}

Test(wsg_http, stop_with_open_clients_and_null) {
  int a = connect_to(wsg_http_port(srv));
  send_all(a, "GET", 3);
  uint64_t t0 = wsg_now_mono_ms();
  wsg_http_stop(srv);
  srv = NULL;
  cr_assert_lt(wsg_now_mono_ms() - t0, 1000u, "stop waits for nothing");
  bool closed;
  char *r = read_response(a, 2000, &closed);
  cr_assert(closed, "stop closes open clients");
  free(r);
  close(a);
  wsg_http_stop(NULL);
}

Test(wsg_http, bind_errors_explain) {
  wsg_http *second = NULL;
  char err[256];
  wsg_http_options o = {.addr = "127.0.0.1", .port = wsg_http_port(srv)};
  cr_assert_eq(wsg_http_start(&second, &o, err, sizeof err), -1);
  cr_assert_null(second);
  char want[128];
  snprintf(want, sizeof want,
           "cannot listen on 127.0.0.1:%d: Address already in use (is another wsgate running? "
           "set --http-port)",
           wsg_http_port(srv));
  cr_assert_str_eq(err, want);
  o.port = 70000;
  cr_assert_eq(wsg_http_start(&second, &o, err, sizeof err), -1);
  cr_assert_str_eq(err, "http port 70000 is out of range (0..65535)");
  o.port = 0;
  o.addr = "192.0.2.1"; /* TEST-NET-1: on no interface */
  cr_assert_eq(wsg_http_start(&second, &o, err, sizeof err), -1);
  cr_assert(strstr(err, "cannot listen on 192.0.2.1:0: Cannot assign requested address (no "
                        "interface has this address; set --http-addr)"),
            "%s", err);
  o.addr = "not an address";
  cr_assert_eq(wsg_http_start(&second, &o, err, sizeof err), -1);
  cr_assert(strstr(err, "cannot listen on not an address:0: "), "%s", err);
}

Test(wsg_http, without_metrics_or_ready) {
  wsg_http *bare = NULL;
  char err[256];
  wsg_http_options o = {.addr = "127.0.0.1", .port = 0};
  cr_assert_eq(wsg_http_start(&bare, &o, err, sizeof err), 0, "%s", err);
  wsg_http *keep = srv;
  srv = bare;
  char *r = get("/readyz");
  check(r, "HTTP/1.1 200 OK\r\n", "ready\n");
  free(r);
  r = get("/metrics");
  check(r, "HTTP/1.1 404 Not Found\r\n", NULL);
  free(r);
  srv = keep;
  wsg_http_stop(bare);
}

/* --- deferred answers ----------------------------------------------------------------------- */

typedef struct {
  wsg_http_deferred *d;
  int delay_ms;
  char *text;
} deferral;

static void finish_deferred(void *ctx, wsg_http_response *resp) {
  deferral *x = ctx;
  resp->status = 202;
  resp->content_type = "text/plain";
  resp->body = x->text;
  resp->body_len = strlen(x->text);
  free(x);
}

static void *resume_later(void *arg) {
  deferral *x = arg;
  usleep((useconds_t)x->delay_ms * 1000);
  wsg_http_resume(x->d);
  return NULL;
}

/* /now resumes inside the handler (before the suspension), /later from a thread 300 ms later. */
static void defer_handler(void *arg, const wsg_http_request *req, wsg_http_response *resp) {
  (void)arg;
  (void)resp;
  deferral *x = calloc(1, sizeof *x);
  cr_assert_not_null(x);
  x->text = strdup(req->path);
  x->d = wsg_http_defer(req, finish_deferred, x);
  if (strcmp(req->path, "/now") == 0) {
    wsg_http_resume(x->d);
    return;
  }
  x->delay_ms = 300;
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, resume_later, x), 0);
  pthread_detach(t);
}

Test(wsg_http, deferred_answers_hold_no_thread) {
  wsg_http *app = NULL;
  char err[256];
  wsg_http_options o = {.addr = "127.0.0.1", .port = 0, .handler = defer_handler, .threads = 1};
  cr_assert_eq(wsg_http_start(&app, &o, err, sizeof err), 0, "%s", err);
  const char *later = "POST /later HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: "
                      "close\r\n\r\n";
  const char *now = "POST /now HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: "
                    "close\r\n\r\n";
  int a = connect_to(wsg_http_port(app)), b = connect_to(wsg_http_port(app));
  uint64_t t0 = wsg_now_mono_ms();
  send_all(a, later, strlen(later));
  usleep(20000);
  send_all(b, now, strlen(now));
  bool closed;
  /* The one server thread answers /now while /later waits. */
  char *rb = read_response(b, 5000, &closed);
  uint64_t tb = wsg_now_mono_ms() - t0;
  cr_assert(strncmp(rb, "HTTP/1.1 202", 12) == 0 && strcmp(body_of(rb), "/now") == 0, "%s", rb);
  cr_assert_lt(tb, 250, "/now waited for /later: %llu ms", (unsigned long long)tb);
  char *ra = read_response(a, 5000, &closed);
  uint64_t ta = wsg_now_mono_ms() - t0;
  cr_assert(strncmp(ra, "HTTP/1.1 202", 12) == 0 && strcmp(body_of(ra), "/later") == 0, "%s", ra);
  cr_assert_geq(ta, 300, "/later answered before its resume: %llu ms", (unsigned long long)ta);
  free(ra);
  free(rb);
  close(a);
  close(b);
  wsg_http_stop(app);
}
