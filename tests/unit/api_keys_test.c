/* Unit tests of api_keys: the key file's syntax, matching, rotation through the keyring (reload
 * on change, a bad file keeps the old keys). */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api_keys.h"

static api_keys *parse_ok(const char *text) {
  api_keys *k = NULL;
  char err[256] = "";
  cr_assert_eq(api_keys_parse(&k, text, strlen(text), err, sizeof err), 0, "%s", err);
  return k;
}

static void parse_bad(const char *text, const char *want) {
  api_keys *k = NULL;
  char err[256] = "";
  cr_assert_eq(api_keys_parse(&k, text, strlen(text), err, sizeof err), -1, "%s", text);
  cr_assert_null(k);
  cr_assert(strstr(err, want), "error \"%s\" lacks \"%s\"", err, want);
}

Test(api_keys, parse_and_match) {
  api_keys *k = parse_ok("# rotation: old and new\n"
                         "  orders   0123456789abcdef-old \r\n"
                         "\n"
                         "orders-2 0123456789abcdef-new\n"
                         "match\t!#$%&'()*+,-./0123456789:;<=>?@\n");
  cr_assert_eq(api_keys_count(k), 3);
  cr_assert_str_eq(api_keys_match(k, "0123456789abcdef-old", 20), "orders");
  cr_assert_str_eq(api_keys_match(k, "0123456789abcdef-new", 20), "orders-2");
  cr_assert_null(api_keys_match(k, "0123456789abcdef-ol", 19), "a prefix is not a key");
  cr_assert_null(api_keys_match(k, "0123456789abcdef-oldx", 21));
  cr_assert_null(api_keys_match(k, "", 0));
  api_keys_destroy(k);
  api_keys_destroy(NULL);
}

Test(api_keys, errors_say_which_line) {
  parse_bad("", "no key");
  parse_bad("# only comments\n", "no key");
  parse_bad("a short\n", "line 1: the secret of key a has 5 bytes");
  parse_bad("ok 0123456789abcdef\nnosecret\n", "line 2: expected");
  parse_bad("bad/name 0123456789abcdef\n", "line 1: expected");
  parse_bad("a 0123456789abcdef\na 0123456789abcdeg\n", "line 2: key a repeats");
  parse_bad("a 0123456789abcdef\nb 0123456789abcdef\n", "line 2: key b repeats the name or the "
                                                        "secret of key a");
  parse_bad("a 0123456789abc def\n", "line 1: the secret of key a has a space");
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f);
  fputs(text, f);
  fclose(f);
}

Test(api_keys, keyring_rotation) {
  char path[] = "/tmp/api_keys_test_XXXXXX";
  int fd = mkstemp(path);
  cr_assert_geq(fd, 0);
  close(fd);
  write_file(path, "old 0123456789abcdef-old\n");
  api_keyring *r = NULL;
  char err[256] = "", name[80];
  cr_assert_eq(api_keyring_create(&r, path, err, sizeof err), 0, "%s", err);
  cr_assert(api_keyring_auth(r, "Bearer 0123456789abcdef-old", name, sizeof name));
  cr_assert_str_eq(name, "old");
  cr_assert(api_keyring_auth(r, "bearer   0123456789abcdef-old ", name, sizeof name));
  cr_assert_not(api_keyring_auth(r, NULL, name, sizeof name));
  cr_assert_not(api_keyring_auth(r, "Basic 0123456789abcdef-old", name, sizeof name));
  cr_assert_not(api_keyring_auth(r, "Bearer ", name, sizeof name));
  cr_assert_eq(api_keyring_reload(r, false, err, sizeof err), 0, "unchanged: nothing to do");

  /* rotate: both keys valid, then only the new one */
  write_file(path, "old 0123456789abcdef-old\nnew 0123456789abcdef-new-longer\n");
  cr_assert_eq(api_keyring_reload(r, false, err, sizeof err), 1, "%s", err);
  cr_assert(api_keyring_auth(r, "Bearer 0123456789abcdef-new-longer", name, sizeof name));
  cr_assert_str_eq(name, "new");
  write_file(path, "new 0123456789abcdef-new-longer\n");
  cr_assert_eq(api_keyring_reload(r, true, err, sizeof err), 1, "%s", err);
  cr_assert_not(api_keyring_auth(r, "Bearer 0123456789abcdef-old", name, sizeof name));

  /* a broken file keeps the keys in use */
  write_file(path, "broken\n");
  cr_assert_eq(api_keyring_reload(r, true, err, sizeof err), -1);
  cr_assert(strstr(err, "line 1"), "%s", err);
  cr_assert(api_keyring_auth(r, "Bearer 0123456789abcdef-new-longer", name, sizeof name));
  cr_assert_eq(api_keyring_count(r), 1);
  unlink(path);
  cr_assert_eq(api_keyring_reload(r, true, err, sizeof err), -1);
  cr_assert(strstr(err, "cannot open the keys file"), "%s", err);
  api_keyring_destroy(r);
  api_keyring_destroy(NULL);
}
