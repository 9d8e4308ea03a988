/*
 * proc_group: the processor's consumer group: stored offsets, commits and rebalances; the consumer
 * thread runs it (librdkafka calls the callbacks from its polls there, see proc_consumer.c).
 *
 * Commits are ours, stored offsets on a timer (docs/notes/librdkafka-2.0.2.md#group-defaults),
 * held while this member rejoins the group, or librdkafka 2.0.2 drops the whole assignment
 * (librdkafka issue #4059; docs/notes/librdkafka-2.0.2.md#commit-during-rejoin).
 */
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "proc_consumer_priv.h"
#include "proc_offsets.h"
#include "wsg_log.h"
#include "wsg_time.h"

/* Longest wait for the group's committed offsets when resuming after our own work. */
#define RESUME_QUERY_MS 5000

/* --- offsets and commits ------------------------------------------------------------------- */

/* Stores the committable offset of every assigned partition that advanced. */
void proc_group_store_offsets(proc_consumer *c) {
  rd_kafka_topic_partition_list_t *l = NULL;
  for (size_t i = 0; i < c->nparts; i++) {
    part *p = c->parts[i];
    if (!p || !p->assigned || !p->dirty)
      continue;
    p->dirty = false;
    int64_t off = proc_offsets_committable(p->offs);
    if (off < 0 || off <= p->stored)
      continue;
    if (!l)
      l = rd_kafka_topic_partition_list_new(8);
    rd_kafka_topic_partition_list_add(l, p->topic, p->id)->offset = off;
  }
  if (!l)
    return;
  rd_kafka_resp_err_t err = rd_kafka_offsets_store(c->cons, l);
  for (int i = 0; i < l->cnt; i++) {
    part *p = proc_consumer__part_get(c, l->elems[i].topic, l->elems[i].partition);
    if (l->elems[i].err == RD_KAFKA_RESP_ERR_NO_ERROR && p)
      p->stored = l->elems[i].offset;
  }
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
    WSG_DEBUG("kafka", "storing offsets: %s", rd_kafka_err2str(err));
  rd_kafka_topic_partition_list_destroy(l);
}

/* The list of (partition, stored offset) above what was committed; NULL if none. `only` limits it
 * to the partitions of a revoke (may be NULL: every assigned partition). */
static rd_kafka_topic_partition_list_t *commit_list(proc_consumer *c,
                                                    const rd_kafka_topic_partition_list_t *only) {
  rd_kafka_topic_partition_list_t *l = NULL;
  for (size_t i = 0; i < c->nparts; i++) {
    part *p = c->parts[i];
    if (!p || !p->assigned || p->stored < 0 || p->stored <= p->committed)
      continue;
    if (only && !rd_kafka_topic_partition_list_find(only, p->topic, p->id))
      continue;
    if (!l)
      l = rd_kafka_topic_partition_list_new(8);
    rd_kafka_topic_partition_list_add(l, p->topic, p->id)->offset = p->stored;
  }
  return l;
}

/* What a failed commit means for the user, after the error's own text. */
static const char *commit_advice(rd_kafka_resp_err_t err) {
  switch (err) {
  case RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION:
  case RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID:
    return "; the group changed generation (a rebalance, or this member was timed out: check "
           "session.timeout.ms and max.poll.interval.ms); librdkafka before 2.10.0 then drops "
           "this member's partitions (librdkafka issue #4059) and their next owner handles "
           "again what was not committed";
  case RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS:
    return "; the group is rebalancing; committed again at the next interval";
  case RD_KAFKA_RESP_ERR__TIMED_OUT:
  case RD_KAFKA_RESP_ERR__TRANSPORT:
  case RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE:
  case RD_KAFKA_RESP_ERR_NOT_COORDINATOR:
  case RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS:
    return "; the group coordinator is unreachable or moving; committed again at the next "
           "interval";
  default:
    return "; committed again at the next interval";
  }
}

static void commit_done(proc_consumer *c, rd_kafka_resp_err_t err,
                        const rd_kafka_topic_partition_list_t *l, uint64_t started_us) {
  if (c->m_commit_latency)
    wsg_histogram_observe(c->m_commit_latency, (double)(wsg_now_mono_us() - started_us) / 1e6);
  int ok = 0, bad = 0;
  rd_kafka_resp_err_t why = err;
  int32_t first_bad = -1;
  for (int i = 0; l && i < l->cnt; i++) {
    part *p = proc_consumer__part_get(c, l->elems[i].topic, l->elems[i].partition);
    if (l->elems[i].err == RD_KAFKA_RESP_ERR_NO_ERROR && err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (p && l->elems[i].offset > p->committed)
        p->committed = l->elems[i].offset;
      ok++;
    } else {
      if (bad++ == 0)
        first_bad = l->elems[i].partition;
      if (why == RD_KAFKA_RESP_ERR_NO_ERROR)
        why = l->elems[i].err;
    }
  }
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR || bad) {
    count(c->m_commits_err, 1);
    wsg_log_limited(&c->rl_commit, 1, wsg_now_mono_ms(), WSG_LOG_WARN, "kafka",
                    "offset commit of %d partition%s (first: %" PRId32 ") failed: %s: %s%s",
                    l ? l->cnt : 0, l && l->cnt == 1 ? "" : "s", first_bad, rd_kafka_err2name(why),
                    rd_kafka_err2str(why), commit_advice(why));
  } else if (ok) {
    count(c->m_commits_ok, 1);
    atomic_store(&c->brokers_down, 0);
  }
}

/* Commits synchronously (revoke, shutdown). Returns 0 if everything listed was committed. */
int proc_group_commit_sync(proc_consumer *c, const rd_kafka_topic_partition_list_t *only) {
  proc_group_store_offsets(c);
  rd_kafka_topic_partition_list_t *l = commit_list(c, only);
  if (!l)
    return 0;
  uint64_t t0 = wsg_now_mono_us();
  rd_kafka_resp_err_t err = rd_kafka_commit(c->cons, l, 0);
  commit_done(c, err, l, t0);
  int rc = 0;
  for (int i = 0; i < l->cnt; i++)
    if (err || l->elems[i].err)
      rc = -1;
  rd_kafka_topic_partition_list_destroy(l);
  return rc;
}

void proc_group_offset_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                 rd_kafka_topic_partition_list_t *offsets, void *opaque) {
  (void)rk;
  proc_consumer *c = opaque;
  /* Only our async commits end here with a start time; a synchronous commit was accounted by
   * proc_group_commit_sync() already. */
  if (!c->commit_pending)
    return;
  c->commit_pending = false;
  if (err == RD_KAFKA_RESP_ERR__NO_OFFSET)
    return;
  commit_done(c, err, offsets, c->commit_started_us);
}

/* True while a commit must not go out because this member is rejoining the group (see the top of
 * the file). Gives up holding after max.poll.interval.ms, the longest a rebalance may last. */
bool proc_group_rejoining(proc_consumer *c) {
  if (c->rejoin == REJOIN_NONE)
    return false;
  if (wsg_now_mono_ms() - c->rejoin_since_ms < c->rebalance_timeout_ms)
    return true;
  WSG_WARN("kafka",
           "no assignment %" PRIu64 " ms after this processor gave partitions up "
           "(max.poll.interval.ms); committing again without waiting for the rebalance",
           c->rebalance_timeout_ms);
  c->rejoin = REJOIN_NONE;
  return false;
}

static void rejoin_set(proc_consumer *c, rejoin_state st) {
  if (st != REJOIN_NONE && c->rejoin == REJOIN_NONE) {
    c->rejoin_since_ms = wsg_now_mono_ms();
    c->commits_held = 0;
  }
  c->rejoin = st;
}

void proc_group_commit_async(proc_consumer *c) {
  rd_kafka_topic_partition_list_t *l = commit_list(c, NULL);
  if (!l)
    return;
  c->commit_started_us = wsg_now_mono_us();
  rd_kafka_resp_err_t err = rd_kafka_commit(c->cons, l, 1);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
    commit_done(c, err, l, c->commit_started_us);
  else
    c->commit_pending = true;
  rd_kafka_topic_partition_list_destroy(l);
}

/* --- rebalances ---------------------------------------------------------------------------- */

/* Serves delivery reports until the listed partitions (NULL: all) have nothing in flight. */
bool proc_group_wait_inflight(proc_consumer *c, const rd_kafka_topic_partition_list_t *only,
                              uint64_t timeout_ms) {
  uint64_t deadline = wsg_now_mono_ms() + timeout_ms;
  for (;;) {
    uint64_t left = 0;
    if (only) {
      for (int i = 0; i < only->cnt; i++) {
        part *p = proc_consumer__part_get(c, only->elems[i].topic, only->elems[i].partition);
        if (p)
          left += p->inflight;
      }
    } else {
      left = c->inflight_total;
    }
    if (left == 0)
      return true;
    uint64_t now = wsg_now_mono_ms();
    if (now >= deadline || atomic_load(&c->failed)) {
      WSG_WARN("kafka",
               "%" PRIu64 " outbound records still unacknowledged after %" PRIu64
               " ms; their inbound records will be handled again by the partitions' next owner",
               left, timeout_ms);
      count(c->m_revoke_unfinished, left);
      return false;
    }
    proc_consumer__wait(c, POLL_SLICE_MS);
  }
}

static void set_assigned_gauge(proc_consumer *c) {
  if (!c->m_assigned)
    return;
  int64_t n = 0;
  for (size_t i = 0; i < c->nparts; i++)
    n += c->parts[i] && c->parts[i]->assigned;
  wsg_gauge_set(c->m_assigned, n);
}

static void release(part *p) {
  if (p->assigned) {
    /* Work this processor completed (every reply acknowledged) but may not have committed, e.g.
     * when the partition was lost or the commit failed: if the partition comes back, start after
     * it instead of handling it again (resume_offsets). */
    int64_t done = proc_offsets_committable(p->offs);
    if (done < p->stored)
      done = p->stored;
    p->resume = done > p->committed ? done : -1;
  }
  p->assigned = false;
  p->dirty = false;
  p->epoch++;
  proc_offsets_reset(p->offs);
  p->stored = p->committed = p->next = -1;
  if (p->lag)
    wsg_gauge_set(p->lag, 0);
}

static void log_partitions(const char *what, const rd_kafka_topic_partition_list_t *l) {
  if (WSG_LOG_INFO < wsg_log_min_level)
    return;
  char buf[512];
  size_t n = 0;
  buf[0] = '\0';
  for (int i = 0; i < l->cnt && n < sizeof(buf) - 16; i++)
    n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%" PRId32, i ? "," : "",
                          l->elems[i].partition);
  WSG_INFO("kafka", "%s %d partition%s [%s]", what, l->cnt, l->cnt == 1 ? "" : "s", buf);
}

/* Starts regained partitions after our own completed work when that is ahead of the group's
 * commit. Returns how many start offsets moved (docs/notes/librdkafka-2.0.2.md#lost-assignment). */
static int resume_offsets(proc_consumer *c, rd_kafka_t *rk,
                          rd_kafka_topic_partition_list_t *parts) {
  rd_kafka_topic_partition_list_t *q = NULL;
  for (int i = 0; i < parts->cnt; i++) {
    part *p = proc_consumer__part_get(c, parts->elems[i].topic, parts->elems[i].partition);
    if (p && p->resume >= 0) {
      if (!q)
        q = rd_kafka_topic_partition_list_new(parts->cnt);
      rd_kafka_topic_partition_list_add(q, p->topic, p->id);
    }
  }
  if (!q)
    return 0;
  int moved = 0;
  rd_kafka_resp_err_t err = rd_kafka_committed(rk, q, RESUME_QUERY_MS);
  for (int i = 0; i < q->cnt; i++) {
    part *p = proc_consumer__part_get(c, q->elems[i].topic, q->elems[i].partition);
    int64_t resume = p->resume;
    p->resume = -1;
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR || q->elems[i].err != RD_KAFKA_RESP_ERR_NO_ERROR ||
        q->elems[i].offset >= resume)
      continue;
    rd_kafka_topic_partition_t *e = rd_kafka_topic_partition_list_find(parts, p->topic, p->id);
    if (!e)
      continue;
    WSG_INFO("kafka",
             "partition %" PRId32 ": resuming at offset %" PRId64
             ", after this processor's own completed work (the group had committed %" PRId64 ")",
             p->id, resume, q->elems[i].offset);
    e->offset = resume;
    p->stored = resume; /* committed at the next interval */
    moved++;
  }
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
    WSG_DEBUG("kafka", "reading committed offsets: %s", rd_kafka_err2str(err));
  rd_kafka_topic_partition_list_destroy(q);
  return moved;
}

static void check_error(const char *what, rd_kafka_error_t *e) {
  if (!e)
    return;
  WSG_ERROR("kafka", "%s: %s", what, rd_kafka_error_string(e));
  rd_kafka_error_destroy(e);
}

void proc_group_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                             rd_kafka_topic_partition_list_t *parts, void *opaque) {
  proc_consumer *c = opaque;
  const char *proto = rd_kafka_rebalance_protocol(rk);
  bool coop = proto && strcmp(proto, "COOPERATIVE") == 0;

  switch (err) {
  case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
    for (int i = 0; i < parts->cnt; i++) {
      part *p = proc_consumer__part_get(c, parts->elems[i].topic, parts->elems[i].partition);
      if (!p) {
        proc_consumer__fail(c, "out of memory tracking partition %" PRId32,
                            parts->elems[i].partition);
        continue;
      }
      release(p); /* a fresh epoch, empty ring */
      p->assigned = true;
    }
    log_partitions("assigned", parts);
    count(c->m_assign, 1);
    if (c->rejoin == REJOIN_AFTER_ASSIGN) {
      /* The assign that completes a cooperative revoke: librdkafka rejoins right after it. */
      rejoin_set(c, REJOIN_PENDING);
    } else if (c->rejoin == REJOIN_PENDING) {
      /* The rejoin completed: commit what waited now rather than at the next interval. */
      if (c->commits_held)
        WSG_DEBUG("kafka",
                  "rebalance over after %" PRIu64 " ms; %" PRIu64
                  " timer commit%s held back during it",
                  wsg_now_mono_ms() - c->rejoin_since_ms, c->commits_held,
                  c->commits_held == 1 ? " was" : "s were");
      rejoin_set(c, REJOIN_NONE);
      c->next_commit_ms = wsg_now_mono_ms();
    }
    int moved = resume_offsets(c, rk, parts);
    if (coop)
      check_error("incremental assign", rd_kafka_incremental_assign(rk, parts));
    else if ((err = rd_kafka_assign(rk, parts)) != RD_KAFKA_RESP_ERR_NO_ERROR)
      WSG_ERROR("kafka", "assign: %s", rd_kafka_err2str(err));
    if (moved) {
      /* Store the moved start offsets now that the partitions are assigned, so they are
       * committed even if no new record arrives. */
      for (int i = 0; i < parts->cnt; i++) {
        part *p = proc_consumer__part_get(c, parts->elems[i].topic, parts->elems[i].partition);
        if (p && p->stored >= 0) {
          int64_t want = p->stored;
          p->stored = -1;
          rd_kafka_topic_partition_list_t *one = rd_kafka_topic_partition_list_new(1);
          rd_kafka_topic_partition_list_add(one, p->topic, p->id)->offset = want;
          if (rd_kafka_offsets_store(rk, one) == RD_KAFKA_RESP_ERR_NO_ERROR &&
              one->elems[0].err == RD_KAFKA_RESP_ERR_NO_ERROR)
            p->stored = want;
          rd_kafka_topic_partition_list_destroy(one);
        }
      }
    }
    atomic_store(&c->joined, 1);
    break;

  case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS: {
    bool lost = rd_kafka_assignment_lost(rk);
    log_partitions(lost ? "lost" : "revoking", parts);
    count(lost ? c->m_lost : c->m_revoke, 1);
    /* Lost partitions too: replies awaited, nothing committed, completed work remembered
     * (docs/notes/librdkafka-2.0.2.md#lost-assignment). */
    proc_group_wait_inflight(c, parts, c->revoke_timeout_ms);
    if (!lost && proc_group_commit_sync(c, parts) != 0)
      WSG_WARN("kafka", "commit at revoke failed; the next owner starts from the last committed "
                        "offsets and handles some records again");
    for (int i = 0; i < parts->cnt; i++) {
      part *p = proc_consumer__part_get(c, parts->elems[i].topic, parts->elems[i].partition);
      if (p)
        release(p);
    }
    if (coop)
      check_error("incremental unassign", rd_kafka_incremental_unassign(rk, parts));
    else if ((err = rd_kafka_assign(rk, NULL)) != RD_KAFKA_RESP_ERR_NO_ERROR)
      WSG_ERROR("kafka", "unassign: %s", rd_kafka_err2str(err));
    /* librdkafka rejoins next: right away (eager, lost), or after the assign that follows a
     * cooperative revoke. No timer commit until that rejoin is over. */
    if (parts->cnt > 0 || !coop)
      rejoin_set(c, coop && !lost ? REJOIN_AFTER_ASSIGN : REJOIN_PENDING);
    break;
  }

  default:
    WSG_ERROR("kafka", "rebalance failed: %s; dropping the assignment", rd_kafka_err2str(err));
    for (size_t i = 0; i < c->nparts; i++)
      if (c->parts[i])
        release(c->parts[i]);
    rd_kafka_assign(rk, NULL);
    break;
  }
  set_assigned_gauge(c);
}
