/* wsg_redis_slots: CRC16 and key slots (vectors from the cluster specification and from a real
 * cluster's CLUSTER KEYSLOT), command keys, CLUSTER SLOTS parsing, MOVED/ASK, seed lists. */
#include <criterion/criterion.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <string.h>

#include "wsg_redis_slots.h"

static uint16_t slot_of(const char *k) {
  return wsg_redis_key_slot(k, strlen(k));
}

Test(wsg_redis_slots, crc16_matches_the_specification) {
  cr_assert_eq(wsg_redis_crc16("123456789", 9), 0x31C3);
  cr_assert_eq(wsg_redis_crc16("", 0), 0);
}

Test(wsg_redis_slots, key_slots_match_a_real_cluster) {
  cr_assert_eq(slot_of("foo"), 12182);
  cr_assert_eq(slot_of("bar"), 5061);
  cr_assert_eq(slot_of("hello"), 866);
  cr_assert_eq(slot_of("{user1000}.following"), 3443);
}

Test(wsg_redis_slots, hash_tags_follow_the_specification) {
  cr_assert_eq(slot_of("{user1000}.following"), slot_of("{user1000}.followers"));
  cr_assert_eq(slot_of("foo{}{bar}"), 8363, "an empty tag hashes the whole key");
  cr_assert_eq(slot_of("foo{{bar}}zap"), 4015, "the tag is '{bar'");
  cr_assert_eq(slot_of("foo{bar}{zap}"), slot_of("bar"), "only the first tag counts");
  cr_assert_eq(slot_of("wsgate:replay:{u:bob}"), 6248);
  cr_assert_eq(slot_of("wsgate:replay:{u:bob}:seq"), 6248);
  const char bin[] = {'{', 'a', '\0', 'b', '}', 'x'};
  cr_assert_eq(wsg_redis_key_slot(bin, sizeof(bin)), wsg_redis_crc16("a\0b", 3) & 16383,
               "binary-safe");
}

static bool key_of(int argc, const char **argv, char *out) {
  const char *k;
  size_t kl;
  if (!wsg_redis_cmd_key(argc, argv, NULL, &k, &kl))
    return false;
  memcpy(out, k, kl);
  out[kl] = '\0';
  return true;
}

Test(wsg_redis_slots, command_keys) {
  char k[64];
  cr_assert(key_of(3, (const char *[]){"HGET", "gw:a", "slot"}, k));
  cr_assert_str_eq(k, "gw:a");
  cr_assert(key_of(5, (const char *[]){"evalsha", "abc", "2", "s{u:x}", "q{u:x}"}, k));
  cr_assert_str_eq(k, "s{u:x}");
  cr_assert_not(key_of(3, (const char *[]){"EVAL", "return 1", "0"}, k));
  cr_assert_not(key_of(1, (const char *[]){"PING"}, k));
  cr_assert_not(key_of(3, (const char *[]){"SCRIPT", "LOAD", "return 1"}, k));
  cr_assert(key_of(6, (const char *[]){"XREAD", "COUNT", "2", "STREAMS", "st", "0"}, k));
  cr_assert_str_eq(k, "st");
  cr_assert(key_of(3, (const char *[]){"OBJECT", "ENCODING", "obj"}, k));
  cr_assert_str_eq(k, "obj");
}

/* A reply parsed from RESP text, as hiredis builds it from the wire. */
static redisReply *resp(const char *text) {
  redisReader *r = redisReaderCreate();
  redisReaderFeed(r, text, strlen(text));
  void *rep = NULL;
  cr_assert_eq(redisReaderGetReply(r, &rep), REDIS_OK);
  cr_assert_not_null(rep);
  redisReaderFree(r);
  return rep;
}

Test(wsg_redis_slots, cluster_slots_reply_builds_the_map) {
  static wsg_redis_slot_map m;
  char err[128];
  /* Two ranges on one primary (with a replica), one on another, one with an unknown endpoint. */
  redisReply *rep = resp("*3\r\n"
                         "*4\r\n:0\r\n:5460\r\n*3\r\n$9\r\n127.0.0.1\r\n:7001\r\n$2\r\nid\r\n"
                         "*3\r\n$9\r\n127.0.0.1\r\n:7004\r\n$2\r\nid\r\n"
                         "*3\r\n:5461\r\n:10922\r\n*2\r\n$9\r\n127.0.0.1\r\n:7002\r\n"
                         "*3\r\n:10923\r\n:16383\r\n*2\r\n$1\r\n?\r\n:7003\r\n");
  cr_assert_eq(wsg_redis_slot_map_parse(&m, rep, "10.0.0.9", err, sizeof(err)), 16384, "%s", err);
  freeReplyObject(rep);
  cr_assert_eq(m.nnodes, 3, "replicas are not routed to");
  cr_assert_eq(m.nodes[m.owner[0]].port, 7001);
  cr_assert_eq(m.nodes[m.owner[5460]].port, 7001);
  cr_assert_eq(m.nodes[m.owner[5461]].port, 7002);
  cr_assert_eq(m.nodes[m.owner[16383]].port, 7003);
  cr_assert_str_eq(m.nodes[m.owner[16383]].host, "10.0.0.9", "'?' is the node asked");

  rep = resp("*1\r\n*3\r\n:0\r\n:99\r\n*2\r\n$0\r\n\r\n:7001\r\n");
  cr_assert_eq(wsg_redis_slot_map_parse(&m, rep, "h", err, sizeof(err)), 100, "partial coverage");
  cr_assert_eq(m.owner[100], WSG_REDIS_NO_NODE);
  cr_assert_str_eq(m.nodes[m.owner[0]].host, "h");
  freeReplyObject(rep);

  rep = resp("-ERR This instance has cluster support disabled\r\n");
  cr_assert_eq(wsg_redis_slot_map_parse(&m, rep, "h", err, sizeof(err)), -1);
  cr_assert(strstr(err, "cluster support disabled") != NULL, "%s", err);
  freeReplyObject(rep);
  rep = resp("*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\nh\r\n:1\r\n");
  cr_assert_eq(wsg_redis_slot_map_parse(&m, rep, "h", err, sizeof(err)), -1, "slot out of range");
  freeReplyObject(rep);
}

static wsg_redis_redirect redirect(const char *s) {
  wsg_redis_redirect r;
  wsg_redis_redirect_parse(s, strlen(s), &r);
  return r;
}

Test(wsg_redis_slots, moved_and_ask) {
  wsg_redis_redirect r = redirect("MOVED 3999 127.0.0.1:6381");
  cr_assert_eq(r.kind, WSG_REDIS_MOVED);
  cr_assert_eq(r.slot, 3999);
  cr_assert_str_eq(r.host, "127.0.0.1");
  cr_assert_eq(r.port, 6381);
  r = redirect("ASK 12182 :6380");
  cr_assert_eq(r.kind, WSG_REDIS_ASK);
  cr_assert_str_eq(r.host, "", "an empty endpoint means the host asked");
  cr_assert_eq(r.port, 6380);
  r = redirect("MOVED 1 ::1:7000");
  cr_assert_str_eq(r.host, "::1");
  cr_assert_eq(r.port, 7000);
  cr_assert_eq(redirect("MOVED 16384 h:1").kind, WSG_REDIS_REDIRECT_NONE);
  cr_assert_eq(redirect("MOVED 1 h:0").kind, WSG_REDIS_REDIRECT_NONE);
  cr_assert_eq(redirect("MOVED x h:1").kind, WSG_REDIS_REDIRECT_NONE);
  cr_assert_eq(redirect("ERR wrong").kind, WSG_REDIS_REDIRECT_NONE);
  cr_assert_eq(redirect("TRYAGAIN Multiple keys request during rehashing").kind,
               WSG_REDIS_REDIRECT_NONE);
}

Test(wsg_redis_slots, seed_lists) {
  wsg_redis_node n[4];
  char err[128];
  cr_assert_eq(wsg_redis_seeds_parse("a:1, b.example:7002,[::1]:3", n, 4, err, sizeof(err)), 3);
  cr_assert_str_eq(n[1].host, "b.example");
  cr_assert_eq(n[1].port, 7002);
  cr_assert_eq(wsg_redis_seeds_parse("a", n, 4, err, sizeof(err)), -1);
  cr_assert(strstr(err, "host:port") != NULL);
  cr_assert_eq(wsg_redis_seeds_parse("a:70000", n, 4, err, sizeof(err)), -1);
  cr_assert_eq(wsg_redis_seeds_parse("", n, 4, err, sizeof(err)), -1);
  cr_assert_eq(wsg_redis_seeds_parse("a:1,b:2", n, 1, err, sizeof(err)), -1);
}

Test(wsg_redis_slots, node_table_dedups) {
  static wsg_redis_slot_map m;
  wsg_redis_slot_map_reset(&m);
  cr_assert_eq(wsg_redis_slot_map_node(&m, "h", 1, 1), 0);
  cr_assert_eq(wsg_redis_slot_map_node(&m, "h", 1, 2), 1);
  cr_assert_eq(wsg_redis_slot_map_node(&m, "h", 1, 1), 0);
}

/* How a pipeline splits per node: each command goes to the owner of its key's slot (hash tags
 * keep one user's keys together), keyless ones anywhere, unserved slots nowhere. */
Test(wsg_redis_slots, pipeline_commands_group_per_node) {
  static wsg_redis_slot_map m;
  char err[128];
  redisReply *rep = resp("*3\r\n"
                         "*3\r\n:0\r\n:5460\r\n*2\r\n$1\r\na\r\n:1\r\n"
                         "*3\r\n:5461\r\n:10922\r\n*2\r\n$1\r\nb\r\n:2\r\n"
                         "*3\r\n:10923\r\n:16000\r\n*2\r\n$1\r\nc\r\n:3\r\n");
  cr_assert_gt(wsg_redis_slot_map_parse(&m, rep, "h", err, sizeof(err)), 0, "%s", err);
  freeReplyObject(rep);
  const char *hello[] = {"GET", "hello"};                           /* slot 866 */
  const char *bar[] = {"HGETALL", "bar"};                           /* 5061 */
  const char *foo[] = {"SET", "foo", "1"};                          /* 12182 */
  const char *tagged[] = {"EVALSHA", "x", "2", "s{bar}", "q{bar}"}; /* 5061 too */
  const char *ping[] = {"PING"};
  cr_assert_eq(wsg_redis_slot_map_route(&m, 2, hello, NULL), 0);
  cr_assert_eq(wsg_redis_slot_map_route(&m, 2, bar, NULL), 0);
  cr_assert_eq(wsg_redis_slot_map_route(&m, 3, foo, NULL), 2);
  cr_assert_eq(wsg_redis_slot_map_route(&m, 5, tagged, NULL), 0, "a hash tag routes with bar");
  cr_assert_eq(wsg_redis_slot_map_route(&m, 1, ping, NULL), WSG_REDIS_ROUTE_ANY);
  /* 16001..16383 are served by nobody in this map. */
  char key[16];
  const char *orphan[] = {"GET", key};
  for (int i = 0;; i++) {
    snprintf(key, sizeof(key), "k%d", i);
    if (wsg_redis_key_slot(key, strlen(key)) > 16000)
      break;
  }
  cr_assert_eq(wsg_redis_slot_map_route(&m, 2, orphan, NULL), WSG_REDIS_ROUTE_NONE);
  const char *mid[] = {"GET", "{user1000}.following"}; /* 3443 */
  cr_assert_eq(wsg_redis_slot_map_route(&m, 2, mid, NULL), 0);
}
