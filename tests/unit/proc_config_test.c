/*
 * proc_config: the processor's option table and cross-field checks: defaults, environment, flags,
 * and a clear message for every invalid combination.
 */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <stdio.h>
#include <string.h>

#include "proc_config.h"

typedef struct {
  proc_config cfg;
  char err[512];
  wsg_config_result r;
} parsed;

static void parse(parsed *p, char **envp, int argc, char **argv) {
  memset(p, 0, sizeof(*p));
  p->r = proc_config_load(&p->cfg, argc, argv, envp, p->err, sizeof(p->err));
}

#define ARGV(...)           ((char *[]){"wsgate-processor", __VA_ARGS__, NULL})
#define ARGC(...)           ((int)(sizeof((char *[]){"wsgate-processor", __VA_ARGS__}) / sizeof(char *)))
#define PARSE(p, envp, ...) parse((p), (envp), ARGC(__VA_ARGS__), ARGV(__VA_ARGS__))

Test(proc_config, defaults) {
  parsed p;
  PARSE(&p, NULL, "-b", "127.0.0.1:1");
  cr_assert_eq(p.r, WSG_CONFIG_OK, "%s", p.err);
  cr_assert_str_eq(p.cfg.handler, "echo");
  cr_assert_str_eq(p.cfg.inbound_topic, "wsgate.inbound");
  cr_assert_str_eq(p.cfg.outbound_topic, "wsgate.outbound");
  cr_assert_str_eq(p.cfg.group_id, "wsgate-processors");
  cr_assert_null(p.cfg.group_instance_id);
  cr_assert_null(p.cfg.dead_letter_topic);
  cr_assert_eq(p.cfg.batch_max, 500);
  cr_assert_eq(p.cfg.max_payload, 512 * 1024);
  cr_assert_eq(p.cfg.commit_interval_ms, 1000);
  cr_assert_eq(p.cfg.gateway_cache_ttl_ms, 1000);
  cr_assert_eq(p.cfg.http.port, 9091);
  cr_assert_str_eq(p.cfg.redis.prefix, "wsgate:");
  cr_assert_eq(p.cfg.log.min_level, WSG_LOG_INFO);
  proc_config_finish(&p.cfg);
}

Test(proc_config, environment_then_flags) {
  char *env[] = {"WSGATE_KAFKA_BROKERS=k:1", "WSGATE_HANDLER=chat",
                 "WSGATE_GROUP_INSTANCE_ID=proc-0", "WSGATE_BATCH_MAX=50", NULL};
  parsed p;
  PARSE(&p, env, "--batch-max", "20", "--handler-arg", "max_rooms=5", "-X", "linger.ms=1");
  cr_assert_eq(p.r, WSG_CONFIG_OK, "%s", p.err);
  cr_assert_str_eq(p.cfg.kafka.brokers, "k:1");
  cr_assert_str_eq(p.cfg.handler, "chat");
  cr_assert_str_eq(p.cfg.group_instance_id, "proc-0");
  cr_assert_eq(p.cfg.batch_max, 20, "the flag wins over the environment");
  cr_assert_str_eq(p.cfg.handler_arg, "max_rooms=5");
  cr_assert_eq(p.cfg.kafka.props.count, 1);
  proc_config_finish(&p.cfg);
}

Test(proc_config, brokers_required) {
  parsed p;
  PARSE(&p, NULL, "--handler", "echo");
  cr_assert_eq(p.r, WSG_CONFIG_ERROR);
  cr_assert(strstr(p.err, "kafka-brokers"), "%s", p.err);
  proc_config_finish(&p.cfg);
}

static void expect_error(const char *needle, int argc, char **argv) {
  parsed p;
  parse(&p, NULL, argc, argv);
  cr_assert_eq(p.r, WSG_CONFIG_ERROR, "expected an error mentioning %s", needle);
  cr_assert(strstr(p.err, needle), "error \"%s\" should mention %s", p.err, needle);
  proc_config_finish(&p.cfg);
}

#define EXPECT_ERROR(needle, ...) expect_error((needle), ARGC(__VA_ARGS__), ARGV(__VA_ARGS__))

Test(proc_config, cross_field_errors) {
  EXPECT_ERROR("--inbound-topic and --outbound-topic are both", "-b", "k:1", "--outbound-topic",
               "wsgate.inbound");
  EXPECT_ERROR("--dead-letter-topic", "-b", "k:1", "--dead-letter-topic", "wsgate.outbound");
  EXPECT_ERROR("--dead-letter-topic is empty", "-b", "k:1", "--dead-letter-topic", "");
  EXPECT_ERROR("--group-instance-id", "-b", "k:1", "--group-instance-id", "");
  EXPECT_ERROR("--batch-max", "-b", "k:1", "--batch-max", "1000", "--max-in-flight", "10");
  EXPECT_ERROR("message.max.bytes", "-b", "k:1", "--max-payload", "1m");
  EXPECT_ERROR("-X message.max.bytes=lots", "-b", "k:1", "-X", "message.max.bytes=lots");
  EXPECT_ERROR("--batch-max", "-b", "k:1", "--batch-max", "0");
  EXPECT_ERROR("--log-level", "-b", "k:1", "--log-level", "loud");
}

Test(proc_config, larger_payload_with_larger_records) {
  parsed p;
  PARSE(&p, NULL, "-b", "k:1", "--max-payload", "1m", "-X", "message.max.bytes=2000000");
  cr_assert_eq(p.r, WSG_CONFIG_OK, "%s", p.err);
  proc_config_finish(&p.cfg);
}

Test(proc_config, help_exits, .init = cr_redirect_stdout) {
  parsed p;
  PARSE(&p, NULL, "--help");
  cr_assert_eq(p.r, WSG_CONFIG_EXIT);
  proc_config_finish(&p.cfg);
}

Test(proc_config, finish_on_zeroed_struct) {
  proc_config cfg;
  memset(&cfg, 0, sizeof(cfg));
  proc_config_finish(&cfg);
  proc_config_finish(NULL);
}

Test(proc_config, ops_port_default_is_the_processors_own) {
  parsed p;
  PARSE(&p, NULL, "-b", "k:1");
  cr_assert_eq(p.r, WSG_CONFIG_OK, "%s", p.err);
  cr_assert_eq(p.cfg.http.port, 9091);
  cr_assert_str_eq(p.cfg.http.addr, "0.0.0.0");
  proc_config_finish(&p.cfg);
  char *env[] = {"WSGATE_HTTP_PORT=1234", NULL};
  PARSE(&p, env, "-b", "k:1");
  cr_assert_eq(p.cfg.http.port, 1234, "the environment wins over the overridden default");
  proc_config_finish(&p.cfg);

  /* The group's own row keeps 9090 (the gateway's) and its help names both. */
  const wsg_option *row = NULL;
  for (size_t i = 0; i < wsg_ops_group.count; i++)
    if (strcmp(wsg_ops_group.options[i].name, "http-port") == 0)
      row = &wsg_ops_group.options[i];
  cr_assert(row);
  cr_assert_str_eq(row->def, "9090");
  cr_assert(strstr(row->help, "9091 for the processor"));

  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  wsg_config_print_markdown(proc_config_spec(), f);
  fclose(f);
  cr_assert(strstr(buf, "| `--http-port` | `WSGATE_HTTP_PORT` | integer | `9091` |"), "%s", buf);
  cr_assert(strstr(buf, "| `-b, --kafka-brokers` | `WSGATE_KAFKA_BROKERS` | string |  |  | Kafka "
                        "bootstrap servers, host:port[,host:port...]. **Required.** |"));
  free(buf);
}

Test(proc_config, shared_groups_fill_the_embedded_structs) {
  char *env[] = {"WSGATE_REDIS_PORT=7000", "WSGATE_LOG_FORMAT=json",
                 "WSGATE_KAFKA_PROPS=linger.ms=1;acks=all", NULL};
  parsed p;
  PARSE(&p, env, "-b", "k:1", "--redis-prefix", "x:", "--log-level", "debug", "-X", "acks=1");
  cr_assert_eq(p.r, WSG_CONFIG_OK, "%s", p.err);
  cr_assert_eq(p.cfg.redis.port, 7000);
  cr_assert_str_eq(p.cfg.redis.prefix, "x:");
  cr_assert_eq(p.cfg.redis.timeout_ms, 2000);
  cr_assert(p.cfg.log.json);
  cr_assert_eq(p.cfg.log.min_level, WSG_LOG_DEBUG);
  cr_assert_eq(p.cfg.kafka.props.count, 2, "merged per key");
  for (size_t i = 0; i < p.cfg.kafka.props.count; i++)
    if (strcmp(p.cfg.kafka.props.keys[i], "acks") == 0)
      cr_assert_str_eq(p.cfg.kafka.props.values[i], "1", "-X wins");
  proc_config_finish(&p.cfg);
}
