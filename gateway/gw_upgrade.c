/*
 * gw_upgrade: the WebSocket upgrade (LWS_CALLBACK_HTTP_CONFIRM_UPGRADE): the CVE-2025-11677 guard,
 * admission (draining, ready, connection limit, upgrade rate), subprotocol, ?resume=, Origin and
 * the token; refusals are answered here with 400/401/403/503 and a JSON body, and cost no Redis
 * write and no Kafka message. The user id is kept in a side table keyed by the wsi (gw_pending),
 * because lws gives the ws protocol a new per-session block
 * (docs/notes/libwebsockets-4.1.6.md#upgrade-callbacks); ESTABLISHED (gw_server.c) takes it from
 * there. Plain HTTP requests on the WebSocket port get 426, CONNECT gets 405 (gw_upgrade_raw()).
 *
 * Threads: the loop thread only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "gw_chperm.h"
#include "gw_session.h"
#include "wsg_envelope.h"
#include "wsg_http.h"
#include "wsg_time.h"

#define SUBPROTOCOL_HDR_MAX 512
#define ORIGIN_HDR_MAX      512

/* Appends `s` as a JSON string body (quotes, backslashes and controls escaped). */
static size_t json_escape(char *out, size_t cap, const char *s) {
  size_t o = 0;
  for (; *s && o + 7 < cap; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      out[o++] = '\\';
      out[o++] = (char)c;
    } else if (c < 0x20) {
      o += (size_t)snprintf(out + o, cap - o, "\\u%04x", c);
    } else {
      out[o++] = (char)c;
    }
  }
  out[o] = '\0';
  return o;
}

static void peer_of(struct lws *wsi, char *buf, size_t len) {
  buf[0] = '\0';
  if (!lws_get_peer_simple(wsi, buf, len))
    snprintf(buf, len, "?");
}

/* Writes its own "HTTP/1.1" status line: lws 4.1.6 would say HTTP/1.0 on the upgrade path, which
 * strict clients reject (docs/notes/libwebsockets-4.1.6.md#status-line). */
static int http_reply(struct lws *wsi, unsigned status, const char *body, const char *www_auth,
                      int retry_after) {
  unsigned char buf[LWS_PRE + 2048];
  unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
  size_t blen = strlen(body);
  char line[64];
  int n = snprintf(line, sizeof line, "HTTP/1.1 %u %s", status, wsg_http_status_text((int)status));
  static const char json[] = "application/json", close_it[] = "close";
  if (lws_add_http_header_by_name(wsi, NULL, (const unsigned char *)line, n, &p, end) ||
      lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE, (const unsigned char *)json,
                                   (int)sizeof json - 1, &p, end) ||
      lws_add_http_header_content_length(wsi, blen, &p, end) ||
      lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION, (const unsigned char *)close_it,
                                   (int)sizeof close_it - 1, &p, end))
    return -1;
  if (www_auth &&
      lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_WWW_AUTHENTICATE,
                                   (const unsigned char *)www_auth, (int)strlen(www_auth), &p, end))
    return -1;
  if (retry_after > 0) {
    char ra[16];
    int ralen = snprintf(ra, sizeof ra, "%d", retry_after);
    if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_RETRY_AFTER, (unsigned char *)ra, ralen,
                                     &p, end))
      return -1;
  }
  if (lws_finalize_http_header(wsi, &p, end))
    return -1;
  if ((size_t)(end - p) < blen)
    return -1;
  memcpy(p, body, blen);
  p += blen;
  int len = (int)(p - start);
  if (lws_write(wsi, start, (size_t)len, LWS_WRITE_HTTP) != len)
    return -1;
  return 1; /* we answered: lws closes the connection */
}

/* Refuses an upgrade with a JSON body {"error": code, "message": text}. */
static int refuse(gw_server *s, struct lws *wsi, int result, unsigned status, const char *code,
                  const char *message, const char *www_auth, int retry_after) {
  wsg_counter_add(s->m_upgrades[result], 1);
  char peer[64];
  peer_of(wsi, peer, sizeof peer);
  wsg_log_limited(&s->rl_refuse, LOG_LIMIT_PER_S, wsg_now_mono_ms(), WSG_LOG_INFO, "server",
                  "upgrade from %s refused with %u %s: %s", peer, status, code, message);
  char esc[512], body[700];
  json_escape(esc, sizeof esc, message);
  snprintf(body, sizeof body, "{\"error\":\"%s\",\"message\":\"%s\"}", code, esc);
  return http_reply(wsi, status, body, www_auth, retry_after);
}

/* Which of our subprotocols libwebsockets will pick from the client's comma-separated list: the
 * first one it names (1: plain, 2: resumable, when `seq` is not empty), else 0. Case-sensitive,
 * as subprotocols are. */
static int pick_subprotocol(const char *list, const char *plain, const char *seq) {
  size_t pl = strlen(plain), sl = strlen(seq);
  const char *p = list;
  while (*p) {
    while (*p == ' ' || *p == '\t' || *p == ',')
      p++;
    const char *start = p;
    while (*p && *p != ',' && *p != ' ' && *p != '\t')
      p++;
    size_t n = (size_t)(p - start);
    if (n == pl && memcmp(start, plain, pl) == 0)
      return 1;
    if (sl > 0 && n == sl && memcmp(start, seq, sl) == 0)
      return 2;
  }
  return 0;
}

/* A resume position: decimal digits only, 1 .. 2^53-1 (every q is below 2^53: a sequence starts
 * at a time in microseconds, about 1.8e15, and JSON clients hold it exactly). */
static bool parse_resume(const char *v, uint64_t *out) {
  size_t n = strlen(v);
  if (n == 0 || n > 20)
    return false;
  uint64_t x = 0;
  for (size_t i = 0; i < n; i++) {
    if (v[i] < '0' || v[i] > '9')
      return false;
    unsigned d = (unsigned)(v[i] - '0');
    if (x > (UINT64_MAX - d) / 10)
      return false;
    x = x * 10 + d;
  }
  *out = x;
  return x > 0 && x < ((uint64_t)1 << 53);
}

static bool origin_allowed(const gw_config *cfg, char *origin) {
  size_t n = strlen(origin);
  while (n > 0 && origin[n - 1] == '/')
    origin[--n] = '\0';
  for (char *c = origin; *c; c++)
    *c = (char)((*c >= 'A' && *c <= 'Z') ? *c - 'A' + 'a' : *c);
  for (size_t i = 0; i < cfg->norigins; i++) {
    if (strcmp(cfg->origins[i], origin) == 0)
      return true;
  }
  return false;
}

/*
 * The bearer token from "Authorization: Bearer <token>", else from "?token=<token>". Returns
 * its length, 0 when the request carries none, -1 (and sets *problem) when it is unusable.
 */
/*
 * The value of the query argument `name` ("resume="), copied NUL-terminated into out; NULL when
 * absent, or when longer than cap - 1 (*too_long is then set). lws 4.1.6's
 * lws_get_urlarg_by_name() stops at the first argument that does not fit the buffer it is given,
 * so with a small buffer an argument after a token (?token=<JWT>&resume=5) was never seen and the
 * resume silently dropped: it gets a buffer that any argument fits, the request head being at most
 * GW_MAX_HTTP_HEADER_DATA (docs/notes/libwebsockets-4.1.6.md#query-arguments).
 */
static const char *query_arg(struct lws *wsi, const char *name, char *out, size_t cap,
                             bool *too_long) {
  char scratch[GW_MAX_HTTP_HEADER_DATA + 1];
  *too_long = false;
  const char *v = lws_get_urlarg_by_name(wsi, name, scratch, (int)sizeof scratch);
  if (!v)
    return NULL;
  size_t n = strlen(v);
  if (n >= cap) {
    *too_long = true;
    return NULL;
  }
  memcpy(out, v, n + 1);
  return out;
}

static int request_token(struct lws *wsi, char *buf, size_t cap, const char **problem) {
  int alen = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
  if (alen > 0) {
    if ((size_t)alen >= cap) {
      *problem = "the Authorization header is longer than the 8192-byte token limit";
      return -1;
    }
    if (lws_hdr_copy(wsi, buf, (int)cap, WSI_TOKEN_HTTP_AUTHORIZATION) < 0) {
      *problem = "the Authorization header cannot be read";
      return -1;
    }
    if (strncasecmp(buf, "Bearer ", 7) != 0) {
      *problem = "the Authorization header is not \"Bearer <token>\"";
      return -1;
    }
    char *t = buf + 7;
    while (*t == ' ')
      t++;
    size_t tl = strlen(t);
    while (tl > 0 && t[tl - 1] == ' ')
      tl--;
    memmove(buf, t, tl);
    buf[tl] = '\0';
    if (tl == 0) {
      *problem = "the Authorization header carries an empty token";
      return -1;
    }
    return (int)tl;
  }
  bool too_long;
  if (!query_arg(wsi, "token=", buf, cap, &too_long)) {
    if (!too_long)
      return 0;
    *problem = "the token in ?token= is longer than the 8192-byte limit";
    return -1;
  }
  return (int)strlen(buf);
}

/* The token's channel permissions (gw_chperm), read from the claims gw_jwt_verify() accepted. */
static size_t channel_perm(gw_server *s, const char *tok, size_t tl, char *perm, size_t cap) {
  uint8_t claims[GW_JWT_MAX_TOKEN];
  int n = gw_jwt_claims_json(tok, tl, claims, sizeof claims);
  if (n <= 0) {
    perm[0] = '\0';
    return 1;
  }
  return gw_chperm_from_claims(claims, (size_t)n, s->cfg->channel_claim, perm, cap);
}

/* A JWT's shape (three non-empty base64url parts, two dots), checked before any budget is charged
 * or any signature computed: costs one pass over the bytes. */
static bool token_shape_ok(const char *t, size_t n) {
  int dots = 0;
  size_t part = 0;
  for (size_t i = 0; i < n; i++) {
    char c = t[i];
    if (c == '.') {
      if (part == 0 || ++dots > 2)
        return false;
      part = 0;
    } else if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               c == '-' || c == '_') {
      part++;
    } else {
      return false;
    }
  }
  return dots == 2 && part > 0;
}

/* The source address' upgrade budget (--max-upgrades-per-addr), charged once a request passed
 * the cheap checks and before its signature is computed: bounds the HMAC work one address can
 * cause, and its share of the gateway-wide budget. */
static bool addr_budget_ok(gw_server *s, struct lws *wsi) {
  gw_peer_key k;
  if (gw_rate_unlimited(&s->rate_addr_upgrades) || !gw_door_key(s, wsi, &k))
    return true;
  return gw_peers_rate_allow(s->peers, k, &s->rate_addr_upgrades, now_ns());
}

int gw_upgrade_confirm(gw_server *s, struct lws *wsi) {
  /* CVE-2025-11677 guard: never read `in`; anything but "websocket" (h2c included) returns -1
   * before lws reads freed memory (docs/notes/libwebsockets-4.1.6.md#cve-2025-11677). */
  char up[16];
  if (lws_hdr_copy(wsi, up, sizeof up, WSI_TOKEN_UPGRADE) <= 0 || strcasecmp(up, "websocket") != 0)
    return -1;

  const gw_config *cfg = s->cfg;
  if (s->draining)
    return refuse(s, wsi, UPG_DRAINING, 503, "draining",
                  "this gateway is shutting down; connect again", NULL, 1);
  char why[160];
  if (s->o.admit && !s->o.admit(s->o.admit_arg, why, sizeof why))
    return refuse(s, wsi, UPG_NOT_READY, 503, "not_ready", why, NULL, 2);
  if (s->conns.count + s->pending.count >= s->max_conns)
    return refuse(s, wsi, UPG_FULL, 503, "connection_limit",
                  "this gateway holds as many connections as it may", NULL, 5);
  /* The upgrade budgets are charged after the cheap checks (subprotocol, Origin, the token's
   * shape) and the global one only after the signature (issue 16): a stream of junk upgrades must
   * not spend the budget that real users need to get in. */

  int plen = lws_hdr_total_length(wsi, WSI_TOKEN_PROTOCOL);
  int picked = 0;
  if (plen > 0) {
    char pbuf[SUBPROTOCOL_HDR_MAX];
    if (plen < (int)sizeof pbuf && lws_hdr_copy(wsi, pbuf, sizeof pbuf, WSI_TOKEN_PROTOCOL) >= 0)
      picked = pick_subprotocol(pbuf, cfg->subprotocol, s->seq_protocol);
    if (picked == 0) {
      char msg[300];
      if (s->seq_protocol[0])
        snprintf(msg, sizeof msg,
                 "Sec-WebSocket-Protocol offers neither %s nor %s, the subprotocols this gateway "
                 "speaks",
                 cfg->subprotocol, s->seq_protocol);
      else
        snprintf(msg, sizeof msg,
                 "Sec-WebSocket-Protocol does not offer %s, the only subprotocol this gateway "
                 "speaks (resumable delivery is off: --resume-max 0)",
                 cfg->subprotocol);
      return refuse(s, wsi, UPG_BAD_REQUEST, 400, "unsupported_subprotocol", msg, NULL, 0);
    }
  }
  /* ?resume=<q>: the client's position in its user's sequence (the last q it received). */
  uint64_t resume = 0;
  char rbuf[64];
  bool rlong;
  const char *rv = query_arg(wsi, "resume=", rbuf, sizeof rbuf, &rlong);
  if (rv || rlong) {
    if (!rv || !parse_resume(rv, &resume))
      return refuse(s, wsi, UPG_BAD_REQUEST, 400, "invalid_resume",
                    "?resume= must be the q of the last message received: a positive integer", NULL,
                    0);
    if (picked != 2) {
      char msg[200];
      snprintf(msg, sizeof msg, "?resume= needs the subprotocol %s",
               s->seq_protocol[0] ? s->seq_protocol : "+seq (off on this gateway: --resume-max 0)");
      return refuse(s, wsi, UPG_BAD_REQUEST, 400, "invalid_resume", msg, NULL, 0);
    }
  }

  /* Browsers always send Origin, so the check stops cross-site pages; a client without it is not
   * a browser and is judged by its token alone. */
  if (cfg->norigins > 0) {
    int olen = lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN);
    if (olen > 0) {
      char obuf[ORIGIN_HDR_MAX];
      if (olen >= (int)sizeof obuf || lws_hdr_copy(wsi, obuf, sizeof obuf, WSI_TOKEN_ORIGIN) < 0 ||
          !origin_allowed(cfg, obuf))
        return refuse(s, wsi, UPG_FORBIDDEN, 403, "forbidden_origin",
                      "this Origin is not in the gateway's --allowed-origins", NULL, 0);
    }
  }

  static const char bearer[] = "Bearer realm=\"wsgate\"";
  static const char bearer_invalid[] = "Bearer realm=\"wsgate\", error=\"invalid_token\"";
  char tok[GW_JWT_MAX_TOKEN + 2];
  const char *problem = NULL;
  int tl = request_token(wsi, tok, sizeof tok, &problem);
  if (tl > 0 && !token_shape_ok(tok, (size_t)tl)) {
    tl = -1;
    problem = "the token is not a JWT (three base64url parts separated by dots)";
  }
  if (tl < 0)
    return refuse(s, wsi, UPG_UNAUTHORIZED, 401, "invalid_token", problem, bearer_invalid, 0);
  if (!addr_budget_ok(s, wsi))
    return refuse(s, wsi, UPG_RATE, 503, "upgrade_rate",
                  "too many connection attempts from this address right now", NULL, 1);

  char user[WSG_MAX_USER_LEN + 1];
  size_t ulen = 0;
  int64_t exp_s = 0; /* the token's "exp", for gw_expiry */
  bool have_token = tl > 0;
  char perm[GW_CHPERM_MAX_BYTES] = "";
  size_t permlen = 1; /* the empty list: no channel */
  if (tl == 0) {
    if (!cfg->insecure_dev_user)
      return refuse(s, wsi, UPG_UNAUTHORIZED, 401, "missing_token",
                    "send \"Authorization: Bearer <token>\" or ?token=<token>", bearer, 0);
    bool ulong;
    const char *u = query_arg(wsi, "user=", tok, sizeof tok, &ulong);
    if (!u || !*u || strlen(u) > WSG_MAX_USER_LEN || !wsg_utf8_valid(u, strlen(u)))
      return refuse(s, wsi, UPG_UNAUTHORIZED, 401, "missing_token",
                    "no token, and no valid ?user=<id> for --insecure-dev-user", bearer, 0);
    ulen = strlen(u);
    memcpy(user, u, ulen + 1);
    char peer[64];
    peer_of(wsi, peer, sizeof peer);
    wsg_log_limited(&s->rl_dev, 1, wsg_now_mono_ms(), WSG_LOG_WARN, "server",
                    "INSECURE: %s connected as user \"%s\" without a token (--insecure-dev-user)",
                    peer, user);
  } else {
    gw_jwt_claims cl;
    int rc = gw_jwt_verify_token(s->o.jwt, tok, (size_t)tl, (int64_t)time(NULL), &cl);
    if (rc == GW_JWT_OK) {
      ulen = cl.user_len;
      memcpy(user, cl.user, ulen + 1);
      exp_s = cl.has_exp ? cl.exp_s : 0;
      permlen = channel_perm(s, tok, (size_t)tl, perm, sizeof perm);
    } else if (rc == GW_JWT_UNKNOWN_KID && s->o.unknown_kid)
      s->o.unknown_kid(s->o.auth); /* the provider may have rotated: fetch its keys again */
    explicit_bzero(tok, (size_t)tl);
    if (rc != GW_JWT_OK)
      return refuse(s, wsi, UPG_UNAUTHORIZED, 401, "invalid_token", gw_jwt_strerror(rc),
                    bearer_invalid, 0);
  }

  /* Only a verified user spends the gateway-wide budget. */
  if (!gw_rate_unlimited(&s->rate_upgrades) &&
      !gw_rate_allow(&s->rate_upgrades, &s->upgrades_tat, now_ns(), 1))
    return refuse(s, wsi, UPG_RATE, 503, "upgrade_rate", "too many connection attempts right now",
                  NULL, 1);

  gw_pending *p = malloc(sizeof *p + ulen + 1 + permlen);
  if (!p)
    return -1;
  p->resume = resume;
  p->exp_s = exp_s;
  p->len = (uint32_t)ulen;
  p->chperm_any = cfg->insecure_dev_user && !have_token;
  memcpy(p->user, user, ulen + 1);
  memcpy(p->user + ulen + 1, perm, permlen);
  free(gw_conn_map_del(&s->pending, (uint64_t)(uintptr_t)wsi));
  if (gw_conn_map_put(&s->pending, (uint64_t)(uintptr_t)wsi, p) != 0) {
    free(p);
    return -1;
  }
  return 0;
}

int gw_upgrade_plain_http(struct lws *wsi) {
  /* Not a WebSocket request: the operations endpoints live on --http-port. Answer and close, so
   * the connection is never reused (keep-alive is the CVE-2025-11677 precondition). */
  static const char body[] = "{\"error\":\"upgrade_required\",\"message\":\"this port serves "
                             "WebSocket only; /healthz, /readyz and /metrics are on the "
                             "operations port\"}";
  unsigned char buf[LWS_PRE + 1024];
  unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
  if (lws_add_http_common_headers(wsi, 426, "application/json", sizeof body - 1, &p, end) ||
      lws_add_http_header_by_token(wsi, WSI_TOKEN_UPGRADE, (const unsigned char *)"websocket", 9,
                                   &p, end) ||
      lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION, (const unsigned char *)"close", 5, &p,
                                   end) ||
      lws_finalize_http_header(wsi, &p, end))
    return -1;
  memcpy(p, body, sizeof body - 1);
  p += sizeof body - 1;
  lws_write(wsi, start, (size_t)(p - start), LWS_WRITE_HTTP_FINAL);
  return -1;
}

int gw_upgrade_raw(gw_server *s, struct lws *wsi) {
  /* lws 4.1.6 turns a CONNECT request into a raw socket with no timeout and hands it to us
   * (server.c, lws_http_to_fallback): answer and close at once, or the socket is held for good
   * by a client that sent no token. The socket's send buffer is empty here, so one send() goes
   * out whole; what the client sent after its request head is discarded before the close, so
   * the close is a FIN, not a reset that would destroy the answer. */
  static const char body[] =
      "{\"error\":\"method_not_allowed\",\"message\":\"this port serves WebSocket upgrades only\"}";
  char answer[512];
  int n = snprintf(answer, sizeof answer,
                   "HTTP/1.1 405 Method Not Allowed\r\nAllow: GET\r\nContent-Type: "
                   "application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                   sizeof body - 1, body);
  wsg_counter_add(s->m_not_websocket, 1);
  lws_sockfd_type fd = lws_get_socket_fd(wsi);
  if (fd >= 0) {
    (void)send(fd, answer, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
    char drop[4096];
    for (int i = 0; i < 16 && recv(fd, drop, sizeof drop, MSG_DONTWAIT) > 0; i++)
      ;
    shutdown(fd, SHUT_WR);
  }
  char peer[64];
  peer_of(wsi, peer, sizeof peer);
  wsg_log_limited(&s->rl_refuse, LOG_LIMIT_PER_S, wsg_now_mono_ms(), WSG_LOG_INFO, "server",
                  "%s sent a CONNECT request: answered 405 and closed", peer);
  return -1;
}
