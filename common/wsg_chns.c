/*
 * wsg_chns: channel namespaces (see wsg_chns.h). A linear table: namespaces are few (at most
 * WSG_CHNS_MAX) and a lookup compares the bytes before the first ':' only.
 */
#include "wsg_chns.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHNS(field) offsetof(wsg_chns_options, field)
static const wsg_option chns_rows[] = {
    {"channel-namespace", 0, "WSGATE_CHANNEL_NAMESPACES", WSG_OPT_KVLIST, CHNS(rows), NULL, 0, 0,
     NULL, 0,
     "Options of a channel namespace (the part of a channel's name before the first `:`), "
     "repeatable, as name=key=value,key=value: history_size (publications kept per channel, "
     "0..100000, default 0), history_ttl (how long the history and the offset counter outlive "
     "the channel's last publication, 1s..30d, default 5m), presence, join_leave, "
     "client_presence (clients' presence op; needs presence), client_publish (true|false, "
     "default false), subscribe (claim: the token's channels claim decides, the default; handler: "
     "the processors' handler decides, on_subscribe). The name `default` sets the options of "
     "channels without a namespace or with one not listed; gateways and processors of one "
     "cluster must agree (environment: name=...;name=...)."},
};
const wsg_option_group wsg_chns_group = {"channels", chns_rows, WSG_COUNTOF(chns_rows)};

typedef struct {
  char name[WSG_CHNS_NAME_MAX + 1];
  size_t len;
  wsg_chns_opts o;
} chns_row;

struct wsg_chns {
  wsg_chns_opts def;
  size_t n;
  chns_row rows[];
};

static const wsg_chns_opts builtin_default = {
    .history_size = WSG_CHNS_DEFAULT_HISTORY,
    .history_ttl_ms = WSG_CHNS_DEFAULT_TTL_MS,
};

static int parse_bool(const char *v, bool *out) {
  if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0)
    *out = true;
  else if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
    *out = false;
  else
    return -1;
  return 0;
}

/* The boolean options, by name (NULL: not one). */
static bool *bool_field(wsg_chns_opts *o, const char *key) {
  static const struct {
    const char *name;
    size_t off;
  } rows[] = {
      {"presence", offsetof(wsg_chns_opts, presence)},
      {"join_leave", offsetof(wsg_chns_opts, join_leave)},
      {"client_presence", offsetof(wsg_chns_opts, client_presence)},
      {"client_publish", offsetof(wsg_chns_opts, client_publish)},
  };
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
    if (strcmp(key, rows[i].name) == 0)
      return (bool *)((char *)o + rows[i].off);
  return NULL;
}

/* One key=value of a row. */
static int parse_pair(const char *key, const char *v, wsg_chns_opts *o, char *err, size_t errlen) {
  uint64_t n;
  if (strcmp(key, "history_size") == 0) {
    char *end;
    unsigned long long x = strtoull(v, &end, 10);
    if (!*v || *end || x > WSG_CHNS_HISTORY_MAX) {
      snprintf(err, errlen, "history_size: %s is not a number of 0..%d", v, WSG_CHNS_HISTORY_MAX);
      return -1;
    }
    o->history_size = (uint32_t)x;
  } else if (strcmp(key, "history_ttl") == 0) {
    if (wsg_parse_duration_ms(v, &n) != 0 || n < 1000 || n > 30ULL * 86400 * 1000) {
      snprintf(err, errlen, "history_ttl: %s is not a duration of 1s..30d (e.g. 5m)", v);
      return -1;
    }
    o->history_ttl_ms = n;
  } else if (bool_field(o, key)) {
    bool *b = bool_field(o, key);
    if (parse_bool(v, b) != 0) {
      snprintf(err, errlen, "%s: %s is not true or false", key, v);
      return -1;
    }
  } else if (strcmp(key, "subscribe") == 0) {
    if (strcmp(v, "claim") != 0 && strcmp(v, "handler") != 0) {
      snprintf(err, errlen, "subscribe: %s is not claim or handler", v);
      return -1;
    }
    o->subscribe_handler = v[0] == 'h';
  } else {
    snprintf(err, errlen,
             "unknown option %s (history_size, history_ttl, presence, join_leave, "
             "client_presence, client_publish, subscribe)",
             key);
    return -1;
  }
  return 0;
}

int wsg_chns_parse_opts(const char *text, wsg_chns_opts *opts, char *err, size_t errlen) {
  char buf[512];
  if (strlen(text) >= sizeof buf) {
    snprintf(err, errlen, "longer than %zu bytes", sizeof buf - 1);
    return -1;
  }
  strcpy(buf, text);
  char *save = NULL;
  for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    char *eq = strchr(tok, '=');
    if (!eq) {
      snprintf(err, errlen, "%s: expected key=value", tok);
      return -1;
    }
    *eq = '\0';
    if (parse_pair(tok, eq + 1, opts, err, errlen) != 0)
      return -1;
  }
  if (opts->join_leave && !opts->presence) {
    snprintf(err, errlen, "join_leave=true needs presence=true");
    return -1;
  }
  if (opts->client_presence && !opts->presence) {
    snprintf(err, errlen, "client_presence=true needs presence=true");
    return -1;
  }
  return 0;
}

static bool name_ok(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > WSG_CHNS_NAME_MAX)
    return false;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] < 0x20 || s[i] == ':' || s[i] == 0x7f)
      return false;
  return true;
}

int wsg_chns_resolve(const wsg_chns_options *o, wsg_chns **out, char *err, size_t errlen) {
  *out = NULL;
  size_t count = o ? o->rows.count : 0;
  if (count > WSG_CHNS_MAX) {
    snprintf(err, errlen, "--channel-namespace: at most %d namespaces", WSG_CHNS_MAX);
    return -1;
  }
  wsg_chns *t = calloc(1, sizeof *t + count * sizeof(chns_row));
  if (!t) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  t->def = builtin_default;
  /* "default" first, so every other row starts from it. */
  for (size_t i = 0; i < count; i++) {
    if (strcmp(o->rows.keys[i], "default") != 0)
      continue;
    char e[256];
    if (wsg_chns_parse_opts(o->rows.values[i], &t->def, e, sizeof e) != 0) {
      snprintf(err, errlen, "--channel-namespace default: %s", e);
      wsg_chns_destroy(t);
      return -1;
    }
  }
  for (size_t i = 0; i < count; i++) {
    const char *name = o->rows.keys[i];
    if (strcmp(name, "default") == 0)
      continue;
    char e[256];
    chns_row *r = &t->rows[t->n];
    r->o = t->def;
    if (!name_ok(name)) {
      snprintf(err, errlen,
               "--channel-namespace %s: a namespace is 1..%d bytes without ':' or control "
               "characters",
               name, WSG_CHNS_NAME_MAX);
      wsg_chns_destroy(t);
      return -1;
    }
    if (wsg_chns_parse_opts(o->rows.values[i], &r->o, e, sizeof e) != 0) {
      snprintf(err, errlen, "--channel-namespace %s: %s", name, e);
      wsg_chns_destroy(t);
      return -1;
    }
    r->len = strlen(name);
    memcpy(r->name, name, r->len + 1);
    t->n++;
  }
  *out = t;
  return 0;
}

void wsg_chns_destroy(wsg_chns *t) {
  free(t);
}

const wsg_chns_opts *wsg_chns_of(const wsg_chns *t, const char *name, size_t len) {
  if (!t)
    return &builtin_default;
  const char *colon = memchr(name, ':', len);
  if (colon) {
    size_t ns = (size_t)(colon - name);
    for (size_t i = 0; i < t->n; i++)
      if (t->rows[i].len == ns && memcmp(t->rows[i].name, name, ns) == 0)
        return &t->rows[i].o;
  }
  return &t->def;
}
