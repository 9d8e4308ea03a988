/*
 * gw_wsframe: server frame headers (see gw_wsframe.h). The same encoding as libwebsockets 4.1.6
 * (ops-ws.c rops_write_role_protocol_ws): the shortest length form that fits.
 */
#include "gw_wsframe.h"

#define OP_TEXT   0x1
#define OP_BINARY 0x2
#define FIN       0x80
#define LEN_16    126
#define LEN_64    127

size_t gw_wsframe_header_len(uint64_t len) {
  if (len < LEN_16)
    return 2;
  return len <= UINT16_MAX ? 4 : 10;
}

size_t gw_wsframe_header(uint8_t *out, bool binary, uint64_t len) {
  if (len > INT64_MAX)
    len = INT64_MAX;
  out[0] = (uint8_t)(FIN | (binary ? OP_BINARY : OP_TEXT));
  size_t n = gw_wsframe_header_len(len);
  if (n == 2) {
    out[1] = (uint8_t)len;
    return n;
  }
  out[1] = n == 4 ? LEN_16 : LEN_64;
  for (size_t i = 2; i < n; i++)
    out[i] = (uint8_t)(len >> (8 * (n - 1 - i)));
  return n;
}
