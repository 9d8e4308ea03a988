/*
 * libFuzzer target for wsgate-api's request decoder, api_request_decode() (api/api_request.c):
 * anyone holding an API key sends its input. The first byte picks the endpoint (send,
 * disconnect, publish, batch) and the body's type (JSON or MessagePack); the rest is the body.
 * Invariants beyond "no crash, no UB" (a broken one aborts): the answer is 0, 400, 413 or 415;
 * an error names a field that fits its buffer; every accepted command re-encodes (the checks of
 * the Kafka path hold for what the HTTP path accepts) and its payload is within the limit.
 *
 * Threads: libFuzzer's main thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_CMDS    16
#define MAX_PAYLOAD 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  api_op op = (api_op)(data[0] & 3);
  const char *ct = (data[0] & 4) ? "application/msgpack" : "application/json";
  char field[64], why[300];
  api_batch b;
  int rc = api_request_decode(&b, op, ct, data + 1, size - 1, MAX_CMDS, MAX_PAYLOAD, field,
                              sizeof field, why, sizeof why);
  if (rc != 0 && rc != 400 && rc != 413 && rc != 415)
    abort();
  if (rc != 0 && (strlen(field) >= sizeof field || why[0] == '\0'))
    abort();
  if (rc == 0) {
    if (b.n == 0 || b.n > (op == API_OP_BATCH ? MAX_CMDS : 1))
      abort();
    wsg_buf out;
    wsg_buf_init(&out, 0);
    for (size_t i = 0; i < b.n; i++) {
      const char *f;
      if (b.cmds[i].data_len > MAX_PAYLOAD || wsg_command_encode(&b.cmds[i], &out, &f) != 0)
        abort();
    }
    wsg_buf_finish(&out);
  }
  api_batch_finish(&b);
  return 0;
}
