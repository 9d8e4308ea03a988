/*
 * proc_echo: the built-in `echo` handler: every client frame is sent back to the connection that
 * sent it, as it came (same bytes, same text/binary kind). Routed from the envelope alone, so it
 * never touches Redis: the simplest end-to-end check of a deployment.
 *
 * Threads: the consumer thread.
 */
#ifndef PROC_ECHO_H
#define PROC_ECHO_H

#include "wsgate_handler.h"

const wsgate_handler *proc_echo_handler(void); /* static; never NULL */

#endif
