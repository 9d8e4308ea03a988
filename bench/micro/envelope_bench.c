/*
 * envelope_bench: nanoseconds per wsg_envelope_encode() and wsg_envelope_decode() for the
 * envelopes wsgate moves most: a client frame (msg) and a batched fan-out (deliver to a list of
 * 100 connections), with 100-byte and 1 KiB payloads. Each case runs REPS repetitions of ITERS
 * operations; the table shows the median and the spread of the repetitions.
 *
 * Usage: envelope_bench [iterations per repetition]   (build with buildtype=release for figures)
 *
 * Threads: main only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "wsg_envelope.h"

#define REPS          9
#define DEFAULT_ITERS 200000
#define LIST_CONNS    100

/* CPU time of this thread rather than wall time: on a shared machine, time spent waiting for a
 * core is not the codec's cost (caches and clock frequency still vary; the spread shows it). */
static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Keeps the compiler from discarding work whose result is otherwise unused. */
static volatile uint64_t sink;

typedef struct {
  const char *name;
  wsg_envelope env;
} bench_case;

static void report(const char *name, const char *op, size_t bytes, double *ns) {
  qsort(ns, REPS, sizeof ns[0], cmp_double);
  printf("| %-24s | %-6s | %5zu | %8.1f | %8.1f | %8.1f |\n", name, op, bytes, ns[REPS / 2], ns[0],
         ns[REPS - 1]);
}

static int run(const bench_case *c, long iters) {
  wsg_buf b;
  double enc[REPS], dec[REPS];
  wsg_envelope out;

  wsg_buf_init(&b, 0);
  if (wsg_envelope_encode(&c->env, &b) != WSG_ENV_OK) {
    fprintf(stderr, "envelope_bench: %s does not encode\n", c->name);
    wsg_buf_finish(&b);
    return -1;
  }
  for (int r = 0; r < REPS; r++) {
    double t0 = now_ns();
    for (long i = 0; i < iters; i++) {
      wsg_envelope_encode(&c->env, &b);
      sink += b.len;
    }
    double t1 = now_ns();
    for (long i = 0; i < iters; i++) {
      wsg_envelope_decode(&out, b.data, b.len, NULL);
      sink += out.data_len;
    }
    double t2 = now_ns();
    enc[r] = (t1 - t0) / (double)iters;
    dec[r] = (t2 - t1) / (double)iters;
  }
  report(c->name, "encode", b.len, enc);
  report(c->name, "decode", b.len, dec);
  wsg_buf_finish(&b);
  return 0;
}

int main(int argc, char **argv) {
  long iters = argc > 1 ? strtol(argv[1], NULL, 10) : DEFAULT_ITERS;
  if (iters <= 0) {
    fprintf(stderr, "usage: %s [iterations per repetition, > 0]\n", argv[0]);
    return 2;
  }
  static uint8_t payload[1024];
  for (size_t i = 0; i < sizeof payload; i++)
    payload[i] = (uint8_t)('a' + i % 26);
  static uint64_t ids[LIST_CONNS];
  for (size_t i = 0; i < LIST_CONNS; i++)
    ids[i] = 0x51a2b3c400000000u + i * 7919; /* realistic: prefix + counter, uint64 encodings */

  wsg_envelope msg = {0};
  msg.kind = WSG_ENV_MSG;
  msg.fields = WSG_F_GATEWAY | WSG_F_SLOT | WSG_F_USER | WSG_F_CONN | WSG_F_TS | WSG_F_SEQ |
               WSG_F_DATA | WSG_F_BINARY;
  msg.gateway = "gw-7f3a";
  msg.gateway_len = 7;
  msg.slot = 3;
  msg.user = "user-000123";
  msg.user_len = 11;
  msg.conn = 0x51a2b3c400000017;
  msg.ts_us = 1700000000123456;
  msg.seq = 1234;
  msg.data = payload;

  wsg_envelope list = {0};
  list.kind = WSG_ENV_DELIVER;
  list.fields = WSG_F_GATEWAY | WSG_F_SLOT | WSG_F_CONNS | WSG_F_TS | WSG_F_DATA | WSG_F_BINARY;
  list.gateway = "gw-7f3a";
  list.gateway_len = 7;
  list.slot = 3;
  list.conn_ids = ids;
  list.conns.count = LIST_CONNS;
  list.ts_us = 1700000000123456;
  list.data = payload;

  bench_case cases[4] = {{"msg, 100 B", msg},
                         {"msg, 1 KiB", msg},
                         {"deliver 100 conns, 100 B", list},
                         {"deliver 100 conns, 1 KiB", list}};
  cases[0].env.data_len = cases[2].env.data_len = 100;
  cases[1].env.data_len = cases[3].env.data_len = 1024;

  printf("envelope_bench: %d repetitions of %ld operations each, ns of thread CPU time per "
         "operation\n\n",
         REPS, iters);
  printf("| %-24s | %-6s | %5s | %8s | %8s | %8s |\n", "envelope", "op", "bytes", "median", "min",
         "max");
  printf("|--------------------------|--------|------:|---------:|---------:|---------:|\n");
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    if (run(&cases[i], iters) != 0)
      return 1;
  return 0;
}
