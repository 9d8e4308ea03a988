/* wsg_kbatch: the held-record queues of load-adaptive batching (see wsg_kbatch.h). */
#include "wsg_kbatch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int32_t (*partition_fn)(const rd_kafka_topic_t *, const void *, size_t, int32_t, void *,
                                void *);

/* librdkafka's partitioners with a public hash. The *_random ones differ from their plain twin
 * only for a NULL key (random partition there; hashed as empty here). */
static const struct {
  const char *name;
  partition_fn fn;
} hashes[] = {
    {"murmur2_random", rd_kafka_msg_partitioner_murmur2},
    {"murmur2", rd_kafka_msg_partitioner_murmur2},
    {"consistent_random", rd_kafka_msg_partitioner_consistent},
    {"consistent", rd_kafka_msg_partitioner_consistent},
    {"fnv1a_random", rd_kafka_msg_partitioner_fnv1a},
    {"fnv1a", rd_kafka_msg_partitioner_fnv1a},
};
/* librdkafka 2.0.2's default "partitioner". */
#define DEFAULT_PARTITIONER "consistent_random"

typedef struct rec {
  struct rec *next;
  void *opaque;
  size_t len;
  uint32_t keylen;
  bool has_key;
  char data[]; /* key, then value */
} rec;

typedef struct {
  rec *head, *tail;
  size_t n;
} fifo;

struct wsg_kbatch {
  rd_kafka_topic_t *rkt;
  partition_fn hash;
  int32_t partitions;
  fifo *q; /* one per partition */
  size_t held;
  /* release scratch, grown on demand and kept: no allocation per release once warm */
  rd_kafka_message_t *msgs;
  rec **recs;
  size_t scratch;
};

static partition_fn find_hash(const char *partitioner) {
  const char *name = partitioner && *partitioner ? partitioner : DEFAULT_PARTITIONER;
  for (size_t i = 0; i < sizeof hashes / sizeof hashes[0]; i++)
    if (strcmp(hashes[i].name, name) == 0)
      return hashes[i].fn;
  return NULL;
}

const char *wsg_kbatch_user_linger(const wsg_kvlist *props) {
  for (size_t i = 0; props && i < props->count; i++)
    if (strcmp(props->keys[i], "linger.ms") == 0 ||
        strcmp(props->keys[i], "queue.buffering.max.ms") == 0)
      return props->keys[i];
  return NULL;
}

bool wsg_kbatch_partitioner_known(const char *partitioner) {
  return find_hash(partitioner) != NULL;
}

wsg_kbatch *wsg_kbatch_create(rd_kafka_topic_t *rkt, const char *partitioner, int32_t partitions,
                              char *err, size_t errlen) {
  const char *name = partitioner && *partitioner ? partitioner : DEFAULT_PARTITIONER;
  partition_fn hash = find_hash(name);
  if (!hash) {
    snprintf(err, errlen, "partitioner \"%s\" has no hash the application can compute", name);
    return NULL;
  }
  if (partitions <= 0) {
    snprintf(err, errlen, "the topic has no partitions");
    return NULL;
  }
  wsg_kbatch *b = calloc(1, sizeof *b);
  fifo *q = calloc((size_t)partitions, sizeof *q);
  if (!b || !q) {
    free(b);
    free(q);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  b->rkt = rkt;
  b->hash = hash;
  b->partitions = partitions;
  b->q = q;
  return b;
}

size_t wsg_kbatch_destroy(wsg_kbatch *b) {
  if (!b)
    return 0;
  size_t n = b->held;
  for (int32_t p = 0; p < b->partitions; p++) {
    for (rec *r = b->q[p].head, *next; r; r = next) {
      next = r->next;
      free(r);
    }
  }
  free(b->q);
  free(b->msgs);
  free(b->recs);
  free(b);
  return n;
}

int32_t wsg_kbatch_partitions(const wsg_kbatch *b) {
  return b->partitions;
}

int32_t wsg_kbatch_partition(const wsg_kbatch *b, const void *key, size_t keylen) {
  return b->hash(b->rkt, key ? key : "", key ? keylen : 0, b->partitions, NULL, NULL);
}

int wsg_kbatch_hold(wsg_kbatch *b, int32_t partition, const void *key, size_t keylen,
                    const void *value, size_t len, void *opaque) {
  if (partition < 0 || partition >= b->partitions || keylen > UINT32_MAX)
    return -1;
  rec *r = malloc(sizeof *r + keylen + len);
  if (!r)
    return -1;
  r->next = NULL;
  r->opaque = opaque;
  r->len = len;
  r->keylen = (uint32_t)keylen;
  r->has_key = key != NULL;
  if (keylen)
    memcpy(r->data, key, keylen);
  if (len)
    memcpy(r->data + keylen, value, len);
  fifo *q = &b->q[partition];
  if (q->tail)
    q->tail->next = r;
  else
    q->head = r;
  q->tail = r;
  q->n++;
  b->held++;
  return 0;
}

size_t wsg_kbatch_held(const wsg_kbatch *b) {
  return b->held;
}

size_t wsg_kbatch_held_in(const wsg_kbatch *b, int32_t partition) {
  return partition >= 0 && partition < b->partitions ? b->q[partition].n : 0;
}

static bool grow_scratch(wsg_kbatch *b, size_t n) {
  if (n <= b->scratch)
    return true;
  rd_kafka_message_t *m = realloc(b->msgs, n * sizeof *m);
  if (!m)
    return false;
  b->msgs = m;
  rec **r = realloc(b->recs, n * sizeof *r);
  if (!r)
    return false;
  b->recs = r;
  b->scratch = n;
  return true;
}

size_t wsg_kbatch_release(wsg_kbatch *b, int32_t partition, size_t max, wsg_kbatch_failed_fn failed,
                          void *arg, size_t *accepted_out) {
  if (accepted_out)
    *accepted_out = 0;
  if (partition < 0 || partition >= b->partitions)
    return 0;
  fifo *q = &b->q[partition];
  size_t n = q->n < max ? q->n : max;
  if (n == 0)
    return 0;
  if (n > (size_t)INT32_MAX || !grow_scratch(b, n)) {
    n = 1; /* out of memory for the scratch: one at a time still keeps the order */
    if (!grow_scratch(b, 1))
      return 0;
  }
  rec *r = q->head;
  for (size_t i = 0; i < n; i++, r = r->next) {
    b->recs[i] = r;
    b->msgs[i] = (rd_kafka_message_t){
        .payload = r->data + r->keylen,
        .len = r->len,
        .key = r->has_key ? r->data : NULL,
        .key_len = r->keylen,
        ._private = r->opaque,
    };
  }
  q->head = r;
  if (!r)
    q->tail = NULL;
  q->n -= n;
  b->held -= n;
  int ok = rd_kafka_produce_batch(b->rkt, partition, RD_KAFKA_MSG_F_COPY, b->msgs, (int)n);
  if ((size_t)ok != n) {
    for (size_t i = 0; i < n; i++)
      if (b->msgs[i].err && failed)
        failed(arg, b->recs[i]->opaque, b->msgs[i].key, b->msgs[i].key_len, b->msgs[i].payload,
               b->msgs[i].len, b->msgs[i].err);
  }
  for (size_t i = 0; i < n; i++)
    free(b->recs[i]);
  if (accepted_out)
    *accepted_out = ok > 0 ? (size_t)ok : 0;
  return n;
}
