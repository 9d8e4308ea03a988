/*
 * api_kafka: the transactional writer (see api_kafka.h).
 *
 * A request of one record does not need a transaction to be all or nothing: it goes to a second,
 * plain idempotent producer (acks=all) and waits for its delivery report, which lets librdkafka
 * batch thousands of them per produce request instead of paying a transaction commit (tens of
 * milliseconds) per group. It is used only while the transactional side is ready, so an
 * unreachable Kafka still answers at once, and its message timeout is the transaction timeout.
 *
 * Queue: a bounded list of waiting requests (jobs) under one mutex; the writer takes all that
 * are queued (up to MAX_TXN_RECORDS records) into one transaction. A record librdkafka refuses
 * at once (too large, unknown partition) fails only its own request: the transaction is aborted
 * and the other requests go back to the front of the queue.
 *
 * Threads: the writer thread runs the transactional producer, the poller serves the single
 * producer's delivery reports; both call the jobs' `done` (outside `mu`, which guards only the
 * queue and `stopping`). Nothing blocks a request's thread: a thread per waiting request cost
 * two context switches per request (measured in docs/BENCHMARKS.md, (g)). create, shutdown and
 * destroy on main.
 */
#include "api_kafka.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "wsg_kafka.h"
#include "wsg_log.h"
#include "wsg_time.h"

#define MAX_QUEUED      4096 /* requests waiting: beyond, 503 "busy" */
#define MAX_TXN_RECORDS 10000
#define INIT_TIMEOUT_MS 3000
#define INIT_BACKOFF_MS 500
/* The producers' linger.ms unless -X sets it: every request waits for its acknowledgement, so
 * the linger is paid per request, and 64 waiting clients make batches without it. Measured
 * against the daemons' 5 ms (docs/BENCHMARKS.md, (g)): at 2,000 sends/s request -> 202 p50
 * 6.1 -> 2.3 ms; flooding with 64 clients 4,277-4,988 -> 5,635-6,245 accepted sends/s. */
#define API_LINGER_MS "1"

typedef struct job {
  const api_record *recs;
  size_t n;
  api_kafka_done_fn done;
  void *arg;
  struct job *next;
} job;

struct api_kafka {
  api_kafka_options o;
  char *topic;
  char *brokers;
  rd_kafka_t *rk;
  bool txn_ready;   /* init_transactions succeeded on rk */
  rd_kafka_t *fast; /* idempotent, not transactional: requests of one record */
  pthread_t poller; /* serves fast's delivery reports */
  bool poller_started;
  pthread_t thread;
  bool started;
  bool shut; /* api_kafka_shutdown ran (main thread only) */

  pthread_mutex_t mu;
  pthread_cond_t work; /* jobs queued, or stopping */
  job *head, *tail;
  size_t queued;
  bool stopping;

  atomic_int ready;
  atomic_int partitions;
  atomic_int slots;
  char *outbound;
  char status[256]; /* under mu */

  wsg_counter *m_commit_ok, *m_commit_err;
  wsg_histogram *m_commit_s;
  wsg_gauge *m_ready;
  wsg_counter *m_fast;
};

static void set_status(api_kafka *k, bool ready, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_status(api_kafka *k, bool ready, const char *fmt, ...) {
  pthread_mutex_lock(&k->mu);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(k->status, sizeof k->status, fmt, ap);
  va_end(ap);
  pthread_mutex_unlock(&k->mu);
  atomic_store(&k->ready, ready);
  if (k->m_ready)
    wsg_gauge_set(k->m_ready, ready);
}

int api_kafka_status(api_kafka *k, char *why, size_t whylen) {
  if (atomic_load(&k->ready))
    return 0;
  pthread_mutex_lock(&k->mu);
  snprintf(why, whylen, "kafka: %s", k->status);
  pthread_mutex_unlock(&k->mu);
  return -1;
}

int api_kafka_partitions(api_kafka *k) {
  return atomic_load(&k->partitions);
}

int api_kafka_slots(api_kafka *k) {
  return atomic_load(&k->slots);
}

/* Gives `j` its outcome and frees it; not under mu. */
static void finish(job *j, int rc, const char *why) {
  j->done(j->arg, rc, why ? why : "");
  free(j);
}

static void finish_list(job *list, int rc, const char *why) {
  while (list) {
    job *next = list->next;
    finish(list, rc, why);
    list = next;
  }
}

/* The fast producer's delivery report: finishes the job in the opaque. */
static void fast_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  (void)rk;
  (void)opaque;
  char why[256] = "";
  if (m->err)
    snprintf(why, sizeof why, "kafka: the record was not acknowledged: %s",
             rd_kafka_err2str(m->err));
  finish(m->_private, m->err ? -1 : 0, why);
}

/* One record (copied) to `topic`. produceva, not producev: producev's argument macros are GNU
 * statement expressions, which clang -Wpedantic -Werror refuses. */
static rd_kafka_resp_err_t produce(rd_kafka_t *rk, const char *topic, const api_record *r,
                                   void *opaque) {
  rd_kafka_vu_t vu[] = {
      {.vtype = RD_KAFKA_VTYPE_TOPIC, .u.cstr = topic},
      {.vtype = RD_KAFKA_VTYPE_PARTITION, .u.i32 = r->partition},
      {.vtype = RD_KAFKA_VTYPE_MSGFLAGS, .u.i = RD_KAFKA_MSG_F_COPY},
      {.vtype = RD_KAFKA_VTYPE_KEY, .u.mem = {(void *)r->key, r->key_len}},
      {.vtype = RD_KAFKA_VTYPE_VALUE, .u.mem = {(void *)r->value, r->len}},
      {.vtype = RD_KAFKA_VTYPE_OPAQUE, .u.ptr = opaque},
  };
  rd_kafka_error_t *e = rd_kafka_produceva(rk, vu, sizeof vu / sizeof vu[0]);
  if (!e)
    return RD_KAFKA_RESP_ERR_NO_ERROR;
  rd_kafka_resp_err_t err = rd_kafka_error_code(e);
  rd_kafka_error_destroy(e);
  return err;
}

static void *poller_main(void *arg) {
  api_kafka *k = arg;
  for (;;) {
    pthread_mutex_lock(&k->mu);
    bool stop = k->stopping;
    pthread_mutex_unlock(&k->mu);
    if (stop)
      break;
    rd_kafka_poll(k->fast, 100);
  }
  /* Every waiting request gets its answer: what is not acknowledged by the transaction timeout
   * is purged, and its delivery report says so. */
  if (rd_kafka_flush(k->fast, (int)k->o.txn_timeout_ms) != RD_KAFKA_RESP_ERR_NO_ERROR) {
    rd_kafka_purge(k->fast, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_flush(k->fast, 1000);
  }
  return NULL;
}

/* A producer's configuration: the daemons' defaults, API_LINGER_MS, then the user's -X. */
static rd_kafka_conf_t *producer_conf(api_kafka *k, char *err, size_t errlen) {
  rd_kafka_conf_t *conf =
      wsg_kafka_conf_new(WSG_KAFKA_PRODUCER, k->brokers, k->o.props, err, errlen);
  bool user = false;
  for (size_t i = 0; k->o.props && i < k->o.props->count && !user; i++)
    user = strcmp(k->o.props->keys[i], "linger.ms") == 0;
  if (conf && !user && wsg_kafka_conf_set(conf, "linger.ms", API_LINGER_MS, err, errlen) != 0) {
    rd_kafka_conf_destroy(conf);
    return NULL;
  }
  return conf;
}

static rd_kafka_t *make_fast(api_kafka *k, char *err, size_t errlen) {
  rd_kafka_conf_t *conf = producer_conf(k, err, errlen);
  if (!conf)
    return NULL;
  char tmo[32];
  snprintf(tmo, sizeof tmo, "%" PRIu64, k->o.txn_timeout_ms);
  if (wsg_kafka_conf_set(conf, "message.timeout.ms", tmo, err, errlen) != 0) {
    rd_kafka_conf_destroy(conf);
    return NULL;
  }
  rd_kafka_conf_set_dr_msg_cb(conf, fast_dr);
  rd_kafka_conf_set_opaque(conf, k);
  return wsg_kafka_new(RD_KAFKA_PRODUCER, conf, err, errlen);
}

static rd_kafka_t *make_producer(api_kafka *k, char *err, size_t errlen) {
  rd_kafka_conf_t *conf = producer_conf(k, err, errlen);
  if (!conf)
    return NULL;
  /* A fresh id per process: there is no consume-transform-produce to fence, only the
   * atomicity of a request's records. */
  char txid[96], host[64] = "api";
  gethostname(host, sizeof host - 1);
  unsigned long long r = wsg_now_wall_us() ^ ((unsigned long long)getpid() << 40);
  snprintf(txid, sizeof txid, "wsgate-api-%.48s-%llx", host, r);
  char tmo[32];
  snprintf(tmo, sizeof tmo, "%" PRIu64, k->o.txn_timeout_ms);
  if (wsg_kafka_conf_set(conf, "transactional.id", txid, err, errlen) != 0 ||
      wsg_kafka_conf_set(conf, "transaction.timeout.ms", tmo, err, errlen) != 0) {
    rd_kafka_conf_destroy(conf);
    return NULL;
  }
  return wsg_kafka_new(RD_KAFKA_PRODUCER, conf, err, errlen);
}

/* Creates the producer and initialises transactions; false (status says why) on failure. */
static bool connect_producer(api_kafka *k) {
  char err[256];
  if (!k->rk && !(k->rk = make_producer(k, err, sizeof err))) {
    set_status(k, false, "%s", err);
    return false;
  }
  rd_kafka_error_t *e = k->txn_ready ? NULL : rd_kafka_init_transactions(k->rk, INIT_TIMEOUT_MS);
  if (e) {
    set_status(k, false, "not connected: %s (check --kafka-brokers)", rd_kafka_error_string(e));
    bool fatal = rd_kafka_error_is_fatal(e);
    rd_kafka_error_destroy(e);
    if (fatal) {
      rd_kafka_destroy(k->rk);
      k->rk = NULL;
      k->txn_ready = false;
    }
    return false;
  }
  k->txn_ready = true;
  char terr[256];
  int parts = wsg_kafka_topic_partitions(k->rk, k->topic, INIT_TIMEOUT_MS, terr, sizeof terr);
  if (parts < 1) {
    set_status(k, false, "commands topic: %s (create it: wsgate-admin topics ensure)", terr);
    return false; /* transactions stay initialised; the next try only reads metadata */
  }
  atomic_store(&k->partitions, parts);
  /* Only GET /v1/info needs it: a missing outbound topic does not stop the commands. */
  int slots = wsg_kafka_topic_partitions(k->rk, k->outbound, INIT_TIMEOUT_MS, terr, sizeof terr);
  if (slots > 0)
    atomic_store(&k->slots, slots);
  else
    WSG_WARN("kafka", "outbound topic: %s; GET /v1/info cannot list the slots", terr);
  set_status(k, true, "ready");
  WSG_INFO("kafka", "transactions ready on %s (%d partitions)", k->topic, parts);
  return true;
}

/* Runs one transaction over `list`. Returns the jobs to put back (a record of another job was
 * refused), finishing the others. */
static job *run_txn(api_kafka *k, job *list) {
  uint64_t t0 = wsg_now_mono_us();
  char why[256];
  rd_kafka_error_t *e = rd_kafka_begin_transaction(k->rk);
  if (e) {
    snprintf(why, sizeof why, "kafka: cannot begin a transaction: %s", rd_kafka_error_string(e));
    rd_kafka_error_destroy(e);
    finish_list(list, -1, why);
    return NULL;
  }
  for (job *j = list; j; j = j->next) {
    for (size_t i = 0; i < j->n; i++) {
      const api_record *r = &j->recs[i];
      rd_kafka_resp_err_t err;
      for (;;) {
        err = produce(k->rk, k->topic, r, NULL);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
          break;
        rd_kafka_poll(k->rk, 10);
      }
      if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
        continue;
      /* This job fails alone; the others are retried in a new transaction. */
      snprintf(why, sizeof why, "kafka refused a record of %zu bytes: %s", r->len,
               rd_kafka_err2str(err));
      rd_kafka_error_t *ae = rd_kafka_abort_transaction(k->rk, (int)k->o.txn_timeout_ms);
      if (ae)
        rd_kafka_error_destroy(ae);
      job *rest = NULL, **tail = &rest;
      for (job *x = list, *next; x; x = next) {
        next = x->next;
        x->next = NULL;
        if (x != j) {
          *tail = x;
          tail = &x->next;
        }
      }
      finish(j, -2, why);
      return rest;
    }
  }
  e = rd_kafka_commit_transaction(k->rk, (int)k->o.txn_timeout_ms);
  if (!e) {
    if (k->m_commit_ok)
      wsg_counter_add(k->m_commit_ok, 1);
    if (k->m_commit_s)
      wsg_histogram_observe(k->m_commit_s, (double)(wsg_now_mono_us() - t0) / 1e6);
    finish_list(list, 0, NULL);
    return NULL;
  }
  snprintf(why, sizeof why, "kafka: the transaction failed: %s", rd_kafka_error_string(e));
  if (k->m_commit_err)
    wsg_counter_add(k->m_commit_err, 1);
  if (rd_kafka_error_txn_requires_abort(e)) {
    rd_kafka_error_t *ae = rd_kafka_abort_transaction(k->rk, (int)k->o.txn_timeout_ms);
    if (ae)
      rd_kafka_error_destroy(ae);
  } else {
    /* Retriable (a timeout: the outcome is unknown) or fatal: start over with a new producer,
     * which aborts what the old one left open. */
    set_status(k, false, "%s", rd_kafka_error_string(e));
    rd_kafka_destroy(k->rk);
    k->rk = NULL;
    k->txn_ready = false;
  }
  rd_kafka_error_destroy(e);
  finish_list(list, -1, why);
  return NULL;
}

static void *writer_main(void *arg) {
  api_kafka *k = arg;
  job *retry = NULL;
  for (;;) {
    if (!atomic_load(&k->ready) && !connect_producer(k)) {
      /* Fail what waits now: a caller gets its 503 at once rather than after its timeout. */
      char why[300];
      api_kafka_status(k, why, sizeof why - 8);
      pthread_mutex_lock(&k->mu);
      job *list = k->head;
      k->head = k->tail = NULL;
      k->queued = 0;
      bool stop = k->stopping;
      pthread_mutex_unlock(&k->mu);
      finish_list(list, -1, why);
      finish_list(retry, -1, why);
      retry = NULL;
      if (stop)
        break;
      usleep(INIT_BACKOFF_MS * 1000);
      continue;
    }
    pthread_mutex_lock(&k->mu);
    while (!k->head && !retry && !k->stopping)
      pthread_cond_wait(&k->work, &k->mu);
    if (k->stopping && !k->head && !retry) {
      pthread_mutex_unlock(&k->mu);
      break;
    }
    /* The retried jobs first, then the queue, up to MAX_TXN_RECORDS records. */
    job *list = retry, **tail = &list;
    size_t recs = 0;
    while (*tail) {
      recs += (*tail)->n;
      tail = &(*tail)->next;
    }
    while (k->head && (recs == 0 || recs + k->head->n <= MAX_TXN_RECORDS)) {
      job *j = k->head;
      k->head = j->next;
      j->next = NULL;
      k->queued--;
      recs += j->n;
      *tail = j;
      tail = &j->next;
    }
    if (!k->head)
      k->tail = NULL;
    pthread_mutex_unlock(&k->mu);
    retry = run_txn(k, list);
  }
  if (k->rk)
    rd_kafka_flush(k->rk, 1000);
  return NULL;
}

/* One record through the fast producer; its delivery report finishes the job. Under mu, so
 * that once `stopping` is set nothing more is produced (the poller's flush covers all). */
static void submit_one(api_kafka *k, job *j) {
  rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR__STATE;
  pthread_mutex_lock(&k->mu);
  for (int tries = 0; !k->stopping; tries++) {
    err = produce(k->fast, k->topic, j->recs, j);
    if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || tries == 100)
      break;
    pthread_mutex_unlock(&k->mu);
    usleep(10000); /* the poller drains the queue */
    pthread_mutex_lock(&k->mu);
  }
  pthread_mutex_unlock(&k->mu);
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
    if (k->m_fast)
      wsg_counter_add(k->m_fast, 1);
    return;
  }
  char why[320];
  if (err == RD_KAFKA_RESP_ERR__STATE)
    snprintf(why, sizeof why, "shutting down");
  else
    snprintf(why, sizeof why, "kafka refused a record of %zu bytes: %s", j->recs->len,
             rd_kafka_err2str(err));
  finish(j, err == RD_KAFKA_RESP_ERR__QUEUE_FULL || err == RD_KAFKA_RESP_ERR__STATE ? -1 : -2, why);
}

void api_kafka_submit(api_kafka *k, const api_record *recs, size_t n, api_kafka_done_fn done,
                      void *arg) {
  char why[320];
  if (api_kafka_status(k, why, sizeof why) != 0) {
    done(arg, -1, why);
    return;
  }
  job *j = malloc(sizeof *j);
  if (!j) {
    done(arg, -1, "out of memory");
    return;
  }
  *j = (job){.recs = recs, .n = n, .done = done, .arg = arg};
  if (n == 1) {
    submit_one(k, j);
    return;
  }
  pthread_mutex_lock(&k->mu);
  if (k->queued >= MAX_QUEUED || k->stopping) {
    bool stopping = k->stopping;
    pthread_mutex_unlock(&k->mu);
    if (stopping)
      snprintf(why, sizeof why, "shutting down");
    else
      snprintf(why, sizeof why, "busy: %d requests are waiting for Kafka", MAX_QUEUED);
    finish(j, -1, why);
    return;
  }
  if (k->tail)
    k->tail->next = j;
  else
    k->head = j;
  k->tail = j;
  k->queued++;
  pthread_cond_signal(&k->work);
  pthread_mutex_unlock(&k->mu);
}

static const double commit_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                       0.1,   0.25,   0.5,   1,    2.5,   5};

static const wsg_metric_def metric_rows[] = {
    WSG_COUNTER_ROW(api_kafka, m_commit_ok, "wsgate_api_transactions_total",
                    "Kafka transactions of accepted requests, by outcome", "result=\"ok\""),
    WSG_COUNTER_ROW(api_kafka, m_commit_err, "wsgate_api_transactions_total",
                    "Kafka transactions of accepted requests, by outcome", "result=\"error\""),
    WSG_HISTOGRAM_ROW(api_kafka, m_commit_s, "wsgate_api_transaction_seconds",
                      "Time from a transaction's begin to its commit (requests share one)", NULL,
                      commit_bounds),
    WSG_COUNTER_ROW(api_kafka, m_fast, "wsgate_api_single_records_total",
                    "Requests of one record produced without a transaction (idempotent "
                    "producer, acks=all)",
                    NULL),
    WSG_GAUGE_ROW(api_kafka, m_ready, "wsgate_api_kafka_ready",
                  "1 when the commands topic accepts transactions, else 0", NULL),
};

const wsg_metric_table api_kafka_metric_table = WSG_METRIC_TABLE("api/api_kafka.c", metric_rows);

int api_kafka_create(api_kafka **out, const api_kafka_options *o, char *err, size_t errlen) {
  *out = NULL;
  api_kafka *k = calloc(1, sizeof *k);
  if (!k) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  k->o = *o;
  k->topic = strdup(o->topic);
  k->brokers = strdup(o->brokers);
  k->outbound = strdup(o->outbound ? o->outbound : "wsgate.outbound");
  pthread_mutex_init(&k->mu, NULL);
  pthread_cond_init(&k->work, NULL);
  snprintf(k->status, sizeof k->status, "connecting");
  if (!k->topic || !k->brokers || !k->outbound) {
    snprintf(err, errlen, "out of memory");
    api_kafka_destroy(k);
    return -1;
  }
  wsg_metrics_register_table(o->metrics, &api_kafka_metric_table, k);
  /* Validate the configuration now (a bad -X is a start-up error), connect in the thread. */
  if (!(k->rk = make_producer(k, err, errlen)) || !(k->fast = make_fast(k, err, errlen))) {
    api_kafka_destroy(k);
    return -1;
  }
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = pthread_create(&k->thread, NULL, writer_main, k);
  if (rc == 0) {
    k->started = true;
    rc = pthread_create(&k->poller, NULL, poller_main, k);
    k->poller_started = rc == 0;
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    snprintf(err, errlen, "cannot start the Kafka writer thread: %s", strerror(rc));
    api_kafka_destroy(k);
    return -1;
  }
  k->started = true;
  *out = k;
  return 0;
}

void api_kafka_shutdown(api_kafka *k) {
  if (!k || k->shut)
    return;
  k->shut = true;
  if (k->started) {
    pthread_mutex_lock(&k->mu);
    k->stopping = true;
    pthread_cond_broadcast(&k->work);
    pthread_mutex_unlock(&k->mu);
    pthread_join(k->thread, NULL);
  }
  if (k->poller_started) {
    pthread_mutex_lock(&k->mu);
    k->stopping = true;
    pthread_mutex_unlock(&k->mu);
    pthread_join(k->poller, NULL);
  }
}

void api_kafka_destroy(api_kafka *k) {
  if (!k)
    return;
  api_kafka_shutdown(k);
  if (k->rk)
    rd_kafka_destroy(k->rk);
  if (k->fast)
    rd_kafka_destroy(k->fast);
  pthread_mutex_destroy(&k->mu);
  pthread_cond_destroy(&k->work);
  free(k->topic);
  free(k->brokers);
  free(k->outbound);
  free(k);
}
