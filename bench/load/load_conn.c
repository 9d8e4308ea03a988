/*
 * load_conn: one connection of a wsgate-load worker, from connect to close (see load_worker.h):
 * the queue of connections not ready yet, the upgrade request and its answer, the set-up
 * commands (join, connect, subscribe), frames received and the markers they carry, and the
 * bytes waiting to be sent.
 *
 * Threads: a worker is single-threaded.
 */
#include <errno.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "load_worker.h"

/* ----------------------------------------------------------------------------------------- */
/* connection bookkeeping                                                                     */

static void q_push(worker *w, uint32_t i) {
  conn *k = &w->c[i];
  k->qnext = NONE;
  k->qprev = w->qtail;
  if (w->qtail != NONE)
    w->c[w->qtail].qnext = i;
  else
    w->qhead = i;
  w->qtail = i;
}

static void q_remove(worker *w, uint32_t i) {
  conn *k = &w->c[i];
  if (k->qprev != NONE)
    w->c[k->qprev].qnext = k->qnext;
  else if (w->qhead == i)
    w->qhead = k->qnext;
  if (k->qnext != NONE)
    w->c[k->qnext].qprev = k->qprev;
  else if (w->qtail == i)
    w->qtail = k->qprev;
  k->qprev = k->qnext = NONE;
}

void load__release(worker *w, conn *k) {
  if (k->fd >= 0)
    close(k->fd); /* also removes it from the epoll set */
  k->fd = -1;
  free(k->aux);
  free(k->ctl);
  free(k->out);
  k->aux = k->ctl = NULL;
  k->out = NULL;
  k->aux_len = 0;
  k->state = S_DONE;
  (void)w;
}

static void lost(worker *w, uint32_t i, unsigned code);
void load__fail(worker *w, uint32_t i, fail_kind kind, const char *fmt, ...) {
  conn *k = &w->c[i];
  if (k->state == S_DONE)
    return;
  if (!w->first_err[kind][0]) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->first_err[kind], sizeof w->first_err[kind], fmt, ap);
    va_end(ap);
  }
  w->fails[kind]++;
  if (k->state == S_READY) {
    /* Counted as ready already: it is a lost connection now, not a failed attempt. */
    lost(w, i, 1002);
    return;
  }
  if (k->state != S_FREE) {
    q_remove(w, i);
    w->inflight--;
  }
  w->failed++;
  load__release(w, k);
}

/* A ready connection the server closed (or reset) during the run. */
static void lost(worker *w, uint32_t i, unsigned code) {
  conn *k = &w->c[i];
  if (k->state == S_DONE)
    return;
  if (k->state != S_READY) {
    load__fail(w, i, FAIL_CLOSED, "closed by the server before it was ready (close code %u)", code);
    return;
  }
  w->closed_ready++;
  w->closes[code < MAX_CLOSE ? code : 0]++;
  load__release(w, k);
}

static void set_pollout(worker *w, uint32_t i, bool on) {
  conn *k = &w->c[i];
  if (on == ((k->flags & F_POLLOUT) != 0) || k->fd < 0)
    return;
  struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0u), .data.u64 = i};
  if (epoll_ctl(w->epfd, EPOLL_CTL_MOD, k->fd, &ev) == 0)
    k->flags = (uint8_t)(on ? k->flags | F_POLLOUT : k->flags & ~F_POLLOUT);
}

/* Sends what the connection has queued; arms EPOLLOUT for the rest. */
void load__out_flush(worker *w, uint32_t i) {
  conn *k = &w->c[i];
  outbuf *o = k->out;
  if (!o || k->fd < 0)
    return;
  while (o->off < o->len) {
    ssize_t r = send(k->fd, o->data + o->off, o->len - o->off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      set_pollout(w, i, true);
      return;
    }
    if (r < 0) {
      lost(w, i, 1006);
      return;
    }
    o->off += (uint32_t)r;
  }
  o->off = o->len = 0;
  set_pollout(w, i, false);
  /* Keep a sending connection's buffer (it is reused at every tick); give back the others'. */
  if (!(w->p->mode == LOAD_ECHO || (k->flags & F_SENDER)) || o->cap > 64 * 1024) {
    free(o);
    k->out = NULL;
  }
}

/* Queues one masked frame. -1 when the connection already holds --out-max unsent bytes. */
int load__out_frame(worker *w, uint32_t i, unsigned opcode, const void *payload, size_t len) {
  conn *k = &w->c[i];
  size_t need = load_ws_frame_size(len);
  outbuf *o = k->out;
  size_t used = o ? o->len - o->off : 0;
  if (used + need > w->p->out_max)
    return -1;
  if (!o || o->len + need > o->cap) {
    if (o && o->off > 0) {
      memmove(o->data, o->data + o->off, o->len - o->off);
      o->len -= o->off;
      o->off = 0;
    }
    if (!o || o->len + need > o->cap) {
      size_t cap = o ? o->cap : OUT_MIN;
      while (cap < used + need)
        cap *= 2;
      outbuf *n = realloc(o, sizeof *n + cap);
      if (!n)
        return -1;
      if (!o)
        n->off = n->len = 0;
      n->cap = (uint32_t)cap;
      k->out = o = n;
    }
  }
  o->len +=
      (uint32_t)load_ws_frame(o->data + o->len, o->cap - o->len, opcode, payload, len, rnd32(w));
  return 0;
}

/* ----------------------------------------------------------------------------------------- */
/* users, tokens, the upgrade request                                                         */

static uint64_t user_number(const worker *w, const conn *k) {
  const load_plan *p = w->p;
  if (k->flags & F_SENDER)
    return p->user_offset + p->users; /* one past the receivers: its own user */
  return p->user_offset + k->gidx % p->users;
}

static void user_id(const worker *w, const conn *k, char *out, size_t cap) {
  snprintf(out, cap, "%s%llu", w->p->user_prefix, (unsigned long long)user_number(w, k));
}

/* The connection's bearer token into out; 0 when there is none, -1 on failure. */
static int token_for(worker *w, conn *k, char *out, size_t cap, char *err, size_t errlen) {
  const load_plan *p = w->p;
  char user[128];
  user_id(w, k, user, sizeof user);
  if (p->token) {
    size_t l = strlen(p->token);
    if (l >= cap)
      return -1;
    memcpy(out, p->token, l + 1);
    return (int)l;
  }
  if (p->jwt_secret) {
    int n = load_token_jwt(p->jwt_secret, p->jwt_secret_len, user, (int64_t)time(NULL),
                           (int64_t)p->jwt_ttl_s, out, cap);
    if (n < 0)
      snprintf(err, errlen, "cannot sign a token for %s", user);
    return n;
  }
  if (p->token_cmd) {
    uint64_t u = user_number(w, k) - w->token_cache_first;
    if (u < w->token_cache_n && w->token_cache[u]) {
      size_t l = strlen(w->token_cache[u]);
      memcpy(out, w->token_cache[u], l + 1);
      return (int)l;
    }
    int n = load_token_cmd(p->token_cmd, user, out, cap, err, errlen);
    if (n > 0 && u < w->token_cache_n)
      w->token_cache[u] = strdup(out);
    return n;
  }
  return 0;
}

static const load_target *target_of(const worker *w, const conn *k) {
  if (k->flags & F_SENDER)
    return &w->p->sender_target;
  return &w->p->targets[k->gidx % w->p->ntargets];
}

static void conn_key(const worker *w, const conn *k, char key[LOAD_WS_KEY_LEN + 1]) {
  load_ws_key(w->salt ^ ((uint64_t)k->gidx << 1 | ((k->flags & F_SENDER) ? 1 : 0)), key);
}

static int send_request(worker *w, uint32_t i) {
  conn *k = &w->c[i];
  const load_plan *p = w->p;
  const load_target *t = target_of(w, k);
  char path[sizeof t->path + 160], extra[LOAD_TOKEN_MAX + 512];
  char user[128];
  user_id(w, k, user, sizeof user);
  if (p->dev_user)
    snprintf(path, sizeof path, "%s%suser=%s", t->path, strchr(t->path, '?') ? "&" : "?", user);
  else
    snprintf(path, sizeof path, "%s", t->path);
  size_t el = 0;
  extra[0] = '\0';
  if (p->subprotocol)
    el += (size_t)snprintf(extra + el, sizeof extra - el, "Sec-WebSocket-Protocol: %s\r\n",
                           p->subprotocol);
  if (p->proto != LOAD_PROTO_CENTRIFUGO) { /* Centrifugo takes the token in its connect command */
    char token[LOAD_TOKEN_MAX], err[256] = "";
    int tl = token_for(w, k, token, sizeof token, err, sizeof err);
    if (tl < 0) {
      load__fail(w, i, FAIL_SOCKET, "no token: %s", err);
      return -1;
    }
    if (tl > 0)
      snprintf(extra + el, sizeof extra - el, "Authorization: Bearer %s\r\n", token);
  }
  char key[LOAD_WS_KEY_LEN + 1];
  conn_key(w, k, key);
  char req[REQ_MAX];
  int rl = load_ws_request(req, sizeof req, t->host, path, key, extra);
  if (rl < 0) {
    load__fail(w, i, FAIL_SOCKET, "the upgrade request is longer than %d bytes", REQ_MAX);
    return -1;
  }
  ssize_t r = send(k->fd, req, (size_t)rl, MSG_NOSIGNAL | MSG_DONTWAIT);
  if (r != rl) {
    /* A fresh loopback socket takes a few KiB at once; anything else is a broken connection. */
    load__fail(w, i, FAIL_CONNECT, "sending the upgrade request to %s: %s", t->host,
               r < 0 ? strerror(errno) : "short write");
    return -1;
  }
  k->state = S_HTTP;
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = i};
  epoll_ctl(w->epfd, EPOLL_CTL_MOD, k->fd, &ev);
  k->flags &= (uint8_t)~F_POLLOUT;
  return 0;
}

void load__start_conn(worker *w, uint32_t i) {
  conn *k = &w->c[i];
  const load_plan *p = w->p;
  const load_target *t = target_of(w, k);
  k->t_start = mono_ns();
  k->state = S_CONNECTING;
  w->inflight++;
  q_push(w, i);
  k->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (k->fd < 0) {
    load__fail(w, i, FAIL_SOCKET, "socket(): %s", strerror(errno));
    return;
  }
  int one = 1;
  setsockopt(k->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (p->sources > 0) {
    /* The port is chosen at connect() for the whole 4-tuple, so every source address gives
     * another ~28k ports per target, and workers may share addresses. */
    setsockopt(k->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7F000002u + k->gidx % p->sources);
    if (bind(k->fd, (struct sockaddr *)&src, sizeof src) != 0) {
      load__fail(w, i, FAIL_SOCKET, "bind(127.0.0.%u): %s", 2 + k->gidx % p->sources,
                 strerror(errno));
      return;
    }
  }
  struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = i};
  if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, k->fd, &ev) != 0) {
    load__fail(w, i, FAIL_SOCKET, "epoll_ctl: %s", strerror(errno));
    return;
  }
  k->flags |= F_POLLOUT;
  if (connect(k->fd, (const struct sockaddr *)&t->addr, sizeof t->addr) != 0 &&
      errno != EINPROGRESS) {
    load__fail(w, i, FAIL_CONNECT, "connect(%s): %s%s", t->host, strerror(errno),
               errno == EADDRNOTAVAIL ? " (ephemeral ports exhausted: raise --sources)" : "");
  }
}

/* ----------------------------------------------------------------------------------------- */
/* set-up commands after the upgrade                                                          */

/*
 * Set-up command `step` of connection k, and the text its answer contains: wsgate's chat joins
 * the room (fan-out); a channel receiver subscribes (fan-out and idle); Centrifugo connects (with
 * the token), then subscribes (echo: a channel of its own; fan-out receivers: the room). NULL when
 * there is no such step.
 */
static const char *setup_expect(const worker *w, const conn *k, unsigned step) {
  const load_plan *p = w->p;
  if (p->proto == LOAD_PROTO_CHAT && p->mode == LOAD_FANOUT && step == 0)
    return "\"joined\"";
  if (p->proto == LOAD_PROTO_CHANNEL && (p->mode == LOAD_FANOUT || p->mode == LOAD_IDLE) &&
      step == 0 && !(k->flags & F_SENDER))
    return "\"subscribed\"";
  if (p->proto == LOAD_PROTO_CENTRIFUGO && step == 0)
    return "\"id\":1,\"connect\"";
  if (p->proto == LOAD_PROTO_CENTRIFUGO && step == 1 && p->mode != LOAD_IDLE &&
      !(k->flags & F_SENDER))
    return "\"id\":2,\"subscribe\"";
  return NULL;
}

int load_channel_of(const load_plan *p, uint32_t gidx, char *out, size_t cap) {
  int n = p->rooms > 0 ? snprintf(out, cap, "%s-%u", p->room, gidx % p->rooms)
                       : snprintf(out, cap, "%s", p->room);
  return n >= 0 && (size_t)n < cap ? n : -1;
}

/* Writes set-up command `step` of connection k into w->msg; returns its length, 0 if none. */
static size_t setup_msg(worker *w, conn *k, unsigned step) {
  const load_plan *p = w->p;
  const char *expect = setup_expect(w, k, step);
  int n = 0;
  if (!expect)
    return 0;
  if (p->proto == LOAD_PROTO_CHAT) {
    n = snprintf(w->msg, w->msg_cap, "{\"op\":\"join\",\"room\":\"%s\"}", p->room);
  } else if (p->proto == LOAD_PROTO_CHANNEL) {
    char ch[256];
    if (load_channel_of(p, k->gidx, ch, sizeof ch) < 0)
      return 0;
    n = snprintf(w->msg, w->msg_cap, "{\"wsgate\":\"subscribe\",\"channel\":\"%s\"}", ch);
  } else if (step == 0) {
    char token[LOAD_TOKEN_MAX], err[256];
    int tl = token_for(w, k, token, sizeof token, err, sizeof err);
    if (tl < 0)
      return 0;
    n = tl > 0 ? snprintf(w->msg, w->msg_cap, "{\"id\":1,\"connect\":{\"token\":\"%s\"}}", token)
               : snprintf(w->msg, w->msg_cap, "{\"id\":1,\"connect\":{}}");
  } else {
    if (p->mode == LOAD_ECHO)
      n = snprintf(w->msg, w->msg_cap, "{\"id\":2,\"subscribe\":{\"channel\":\"%s-%u\"}}", p->room,
                   k->gidx);
    else
      n = snprintf(w->msg, w->msg_cap, "{\"id\":2,\"subscribe\":{\"channel\":\"%s\"}}", p->room);
  }
  return n > 0 && (size_t)n < w->msg_cap ? (size_t)n : 0;
}

static void became_ready(worker *w, uint32_t i) {
  conn *k = &w->c[i];
  k->state = S_READY;
  free(k->aux);
  k->aux = NULL;
  k->aux_len = 0;
  q_remove(w, i);
  w->inflight--;
  w->ready++;
  load_hist_record(&w->h_connect, mono_ns() - k->t_start);
  if (!(k->flags & F_SENDER)) {
    w->ready_list[w->nready++] = i;
    w->receivers_ready++;
  }
}

/* Sends the next set-up command, or marks the connection ready when there is none. */
static void setup_next(worker *w, uint32_t i) {
  conn *k = &w->c[i];
  if (!setup_expect(w, k, k->step)) {
    became_ready(w, i);
    return;
  }
  size_t n = setup_msg(w, k, k->step);
  if (n == 0) {
    load__fail(w, i, FAIL_SETUP, "cannot write set-up command %u (no token?)", k->step);
    return;
  }
  k->state = S_SETUP;
  k->aux_len = 0;
  if (load__out_frame(w, i, LOAD_WS_OP_TEXT, w->msg, n) != 0) {
    load__fail(w, i, FAIL_SOCKET, "out of memory");
    return;
  }
  load__out_flush(w, i);
}

/* A whole message arrived while in set-up: is it the expected answer? */
static void setup_reply(worker *w, uint32_t i) {
  conn *k = &w->c[i];
  const char *expect = setup_expect(w, k, k->step);
  if (!expect || !k->aux)
    return;
  const char *txt = (const char *)k->aux;
  size_t len = k->aux_len;
  if (memmem(txt, len, expect, strlen(expect))) {
    k->step++;
    k->aux_len = 0;
    setup_next(w, i);
  } else if (memmem(txt, len, "\"error\"", 7)) {
    load__fail(w, i, FAIL_SETUP, "set-up command %u answered: %.*s", k->step, (int)len, txt);
  }
  k->aux_len = 0; /* something else (a push, a ping): keep waiting */
}

/* ----------------------------------------------------------------------------------------- */
/* receiving                                                                                  */

static void on_marker(void *arg, uint64_t sched) {
  worker *w = arg;
  if (w->cur->flags & F_SENDER)
    return; /* fan-out: the sender's own copy is not a delivery */
  w->received++;
  if (sched >= w->t_measure && sched < w->t_end) {
    w->received_measured++;
    load_hist_record(&w->h_lat, w->now > sched ? w->now - sched : 0);
  }
}

static void on_control(worker *w, uint32_t i, unsigned op, const uint8_t *pl, size_t len) {
  if (op == LOAD_WS_OP_PING) {
    if (load__out_frame(w, i, LOAD_WS_OP_PONG, pl, len) == 0)
      load__out_flush(w, i);
  } else if (op == LOAD_WS_OP_CLOSE) {
    unsigned code = len >= 2 ? (unsigned)pl[0] << 8 | pl[1] : 1005;
    uint8_t echo[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    if (load__out_frame(w, i, LOAD_WS_OP_CLOSE, echo, len >= 2 ? 2 : 0) == 0)
      load__out_flush(w, i);
    conn *k = &w->c[i];
    if (k->state != S_READY && k->state != S_DONE)
      load__fail(w, i, FAIL_CLOSED, "closed by the server with code %u: %.*s", code,
                 len > 2 ? (int)(len - 2) : 0, len > 2 ? (const char *)pl + 2 : "");
    else
      lost(w, i, code);
  }
}

static void on_chunk(worker *w, uint32_t i, const load_ws_chunk *ch) {
  conn *k = &w->c[i];
  if (ch->opcode >= 0x8) {
    if (ch->first && ch->last) {
      on_control(w, i, ch->opcode, ch->data, ch->len);
      return;
    }
    if (!k->ctl && !(k->ctl = malloc(125))) {
      lost(w, i, 1011);
      return;
    }
    if (ch->first)
      k->ctl_len = 0;
    memcpy(k->ctl + k->ctl_len, ch->data, ch->len); /* <= 125 in total: the parser checks */
    k->ctl_len = (uint8_t)(k->ctl_len + ch->len);
    if (ch->last) {
      on_control(w, i, ch->opcode, k->ctl, k->ctl_len);
      if (k->state != S_DONE) {
        free(k->ctl);
        k->ctl = NULL;
      }
    }
    return;
  }
  bool msg_start = ch->first && ch->opcode != LOAD_WS_OP_CONT;
  bool msg_end = ch->last && ch->fin;
  if (msg_start)
    memset(&k->mk, 0, sizeof k->mk);
  /* Centrifugo's JSON protocol pings with an empty object and expects one back. */
  if (w->p->proto == LOAD_PROTO_CENTRIFUGO && msg_start && msg_end && ch->len == 2 &&
      memcmp(ch->data, "{}", 2) == 0) {
    if (load__out_frame(w, i, LOAD_WS_OP_TEXT, "{}", 2) == 0)
      load__out_flush(w, i);
    return;
  }
  if (k->state == S_SETUP) {
    if (msg_start)
      k->aux_len = 0;
    if (!k->aux && !(k->aux = malloc(CAPTURE_MAX))) {
      load__fail(w, i, FAIL_SOCKET, "out of memory");
      return;
    }
    size_t room = CAPTURE_MAX - k->aux_len;
    size_t take = ch->len < room ? ch->len : room;
    memcpy(k->aux + k->aux_len, ch->data, take);
    k->aux_len = (uint16_t)(k->aux_len + take);
    if (msg_end)
      setup_reply(w, i);
    return;
  }
  w->cur = k;
  load_marker_feed(&k->mk, ch->data, ch->len, on_marker, w);
}

static void feed_frames(worker *w, uint32_t i, const uint8_t *data, size_t len) {
  conn *k = &w->c[i];
  while (len > 0 && k->state != S_DONE) {
    load_ws_chunk ch;
    bool got;
    const char *perr = NULL;
    long r = load_ws_parse(&k->ps, data, len, &ch, &got, &perr);
    if (r < 0) {
      if (k->state == S_READY) {
        w->fails[FAIL_PROTOCOL]++;
        if (!w->first_err[FAIL_PROTOCOL][0])
          snprintf(w->first_err[FAIL_PROTOCOL], sizeof w->first_err[0], "%s", perr);
        lost(w, i, 1002);
      } else {
        load__fail(w, i, FAIL_PROTOCOL, "%s", perr);
      }
      return;
    }
    data += r;
    len -= (size_t)r;
    if (got)
      on_chunk(w, i, &ch);
  }
}

/* The upgrade answer, possibly in pieces; returns the bytes of `data` that are frames. */
static void on_http(worker *w, uint32_t i, const uint8_t *data, size_t len) {
  conn *k = &w->c[i];
  char key[LOAD_WS_KEY_LEN + 1], acc[LOAD_WS_ACCEPT_LEN + 1], err[256];
  conn_key(w, k, key);
  if (load_ws_accept(key, acc) != 0) {
    load__fail(w, i, FAIL_HANDSHAKE, "SHA-1 unavailable");
    return;
  }
  /* Answers nearly always arrive whole and are read in place; only a split one is copied. */
  const uint8_t *buf = data;
  size_t blen = len;
  if (k->aux) {
    size_t room = LOAD_WS_RESPONSE_MAX - k->aux_len;
    size_t take = len < room ? len : room;
    memcpy(k->aux + k->aux_len, data, take);
    k->aux_len = (uint16_t)(k->aux_len + take);
    buf = k->aux;
    blen = k->aux_len;
  }
  int status = 0;
  int h = load_ws_response((const char *)buf, blen, acc, &status, err, sizeof err);
  if (h == 0) {
    if (!k->aux) {
      if (!(k->aux = malloc(LOAD_WS_RESPONSE_MAX))) {
        load__fail(w, i, FAIL_SOCKET, "out of memory");
        return;
      }
      memcpy(k->aux, data, len); /* len < LOAD_WS_RESPONSE_MAX, or h would be -1 */
      k->aux_len = (uint16_t)len;
    }
    return;
  }
  if (h < 0) {
    if (status > 0) {
      w->refused[status < MAX_STATUS ? status : 0]++;
      const char *body = memmem(buf, blen, "\r\n\r\n", 4);
      size_t bl = body ? blen - (size_t)(body + 4 - (const char *)buf) : 0;
      load__fail(w, i, FAIL_REFUSED, "%s %.*s", err, (int)(bl > 120 ? 120 : bl),
                 body ? body + 4 : "");
    } else {
      load__fail(w, i, FAIL_HANDSHAKE, "%s", err);
    }
    return;
  }
  /* Frames the server sent right after its 101 (nchan replays buffered messages, say): they
   * are read from where they are, so the answer buffer is detached first and freed after. */
  uint8_t *answer = k->aux;
  k->aux = NULL;
  k->aux_len = 0;
  k->step = 0;
  setup_next(w, i);
  if (blen > (size_t)h && k->state != S_DONE)
    feed_frames(w, i, buf + h, blen - (size_t)h);
  free(answer);
}

void load__on_readable(worker *w, uint32_t i) {
  conn *k = &w->c[i];
  ssize_t r = recv(k->fd, w->rbuf, RBUF_SIZE, MSG_DONTWAIT);
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
    return;
  w->now = mono_ns();
  if (r <= 0) {
    if (k->state == S_READY)
      lost(w, i, 1006);
    else
      load__fail(w, i, FAIL_CLOSED, "connection %s by the server before it was ready",
                 r == 0 ? "closed" : strerror(errno));
    return;
  }
  if (k->state == S_HTTP)
    on_http(w, i, w->rbuf, (size_t)r);
  else
    feed_frames(w, i, w->rbuf, (size_t)r);
}

void load__on_writable(worker *w, uint32_t i) {
  conn *k = &w->c[i];
  if (k->state == S_CONNECTING) {
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(k->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
      err = errno;
    if (err) {
      load__fail(w, i, FAIL_CONNECT, "connect(%s): %s", target_of(w, k)->host, strerror(err));
      return;
    }
    send_request(w, i);
    return;
  }
  load__out_flush(w, i);
}
