/*
 * The built-in handlers' table (proc_builtin) and what it drives: lookup by name, the names
 * quoted by --handler's help and by the error for an unknown name, and docs/HANDLERS.md's list of
 * built-ins, which must name every row of the table with its help text, and nothing else.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proc_builtin.h"
#include "proc_config.h"
#include "proc_handler.h"

#ifndef WSG_SOURCE_ROOT
#error "meson passes the source root (for docs/HANDLERS.md)"
#endif

Test(proc_builtin, every_row_opens_the_handler_of_its_name) {
  size_t n;
  const proc_builtin *b = proc_builtin_list(&n);
  cr_assert_gt(n, 0);
  for (size_t i = 0; i < n; i++) {
    const wsgate_handler *vt = proc_builtin_find(b[i].name);
    cr_assert_not_null(vt, "%s", b[i].name);
    cr_assert_eq(vt, b[i].open());
    cr_assert_str_eq(vt->name, b[i].name, "the handler's own name is its row's");
    cr_assert(vt->abi_version == WSGATE_HANDLER_ABI_VERSION ||
                  vt->abi_version == WSGATE_HANDLER_ABI_SUBSCRIBE,
              "%s: abi_version %u", b[i].name, vt->abi_version);
    cr_assert(b[i].help && *b[i].help && !strchr(b[i].help, '\n') && !strchr(b[i].help, '|'),
              "%s: help is one line that fits a Markdown table cell", b[i].name);
    for (size_t k = 0; k < i; k++)
      cr_assert_str_neq(b[k].name, b[i].name, "names are unique");
  }
  cr_assert_null(proc_builtin_find("nope"));
  cr_assert_null(proc_builtin_find(""));
}

Test(proc_builtin, names_literal_lists_the_table) {
  size_t n;
  const proc_builtin *b = proc_builtin_list(&n);
  char want[256] = "";
  for (size_t i = 0; i < n; i++) {
    if (i)
      strcat(want, ", ");
    strcat(want, b[i].name);
  }
  cr_assert_str_eq(PROC_BUILTIN_NAMES, want);
}

Test(proc_builtin, handler_option_quotes_the_table) {
  size_t n;
  const proc_builtin *b = proc_builtin_list(&n);
  char err[256];
  size_t count = 0;
  wsg_option *rows = wsg_config_rows(proc_config_spec(), &count, err, sizeof(err));
  cr_assert_not_null(rows, "%s", err);
  const wsg_option *opt = NULL;
  for (size_t i = 0; i < count; i++)
    if (strcmp(rows[i].name, "handler") == 0)
      opt = &rows[i];
  cr_assert_not_null(opt);
  cr_assert(strstr(opt->help, "(" PROC_BUILTIN_NAMES ")"), "--handler's help: %s", opt->help);
  cr_assert_str_eq(opt->def, b[0].name, "the table's first row is the default");
  free(rows);
}

Test(proc_builtin, unknown_name_error_lists_the_builtins) {
  proc_handler *h = NULL;
  char err[512];
  cr_assert_eq(proc_handler_open(&h, "nope", NULL, err, sizeof(err)), -1);
  cr_assert_null(h);
  cr_assert(strstr(err, "(built-ins: " PROC_BUILTIN_NAMES ")"), "%s", err);
}

/* docs/HANDLERS.md's table of --handler values: one row "| `name`... | built in: help..." per
 * built-in, in the table's order, and no row saying "built in" that the table lacks. */
Test(proc_builtin, handlers_doc_lists_every_builtin) {
  size_t n;
  const proc_builtin *b = proc_builtin_list(&n);
  FILE *f = fopen(WSG_SOURCE_ROOT "/docs/HANDLERS.md", "r");
  cr_assert_not_null(f);
  char line[1024];
  size_t next = 0;
  while (fgets(line, sizeof(line), f)) {
    if (strncmp(line, "| `", 3) != 0 || !strstr(line, "| built in: "))
      continue;
    cr_assert_lt(next, n, "docs/HANDLERS.md lists a built-in the table lacks: %s", line);
    char head[128];
    snprintf(head, sizeof(head), "| `%s`", b[next].name);
    char cell[512];
    snprintf(cell, sizeof(cell), "| built in: %s", b[next].help);
    cr_assert(strncmp(line, head, strlen(head)) == 0 && strstr(line, cell),
              "docs/HANDLERS.md row %zu should start with \"%s\" and contain \"%s\": %s", next + 1,
              head, cell, line);
    next++;
  }
  fclose(f);
  cr_assert_eq(next, n, "docs/HANDLERS.md lists %zu of the %zu built-ins", next, n);
}
