/*
 * Golden vectors, the C side: every tests/golden/vectors/<name>.msgpack decodes, renders exactly
 * as <name>.json and re-encodes to the same bytes; every truncation of every vector fails cleanly.
 * check_vectors.py does the same from Python with another MessagePack implementation.
 *
 * Threads: Criterion's test workers only.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wsg_envelope.h"
#include "wsg_envelope_json.h"

#ifndef WSG_GOLDEN_DIR
#error "WSG_GOLDEN_DIR must name the vectors directory"
#endif

/* Fewer than this many vectors means the directory is not the one we think. */
#define MIN_VECTORS 15
#define MAX_VECTORS 256

typedef struct {
  char name[128];
  uint8_t *bin;
  size_t bin_len;
  char *json;
  size_t json_len;
} vector;

static uint8_t *slurp(const char *name, const char *ext, size_t *len) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s.%s", WSG_GOLDEN_DIR, name, ext);
  FILE *f = fopen(path, "rb");
  cr_assert_not_null(f, "cannot open %s: %s", path, strerror(errno));
  uint8_t *data = NULL;
  size_t n = 0, alloc = 0;
  for (;;) {
    if (n == alloc) {
      alloc = alloc ? alloc * 2 : 4096;
      data = realloc(data, alloc + 1);
      cr_assert_not_null(data);
    }
    size_t got = fread(data + n, 1, alloc - n, f);
    if (got == 0)
      break;
    n += got;
  }
  cr_assert(!ferror(f), "cannot read %s", path);
  fclose(f);
  data[n] = '\0';
  *len = n;
  return data;
}

static int by_name(const void *a, const void *b) {
  return strcmp(((const vector *)a)->name, ((const vector *)b)->name);
}

/* Loads every vector, sorted by name so failures read the same on every run. */
static size_t load_vectors(vector *out) {
  DIR *dir = opendir(WSG_GOLDEN_DIR);
  cr_assert_not_null(dir, "cannot open %s: %s", WSG_GOLDEN_DIR, strerror(errno));
  size_t count = 0;
  struct dirent *de;
  while ((de = readdir(dir)) != NULL) {
    size_t len = strlen(de->d_name);
    const char *ext = ".msgpack";
    if (len <= strlen(ext) || strcmp(de->d_name + len - strlen(ext), ext) != 0)
      continue;
    cr_assert_lt(count, MAX_VECTORS);
    cr_assert_lt(len - strlen(ext), sizeof out[count].name);
    memcpy(out[count].name, de->d_name, len - strlen(ext));
    out[count].name[len - strlen(ext)] = '\0';
    count++;
  }
  closedir(dir);
  qsort(out, count, sizeof *out, by_name);
  for (size_t i = 0; i < count; i++) {
    out[i].bin = slurp(out[i].name, "msgpack", &out[i].bin_len);
    out[i].json = (char *)slurp(out[i].name, "json", &out[i].json_len);
  }
  cr_assert_geq(count, MIN_VECTORS, "only %zu vectors in %s", count, WSG_GOLDEN_DIR);
  return count;
}

static void free_vectors(vector *v, size_t count) {
  for (size_t i = 0; i < count; i++) {
    free(v[i].bin);
    free(v[i].json);
  }
}

static vector vectors[MAX_VECTORS];

Test(golden, decode_render_reencode) {
  size_t count = load_vectors(vectors);
  wsg_buf json, bin;
  wsg_buf_init(&json, 0);
  wsg_buf_init(&bin, 0);

  for (size_t i = 0; i < count; i++) {
    const vector *v = &vectors[i];
    wsg_envelope env;
    const char *field = NULL;
    int rc = wsg_envelope_decode(&env, v->bin, v->bin_len, &field);
    cr_assert_eq(rc, WSG_ENV_OK, "%s: decode: %s (field \"%s\")", v->name, wsg_env_err_name(rc),
                 field);

    cr_assert_eq(wsg_envelope_to_json(&env, &json), WSG_ENV_OK, "%s: render", v->name);
    /* The file is the rendering plus a newline, byte for byte. */
    cr_assert(v->json_len > 0 && v->json[v->json_len - 1] == '\n', "%s.json: no final newline",
              v->name);
    cr_assert(json.len == v->json_len - 1 && memcmp(json.data, v->json, json.len) == 0,
              "%s: rendering differs\n  got:  %s\n  file: %.*s", v->name, (char *)json.data,
              (int)v->json_len - 1, v->json);

    cr_assert_eq(wsg_envelope_encode(&env, &bin), WSG_ENV_OK, "%s: re-encode", v->name);
    cr_assert(bin.len == v->bin_len && memcmp(bin.data, v->bin, bin.len) == 0,
              "%s: re-encoded bytes differ (%zu vs %zu bytes)", v->name, bin.len, v->bin_len);
  }
  wsg_buf_finish(&json);
  wsg_buf_finish(&bin);
  free_vectors(vectors, count);
}

Test(golden, every_kind_is_pinned) {
  size_t count = load_vectors(vectors);
  unsigned seen = 0;
  for (size_t i = 0; i < count; i++) {
    wsg_envelope env;
    cr_assert_eq(wsg_envelope_decode(&env, vectors[i].bin, vectors[i].bin_len, NULL), WSG_ENV_OK);
    seen |= 1u << env.kind;
  }
  for (int k = WSG_ENV_KIND_FIRST; k <= WSG_ENV_KIND_LAST; k++)
    cr_assert(seen & (1u << k), "no golden vector of kind %s", wsg_env_kind_name(k));
  free_vectors(vectors, count);
}

/* Each prefix goes into a heap block of exactly its size, so a read one byte too far is an ASan
 * report, not a silent pass. */
Test(golden, every_truncation_fails_cleanly) {
  size_t count = load_vectors(vectors);
  size_t cases = 0;
  for (size_t i = 0; i < count; i++) {
    const vector *v = &vectors[i];
    for (size_t len = 0; len < v->bin_len; len++) {
      uint8_t *prefix = malloc(len ? len : 1);
      cr_assert_not_null(prefix);
      memcpy(prefix, v->bin, len);
      wsg_envelope env;
      const char *field = NULL;
      int rc = wsg_envelope_decode(&env, prefix, len, &field);
      cr_assert_neq(rc, WSG_ENV_OK, "%s: prefix of %zu/%zu bytes decoded", v->name, len,
                    v->bin_len);
      cr_assert_str_neq(wsg_env_err_name(rc), "UNKNOWN");
      cr_assert_not_null(field);
      cr_assert_eq(wsg_msgpack_validate(prefix, len, WSG_MSGPACK_MAX_DEPTH), WSG_ENV_TRUNCATED,
                   "%s: validate of a %zu-byte prefix", v->name, len);
      free(prefix);
      cases++;
    }
    /* One byte too many is trailing garbage, not a second envelope. */
    uint8_t *longer = malloc(v->bin_len + 1);
    cr_assert_not_null(longer);
    memcpy(longer, v->bin, v->bin_len);
    longer[v->bin_len] = 0xc0;
    wsg_envelope env;
    cr_assert_eq(wsg_envelope_decode(&env, longer, v->bin_len + 1, NULL), WSG_ENV_TRAILING, "%s",
                 v->name);
    free(longer);
  }
  cr_log_info("%zu truncated inputs rejected", cases);
  free_vectors(vectors, count);
}
