/*
 * proc_offsets: which input offsets of one partition may be committed. An input record may cause
 * several outbound records; its offset becomes committable only when every one of them has been
 * acknowledged by Kafka AND every earlier record of the partition is complete too, so a commit
 * never skips work that could still be lost (at-least-once from the client's frame to the reply).
 *
 * A ring of (offset, pending) entries in offset order. An entry starts with one pending unit, the
 * "guard", held while the record is being handled so it cannot complete before its outputs are
 * counted; each produced output adds one; each delivery report and the guard's release take one.
 * Completed entries at the head are popped and the committable offset advances past them.
 *
 * Entries are addressed by a sequence number (seq) handed out by proc_offsets_begin, so a delivery
 * report finds its entry in O(1) without searching and the ring may grow underneath.
 *
 * Threads: the processor's consumer thread only (delivery reports are polled there too).
 */
#ifndef PROC_OFFSETS_H
#define PROC_OFFSETS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct proc_offsets proc_offsets;

/* An empty tracker; NULL when out of memory. Caller frees with proc_offsets_destroy. */
proc_offsets *proc_offsets_create(void);
void proc_offsets_destroy(proc_offsets *t); /* NULL is a no-op */

/*
 * Starts tracking input `offset`, which must be greater than every offset begun before (since the
 * last reset). The entry holds its guard. Returns 0 and the entry's *seq, or -1 if out of memory
 * or `offset` goes backwards.
 */
int proc_offsets_begin(proc_offsets *t, int64_t offset, uint64_t *seq);

/* One more output in flight for entry `seq`. Returns 0, or -1 if seq is not a live entry. */
int proc_offsets_add(proc_offsets *t, uint64_t seq);

/*
 * One pending unit of `seq` is done (an output was acknowledged, or the guard released). Returns 1
 * if the committable offset advanced, 0 if not, -1 if seq is not a live entry (a stale report).
 */
int proc_offsets_done(proc_offsets *t, uint64_t seq);

/* The offset to commit (the last complete offset + 1), or -1 if nothing completed yet. */
int64_t proc_offsets_committable(const proc_offsets *t);

/* Entries not yet complete (including those waiting behind an incomplete one). */
size_t proc_offsets_count(const proc_offsets *t);

/* Forgets every entry and the committable offset (the partition was revoked). Memory is kept. */
void proc_offsets_reset(proc_offsets *t);

#endif
