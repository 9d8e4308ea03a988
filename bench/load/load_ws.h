/*
 * load_ws: the client side of RFC 6455 for wsgate-load, as pure functions over buffers (no I/O),
 * so one event loop can drive hundreds of thousands of connections with a few bytes of state each:
 * the upgrade request and the check of the server's answer (status 101, Upgrade, Connection,
 * Sec-WebSocket-Accept), masked client frames, an incremental parser of server frames that keeps
 * 40 bytes per connection, and the timestamp marker the load modes put into payloads.
 *
 * Threads: none of its own; pure functions, state in caller-owned structs.
 */
#ifndef LOAD_WS_H
#define LOAD_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LOAD_WS_KEY_LEN    24 /* base64 of 16 bytes */
#define LOAD_WS_ACCEPT_LEN 28 /* base64 of a SHA-1 */
/* Largest upgrade answer accepted; a longer header block is a handshake error. */
#define LOAD_WS_RESPONSE_MAX 8192

enum {
  LOAD_WS_OP_CONT = 0x0,
  LOAD_WS_OP_TEXT = 0x1,
  LOAD_WS_OP_BINARY = 0x2,
  LOAD_WS_OP_CLOSE = 0x8,
  LOAD_WS_OP_PING = 0x9,
  LOAD_WS_OP_PONG = 0xA,
};

/*
 * Sec-WebSocket-Key derived from a seed (the load process mixes its own random salt into it), so
 * a connection need not store its key: the answer is checked by deriving the key again.
 */
void load_ws_key(uint64_t seed, char key[LOAD_WS_KEY_LEN + 1]);

/* The Sec-WebSocket-Accept a server must answer to `key` (borrowed). 0, or -1 if SHA-1 failed. */
int load_ws_accept(const char *key, char accept[LOAD_WS_ACCEPT_LEN + 1]);

/*
 * Writes the upgrade request for `path` (request target with query, borrowed) to `host` (the
 * Host header value, borrowed). `extra` (borrowed, may be NULL) is inserted as is: complete
 * "Name: value\r\n" lines. Returns the length, or -1 when cap is too small.
 */
int load_ws_request(char *buf, size_t cap, const char *host, const char *path, const char *key,
                    const char *extra);

/*
 * Checks the server's answer in buf[0..len) (borrowed). Returns the length of the header block
 * (through the blank line: bytes after it are already WebSocket frames) when it is a valid
 * 101 for `accept`; 0 when the blank line has not arrived yet; -1 on any other answer, with
 * *status = the HTTP status (0 if the status line is unreadable) and a reason in err.
 */
int load_ws_response(const char *buf, size_t len, const char *accept, int *status, char *err,
                     size_t errlen);

/* Bytes a client frame with `len` payload bytes takes on the wire. */
size_t load_ws_frame_size(size_t len);

/*
 * Writes one complete (FIN) client frame, payload masked with `mask`, to out. Returns the bytes
 * written, 0 when cap is too small. payload (borrowed) may be NULL when len is 0.
 */
size_t load_ws_frame(uint8_t *out, size_t cap, unsigned opcode, const void *payload, size_t len,
                     uint32_t mask);

/* Incremental parser of server frames; zero it to start. 40 bytes per connection. */
typedef struct {
  uint64_t remain;    /* payload bytes of the current frame still to come */
  uint64_t frame_len; /* payload length of the current frame */
  uint8_t hdr[14];    /* header bytes collected so far */
  uint8_t have;       /* how many */
  uint8_t opcode;     /* current frame's opcode */
  uint8_t msg_opcode; /* text or binary: the data message a continuation belongs to */
  uint8_t in_payload; /* header complete, payload (possibly empty) pending */
} load_ws_parser;

/* A piece of one frame's payload, pointing into the parsed buffer. */
typedef struct {
  const uint8_t *data;
  size_t len;
  uint64_t frame_len;
  uint8_t opcode;     /* the frame's own opcode (LOAD_WS_OP_CONT for a continuation) */
  uint8_t msg_opcode; /* text/binary of the message for data frames; the opcode for control */
  bool first;         /* first piece of its frame */
  bool last;          /* frame complete */
  bool fin;           /* the frame ends its message */
} load_ws_chunk;

/*
 * Parses data[0..len) (borrowed). Returns the number of bytes consumed (> 0, or 0 when len is 0)
 * and sets *got when *chunk holds a payload piece (possibly empty, for a zero-length frame); or
 * -1 on a protocol violation by the server (masked frame, reserved bits, bad opcode, oversized or
 * fragmented control frame, continuation without a message), with *err a static message.
 * Call repeatedly until all bytes are consumed.
 */
long load_ws_parse(load_ws_parser *p, const uint8_t *data, size_t len, load_ws_chunk *chunk,
                   bool *got, const char **err);

/*
 * The timestamp marker "~wl<decimal>~" that payloads carry. It survives any protocol that copies
 * text verbatim (the echo, JSON strings of the chat handler and of Centrifugo, nchan), so one
 * streaming scanner finds it in every reply whatever frame or JSON wraps it.
 */
#define LOAD_MARKER_MAX 24
size_t load_marker_write(char *out, size_t cap, uint64_t value);

/* Streaming scanner state; zero it to start. Markers may be split across chunks. */
typedef struct {
  uint64_t acc;
  uint8_t state;
  uint8_t digits;
} load_marker_scan;

/* Scans p[0..n) and calls fn(arg, value) for every complete marker. Returns how many. */
size_t load_marker_feed(load_marker_scan *s, const uint8_t *p, size_t n,
                        void (*fn)(void *arg, uint64_t value), void *arg);

/* Standard base64 (with padding) of in[0..n) into out (4 * ceil(n / 3) + 1 bytes). */
void load_base64(const uint8_t *in, size_t n, char *out);
/* base64url without padding (JWT), into out (4 * ceil(n / 3) + 1 bytes). Returns the length. */
size_t load_base64url(const uint8_t *in, size_t n, char *out);

#endif
