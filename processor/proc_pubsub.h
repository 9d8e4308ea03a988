/*
 * proc_pubsub: the `publish` handler: a client frame "<channel>\n<payload>" is published to
 * <channel> (wsgate_publish) with the payload's kind (text or binary); a text frame "?<channel>"
 * is answered {"channel":..,"connections":N,"users":[..]} (wsgate_presence); a text frame
 * "+<channel>" subscribes the sender's connection, "+<channel>\n<user>" every connection of <user>,
 * and "-" unsubscribes likewise (wsgate_subscribe, wsgate_unsubscribe: no check, test use only;
 * so channels starting with ?, + or - cannot be published to from here); in namespaces with
 * subscribe=handler it allows every subscribe except to channels starting with "deny:". The
 * smallest producer
 * of channel publications: tests, benchmarks (wsgate-load) and demos use it; an application does
 * the same from its own handler after checking who may publish where.
 *
 * Threads: the consumer thread.
 */
#ifndef PROC_PUBSUB_H
#define PROC_PUBSUB_H

#include "wsgate_handler.h"

const wsgate_handler *proc_pubsub_handler(void); /* static; never NULL */

#endif
