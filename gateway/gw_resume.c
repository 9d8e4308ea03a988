/*
 * gw_resume: the per-user sequence of resumable connections (see gw_resume.h).
 *
 * Threads: the loop thread only.
 */
#include "gw_resume.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_server.h"
#include "wsg_envelope.h"

/* The sequence state of a resumable connection; `last` is the q of the last sequenced message
 * queued for it. Why reading after registering loses nothing: docs/ARCHITECTURE.md#resume. */
typedef enum {
  SEQ_POSITION,    /* the position read of a fresh connection is in flight */
  SEQ_REGISTERING, /* waiting for the registration, then the first read */
  SEQ_READING,     /* a replay read is in flight */
  SEQ_ROOM,        /* more to read, waiting for the send queue to drain */
  SEQ_LIVE,        /* in step: the next q goes straight to the send queue */
} seq_state;

struct gw_seq {
  uint64_t last;     /* q of the last sequenced message queued: the client's position */
  uint64_t hi;       /* highest q seen in a deliver; above `last` while messages are missing */
  uint64_t resume;   /* the client's ?resume=, 0 for a fresh connection */
  uint64_t replayed; /* messages the catch-up delivered, for the sync frame */
  gw_sendq held;     /* delivers that arrived while reading, in order; tag = q (0: none) */
  uint8_t state;     /* seq_state */
  bool synced;       /* the sync frame is queued and requests are read again */
  bool complete;     /* nothing since the starting position was lost (until the sync) */
  void *conn;        /* the server's connection, for the ops (borrowed) */
  uint64_t conn_id;  /* for the logs */
  const char *user;  /* for the logs (borrowed, lives as long as conn) */
};

#define LOG_LIMIT_PER_S 5

static bool reg_transient(int status) {
  return status == GW_REG_NOT_CONNECTED || status == GW_REG_BUSY || status == GW_REG_RELEASED ||
         status == GW_REG_LOST;
}

static bool queue_msg(const gw_resume *r, gw_seq *sq, gw_msg *m, uint64_t tag, uint64_t now_ms) {
  return r->ops->queue(r->arg, sq->conn, m, tag, now_ms);
}

static void close_conn(const gw_resume *r, gw_seq *sq, int code, bool urgent) {
  r->ops->close(r->arg, sq->conn, code, urgent);
}

/* A control frame, "wsgate\n" + json (text), queued like a message. False if closed. */
static bool seq_control(const gw_resume *r, gw_seq *sq, const char *json, uint64_t now_ms) {
  gw_msg *m = gw_msg_create(json, strlen(json), false);
  if (!m) {
    close_conn(r, sq, GW_CLOSE_INTERNAL, true);
    return false;
  }
  bool ok = queue_msg(r, sq, m, GW_RESUME_CONTROL, now_ms);
  gw_msg_unref(m);
  return ok;
}

/* Messages from..to can no longer be delivered: older than --resume-max-age or trimmed from the
 * stream, beyond --resume-max, or their counter expired. Before the sync this only makes the
 * catch-up incomplete; afterwards the client is told at once. False if the connection closed. */
static bool seq_lost(const gw_resume *r, gw_seq *sq, uint64_t from, uint64_t to, uint64_t now_ms) {
  if (!sq->synced) {
    sq->complete = false;
    return true;
  }
  wsg_counter_add(r->m_gaps, 1);
  char json[128];
  snprintf(json, sizeof json, "{\"type\":\"gap\",\"from\":%llu,\"to\":%llu}",
           (unsigned long long)from, (unsigned long long)to);
  return seq_control(r, sq, json, now_ms);
}

/* Queues message q, whose turn has come (q > last; anything between is lost). False if closed. */
static bool seq_put(const gw_resume *r, gw_seq *sq, gw_msg *m, uint64_t q, uint64_t now_ms) {
  if (q != sq->last + 1 && !seq_lost(r, sq, sq->last + 1, q - 1, now_ms))
    return false;
  sq->last = q;
  if (sq->hi < q)
    sq->hi = q;
  if (gw_msg_len(m) + GW_SENDQ_MSG_OVERHEAD > r->sendq_hard) {
    /* As for any deliver (dispatch): it would close the connection as a slow consumer. */
    wsg_counter_add(r->m_too_big, 1);
    return true;
  }
  return queue_msg(r, sq, m, q, now_ms);
}

/* Reads the page of the replay stream after `last`. False if the connection was closed. */
static bool seq_read(const gw_resume *r, gw_seq *sq, uint64_t now_ms) {
  int rc = r->ops->read(r->arg, sq->conn, false, sq->last);
  if (rc != GW_REG_OK) {
    wsg_log_limited(r->rl, LOG_LIMIT_PER_S, now_ms, WSG_LOG_WARN, "server",
                    "cannot read the replay stream of user %s for connection %llu: %s; closing",
                    sq->user, (unsigned long long)sq->conn_id, gw_registry_strerror(rc));
    close_conn(r, sq, reg_transient(rc) ? GW_CLOSE_TRY_AGAIN : GW_CLOSE_INTERNAL, false);
    return false;
  }
  sq->state = SEQ_READING;
  wsg_counter_add(r->m_replay_reads, 1);
  return true;
}

/* The next page, once the send queue has room for it (gw_resume_on_room comes back otherwise): a
 * large backlog never holds more than a page or two in memory. */
static void seq_next_page(const gw_resume *r, gw_seq *sq, uint64_t now_ms) {
  if (r->ops->queued_bytes(r->arg, sq->conn) <= r->room)
    seq_read(r, sq, now_ms);
  else
    sq->state = SEQ_ROOM;
}

/* The connection is in step: tell the client its position and whether the catch-up was complete,
 * then read its requests. False if the connection closed. */
static bool seq_sync(const gw_resume *r, gw_seq *sq, uint64_t now_ms) {
  char json[256], resume[24] = "null";
  if (sq->resume)
    snprintf(resume, sizeof resume, "%llu", (unsigned long long)sq->resume);
  snprintf(json, sizeof json,
           "{\"type\":\"sync\",\"resume\":%s,\"last\":%llu,\"replayed\":%llu,\"complete\":%s}",
           resume, (unsigned long long)sq->last, (unsigned long long)sq->replayed,
           sq->complete ? "true" : "false");
  sq->synced = true;
  if (sq->resume)
    wsg_counter_add(sq->complete ? r->m_resumes_complete : r->m_resumes_incomplete, 1);
  if (!seq_control(r, sq, json, now_ms))
    return false;
  r->ops->synced(r->arg, sq->conn);
  return true;
}

/* A read reached the end of the stream: queue what waited meanwhile, in order, until the next
 * gap (read again) or the end (in step). */
static void seq_after_read(const gw_resume *r, gw_seq *sq, uint64_t now_ms) {
  while (!gw_sendq_empty(&sq->held)) {
    gw_msg *m = gw_sendq_peek(&sq->held);
    uint64_t q = gw_sendq_peek_tag(&sq->held);
    if (q > sq->last + 1)
      break; /* missing ones come first: read them */
    bool ok = true;
    if (q == 0)
      ok = queue_msg(r, sq, m, 0, now_ms);
    else if (q == sq->last + 1)
      ok = seq_put(r, sq, m, q, now_ms);
    else
      wsg_counter_add(r->m_dups, 1);
    gw_sendq_pop(&sq->held);
    if (!ok)
      return; /* closed; gw_resume_free frees the rest */
  }
  if (!gw_sendq_empty(&sq->held) || sq->hi > sq->last)
    seq_next_page(r, sq, now_ms);
  else
    sq->state = SEQ_LIVE;
}

void gw_resume_on_replay(const gw_resume *r, gw_seq *sq, int status, const gw_replay_page *page,
                         uint64_t now_ms) {
  if (status != GW_REG_OK) {
    wsg_log_limited(r->rl, LOG_LIMIT_PER_S, now_ms, WSG_LOG_WARN, "server",
                    "reading the replay stream of user %s for connection %llu failed: %s; "
                    "closing (the client resumes on its next connection)",
                    sq->user, (unsigned long long)sq->conn_id, gw_registry_strerror(status));
    close_conn(r, sq, reg_transient(status) ? GW_CLOSE_TRY_AGAIN : GW_CLOSE_INTERNAL, false);
    return;
  }
  if (sq->state == SEQ_POSITION) {
    /* A fresh connection starts at the counter, then registers; gw_resume_on_registered reads
     * what follows. Registering only now keeps the read before the registration on a Redis
     * Cluster too (docs/ARCHITECTURE.md#resume). */
    sq->last = page->counter;
    sq->state = SEQ_REGISTERING;
    int rc = r->ops->register_conn(r->arg, sq->conn);
    if (rc != GW_REG_OK)
      close_conn(r, sq, reg_transient(rc) ? GW_CLOSE_TRY_AGAIN : GW_CLOSE_INTERNAL, false);
    return;
  }
  for (size_t i = 0; i < page->count; i++) {
    gw_replay_entry e;
    r->ops->page_entry(page, i, &e);
    /* A text entry that is not UTF-8 would make the client fail the connection: skipped, it
     * shows as lost like anything else missing from the stream. */
    if (e.q <= sq->last || (!e.binary && !wsg_utf8_valid((const char *)e.data, e.len)))
      continue;
    gw_msg *m = gw_msg_create(e.data, e.len, e.binary);
    if (!m) {
      close_conn(r, sq, GW_CLOSE_INTERNAL, true);
      return;
    }
    if (!sq->synced)
      sq->replayed++;
    wsg_counter_add(r->m_replayed, 1);
    bool ok = seq_put(r, sq, m, e.q, now_ms);
    gw_msg_unref(m);
    if (!ok)
      return;
  }
  if (page->more) {
    seq_next_page(r, sq, now_ms);
    return;
  }
  /* The stream ends here: whatever the counter assigned beyond its last entry is gone. */
  if (page->counter > sq->last) {
    if (!seq_lost(r, sq, sq->last + 1, page->counter, now_ms))
      return;
    sq->last = page->counter;
  } else if (page->counter < sq->last) {
    /* A position this sequence never reached (a client's own number, or Redis lost the
     * counter and the stream): what the client had cannot be checked; it starts over here. */
    sq->complete = false;
    sq->last = page->counter;
  }
  if (!sq->synced && !seq_sync(r, sq, now_ms))
    return;
  seq_after_read(r, sq, now_ms);
}

void gw_resume_deliver(const gw_resume *r, gw_seq *sq, gw_msg *m, uint64_t q, uint64_t now_ms) {
  if (q != 0 && sq->state != SEQ_POSITION && q <= sq->last) {
    wsg_counter_add(r->m_dups, 1); /* already queued, from the stream or an earlier copy */
    return;
  }
  if (sq->state == SEQ_LIVE) {
    if (q == 0) {
      queue_msg(r, sq, m, 0, now_ms); /* a reply to this connection: not sequenced */
      return;
    }
    if (q == sq->last + 1) {
      seq_put(r, sq, m, q, now_ms);
      return;
    }
  }
  /* Not its turn: it waits while the missing ones are read from the stream. */
  if (q > sq->hi)
    sq->hi = q;
  int rc = gw_sendq_push_tagged(&sq->held, m, q, &r->held_limits, now_ms);
  if (rc != GW_SENDQ_OK && (q == 0 || rc == GW_SENDQ_NOMEM)) {
    /* A sequenced message that does not fit is read from the stream later (`hi` remembers it);
     * an unsequenced one cannot be: the connection is too far behind to keep it. */
    wsg_log_limited(r->rl, LOG_LIMIT_PER_S, now_ms, WSG_LOG_INFO, "server",
                    "closing resumable connection %llu of user %s with 4001: more than "
                    "--sendq-hard waits while it catches up",
                    (unsigned long long)sq->conn_id, sq->user);
    close_conn(r, sq, rc == GW_SENDQ_NOMEM ? GW_CLOSE_INTERNAL : GW_CLOSE_SLOW_CONSUMER, true);
    return;
  }
  if (sq->state == SEQ_LIVE)
    seq_read(r, sq, now_ms);
}

bool gw_resume_registers_later(const gw_seq *sq) {
  return sq != NULL && sq->state == SEQ_POSITION;
}

void gw_resume_on_registered(const gw_resume *r, gw_seq *sq, uint64_t now_ms) {
  if (sq->state == SEQ_REGISTERING)
    seq_read(r, sq, now_ms);
}

bool gw_resume_wants_room(const gw_resume *r, const gw_seq *sq, uint64_t queued_bytes) {
  return sq->state == SEQ_ROOM && queued_bytes <= r->room;
}

void gw_resume_on_room(const gw_resume *r, gw_seq *sq, uint64_t now_ms) {
  if (sq->state == SEQ_ROOM)
    seq_read(r, sq, now_ms);
}

uint64_t gw_resume_last(const gw_seq *sq) {
  return sq->last;
}

/* A fresh connection reads its position first: the read runs before the registration (see
 * gw_seq). */
int gw_resume_start(const gw_resume *r, void *conn, uint64_t conn_id, const char *user,
                    uint64_t resume, uint64_t now_ms, gw_seq **out) {
  *out = NULL;
  gw_seq *sq = calloc(1, sizeof *sq);
  if (!sq)
    return -1;
  sq->conn = conn;
  sq->conn_id = conn_id;
  sq->user = user;
  sq->complete = true;
  wsg_gauge_add(r->m_conns, 1);
  if (resume) {
    sq->resume = resume;
    sq->last = resume;
    sq->state = SEQ_REGISTERING;
    *out = sq;
    return 0;
  }
  sq->state = SEQ_POSITION;
  int rc = r->ops->read(r->arg, conn, true, 0);
  if (rc != GW_REG_OK) {
    wsg_log_limited(r->rl, LOG_LIMIT_PER_S, now_ms, WSG_LOG_WARN, "server",
                    "cannot read the sequence position of user %s: %s", user,
                    gw_registry_strerror(rc));
    gw_resume_free(r, sq);
    return -1;
  }
  wsg_counter_add(r->m_replay_reads, 1);
  *out = sq;
  return 0;
}

void gw_resume_free(const gw_resume *r, gw_seq *sq) {
  if (!sq)
    return;
  gw_sendq_clear(&sq->held);
  free(sq);
  wsg_gauge_add(r->m_conns, -1);
}
