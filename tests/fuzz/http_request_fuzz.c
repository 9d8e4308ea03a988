/*
 * libFuzzer target for the operations port's request parser, wsg_http_parse_request()
 * (common/wsg_http.c): anyone who reaches --http-port sends its input. The input is placed as the
 * server places a request: at most REQUEST_MAX - 1 bytes, NUL-terminated, in a fixed buffer.
 * Invariants beyond "no crash, no UB" (a broken one aborts): the answer is 0, 400 or 405; a
 * parsed method and path lie inside the buffer; the path starts with '/' and carries no query,
 * fragment, space or line end; GET and HEAD are the only methods answered 0.
 *
 * Threads: libFuzzer's main thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wsg_http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUEST_MAX 4096 /* as common/wsg_http.c */

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "http_request_fuzz: invariant broken: %s (line %d)\n", #cond, __LINE__);     \
      abort();                                                                                     \
    }                                                                                              \
  } while (0)

static bool inside(const char *p, const char *buf) {
  return p >= buf && p < buf + REQUEST_MAX;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static char buf[REQUEST_MAX];
  size_t n = size < REQUEST_MAX - 1 ? size : REQUEST_MAX - 1;
  memcpy(buf, data, n);
  buf[n] = '\0';
  wsg_http_request req = {0};
  int rc = wsg_http_parse_request(buf, &req);
  CHECK(rc == 0 || rc == 400 || rc == 405);
  if (rc == 400)
    return 0;
  CHECK(req.method && req.path && inside(req.method, buf) && inside(req.path, buf));
  CHECK(req.path[0] == '/');
  CHECK(strpbrk(req.path, "?# \r\n") == NULL);
  CHECK(strpbrk(req.method, " \r\n") == NULL);
  bool get = strcmp(req.method, "GET") == 0, head = strcmp(req.method, "HEAD") == 0;
  CHECK(req.head == head);
  CHECK((rc == 0) == (get || head));
  return 0;
}
