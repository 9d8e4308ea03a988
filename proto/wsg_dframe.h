/*
 * wsg_dframe: the wire format of the direct reply path (docs/ARCHITECTURE.md, "Direct replies"),
 * a plain TCP connection from a processor to the gateway owning a connection. Pure: no I/O, no
 * allocation, so the gateway's and the processor's parsers are the code the unit tests run.
 *
 * Every frame is a u32 big-endian length, then that many bytes (never 0, never more than
 * WSG_DFRAME_MAX). Processor -> gateway: first a hello, a MessagePack map {"v": 2, "secret":
 * <bin>}, then data frames, each a u64 big-endian sequence number (1, 2, 3... per connection)
 * followed by exactly the value of an outbound record. Version 2 adds the barrier, a frame whose
 * sequence number is 0 followed by an i32 partition and an i64 offset: "dispatch nothing after
 * this until your outbound consumer has dispatched that partition up to that offset"; a version 1
 * peer never sends one (and a gateway refuses it from such a peer as out of sequence).
 * Gateway -> processor: acks, each a u64 big-endian: the highest sequence number dispatched so
 * far (cumulative; a barrier has no number of its own).
 *
 * Threads: none of its own; every function is reentrant.
 */
#ifndef WSG_DFRAME_H
#define WSG_DFRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WSG_DFRAME_HDR             4u /* the length prefix */
#define WSG_DFRAME_SEQ             8u /* a data frame's sequence number, and an ack's whole body */
#define WSG_DFRAME_VERSION         2u /* what this build sends */
#define WSG_DFRAME_VERSION_MIN     1u /* the oldest it accepts: a peer that sends no barriers */
#define WSG_DFRAME_BARRIER_VERSION 2u
/* A barrier's body: the sequence number 0, the partition (i32), the offset (i64). */
#define WSG_DFRAME_BARRIER_BODY (WSG_DFRAME_SEQ + 4u + 8u)
#define WSG_DFRAME_BARRIER_LEN  (WSG_DFRAME_HDR + WSG_DFRAME_BARRIER_BODY)
/* The largest envelope the direct path carries: the default message.max.bytes of an outbound
 * record (1000000) rounded up to 1 MiB. A processor sends a larger one through Kafka. */
#define WSG_DFRAME_MAX_ENVELOPE (1u << 20)
#define WSG_DFRAME_MAX          (WSG_DFRAME_SEQ + WSG_DFRAME_MAX_ENVELOPE)
/* Bounds of the shared secret (--direct-secret-file); the hello's size follows. */
#define WSG_DFRAME_SECRET_MIN 16u
#define WSG_DFRAME_SECRET_MAX 256u
#define WSG_DFRAME_HELLO_MAX  (WSG_DFRAME_HDR + 16u + WSG_DFRAME_SECRET_MAX)

typedef enum {
  WSG_DFRAME_OK,      /* a whole frame is there */
  WSG_DFRAME_MORE,    /* not yet: read more bytes */
  WSG_DFRAME_EMPTY,   /* a length of 0 (malformed) */
  WSG_DFRAME_TOO_BIG, /* a length above the caller's bound (malformed) */
} wsg_dframe_rc;

/*
 * The frame at the start of buf[0..len): WSG_DFRAME_OK with its body in *body[0..*body_len) (inside
 * buf) and the bytes it took in *used; WSG_DFRAME_MORE when it is not all there; the other two as
 * soon as the length prefix is (4 bytes) and out of (0, max].
 */
wsg_dframe_rc wsg_dframe_next(const uint8_t *buf, size_t len, size_t max, const uint8_t **body,
                              size_t *body_len, size_t *used);

static inline void wsg_dframe_put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}
static inline void wsg_dframe_put64(uint8_t *p, uint64_t v) {
  wsg_dframe_put32(p, (uint32_t)(v >> 32));
  wsg_dframe_put32(p + 4, (uint32_t)v);
}
static inline uint32_t wsg_dframe_get32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t wsg_dframe_get64(const uint8_t *p) {
  return (uint64_t)wsg_dframe_get32(p) << 32 | wsg_dframe_get32(p + 4);
}

/* Splits "host:port" ("[v6]:port" too) into host[0..hostlen) and *port (inside spec). False when
 * it is not of that form or the host does not fit. */
bool wsg_dframe_split_addr(const char *spec, char *host, size_t hostlen, const char **port);

/* Writes the whole hello frame (prefix included) into out[0..WSG_DFRAME_HELLO_MAX). Returns its
 * length, or 0 when secret_len is out of [WSG_DFRAME_SECRET_MIN, WSG_DFRAME_SECRET_MAX]. */
size_t wsg_dframe_hello(uint8_t *out, const uint8_t *secret, size_t secret_len);

typedef enum {
  WSG_DHELLO_OK,
  WSG_DHELLO_MALFORMED, /* not a map of "v" and "secret" (any order, nothing else) */
  WSG_DHELLO_VERSION,   /* a version this build does not speak */
} wsg_dhello_rc;

/* Parses a hello's body: *secret[0..*secret_len) points into it, *version is in
 * [WSG_DFRAME_VERSION_MIN, WSG_DFRAME_VERSION]. The caller compares the secret (in constant
 * time). */
wsg_dhello_rc wsg_dframe_hello_parse(const uint8_t *body, size_t len, const uint8_t **secret,
                                     size_t *secret_len, uint32_t *version);

/* Writes the whole barrier frame (prefix included) into out[0..WSG_DFRAME_BARRIER_LEN). */
void wsg_dframe_barrier(uint8_t *out, int32_t partition, int64_t offset);

/* A data frame's body whose sequence number is 0: true with *partition and *offset when it is a
 * well-formed barrier (exactly WSG_DFRAME_BARRIER_BODY bytes, partition and offset >= 0). */
bool wsg_dframe_barrier_parse(const uint8_t *body, size_t len, int32_t *partition, int64_t *offset);

#endif
