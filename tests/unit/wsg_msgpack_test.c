/*
 * Unit tests of wsg_msgpack_validate() and wsg_utf8_valid(): every MessagePack format accepted,
 * every way to be malformed rejected, the depth cap, the declared-count bombs, and the promise in
 * the header: after validate says OK, msgpack-c's unpacker is safe on the same bytes. Also shows
 * why that promise matters: msgpack-c's unpacker, handed the 5-byte bomb directly, tries to
 * allocate ~100 GiB.
 *
 * Threads: Criterion's test workers only.
 */
#include <criterion/criterion.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "wsg_envelope.h"

static size_t unhex(const char *hex, uint8_t *out, size_t cap) {
  size_t n = 0;
  for (const char *p = hex; *p;) {
    if (*p == ' ') {
      p++;
      continue;
    }
    unsigned byte;
    cr_assert_eq(sscanf(p, "%2x", &byte), 1, "bad hex \"%s\"", hex);
    cr_assert_lt(n, cap);
    out[n++] = (uint8_t)byte;
    p += 2;
  }
  return n;
}

/* Validates the hex input from an exact-size heap block (ASan sees any over-read). */
static int validate_hex(const char *hex, unsigned depth) {
  uint8_t tmp[1024];
  size_t n = unhex(hex, tmp, sizeof tmp);
  uint8_t *buf = malloc(n ? n : 1);
  cr_assert_not_null(buf);
  memcpy(buf, tmp, n);
  int rc = wsg_msgpack_validate(buf, n, depth);
  free(buf);
  return rc;
}

/* Every format of the MessagePack specification, well formed. */
static const char *const valid[] = {
    "00",
    "7f",
    "e0",
    "ff", /* fixints */
    "c0",
    "c2",
    "c3", /* nil, false, true */
    "cc ff",
    "cd ffff",
    "ce ffffffff",
    "cf ffffffffffffffff", /* uint 8..64 */
    "d0 80",
    "d1 8000",
    "d2 80000000",
    "d3 8000000000000000", /* int 8..64 */
    "ca 3f800000",
    "cb 3ff0000000000000", /* float 32, 64 */
    "a0",
    "a3 616263",
    "bf 00000000000000000000000000000000000000000000000000000000000000", /* fixstr of 31 */
    "d9 00",
    "d9 03 616263",
    "da 0003 616263",
    "db 00000003 616263", /* str */
    "c4 00",
    "c4 02 0001",
    "c5 0002 0001",
    "c6 00000002 0001", /* bin */
    "d4 01 00",
    "d5 01 0000",
    "d6 ff 00000000",
    "d7 ff 0000000000000000",
    "d8 01 00000000000000000000000000000000", /* fixext */
    "c7 00 05",
    "c7 02 05 abcd",
    "c8 0002 05 abcd",
    "c9 00000002 05 abcd", /* ext */
    "90",
    "93 01 02 03",
    "dc 0002 01 02",
    "dd 00000002 01 02", /* array */
    "80",
    "81 a1 61 01",
    "de 0001 01 02",
    "df 00000001 c0 c0",          /* map */
    "82 91 90 80 81 80 91 c0 c0", /* nesting, non-str keys */
    "92 81 a1 6b 93 c3 c2 c0 d4 01 00",
};

Test(validate, accepts_every_format) {
  for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++)
    cr_expect_eq(validate_hex(valid[i], WSG_MSGPACK_MAX_DEPTH), WSG_ENV_OK, "\"%s\"", valid[i]);
}

Test(validate, every_truncation_of_every_format) {
  for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
    uint8_t buf[1024];
    size_t n = unhex(valid[i], buf, sizeof buf);
    for (size_t len = 0; len < n; len++) {
      uint8_t *prefix = malloc(len ? len : 1);
      cr_assert_not_null(prefix);
      memcpy(prefix, buf, len);
      cr_expect_eq(wsg_msgpack_validate(prefix, len, WSG_MSGPACK_MAX_DEPTH), WSG_ENV_TRUNCATED,
                   "\"%s\" cut at %zu", valid[i], len);
      free(prefix);
    }
  }
}

Test(validate, rejects) {
  static const struct {
    const char *hex;
    int err;
  } cases[] = {
      {"", WSG_ENV_TRUNCATED},
      {"c1", WSG_ENV_INVALID},
      {"91 c1", WSG_ENV_INVALID},
      {"81 c1 01", WSG_ENV_INVALID},
      {"01 02", WSG_ENV_TRAILING},
      {"90 90", WSG_ENV_TRAILING},
      /* Declared counts and lengths that the input cannot back, every width. */
      {"dd ffffffff", WSG_ENV_TRUNCATED},
      {"dc ffff", WSG_ENV_TRUNCATED},
      {"df ffffffff", WSG_ENV_TRUNCATED},
      {"de ffff", WSG_ENV_TRUNCATED},
      {"9f", WSG_ENV_TRUNCATED},
      {"8f", WSG_ENV_TRUNCATED},
      {"db ffffffff", WSG_ENV_TRUNCATED},
      {"da ffff", WSG_ENV_TRUNCATED},
      {"d9 ff", WSG_ENV_TRUNCATED},
      {"bf", WSG_ENV_TRUNCATED},
      {"c6 ffffffff", WSG_ENV_TRUNCATED},
      {"c5 ffff", WSG_ENV_TRUNCATED},
      {"c4 ff", WSG_ENV_TRUNCATED},
      {"c9 ffffffff 01", WSG_ENV_TRUNCATED},
      {"c8 ffff 01", WSG_ENV_TRUNCATED},
      {"c7 ff 01", WSG_ENV_TRUNCATED},
      {"d8 01 00", WSG_ENV_TRUNCATED},
      /* Each inner count fits what is left, but not together with what the outer owes. */
      {"92 dc 0003 01 01 01", WSG_ENV_TRUNCATED},
      {"93 93 93 01 01 01", WSG_ENV_TRUNCATED},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    cr_expect_eq(validate_hex(cases[i].hex, WSG_MSGPACK_MAX_DEPTH), cases[i].err, "\"%s\": got %s",
                 cases[i].hex, wsg_env_err_name(validate_hex(cases[i].hex, WSG_MSGPACK_MAX_DEPTH)));
  cr_expect_eq(wsg_msgpack_validate(NULL, 0, 1), WSG_ENV_TRUNCATED);
  cr_expect_eq(wsg_msgpack_validate(NULL, 3, 1), WSG_ENV_INVALID);
}

/* `depth` nested arrays around a 1: depth 0 is the bare scalar. */
static size_t nested(uint8_t *out, unsigned depth, bool maps) {
  size_t n = 0;
  for (unsigned i = 0; i < depth; i++) {
    if (maps) {
      out[n++] = 0x81;
      out[n++] = 0x01; /* key */
    } else {
      out[n++] = 0x91;
    }
  }
  out[n++] = 0x01;
  return n;
}

Test(validate, depth) {
  uint8_t buf[512];
  for (int maps = 0; maps <= 1; maps++) {
    for (unsigned d = 0; d <= 10; d++) {
      size_t n = nested(buf, d, maps);
      cr_expect_eq(wsg_msgpack_validate(buf, n, d), WSG_ENV_OK, "depth %u", d);
      if (d > 0)
        cr_expect_eq(wsg_msgpack_validate(buf, n, d - 1), WSG_ENV_TOO_DEEP, "depth %u", d);
    }
  }
  /* An empty container is one level too. */
  cr_expect_eq(wsg_msgpack_validate((const uint8_t *)"\x90", 1, 0), WSG_ENV_TOO_DEEP);
  cr_expect_eq(wsg_msgpack_validate((const uint8_t *)"\x91\x90", 2, 1), WSG_ENV_TOO_DEEP);
  /* Depth counts nesting, not containers side by side. */
  cr_expect_eq(wsg_msgpack_validate((const uint8_t *)"\x93\x91\x01\x91\x01\x90", 6, 2), WSG_ENV_OK);
  /* The hard cap applies whatever the caller asks for. */
  size_t n = nested(buf, WSG_MSGPACK_MAX_DEPTH, false);
  cr_expect_eq(wsg_msgpack_validate(buf, n, 1000), WSG_ENV_OK);
  n = nested(buf, WSG_MSGPACK_MAX_DEPTH + 1, false);
  cr_expect_eq(wsg_msgpack_validate(buf, n, 1000), WSG_ENV_TOO_DEEP);
  cr_expect_eq(wsg_msgpack_validate(buf, n, UINT32_MAX), WSG_ENV_TOO_DEEP);
}

/* Big but honest inputs: counts that the bytes do back are fine, whatever their width. */
Test(validate, large_honest_containers) {
  size_t count = 100000;
  uint8_t *buf = malloc(5 + 2 * count);
  cr_assert_not_null(buf);
  buf[0] = 0xdf; /* map32 */
  buf[1] = (uint8_t)(count >> 24);
  buf[2] = (uint8_t)(count >> 16);
  buf[3] = (uint8_t)(count >> 8);
  buf[4] = (uint8_t)count;
  memset(buf + 5, 0x01, 2 * count);
  cr_expect_eq(wsg_msgpack_validate(buf, 5 + 2 * count, 1), WSG_ENV_OK);
  cr_expect_eq(wsg_msgpack_validate(buf, 5 + 2 * count - 1, 1), WSG_ENV_TRUNCATED);
  free(buf);
}

/* ---- msgpack-c after validate -----------------------------------------------------------------
 */

/* Packs a document using every msgpack-c packer call the code base uses. */
static void pack_sample(msgpack_sbuffer *sb) {
  msgpack_packer pk;
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 5);
  msgpack_pack_str_with_body(&pk, "ints", 4);
  msgpack_pack_array(&pk, 4);
  msgpack_pack_int64(&pk, -129);
  msgpack_pack_uint64(&pk, UINT64_MAX);
  msgpack_pack_int8(&pk, 5);
  msgpack_pack_uint16(&pk, 300);
  msgpack_pack_str_with_body(&pk, "bin", 3);
  msgpack_pack_bin_with_body(&pk, "\x00\x01", 2);
  msgpack_pack_str_with_body(&pk, "f", 1);
  msgpack_pack_double(&pk, 1.5);
  msgpack_pack_str_with_body(&pk, "ext", 3);
  msgpack_pack_ext_with_body(&pk, "abcd", 4, 7);
  msgpack_pack_str_with_body(&pk, "deep", 4);
  for (int i = 0; i < 6; i++)
    msgpack_pack_array(&pk, 1);
  msgpack_pack_nil(&pk);
}

Test(unpack, msgpack_c_is_fine_on_validated_input) {
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  pack_sample(&sb);
  cr_assert_eq(wsg_msgpack_validate((const uint8_t *)sb.data, sb.size, 8), WSG_ENV_OK);

  msgpack_unpacked result;
  size_t off = 0;
  msgpack_unpacked_init(&result);
  cr_assert_eq(msgpack_unpack_next(&result, sb.data, sb.size, &off), MSGPACK_UNPACK_SUCCESS);
  cr_expect_eq(off, sb.size);
  msgpack_object o = result.data;
  cr_assert_eq(o.type, MSGPACK_OBJECT_MAP);
  cr_assert_eq(o.via.map.size, 5);
  msgpack_object ints = o.via.map.ptr[0].val;
  cr_assert_eq(ints.type, MSGPACK_OBJECT_ARRAY);
  cr_expect_eq(ints.via.array.ptr[0].via.i64, -129);
  cr_expect_eq(ints.via.array.ptr[1].via.u64, UINT64_MAX);
  cr_expect_eq(o.via.map.ptr[2].val.via.f64, 1.5);
  cr_expect_eq(o.via.map.ptr[3].val.via.ext.type, 7);
  msgpack_unpacked_destroy(&result);

  /* And on every well-formed sample above. */
  for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
    uint8_t buf[1024];
    size_t n = unhex(valid[i], buf, sizeof buf);
    cr_assert_eq(wsg_msgpack_validate(buf, n, WSG_MSGPACK_MAX_DEPTH), WSG_ENV_OK);
    msgpack_unpacked_init(&result);
    off = 0;
    cr_expect_eq(msgpack_unpack_next(&result, (const char *)buf, n, &off), MSGPACK_UNPACK_SUCCESS,
                 "\"%s\"", valid[i]);
    cr_expect_eq(off, n, "\"%s\"", valid[i]);
    msgpack_unpacked_destroy(&result);
  }
  msgpack_sbuffer_destroy(&sb);
}

/* The hard depth cap is msgpack-c's own: at the cap it unpacks, one deeper validate refuses
 * (msgpack-c would fail with a misleading NOMEM error). */
Test(unpack, depth_cap_matches_msgpack_c) {
  uint8_t buf[128];
  for (int maps = 0; maps <= 1; maps++) {
    size_t n = nested(buf, WSG_MSGPACK_MAX_DEPTH, maps);
    cr_assert_eq(wsg_msgpack_validate(buf, n, WSG_MSGPACK_MAX_DEPTH), WSG_ENV_OK);
    msgpack_unpacked result;
    size_t off = 0;
    msgpack_unpacked_init(&result);
    cr_expect_eq(msgpack_unpack_next(&result, (const char *)buf, n, &off), MSGPACK_UNPACK_SUCCESS);
    msgpack_unpacked_destroy(&result);

    n = nested(buf, WSG_MSGPACK_MAX_DEPTH + 1, maps);
    cr_expect_eq(wsg_msgpack_validate(buf, n, WSG_MSGPACK_MAX_DEPTH), WSG_ENV_TOO_DEEP);
    msgpack_unpacked_init(&result);
    off = 0;
    cr_expect_neq(msgpack_unpack_next(&result, (const char *)buf, n, &off), MSGPACK_UNPACK_SUCCESS,
                  "msgpack-c now accepts deeper input: WSG_MSGPACK_MAX_DEPTH may grow");
    msgpack_unpacked_destroy(&result);
  }
}

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

/*
 * Why validate first: msgpack-c's unpacker sizes its array from the declared count before any
 * element arrives, so the 5-byte "array of 2^32-1" asks for ~100 GiB. Under an address-space
 * limit that request fails (MSGPACK_UNPACK_NOMEM_ERROR) where an honest parser would just say
 * "need more bytes"; wsg_msgpack_validate says TRUNCATED without allocating. (Skipped under ASan,
 * whose allocator aborts on such a request instead of returning NULL.)
 */
Test(unpack, msgpack_c_allocates_from_the_declared_count) {
  static const uint8_t bomb[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
  cr_expect_eq(wsg_msgpack_validate(bomb, sizeof bomb, WSG_MSGPACK_MAX_DEPTH), WSG_ENV_TRUNCATED);
#ifdef UNDER_ASAN
  cr_skip_test("ASan's allocator aborts on a 100 GiB request");
#else
  pid_t pid = fork();
  cr_assert_neq(pid, -1);
  if (pid == 0) {
    struct rlimit rl = {(rlim_t)1 << 32, (rlim_t)1 << 32}; /* 4 GiB of address space */
    if (setrlimit(RLIMIT_AS, &rl) != 0)
      _exit(100);
    msgpack_unpacked result;
    size_t off = 0;
    msgpack_unpacked_init(&result);
    msgpack_unpack_return r = msgpack_unpack_next(&result, (const char *)bomb, sizeof bomb, &off);
    _exit(r == MSGPACK_UNPACK_NOMEM_ERROR ? 0 : 10 + (int)r);
  }
  int status = 0;
  cr_assert_eq(waitpid(pid, &status, 0), pid);
  cr_assert(WIFEXITED(status));
  cr_expect_eq(WEXITSTATUS(status), 0,
               "msgpack-c no longer allocates from the declared count (status %d): "
               "update docs/ARCHITECTURE.md",
               WEXITSTATUS(status));
#endif
}

/* ---- UTF-8 ------------------------------------------------------------------------------------
 */

Test(utf8, boundaries) {
  static const struct {
    const char *hex;
    bool ok;
  } cases[] = {
      {"", true},
      {"00", true},
      {"7f", true},
      {"c2 80", true},       /* U+0080 */
      {"df bf", true},       /* U+07FF */
      {"e0 a0 80", true},    /* U+0800 */
      {"ed 9f bf", true},    /* U+D7FF */
      {"ee 80 80", true},    /* U+E000 */
      {"ef bf bf", true},    /* U+FFFF */
      {"f0 90 80 80", true}, /* U+10000 */
      {"f4 8f bf bf", true}, /* U+10FFFF */
      {"80", false},         /* lone continuation */
      {"bf", false},
      {"c0 80", false},       /* overlong NUL */
      {"c1 bf", false},       /* overlong */
      {"e0 80 80", false},    /* overlong */
      {"e0 9f bf", false},    /* overlong U+07FF */
      {"f0 80 80 80", false}, /* overlong */
      {"f0 8f bf bf", false}, /* overlong U+FFFF */
      {"ed a0 80", false},    /* U+D800 surrogate */
      {"ed bf bf", false},    /* U+DFFF surrogate */
      {"f4 90 80 80", false}, /* U+110000 */
      {"f5 80 80 80", false},
      {"ff", false},
      {"fe", false},
      {"c2", false},       /* cut */
      {"e2 82", false},    /* cut */
      {"f0 9f 8e", false}, /* cut */
      {"c2 41", false},    /* continuation missing */
      {"e2 28 a1", false},
      {"f0 9f 28 89", false},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    uint8_t buf[16];
    size_t n = unhex(cases[i].hex, buf, sizeof buf);
    cr_expect_eq(wsg_utf8_valid((const char *)buf, n), cases[i].ok, "\"%s\"", cases[i].hex);
    /* Same verdict wherever it sits in a longer ASCII text (the 8-byte fast path). */
    for (size_t at = 0; at < 17; at++) {
      char text[64];
      memset(text, 'a', sizeof text);
      memcpy(text + at, buf, n);
      cr_expect_eq(wsg_utf8_valid(text, at + n + 9), cases[i].ok, "\"%s\" at %zu", cases[i].hex,
                   at);
    }
  }
  cr_expect(wsg_utf8_valid(NULL, 0));
  cr_expect(!wsg_utf8_valid(NULL, 1));
}

/* A reference decoder, written from the Unicode definition rather than from byte ranges. */
static bool reference_valid(const uint8_t *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint32_t cp;
    size_t len;
    if (s[i] < 0x80) {
      i++;
      continue;
    } else if ((s[i] & 0xe0) == 0xc0) {
      len = 2;
      cp = s[i] & 0x1fu;
    } else if ((s[i] & 0xf0) == 0xe0) {
      len = 3;
      cp = s[i] & 0x0fu;
    } else if ((s[i] & 0xf8) == 0xf0) {
      len = 4;
      cp = s[i] & 0x07u;
    } else {
      return false;
    }
    if (n - i < len)
      return false;
    for (size_t k = 1; k < len; k++) {
      if ((s[i + k] & 0xc0) != 0x80)
        return false;
      cp = cp << 6 | (s[i + k] & 0x3fu);
    }
    static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += len;
  }
  return true;
}

/* Every string of 1, 2 and 3 bytes; 4-byte strings for every lead and second byte with the
 * later bytes at the edges of the continuation range. */
Test(utf8, exhaustive_against_a_reference) {
  static const uint8_t edges[] = {0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xff};
  uint8_t s[4];
  unsigned long mismatches = 0, checked = 0;
  for (size_t n = 1; n <= 3; n++) {
    for (uint32_t v = 0; v < (1u << (8 * n)); v++) {
      for (size_t k = 0; k < n; k++)
        s[k] = (uint8_t)(v >> (8 * k));
      mismatches += wsg_utf8_valid((const char *)s, n) != reference_valid(s, n);
      checked++;
    }
  }
  for (unsigned lead = 0xe0; lead <= 0xff; lead++)
    for (unsigned b1 = 0; b1 <= 0xff; b1++)
      for (size_t i = 0; i < sizeof edges; i++)
        for (size_t k = 0; k < sizeof edges; k++) {
          s[0] = (uint8_t)lead;
          s[1] = (uint8_t)b1;
          s[2] = edges[i];
          s[3] = edges[k];
          mismatches += wsg_utf8_valid((const char *)s, 4) != reference_valid(s, 4);
          checked++;
        }
  cr_expect_eq(mismatches, 0, "%lu of %lu strings judged differently", mismatches, checked);
}
