/*
 * wsg_config_rows: a spec's effective rows (its own, then each embedded group's at its offset,
 * with the embedding's overrides) and how a row's values are described.
 *
 * The combined table is built anew by each public wsg_config call rather than cached: specs are
 * static and small (under a hundred rows), and a cache would need an owner and a lock.
 */
#include "wsg_config_rows.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Formats a byte count the way a user would write it: the largest exact suffix. */
static void format_size(uint64_t v, char *buf, size_t len) {
  static const char suffix[] = "kmgt";
  int i = -1;
  while (v != 0 && v % 1024 == 0 && i < 3) {
    v /= 1024;
    i++;
  }
  if (i < 0)
    snprintf(buf, len, "%" PRIu64, v);
  else
    snprintf(buf, len, "%" PRIu64 "%c", v, suffix[i]);
}

static void format_duration(uint64_t ms, char *buf, size_t len) {
  const uint64_t hour = UINT64_C(3600000), minute = UINT64_C(60000);
  if (ms != 0 && ms % hour == 0)
    snprintf(buf, len, "%" PRIu64 "h", ms / hour);
  else if (ms != 0 && ms % minute == 0)
    snprintf(buf, len, "%" PRIu64 "m", ms / minute);
  else if (ms != 0 && ms % 1000 == 0)
    snprintf(buf, len, "%" PRIu64 "s", ms / 1000);
  else
    snprintf(buf, len, "%" PRIu64 "ms", ms);
}

/* ---------------------------------------------------------------------------------------------
 * Table helpers */

/* min == max == 0 in a row means "no bounds" (the natural zero of a designated initializer). */
bool wsg_opt_has_bounds(const wsg_option *o) {
  return !(o->min == 0 && o->max == 0);
}

uint64_t wsg_opt_umin(const wsg_option *o) {
  return wsg_opt_has_bounds(o) && o->min > 0 ? (uint64_t)o->min : 0;
}

uint64_t wsg_opt_umax(const wsg_option *o) {
  if (!wsg_opt_has_bounds(o) || o->max < 0)
    return wsg_opt_has_bounds(o) ? 0 : UINT64_MAX;
  return (uint64_t)o->max;
}

void wsg_opt_format_amount(const wsg_option *o, uint64_t v, char *buf, size_t len) {
  if (o->type == WSG_OPT_SIZE)
    format_size(v, buf, len);
  else
    format_duration(v, buf, len);
}

/* The valid values of an option in words: "1..65535", "1k..16m", "json|text". */
void wsg_opt_describe_range(const wsg_option *o, char *buf, size_t len) {
  buf[0] = '\0';
  switch (o->type) {
  case WSG_OPT_INT:
    if (wsg_opt_has_bounds(o))
      snprintf(buf, len, "%" PRId64 "..%" PRId64, o->min, o->max);
    break;
  case WSG_OPT_SIZE:
  case WSG_OPT_DURATION:
    if (wsg_opt_has_bounds(o)) {
      char a[32], b[32];
      wsg_opt_format_amount(o, wsg_opt_umin(o), a, sizeof a);
      wsg_opt_format_amount(o, wsg_opt_umax(o), b, sizeof b);
      snprintf(buf, len, "%s..%s", a, b);
    }
    break;
  case WSG_OPT_ENUM:
    snprintf(buf, len, "%s", o->choices ? o->choices : "");
    break;
  case WSG_OPT_BOOL:
    snprintf(buf, len, "true|false");
    break;
  case WSG_OPT_STRING:
  case WSG_OPT_KVLIST:
    break;
  }
}

const char *wsg_opt_type_name(wsg_opt_type t) {
  switch (t) {
  case WSG_OPT_STRING:
    return "string";
  case WSG_OPT_INT:
    return "integer";
  case WSG_OPT_BOOL:
    return "boolean";
  case WSG_OPT_SIZE:
    return "size";
  case WSG_OPT_DURATION:
    return "duration";
  case WSG_OPT_KVLIST:
    return "key=value list";
  case WSG_OPT_ENUM:
    return "choice";
  }
  return "?";
}

/* The row of `group` an override names, or NULL. */
static const wsg_option *group_row(const wsg_option_group *group, const char *name) {
  for (size_t i = 0; i < group->count; i++)
    if (strcmp(group->options[i].name, name) == 0)
      return &group->options[i];
  return NULL;
}

/* Two rows one parser could not tell apart: same long flag, short flag or variable. */
static int check_unique(const wsg_config_spec *spec, const wsg_option *rows, size_t n, char *err,
                        size_t errlen) {
  for (size_t i = 0; i < n; i++) {
    for (size_t j = 0; j < i; j++) {
      const char *what = NULL;
      if (strcmp(rows[i].name, rows[j].name) == 0)
        what = "long flag";
      else if (rows[i].short_name && rows[i].short_name == rows[j].short_name)
        what = "short flag";
      else if (rows[i].env && rows[j].env && strcmp(rows[i].env, rows[j].env) == 0)
        what = "environment variable";
      if (what) {
        snprintf(err, errlen, "option table of %s: --%s and --%s share a %s", spec->program,
                 rows[j].name, rows[i].name, what);
        return -1;
      }
    }
  }
  return 0;
}

/* Applies the section's override of the group row `name` to `row`, if it has one. */
static void apply_override(const wsg_config_section *sec, const char *name, wsg_option *row) {
  for (size_t k = 0; k < sec->noverrides; k++) {
    const wsg_option_override *ov = &sec->overrides[k];
    if (strcmp(ov->name, name) != 0)
      continue;
    if (ov->def)
      row->def = ov->def;
    if (ov->flag)
      row->name = ov->flag;
    row->flags |= ov->add_flags;
  }
}

wsg_option *wsg_config_rows(const wsg_config_spec *spec, size_t *count, char *err, size_t errlen) {
  size_t n = spec->options ? spec->count : 0;
  for (size_t s = 0; s < spec->nsections; s++)
    n += spec->sections[s].group->count;
  wsg_option *rows = calloc(n ? n : 1, sizeof *rows);
  if (!rows) {
    snprintf(err, errlen, "out of memory while reading the option table");
    return NULL;
  }
  size_t at = 0;
  for (size_t i = 0; spec->options && i < spec->count; i++)
    rows[at++] = spec->options[i];
  for (size_t s = 0; s < spec->nsections; s++) {
    const wsg_config_section *sec = &spec->sections[s];
    for (size_t k = 0; k < sec->noverrides; k++) {
      if (!group_row(sec->group, sec->overrides[k].name)) {
        snprintf(err, errlen, "option table of %s: the override of --%s names no row of group %s",
                 spec->program, sec->overrides[k].name, sec->group->name);
        free(rows);
        return NULL;
      }
    }
    for (size_t i = 0; i < sec->group->count; i++) {
      wsg_option *row = &rows[at++];
      *row = sec->group->options[i];
      row->offset += sec->offset;
      apply_override(sec, sec->group->options[i].name, row);
    }
  }
  if (check_unique(spec, rows, n, err, errlen) != 0) {
    free(rows);
    return NULL;
  }
  *count = n;
  return rows;
}
