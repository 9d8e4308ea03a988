/*
 * proc_commands: the executor of the commands topic (see proc_commands.h).
 *
 * A send or disconnect addressed to users goes into the outbox as a handler's send_users or
 * close_user would, so everything downstream is shared. One addressed to a connection needs the
 * connection's gateway and slot: it is looked up now, through the same routing code
 * (proc_redis_resolve of the connection's user, which skips gateways whose lease is gone), and
 * recorded as a reply or close to that connection. Replies to one connection are not numbered
 * for resume (docs/ARCHITECTURE.md, "Resume"), and neither are these. A publish goes into the
 * outbox as a handler's wsgate_publish() does: numbered and stored once, one record per gateway.
 *
 * Threads: the consumer thread.
 */
#include "proc_commands.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wsg_command.h"
#include "wsg_time.h"

struct proc_commands {
  proc_routes routes; /* for connection lookups; memory kept across commands */
  proc_strref *users; /* a send's us, as strrefs */
  size_t users_cap;
};

proc_commands *proc_commands_create(void) {
  proc_commands *c = calloc(1, sizeof *c);
  if (c)
    proc_routes_init(&c->routes);
  return c;
}

void proc_commands_destroy(proc_commands *c) {
  if (!c)
    return;
  proc_routes_finish(&c->routes);
  free(c->users);
  free(c);
}

/* The gateway and slot of connection `cmd->conn` of `cmd->user`. Returns WSGATE_OK,
 * WSGATE_REJECT when it is not connected (any more), or WSGATE_RETRY when Redis failed. */
static int find_conn(proc_commands *c, const proc_dispatch_env *denv, const wsg_command *cmd,
                     proc_origin *o, char *why, size_t whylen) {
  proc_strref u = {cmd->user.ptr, cmd->user.len};
  char err[256];
  if (!denv->router || proc_redis_resolve(denv->router, &u, 1, wsg_now_mono_ms(), &c->routes, err,
                                          sizeof err) != 0) {
    snprintf(why, whylen, "looking up connection %llu: %s", (unsigned long long)cmd->conn,
             denv->router ? err : "no Redis");
    return WSGATE_RETRY;
  }
  for (uint32_t i = 0; c->routes.first && i < c->routes.count[0]; i++) {
    const proc_target *t = &c->routes.targets[c->routes.first[0] + i];
    if (t->conn != cmd->conn)
      continue;
    const proc_route_gw *g = &c->routes.gws[t->gw];
    *o = (proc_origin){
        .gateway = g->id, .gateway_len = g->len, .slot = (uint32_t)g->slot, .conn = t->conn};
    return WSGATE_OK;
  }
  snprintf(why, whylen, "connection %llu of user %.*s is not connected",
           (unsigned long long)cmd->conn, (int)cmd->user.len, cmd->user.ptr);
  return WSGATE_REJECT;
}

static int users_of(proc_commands *c, const wsg_command *cmd, size_t *n) {
  if (cmd->fields & WSG_CF_USER) {
    if (c->users_cap < 1) {
      proc_strref *nu = realloc(c->users, sizeof *nu);
      if (!nu)
        return -1;
      c->users = nu;
      c->users_cap = 1;
    }
    c->users[0] = (proc_strref){cmd->user.ptr, cmd->user.len};
    *n = 1;
    return 0;
  }
  if (cmd->users.count > c->users_cap) {
    proc_strref *nu = realloc(c->users, cmd->users.count * sizeof *nu);
    if (!nu)
      return -1;
    c->users = nu;
    c->users_cap = cmd->users.count;
  }
  size_t pos = 0, i = 0;
  wsg_cmd_str u;
  while (i < cmd->users.count && wsg_cmd_users_next(cmd, &pos, &u) == 1)
    c->users[i++] = (proc_strref){u.ptr, u.len};
  *n = i;
  return 0;
}

/* The payload checks a handler's sends and publications pass (proc_handler's check_payload). */
static int check_payload(const proc_dispatch_env *denv, const wsg_command *cmd, char *why,
                         size_t whylen) {
  if (cmd->data_len > denv->max_payload) {
    snprintf(why, whylen, "payload of %zu bytes is over --max-payload (%llu)", cmd->data_len,
             (unsigned long long)denv->max_payload);
    return WSGATE_REJECT;
  }
  if (!cmd->binary && !wsg_utf8_valid((const char *)cmd->data, cmd->data_len)) {
    snprintf(why, whylen, "a text payload (b absent or false) must be valid UTF-8");
    return WSGATE_REJECT;
  }
  return WSGATE_OK;
}

static int send_cmd(proc_commands *c, const proc_dispatch_env *denv, uint32_t rec,
                    const wsg_command *cmd, char *why, size_t whylen) {
  int rc = check_payload(denv, cmd, why, whylen);
  if (rc != WSGATE_OK)
    return rc;
  if (cmd->fields & WSG_CF_CONN) {
    proc_origin o;
    rc = find_conn(c, denv, cmd, &o, why, whylen);
    if (rc != WSGATE_OK)
      return rc;
    if (proc_outbox_reply(denv->box, rec, &o, cmd->data, cmd->data_len, cmd->binary) != 0)
      goto nomem;
    return WSGATE_OK;
  }
  size_t n;
  if (users_of(c, cmd, &n) != 0 ||
      proc_outbox_send(denv->box, rec, c->users, n, cmd->data, cmd->data_len, cmd->binary, NULL,
                       NULL, 0, false) != 0)
    goto nomem;
  return WSGATE_OK;
nomem:
  snprintf(why, whylen, "out of memory");
  return WSGATE_ERROR;
}

static int disconnect_cmd(proc_commands *c, const proc_dispatch_env *denv, uint32_t rec,
                          const wsg_command *cmd, char *why, size_t whylen) {
  /* No code: 1000, "closed normally: the application asked" (docs/PROTOCOL.md). */
  uint16_t code = (cmd->fields & WSG_CF_CLOSE_CODE) ? cmd->close_code : 1000;
  const char *reason = cmd->close_reason.ptr;
  size_t rlen = cmd->close_reason.len;
  if (cmd->fields & WSG_CF_CONN) {
    proc_origin o;
    int rc = find_conn(c, denv, cmd, &o, why, whylen);
    if (rc != WSGATE_OK)
      return rc;
    if (proc_outbox_close(denv->box, rec, &o, code, reason, rlen) != 0)
      goto nomem;
    return WSGATE_OK;
  }
  proc_strref u = {cmd->user.ptr, cmd->user.len};
  if (proc_outbox_close_users(denv->box, rec, &u, 1, code, reason, rlen) != 0)
    goto nomem;
  return WSGATE_OK;
nomem:
  snprintf(why, whylen, "out of memory");
  return WSGATE_ERROR;
}

/* As a handler's wsgate_publish(): recorded in the outbox, then numbered and stored once by
 * proc_publish and sent as one record per gateway with subscribers when the batch is emitted. */
static int publish_cmd(const proc_dispatch_env *denv, uint32_t rec, const wsg_command *cmd,
                       char *why, size_t whylen) {
  int rc = check_payload(denv, cmd, why, whylen);
  if (rc != WSGATE_OK)
    return rc;
  /* The decoder checked the name (wsg_channel_name_valid), as api_publish does. */
  if (proc_outbox_publish(denv->box, rec, cmd->channel.ptr, cmd->channel.len, cmd->data,
                          cmd->data_len, cmd->binary) != 0) {
    snprintf(why, whylen, "out of memory");
    return WSGATE_ERROR;
  }
  return WSGATE_OK;
}

int proc_commands_execute(proc_commands *c, const proc_dispatch_env *denv, uint32_t rec,
                          const uint8_t *buf, size_t len, uint64_t *ts_us, char *why,
                          size_t whylen) {
  wsg_command cmd;
  const char *field = "";
  int rc = wsg_command_decode(&cmd, buf, len, &field);
  *ts_us = rc == WSG_ENV_OK && (cmd.fields & WSG_CF_TS) ? cmd.ts_us : 0;
  if (rc != WSG_ENV_OK) {
    snprintf(why, whylen, "not a valid command: %s%s%s", wsg_env_strerror(rc),
             *field ? " in field " : "", field);
    return WSGATE_REJECT;
  }
  switch (cmd.kind) {
  case WSG_CMD_SEND:
    return send_cmd(c, denv, rec, &cmd, why, whylen);
  case WSG_CMD_DISCONNECT:
    return disconnect_cmd(c, denv, rec, &cmd, why, whylen);
  case WSG_CMD_PUBLISH:
    return publish_cmd(denv, rec, &cmd, why, whylen);
  default:
    snprintf(why, whylen,
             "%s is a query: it has no reply path on Kafka; ask wsgate-api over "
             "HTTP (docs/API.md)",
             wsg_cmd_name(cmd.kind));
    return WSGATE_REJECT;
  }
}
