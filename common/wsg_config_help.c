/*
 * wsg_config_help: --help and --help-markdown (docs/CONFIG-*.md) from a spec's combined rows.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wsg_config_rows.h"

/* Width of --help output and the column where descriptions start at most. */
#define HELP_WIDTH        100
#define HELP_DESC_COL_MAX 34

/* The combined rows, or NULL after writing the table's own error to `out` (a programming
 * error the unit tests catch: wsg_config_rows() says which). */
static wsg_option *rows_or_say(const wsg_config_spec *spec, size_t *n, FILE *out) {
  char err[256];
  wsg_option *rows = wsg_config_rows(spec, n, err, sizeof err);
  if (!rows)
    fprintf(out, "%s\n", err);
  return rows;
}

/* Non-breaking space in help text: keeps "[range: 1..65535]" on one line. */
#define NBSP '\x1f'

/* Writes `text` word-wrapped: the first line continues at column `col`, later ones start at
 * `indent`. Words longer than a line are written whole; NBSP is written as a space. */
static void wrap(FILE *out, const char *text, size_t indent, size_t col) {
  const char *p = text;
  bool first_word = true;
  while (*p) {
    while (*p == ' ')
      p++;
    size_t wl = strcspn(p, " ");
    if (wl == 0)
      break;
    if (!first_word && col + 1 + wl > HELP_WIDTH) {
      fprintf(out, "\n%*s", (int)indent, "");
      col = indent;
    } else if (!first_word) {
      fputc(' ', out);
      col++;
    }
    for (size_t k = 0; k < wl; k++)
      fputc(p[k] == NBSP ? ' ' : p[k], out);
    col += wl;
    p += wl;
    first_word = false;
  }
  fputc('\n', out);
}

static const char *metavar(const wsg_option *o) {
  switch (o->type) {
  case WSG_OPT_STRING:
    return "TEXT";
  case WSG_OPT_INT:
    return "N";
  case WSG_OPT_BOOL:
    return "";
  case WSG_OPT_SIZE:
    return "SIZE";
  case WSG_OPT_DURATION:
    return "DURATION";
  case WSG_OPT_KVLIST:
    return "KEY=VALUE";
  case WSG_OPT_ENUM:
    return "WORD";
  }
  return "";
}

static void left_column(const wsg_option *o, char *buf, size_t len) {
  char sh[8] = "    ";
  if (o->short_name)
    snprintf(sh, sizeof sh, "-%c, ", o->short_name);
  if (o->type == WSG_OPT_BOOL)
    snprintf(buf, len, "  %s--[no-]%s", sh, o->name);
  else
    snprintf(buf, len, "  %s--%s %s", sh, o->name, metavar(o));
}

static const struct {
  const char *left;
  const char *help;
  bool metrics; /* only for a spec with help_metrics */
} builtin_rows[] = {
    {"  -h, --help", "Print this help and exit.", false},
    {"      --version", "Print the program name and version and exit.", false},
    {"      --help-markdown", "Print the options as a Markdown table (docs/CONFIG-*.md) and exit.",
     false},
    {"      --help-metrics", "Print the metrics as Markdown (docs/METRICS-*.md) and exit.", true},
    {"      --print-config", "Print the effective configuration (secrets redacted) and exit.",
     false},
};

void wsg_config_print_help(const wsg_config_spec *spec, FILE *out) {
  size_t desc_col = 0, count = 0;
  char left[160];
  wsg_option *rows = rows_or_say(spec, &count, out);
  if (!rows)
    return;
  for (size_t i = 0; i < count; i++) {
    left_column(&rows[i], left, sizeof left);
    if (strlen(left) > desc_col)
      desc_col = strlen(left);
  }
  desc_col += 2;
  if (desc_col > HELP_DESC_COL_MAX)
    desc_col = HELP_DESC_COL_MAX;

  fprintf(out, "Usage: %s [OPTIONS]\n\n", spec->program);
  if (spec->summary) {
    wrap(out, spec->summary, 0, 0);
    fputc('\n', out);
  }
  wrap(out,
       "Each option can be given as a flag or by its environment variable; a flag wins over the "
       "environment, which wins over the default. Sizes are bytes or take a suffix k, m, g "
       "(1024-based); durations are milliseconds or take a suffix ms, s, m, h. Booleans accept "
       "true|false, yes|no, on|off, 1|0. Key=value lists are repeated flags, or k=v;k=v in the "
       "environment, merged per key.",
       0, 0);
  fprintf(out, "\nOptions:\n");
  for (size_t i = 0; i < count; i++) {
    const wsg_option *o = &rows[i];
    char range[256], meta[512];
    size_t used = 0;
    left_column(o, left, sizeof left);
    size_t l = strlen(left);
    fputs(left, out);
    if (l + 2 > desc_col)
      fprintf(out, "\n%*s", (int)desc_col, "");
    else
      fprintf(out, "%*s", (int)(desc_col - l), "");
    wrap(out, o->help ? o->help : "", desc_col, desc_col);

    wsg_opt_describe_range(o, range, sizeof range);
    meta[0] = '\0';
    if (o->env)
      used += (size_t)snprintf(meta + used, sizeof meta - used, "[env:\x1f%s] ", o->env);
    if (o->def && o->def[0] && used < sizeof meta)
      used += (size_t)snprintf(meta + used, sizeof meta - used, "[default:\x1f%s] ", o->def);
    if (range[0] && o->type != WSG_OPT_BOOL && used < sizeof meta)
      used += (size_t)snprintf(meta + used, sizeof meta - used, "[%s:\x1f%s] ",
                               o->type == WSG_OPT_ENUM ? "choices" : "range", range);
    if ((o->flags & WSG_OPTF_REQUIRED) && used < sizeof meta)
      used += (size_t)snprintf(meta + used, sizeof meta - used, "[required] ");
    if ((o->flags & WSG_OPTF_SECRET) && used < sizeof meta)
      snprintf(meta + used, sizeof meta - used, "[secret] ");
    if (meta[0]) {
      fprintf(out, "%*s", (int)desc_col, "");
      wrap(out, meta, desc_col, desc_col);
    }
  }
  fputc('\n', out);
  for (size_t i = 0; i < sizeof builtin_rows / sizeof builtin_rows[0]; i++) {
    if (builtin_rows[i].metrics && !spec->help_metrics)
      continue;
    size_t l = strlen(builtin_rows[i].left);
    fputs(builtin_rows[i].left, out);
    if (l + 2 > desc_col)
      fprintf(out, "\n%*s", (int)desc_col, "");
    else
      fprintf(out, "%*s", (int)(desc_col - l), "");
    wrap(out, builtin_rows[i].help, desc_col, desc_col);
  }
  free(rows);
}

/* A Markdown table cell: '|' escaped, newlines flattened. */
static void md_cell(FILE *out, const char *s, bool code) {
  fputc(' ', out);
  if (!s || !s[0]) {
    fputc(' ', out);
    fputc('|', out);
    return;
  }
  if (code)
    fputc('`', out);
  for (const char *p = s; *p; p++) {
    if (*p == '|')
      fputs("\\|", out);
    else if (*p == '\n' || *p == '\r')
      fputc(' ', out);
    else
      fputc(*p, out);
  }
  if (code)
    fputc('`', out);
  fputs(" |", out);
}

void wsg_config_print_markdown(const wsg_config_spec *spec, FILE *out) {
  size_t count = 0;
  wsg_option *rows = rows_or_say(spec, &count, out);
  if (!rows)
    return;
  fprintf(out, "# %s configuration\n\n", spec->program);
  fprintf(out,
          "<!-- Generated by `%s --help-markdown`; edit the option table in the source, not "
          "this file. -->\n\n",
          spec->program);
  if (spec->summary)
    fprintf(out, "%s\n\n", spec->summary);
  fprintf(out,
          "Each option can be given as a flag or by its environment variable; a flag wins over "
          "the environment, which wins over the default. Sizes are bytes or take a suffix `k`, "
          "`m`, `g` (1024-based); durations are milliseconds or take a suffix `ms`, `s`, `m`, "
          "`h`. Booleans accept `true|false`, `yes|no`, `on|off`, `1|0`; `--no-NAME` sets false. "
          "Key=value lists are repeated flags (`-X k=v`), or `k=v;k=v` in the environment, "
          "merged per key.\n\n");
  fprintf(out, "| Flag | Environment | Type | Default | Range | Description |\n");
  fprintf(out, "|---|---|---|---|---|---|\n");
  for (size_t i = 0; i < count; i++) {
    const wsg_option *o = &rows[i];
    char flag[160], range[256], help[1024];
    if (o->short_name)
      snprintf(flag, sizeof flag, "-%c, --%s", o->short_name, o->name);
    else
      snprintf(flag, sizeof flag, "--%s", o->name);
    wsg_opt_describe_range(o, range, sizeof range);
    snprintf(help, sizeof help, "%s%s%s", o->help ? o->help : "",
             (o->flags & WSG_OPTF_REQUIRED) ? " **Required.**" : "",
             (o->flags & WSG_OPTF_SECRET) ? " Secret: redacted in logs." : "");
    fputc('|', out);
    md_cell(out, flag, true);
    md_cell(out, o->env, true);
    md_cell(out, wsg_opt_type_name(o->type), false);
    md_cell(out, o->def, o->def && o->def[0]);
    md_cell(out, o->type == WSG_OPT_BOOL ? NULL : range, false);
    md_cell(out, help, false);
    fputc('\n', out);
  }
  free(rows);
}
