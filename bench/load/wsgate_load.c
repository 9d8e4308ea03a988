/*
 * wsgate-load: a WebSocket load generator for wsgate's benchmarks (docs/BENCHMARKS.md).
 *
 *   idle    hold --conns connections for --hold, answering pings
 *   echo    send --rate messages/s in total, round-robin over the connections, on a fixed
 *           schedule (open loop), and measure each reply's latency from its due time
 *   fanout  --conns receivers (joined to a room or subscribed to a channel) and one sender that
 *           sends --rate messages/s; count deliveries and their latency
 *   api     --conns receivers, and a process (load_api.c) that posts --rate sends/s to wsgate-api
 *           over --api-clients keep-alive connections; request -> delivery latency
 *
 * A process may hold at most `ulimit -Hn` descriptors, so the connections are spread over
 * --procs worker processes (load_engine.c) that this parent forks, starts together and whose
 * histograms it merges: the percentiles are those of all messages, not an average of averages.
 * Loopback targets only: this is a benchmark tool, not a way to load someone else's server.
 *
 * Threads: the parent is single-threaded; each worker is a process of its own.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "load_api.h"
#include "load_engine.h"
#include "load_hist.h"
#include "load_hops.h"
#include "load_token.h"
#include "wsg_config.h"

extern char **environ;

#define MAX_PROCS 64
#define MAX_CONNS 2000000
#define NS        1000000000ull
/* Percentiles reported for every histogram. */
static const double PCTS[] = {50, 90, 99, 99.9, 99.99};
static const char *const PCT_NAMES[] = {"p50", "p90", "p99", "p99.9", "p99.99"};

typedef struct {
  char *mode, *url, *sender_url, *proto, *subprotocol, *token, *token_cmd, *jwt_secret_file;
  char *user_prefix, *room, *output, *hops_from, *api_url, *api_key;
  int64_t conns, procs, users, user_offset, sources, connect_rate, max_pending, rate, api_clients,
      api_users, api_batch, rooms;
  uint64_t size, out_max;
  uint64_t connect_timeout_ms, ramp_timeout_ms, hold_ms, duration_ms, warmup_ms, drain_ms;
  uint64_t jwt_ttl_ms;
  bool dev_user, progress;
} load_cfg;

#define OPT(f) offsetof(load_cfg, f)
#define KIB    1024LL
#define SEC    1000LL
#define HOUR   (3600LL * 1000LL)

static const wsg_option options[] = {
    {"mode", 'm', NULL, WSG_OPT_ENUM, OPT(mode), "idle", 0, 0, "idle|echo|fanout|api", 0,
     "idle: hold connections; echo: round trips at --rate; fanout: one sender, --conns "
     "receivers; api: --conns receivers, --rate sends/s posted to wsgate-api (--api-url)."},
    {"url", 'u', NULL, WSG_OPT_STRING, OPT(url), NULL, 0, 0, NULL, WSG_OPTF_REQUIRED,
     "ws://127.x.x.x:port/path target(s), comma-separated: connections go round-robin over them "
     "(loopback only)."},
    {"sender-url", 0, NULL, WSG_OPT_STRING, OPT(sender_url), NULL, 0, 0, NULL, 0,
     "fanout: where the sender connects (default: the first --url), e.g. nchan's publisher "
     "location."},
    {"proto", 0, NULL, WSG_OPT_ENUM, OPT(proto), "raw", 0, 0, "raw|chat|centrifugo|channel", 0,
     "raw: payloads as they are (echo servers, wsgate's echo handler, nchan); chat: wsgate's "
     "chat handler (join, say); centrifugo: Centrifugo's JSON protocol (connect, subscribe, "
     "publish); channel: wsgate's channels (receivers subscribe to --room, the sender publishes "
     "through the processor's `publish` handler)."},
    {"conns", 'c', NULL, WSG_OPT_INT, OPT(conns), "100", 1, MAX_CONNS, NULL, 0,
     "Connections of the whole run (fanout: receivers; the sender is one more)."},
    {"procs", 'P', NULL, WSG_OPT_INT, OPT(procs), "0", 0, MAX_PROCS, NULL, 0,
     "Worker processes (0: as few as the file descriptor limit allows)."},
    {"connect-rate", 0, NULL, WSG_OPT_INT, OPT(connect_rate), "5000", 0, 10000000, NULL, 0,
     "Connection attempts per second, all workers together (0: as fast as --max-pending "
     "allows)."},
    {"max-pending", 0, NULL, WSG_OPT_INT, OPT(max_pending), "256", 1, 100000, NULL, 0,
     "Per worker: connections in the middle of TCP connect, upgrade and set-up at once."},
    {"connect-timeout", 0, NULL, WSG_OPT_DURATION, OPT(connect_timeout_ms), "15s", 100, HOUR, NULL,
     0, "A connection not ready (upgraded and set up) after this long counts as failed."},
    {"ramp-timeout", 0, NULL, WSG_OPT_DURATION, OPT(ramp_timeout_ms), "300s", SEC, 2 * HOUR, NULL,
     0, "Give up opening connections after this long and run with those that are ready."},
    {"sources", 0, NULL, WSG_OPT_INT, OPT(sources), "16", 0, 250, NULL, 0,
     "Bind connections round-robin to source addresses 127.0.0.2 .. 127.0.0.(1+N): each adds "
     "~28k ephemeral ports per target (0: let the kernel pick 127.0.0.1)."},
    {"hold", 0, NULL, WSG_OPT_DURATION, OPT(hold_ms), "10s", 0, 24 * HOUR, NULL, 0,
     "idle: how long the connections are held once all are open."},
    {"rate", 'r', NULL, WSG_OPT_INT, OPT(rate), "1000", 1, 10000000, NULL, 0,
     "echo: messages per second of all connections together; fanout: the sender's messages per "
     "second."},
    {"duration", 'd', NULL, WSG_OPT_DURATION, OPT(duration_ms), "10s", 100, HOUR, NULL, 0,
     "echo/fanout: how long messages are sent (warm-up included)."},
    {"warmup", 0, NULL, WSG_OPT_DURATION, OPT(warmup_ms), "2s", 0, HOUR, NULL, 0,
     "echo/fanout: messages due in the first part of --duration are sent but not measured."},
    {"drain", 0, NULL, WSG_OPT_DURATION, OPT(drain_ms), "5s", 0, HOUR, NULL, 0,
     "echo/fanout/api: after the last send, wait this long at most for outstanding replies (api: "
     "until the receivers hold every delivery the API accepted); what has not arrived then "
     "counts as lost."},
    {"size", 's', NULL, WSG_OPT_SIZE, OPT(size), "64", 0, 65536, NULL, 0,
     "Application bytes per message (the timestamp marker and padding; chat and Centrifugo add "
     "their JSON around it)."},
    {"out-max", 0, NULL, WSG_OPT_SIZE, OPT(out_max), "1m", 4 * KIB, 1024LL * 1024 * 1024, NULL, 0,
     "Per connection: unsent bytes held before further messages are dropped (counted)."},
    {"room", 0, NULL, WSG_OPT_STRING, OPT(room), "bench", 0, 0, NULL, 0,
     "chat: the room to join and say to; centrifugo: the channel (echo: <room>-<n> per "
     "connection); channel: the channel receivers subscribe to (also in --mode idle)."},
    {"rooms", 0, NULL, WSG_OPT_INT, OPT(rooms), "0", 0, MAX_CONNS, NULL, 0,
     "--proto channel --mode idle: connection n subscribes to <room>-<n mod N> instead of "
     "--room, so N distinct channels are held (0: all subscribe to --room)."},
    {"dev-user", 0, NULL, WSG_OPT_BOOL, OPT(dev_user), "false", 0, 0, NULL, 0,
     "Append ?user=<id> to each connection's URL (wsgate --insecure-dev-user)."},
    {"users", 0, NULL, WSG_OPT_INT, OPT(users), "0", 0, MAX_CONNS, NULL, 0,
     "Distinct user ids: connection n is user (n mod users) (0: one user per connection)."},
    {"user-prefix", 0, NULL, WSG_OPT_STRING, OPT(user_prefix), "u", 0, 0, NULL, 0,
     "User ids are <prefix><number> (letters, digits, '-', '_' and '.' only)."},
    {"user-offset", 0, NULL, WSG_OPT_INT, OPT(user_offset), "0", 0, INT64_MAX / 4, NULL, 0,
     "First user number, so that runs against one cluster do not share users."},
    {"token", 0, "WSGATE_LOAD_TOKEN", WSG_OPT_STRING, OPT(token), NULL, 0, 0, NULL, WSG_OPTF_SECRET,
     "One bearer token for every connection (prefer the environment variable)."},
    {"token-cmd", 0, NULL, WSG_OPT_STRING, OPT(token_cmd), NULL, 0, 0, NULL, 0,
     "Command printing a token for the user id given as its last argument; run once per user "
     "(at most 10000 users)."},
    {"jwt-secret-file", 0, NULL, WSG_OPT_STRING, OPT(jwt_secret_file), NULL, 0, 0, NULL, 0,
     "Sign an HS256 token per user ({\"sub\": user}) with the secret in this file."},
    {"jwt-ttl", 0, NULL, WSG_OPT_DURATION, OPT(jwt_ttl_ms), "1h", SEC, 48 * HOUR, NULL, 0,
     "Lifetime of the tokens --jwt-secret-file signs."},
    {"subprotocol", 0, NULL, WSG_OPT_STRING, OPT(subprotocol), NULL, 0, 0, NULL, 0,
     "Sec-WebSocket-Protocol to offer (none by default)."},
    {"output", 'o', NULL, WSG_OPT_ENUM, OPT(output), "table", 0, 0, "table|json", 0,
     "Result on stdout as a table or as one JSON object."},
    {"hops-from", 0, NULL, WSG_OPT_STRING, OPT(hops_from), NULL, 0, 0, NULL, 0,
     "echo/fanout: the daemons' /metrics, comma-separated (http://127.0.0.1:9090,"
     "http://127.0.0.1:9091): scraped when the measured window starts and at the end, to print "
     "the per-hop latency breakdown (docs/GATEWAY.md, \"Where the time goes\")."},
    {"api-url", 0, NULL, WSG_OPT_STRING, OPT(api_url), NULL, 0, 0, NULL, 0,
     "api: wsgate-api's http://127.x.x.x:port (loopback only); sends are POST /v1/send to user "
     "n mod --users (see --api-users), their payload carrying the due time."},
    {"api-key", 0, "WSGATE_LOAD_API_KEY", WSG_OPT_STRING, OPT(api_key), NULL, 0, 0, NULL,
     WSG_OPTF_SECRET, "api: the bearer key (prefer the environment variable)."},
    {"api-clients", 0, NULL, WSG_OPT_INT, OPT(api_clients), "64", 1, 4096, NULL, 0,
     "api: concurrent keep-alive HTTP connections; when all are busy the schedule waits (the "
     "delay shows as send lag and in the latency)."},
    {"api-users", 0, NULL, WSG_OPT_INT, OPT(api_users), "1", 1, 1000, NULL, 0,
     "api: users per send: send n goes to users n*K .. n*K+K-1 (mod --users) in one request "
     "(`users`), so one request makes K deliveries, each numbered in its user's sequence for "
     "resumable receivers."},
    {"api-batch", 0, NULL, WSG_OPT_INT, OPT(api_batch), "1", 1, 10000, NULL, 0,
     "api: sends per request; 1 posts /v1/send, N > 1 posts /v1/batch with N sends (at most "
     "wsgate-api's --max-batch), issued when its last send is due (--rate stays sends/s)."},
    {"progress", 0, NULL, WSG_OPT_BOOL, OPT(progress), "true", 0, 0, NULL, 0,
     "Print progress to stderr once a second while connecting."},
};

static const wsg_config_spec spec = {
    .program = "wsgate-load",
    .summary = "WebSocket load generator for wsgate's benchmarks: holds idle connections, runs "
               "open-loop echo round trips or room fan-out, and reports latency percentiles from "
               "merged log-linear histograms. Targets must be on 127.0.0.0/8.",
    .options = options,
    .count = sizeof options / sizeof options[0],
};

/* ----------------------------------------------------------------------------------------- */
/* validation                                                                                 */

/* Parses "ws://127.a.b.c:port/path" into t; loopback IPv4 (or "localhost") only. */
static int parse_url(const char *url, size_t len, load_target *t, char *err, size_t errlen) {
  if (len < 5 || strncmp(url, "ws://", 5) != 0) {
    snprintf(err, errlen, "%.*s: only ws:// URLs (no TLS: loopback benchmarks)", (int)len, url);
    return -1;
  }
  const char *host = url + 5, *end = url + len;
  const char *slash = memchr(host, '/', (size_t)(end - host));
  const char *hend = slash ? slash : end;
  size_t plen = slash ? (size_t)(end - slash) : 1;
  if (plen >= sizeof t->path) {
    snprintf(err, errlen, "%.*s: path longer than %zu bytes", (int)len, url, sizeof t->path - 1);
    return -1;
  }
  memcpy(t->path, slash ? slash : "/", plen);
  t->path[plen] = '\0';
  char h[64];
  size_t hl = (size_t)(hend - host);
  if (hl == 0 || hl >= sizeof h) {
    snprintf(err, errlen, "%.*s: bad host", (int)len, url);
    return -1;
  }
  memcpy(h, host, hl);
  h[hl] = '\0';
  char *colon = strrchr(h, ':');
  long port = 80;
  if (colon) {
    char *e;
    port = strtol(colon + 1, &e, 10);
    if (*e || port < 1 || port > 65535) {
      snprintf(err, errlen, "%.*s: bad port", (int)len, url);
      return -1;
    }
    *colon = '\0';
  }
  struct in_addr a;
  if (strcmp(h, "localhost") == 0)
    a.s_addr = htonl(0x7F000001u);
  else if (inet_pton(AF_INET, h, &a) != 1) {
    snprintf(err, errlen, "%s: the host must be an IPv4 address on 127.0.0.0/8", h);
    return -1;
  }
  if ((ntohl(a.s_addr) >> 24) != 127) {
    snprintf(err, errlen,
             "%s is not a loopback address: wsgate-load only targets 127.0.0.0/8 (it benchmarks "
             "servers on this machine)",
             h);
    return -1;
  }
  memset(&t->addr, 0, sizeof t->addr);
  t->addr.sin_family = AF_INET;
  t->addr.sin_addr = a;
  t->addr.sin_port = htons((uint16_t)port);
  char ip[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &a, ip, sizeof ip);
  snprintf(t->host, sizeof t->host, "%s:%ld", ip, port);
  return 0;
}

/* Letters, digits, '-', '_', '.' (and ':' where `colon`: a channel's namespace). */
static bool plain_name(const char *s, bool colon) {
  if (!s || !*s)
    return false;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
          *s == '-' || *s == '_' || *s == '.' || (colon && *s == ':')))
      return false;
  return true;
}

/* --mode api: an http:// URL on 127.0.0.0/8 without a path, a key, raw receivers. */
static int check_api(const load_cfg *cfg, char *err, size_t errlen) {
  const char *u = cfg->api_url;
  struct in_addr a;
  char host[64] = "";
  if (!u || strncmp(u, "http://", 7) != 0 || strlen(u) > 200) {
    snprintf(err, errlen, "--mode api needs --api-url http://127.x.x.x:port (wsgate-api)");
    return -1;
  }
  size_t hl = strcspn(u + 7, ":/");
  if (hl < sizeof host)
    memcpy(host, u + 7, hl);
  host[hl < sizeof host ? hl : 0] = '\0';
  if (strchr(u + 7, '/') || inet_pton(AF_INET, host, &a) != 1 || (ntohl(a.s_addr) >> 24) != 127) {
    snprintf(err, errlen,
             "--api-url %s: give http://127.x.x.x:port with no path (loopback only: wsgate-load "
             "benchmarks servers on this machine)",
             u);
    return -1;
  }
  if (!cfg->api_key || !cfg->api_key[0]) {
    snprintf(err, errlen, "--mode api needs --api-key (or WSGATE_LOAD_API_KEY)");
    return -1;
  }
  if (strcmp(cfg->proto, "raw") != 0) {
    snprintf(err, errlen, "--mode api: the receivers speak --proto raw (sends arrive as they are)");
    return -1;
  }
  return 0;
}

static int make_plan(const load_cfg *cfg, load_plan *p, uint8_t **secret, char *err,
                     size_t errlen) {
  memset(p, 0, sizeof *p);
  p->mode = strcmp(cfg->mode, "idle") == 0     ? LOAD_IDLE
            : strcmp(cfg->mode, "echo") == 0   ? LOAD_ECHO
            : strcmp(cfg->mode, "fanout") == 0 ? LOAD_FANOUT
                                               : LOAD_API;
  p->proto = strcmp(cfg->proto, "raw") == 0       ? LOAD_PROTO_RAW
             : strcmp(cfg->proto, "chat") == 0    ? LOAD_PROTO_CHAT
             : strcmp(cfg->proto, "channel") == 0 ? LOAD_PROTO_CHANNEL
                                                  : LOAD_PROTO_CENTRIFUGO;
  const char *u = cfg->url;
  while (*u) {
    const char *e = strchr(u, ',');
    size_t l = e ? (size_t)(e - u) : strlen(u);
    if (p->ntargets == LOAD_MAX_TARGETS) {
      snprintf(err, errlen, "--url: at most %d targets", LOAD_MAX_TARGETS);
      return -1;
    }
    if (parse_url(u, l, &p->targets[p->ntargets++], err, errlen) != 0)
      return -1;
    u = e ? e + 1 : u + l;
  }
  if (p->ntargets == 0) {
    snprintf(err, errlen, "--url is empty");
    return -1;
  }
  p->sender_target = p->targets[0];
  if (cfg->sender_url &&
      parse_url(cfg->sender_url, strlen(cfg->sender_url), &p->sender_target, err, errlen) != 0)
    return -1;
  if (p->mode == LOAD_ECHO && p->proto == LOAD_PROTO_CHAT) {
    snprintf(err, errlen,
             "--mode echo with --proto chat: the chat handler has no echo; run the processor "
             "with --handler echo and use --proto raw");
    return -1;
  }
  if (!plain_name(cfg->user_prefix, false) ||
      !plain_name(cfg->room, p->proto == LOAD_PROTO_CHANNEL)) {
    snprintf(err, errlen,
             "--user-prefix and --room: letters, digits, '-', '_' and '.' only (and "
             "':' in a --proto channel room)");
    return -1;
  }
  if (p->mode == LOAD_API && check_api(cfg, err, errlen) != 0)
    return -1;
  if (strlen(cfg->room) > 200) {
    snprintf(err, errlen, "--room: at most 200 characters");
    return -1;
  }
  if (cfg->rooms > 0 && (p->proto != LOAD_PROTO_CHANNEL || p->mode != LOAD_IDLE)) {
    snprintf(err, errlen,
             "--rooms needs --proto channel --mode idle (a fan-out sender publishes to one "
             "--room)");
    return -1;
  }
  p->rooms = (uint32_t)cfg->rooms;
  p->api_url = cfg->api_url;
  p->api_key = cfg->api_key;
  p->api_clients = (unsigned)cfg->api_clients;
  p->api_users = (unsigned)cfg->api_users;
  p->api_batch = (unsigned)cfg->api_batch;
  int auth = (cfg->token != NULL) + (cfg->token_cmd != NULL) + (cfg->jwt_secret_file != NULL);
  if (auth > 1) {
    snprintf(err, errlen, "give one of --token, --token-cmd and --jwt-secret-file");
    return -1;
  }
  if (cfg->warmup_ms >= cfg->duration_ms && p->mode != LOAD_IDLE) {
    snprintf(err, errlen, "--warmup must be shorter than --duration");
    return -1;
  }
  p->conns = (uint32_t)cfg->conns;
  p->users = cfg->users > 0 ? (uint32_t)cfg->users : p->conns;
  if (p->api_users > p->users) {
    snprintf(err, errlen, "--api-users %u: more than the %u users (a send names each user once)",
             p->api_users, p->users);
    return -1;
  }
  if (cfg->token_cmd && p->users > 10000) {
    snprintf(err, errlen,
             "--token-cmd runs once per user: at most 10000 users (--users); use "
             "--jwt-secret-file for more");
    return -1;
  }
  uint32_t cap = load_worker_capacity();
  uint64_t total = (uint64_t)p->conns + (p->mode == LOAD_FANOUT ? 1 : 0);
  if (cap == 0) {
    snprintf(err, errlen, "cannot read RLIMIT_NOFILE");
    return -1;
  }
  uint64_t procs = cfg->procs > 0 ? (uint64_t)cfg->procs : (total + cap - 1) / cap;
  if (procs > MAX_PROCS || (total + procs - 1) / procs + 1 > cap) {
    snprintf(err, errlen,
             "%llu connections need more than %u per process (the file descriptor hard limit "
             "minus a reserve): give --procs %llu or more (at most %d)",
             (unsigned long long)total, cap, (unsigned long long)((total + cap - 2) / (cap - 1)),
             MAX_PROCS);
    return -1;
  }
  p->procs = (unsigned)procs;
  p->user_offset = (uint64_t)cfg->user_offset;
  p->user_prefix = cfg->user_prefix;
  p->sources = (unsigned)cfg->sources;
  p->dev_user = cfg->dev_user;
  p->subprotocol = cfg->subprotocol;
  p->token = cfg->token;
  p->token_cmd = cfg->token_cmd;
  if (cfg->jwt_secret_file) {
    *secret = load_token_read_secret(cfg->jwt_secret_file, &p->jwt_secret_len, err, errlen);
    if (!*secret)
      return -1;
    p->jwt_secret = *secret;
  }
  p->jwt_ttl_s = cfg->jwt_ttl_ms / 1000;
  p->connect_rate = (double)cfg->connect_rate;
  p->max_pending = (uint32_t)cfg->max_pending;
  p->connect_timeout_ns = cfg->connect_timeout_ms * 1000000ull;
  p->ramp_timeout_ns = cfg->ramp_timeout_ms * 1000000ull;
  p->rate = (double)cfg->rate;
  p->size = (size_t)cfg->size;
  p->duration_ns = cfg->duration_ms * 1000000ull;
  p->warmup_ns = cfg->warmup_ms * 1000000ull;
  p->drain_ns = cfg->drain_ms * 1000000ull;
  p->hold_ns = cfg->hold_ms * 1000000ull;
  p->out_max = (size_t)cfg->out_max;
  p->room = cfg->room;
  p->progress = cfg->progress;
  return 0;
}

/* ----------------------------------------------------------------------------------------- */
/* workers                                                                                    */

typedef struct {
  pid_t pid;
  int fd;
  char line[128];
  size_t llen;
  char *json; /* result being read: jlen bytes announced, jgot arrived */
  size_t jlen, jgot;
  bool ready, done, eof;
  uint32_t n_ready, n_failed;
  uint64_t n_received; /* --mode api, draining: its last "C" (all it received) */
} child;

static volatile sig_atomic_t interrupted;

static void on_signal(int sig) {
  (void)sig;
  interrupted = 1;
}

static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

/* Consumes bytes from a worker: command lines, then the announced JSON result. */
static int child_input(child *c, const char *buf, size_t n) {
  size_t i = 0;
  while (i < n) {
    if (c->json) {
      size_t take = c->jlen - c->jgot < n - i ? c->jlen - c->jgot : n - i;
      memcpy(c->json + c->jgot, buf + i, take);
      c->jgot += take;
      i += take;
      if (c->jgot == c->jlen) {
        c->json[c->jlen] = '\0';
        c->done = true;
      }
      continue;
    }
    if (c->done)
      return -1; /* nothing may follow the result */
    char ch = buf[i++];
    if (ch != '\n') {
      if (c->llen + 1 >= sizeof c->line)
        return -1;
      c->line[c->llen++] = ch;
      continue;
    }
    c->line[c->llen] = '\0';
    c->llen = 0;
    unsigned a, b;
    unsigned long long rx;
    size_t len;
    if (sscanf(c->line, "C %llu", &rx) == 1) {
      c->n_received = rx;
    } else if (sscanf(c->line, "P %u %u", &a, &b) == 2) {
      c->n_ready = a;
      c->n_failed = b;
    } else if (sscanf(c->line, "R %u %u", &a, &b) == 2) {
      c->n_ready = a;
      c->n_failed = b;
      c->ready = true;
    } else if (sscanf(c->line, "J %zu", &len) == 1 && len < ((size_t)64 << 20)) {
      c->json = malloc(len + 1);
      if (!c->json)
        return -1;
      c->jlen = len;
      c->jgot = 0;
      if (len == 0)
        return -1;
    } else {
      return -1;
    }
  }
  return 0;
}

static void tell_all(child *ch, unsigned n, const char *line) {
  for (unsigned i = 0; i < n; i++)
    if (ch[i].fd >= 0 && send(ch[i].fd, line, strlen(line), MSG_NOSIGNAL) < 0) {
      /* that worker is gone; its EOF is handled by the loop */
    }
}

/*
 * --mode api: the receivers keep draining until they hold every delivery of the sends the API
 * accepted (the sender's "expected"), bounded by --drain: a fixed drain ended a flood's run while
 * its backlog was still coming through (accepted > delivered: the receivers had stopped counting,
 * nothing was lost). *expected: UINT64_MAX until the sender has reported, then its figure (read
 * once). True once "D" was sent.
 */
static bool api_caught_up(const load_plan *p, child *ch, uint64_t *expected) {
  const child *sender = &ch[p->procs];
  if (!sender->done)
    return false;
  if (*expected == UINT64_MAX) {
    json_t *o = json_loads(sender->json, 0, NULL);
    json_t *e = json_object_get(o, "expected");
    *expected = json_is_integer(e) ? (uint64_t)json_integer_value(e) : UINT64_MAX - 1;
    json_decref(o); /* UINT64_MAX - 1: no figure, so never caught up: --drain ends it */
  }
  uint64_t received = 0;
  for (unsigned i = 0; i < p->procs; i++)
    received += ch[i].n_received;
  if (received < *expected)
    return false;
  tell_all(ch, p->procs, "D\n"); /* the workers only: the sender is done */
  return true;
}

static void kill_all(child *ch, unsigned n) {
  for (unsigned i = 0; i < n; i++)
    if (ch[i].pid > 0)
      kill(ch[i].pid, SIGTERM);
}

/* Worker processes, plus --mode api's sender (the last one). */
static unsigned children(const load_plan *p) {
  return p->procs + (p->mode == LOAD_API ? 1u : 0u);
}

/* Forks the workers, runs the barriers, collects the results. 0 when every worker reported. */
/* --hops-from: one scrape when the measured window starts, one when every worker is done. A
 * failed scrape drops the breakdown (said on stderr), never the run. */
static void hops_mark(load_hops **hops) {
  char err[512];
  if (*hops && load_hops_mark(*hops, err, sizeof err) != 0) {
    fprintf(stderr, "wsgate-load: no per-hop breakdown: %s\n", err);
    load_hops_destroy(*hops);
    *hops = NULL;
  }
}

static int run_workers(const load_plan *p, child *ch, uint64_t *ramp_ns, load_hops **hops) {
  const unsigned nch = children(p);
  for (unsigned i = 0; i < nch; i++) {
    ch[i].fd = -1;
    ch[i].pid = -1;
  }
  for (unsigned i = 0; i < nch; i++) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      fprintf(stderr, "wsgate-load: socketpair: %s\n", strerror(errno));
      kill_all(ch, i);
      return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
      fprintf(stderr, "wsgate-load: fork: %s\n", strerror(errno));
      close(sv[0]);
      close(sv[1]);
      kill_all(ch, i);
      return -1;
    }
    if (pid == 0) {
      close(sv[0]);
      for (unsigned j = 0; j < i; j++)
        close(ch[j].fd);
      _exit(i < p->procs ? load_worker_run(p, i, sv[1]) : load_api_run(p, sv[1]));
    }
    close(sv[1]);
    ch[i].pid = pid;
    ch[i].fd = sv[0];
  }

  uint64_t start = mono_ns(), last_print = start;
  uint64_t deadline = start + p->ramp_timeout_ns + 60 * NS +
                      (p->mode == LOAD_IDLE ? p->hold_ns : p->duration_ns + p->drain_ns) + 60 * NS;
  bool go_sent = false, window_marked = false, api_drained = p->mode != LOAD_API;
  uint64_t api_expected = UINT64_MAX;
  uint64_t window_at = 0;
  struct pollfd pfd[MAX_PROCS + 1];
  for (;;) {
    unsigned nready = 0, ndone = 0;
    uint64_t r = 0, f = 0;
    for (unsigned i = 0; i < nch; i++) {
      nready += ch[i].ready;
      ndone += ch[i].done;
      r += ch[i].n_ready;
      f += ch[i].n_failed;
    }
    uint64_t now = mono_ns();
    if (!go_sent && nready == nch) {
      *ramp_ns = now - start;
      /* A little ahead, so that every worker has the command before the schedule starts. */
      char line[64];
      snprintf(line, sizeof line, "G %llu\n", (unsigned long long)(now + 200 * 1000000ull));
      tell_all(ch, nch, line);
      go_sent = true;
      window_at = now + 200 * 1000000ull + p->warmup_ns;
      if (p->progress)
        fprintf(stderr, "wsgate-load: %llu ready, %llu failed after %.1f s; %s\n",
                (unsigned long long)r, (unsigned long long)f, (double)*ramp_ns / 1e9,
                p->mode == LOAD_IDLE ? "holding" : "sending");
    } else if (!go_sent && p->progress && now - last_print >= NS) {
      fprintf(stderr, "wsgate-load: connecting: %llu ready, %llu failed (%.1f s)\n",
              (unsigned long long)r, (unsigned long long)f, (double)(now - start) / 1e9);
      last_print = now;
    }
    if (go_sent && !window_marked && p->mode != LOAD_IDLE && now >= window_at) {
      hops_mark(hops);
      window_marked = true;
    }
    if (!api_drained)
      api_drained = api_caught_up(p, ch, &api_expected);
    if (ndone == nch) {
      if (window_marked)
        hops_mark(hops); /* before "X": the disconnects are not part of the run */
      tell_all(ch, nch, "X\n");
      break;
    }
    if (interrupted || now > deadline) {
      fprintf(stderr, "wsgate-load: %s; stopping the workers\n",
              interrupted ? "interrupted" : "the run exceeded its time limit");
      kill_all(ch, nch);
      return -1;
    }
    for (unsigned i = 0; i < nch; i++) {
      pfd[i].fd = ch[i].eof ? -1 : ch[i].fd;
      pfd[i].events = POLLIN;
      pfd[i].revents = 0;
    }
    int n = poll(pfd, nch, 200);
    if (n < 0 && errno != EINTR) {
      fprintf(stderr, "wsgate-load: poll: %s\n", strerror(errno));
      kill_all(ch, nch);
      return -1;
    }
    for (unsigned i = 0; n > 0 && i < nch; i++) {
      if (!(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
        continue;
      char buf[65536];
      ssize_t got = recv(ch[i].fd, buf, sizeof buf, 0);
      if (got < 0 && errno == EINTR)
        continue;
      if (got <= 0 || child_input(&ch[i], buf, (size_t)got) != 0) {
        ch[i].eof = true;
        if (!ch[i].done) {
          fprintf(stderr, "wsgate-load: worker %u ended without a result (see its message above)\n",
                  i);
          kill_all(ch, nch);
          return -1;
        }
      }
    }
  }
  int rc = 0;
  for (unsigned i = 0; i < nch; i++) {
    int status = 0;
    /* Workers close their connections and exit at "X"; wait, but not forever. */
    uint64_t until = mono_ns() + 30 * NS;
    pid_t w;
    while ((w = waitpid(ch[i].pid, &status, WNOHANG)) == 0 && mono_ns() < until)
      usleep(10000);
    if (w == 0) {
      kill(ch[i].pid, SIGKILL);
      waitpid(ch[i].pid, &status, 0);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      rc = -1;
    ch[i].pid = -1;
  }
  return rc;
}

/* ----------------------------------------------------------------------------------------- */
/* merging and output                                                                         */

typedef struct {
  uint64_t conns, ready, failed, receivers_ready, closed_after_ready, sent, sent_measured, dropped,
      received, received_measured, expected_measured, ramp_ns_max;
  json_t *fails, *first_errors, *refused, *close_codes;
  json_t *api; /* --mode api: the sender's counts (borrowed from its result) */
  double cpu_receivers_s;
  load_hist h_connect, h_latency, h_lag, h_request;
} totals;

static uint64_t jget(json_t *o, const char *k) {
  json_t *v = json_object_get(o, k);
  return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

static void sum_counts(json_t *dst, json_t *src) {
  const char *k;
  json_t *v;
  json_object_foreach(src, k, v) {
    json_int_t prev = json_integer_value(json_object_get(dst, k));
    json_object_set_new(dst, k, json_integer(prev + json_integer_value(v)));
  }
}

static int hist_from_json(load_hist *h, json_t *o) {
  load_hist tmp;
  load_hist_init(&tmp);
  json_t *b = json_object_get(o, "b");
  size_t i;
  json_t *pair;
  json_array_foreach(b, i, pair) {
    json_int_t ix = json_integer_value(json_array_get(pair, 0));
    json_int_t n = json_integer_value(json_array_get(pair, 1));
    if (ix < 0 || ix >= LOAD_HIST_BUCKETS || n < 0)
      return -1;
    tmp.buckets[ix] += (uint64_t)n;
  }
  tmp.count = jget(o, "n");
  if (tmp.count) {
    tmp.min = jget(o, "min");
    tmp.max = jget(o, "max");
    tmp.sum = jget(o, "sum");
  }
  load_hist_merge(h, &tmp);
  return 0;
}

static int merge(totals *t, const char *text) {
  json_error_t je;
  json_t *o = json_loads(text, 0, &je);
  if (!o) {
    fprintf(stderr, "wsgate-load: a worker's result is not JSON: %s\n", je.text);
    return -1;
  }
  t->conns += jget(o, "conns");
  t->ready += jget(o, "ready");
  t->failed += jget(o, "failed");
  t->receivers_ready += jget(o, "receivers_ready");
  t->closed_after_ready += jget(o, "closed_after_ready");
  t->sent += jget(o, "sent");
  t->sent_measured += jget(o, "sent_measured");
  t->dropped += jget(o, "dropped");
  t->received += jget(o, "received");
  t->received_measured += jget(o, "received_measured");
  t->expected_measured += jget(o, "expected_measured");
  uint64_t r = jget(o, "ramp_ns");
  if (r > t->ramp_ns_max)
    t->ramp_ns_max = r;
  sum_counts(t->fails, json_object_get(o, "fails"));
  sum_counts(t->refused, json_object_get(o, "refused"));
  sum_counts(t->close_codes, json_object_get(o, "close_codes"));
  const char *k;
  json_t *v;
  json_object_foreach(json_object_get(o, "first_errors"), k, v) {
    if (!json_object_get(t->first_errors, k))
      json_object_set(t->first_errors, k, v);
  }
  json_t *api = json_object_get(o, "api");
  if (api) {
    json_decref(t->api);
    t->api = json_incref(api);
  } else {
    t->cpu_receivers_s += json_real_value(json_object_get(o, "cpu_s"));
  }
  int rc = (api ? hist_from_json(&t->h_request, json_object_get(o, "h_request")) : 0) |
           hist_from_json(&t->h_connect, json_object_get(o, "h_connect")) |
           hist_from_json(&t->h_latency, json_object_get(o, "h_latency")) |
           hist_from_json(&t->h_lag, json_object_get(o, "h_lag"));
  json_decref(o);
  return rc;
}

static double ms(uint64_t ns) {
  return (double)ns / 1e6;
}

static json_t *pct_json(const load_hist *h) {
  json_t *o = json_pack("{sI sf}", "count", (json_int_t)h->count, "mean", load_hist_mean(h) / 1e6);
  for (size_t i = 0; i < sizeof PCTS / sizeof PCTS[0]; i++)
    json_object_set_new(o, PCT_NAMES[i], json_real(ms(load_hist_percentile(h, PCTS[i]))));
  json_object_set_new(o, "max", json_real(ms(h->max)));
  return o;
}

static const char *mode_name(load_mode m) {
  return m == LOAD_IDLE ? "idle" : m == LOAD_ECHO ? "echo" : m == LOAD_FANOUT ? "fanout" : "api";
}

/* --mode api: the sender's counts, accepted sends/s and request latency (202 answers). */
static json_t *api_json(const load_plan *p, const totals *t) {
  double window = (double)(p->duration_ns - p->warmup_ns) / 1e9;
  json_t *a = json_deep_copy(t->api);
  if (!a)
    return json_null();
  /* Answered 202 inside the measured window: the throughput even when the schedule fell behind
   * (then the sends due in the window are not the ones answered in it). */
  double acc = (double)json_integer_value(json_object_get(a, "accepted_window"));
  json_object_set_new(a, "accepted_per_second", json_real(window > 0 ? acc / window : 0));
  json_object_set_new(a, "request_ms", pct_json(&t->h_request));
  json_object_set_new(a, "cpu_receivers_s", json_real(t->cpu_receivers_s));
  return a;
}

static json_t *result_json(const load_cfg *cfg, const load_plan *p, const totals *t,
                           uint64_t ramp_ns) {
  double ramp_s = (double)ramp_ns / 1e9;
  json_t *connect = json_pack(
      "{sI sI sI sf sf sO sO sO so}", "attempted", (json_int_t)t->conns, "ready",
      (json_int_t)t->ready, "failed", (json_int_t)t->failed, "seconds", ramp_s, "per_second",
      ramp_s > 0 ? (double)t->ready / ramp_s : 0.0, "fails", t->fails, "first_errors",
      t->first_errors, "refused", t->refused, "latency_ms", pct_json(&t->h_connect));
  json_t *o = json_pack("{ss ss ss sI sI so}", "mode", mode_name(p->mode), "proto", cfg->proto,
                        "url", cfg->url, "procs", (json_int_t)p->procs, "conns",
                        (json_int_t)p->conns, "connect", connect);
  json_object_set_new(o, "held",
                      json_pack("{sI sI sO sf}", "closed_after_ready",
                                (json_int_t)t->closed_after_ready, "held_at_end",
                                (json_int_t)(t->ready - t->closed_after_ready), "close_codes",
                                t->close_codes, "hold_s", (double)p->hold_ns / 1e9));
  if (p->mode != LOAD_IDLE) {
    double window = (double)(p->duration_ns - p->warmup_ns) / 1e9;
    uint64_t lost = t->expected_measured > t->received_measured
                        ? t->expected_measured - t->received_measured
                        : 0;
    json_t *run = json_pack(
        "{sf sf sf sI sI sI sI sI sI sI sf sf so so}", "duration_s", (double)p->duration_ns / 1e9,
        "warmup_s", (double)p->warmup_ns / 1e9, "rate_target", p->rate, "sent", (json_int_t)t->sent,
        "sent_measured", (json_int_t)t->sent_measured, "dropped", (json_int_t)t->dropped,
        "received", (json_int_t)t->received, "received_measured", (json_int_t)t->received_measured,
        "expected_measured", (json_int_t)t->expected_measured, "lost_measured", (json_int_t)lost,
        "rate_measured", window > 0 ? (double)t->received_measured / window : 0.0, "loss_fraction",
        t->expected_measured ? (double)lost / (double)t->expected_measured : 0.0, "latency_ms",
        pct_json(&t->h_latency), "send_lag_ms", pct_json(&t->h_lag));
    if (p->mode == LOAD_FANOUT)
      json_object_set_new(run, "receivers", json_integer((json_int_t)t->receivers_ready));
    if (p->mode == LOAD_API && t->api)
      json_object_set_new(run, "api", api_json(p, t));
    json_object_set_new(o, "run", run);
  }
  return o;
}

static void print_pct(const char *label, const load_hist *h) {
  printf("  %-22s n=%llu", label, (unsigned long long)h->count);
  for (size_t i = 0; i < sizeof PCTS / sizeof PCTS[0]; i++)
    printf("  %s %.3f", PCT_NAMES[i], ms(load_hist_percentile(h, PCTS[i])));
  printf("  max %.3f ms\n", ms(h->max));
}

static void print_table(const load_plan *p, const totals *t, uint64_t ramp_ns) {
  double ramp_s = (double)ramp_ns / 1e9;
  printf("wsgate-load %s: %u connections over %u process(es), %u target(s)\n", mode_name(p->mode),
         p->conns, p->procs, p->ntargets);
  printf("  connected %llu of %llu in %.2f s (%.0f/s), failed %llu\n", (unsigned long long)t->ready,
         (unsigned long long)t->conns, ramp_s, ramp_s > 0 ? (double)t->ready / ramp_s : 0.0,
         (unsigned long long)t->failed);
  const char *k;
  json_t *v;
  json_object_foreach(t->fails, k, v) {
    if (json_integer_value(v) > 0) {
      json_t *e = json_object_get(t->first_errors, k);
      printf("    %-10s %lld  (first: %s)\n", k, (long long)json_integer_value(v),
             e ? json_string_value(e) : "-");
    }
  }
  print_pct("upgrade+set-up (ms)", &t->h_connect);
  printf("  closed by the server after ready: %llu\n", (unsigned long long)t->closed_after_ready);
  json_object_foreach(t->close_codes, k, v) {
    printf("    close code %s: %lld\n", k, (long long)json_integer_value(v));
  }
  if (p->mode == LOAD_IDLE)
    return;
  double window = (double)(p->duration_ns - p->warmup_ns) / 1e9;
  printf("  %s at %.0f msgs/s for %.1f s (%.1f s warm-up): sent %llu, dropped %llu\n",
         mode_name(p->mode), p->rate, (double)p->duration_ns / 1e9, (double)p->warmup_ns / 1e9,
         (unsigned long long)t->sent, (unsigned long long)t->dropped);
  printf("  measured: expected %llu, received %llu (%.0f/s)%s\n",
         (unsigned long long)t->expected_measured, (unsigned long long)t->received_measured,
         window > 0 ? (double)t->received_measured / window : 0.0,
         p->mode == LOAD_FANOUT ? " deliveries" : " replies");
  print_pct("latency (ms)", &t->h_latency);
  print_pct("send lag (ms)", &t->h_lag);
  if (p->mode != LOAD_API || !t->api)
    return;
  json_t *a = t->api;
  printf(
      "  api: %lld requests on %lld connections, %lld accepted (%.0f/s in the window), %lld failed "
      "(%lld transport errors%s%s)\n",
      (long long)json_integer_value(json_object_get(a, "started")),
      (long long)json_integer_value(json_object_get(a, "clients")),
      (long long)json_integer_value(json_object_get(a, "accepted")),
      window > 0 ? (double)json_integer_value(json_object_get(a, "accepted_window")) / window : 0.0,
      (long long)json_integer_value(json_object_get(a, "failed")),
      (long long)json_integer_value(json_object_get(a, "curl_errors")),
      json_string_length(json_object_get(a, "first_error")) ? ", first: " : "",
      json_string_value(json_object_get(a, "first_error")));
  json_object_foreach(json_object_get(a, "statuses"), k, v) {
    printf("    HTTP %s: %lld\n", k, (long long)json_integer_value(v));
  }
  print_pct("request -> 202 (ms)", &t->h_request);
  printf("  cpu: sender %.2f s, receivers %.2f s\n", json_real_value(json_object_get(a, "cpu_s")),
         t->cpu_receivers_s);
}

int main(int argc, char **argv) {
  load_cfg cfg;
  memset(&cfg, 0, sizeof cfg);
  char err[512] = "";
  wsg_config_result r = wsg_config_parse(&spec, &cfg, argc, argv, environ, err, sizeof err);
  if (r != WSG_CONFIG_OK) {
    if (r == WSG_CONFIG_ERROR)
      fprintf(stderr, "wsgate-load: %s\n(see wsgate-load --help)\n", err);
    wsg_config_finish(&spec, &cfg);
    return r == WSG_CONFIG_EXIT ? 0 : 2;
  }
  load_plan plan;
  uint8_t *secret = NULL;
  if (make_plan(&cfg, &plan, &secret, err, sizeof err) != 0) {
    fprintf(stderr, "wsgate-load: %s\n", err);
    free(secret);
    wsg_config_finish(&spec, &cfg);
    return 2;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  child ch[MAX_PROCS + 1];
  memset(ch, 0, sizeof ch);
  uint64_t ramp_ns = 0;
  load_hops *hops = NULL;
  if (cfg.hops_from && !(hops = load_hops_create(cfg.hops_from, err, sizeof err))) {
    fprintf(stderr, "wsgate-load: %s\n", err);
    free(secret);
    wsg_config_finish(&spec, &cfg);
    return 2;
  }
  int rc = run_workers(&plan, ch, &ramp_ns, &hops);
  totals t;
  memset(&t, 0, sizeof t);
  t.fails = json_object();
  t.first_errors = json_object();
  t.refused = json_object();
  t.close_codes = json_object();
  load_hist_init(&t.h_connect);
  load_hist_init(&t.h_latency);
  load_hist_init(&t.h_lag);
  load_hist_init(&t.h_request);
  for (unsigned i = 0; i < children(&plan); i++) {
    if (ch[i].done && merge(&t, ch[i].json) != 0)
      rc = -1;
    free(ch[i].json);
    if (ch[i].fd >= 0)
      close(ch[i].fd);
    if (ch[i].pid > 0) {
      kill(ch[i].pid, SIGKILL);
      waitpid(ch[i].pid, NULL, 0);
    }
  }
  if (rc == 0) {
    if (strcmp(cfg.output, "json") == 0) {
      json_t *o = result_json(&cfg, &plan, &t, ramp_ns);
      if (o && hops)
        json_object_set_new(o, "hops", load_hops_json(hops));
      char *s = o ? json_dumps(o, JSON_INDENT(2) | JSON_REAL_PRECISION(6)) : NULL;
      if (s)
        printf("%s\n", s);
      else
        rc = -1;
      free(s);
      json_decref(o);
    } else {
      print_table(&plan, &t, ramp_ns);
      if (hops)
        load_hops_print(hops, stdout);
    }
  }
  json_decref(t.fails);
  json_decref(t.first_errors);
  json_decref(t.refused);
  json_decref(t.close_codes);
  json_decref(t.api);
  load_hops_destroy(hops);
  free(secret);
  wsg_config_finish(&spec, &cfg);
  return rc == 0 ? 0 : 1;
}
