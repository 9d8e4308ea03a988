/*
 * load_engine: one wsgate-load worker process. It opens its share of the connections (non-blocking
 * sockets on one epoll set, each bound to a 127.0.0.x source address so the run is not limited
 * to one address's ~28k ephemeral ports), speaks RFC 6455 through load_ws, runs the mode's
 * traffic on a fixed schedule and reports to the parent over a socketpair:
 *
 *   worker -> parent   "P <ready> <failed>\n"   progress, once a second while connecting
 *                      "R <ready> <failed>\n"   every connection is ready or has failed
 *                      "J <bytes>\n<json>"      the result, once the traffic phase is over
 *                      "C <received>\n"        --mode api, draining: what arrived so far
 *   parent -> worker   "G <t0 ns>\n"            start the traffic at CLOCK_MONOTONIC t0
 *                      "D\n"                    --mode api: the workers together received every
 *                                               delivery the sender's 202s promised: report
 *                      "X\n"                    every worker has reported: close and exit
 *
 * The barriers keep workers from disturbing each other: traffic starts only once every worker
 * holds its connections, and nobody closes connections before every worker has measured.
 * CLOCK_MONOTONIC is one clock for all processes of the machine, so a timestamp written by one
 * worker is a valid start time for a latency measured by another (fan-out).
 *
 * Threads: a worker is single-threaded.
 */
#ifndef LOAD_ENGINE_H
#define LOAD_ENGINE_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LOAD_MAX_TARGETS 16

/* LOAD_API: the connections only receive; load_api's process sends through wsgate-api. */
typedef enum { LOAD_IDLE, LOAD_ECHO, LOAD_FANOUT, LOAD_API } load_mode;

/* What the connections speak once upgraded. */
typedef enum {
  LOAD_PROTO_RAW,        /* payloads as they are: an echo server, wsgate's echo handler, nchan */
  LOAD_PROTO_CHAT,       /* wsgate's chat handler: join a room, "say" to it */
  LOAD_PROTO_CENTRIFUGO, /* Centrifugo's JSON protocol: connect, subscribe, publish */
  LOAD_PROTO_CHANNEL,    /* wsgate's channels: receivers subscribe to --room, the sender's frames
                            "<room>\n<payload>" go to the `publish` handler */
} load_proto;

typedef struct {
  struct sockaddr_in addr;
  char host[64]; /* Host header: "127.0.0.1:8080" */
  char path[512];
} load_target;

/* Everything a worker needs; filled by the parent, read-only in the worker. */
typedef struct {
  load_mode mode;
  load_proto proto;
  load_target targets[LOAD_MAX_TARGETS];
  unsigned ntargets;
  load_target sender_target; /* fan-out: where the sender connects */

  uint32_t conns; /* connections of the whole run (receivers in fan-out) */
  unsigned procs; /* workers */
  uint32_t users; /* distinct user ids; connection i is user (i % users) + user_offset */
  uint64_t user_offset;
  const char *user_prefix;
  unsigned sources; /* source addresses 127.0.0.2 .. 127.0.0.(1 + sources); 0: not bound */
  bool dev_user;    /* append ?user=<id> (wsgate --insecure-dev-user) */
  const char *subprotocol;

  /* Authentication, at most one of the three. */
  const char *token;
  const char *token_cmd;
  const uint8_t *jwt_secret;
  size_t jwt_secret_len;
  uint64_t jwt_ttl_s;

  double connect_rate;  /* connection attempts per second, all workers together; 0: no limit */
  uint32_t max_pending; /* per worker: attempts in flight (TCP + upgrade + set-up) */
  uint64_t connect_timeout_ns;
  uint64_t ramp_timeout_ns;

  double rate;          /* echo: messages/s of all workers; fan-out: the sender's messages/s */
  size_t size;          /* application bytes per message: the timestamp marker and padding */
  uint64_t duration_ns; /* traffic phase, warm-up included */
  uint64_t warmup_ns;   /* messages scheduled in the first warmup_ns are not measured */
  uint64_t drain_ns;    /* after the last send, wait at most this long for replies */
  uint64_t hold_ns;     /* idle: how long the connections are held */
  size_t out_max;       /* per connection: bytes waiting to be sent before sends are dropped */
  const char *room;     /* chat room / Centrifugo channel / wsgate channel */
  uint32_t rooms;       /* channel, idle: connection n subscribes to <room>-<n % rooms>; 0: room */
  const char *api_url;  /* api: wsgate-api's http://127.x.x.x:port */
  const char *api_key;  /* api: a bearer key */
  unsigned api_clients; /* api: keep-alive connections of the sender */
  unsigned api_users;   /* api: users per send (1..1000, the API's bound) */
  unsigned api_batch;   /* api: sends per request (1: /v1/send, more: /v1/batch) */
  bool progress;
} load_plan;

/*
 * Runs worker `id` of plan->procs on the control socket `ctl` (taken: closed before return).
 * Returns the process exit status (0: it reported a result; 1: a fatal error, reported on stderr).
 */
int load_worker_run(const load_plan *plan, unsigned id, int ctl);

/* The range of global connection indexes worker `id` owns: [*first, *first + *count). */
void load_worker_share(const load_plan *plan, unsigned id, uint32_t *first, uint32_t *count);

/*
 * The wsgate channel connection `gidx` subscribes to (--proto channel): plan->room, or
 * <room>-<gidx % rooms> when plan->rooms > 0. Writes it NUL-terminated into out; returns its
 * length, or -1 when it does not fit in cap.
 */
int load_channel_of(const load_plan *plan, uint32_t gidx, char *out, size_t cap);

/* Connection attempts one worker may make: the file descriptor hard limit minus a reserve. */
uint32_t load_worker_capacity(void);

#endif
