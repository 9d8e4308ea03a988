/*
 * wsg_config_rows: helpers shared by the wsg_config*.c files (not for other modules): what a row
 * accepts, in words, for error messages, --help and the Markdown reference.
 */
#ifndef WSG_CONFIG_ROWS_H
#define WSG_CONFIG_ROWS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wsg_config.h"

/* min == max == 0 in a row means "no bounds" (the natural zero of a designated initializer). */
bool wsg_opt_has_bounds(const wsg_option *o);
uint64_t wsg_opt_umin(const wsg_option *o);
uint64_t wsg_opt_umax(const wsg_option *o);
/* A SIZE or DURATION value the way a user would write it: "64k", "5s". */
void wsg_opt_format_amount(const wsg_option *o, uint64_t v, char *buf, size_t len);
/* The valid values of an option in words: "1..65535", "1k..16m", "json|text"; "" for none. */
void wsg_opt_describe_range(const wsg_option *o, char *buf, size_t len);
const char *wsg_opt_type_name(wsg_opt_type t);

#endif
