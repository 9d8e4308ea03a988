/*
 * The chat handler's command table (proc_chat_cmds) and what it drives: every parsed op has a row,
 * the parser's "unknown command" and "missing" answers list the table's ops, each row's required
 * keys are enforced, and docs/HANDLERS.md's command table has exactly one row per command, built
 * from the row (its op, its required keys, its help line).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "proc_chat.h"
#include "proc_chat_cmds.h"

#ifndef WSG_SOURCE_ROOT
#error "meson passes the source root (for docs/HANDLERS.md)"
#endif

static const proc_chat_limits lim = {.max_frame = 16384, .max_text = 4096};

/* The keys a row requires, with the placeholder docs/HANDLERS.md gives their value. */
static const struct {
  unsigned bit;
  const char *key, *placeholder;
} doc_keys[] = {
    {PROC_CHAT_K_ROOM, "room", "R"}, {PROC_CHAT_K_TO, "to", "U"}, {PROC_CHAT_K_TEXT, "text", "T"}};

#define NDOC_KEYS (sizeof(doc_keys) / sizeof(doc_keys[0]))

static int parse(const char *json, proc_chat_cmd *cmd, char *err, size_t errlen) {
  int rc = proc_chat_parse((const uint8_t *)json, strlen(json), false, &lim, cmd, err, errlen);
  proc_chat_cmd_finish(cmd);
  return rc;
}

Test(proc_chat_cmds, every_op_has_one_row) {
  size_t n;
  const proc_chat_cmd_def *c = proc_chat_cmds_list(&n);
  cr_assert_eq(n, PROC_CHAT_MEMBERS - PROC_CHAT_JOIN + 1, "one row per proc_chat_op");
  for (size_t i = 0; i < n; i++) {
    cr_assert_not_null(c[i].run, "%s", c[i].name);
    cr_assert(c[i].help && *c[i].help && !strchr(c[i].help, '|'), "%s", c[i].name);
    cr_assert_eq(proc_chat_cmds_find(c[i].name, strlen(c[i].name)), &c[i]);
    cr_assert_eq(proc_chat_cmds_get(c[i].op), &c[i]);
    cr_assert_eq(c[i].requires & PROC_CHAT_K_OP, 0, "op is always required, not listed");
  }
  cr_assert_null(proc_chat_cmds_find("joi", 3));
  cr_assert_null(proc_chat_cmds_find("joinx", 5));
}

Test(proc_chat_cmds, answers_list_the_tables_ops) {
  size_t n;
  const proc_chat_cmd_def *c = proc_chat_cmds_list(&n);
  char want[256] = "";
  for (size_t i = 0; i < n; i++) {
    if (i)
      strcat(want, ", ");
    strcat(want, c[i].name);
  }
  char names[256];
  cr_assert_str_eq(proc_chat_cmds_names(names, sizeof(names)), want);
  char small[5];
  proc_chat_cmds_names(small, sizeof(small));
  cr_assert_eq(strlen(small), sizeof(small) - 1, "truncated, still terminated");

  proc_chat_cmd cmd;
  char err[256], exp[300];
  cr_assert_eq(parse("{\"op\":\"shout\",\"room\":\"r\"}", &cmd, err, sizeof(err)), -1);
  snprintf(exp, sizeof(exp), "op: unknown command (%s)", want);
  cr_assert_str_eq(err, exp);
  cr_assert_eq(parse("{\"room\":\"r\"}", &cmd, err, sizeof(err)), -1);
  snprintf(exp, sizeof(exp), "op: missing (%s)", want);
  cr_assert_str_eq(err, exp);
}

/* For each row: with all its keys it parses to its op; without any one of them it is refused with
 * "<key>: missing". */
Test(proc_chat_cmds, required_keys_come_from_the_row) {
  size_t n;
  const proc_chat_cmd_def *c = proc_chat_cmds_list(&n);
  for (size_t i = 0; i < n; i++) {
    for (size_t drop = 0; drop <= NDOC_KEYS; drop++) {
      if (drop < NDOC_KEYS && !(c[i].requires & doc_keys[drop].bit))
        continue;
      char json[256];
      int off = snprintf(json, sizeof(json), "{\"op\":\"%s\"", c[i].name);
      for (size_t k = 0; k < NDOC_KEYS; k++)
        if ((c[i].requires & doc_keys[k].bit) && k != drop)
          off += snprintf(json + off, sizeof(json) - (size_t)off, ",\"%s\":\"v\"", doc_keys[k].key);
      snprintf(json + off, sizeof(json) - (size_t)off, "}");
      proc_chat_cmd cmd;
      char err[256] = "";
      int rc = parse(json, &cmd, err, sizeof(err));
      if (drop == NDOC_KEYS) {
        cr_assert_eq(rc, 0, "%s: %s", json, err);
        cr_assert_eq(cmd.op, c[i].op);
      } else {
        char exp[64];
        snprintf(exp, sizeof(exp), "%s: missing", doc_keys[drop].key);
        cr_assert_eq(rc, -1, "%s", json);
        cr_assert_str_eq(err, exp, "%s", json);
      }
    }
  }
}

/* docs/HANDLERS.md, section "### Commands": "| op | `{"op":"op",<keys>}` | help |" per row, in the
 * table's order, and no other command row. */
Test(proc_chat_cmds, handlers_doc_lists_every_command) {
  size_t n;
  const proc_chat_cmd_def *c = proc_chat_cmds_list(&n);
  FILE *f = fopen(WSG_SOURCE_ROOT "/docs/HANDLERS.md", "r");
  cr_assert_not_null(f);
  char line[1024];
  bool in_section = false;
  size_t next = 0;
  while (fgets(line, sizeof(line), f)) {
    if (strncmp(line, "### ", 4) == 0 || strncmp(line, "## ", 3) == 0)
      in_section = strcmp(line, "### Commands\n") == 0;
    if (!in_section || strncmp(line, "| ", 2) != 0 || !strstr(line, "`{\"op\":"))
      continue;
    cr_assert_lt(next, n, "docs/HANDLERS.md lists a command the table lacks: %s", line);
    char want[512];
    int off = snprintf(want, sizeof(want), "| %s | `{\"op\":\"%s\"", c[next].name, c[next].name);
    for (size_t k = 0; k < NDOC_KEYS; k++)
      if (c[next].requires & doc_keys[k].bit)
        off += snprintf(want + off, sizeof(want) - (size_t)off, ",\"%s\":%s", doc_keys[k].key,
                        doc_keys[k].placeholder);
    snprintf(want + off, sizeof(want) - (size_t)off, "}` | %s |\n", c[next].help);
    cr_assert_str_eq(line, want, "docs/HANDLERS.md's row for %s", c[next].name);
    next++;
  }
  fclose(f);
  cr_assert_eq(next, n, "docs/HANDLERS.md lists %zu of the %zu commands", next, n);
}
