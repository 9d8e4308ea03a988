/* Unit tests of gw_config: the gateway's defaults, environment and flags, every cross-field check,
 * the derived values (secret file, gateway id, origins, log settings) and the help output. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gw_config.h"

#define SECRET "0123456789abcdef0123456789abcdef"

/* Loads argv (NULL-terminated, without the program name) with envp; returns the result. */
static wsg_config_result load(gw_config *cfg, const char *const *args, char **envp, char *err,
                              size_t errlen) {
  char *argv[64] = {"wsgate-gateway"};
  int argc = 1;
  for (; args && args[argc - 1]; argc++)
    argv[argc] = (char *)args[argc - 1];
  argv[argc] = NULL;
  memset(cfg, 0, sizeof *cfg);
  return gw_config_load(cfg, argc, argv, envp, err, errlen);
}

/* Expects WSG_CONFIG_ERROR with `needle` in the message. */
static void expect_error(const char *const *args, const char *needle) {
  gw_config cfg;
  char err[512] = "";
  wsg_config_result r = load(&cfg, args, NULL, err, sizeof err);
  cr_assert_eq(r, WSG_CONFIG_ERROR, "accepted, expected an error about %s", needle);
  cr_assert(strstr(err, needle), "error \"%s\" does not mention \"%s\"", err, needle);
  gw_config_finish(&cfg);
}

Test(gw_config, defaults_and_derived_values) {
  const char *args[] = {"-b", "k:1", "--jwt-secret", SECRET, NULL};
  gw_config cfg;
  char err[512] = "";
  cr_assert_eq(load(&cfg, args, NULL, err, sizeof err), WSG_CONFIG_OK, "%s", err);
  cr_assert_eq(cfg.listen_port, 8080);
  cr_assert_eq(cfg.http.port, 9090);
  cr_assert_str_eq(cfg.subprotocol, "wsgate.v1");
  cr_assert_eq(cfg.max_message, 1u << 20);
  cr_assert_eq(cfg.rx_buffer, 512);
  cr_assert_eq(cfg.ping_interval_ms, 30000);
  cr_assert_eq(cfg.idle_timeout_ms, 60000);
  cr_assert_eq(cfg.sendq_hard, 1u << 20);
  cr_assert_eq(cfg.sendq_soft, 256u << 10);
  cr_assert_eq(cfg.lease_ttl_ms, 15000);
  cr_assert_eq(cfg.lease_renew_ms, 5000);
  cr_assert_eq(cfg.channel_key_ttl_ms, 24ull * 3600 * 1000);
  cr_assert_eq(cfg.channel_key_renew_ms, 6ull * 3600 * 1000);
  cr_assert_str_eq(cfg.inbound_topic, "wsgate.inbound");
  cr_assert_str_eq(cfg.outbound_topic, "wsgate.outbound");
  cr_assert_str_eq(cfg.redis.prefix, "wsgate:");
  cr_assert(!cfg.deflate);
  cr_assert(!cfg.insecure_dev_user);
  cr_assert_eq(cfg.rate_action_kind, GW_RATE_PAUSE);
  cr_assert_eq(cfg.log.min_level, WSG_LOG_INFO);
  cr_assert(!cfg.log.json);
  cr_assert_eq(cfg.jwt_key_len, strlen(SECRET));
  cr_assert(memcmp(cfg.jwt_key, SECRET, cfg.jwt_key_len) == 0);

  /* <hostname>-<8 hex digits>, different at every start. */
  char host[256];
  cr_assert_eq(gethostname(host, sizeof host), 0);
  size_t hl = strlen(host);
  cr_assert(strncmp(cfg.gateway_id, host, hl) == 0, "gateway id %s", cfg.gateway_id);
  cr_assert_eq(strlen(cfg.gateway_id), hl + 9, "gateway id %s", cfg.gateway_id);
  cr_assert_eq(strspn(cfg.gateway_id + hl + 1, "0123456789abcdef"), 8);
  char adv[300];
  snprintf(adv, sizeof adv, "%s:8080", host);
  cr_assert_str_eq(cfg.advertise_addr, adv);

  gw_config other;
  cr_assert_eq(load(&other, args, NULL, err, sizeof err), WSG_CONFIG_OK);
  cr_assert_str_neq(cfg.gateway_id, other.gateway_id);
  gw_config_finish(&other);
  gw_config_finish(&cfg);
  cr_assert_null(cfg.jwt_key);
}

Test(gw_config, environment_then_flags) {
  char *envp[] = {"WSGATE_LISTEN_PORT=9000",
                  "WSGATE_KAFKA_BROKERS=env:1",
                  "WSGATE_JWT_SECRET=" SECRET,
                  "WSGATE_RATE_ACTION=close",
                  "WSGATE_LOG_FORMAT=json",
                  "WSGATE_GATEWAY_ID=gw-7",
                  "WSGATE_KAFKA_PROPS=linger.ms=1;acks=all",
                  NULL};
  const char *args[] = {"--listen-port", "9100", "-X", "linger.ms=2", "--log-level", "warn", NULL};
  gw_config cfg;
  char err[512] = "";
  cr_assert_eq(load(&cfg, args, envp, err, sizeof err), WSG_CONFIG_OK, "%s", err);
  cr_assert_eq(cfg.listen_port, 9100);
  cr_assert_str_eq(cfg.kafka.brokers, "env:1");
  cr_assert_str_eq(cfg.gateway_id, "gw-7");
  cr_assert_eq(cfg.rate_action_kind, GW_RATE_CLOSE);
  cr_assert(cfg.log.json);
  cr_assert_eq(cfg.log.min_level, WSG_LOG_WARN);
  cr_assert_eq(cfg.kafka.props.count, 2);
  for (size_t i = 0; i < cfg.kafka.props.count; i++)
    if (strcmp(cfg.kafka.props.keys[i], "linger.ms") == 0)
      cr_assert_str_eq(cfg.kafka.props.values[i], "2");
  gw_config_finish(&cfg);
}

Test(gw_config, cross_field_checks) {
  const char *renew[] = {"-b", "k", "--jwt-secret", SECRET, "--lease-ttl", "5s", "--lease-renew",
                         "5s", NULL};
  expect_error(renew, "--lease-renew");
  const char *chrenew[] = {
      "-b", "k", "--jwt-secret", SECRET, "--channel-key-ttl", "3s", "--channel-key-renew",
      "2s", NULL};
  expect_error(chrenew, "--channel-key-renew");
  const char *chttl[] = {"-b", "k", "--jwt-secret", SECRET, "--channel-key-ttl", "1s", NULL};
  expect_error(chttl, "channel-key-ttl");
  const char *chshort[] = {
      "-b", "k", "--jwt-secret", SECRET, "--channel-key-ttl", "3s", "--channel-key-renew",
      "1s", NULL};
  gw_config cfg;
  char err[512] = "";
  cr_assert_eq(load(&cfg, chshort, NULL, err, sizeof err), WSG_CONFIG_OK, "%s", err);
  cr_expect_eq(cfg.channel_key_renew_ms, 1000, "short values are allowed (tests)");
  gw_config_finish(&cfg);
  const char *idle[] = {
      "-b",      "k", "--jwt-secret", SECRET, "--ping-interval", "30s", "--idle-timeout",
      "30500ms", NULL};
  expect_error(idle, "--idle-timeout");
  const char *tls[] = {"-b", "k", "--jwt-secret", SECRET, "--tls-cert", "c.pem", NULL};
  expect_error(tls, "--tls-key");
  const char *nosecret[] = {"-b", "k", NULL};
  expect_error(nosecret, "--jwt-secret-file");
  const char *both[] = {"-b", "k", "--jwt-secret", SECRET, "--jwt-secret-file", "/x", NULL};
  expect_error(both, "both given");
  const char *shortsecret[] = {"-b", "k", "--jwt-secret", "tooshort", NULL};
  expect_error(shortsecret, "at least 32");
  const char *sendq[] = {"-b", "k", "--jwt-secret", SECRET, "--sendq-soft", "2m", NULL};
  expect_error(sendq, "--sendq-soft");
  const char *drain[] = {"-b", "k", "--jwt-secret", SECRET, "--drain-window", "30s", NULL};
  expect_error(drain, "--drain-window");
  const char *burst[] = {"-b", "k", "--jwt-secret", SECRET, "--rate-msgs", "0", "--rate-burst",
                         "10", NULL};
  expect_error(burst, "--rate-burst");
  const char *sub[] = {"-b", "k", "--jwt-secret", SECRET, "--subprotocol", "a,b", NULL};
  expect_error(sub, "--subprotocol");
  char longid[200];
  memset(longid, 'g', sizeof longid - 1);
  longid[sizeof longid - 1] = '\0';
  const char *id[] = {"-b", "k", "--jwt-secret", SECRET, "--gateway-id", longid, NULL};
  expect_error(id, "--gateway-id");
  const char *nobroker[] = {"--jwt-secret", SECRET, NULL};
  expect_error(nobroker, "kafka-brokers");
  const char *range[] = {"-b", "k", "--jwt-secret", SECRET, "--rx-buffer", "64", NULL};
  expect_error(range, "rx-buffer");
}

Test(gw_config, dev_user_needs_no_secret) {
  const char *args[] = {"-b", "k", "--insecure-dev-user", NULL};
  gw_config cfg;
  char err[512] = "";
  cr_assert_eq(load(&cfg, args, NULL, err, sizeof err), WSG_CONFIG_OK, "%s", err);
  cr_assert(cfg.insecure_dev_user);
  cr_assert_null(cfg.jwt_key);
  gw_config_finish(&cfg);
}

Test(gw_config, secret_file) {
  char path[] = "/tmp/gw_config_test_XXXXXX";
  int fd = mkstemp(path);
  cr_assert(fd >= 0);
  const char content[] = SECRET "\n";
  cr_assert_eq(write(fd, content, sizeof content - 1), (ssize_t)(sizeof content - 1));
  close(fd);
  const char *args[] = {"-b", "k", "--jwt-secret-file", path, NULL};
  gw_config cfg;
  char err[512] = "";
  cr_assert_eq(load(&cfg, args, NULL, err, sizeof err), WSG_CONFIG_OK, "%s", err);
  cr_assert_eq(cfg.jwt_key_len, strlen(SECRET), "the trailing newline is not part of the secret");
  cr_assert(memcmp(cfg.jwt_key, SECRET, cfg.jwt_key_len) == 0);
  gw_config_finish(&cfg);

  /* Too long to be a secret: probably the wrong file. */
  FILE *f = fopen(path, "w");
  cr_assert(f);
  for (int i = 0; i < GW_JWT_SECRET_MAX + 10; i++)
    fputc('s', f);
  fclose(f);
  expect_error(args, "longer than");
  unlink(path);
  expect_error(args, "No such file");
}

Test(gw_config, origins_are_normalised) {
  const char *args[] = {"-b",
                        "k",
                        "--jwt-secret",
                        SECRET,
                        "--allowed-origins",
                        " https://App.Example.com/,https://b.example.com ,, ",
                        NULL};
  gw_config cfg;
  char err[512] = "";
  cr_assert_eq(load(&cfg, args, NULL, err, sizeof err), WSG_CONFIG_OK, "%s", err);
  cr_assert_eq(cfg.norigins, 2);
  cr_assert_str_eq(cfg.origins[0], "https://app.example.com");
  cr_assert_str_eq(cfg.origins[1], "https://b.example.com");
  gw_config_finish(&cfg);
  cr_assert_eq(cfg.norigins, 0);
}

Test(gw_config, finish_on_zeroed_struct) {
  gw_config cfg;
  memset(&cfg, 0, sizeof cfg);
  gw_config_finish(&cfg);
  gw_config_finish(&cfg);
  gw_config_finish(NULL);
}

Test(gw_config, help_and_markdown_document_every_option) {
  const wsg_config_spec *spec = gw_config_spec();
  size_t n = 0;
  char err[256] = "";
  wsg_option *rows = wsg_config_rows(spec, &n, err, sizeof err);
  cr_assert(rows, "%s", err);
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  cr_assert(f);
  wsg_config_print_help(spec, f);
  fclose(f);
  cr_assert(strstr(buf, "--help-metrics"), "--help lists the built-in --help-metrics");
  for (size_t i = 0; i < n; i++) {
    char flag[80], bflag[80];
    snprintf(flag, sizeof flag, "--%s", rows[i].name);
    snprintf(bflag, sizeof bflag, "--[no-]%s", rows[i].name); /* booleans */
    cr_assert(strstr(buf, flag) || strstr(buf, bflag), "--help lacks %s", flag);
    cr_assert(rows[i].help && strlen(rows[i].help) > 10, "%s has no help", flag);
    cr_assert(rows[i].env && strncmp(rows[i].env, "WSGATE_", 7) == 0,
              "%s has no WSGATE_ environment variable", flag);
    cr_assert(strstr(buf, rows[i].env), "--help lacks %s", rows[i].env);
  }
  free(buf);
  f = open_memstream(&buf, &len);
  wsg_config_print_markdown(spec, f);
  fclose(f);
  for (size_t i = 0; i < n; i++)
    cr_assert(strstr(buf, rows[i].name), "markdown lacks %s", rows[i].name);
  free(buf);
  free(rows);
}

Test(gw_config, shared_groups_fill_the_embedded_structs) {
  char *envp[] = {"WSGATE_REDIS_HOST=redis.example", "WSGATE_REDIS_PASSWORD=pw",
                  "WSGATE_HTTP_ADDR=127.0.0.1", NULL};
  const char *args[] = {
      "-b",    "k:1", "--jwt-secret", SECRET, "--redis-db", "3", "--redis-timeout",
      "500ms", "-X",  "acks=1",       NULL};
  gw_config cfg;
  char err[512] = "";
  cr_assert_eq(load(&cfg, args, envp, err, sizeof err), WSG_CONFIG_OK, "%s", err);
  cr_assert_str_eq(cfg.kafka.brokers, "k:1");
  cr_assert_eq(cfg.kafka.props.count, 1);
  cr_assert_str_eq(cfg.redis.host, "redis.example");
  cr_assert_eq(cfg.redis.port, 6379);
  cr_assert_str_eq(cfg.redis.password, "pw");
  cr_assert_eq(cfg.redis.db, 3);
  cr_assert_eq(cfg.redis.timeout_ms, 500);
  cr_assert_str_eq(cfg.http.addr, "127.0.0.1");
  cr_assert_eq(cfg.http.port, 9090, "the gateway keeps the group's default");
  cr_assert_str_eq(cfg.log.level, "info");
  gw_config_finish(&cfg);

  const char *none[] = {"--jwt-secret", SECRET, NULL};
  expect_error(none, "--kafka-brokers is required: set --kafka-brokers or WSGATE_KAFKA_BROKERS");
  const char *empty[] = {"-b", "", "--jwt-secret", SECRET, NULL};
  expect_error(empty, "--kafka-brokers: must not be empty (from -b)");
}

Test(gw_config, jwt_key_options) {
  const char *badalg[] = {"-b",         "k", "--jwt-secret", SECRET, "--jwt-algorithms",
                          "RS256,none", NULL};
  expect_error(badalg, "unknown algorithm \"none\"");
  const char *empty[] = {"-b", "k", "--jwt-secret", SECRET, "--jwt-algorithms", " , ", NULL};
  expect_error(empty, "--jwt-algorithms");
  /* A PEM key with the default HS256: the operator forgot --jwt-algorithms. */
  const char *pem_hs[] = {"-b", "k", "--jwt-key-file", "/k.pem", NULL};
  expect_error(pem_hs, "e.g. RS256");
  /* RS256 with only a secret: no public key to verify with. */
  const char *rs_secret[] = {"-b", "k", "--jwt-secret", SECRET, "--jwt-algorithms", "RS256", NULL};
  expect_error(rs_secret, "--jwt-key-file, --jwt-jwks-file or --jwt-jwks-url");
  /* The keys decide who is authenticated: never fetched over plain HTTP. */
  const char *http_url[] = {"-b",    "k", "--jwt-jwks-url", "http://idp/jwks", "--jwt-algorithms",
                            "RS256", NULL};
  expect_error(http_url, "only https:// URLs");
  /* A key file alone is a complete configuration (the file is read by gw_auth, not here). */
  gw_config cfg;
  char err[512] = "";
  const char *ok[] = {"-b",
                      "k",
                      "--jwt-key-file",
                      "/k.pem",
                      "--jwt-algorithms",
                      "RS256, ES256",
                      "--jwt-issuer",
                      "https://a,https://b",
                      NULL};
  cr_assert_eq(load(&cfg, ok, NULL, err, sizeof err), WSG_CONFIG_OK, "%s", err);
  cr_assert_str_eq(cfg.jwt_issuer, "https://a,https://b");
  gw_config_finish(&cfg);
  /* A JWKS URL alone is a complete configuration too. */
  const char *url[] = {"-b",    "k", "--jwt-jwks-url", "https://idp/jwks", "--jwt-algorithms",
                       "RS256", NULL};
  cr_assert_eq(load(&cfg, url, NULL, err, sizeof err), WSG_CONFIG_OK, "%s", err);
  cr_assert_eq(cfg.jwt_jwks_refresh_ms, 300000);
  gw_config_finish(&cfg);
}

Test(gw_config, direct_listener_options) {
  char path[] = "/tmp/gw_config_direct_XXXXXX";
  int fd = mkstemp(path);
  cr_assert(fd >= 0);
  const char content[] = "direct-secret-0123456789\n";
  cr_assert_eq(write(fd, content, sizeof content - 1), (ssize_t)(sizeof content - 1));
  close(fd);
  /* No secret: refused, with what to do. */
  expect_error((const char *[]){"-b", "k", "--jwt-secret", SECRET, "--direct-listen",
                                "127.0.0.1:7070", NULL},
               "--direct-listen needs --direct-secret-file");
  /* Every address: processors need to be told where. */
  expect_error((const char *[]){"-b", "k", "--jwt-secret", SECRET, "--direct-listen",
                                "0.0.0.0:7070", "--direct-secret-file", path, NULL},
               "--direct-advertise");
  gw_config cfg;
  char err[512] = "";
  const char *ok[] = {
      "-b", "k", "--jwt-secret", SECRET, "--direct-listen", "10.0.0.5:7070", "--direct-secret-file",
      path, NULL};
  cr_assert_eq(load(&cfg, ok, NULL, err, sizeof err), WSG_CONFIG_OK, "%s", err);
  cr_assert_str_eq(cfg.direct_advertise, "10.0.0.5:7070", "advertised as listened by default");
  cr_assert_eq(cfg.direct_secret_len, strlen("direct-secret-0123456789"));
  gw_config_finish(&cfg);
  /* Too short to be a secret. */
  FILE *f = fopen(path, "w");
  cr_assert(f);
  fputs("short\n", f);
  fclose(f);
  expect_error(ok, "at least 16");
  unlink(path);
  /* Off by default: nothing read, nothing advertised. */
  cr_assert_eq(
      load(&cfg, (const char *[]){"-b", "k", "--jwt-secret", SECRET, NULL}, NULL, err, sizeof err),
      WSG_CONFIG_OK, "%s", err);
  cr_assert_null(cfg.direct_secret);
  cr_assert(!cfg.direct_listen || !cfg.direct_listen[0]);
  gw_config_finish(&cfg);
}
