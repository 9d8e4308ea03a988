/* Unit tests of wsg_err_set: it fills, truncates, tolerates no buffer, and always returns -1. */
#include <criterion/criterion.h>

#include <string.h>

#include "wsg_err.h"

Test(wsg_err, fills_the_buffer_and_returns_minus_one) {
  char err[64] = "old";
  cr_assert_eq(wsg_err_set(err, sizeof err, "redis: %s (%d)", "down", 7), -1);
  cr_assert_str_eq(err, "redis: down (7)");
}

Test(wsg_err, truncates_to_the_buffer) {
  char err[8];
  memset(err, 'x', sizeof err);
  cr_assert_eq(wsg_err_set(err, sizeof err, "%s", "0123456789"), -1);
  cr_assert_str_eq(err, "0123456");
}

Test(wsg_err, no_buffer_is_not_an_error) {
  char err[4] = "abc";
  cr_assert_eq(wsg_err_set(NULL, 16, "ignored %d", 1), -1);
  cr_assert_eq(wsg_err_set(err, 0, "ignored %d", 2), -1);
  cr_assert_str_eq(err, "abc", "errlen 0 must leave the buffer alone");
}
