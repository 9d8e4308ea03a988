/*
 * load_engine: one wsgate-load worker process (see load_engine.h).
 *
 * A connection is 128 bytes here while it is idle (state, frame parser, marker scanner); buffers
 * for the upgrade answer, set-up replies, split control frames and unsent bytes are allocated only
 * while they are needed. One 256 KiB read buffer serves every connection. The traffic schedule is
 * open loop: message g is due at t0 + g / rate whether or not earlier replies came back, and its
 * latency counts from that due time, so a stalled server (or a late load generator: see the send
 * lag it reports) shows up in the percentiles instead of silently lowering the offered rate
 * (coordinated omission).
 *
 * Threads: one per worker process.
 */
#include "load_engine.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "load_worker.h"

uint32_t load_worker_capacity(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return 0;
  rlim_t lim = rl.rlim_max == RLIM_INFINITY ? 1048576 : rl.rlim_max;
  return lim > FD_RESERVE ? (uint32_t)(lim - FD_RESERVE) : 0;
}

void load_worker_share(const load_plan *plan, unsigned id, uint32_t *first, uint32_t *count) {
  uint64_t lo = (uint64_t)plan->conns * id / plan->procs;
  uint64_t hi = (uint64_t)plan->conns * (id + 1) / plan->procs;
  *first = (uint32_t)lo;
  *count = (uint32_t)(hi - lo);
}

/* ----------------------------------------------------------------------------------------- */
/* the loop                                                                                   */

static int wait_events(worker *w, struct epoll_event *evs, uint64_t timeout_ns) {
  if (timeout_ns > WAIT_CAP_NS)
    timeout_ns = WAIT_CAP_NS;
  if (w->have_pwait2) {
    struct timespec ts = {.tv_sec = (time_t)(timeout_ns / NS), .tv_nsec = (long)(timeout_ns % NS)};
    int n = epoll_pwait2(w->epfd, evs, EVENTS_MAX, &ts, NULL);
    if (n >= 0 || errno != ENOSYS)
      return n;
    w->have_pwait2 = false; /* kernel before 5.11: millisecond timeouts */
  }
  return epoll_wait(w->epfd, evs, EVENTS_MAX, (int)((timeout_ns + 999999) / 1000000));
}

static void ramp_step(worker *w, uint64_t now) {
  const load_plan *p = w->p;
  uint64_t allowed = w->n;
  if (w->my_rate > 0) {
    double a = (double)(now - w->ramp_start) * w->my_rate / 1e9 + 1.0;
    allowed = a < (double)w->n ? (uint64_t)a : w->n;
  }
  while (w->next_start < allowed && w->inflight < p->max_pending)
    load__start_conn(w, w->next_start++);
  if (now >= w->next_progress) {
    load__ctl_send(w, "P %u %u\n", w->ready, w->failed);
    w->next_progress = now + NS;
  }
  if (now - w->ramp_start > p->ramp_timeout_ns) {
    while (w->qhead != NONE)
      load__fail(w, w->qhead, FAIL_TIMEOUT, "not ready when --ramp-timeout ran out");
    while (w->next_start < w->n)
      load__fail(w, w->next_start++, FAIL_TIMEOUT, "not started when --ramp-timeout ran out");
  }
  if (w->next_start == w->n && w->inflight == 0) {
    w->ramp_end = now;
    w->phase = P_WAIT_GO;
    load__ctl_send(w, "R %u %u\n", w->ready, w->failed);
  }
}

static uint64_t next_wake(const worker *w, uint64_t now) {
  uint64_t wake = now + WAIT_CAP_NS;
  if (w->qhead != NONE) {
    uint64_t t = w->c[w->qhead].t_start + w->p->connect_timeout_ns;
    if (t < wake)
      wake = t;
  }
  if (w->phase == P_RAMP && w->next_start < w->n && w->inflight < w->p->max_pending) {
    uint64_t t =
        w->my_rate > 0 ? w->ramp_start + (uint64_t)((double)w->next_start * 1e9 / w->my_rate) : now;
    if (t < wake)
      wake = t;
  }
  if (w->phase == P_RUN) {
    if (w->sends) {
      uint64_t t = load__sched_time(w, w->g_next);
      if (t < wake)
        wake = t;
    }
    if (w->t_end < wake)
      wake = w->t_end;
  }
  if (w->phase == P_DRAIN && w->t_drain < wake)
    wake = w->t_drain;
  return wake;
}

static bool drained(const worker *w) {
  if (w->p->mode == LOAD_IDLE)
    return true;
  if (w->p->mode == LOAD_API)
    return w->caught_up; /* the expected count is the sender's: the parent says (its "D") */
  uint64_t expected = w->p->mode == LOAD_FANOUT ? w->expected : w->sent_measured;
  return w->received_measured >= expected;
}

static int worker_loop(worker *w) {
  struct epoll_event *evs = malloc(sizeof *evs * EVENTS_MAX);
  if (!evs)
    return -1;
  int rc = 0;
  uint64_t give_up = w->ramp_start + w->p->ramp_timeout_ns + 120 * NS;
  for (;;) {
    uint64_t now = mono_ns();
    if (w->phase == P_RAMP)
      ramp_step(w, now);
    now = mono_ns(); /* connections just started carry later start times */
    while (w->qhead != NONE && now > w->c[w->qhead].t_start + w->p->connect_timeout_ns) {
      conn *k = &w->c[w->qhead];
      load__fail(w, w->qhead, FAIL_TIMEOUT, "%s after %.1f s",
                 k->state == S_CONNECTING ? "TCP connect not done"
                 : k->state == S_HTTP     ? "no upgrade answer"
                                          : "no answer to the set-up command",
                 (double)(now - k->t_start) / 1e9);
    }
    if (w->phase == P_RUN) {
      load__send_due(w, now);
      if (now >= w->t_end)
        w->phase = P_DRAIN;
    }
    if (w->phase == P_DRAIN && w->p->mode == LOAD_API && now >= w->next_rx_report &&
        (w->received != w->rx_reported || w->next_rx_report == 0)) {
      /* At most every 50 ms: the parent sums them against what the sender's 202s promised. */
      load__ctl_send(w, "C %llu\n", (unsigned long long)w->received);
      w->rx_reported = w->received;
      w->next_rx_report = now + 50 * 1000000ull;
    }
    if (w->phase == P_DRAIN && (now >= w->t_drain || drained(w))) {
      if (load__report(w) != 0) {
        rc = -1;
        break;
      }
      w->phase = P_WAIT_EXIT;
    }
    if (w->exit_req) {
      rc = w->phase == P_WAIT_EXIT ? 0 : -1; /* the parent gave up on the run */
      break;
    }
    if (w->phase == P_WAIT_GO && now > give_up) {
      fprintf(stderr, "wsgate-load worker %u: no start signal from the parent\n", w->id);
      rc = -1;
      break;
    }
    uint64_t wake = next_wake(w, now);
    int n = wait_events(w, evs, wake > now ? wake - now : 0);
    if (n < 0 && errno != EINTR) {
      fprintf(stderr, "wsgate-load worker %u: epoll: %s\n", w->id, strerror(errno));
      rc = -1;
      break;
    }
    for (int e = 0; e < n; e++) {
      if (evs[e].data.u64 == CTL_TAG) {
        if (load__ctl_read(w) != 0) {
          rc = w->phase == P_WAIT_EXIT ? 0 : -1; /* parent gone */
          goto out;
        }
        continue;
      }
      uint32_t i = (uint32_t)evs[e].data.u64;
      conn *k = &w->c[i];
      if (k->state == S_DONE || k->fd < 0)
        continue;
      uint32_t ev = evs[e].events;
      if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        if (k->state == S_CONNECTING)
          load__on_writable(w, i); /* SO_ERROR tells what happened */
        else
          load__on_readable(w, i);
      }
      if ((ev & EPOLLOUT) && k->state != S_DONE && k->fd >= 0)
        load__on_writable(w, i);
    }
  }
out:
  free(evs);
  return rc;
}

static void worker_free(worker *w) {
  if (w->c)
    for (uint32_t i = 0; i < w->n; i++)
      load__release(w, &w->c[i]);
  free(w->c);
  free(w->rbuf);
  free(w->msg);
  free(w->ready_list);
  free(w->dirty);
  if (w->token_cache)
    for (uint64_t u = 0; u < w->token_cache_n; u++)
      free(w->token_cache[u]);
  free(w->token_cache);
  if (w->epfd >= 0)
    close(w->epfd);
}

static int raise_nofile(uint32_t need) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return -1;
  rl.rlim_cur = rl.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
    return -1;
  return rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= (rlim_t)need + FD_RESERVE ? 0 : -1;
}

int load_worker_run(const load_plan *plan, unsigned id, int ctl) {
  /* The parent's death (Ctrl-C, a crash) ends the workers too. */
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  signal(SIGPIPE, SIG_IGN);
  worker *w = calloc(1, sizeof *w);
  if (!w) {
    close(ctl);
    return 1;
  }
  load_hist_init(&w->h_connect);
  load_hist_init(&w->h_lat);
  load_hist_init(&w->h_lag);
  w->p = plan;
  w->id = id;
  w->ctl = ctl;
  w->epfd = -1;
  w->have_pwait2 = true;
  w->qhead = w->qtail = w->sender = NONE;
  w->phase = P_RAMP;
  load_worker_share(plan, id, &w->first, &w->count);
  bool has_sender = plan->mode == LOAD_FANOUT && id == 0;
  w->n = w->count + (has_sender ? 1u : 0u);
  int rc = 1;
  uint64_t seed = mono_ns() ^ ((uint64_t)getpid() << 32);
  w->salt = seed * UINT64_C(0x9E3779B97F4A7C15);
  w->rng = w->salt | 1;
  if (raise_nofile(w->n) != 0) {
    fprintf(stderr,
            "wsgate-load worker %u: %u connections need %u file descriptors, more than this "
            "process may open (ulimit -Hn); use more --procs\n",
            id, w->n, w->n + FD_RESERVE);
    goto done;
  }
  w->msg_cap = plan->size + LOAD_MARKER_MAX + MSG_EXTRA + 256;
  w->c = calloc(w->n ? w->n : 1, sizeof *w->c);
  w->rbuf = malloc(RBUF_SIZE);
  w->msg = malloc(w->msg_cap);
  w->ready_list = malloc(sizeof(uint32_t) * (w->n ? w->n : 1));
  w->dirty = malloc(sizeof(uint32_t) * (w->n ? w->n : 1));
  if (!w->c || !w->rbuf || !w->msg || !w->ready_list || !w->dirty) {
    fprintf(stderr, "wsgate-load worker %u: out of memory for %u connections\n", id, w->n);
    goto done;
  }
  if (plan->token_cmd) {
    /* Users of this worker's connections: a contiguous range unless they wrap around. */
    w->token_cache_first = plan->user_offset;
    w->token_cache_n = (uint64_t)plan->users + 1;
    if (!(w->token_cache = calloc(w->token_cache_n, sizeof(char *)))) {
      fprintf(stderr, "wsgate-load worker %u: out of memory\n", id);
      goto done;
    }
  }
  for (uint32_t i = 0; i < w->n; i++) {
    w->c[i].fd = -1;
    w->c[i].qprev = w->c[i].qnext = NONE;
    w->c[i].gidx = w->first + i;
  }
  if (has_sender) {
    w->sender = w->n - 1;
    w->c[w->sender].flags = F_SENDER;
    w->c[w->sender].gidx = plan->conns; /* one past the receivers */
  }
  w->epfd = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event cev = {.events = EPOLLIN, .data.u64 = CTL_TAG};
  if (w->epfd < 0 || epoll_ctl(w->epfd, EPOLL_CTL_ADD, ctl, &cev) != 0) {
    fprintf(stderr, "wsgate-load worker %u: epoll: %s\n", id, strerror(errno));
    goto done;
  }
  w->my_rate = plan->connect_rate > 0 ? plan->connect_rate / plan->procs : 0;
  w->ramp_start = mono_ns();
  w->next_progress = w->ramp_start + NS;
  rc = worker_loop(w) == 0 ? 0 : 1;
done:
  worker_free(w);
  free(w);
  close(ctl);
  return rc;
}
