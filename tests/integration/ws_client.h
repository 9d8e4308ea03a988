/*
 * ws_client: a small blocking RFC 6455 WebSocket client for the integration tests.
 *
 * It speaks the protocol correctly (random Sec-WebSocket-Key, Sec-WebSocket-Accept checked with
 * SHA-1, masked client frames, 7/16/64-bit lengths, fragmented messages reassembled, pings
 * answered, the close handshake) and can also break it on purpose (unmasked or raw bytes) for
 * hostile-client tests. A refused upgrade returns the HTTP status, headers and body. With
 * tls_ca_file it speaks wss:// (OpenSSL), verifying the server's certificate and address.
 * Every wait is a poll() with a timeout; nothing blocks forever. No permessage-deflate.
 *
 * Threads: a ws_client belongs to one thread at a time.
 */
#ifndef WSG_WS_CLIENT_H
#define WSG_WS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* X-macro: name, value, message. */
#define WS_CLIENT_ERRNO_MAP(X)                                                                     \
  X(OK, 0, "success")                                                                              \
  X(CONNECT, -1, "TCP connect failed")                                                             \
  X(IO, -2, "socket read or write failed")                                                         \
  X(TIMEOUT, -3, "timed out")                                                                      \
  X(REFUSED, -4, "the server answered the upgrade with a status other than 101")                   \
  X(HANDSHAKE, -5, "the upgrade response is not a valid WebSocket handshake")                      \
  X(PROTOCOL, -6, "the server sent an invalid frame")                                              \
  X(TOO_BIG, -7, "the message is larger than max_message")                                         \
  X(CLOSED, -8, "the connection is closed (EOF, or after a close frame)")                          \
  X(INVALID, -9, "invalid argument")                                                               \
  X(NOMEM, -10, "out of memory")                                                                   \
  X(TLS, -11, "the TLS handshake failed or the server's certificate was not accepted")

typedef enum {
#define WS_CLIENT_ERR_ENUM(name, value, msg) WS_CLIENT_##name = value,
  WS_CLIENT_ERRNO_MAP(WS_CLIENT_ERR_ENUM)
#undef WS_CLIENT_ERR_ENUM
} ws_client_err;

const char *ws_client_strerror(int err); /* static string */

typedef enum {
  WS_OP_CONT = 0x0,
  WS_OP_TEXT = 0x1,
  WS_OP_BINARY = 0x2,
  WS_OP_CLOSE = 0x8,
  WS_OP_PING = 0x9,
  WS_OP_PONG = 0xA,
} ws_opcode;

typedef struct {
  const char *host; /* IPv4/IPv6 literal; NULL: "127.0.0.1" */
  int port;
  const char *path;           /* request target; NULL: "/" */
  const char *const *headers; /* extra "Name: value" lines, NULL-terminated; may be NULL */
  const char *subprotocol;    /* Sec-WebSocket-Protocol value; NULL: none */
  int timeout_ms;             /* connect + handshake; 0: 5000 */
  size_t max_message;         /* largest message ws_client_recv reassembles; 0: 16 MiB */
  /* wss://: a PEM file of the CA(s) that must have signed the server's certificate, which must
   * also name `host` (an IP address SAN). NULL: plain ws://. */
  const char *tls_ca_file;
  const char *tls_alpn; /* protocols offered by ALPN, comma-separated ("h2,http/1.1"); NULL: none */
} ws_client_options;

/* The server's answer to the upgrade request. */
typedef struct {
  int status;         /* 101 on success, else the refusal's status; 0 if none was read */
  char headers[4096]; /* status line and headers as received (NUL-terminated, truncated) */
  char body[4096];    /* body of a refusal (NUL-terminated, truncated to 4095 bytes) */
  size_t body_len;
  char protocol[128]; /* Sec-WebSocket-Protocol the server chose, "" if none */
} ws_http_response;

typedef struct ws_client ws_client;

/*
 * Connects and upgrades. Returns WS_CLIENT_OK with *out set (caller destroys); WS_CLIENT_REFUSED
 * when the server answered with another status (resp filled, body read until Content-Length or
 * EOF within the timeout); or another negative ws_client_err with a message in err. resp may be
 * NULL; err may be NULL. o: borrowed.
 */
int ws_client_connect(ws_client **out, const ws_client_options *o, ws_http_response *resp,
                      char *err, size_t errlen);

/* Closes the socket at once (no close handshake) and frees. NULL is a no-op. */
void ws_client_destroy(ws_client *c);

int ws_client_fd(const ws_client *c);
/* Bytes received and not yet returned by ws_client_recv (e.g. a frame that came in the same read
 * as the upgrade response): poll() on ws_client_fd() does not see them, so check this first. */
size_t ws_client_buffered(const ws_client *c);

/* wss:// only: the negotiated TLS version ("TLSv1.3") and ALPN protocol ("" if none). Static or
 * owned by the client; NULL on a plain connection. */
const char *ws_client_tls_version(const ws_client *c);
const char *ws_client_tls_alpn(const ws_client *c);

/* One masked frame with FIN set: a whole text/binary message, a ping, a pong. data: borrowed. */
int ws_client_send(ws_client *c, ws_opcode op, const void *data, size_t len);
static inline int ws_client_send_text(ws_client *c, const char *s, size_t len) {
  return ws_client_send(c, WS_OP_TEXT, s, len);
}
/* One message split into frames of at most frag_len bytes (first frame `op`, then CONT). */
int ws_client_send_fragmented(ws_client *c, ws_opcode op, const void *data, size_t len,
                              size_t frag_len);
/* Any single frame: opcode as given (even reserved ones), fin, masked or not. For hostile tests. */
int ws_client_send_frame(ws_client *c, int opcode, bool fin, bool masked, const void *data,
                         size_t len);
/* Raw bytes on the socket, no framing. */
int ws_client_send_raw(ws_client *c, const void *data, size_t len);

/* A received message (or control frame). data is owned by the client and valid until the next
 * call on it; it is NUL-terminated for convenience (not counted in len). */
typedef struct {
  ws_opcode opcode; /* TEXT, BINARY, PONG or CLOSE */
  const uint8_t *data;
  size_t len;
  uint16_t close_code;    /* CLOSE: the code (1005 if the frame had none) */
  char close_reason[124]; /* CLOSE: the reason, NUL-terminated */
} ws_message;

/*
 * Waits up to timeout_ms for the next message. Pings are answered with a pong and not returned
 * (counted in ws_client_pings_received); pongs are returned. A close frame is returned as
 * WS_OP_CLOSE after the client has echoed it (the close handshake), and every later call returns
 * WS_CLIENT_CLOSED. Returns WS_CLIENT_OK, WS_CLIENT_TIMEOUT, WS_CLIENT_CLOSED (EOF without a close
 * frame, or already closed), WS_CLIENT_PROTOCOL, WS_CLIENT_TOO_BIG or WS_CLIENT_IO.
 */
int ws_client_recv(ws_client *c, ws_message *m, int timeout_ms);

/*
 * Close handshake: sends a close frame with code (0: no payload) and reason, then waits up to
 * timeout_ms for the server's close frame (data frames in between are discarded) and for EOF.
 * Returns WS_CLIENT_OK with the server's close in *m (may be NULL), or an error.
 */
int ws_client_close(ws_client *c, uint16_t code, const char *reason, ws_message *m, int timeout_ms);

/* Waits up to timeout_ms for the server to close the TCP connection (EOF or reset), discarding
 * anything it sends. Returns WS_CLIENT_OK on EOF, WS_CLIENT_TIMEOUT if it stayed open. */
int ws_client_wait_eof(ws_client *c, int timeout_ms);

unsigned ws_client_pings_received(const ws_client *c);

#endif
