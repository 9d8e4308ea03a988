/*
 * wsgate_admin_api: the commands that go through wsgate-api (see wsgate_admin_api.h).
 *
 * Threads: main only.
 */
#include "wsgate_admin_api.h"

#include <errno.h>
#include <jansson.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_ANSWER (1 << 20)

static int usage(const char *msg) {
  fprintf(stderr, "wsgate-admin: %s\nTry 'wsgate-admin --help'.\n", msg);
  return 2;
}

/* Splits "http://host:port" (no path). Returns 0, or -1 with a message printed. */
static int parse_url(const char *url, char *host, size_t hostlen, char *port, size_t portlen) {
  if (strncmp(url, "http://", 7) != 0) {
    fprintf(stderr,
            "wsgate-admin: --api-url %s: only http:// is supported here (for https, use "
            "curl as docs/API.md shows)\n",
            url);
    return -1;
  }
  const char *h = url + 7, *end = h + strcspn(h, "/");
  const char *colon = memchr(h, ':', (size_t)(end - h));
  size_t hl = (size_t)((colon ? colon : end) - h);
  if (hl == 0 || hl >= hostlen) {
    fprintf(stderr, "wsgate-admin: --api-url %s has no host\n", url);
    return -1;
  }
  memcpy(host, h, hl);
  host[hl] = '\0';
  snprintf(port, portlen, "%.*s", colon ? (int)(end - colon - 1) : 2, colon ? colon + 1 : "80");
  return 0;
}

/* POST (body) or GET (body NULL) to path; prints the answer's body. Returns the status or -1. */
static int request(const admin_api_opts *o, const char *method, const char *path,
                   const char *body) {
  char host[256], port[16];
  if (parse_url(o->url, host, sizeof host, port, sizeof port) != 0)
    return -1;
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
  int gai = getaddrinfo(host, port, &hints, &res);
  if (gai != 0) {
    fprintf(stderr, "wsgate-admin: %s: %s\n", o->url, gai_strerror(gai));
    return -1;
  }
  int fd = -1;
  for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(res);
  if (fd < 0) {
    fprintf(stderr,
            "wsgate-admin: cannot connect to %s: %s (is wsgate-api running? set "
            "--api-url)\n",
            o->url, strerror(errno));
    return -1;
  }
  size_t blen = body ? strlen(body) : 0;
  char *req = malloc(1024 + blen + strlen(o->key) + (o->idempotency_key ? 160 : 0));
  if (!req) {
    close(fd);
    return -1;
  }
  int n = sprintf(req,
                  "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nAuthorization: Bearer "
                  "%s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n",
                  method, path, host, o->key, blen);
  if (o->idempotency_key)
    n += sprintf(req + n, "Idempotency-Key: %.128s\r\n", o->idempotency_key);
  n += sprintf(req + n, "\r\n%s", body ? body : "");
  ssize_t sent = send(fd, req, (size_t)n, MSG_NOSIGNAL);
  free(req);
  char *ans = malloc(MAX_ANSWER + 1);
  size_t got = 0;
  while (ans && sent == n && got < MAX_ANSWER) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, o->timeout_ms) <= 0)
      break;
    ssize_t k = recv(fd, ans + got, MAX_ANSWER - got, 0);
    if (k <= 0)
      break;
    got += (size_t)k;
  }
  close(fd);
  int status = -1;
  if (ans) {
    ans[got] = '\0';
    if (sscanf(ans, "HTTP/1.%*d %d", &status) != 1)
      status = -1;
    const char *b = strstr(ans, "\r\n\r\n");
    if (b)
      printf("%s\n", b + 4);
  }
  free(ans);
  if (status < 0)
    fprintf(stderr, "wsgate-admin: no answer from %s within %d ms\n", o->url, o->timeout_ms);
  return status;
}

static json_t *target(const admin_api_opts *o, const char *who) {
  json_t *j = json_object();
  if (strchr(who, ',')) {
    json_t *users = json_array();
    char *copy = strdup(who), *save = NULL;
    for (char *u = strtok_r(copy, ",", &save); u; u = strtok_r(NULL, ",", &save))
      json_array_append_new(users, json_string(u));
    free(copy);
    json_object_set_new(j, "users", users);
  } else {
    json_object_set_new(j, "user", json_string(who));
  }
  if (o->conn)
    json_object_set_new(j, "conn", json_string(o->conn));
  return j;
}

/* "?channel=<c>[&since=..][&limit=..]", percent-encoded; NULL when out of memory. */
static char *channel_query(const admin_api_opts *o, const char *channel, bool since) {
  size_t cap = 3 * strlen(channel) + 128;
  char *q = malloc(cap);
  if (!q)
    return NULL;
  size_t n = (size_t)snprintf(q, cap, "?channel=");
  for (const unsigned char *c = (const unsigned char *)channel; *c; c++)
    n += (size_t)snprintf(q + n, cap - n,
                          strchr("-_.~:", *c) || (*c >= '0' && *c <= '9') ||
                                  ((*c | 0x20) >= 'a' && (*c | 0x20) <= 'z')
                              ? "%c"
                              : "%%%02X",
                          *c);
  if (since && o->since)
    n += (size_t)snprintf(q + n, cap - n, "&since=%.20s", o->since);
  if (o->limit)
    snprintf(q + n, cap - n, "&limit=%.20s", o->limit);
  return q;
}

static const char *const commands[] = {"send",     "disconnect", "publish",
                                       "presence", "history",    "info"};

bool admin_api_command(const char *name) {
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (strcmp(name, commands[i]) == 0)
      return true;
  return false;
}

int admin_api_run(const admin_api_opts *o, int nargs, char **args) {
  if (!o->key || !o->key[0])
    return usage("no API key: give --api-key or set WSGATE_API_KEY");
  const char *path, *method = "POST";
  char *query = NULL, url[4096];
  json_t *body = NULL;
  if (strcmp(args[0], "send") == 0) {
    if (nargs != 3)
      return usage("usage: send USER[,USER...] TEXT [--conn ID] [--idempotency-key K]");
    body = target(o, args[1]);
    json_object_set_new(body, "data", json_string(args[2]));
    path = "/v1/send";
  } else if (strcmp(args[0], "disconnect") == 0) {
    if (nargs != 2 || strchr(args[1], ','))
      return usage("usage: disconnect USER [--conn ID] [--code N] [--reason R]");
    body = target(o, args[1]);
    if (o->code)
      json_object_set_new(body, "code", json_integer(o->code));
    if (o->reason)
      json_object_set_new(body, "reason", json_string(o->reason));
    path = "/v1/disconnect";
  } else if (strcmp(args[0], "publish") == 0) {
    if (nargs != 3)
      return usage("usage: publish CHANNEL TEXT [--idempotency-key K]");
    body = json_pack("{s:s,s:s}", "channel", args[1], "data", args[2]);
    if (!body) {
      fprintf(stderr, "wsgate-admin: the channel or the text is not valid UTF-8\n");
      return 2;
    }
    path = "/v1/publish";
  } else if (strcmp(args[0], "presence") == 0 || strcmp(args[0], "history") == 0) {
    bool history = args[0][0] == 'h';
    if (nargs != 2)
      return usage(history ? "usage: history CHANNEL [--since OFFSET] [--limit N]"
                           : "usage: presence CHANNEL [--limit N]");
    if (!history && o->since)
      return usage("presence takes no --since");
    if (!(query = channel_query(o, args[1], history))) {
      fprintf(stderr, "wsgate-admin: out of memory\n");
      return 1;
    }
    snprintf(url, sizeof url, "/v1/%s%s", args[0], query);
    free(query);
    path = url;
    method = "GET";
  } else {
    if (nargs != 1)
      return usage("usage: info");
    path = "/v1/info";
    method = "GET";
  }
  char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
  json_decref(body);
  if (body && !text) {
    fprintf(stderr, "wsgate-admin: %s is not valid UTF-8\n", args[1]);
    return 2;
  }
  int status = request(o, method, path, text);
  free(text);
  if (status >= 200 && status < 300)
    return 0;
  if (status > 0)
    fprintf(stderr, "wsgate-admin: wsgate-api answered %d\n", status);
  return 1;
}
