/*
 * gw_server_metrics: the metric table of the WebSocket server (gw_server.c and the files sharing
 * gw_session.h: upgrades, closes, traffic, send queues, resume), for register_metrics() in
 * gw_server.c, --help-metrics and docs/METRICS-gateway.md.
 */
#include "gw_metrics.h"
#include "gw_session.h"

#define COUNTER(f, name, help, labels) WSG_COUNTER_ROW(gw_server, f, name, help, labels)
#define GAUGE(f, name, help, labels)   WSG_GAUGE_ROW(gw_server, f, name, help, labels)

#define UPGRADES      "wsgate_gateway_upgrades_total"
#define UPGRADES_HELP "WebSocket upgrade requests by outcome."
#define DROPPED       "wsgate_gateway_outbound_dropped_total"
#define DROPPED_HELP  "Outbound deliveries not sent, by reason."
#define RESUMES       "wsgate_gateway_resumes_total"
#define PUBS          "wsgate_gateway_channel_publications_total"
#define PUBS_HELP     "publish records from processors, by what became of them."
#define TAILS         "wsgate_gateway_channel_tail_checks_total"
#define TAILS_HELP                                                                                 \
  "Reads of a channel's last offset after it was quiet for --channel-tail-check, by what they "    \
  "found (skipped: Redis not connected or the read failed)."
#define RECOVERS      "wsgate_gateway_channel_recoveries_total"
#define RECOVERS_HELP "Subscribes with since, by whether the history covered what was missed."
#define RESUMES_HELP  "Reconnections with ?resume=, by whether every missed message was replayed."

static const double latency_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                        0.1,   0.25,   0.5,   1,    2.5,   5};

static const double hop_bounds[] = WSG_HOP_BOUNDS;

/* Rows generated from the X-macro lists, so a new upgrade outcome or close code has its series. */
#define UPGRADE_ROW(name, label)                                                                   \
  COUNTER(m_upgrades[UPG_##name], UPGRADES, UPGRADES_HELP, "result=\"" label "\""),
#define CLOSES "wsgate_gateway_closes_total"
#define CLOSES_HELP                                                                                \
  "Connections the gateway closed, by close code (app: an application's own code, 3000-3999 or "   \
  "4100-4999)."
#define CLOSE_ROW(name, code, when, reason)                                                        \
  COUNTER(m_closes[CLOSE_IDX_##name], CLOSES, CLOSES_HELP, "code=\"" #code "\""),
#define BACKSTOPS "wsgate_gateway_close_backstops_total"
#define BACKSTOPS_HELP                                                                             \
  "Closes the client did not answer within 5 s of the gateway's close frame (it stopped "          \
  "reading or never sent its own), ended by the gateway with a FIN, or a reset if our last "       \
  "bytes were still unread, by close code (app: an application's own code)."
#define BACKSTOP_ROW(name, code, when, reason)                                                     \
  COUNTER(m_backstops[CLOSE_IDX_##name], BACKSTOPS, BACKSTOPS_HELP, "code=\"" #code "\""),

/* Channel ops: one series per op and answer (gw_chops.h's table), indexed by -error. */
#define CHOPS      "wsgate_gateway_channel_ops_total"
#define CHOPS_HELP "Channel ops from clients, by op and answer (ok, or the error code)."
#define CHOP_ROW(op, oplabel, value, code)                                                         \
  COUNTER(m_chops[op][-(value)], CHOPS, CHOPS_HELP, "op=\"" oplabel "\",result=\"" code "\""),
#define CHOP_UNKNOWN_ROW(name, value, code, msg) CHOP_ROW(GW_CHOP_NONE, "unknown", value, code)
#define CHOP_SUBSCRIBE_ROW(name, value, code, msg)                                                 \
  CHOP_ROW(GW_CHOP_SUBSCRIBE, "subscribe", value, code)
#define CHOP_UNSUBSCRIBE_ROW(name, value, code, msg)                                               \
  CHOP_ROW(GW_CHOP_UNSUBSCRIBE, "unsubscribe", value, code)
#define CHOP_PUBLISH_ROW(name, value, code, msg) CHOP_ROW(GW_CHOP_PUBLISH, "publish", value, code)
#define CHOP_PRESENCE_ROW(name, value, code, msg)                                                  \
  CHOP_ROW(GW_CHOP_PRESENCE, "presence", value, code)
/* Handler-made subscriptions (gw_chserve_server_op): the results they can have. */
#define CHSRV "wsgate_gateway_channel_server_ops_total"
#define CHSRV_HELP                                                                                 \
  "Subscriptions a handler made or ended (wsgate_subscribe), by op and result (ok, or the "        \
  "limit that refused it)."
#define CHSRV_ROW(i, oplabel, err, code)                                                           \
  COUNTER(m_chsrv[i][-(GW_CHOP_##err)], CHSRV, CHSRV_HELP,                                         \
          "op=\"" oplabel "\",result=\"" code "\""),

/* Sockets closed right after accept, one series per cap (GW_DOOR_REFUSALS). */
#define ACCEPT_REFUSED "wsgate_gateway_accept_refused_total"
#define ACCEPT_REFUSED_HELP                                                                        \
  "Sockets closed right after accept, before reading a byte, by the cap they met "                 \
  "(--max-connections + --max-handshakes, --max-handshakes, --max-conns-per-addr, "                \
  "--max-pending-per-addr)."
#define DOOR_ROW(name, label)                                                                      \
  COUNTER(m_accept_refused[GW_DOOR_##name], ACCEPT_REFUSED, ACCEPT_REFUSED_HELP,                   \
          "reason=\"" label "\""),

static const wsg_metric_def metric_rows[] = {
    UPGRADE_RESULTS(UPGRADE_ROW) /* gw_session.h */
    GW_CLOSE_MAP(CLOSE_ROW)      /* gw_server.h, and an application's own codes: */
    COUNTER(m_closes[CLOSE_IDX_APP_CODE], CLOSES, CLOSES_HELP, "code=\"app\""),
    GW_CLOSE_MAP(BACKSTOP_ROW) /* and again for the backstops: */
    COUNTER(m_backstops[CLOSE_IDX_APP_CODE], BACKSTOPS, BACKSTOPS_HELP, "code=\"app\""),
    COUNTER(m_peer_closes, "wsgate_gateway_client_closes_total",
            "Connections the client closed with a close frame.", NULL),
    COUNTER(m_pings, "wsgate_gateway_pings_total",
            "Keepalive pings sent (--ping-interval without a pong).", NULL),
    COUNTER(m_idle_closes, "wsgate_gateway_idle_closes_total",
            "Connections dropped because no pong came for --idle-timeout (no close frame: 1006).",
            NULL),
    COUNTER(m_pongs_ignored, "wsgate_gateway_pongs_ignored_total",
            "Pongs that answer no ping of ours (unsolicited, or a stale payload): they do not "
            "keep a connection alive.",
            NULL),
    COUNTER(m_sendq_budget_closes, "wsgate_gateway_sendq_budget_closes_total",
            "Connections closed with 4001 because all send queues together exceeded --sendq-max "
            "(the largest first).",
            NULL),
    COUNTER(m_linger_discarded, "wsgate_gateway_linger_discarded_bytes_total",
            "Client input still unread when its connection's socket was closed, read and discarded "
            "so the close is a FIN, not a reset.",
            NULL),
    COUNTER(m_discards, "wsgate_gateway_oversize_discards_total",
            "Messages over --max-message whose rest was read and dropped before their 1009 (so "
            "the client reads it and the close ends with a FIN).",
            NULL),
    COUNTER(m_discarded, "wsgate_gateway_oversize_discarded_bytes_total",
            "Bytes of messages over --max-message read and dropped, paced by --rate-bytes.", NULL),
    GAUGE(m_conns, "wsgate_gateway_connections", "Open WebSocket connections.", NULL),
    GAUGE(m_sendq_bytes, "wsgate_gateway_sendq_bytes",
          "Bytes queued for clients in all send queues.", NULL),
    GAUGE(m_rx_bytes, "wsgate_gateway_rx_buffer_bytes",
          "Bytes held for partly received messages and messages waiting for Kafka.", NULL),
    GAUGE(m_stalled, "wsgate_gateway_stalled_connections",
          "Connections whose reading waits for Kafka's queue to drain.", NULL),
    COUNTER(m_msgs_in, "wsgate_gateway_messages_in_total", "Client messages produced to Kafka.",
            NULL),
    COUNTER(m_bytes_in, "wsgate_gateway_message_bytes_in_total",
            "Payload bytes of client messages produced to Kafka.", NULL),
    COUNTER(m_msgs_out, "wsgate_gateway_messages_out_total", "Messages written to clients.", NULL),
    COUNTER(m_eager_writes, "wsgate_gateway_eager_writes_total",
            "Of those, messages written as they were queued to an idle connection, without "
            "waiting for a writeable event (--eager-write).",
            NULL),
    COUNTER(m_batched_msgs, "wsgate_gateway_eager_batched_messages_total",
            "Of those, messages held to the end of an outbound wake-up that dispatched several "
            "records, so that each connection's messages of that wake-up go out in one write "
            "(--eager-write under load).",
            NULL),
    COUNTER(m_coalesced_msgs, "wsgate_gateway_coalesced_messages_total",
            "Of those, messages written several to one system call (--coalesce-writes).", NULL),
    COUNTER(m_coalesced_writes, "wsgate_gateway_coalesced_writes_total",
            "Writes that carried several messages (--coalesce-writes); messages per write is "
            "wsgate_gateway_coalesced_messages_total divided by this.",
            NULL),
    COUNTER(m_bytes_out, "wsgate_gateway_message_bytes_out_total",
            "Payload bytes of messages written to clients.", NULL),
    COUNTER(m_out_nobody, DROPPED, DROPPED_HELP, "reason=\"no_such_connection\""),
    COUNTER(m_out_too_big, DROPPED, DROPPED_HELP, "reason=\"larger_than_sendq_hard\""),
    COUNTER(m_reg_failed, "wsgate_gateway_registration_failures_total",
            "Connections closed because Redis did not register them.", NULL),
    COUNTER(m_rate_limited, "wsgate_gateway_rate_limited_total",
            "Client messages over a rate limit (paused or closed).", NULL),
    COUNTER(m_kafka_stalls, "wsgate_gateway_kafka_stalls_total",
            "Times a connection stopped reading because Kafka's queue was full.", NULL),
    COUNTER(m_events_lost, "wsgate_gateway_events_lost_total",
            "Envelopes of closed connections Kafka could not take, or messages of connections "
            "closed before their registration (logged as errors).",
            NULL),
    COUNTER(m_resumes_complete, RESUMES, RESUMES_HELP, "result=\"complete\""),
    COUNTER(m_resumes_incomplete, RESUMES, RESUMES_HELP, "result=\"incomplete\""),
    COUNTER(m_replay_reads, "wsgate_gateway_replay_reads_total",
            "Reads of replay streams: positions, catch-ups after a reconnect, gaps filled.", NULL),
    COUNTER(m_replayed, "wsgate_gateway_replayed_messages_total",
            "Messages delivered from a replay stream rather than straight from Kafka.", NULL),
    COUNTER(m_seq_gaps, "wsgate_gateway_sequence_gaps_total",
            "Gap frames sent: messages a connected resumable client can no longer get.", NULL),
    COUNTER(m_seq_dups, "wsgate_gateway_sequence_duplicates_total",
            "Sequenced delivers dropped because the connection already had them.", NULL),
    GAUGE(m_seq_conns, "wsgate_gateway_resumable_connections",
          "Open connections with subprotocol +seq.", NULL),
    WSG_HISTOGRAM_ROW(
        gw_server, m_latency, "wsgate_gateway_outbound_latency_seconds",
        "From an outbound envelope's ts (set by its producer) to its hand-off to connections.",
        NULL, latency_bounds),
    WSG_HISTOGRAM_ROW(gw_server, m_hop_written, "wsgate_gateway_hop_outbound_written_seconds",
                      "Hop 4: from an outbound envelope's ts (when a processor built it) to its "
                      "last byte handed to the socket (lws_write).",
                      NULL, hop_bounds),
    GW_CHOP_ERRNO_MAP(CHOP_UNKNOWN_ROW) /* gw_chops.h */
    GW_CHOP_ERRNO_MAP(CHOP_SUBSCRIBE_ROW) GW_CHOP_ERRNO_MAP(CHOP_UNSUBSCRIBE_ROW)
        GW_CHOP_ERRNO_MAP(CHOP_PUBLISH_ROW) GW_CHOP_ERRNO_MAP(CHOP_PRESENCE_ROW)
            CHSRV_ROW(0, "subscribe", OK, "ok")
                CHSRV_ROW(0, "subscribe", TOO_MANY_SUBS, "too_many_subscriptions")
                    CHSRV_ROW(0, "subscribe", TOO_MANY_CHANNELS, "too_many_channels")
                        CHSRV_ROW(0, "subscribe", UNAVAILABLE, "unavailable")
                            CHSRV_ROW(1, "unsubscribe", OK, "ok")
                                GAUGE(m_channels, "wsgate_gateway_channels",
                                      "Distinct channels with subscribers on this gateway.", NULL),
    GAUGE(m_chsubs, "wsgate_gateway_channel_subscriptions",
          "Channel subscriptions of this gateway's connections.", NULL),
    GAUGE(m_chbytes, "wsgate_gateway_channel_memory_bytes", "Memory held by the channel index.",
          NULL),
    COUNTER(m_pubs[GW_PUB_DELIVERED], PUBS, PUBS_HELP, "result=\"delivered\""),
    COUNTER(m_pubs[GW_PUB_NOBODY], PUBS, PUBS_HELP, "result=\"nobody\""),
    COUNTER(m_pubs[GW_PUB_DUPLICATE], PUBS, PUBS_HELP, "result=\"duplicate\""),
    COUNTER(m_pubs[GW_PUB_TOO_BIG], PUBS, PUBS_HELP, "result=\"too_big\""),
    COUNTER(m_pubs[GW_PUB_NOMEM], PUBS, PUBS_HELP, "result=\"out_of_memory\""),
    COUNTER(m_pub_frames, "wsgate_gateway_channel_deliveries_total",
            "Publication frames queued to subscribers (one shared message per format).", NULL),
    GAUGE(m_chpending, "wsgate_gateway_channel_pending_decisions",
          "Subscribes waiting for the handler's decision (subscribe=handler namespaces).", NULL),
    COUNTER(m_chlate, "wsgate_gateway_channel_late_decisions_total",
            "Handler decisions that came after --channel-decide-timeout (the client was answered "
            "timeout) or for no pending subscribe; ignored.",
            NULL),
    COUNTER(m_chrecover[0], RECOVERS, RECOVERS_HELP, "result=\"recovered\""),
    COUNTER(m_chrecover[1], RECOVERS, RECOVERS_HELP, "result=\"not_recovered\""),
    COUNTER(m_chposreads, "wsgate_gateway_channel_position_reads_total",
            "Reads of a channel's epoch and last offset for a subscribe without since, made while "
            "the channel's position is unknown here (no publication seen, no earlier read found "
            "it empty).",
            NULL),
    COUNTER(m_chreplayed, "wsgate_gateway_channel_replayed_total",
            "Publications sent from a channel's history to recovering subscribers.", NULL),
    COUNTER(m_pub_held, "wsgate_gateway_channel_held_total",
            "Publications that came before an earlier one of their channel and waited for it.",
            NULL),
    COUNTER(m_pub_filled, "wsgate_gateway_channel_filled_total",
            "Missing publications read from the channel's history instead of waiting for them.",
            NULL),
    COUNTER(m_pub_gaps, "wsgate_gateway_channel_gaps_total",
            "Publications a channel's subscribers were told they missed (gap frames' ranges).",
            NULL),
    COUNTER(m_tail[GW_TAIL_CURRENT], TAILS, TAILS_HELP, "result=\"current\""),
    COUNTER(m_tail[GW_TAIL_BEHIND], TAILS, TAILS_HELP, "result=\"behind\""),
    COUNTER(m_tail[GW_TAIL_NEW_EPOCH], TAILS, TAILS_HELP, "result=\"new_epoch\""),
    COUNTER(m_tail[GW_TAIL_HISTORY_GONE], TAILS, TAILS_HELP, "result=\"history_gone\""),
    COUNTER(m_tail[GW_TAIL_SKIPPED], TAILS, TAILS_HELP, "result=\"skipped\""),
    COUNTER(m_tail_filled, "wsgate_gateway_channel_tail_filled_total",
            "Publications read from the history because a tail check found them (no later record "
            "had come): their records were lost.",
            NULL),
    GW_DOOR_REFUSALS(DOOR_ROW) /* gw_session.h */
    COUNTER(m_not_websocket, "wsgate_gateway_not_websocket_total",
            "Requests on the WebSocket port that were not an upgrade (plain HTTP: 426; CONNECT: "
            "405); each answered and closed.",
            NULL),
    COUNTER(m_handshake_timeouts, "wsgate_gateway_handshake_timeouts_total",
            "Sockets closed because they had not completed their upgrade (TLS handshake, request "
            "head) --handshake-timeout after their accept.",
            NULL),
    GAUGE(m_handshakes, "wsgate_gateway_handshakes",
          "Sockets accepted and not yet upgraded (at most --max-handshakes).", NULL),
    GAUGE(m_fd_limit, "wsgate_gateway_fd_limit",
          "File descriptors libwebsockets may use: RLIMIT_NOFILE minus the reserve kept for Kafka, "
          "Redis and the operations port.",
          NULL),
};

const wsg_metric_table gw_server_metric_table =
    WSG_METRIC_TABLE("gateway/gw_server.c", metric_rows);
