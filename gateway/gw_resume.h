/*
 * gw_resume: the per-user sequence of a resumable connection (subprotocol <subprotocol>+seq,
 * docs/PROTOCOL.md "Resume after reconnect").
 *
 * Such a connection gets every message sent to its user in q order, each prefixed with "<q>\n",
 * without gaps or duplicates: a message that arrives ahead of its turn (two processors sent to the
 * user at once), and everything the client missed while away (?resume=<q>), is read from the
 * user's replay stream in Redis, in pages that wait for the send queue to drain; what arrives
 * meanwhile waits in a bounded per-connection list. A control frame "wsgate\n{...}" tells the
 * client where it stands (sync) and what was lost (gap).
 *
 * The state machine makes no libwebsockets and no Redis call: the server gives it, in
 * gw_resume_ops, the few things it needs (a replay read, queueing a message, a close, the end of
 * the catch-up), and passes the time in; tests/unit/gw_resume_test.c drives it with fakes.
 *
 * Threads: the loop thread only.
 */
#ifndef GW_RESUME_H
#define GW_RESUME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gw_registry.h"
#include "gw_sendq.h"
#include "wsg_log.h"
#include "wsg_metrics.h"

/* The tag of a control frame ("wsgate\n{...}") in a send queue; every other tag is a q, 0 none. */
#define GW_RESUME_CONTROL UINT64_MAX

/* What the state machine asks of the server, for the connection `conn` it was started with. */
typedef struct {
  /* Issues a read of conn's replay stream: with position_only the counter alone, else the page
   * after `after` (gw_registry_replay_read); its answer comes back through gw_resume_on_replay.
   * Returns a gw_registry_err. */
  int (*read)(void *arg, void *conn, bool position_only, uint64_t after);
  /* Registers conn in Redis (gw_registry_conn_add) once a fresh connection's position is known;
   * its answer comes back through gw_resume_on_registered. Returns a gw_registry_err. */
  int (*register_conn)(void *arg, void *conn);
  /* Queues m (borrowed; the queue takes its own reference) with `tag` in conn's send queue and
   * asks for a write. False when conn was closed instead (over its send queue's limits). */
  bool (*queue)(void *arg, void *conn, gw_msg *m, uint64_t tag, uint64_t now_ms);
  /* Closes conn with `code`; urgent: without sending what is queued. */
  void (*close)(void *arg, void *conn, int code, bool urgent);
  /* The sync frame is queued: conn reads its client's requests again. */
  void (*synced)(void *arg, void *conn);
  /* Accounted bytes in conn's send queue. */
  uint64_t (*queued_bytes)(void *arg, void *conn);
  /* Entry i of a page (gw_replay_page_entry). */
  void (*page_entry)(const gw_replay_page *page, size_t i, gw_replay_entry *out);
} gw_resume_ops;

/* The settings and counters shared by every resumable connection of a server (caller-owned,
 * filled by the caller; every pointer borrowed for the server's life, counters may be NULL). */
typedef struct {
  const gw_resume_ops *ops;
  void *arg;                   /* passed to every op */
  gw_sendq_limits held_limits; /* what may wait while a connection catches up */
  uint64_t room;               /* read the next page once the send queue holds at most this */
  uint64_t sendq_hard;         /* a message larger than this (with overhead) is never queued */
  wsg_log_ratelimit *rl;       /* for the warnings */
  wsg_counter *m_resumes_complete, *m_resumes_incomplete, *m_replay_reads, *m_replayed;
  wsg_counter *m_gaps, *m_dups, *m_too_big;
  wsg_gauge *m_conns;
} gw_resume;

/* One resumable connection's state. */
typedef struct gw_seq gw_seq;

/*
 * Starts a resumable connection, before its registration: a fresh one (resume 0) reads its
 * position first, one with ?resume=<q> starts there. Returns 0 with *out set (freed by
 * gw_resume_free), or -1 when the connection must be refused (no memory, or the read could not be
 * issued: logged). conn: borrowed until gw_resume_free; user: borrowed, valid as long as conn.
 */
int gw_resume_start(const gw_resume *r, void *conn, uint64_t conn_id, const char *user,
                    uint64_t resume, uint64_t now_ms, gw_seq **out);
/* Frees sq and what waits in it. NULL is a no-op. */
void gw_resume_free(const gw_resume *r, gw_seq *sq);

/* A fresh connection registers only once its position is read (the ops' register_conn): the two
 * keys may live on different Redis Cluster nodes, where nothing orders two replies. False until
 * then; the server registers every other connection at once. */
bool gw_resume_registers_later(const gw_seq *sq);

/* Redis registered the connection: its catch-up read starts (once its position is known). */
void gw_resume_on_registered(const gw_resume *r, gw_seq *sq, uint64_t now_ms);

/* The answer to an ops->read: status GW_REG_OK with a page (borrowed for the call), else a
 * gw_registry_err, after which the connection is closed. */
void gw_resume_on_replay(const gw_resume *r, gw_seq *sq, int status, const gw_replay_page *page,
                         uint64_t now_ms);

/* A deliver from Kafka: m (borrowed) with the q its user's sequence gave it, 0 for a reply to
 * this connection (not sequenced). */
void gw_resume_deliver(const gw_resume *r, gw_seq *sq, gw_msg *m, uint64_t q, uint64_t now_ms);

/* Whether sq waits for its send queue to go down to `queued_bytes` before its next read; then
 * gw_resume_on_room() reads it. Split in two so the write path asks for no clock. */
bool gw_resume_wants_room(const gw_resume *r, const gw_seq *sq, uint64_t queued_bytes);
void gw_resume_on_room(const gw_resume *r, gw_seq *sq, uint64_t now_ms);

/* The client's position: the q of the last sequenced message queued for it. */
uint64_t gw_resume_last(const gw_seq *sq);

#endif
