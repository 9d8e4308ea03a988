/*
 * wsg_http: the operations endpoint (/healthz, /readyz, /metrics and a few static routes).
 *
 * One thread runs a poll(2) loop over non-blocking sockets: a wake-up eventfd, the listening
 * socket and at most 64 clients. Each client lives through three states:
 *   READ   until the blank line ending the request head (4 KiB at most, 5 s at most),
 *   WRITE  the whole response (10 s at most), then shutdown(SHUT_WR),
 *   LINGER reading and dropping whatever the client still sends until it closes (1 s at most),
 *          so closing never resets a connection whose response is still in flight (a client that
 *          sent an oversized request would otherwise see a reset instead of the 431).
 * One response per connection ("Connection: close"): probes and scrapes open a connection each, and
 * it keeps the state machine small.
 *
 * With 64 clients open the listening socket is taken out of the poll set, so further connections
 * wait in the kernel's accept backlog (64) until a slot frees (each client frees its slot within
 * 16 s at worst) instead of being accepted and reset: a probe queued that way still gets its
 * answer.
 *
 * Threads: wsg_http_start() and wsg_http_stop() run on the daemon's main thread; everything else
 * runs on the HTTP thread, which calls the `ready` and `health` callbacks and renders the metrics.
 */
#include "wsg_http.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "wsg_log.h"
#include "wsg_time.h"

#define MAX_CLIENTS       64
#define REQUEST_MAX       4096
#define READ_TIMEOUT_MS   5000
#define WRITE_TIMEOUT_MS  10000
#define LINGER_TIMEOUT_MS 1000
#define ACCEPT_PAUSE_MS   100 /* after EMFILE: the listening socket stays readable, do not spin */

typedef enum { CLIENT_FREE = 0, CLIENT_READ, CLIENT_WRITE, CLIENT_LINGER } client_state;

typedef struct {
  client_state state;
  int fd;
  uint64_t deadline_ms;
  size_t in_len;
  char in[REQUEST_MAX];
  char *out; /* whole response, heap */
  size_t out_len, out_off;
} client;

struct wsg_http {
  wsg_http_options opts;
  char *addr; /* owned copy of opts.addr */
  int listen_fd;
  int wake_fd;
  int port;
  atomic_bool stopping;
  pthread_t thread;
  uint64_t accept_paused_until_ms;
  wsg_log_ratelimit accept_rl;
  client clients[MAX_CLIENTS];
};

/* ---------------------------------------------------------------------------------------------
 * Responses */

const char *wsg_http_status_text(int status) {
  switch (status) {
  case 200:
    return "OK";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 408:
    return "Request Timeout";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 503:
    return "Service Unavailable";
  default:
    return "Unknown";
  }
}

/* Builds the whole response into c->out; the body is left out for HEAD, its length is not. */
static void respond(client *c, int status, const char *type, const char *body, size_t body_len,
                    bool head) {
  char hdr[512];
  int n = snprintf(hdr, sizeof hdr,
                   "HTTP/1.1 %d %s\r\n"
                   "Content-Type: %s\r\n"
                   "Content-Length: %zu\r\n"
                   "%s"
                   "Cache-Control: no-store\r\n"
                   "Connection: close\r\n\r\n",
                   status, wsg_http_status_text(status), type, body_len,
                   status == 405 ? "Allow: GET, HEAD\r\n" : "");
  size_t total = (size_t)n + (head ? 0 : body_len);
  c->out = malloc(total);
  if (!c->out) {
    /* Nothing sensible to send without memory: hang up, the prober retries. */
    c->out_len = 0;
    return;
  }
  memcpy(c->out, hdr, (size_t)n);
  if (!head && body_len)
    memcpy(c->out + n, body, body_len);
  c->out_len = total;
  c->out_off = 0;
}

static void respond_text(client *c, int status, const char *text, bool head) {
  respond(c, status, "text/plain; charset=utf-8", text, strlen(text), head);
}

/* /healthz and /readyz: 200 `ok`, or 503 "<bad>: <why>" when the daemon's callback says so. */
static void respond_probe(client *c, wsg_http_ready_fn fn, void *arg, const char *ok,
                          const char *bad, bool head) {
  char why[256] = "";
  if (!fn || fn(arg, why, sizeof why) == 0) {
    respond_text(c, 200, ok, head);
  } else {
    char body[300];
    why[sizeof why - 1] = '\0';
    why[strcspn(why, "\r\n")] = '\0'; /* the reason is one line */
    snprintf(body, sizeof body, "%s: %s\n", bad, why[0] ? why : "(no reason given)");
    respond_text(c, 503, body, head);
  }
}

static void route(wsg_http *h, client *c, const char *path, bool head) {
  if (strcmp(path, "/healthz") == 0) {
    respond_probe(c, h->opts.health, h->opts.health_arg, "ok\n", "unhealthy", head);
  } else if (strcmp(path, "/readyz") == 0) {
    respond_probe(c, h->opts.ready, h->opts.ready_arg, "ready\n", "not ready", head);
  } else if (strcmp(path, "/metrics") == 0 && h->opts.metrics) {
    char *text = NULL;
    size_t len = 0;
    if (wsg_metrics_render(h->opts.metrics, &text, &len) != 0) {
      respond_text(c, 500, "cannot render metrics: out of memory\n", head);
    } else {
      respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, head);
      free(text);
    }
  } else {
    for (size_t i = 0; i < h->opts.nroutes; i++) {
      const wsg_http_route *r = &h->opts.routes[i];
      if (strcmp(path, r->path) == 0) {
        respond(c, 200, r->content_type, r->body, r->body_len, head);
        return;
      }
    }
    respond_text(c, 404, "not found\n", head);
  }
}

int wsg_http_parse_request(char *head, wsg_http_request *req) {
  char *line = head;
  line[strcspn(line, "\r\n")] = '\0';
  char *method = line;
  char *sp1 = strchr(method, ' ');
  char *target = sp1 ? sp1 + 1 : NULL;
  char *sp2 = target ? strchr(target, ' ') : NULL;
  if (!sp1 || !sp2 || strncmp(sp2 + 1, "HTTP/1.", 7) != 0 || target[0] != '/')
    return 400;
  *sp1 = '\0';
  *sp2 = '\0';
  target[strcspn(target, "?#")] = '\0';
  req->method = method;
  req->path = target;
  req->head = strcmp(method, "HEAD") == 0;
  if (!req->head && strcmp(method, "GET") != 0)
    return 405;
  return 0;
}

/*
 * Handles a complete request head in c->in (NUL-terminated). Only the request line matters:
 * headers are not needed to answer a probe or a scrape.
 */
static void handle_request(wsg_http *h, client *c) {
  wsg_http_request req;
  int rc = wsg_http_parse_request(c->in, &req);
  if (rc == 400) {
    respond_text(c, 400, "bad request\n", false);
    return;
  }
  if (rc == 405) {
    respond_text(c, 405, "method not allowed: use GET or HEAD\n", false);
    return;
  }
  WSG_DEBUG("http", "%s %s", req.method, req.path);
  route(h, c, req.path, req.head);
}

/* ---------------------------------------------------------------------------------------------
 * Client states */

static void client_close(client *c) {
  close(c->fd);
  free(c->out);
  c->out = NULL;
  c->out_len = c->out_off = 0;
  c->in_len = 0;
  c->fd = -1;
  c->state = CLIENT_FREE;
}

static void start_write(client *c, uint64_t now) {
  if (c->out_len == 0) {
    client_close(c);
    return;
  }
  c->state = CLIENT_WRITE;
  c->deadline_ms = now + WRITE_TIMEOUT_MS;
}

static void on_readable(wsg_http *h, client *c, uint64_t now) {
  if (c->state == CLIENT_LINGER) {
    char drop[4096];
    /* Bounded: a client streaming at us is cut off by the linger deadline. */
    ssize_t n = recv(c->fd, drop, sizeof drop, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
      client_close(c);
    return;
  }
  ssize_t n = recv(c->fd, c->in + c->in_len, sizeof c->in - 1 - c->in_len, 0);
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
    client_close(c); /* gone before finishing its request: nobody to answer */
    return;
  }
  if (n < 0)
    return;
  c->in_len += (size_t)n;
  c->in[c->in_len] = '\0';
  if (strstr(c->in, "\r\n\r\n") || strstr(c->in, "\n\n")) {
    handle_request(h, c);
    start_write(c, now);
  } else if (c->in_len >= sizeof c->in - 1) {
    respond_text(c, 431, "request too large: at most 4 KiB of request line and headers\n", false);
    start_write(c, now);
  }
}

static void on_writable(client *c, uint64_t now) {
  while (c->out_off < c->out_len) {
    ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR)
        return;
      client_close(c);
      return;
    }
    c->out_off += (size_t)n;
  }
  shutdown(c->fd, SHUT_WR);
  free(c->out);
  c->out = NULL;
  c->state = CLIENT_LINGER;
  c->deadline_ms = now + LINGER_TIMEOUT_MS;
}

static void on_deadline(client *c, uint64_t now) {
  if (c->state == CLIENT_READ) {
    /* Slowloris or a stuck client: tell it why, briefly, then let go. */
    respond_text(c, 408, "request timeout: send the request within 5 s\n", false);
    start_write(c, now);
    if (c->state == CLIENT_WRITE)
      c->deadline_ms = now + LINGER_TIMEOUT_MS;
  } else {
    client_close(c);
  }
}

static void accept_clients(wsg_http *h, uint64_t now) {
  for (;;) {
    client *slot = NULL;
    for (size_t i = 0; i < MAX_CLIENTS && !slot; i++)
      if (h->clients[i].state == CLIENT_FREE)
        slot = &h->clients[i];
    if (!slot)
      return; /* the rest wait in the backlog */
    int fd = accept4(h->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        wsg_log_limited(&h->accept_rl, 1, now, WSG_LOG_WARN, "http",
                        "accept on the operations port failed: %s (raise the file descriptor "
                        "limit)",
                        strerror(errno));
        h->accept_paused_until_ms = now + ACCEPT_PAUSE_MS;
      }
      return; /* EAGAIN, or a connection that died in the backlog (ECONNABORTED) */
    }
    slot->fd = fd;
    slot->state = CLIENT_READ;
    slot->in_len = 0;
    slot->deadline_ms = now + READ_TIMEOUT_MS;
  }
}

/* ---------------------------------------------------------------------------------------------
 * The thread */

static void *http_main(void *arg) {
  wsg_http *h = arg;
  struct pollfd pfd[2 + MAX_CLIENTS];
  client *owner[2 + MAX_CLIENTS];
  while (!atomic_load(&h->stopping)) {
    uint64_t now = wsg_now_mono_ms();
    size_t n = 0, active = 0;
    uint64_t next = now + 1000;
    pfd[n++] = (struct pollfd){.fd = h->wake_fd, .events = POLLIN};
    for (size_t i = 0; i < MAX_CLIENTS; i++)
      active += h->clients[i].state != CLIENT_FREE;
    bool listening = active < MAX_CLIENTS && now >= h->accept_paused_until_ms;
    if (listening)
      pfd[n++] = (struct pollfd){.fd = h->listen_fd, .events = POLLIN};
    else if (active < MAX_CLIENTS && h->accept_paused_until_ms < next)
      next = h->accept_paused_until_ms;
    for (size_t i = 0; i < MAX_CLIENTS; i++) {
      client *c = &h->clients[i];
      if (c->state == CLIENT_FREE)
        continue;
      owner[n] = c;
      pfd[n++] =
          (struct pollfd){.fd = c->fd, .events = c->state == CLIENT_WRITE ? POLLOUT : POLLIN};
      if (c->deadline_ms < next)
        next = c->deadline_ms;
    }
    int timeout = next > now ? (int)(next - now) : 0;
    int rc = poll(pfd, (nfds_t)n, timeout);
    if (rc < 0) {
      if (errno == EINTR)
        continue;
      WSG_ERROR("http", "poll failed: %s; the operations endpoint stops", strerror(errno));
      break;
    }
    now = wsg_now_mono_ms();
    size_t first_client = listening ? 2 : 1;
    for (size_t k = first_client; k < n; k++) {
      client *c = owner[k];
      if (pfd[k].revents & (POLLERR | POLLNVAL)) {
        client_close(c);
      } else if (pfd[k].revents & (POLLIN | POLLHUP)) {
        if (c->state == CLIENT_WRITE)
          on_writable(c, now); /* POLLHUP while writing: send() reports the error */
        else
          on_readable(h, c, now);
      } else if (pfd[k].revents & POLLOUT) {
        on_writable(c, now);
      }
      if (c->state != CLIENT_FREE && now >= c->deadline_ms)
        on_deadline(c, now);
    }
    if (listening && (pfd[1].revents & POLLIN))
      accept_clients(h, now);
  }
  return NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Start and stop */

static int open_listener(wsg_http *h, char *err, size_t errlen) {
  char port[16], shown[300];
  /* Numeric only: a name would mean a DNS lookup at start-up, which can hang for the resolver's
   * timeout; "localhost" is the one name people type. */
  const char *addr = strcmp(h->addr, "localhost") == 0 ? "127.0.0.1" : h->addr;
  snprintf(port, sizeof port, "%d", h->opts.port);
  snprintf(shown, sizeof shown, strchr(addr, ':') ? "[%s]:%d" : "%s:%d", addr, h->opts.port);
  struct addrinfo hints = {.ai_family = AF_UNSPEC,
                           .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_PASSIVE | AI_NUMERICSERV | AI_NUMERICHOST};
  struct addrinfo *res = NULL;
  int gai = getaddrinfo(addr, port, &hints, &res);
  if (gai != 0) {
    snprintf(err, errlen, "cannot listen on %s: %s (set --http-addr to an IP address)", shown,
             gai_strerror(gai));
    return -1;
  }
  int fd = -1, saved = 0;
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      saved = errno;
      continue;
    }
    int one = 1;
    /* A restarted daemon must rebind at once even with old connections in TIME_WAIT. */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, MAX_CLIENTS) == 0)
      break;
    saved = errno;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) {
    const char *hint = saved == EADDRINUSE ? " (is another wsgate running? set --http-port)"
                       : saved == EACCES   ? " (ports below 1024 need privileges; set --http-port)"
                       : saved == EADDRNOTAVAIL
                           ? " (no interface has this address; set --http-addr)"
                           : "";
    snprintf(err, errlen, "cannot listen on %s: %s%s", shown, strerror(saved), hint);
    return -1;
  }
  struct sockaddr_storage ss = {0};
  socklen_t sl = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
    snprintf(err, errlen, "cannot read the bound port of %s: %s", shown, strerror(errno));
    close(fd);
    return -1;
  }
  h->port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                     : ntohs(((struct sockaddr_in *)&ss)->sin_port);
  h->listen_fd = fd;
  return 0;
}

int wsg_http_start(wsg_http **out, const wsg_http_options *opts, char *err, size_t errlen) {
  *out = NULL;
  if (opts->port < 0 || opts->port > 65535) {
    snprintf(err, errlen, "http port %d is out of range (0..65535)", opts->port);
    return -1;
  }
  wsg_http *h = calloc(1, sizeof *h);
  if (!h) {
    snprintf(err, errlen, "out of memory starting the operations endpoint");
    return -1;
  }
  h->opts = *opts;
  h->listen_fd = h->wake_fd = -1;
  for (size_t i = 0; i < MAX_CLIENTS; i++)
    h->clients[i].fd = -1;
  h->addr = strdup(opts->addr && opts->addr[0] ? opts->addr : "0.0.0.0");
  if (!h->addr) {
    snprintf(err, errlen, "out of memory starting the operations endpoint");
    goto fail;
  }
  h->opts.addr = h->addr;
  if (open_listener(h, err, errlen) != 0)
    goto fail;
  h->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (h->wake_fd < 0) {
    snprintf(err, errlen, "cannot create the operations endpoint's wake-up fd: %s",
             strerror(errno));
    goto fail;
  }
  /* The thread starts with every signal blocked, so SIGTERM and SIGINT reach the main thread. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = pthread_create(&h->thread, NULL, http_main, h);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    snprintf(err, errlen, "cannot start the operations endpoint's thread: %s", strerror(rc));
    goto fail;
  }
  WSG_INFO("http", "operations endpoint on http://%s%s%s:%d (/healthz, /readyz, /metrics)",
           strchr(h->addr, ':') ? "[" : "", h->addr, strchr(h->addr, ':') ? "]" : "", h->port);
  *out = h;
  return 0;
fail:
  if (h->listen_fd >= 0)
    close(h->listen_fd);
  if (h->wake_fd >= 0)
    close(h->wake_fd);
  free(h->addr);
  free(h);
  return -1;
}

int wsg_http_port(const wsg_http *h) {
  return h->port;
}

void wsg_http_stop(wsg_http *h) {
  if (!h)
    return;
  atomic_store(&h->stopping, true);
  uint64_t one = 1;
  /* An eventfd write only fails when the counter would overflow: it is already signalled. */
  if (write(h->wake_fd, &one, sizeof one) < 0 && errno != EAGAIN)
    WSG_WARN("http", "cannot wake the operations endpoint: %s", strerror(errno));
  pthread_join(h->thread, NULL);
  for (size_t i = 0; i < MAX_CLIENTS; i++)
    if (h->clients[i].state != CLIENT_FREE)
      client_close(&h->clients[i]);
  close(h->listen_fd);
  close(h->wake_fd);
  free(h->addr);
  free(h);
}
