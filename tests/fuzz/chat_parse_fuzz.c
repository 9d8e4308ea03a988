/*
 * libFuzzer target for the chat handler's command parser, proc_chat_parse()
 * (processor/proc_chat_parse.c): every byte of a client's frame reaches it. The first input byte
 * picks text (JSON) or binary (MessagePack); the rest is the frame. Invariants beyond "no crash,
 * no leak, no UB" (a broken one aborts): a parsed command has a known op and every string it
 * carries is non-empty, within its limit and valid UTF-8; a refusal leaves a message for the
 * client.
 *
 * Threads: libFuzzer's main thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proc_chat.h"
#include "wsg_envelope.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "chat_parse_fuzz: invariant broken: %s (line %d)\n", #cond, __LINE__);       \
      abort();                                                                                     \
    }                                                                                              \
  } while (0)

static void check_str(const char *s, size_t len, size_t max) {
  if (!s)
    return;
  CHECK(len > 0 && len <= max && wsg_utf8_valid(s, len));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0)
    return 0;
  bool binary = data[0] & 1;
  const proc_chat_limits lim = {.max_frame = 16384, .max_text = 4096};
  proc_chat_cmd cmd;
  char err[256] = "";
  int rc = proc_chat_parse(data + 1, size - 1, binary, &lim, &cmd, err, sizeof err);
  if (rc == 0) {
    CHECK(cmd.op >= PROC_CHAT_JOIN && cmd.op <= PROC_CHAT_MEMBERS);
    CHECK(cmd.msgpack == binary);
    check_str(cmd.room, cmd.room_len, PROC_CHAT_ROOM_MAX);
    check_str(cmd.to, cmd.to_len, WSG_MAX_USER_LEN);
    check_str(cmd.text, cmd.text_len, lim.max_text);
    if (cmd.id_kind == PROC_CHAT_ID_STR)
      check_str(cmd.id_str, cmd.id_len, PROC_CHAT_ID_MAX);
  } else {
    CHECK(rc == -1 && err[0] != '\0');
  }
  proc_chat_cmd_finish(&cmd);
  return 0;
}
