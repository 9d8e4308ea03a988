/*
 * processor: wsgate-processor as a library: wires the configuration into the consumer, the
 * router, the handler and the operations endpoint, and runs the loop that turns batches of
 * inbound envelopes into outbound ones.
 *
 * The loop: poll a batch; decode each envelope and call the handler, which records its actions;
 * resolve every user the batch sends to in one pipelined Redis round trip; encode and produce the
 * outbound envelopes; release the inbound records (their offsets become committable once Kafka
 * acknowledges what they caused). Bad input (an undecodable envelope, a payload the handler
 * rejects) is counted, logged at a bounded rate, optionally dead-lettered, and skipped.
 *
 * Threads: proc_processor_run() is the consumer thread (the caller's); the operations endpoint
 * runs on a thread of its own and reads only atomics and the metrics registry.
 */
#ifndef PROCESSOR_H
#define PROCESSOR_H

#include <signal.h>

#include "proc_config.h"

typedef struct proc_processor proc_processor;

/*
 * Opens the handler, connects to Kafka (checking the topics), prepares Redis and starts the
 * operations endpoint. `cfg` is borrowed for the processor's life. Returns 0; -2 when the
 * configuration is at fault (bad --handler or --handler-arg: exit 2); -1 otherwise (exit 1). The
 * message is in `err`. The waits for Kafka end early once *stop is set (may be NULL).
 */
int proc_processor_create(proc_processor **out, const proc_config *cfg,
                          const volatile sig_atomic_t *stop, char *err, size_t errlen);

/*
 * Runs until *stop becomes nonzero (set it from a signal handler) or Kafka fails for good. Then
 * finishes the batch in hand, waits for its acknowledgements, commits, leaves the group. Returns
 * 0 after a clean stop, 1 after a failure (logged).
 */
int proc_processor_run(proc_processor *p, const volatile sig_atomic_t *stop);

/* The bound port of the operations endpoint (useful with --http-port 0). */
int proc_processor_http_port(const proc_processor *p);

void proc_processor_destroy(proc_processor *p); /* NULL is a no-op */

#endif
