/*
 * wsg_mp: the bounded MessagePack cursor behind wsg_envelope and wsg_msgpack_validate. Private to
 * proto/ (the double underscore says so); nothing outside proto/ includes it.
 *
 * Why not msgpack-c's unpacker: it allocates from a declared count before the data arrives, so five
 * bytes (0xdd ff ff ff ff) can ask for ~100 GiB. This reader allocates nothing, checks every length
 * and count against the bytes that remain before using it, and never reads past `end`.
 *
 * Threads: none of its own; every function is reentrant.
 */
#ifndef WSG_MP_H
#define WSG_MP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wsg_envelope.h"

typedef struct {
  const uint8_t *p;   /* next byte to read */
  const uint8_t *end; /* one past the last byte */
} wsg__mp_cur;

typedef enum {
  WSG__MP_NIL,
  WSG__MP_BOOL,
  WSG__MP_UINT,  /* any non-negative integer, whatever width and signedness it was written with */
  WSG__MP_NINT,  /* a negative integer */
  WSG__MP_FLOAT, /* float 32 or 64 */
  WSG__MP_STR,
  WSG__MP_BIN,
  WSG__MP_EXT,
  WSG__MP_ARRAY,
  WSG__MP_MAP,
} wsg__mp_type;

typedef struct {
  wsg__mp_type type;
  union {
    bool b;
    uint64_t u; /* UINT */
    int64_t i;  /* NINT */
    double f;   /* FLOAT */
    struct {
      const uint8_t *ptr; /* STR, BIN, EXT: the body, inside the input */
      uint32_t len;
      int8_t ext_type; /* EXT only */
    } s;
    uint32_t n; /* ARRAY: elements; MAP: key/value pairs */
  } v;
} wsg__mp_item;

static inline size_t wsg__mp_left(const wsg__mp_cur *c) {
  return (size_t)(c->end - c->p);
}

/*
 * Reads one item's header. A str, bin or ext is consumed whole (its body is checked to be present);
 * an array or map leaves the cursor on its first element, after checking that the declared count
 * fits in what remains (at least one byte per element, two per pair). Returns WSG_ENV_OK,
 * WSG_ENV_TRUNCATED or WSG_ENV_INVALID (0xc1, the one byte MessagePack never uses). On error the
 * cursor has not moved.
 */
int wsg__mp_read(wsg__mp_cur *c, wsg__mp_item *it);

/*
 * Skips one complete value, nesting at most `max_depth` containers deep (clamped to
 * WSG_MSGPACK_MAX_DEPTH). Iterative: an explicit stack of remaining counts, and the sum of the
 * elements still owed by every open container must fit in the bytes that remain. Returns
 * WSG_ENV_OK, WSG_ENV_TRUNCATED, WSG_ENV_INVALID or WSG_ENV_TOO_DEEP.
 */
int wsg__mp_skip(wsg__mp_cur *c, unsigned max_depth);

/* Appends to a wsg_buf, growing it by doubling up to its cap (wsg_envelope.c). Returns WSG_ENV_OK,
 * WSG_ENV_TOO_LONG or WSG_ENV_NOMEM. Shared with the JSON rendering. */
int wsg__buf_append(wsg_buf *b, const void *bytes, size_t len);

#endif
