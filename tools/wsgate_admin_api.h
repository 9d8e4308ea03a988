/*
 * wsgate_admin_api: wsgate-admin's commands that call wsgate-api over HTTP (docs/API.md):
 * send, disconnect, publish, presence, history, info. A minimal HTTP/1.1 client of our own service
 * (plain HTTP; for HTTPS use curl as docs/API.md shows): one request per connection, the answer
 * printed as it comes.
 *
 * Threads: main only.
 */
#ifndef WSGATE_ADMIN_API_H
#define WSGATE_ADMIN_API_H

typedef struct {
  const char *url;  /* http://host:port, default $WSGATE_API_URL or http://127.0.0.1:8080 */
  const char *key;  /* default $WSGATE_API_KEY */
  const char *conn; /* --conn: one connection */
  const char *reason;
  const char *idempotency_key;
  const char *since, *limit; /* --since, --limit of presence and history; NULL: none */
  int code;                  /* --code; 0: none */
  int timeout_ms;
} admin_api_opts;

#include <stdbool.h>

/* True if `name` is one of the commands below. */
bool admin_api_command(const char *name);

/* Runs args[0] (one of admin_api_command's) with its arguments. Returns the exit status:
 * 0 for a 2xx answer, 1 otherwise (the answer on stdout, what went wrong on stderr), 2 for a
 * usage error. */
int admin_api_run(const admin_api_opts *o, int nargs, char **args);

#endif
