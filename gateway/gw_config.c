/*
 * gw_config: the option table of wsgate-gateway and the checks no single row can express.
 *
 * Threads: main thread only, before any other thread starts.
 */
#include "gw_config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "gw_jwt.h"
#include "wsg_dframe.h"
#include "wsg_envelope.h"

#define OPT(field) offsetof(gw_config, field)

/* One row per option; with the shared groups of common/wsg_options.c these make one table
 * (gw_sections below) that wsg_config turns into parsing, --help and the Markdown reference, so
 * the help text IS the user documentation: say what the option does and when to change it. */
static const wsg_option listener_rows[] = {
    {"listen-addr", 0, "WSGATE_LISTEN_ADDR", WSG_OPT_STRING, OPT(listen_addr), "0.0.0.0", 0, 0,
     NULL, 0, "Address the WebSocket listener binds to."},
    {"listen-port", 'p', "WSGATE_LISTEN_PORT", WSG_OPT_INT, OPT(listen_port), "8080", 0, 65535,
     NULL, 0, "WebSocket port (0 picks a free port, logged at start)."},
    {"tls-cert", 0, "WSGATE_TLS_CERT", WSG_OPT_STRING, OPT(tls_cert), NULL, 0, 0, NULL, 0,
     "PEM certificate chain: serve wss:// (needs --tls-key; ALPN is pinned to http/1.1)."},
    {"tls-key", 0, "WSGATE_TLS_KEY", WSG_OPT_STRING, OPT(tls_key), NULL, 0, 0, NULL, 0,
     "PEM private key of --tls-cert."},
    {"subprotocol", 0, "WSGATE_SUBPROTOCOL", WSG_OPT_STRING, OPT(subprotocol), "wsgate.v1", 0, 0,
     NULL, 0,
     "WebSocket subprotocol this gateway speaks, and <subprotocol>+seq the same with resumable, "
     "sequenced delivery (see --resume-max); a client offering only other subprotocols gets 400 "
     "(offering none is allowed)."},
    {"max-message", 0, "WSGATE_MAX_MESSAGE", WSG_OPT_SIZE, OPT(max_message), "1m", 1, 16 * WSG_MIB,
     NULL, 0,
     "Largest client message after reassembly and decompression; larger ones close with 1009."},
    {"rx-buffer", 0, "WSGATE_RX_BUFFER", WSG_OPT_SIZE, OPT(rx_buffer), "512", 128, 1 * WSG_MIB,
     NULL, 0,
     "Per-connection receive buffer of libwebsockets: the main part of an idle connection's "
     "memory; larger values only save system calls on big messages."},
    {"ping-interval", 0, "WSGATE_PING_INTERVAL", WSG_OPT_DURATION, OPT(ping_interval_ms), "30s",
     1 * WSG_SEC, 1 * WSG_HOUR, NULL, 0,
     "Send a WebSocket ping after this long without a pong (whole seconds)."},
    {"idle-timeout", 0, "WSGATE_IDLE_TIMEOUT", WSG_OPT_DURATION, OPT(idle_timeout_ms), "60s",
     2 * WSG_SEC, 2 * WSG_HOUR, NULL, 0,
     "Hang up a connection that has not answered a ping for this long (whole seconds, more than "
     "--ping-interval)."},
    {"deflate", 0, "WSGATE_DEFLATE", WSG_OPT_BOOL, OPT(deflate), "false", 0, 0, NULL, 0,
     "Offer permessage-deflate; costs about 300 KiB per connection that uses it."},
    {"deflate-max-conns", 0, "WSGATE_DEFLATE_MAX_CONNS", WSG_OPT_INT, OPT(deflate_max_conns),
     "1000", 0, 10000000, NULL, 0,
     "With --deflate, at most this many connections negotiate compression at once; later ones "
     "run uncompressed."},
    {"allowed-origins", 0, "WSGATE_ALLOWED_ORIGINS", WSG_OPT_STRING, OPT(allowed_origins), "", 0, 0,
     NULL, 0,
     "Comma-separated Origin values allowed to connect (e.g. https://app.example.com); empty "
     "allows any, a request with another Origin gets 403."},
    {"max-connections", 0, "WSGATE_MAX_CONNECTIONS", WSG_OPT_INT, OPT(max_connections), "0", 0,
     100000000, NULL, 0,
     "Refuse upgrades with 503 beyond this many connections (0: the file descriptor limit minus "
     "a reserve of 256 for Kafka, Redis and the operations port, minus --max-handshakes)."},
    {"max-upgrades-per-sec", 0, "WSGATE_MAX_UPGRADES_PER_SEC", WSG_OPT_INT,
     OPT(max_upgrades_per_sec), "2000", 0, 10000000, NULL, 0,
     "Accept at most this many upgrades per second (503 + Retry-After beyond; 0: unlimited); "
     "smooths reconnect storms after another gateway died. Charged only once the token is "
     "verified, so refused requests never spend it."},

    {"handshake-timeout", 0, "WSGATE_HANDSHAKE_TIMEOUT", WSG_OPT_DURATION,
     OPT(handshake_timeout_ms), "5s", 1 * WSG_SEC, 60 * WSG_SEC, NULL, 0,
     "Close a socket that has not completed its upgrade (TLS, request head) this long after it "
     "was accepted (whole seconds). 5 s covers a slow mobile handshake; longer only lets idle "
     "or trickling sockets (slowloris) hold descriptors and header buffers."},
    {"max-handshakes", 0, "WSGATE_MAX_HANDSHAKES", WSG_OPT_INT, OPT(max_handshakes), "1024", 16,
     1000000, NULL, 0,
     "Sockets accepted and not yet upgraded the gateway holds at once, beyond --max-connections "
     "(later ones are closed at accept); also the pool of request-header buffers (about 13 KiB "
     "each, so 1024 is 13 MiB). 1024 absorbs a reconnect storm at --max-upgrades-per-sec."},
    {"max-conns-per-user", 0, "WSGATE_MAX_CONNS_PER_USER", WSG_OPT_INT, OPT(max_conns_per_user),
     "100", 0, 1000000, NULL, 0,
     "Connections one user may hold across all gateways, counted in Redis (the user's entry "
     "hash); one more is closed with 4004 once upgraded (0: no limit). Entries of gateways "
     "whose lease is gone are removed before a refusal, so a crashed gateway locks no one out."},
    {"max-conns-per-addr", 0, "WSGATE_MAX_CONNS_PER_ADDR", WSG_OPT_INT, OPT(max_conns_per_addr),
     "1000", 0, 100000000, NULL, 0,
     "Sockets one source address (an IPv6 /64) may hold open; beyond, new ones are closed at "
     "accept (0: no cap). 1000 leaves room for a large NAT; set 0 behind a proxy or balancer "
     "that does not keep client addresses (the manifests' Service keeps them: "
     "externalTrafficPolicy Local)."},
    {"max-pending-per-addr", 0, "WSGATE_MAX_PENDING_PER_ADDR", WSG_OPT_INT,
     OPT(max_pending_per_addr), "64", 0, 1000000, NULL, 0,
     "Of those, sockets one source address may hold before their upgrade; beyond, new ones are "
     "closed at accept (0: no cap). 64 is more than any client needs in flight, and keeps one "
     "address from taking more than its share of --max-handshakes."},
    {"max-upgrades-per-addr", 0, "WSGATE_MAX_UPGRADES_PER_ADDR", WSG_OPT_INT,
     OPT(max_upgrades_per_addr), "50", 0, 10000000, NULL, 0,
     "Upgrade attempts per second one source address may make (burst as many), charged after "
     "the Origin and token-shape checks and before the signature is verified; beyond, 503 with "
     "Retry-After (0: no cap). Keeps one address from spending the gateway's CPU on signatures "
     "and its share of --max-upgrades-per-sec."},

    {"rx-memory-max", 0, "WSGATE_RX_MEMORY_MAX", WSG_OPT_SIZE, OPT(rx_memory_max), "256m",
     1 * WSG_MIB, 1024LL * 1024 * WSG_MIB, NULL, 0,
     "Memory all connections together may hold for partly received messages and messages "
     "waiting for Kafka; a connection that needs more is closed with 1013."},
    {"loop-clock", 0, "WSGATE_LOOP_CLOCK", WSG_OPT_BOOL, OPT(loop_clock), "false", 0, 0, NULL, 0,
     "Stamp frames (the envelope's ts) and the latency histograms, and time the rate limits, "
     "with one clock reading per event-loop iteration instead of reading the clock per frame: "
     "less CPU per frame, stamps early by up to one loop iteration (docs/GATEWAY.md, latency "
     "knobs)."},
    {"eager-write", 0, "WSGATE_EAGER_WRITE", WSG_OPT_BOOL, OPT(eager_write), "true", 0, 0, NULL, 0,
     "Write a delivery to a connection whose send queue is empty at once instead of waiting for "
     "the socket's next writeable event: one system call per reply instead of three "
     "(docs/GATEWAY.md, latency knobs); off restores the queue-then-write path."},
    {"coalesce-writes", 0, "WSGATE_COALESCE_WRITES", WSG_OPT_BOOL, OPT(coalesce_writes), "true", 0,
     0, NULL, 0,
     "When a connection's send queue holds several whole messages, frame them into one buffer "
     "(up to 64 KiB) and write it with one system call instead of one per message "
     "(docs/GATEWAY.md, latency knobs); never on compressed connections."},
    {"rx-memory-per-user", 0, "WSGATE_RX_MEMORY_PER_USER", WSG_OPT_SIZE, OPT(rx_memory_per_user),
     "16m", 0, 1024LL * 1024 * WSG_MIB, NULL, 0,
     "Of --rx-memory-max, what one user's connections together may hold; a connection of that "
     "user that needs more is closed with 1013 (0: no share, only the global bound)."},
};

static const wsg_option auth_rows[] = {
    {"jwt-secret", 0, "WSGATE_JWT_SECRET", WSG_OPT_STRING, OPT(jwt_secret), NULL, 0, 0, NULL,
     WSG_OPTF_SECRET,
     "HS256 secret that signs client tokens (at least 32 bytes); prefer --jwt-secret-file."},
    {"jwt-secret-file", 0, "WSGATE_JWT_SECRET_FILE", WSG_OPT_STRING, OPT(jwt_secret_file), NULL, 0,
     0, NULL, 0,
     "File holding the HS256 secret (one trailing newline is ignored), e.g. a mounted Kubernetes "
     "secret."},
    {"jwt-audience", 0, "WSGATE_JWT_AUDIENCE", WSG_OPT_STRING, OPT(jwt_audience), NULL, 0, 0, NULL,
     0, "Required `aud` claim value (string or one element of an array); unset: not checked."},
    {"jwt-user-claim", 0, "WSGATE_JWT_USER_CLAIM", WSG_OPT_STRING, OPT(jwt_user_claim), "sub", 0, 0,
     NULL, 0, "Claim that holds the user id (a non-empty string)."},
    {"jwt-leeway", 0, "WSGATE_JWT_LEEWAY", WSG_OPT_DURATION, OPT(jwt_leeway_ms), "30s", 0,
     1 * WSG_HOUR, NULL, 0, "Clock skew tolerated on `exp` and `nbf` (whole seconds)."},
    {"jwt-algorithms", 0, "WSGATE_JWT_ALGORITHMS", WSG_OPT_STRING, OPT(jwt_algorithms), "HS256", 0,
     0, NULL, 0,
     "Comma-separated JWS algorithms accepted (HS256, HS384, HS512, RS256, RS384, RS512, PS256, "
     "ES256, ES384, EdDSA); a token's own `alg` is only checked against this list, never trusted. "
     "HS* need --jwt-secret(-file) or `oct` keys in --jwt-jwks-file; the others a public key."},
    {"jwt-key-file", 0, "WSGATE_JWT_KEY_FILE", WSG_OPT_STRING, OPT(jwt_key_file), NULL, 0, 0, NULL,
     0,
     "PEM file of the identity provider's public key(s) or certificate(s) (RSA of 2048 bits or "
     "more, EC P-256/P-384, Ed25519); used for tokens with no `kid` or a `kid` no JWKS key has."},
    {"jwt-jwks-file", 0, "WSGATE_JWT_JWKS_FILE", WSG_OPT_STRING, OPT(jwt_jwks_file), NULL, 0, 0,
     NULL, 0,
     "JWKS document (RFC 7517, {\"keys\":[...]}) saved from the provider's jwks_uri; keys are "
     "chosen by the token's `kid`. Unknown key types and encryption keys are skipped."},
    {"token-refresh-grace", 0, "WSGATE_TOKEN_REFRESH_GRACE", WSG_OPT_DURATION,
     OPT(token_refresh_grace_ms), "30s", 0, 1 * WSG_HOUR, NULL, 0,
     "When a connection's token `exp` passes, the gateway sends a refresh_required frame and "
     "closes the connection with 4003 unless a refresh op with a new token of the same user "
     "arrives within this long (whole seconds; docs/PROTOCOL.md); 0: tokens are checked only at "
     "the upgrade."},
    {"jwt-jwks-url", 0, "WSGATE_JWT_JWKS_URL", WSG_OPT_STRING, OPT(jwt_jwks_url), NULL, 0, 0, NULL,
     0,
     "HTTPS URL of the identity provider's JWKS (its OpenID configuration's `jwks_uri`), fetched "
     "at start, every --jwt-jwks-refresh, and when a token names an unknown `kid`; while it "
     "fails, the last good keys stay in use."},
    {"jwt-jwks-refresh", 0, "WSGATE_JWT_JWKS_REFRESH", WSG_OPT_DURATION, OPT(jwt_jwks_refresh_ms),
     "5m", 1 * WSG_SEC, 24 * WSG_HOUR, NULL, 0, "How often --jwt-jwks-url is fetched again."},
    {"jwt-jwks-min-interval", 0, "WSGATE_JWT_JWKS_MIN_INTERVAL", WSG_OPT_DURATION,
     OPT(jwt_jwks_min_interval_ms), "30s", 1 * WSG_SEC, 1 * WSG_HOUR, NULL, 0,
     "Least time between two fetches of --jwt-jwks-url caused by unknown `kid`s or failures, so "
     "tokens with made-up kids cannot flood the provider."},
    {"jwt-jwks-ca-file", 0, "WSGATE_JWT_JWKS_CA_FILE", WSG_OPT_STRING, OPT(jwt_jwks_ca_file), NULL,
     0, 0, NULL, 0,
     "PEM CA certificate(s) trusted for --jwt-jwks-url instead of the system's (a private CA)."},
    {"jwt-issuer", 0, "WSGATE_JWT_ISSUER", WSG_OPT_STRING, OPT(jwt_issuer), "", 0, 0, NULL, 0,
     "Comma-separated accepted `iss` values, compared exactly (e.g. "
     "https://idp.example.com/realms/app); empty: `iss` is not checked."},
    {"insecure-dev-user", 0, "WSGATE_INSECURE_DEV_USER", WSG_OPT_BOOL, OPT(insecure_dev_user),
     "false", 0, 0, NULL, 0,
     "DEVELOPMENT ONLY: accept ?user=<id> without a token when no token is sent; anyone can be "
     "anyone. Logged as a warning at start and on upgrades."},
};

/* After the shared Kafka group (brokers, -X). */
static const wsg_option kafka_rows[] = {
    {"inbound-topic", 0, "WSGATE_INBOUND_TOPIC", WSG_OPT_STRING, OPT(inbound_topic),
     "wsgate.inbound", 0, 0, NULL, 0, "Topic client frames and connect/disconnect events go to."},
    {"outbound-topic", 0, "WSGATE_OUTBOUND_TOPIC", WSG_OPT_STRING, OPT(outbound_topic),
     "wsgate.outbound", 0, 0, NULL, 0,
     "Topic of replies and pushes; this gateway reads the partition of the slot it holds."},
    {"slots", 0, "WSGATE_SLOTS", WSG_OPT_INT, OPT(slots), "0", 0, 65536, NULL, 0,
     "Number of gateway slots (0: the outbound topic's partition count, read at start; must not "
     "exceed it)."},
    {"outbound-queue", 0, "WSGATE_OUTBOUND_QUEUE", WSG_OPT_INT, OPT(outbound_queue), "4096", 16,
     1000000, NULL, 0,
     "Envelopes the outbound consumer may hand to the WebSocket thread before it pauses its "
     "partition."},
    {"outbound-queue-bytes", 0, "WSGATE_OUTBOUND_QUEUE_BYTES", WSG_OPT_SIZE,
     OPT(outbound_queue_bytes), "64m", 1 * WSG_MIB, 16384 * WSG_MIB, NULL, 0,
     "Payload bytes the outbound hand-off queue may hold (see --outbound-queue)."},
    {"outbound-consume", 0, "WSGATE_OUTBOUND_CONSUME", WSG_OPT_ENUM, OPT(outbound_consume),
     "thread", 0, 0, "thread|loop", 0,
     "Who reads the slot's outbound records: a consumer thread that hands them to the WebSocket "
     "thread, or the WebSocket thread itself, woken by librdkafka through a pipe (one thread "
     "hand-off less per reply; docs/GATEWAY.md, latency knobs)."},
};

/* After the shared Redis group (the connection): the slot lease and this gateway's record. */
static const wsg_option registry_rows[] = {
    {"lease-ttl", 0, "WSGATE_LEASE_TTL", WSG_OPT_DURATION, OPT(lease_ttl_ms), "15s", 1 * WSG_SEC,
     1 * WSG_HOUR, NULL, 0,
     "Lifetime of the slot lease and gateway record; a crashed gateway's slot frees after this."},
    {"lease-renew", 0, "WSGATE_LEASE_RENEW", WSG_OPT_DURATION, OPT(lease_renew_ms), "5s", 100,
     1 * WSG_HOUR, NULL, 0,
     "How often the lease is renewed (less than --lease-ttl, ideally a third)."},
    {"gateway-id", 0, "WSGATE_GATEWAY_ID", WSG_OPT_STRING, OPT(gateway_id), "", 0, 0, NULL, 0,
     "Unique id of this gateway process (default: <hostname>-<random hex>, new at every start)."},
    {"advertise-addr", 0, "WSGATE_ADVERTISE_ADDR", WSG_OPT_STRING, OPT(advertise_addr), "", 0, 0,
     NULL, 0,
     "host:port written to the gateway's Redis record (default: <hostname>:<listen-port>)."},
    {"direct-listen", 0, "WSGATE_DIRECT_LISTEN", WSG_OPT_STRING, OPT(direct_listen), "", 0, 0, NULL,
     0,
     "host:port of the direct reply listener: processors started with --direct-secret-file send "
     "replies there instead of through Kafka (docs/GATEWAY.md, \"Direct replies\"); empty: off."},
    {"direct-secret-file", 0, "WSGATE_DIRECT_SECRET_FILE", WSG_OPT_STRING, OPT(direct_secret_file),
     NULL, 0, 0, NULL, 0,
     "File holding the secret processors must present on the direct listener (16 to 256 bytes, "
     "the same file as theirs); required with --direct-listen."},
    {"direct-advertise", 0, "WSGATE_DIRECT_ADVERTISE", WSG_OPT_STRING, OPT(direct_advertise), "", 0,
     0, NULL, 0,
     "host:port processors connect to, written as `direct` in the gateway's Redis record "
     "(default: --direct-listen; required when that listens on 0.0.0.0 or [::])."},
    {"direct-max-peers", 0, "WSGATE_DIRECT_MAX_PEERS", WSG_OPT_INT, OPT(direct_max_peers), "256", 1,
     65536, NULL, 0,
     "Connections the direct listener holds at once (a processor keeps one); more are refused."},
};

static const wsg_option connection_rows[] = {
    /* --- per-connection limits --- */
    {"sendq-hard", 0, "WSGATE_SENDQ_HARD", WSG_OPT_SIZE, OPT(sendq_hard), "1m", 1 * WSG_KIB,
     1024 * WSG_MIB, NULL, 0,
     "Close a connection with 4001 at once when its unsent messages exceed this many bytes."},
    {"sendq-soft", 0, "WSGATE_SENDQ_SOFT", WSG_OPT_SIZE, OPT(sendq_soft), "256k", 1 * WSG_KIB,
     1024 * WSG_MIB, NULL, 0,
     "Close a connection with 4001 when its unsent messages stay above this many bytes for "
     "--sendq-soft-time."},
    {"sendq-soft-time", 0, "WSGATE_SENDQ_SOFT_TIME", WSG_OPT_DURATION, OPT(sendq_soft_time_ms),
     "10s", 0, 1 * WSG_HOUR, NULL, 0,
     "See --sendq-soft. Checked on every push and on each keepalive check, so a queue that stops "
     "growing is closed within --sendq-soft-time + --ping-interval."},
    {"sendq-max", 0, "WSGATE_SENDQ_MAX", WSG_OPT_SIZE, OPT(sendq_max), "256m", 1 * WSG_MIB,
     1024LL * 1024 * WSG_MIB, NULL, 0,
     "Unsent bytes all connections' send queues together may hold; over it the largest queues "
     "are closed with 4001 until the total is under it again. The default leaves room in the "
     "manifests' 1 GiB pod limit for --rx-memory-max and the connections themselves."},
    {"rate-msgs", 0, "WSGATE_RATE_MSGS", WSG_OPT_INT, OPT(rate_msgs), "1000", 0, 10000000, NULL, 0,
     "Messages per second one connection may send, sustained (0: unlimited). On by default, far "
     "above an interactive client's need: it bounds what one socket can make Kafka and the "
     "processors carry."},
    {"rate-burst", 0, "WSGATE_RATE_BURST", WSG_OPT_INT, OPT(rate_burst), "0", 0, 10000000, NULL, 0,
     "Messages one connection may send at once above --rate-msgs (0: one second's worth)."},
    {"rate-bytes", 0, "WSGATE_RATE_BYTES", WSG_OPT_SIZE, OPT(rate_bytes), "8m", 0, 1024 * WSG_MIB,
     NULL, 0,
     "Bytes per second one connection may send, sustained, with a burst of --max-message (0: "
     "unlimited)."},
    {"rate-action", 0, "WSGATE_RATE_ACTION", WSG_OPT_ENUM, OPT(rate_action), "pause", 0, 0,
     "pause|close", 0,
     "Over a rate limit: pause reading from the connection until it is within the limit again "
     "(TCP pushes back on the client), or close it with 1008."},

    /* --- resume (docs/PROTOCOL.md, "Resume after reconnect") --- */
    {"resume-max", 0, "WSGATE_RESUME_MAX", WSG_OPT_INT, OPT(resume_max), "1000", 0, 1000000, NULL,
     0,
     "Most missed messages replayed to a client that reconnects with subprotocol "
     "<subprotocol>+seq and ?resume=<q>; if it missed more, it gets the latest ones and is told "
     "the replay was incomplete. 0 turns resumable delivery off (the +seq subprotocol gets 400)."},
    {"resume-max-age", 0, "WSGATE_RESUME_MAX_AGE", WSG_OPT_DURATION, OPT(resume_max_age_ms), "5m",
     1 * WSG_SEC, 24 * WSG_HOUR, NULL, 0,
     "Messages older than this are not replayed (the client is told the replay was incomplete); "
     "processors keep them no longer than their --resume-ttl anyway."},
    {"resume-seq-ttl", 0, "WSGATE_RESUME_SEQ_TTL", WSG_OPT_DURATION, OPT(resume_seq_ttl_ms), "24h",
     1 * WSG_SEC, 30 * 24 * WSG_HOUR, NULL, 0,
     "Lifetime of a user's sequence counter this gateway creates when a resumable client connects "
     "before any message was sent to its user; keep it equal to the processors' "
     "--resume-seq-ttl."},

    /* --- channels (docs/PROTOCOL.md, "Channels") --- */
    {"channel-max-per-conn", 0, "WSGATE_CHANNEL_MAX_PER_CONN", WSG_OPT_INT,
     OPT(channel_max_per_conn), "64", 1, 65536, NULL, 0,
     "Most channels one connection may subscribe to; one more is answered "
     "too_many_subscriptions."},
    {"channel-max", 0, "WSGATE_CHANNEL_MAX", WSG_OPT_INT, OPT(channel_max), "1000000", 1, 100000000,
     NULL, 0,
     "Most distinct channels with subscribers on this gateway (bounds its memory); a subscribe "
     "to a new channel beyond it is answered too_many_channels."},
    {"channel-presence-users", 0, "WSGATE_CHANNEL_PRESENCE_USERS", WSG_OPT_INT,
     OPT(channel_presence_users), "100", 1, 1000, NULL, 0,
     "Most distinct users listed in an answer to a client's presence op; past it the answer "
     "says \"truncated\":true (connections stays exact)."},
    {"channel-presence-inflight", 0, "WSGATE_CHANNEL_PRESENCE_INFLIGHT", WSG_OPT_INT,
     OPT(channel_presence_inflight), "64", 1, 100000, NULL, 0,
     "Most client presence queries waiting for Redis on this gateway (each connection may have "
     "4); one more is answered presence_busy."},
    {"channel-resync-rate", 0, "WSGATE_CHANNEL_RESYNC_RATE", WSG_OPT_INT, OPT(channel_resync_rate),
     "50000", 100, 10000000, NULL, 0,
     "Subscriptions per second whose presence entry and channel gateway-set member are written "
     "again after each Redis (re)connect (Redis may have restarted empty): paced, not one "
     "burst."},
    {"channel-join-leave-interval", 0, "WSGATE_CHANNEL_JOIN_LEAVE_INTERVAL", WSG_OPT_DURATION,
     OPT(channel_jl_interval_ms), "1s", 100, 1 * WSG_HOUR, NULL, 0,
     "Least time between two presence_change frames of a channel with at least "
     "--channel-join-leave-threshold subscribers on this gateway: its join/leave events in "
     "between are coalesced into the next frame."},
    {"channel-join-leave-threshold", 0, "WSGATE_CHANNEL_JOIN_LEAVE_THRESHOLD", WSG_OPT_INT,
     OPT(channel_jl_threshold), "50", 0, 100000000, NULL, 0,
     "Subscribers of a channel on this gateway from which its presence_change frames are "
     "coalesced (--channel-join-leave-interval); below it each batch is written at once (0: "
     "always coalesced)."},
    {"channel-decide-timeout", 0, "WSGATE_CHANNEL_DECIDE_TIMEOUT", WSG_OPT_DURATION,
     OPT(channel_decide_timeout_ms), "5s", 100, 10 * 60 * WSG_SEC, NULL, 0,
     "How long a subscribe in a namespace with subscribe=handler waits for the handler's "
     "decision; then it is answered timeout (and a late decision is ignored)."},
    {"channel-pending-per-conn", 0, "WSGATE_CHANNEL_PENDING_PER_CONN", WSG_OPT_INT,
     OPT(channel_pending_per_conn), "8", 1, 31, NULL, 0,
     "Most subscribes of one connection waiting for the handler's decision; one more is "
     "answered too_many_pending."},
    {"channel-pending-max", 0, "WSGATE_CHANNEL_PENDING_MAX", WSG_OPT_INT, OPT(channel_pending_max),
     "10000", 1, 1000000, NULL, 0,
     "Most subscribes waiting for the handler's decision on this gateway (bounds their memory, "
     "about 300 bytes each); one more is answered too_many_pending."},
    {"channel-tail-check", 0, "WSGATE_CHANNEL_TAIL_CHECK", WSG_OPT_DURATION,
     OPT(channel_tail_check_ms), "1s", 0, 10 * 60 * WSG_SEC, NULL, 0,
     "Quiet time after a channel's last publication here before the gateway reads the channel's "
     "last offset in Redis once, so a last publication whose record was lost is delivered from "
     "the history (or reported with a gap) instead of waiting for the next one; 0: never. One "
     "read per channel per quiet period after activity, none for idle channels."},
    {"channel-tail-inflight", 0, "WSGATE_CHANNEL_TAIL_INFLIGHT", WSG_OPT_INT,
     OPT(channel_tail_inflight), "64", 1, 100000, NULL, 0,
     "Most tail checks (--channel-tail-check) waiting for Redis on this gateway; the channels due "
     "beyond wait in line, so a burst of quiet channels never floods Redis."},
    {"channel-key-ttl", 0, "WSGATE_CHANNEL_KEY_TTL", WSG_OPT_DURATION, OPT(channel_key_ttl_ms),
     "24h", 2 * WSG_SEC, 30 * 24 * WSG_HOUR, NULL, 0,
     "TTL of the channel keys gateways write (a channel's gateway set, presence counts and "
     "presence entries), set with each write and renewed by every gateway that holds the channel "
     "(--channel-key-renew): what a crashed gateway left there expires after this long."},
    {"channel-key-renew", 0, "WSGATE_CHANNEL_KEY_RENEW", WSG_OPT_DURATION,
     OPT(channel_key_renew_ms), "6h", 1 * WSG_SEC, 15 * 24 * WSG_HOUR, NULL, 0,
     "How often this gateway renews the TTL of the channel keys it holds, one channel at a time "
     "spread evenly over the period (at most half of --channel-key-ttl; a quarter leaves three "
     "renewals before a live key could expire)."},
    {"channel-claim", 0, "WSGATE_CHANNEL_CLAIM", WSG_OPT_STRING, OPT(channel_claim), "channels", 0,
     0, NULL, 0,
     "Token claim listing the channels a user may subscribe to: an array of names, or prefixes "
     "ending with `*`. Without it a token allows no channel; --insecure-dev-user users may "
     "subscribe to any."},

    /* --- drain --- */
    {"drain-window", 0, "WSGATE_DRAIN_WINDOW", WSG_OPT_DURATION, OPT(drain_window_ms), "10s", 0,
     1 * WSG_HOUR, NULL, 0,
     "On SIGTERM, close clients (1001, with a reconnect hint) spread evenly over this long, so "
     "they do not all reconnect at the same moment."},
    {"drain-grace", 0, "WSGATE_DRAIN_GRACE", WSG_OPT_DURATION, OPT(drain_grace_ms), "25s",
     1 * WSG_SEC, 1 * WSG_HOUR, NULL, 0,
     "On SIGTERM, exit at the latest after this long (keep it below Kubernetes' "
     "terminationGracePeriodSeconds)."},
};

static const wsg_option_group listener = {"listener", listener_rows, WSG_COUNTOF(listener_rows)};
static const wsg_option_group auth = {"auth", auth_rows, WSG_COUNTOF(auth_rows)};
static const wsg_option_group kafka = {"gateway kafka", kafka_rows, WSG_COUNTOF(kafka_rows)};
static const wsg_option_group registry = {"registry", registry_rows, WSG_COUNTOF(registry_rows)};
static const wsg_option_group connection = {"connection", connection_rows,
                                            WSG_COUNTOF(connection_rows)};

static const wsg_option_override kafka_overrides[] = {
    {.name = "kafka-brokers", .add_flags = WSG_OPTF_REQUIRED},
};

/* The order of --help and docs/CONFIG-gateway.md. */
static const wsg_config_section gw_sections[] = {
    {&listener, 0, NULL, 0},
    {&wsg_ops_group, OPT(http), NULL, 0},
    {&auth, 0, NULL, 0},
    {&wsg_kafka_group, OPT(kafka), kafka_overrides, WSG_COUNTOF(kafka_overrides)},
    {&kafka, 0, NULL, 0},
    {&wsg_redis_group, OPT(redis), NULL, 0},
    {&registry, 0, NULL, 0},
    {&connection, 0, NULL, 0},
    {&wsg_chns_group, OPT(channels), NULL, 0},
    {&wsg_log_group, OPT(log), NULL, 0},
};

static const wsg_config_spec gw_spec = {
    .program = "wsgate-gateway",
    .summary = "The WebSocket edge of wsgate: authenticates clients at the upgrade (HS256 JWT), "
               "produces each client frame to Kafka as an envelope keyed by user id, registers "
               "connections in Redis and delivers the replies processors send to its slot's "
               "partition of the outbound topic.",
    .sections = gw_sections,
    .nsections = WSG_COUNTOF(gw_sections),
    .help_metrics = true,
};

const wsg_config_spec *gw_config_spec(void) {
  return &gw_spec;
}

int gw_config_validate(const gw_config *cfg, char *err, size_t errlen) {
  wsg_chns *ns;
  if (wsg_chns_resolve(&cfg->channels, &ns, err, errlen) != 0)
    return -1;
  wsg_chns_destroy(ns);
  if (cfg->lease_renew_ms >= cfg->lease_ttl_ms) {
    snprintf(err, errlen,
             "--lease-renew (%llu ms) must be shorter than --lease-ttl (%llu ms); a third of it "
             "leaves two retries before the lease expires",
             (unsigned long long)cfg->lease_renew_ms, (unsigned long long)cfg->lease_ttl_ms);
    return -1;
  }
  if (cfg->channel_key_renew_ms * 2 > cfg->channel_key_ttl_ms) {
    snprintf(err, errlen,
             "--channel-key-renew (%llu ms) must be at most half of --channel-key-ttl (%llu ms), "
             "or a renewal walk slowed by Redis could let a live gateway's channel keys expire; "
             "a quarter (6h for 24h) is the default",
             (unsigned long long)cfg->channel_key_renew_ms,
             (unsigned long long)cfg->channel_key_ttl_ms);
    return -1;
  }
  /* libwebsockets counts keepalive in whole seconds; compare what it will actually use. */
  if (cfg->idle_timeout_ms / 1000 <= cfg->ping_interval_ms / 1000) {
    snprintf(err, errlen,
             "--idle-timeout (%llu s) must be longer than --ping-interval (%llu s), or every "
             "connection is hung up before its pong can arrive",
             (unsigned long long)(cfg->idle_timeout_ms / 1000),
             (unsigned long long)(cfg->ping_interval_ms / 1000));
    return -1;
  }
  if ((cfg->tls_cert == NULL) != (cfg->tls_key == NULL)) {
    snprintf(err, errlen,
             "--tls-cert and --tls-key go together: give both to serve wss://, or "
             "neither to serve ws:// behind a TLS-terminating balancer");
    return -1;
  }
  if (cfg->jwt_secret && cfg->jwt_secret_file) {
    snprintf(err, errlen, "--jwt-secret and --jwt-secret-file both given; keep one");
    return -1;
  }
  bool has_secret = cfg->jwt_secret || cfg->jwt_secret_file;
  bool has_public = cfg->jwt_key_file || cfg->jwt_jwks_file || cfg->jwt_jwks_url;
  if (cfg->jwt_jwks_url && strncmp(cfg->jwt_jwks_url, "https://", 8) != 0) {
    snprintf(err, errlen,
             "--jwt-jwks-url %s: only https:// URLs are fetched (the keys decide who is "
             "authenticated)",
             cfg->jwt_jwks_url);
    return -1;
  }
  if (!has_secret && !has_public && !cfg->insecure_dev_user) {
    snprintf(err, errlen,
             "no JWT secret: give --jwt-secret-file (or --jwt-secret / WSGATE_JWT_SECRET), or "
             "--jwt-key-file / --jwt-jwks-file with --jwt-algorithms; --insecure-dev-user runs "
             "without authentication, for development only");
    return -1;
  }
  uint32_t algs = 0;
  char aerr[256];
  if (gw_jwt_algs_parse(cfg->jwt_algorithms, &algs, aerr, sizeof aerr) != GW_JWT_OK) {
    snprintf(err, errlen, "--jwt-algorithms: %s", aerr);
    return -1;
  }
  uint32_t hmac = 1u << GW_JWT_ALG_HS256 | 1u << GW_JWT_ALG_HS384 | 1u << GW_JWT_ALG_HS512;
  /* A JWKS document may hold oct keys; a PEM file never does. */
  if ((has_secret || has_public) && (algs & hmac) && !has_secret && !cfg->jwt_jwks_file &&
      !cfg->jwt_jwks_url) {
    snprintf(err, errlen,
             "--jwt-algorithms %s accepts HMAC (HS*) tokens but no secret is given: set "
             "--jwt-algorithms to the provider's algorithm (e.g. RS256), or give --jwt-secret-file",
             cfg->jwt_algorithms);
    return -1;
  }
  if ((algs & ~hmac) && !has_public && !cfg->insecure_dev_user) {
    snprintf(err, errlen,
             "--jwt-algorithms %s accepts public-key tokens but no key is given: add "
             "--jwt-key-file, --jwt-jwks-file or --jwt-jwks-url",
             cfg->jwt_algorithms);
    return -1;
  }
  if (cfg->rx_memory_per_user != 0 && cfg->rx_memory_per_user < cfg->max_message) {
    snprintf(err, errlen,
             "--rx-memory-per-user (%llu bytes) is below --max-message (%llu bytes): a user "
             "could never send a message of the largest size; raise it or set 0",
             (unsigned long long)cfg->rx_memory_per_user, (unsigned long long)cfg->max_message);
    return -1;
  }
  if (cfg->sendq_soft > cfg->sendq_hard) {
    snprintf(err, errlen, "--sendq-soft (%llu bytes) is above --sendq-hard (%llu bytes)",
             (unsigned long long)cfg->sendq_soft, (unsigned long long)cfg->sendq_hard);
    return -1;
  }
  uint64_t drain_after = GW_DRAIN_LINGER_MS + GW_DRAIN_FLUSH_MIN_MS + GW_DRAIN_RELEASE_MS;
  if (cfg->drain_window_ms + drain_after > cfg->drain_grace_ms) {
    snprintf(err, errlen,
             "--drain-window (%llu ms) must end at least %llu ms before --drain-grace (%llu ms): "
             "clients are closed during the window; after it, their close handshakes, the Kafka "
             "flush and the Redis release need 1 s each",
             (unsigned long long)cfg->drain_window_ms, (unsigned long long)drain_after,
             (unsigned long long)cfg->drain_grace_ms);
    return -1;
  }
  if (cfg->rate_burst > 0 && cfg->rate_msgs == 0) {
    snprintf(err, errlen, "--rate-burst needs --rate-msgs");
    return -1;
  }
  if (cfg->subprotocol == NULL || cfg->subprotocol[0] == '\0' ||
      strpbrk(cfg->subprotocol, ", \t") != NULL) {
    snprintf(err, errlen, "--subprotocol must be one non-empty token without commas or spaces");
    return -1;
  }
  if (cfg->gateway_id && strlen(cfg->gateway_id) > WSG_MAX_GATEWAY_LEN) {
    snprintf(err, errlen, "--gateway-id is longer than %d bytes", WSG_MAX_GATEWAY_LEN);
    return -1;
  }
  if (cfg->gateway_id && cfg->gateway_id[0] &&
      !wsg_utf8_valid(cfg->gateway_id, strlen(cfg->gateway_id))) {
    snprintf(err, errlen, "--gateway-id is not valid UTF-8");
    return -1;
  }
  if (wsg_kafka_options_check(&cfg->kafka, err, errlen) != 0)
    return -1;
  if (!cfg->inbound_topic[0] || !cfg->outbound_topic[0]) {
    snprintf(err, errlen, "--inbound-topic and --outbound-topic must not be empty");
    return -1;
  }
  return 0;
}

/* Reads the secret file: bounded, one trailing newline (as `echo` writes it) removed. */
int gw_config_read_secret_file(const char *path, uint8_t **out, size_t *outlen, char *err,
                               size_t errlen) {
  return wsg_config_read_secret("--jwt-secret-file", path, GW_JWT_SECRET_MAX, out, outlen, err,
                                errlen);
}

/* Splits --allowed-origins into lower-cased entries (Origin's scheme and host are
 * case-insensitive; browsers send them lower-case anyway). */
static int parse_origins(gw_config *cfg, char *err, size_t errlen) {
  const char *p = cfg->allowed_origins ? cfg->allowed_origins : "";
  while (*p) {
    while (*p == ',' || *p == ' ' || *p == '\t')
      p++;
    if (!*p)
      break;
    const char *start = p;
    while (*p && *p != ',' && *p != ' ' && *p != '\t')
      p++;
    size_t len = (size_t)(p - start);
    if (cfg->norigins == GW_ORIGINS_MAX) {
      snprintf(err, errlen, "--allowed-origins lists more than %d origins", GW_ORIGINS_MAX);
      return -1;
    }
    while (len > 0 && start[len - 1] == '/') /* "https://a.example/" means the origin */
      len--;
    char *o = strndup(start, len);
    if (!o) {
      snprintf(err, errlen, "out of memory");
      return -1;
    }
    for (char *c = o; *c; c++)
      *c = (char)tolower((unsigned char)*c);
    cfg->origins[cfg->norigins++] = o;
  }
  return 0;
}

/* --direct-*: the secret read, the advertised address settled. */
static int derive_direct(gw_config *cfg, char *err, size_t errlen) {
  if (!cfg->direct_listen || !cfg->direct_listen[0])
    return 0;
  if (!cfg->direct_secret_file || !cfg->direct_secret_file[0]) {
    snprintf(err, errlen,
             "--direct-listen needs --direct-secret-file (the secret processors present; e.g. "
             "`openssl rand -base64 32 > direct.secret`, the same file for the processors)");
    return -1;
  }
  if (wsg_config_read_secret("--direct-secret-file", cfg->direct_secret_file, WSG_DFRAME_SECRET_MAX,
                             &cfg->direct_secret, &cfg->direct_secret_len, err, errlen) != 0)
    return -1;
  if (cfg->direct_secret_len < WSG_DFRAME_SECRET_MIN) {
    snprintf(err, errlen, "--direct-secret-file %s: %zu bytes; at least %u are needed",
             cfg->direct_secret_file, cfg->direct_secret_len, WSG_DFRAME_SECRET_MIN);
    return -1;
  }
  if (!cfg->direct_advertise || !cfg->direct_advertise[0]) {
    if (strncmp(cfg->direct_listen, "0.0.0.0:", 8) == 0 ||
        strncmp(cfg->direct_listen, "[::]:", 5) == 0 || cfg->direct_listen[0] == ':') {
      snprintf(err, errlen,
               "--direct-listen %s listens on every address: give --direct-advertise, the "
               "host:port processors can reach",
               cfg->direct_listen);
      return -1;
    }
    free(cfg->direct_advertise);
    if (!(cfg->direct_advertise = strdup(cfg->direct_listen))) {
      snprintf(err, errlen, "out of memory");
      return -1;
    }
  }
  return 0;
}

static int derive(gw_config *cfg, char *err, size_t errlen) {
  if (cfg->jwt_secret) {
    cfg->jwt_key_len = strlen(cfg->jwt_secret);
    cfg->jwt_key = (uint8_t *)strdup(cfg->jwt_secret);
    if (!cfg->jwt_key) {
      snprintf(err, errlen, "out of memory");
      return -1;
    }
  } else if (cfg->jwt_secret_file) {
    if (gw_config_read_secret_file(cfg->jwt_secret_file, &cfg->jwt_key, &cfg->jwt_key_len, err,
                                   errlen))
      return -1;
  }
  if (cfg->jwt_key && cfg->jwt_key_len < GW_JWT_SECRET_MIN) {
    snprintf(err, errlen,
             "the JWT secret is %zu bytes; HS256 needs at least %d (RFC 7518 3.2), e.g. "
             "`openssl rand -base64 48`",
             cfg->jwt_key_len, GW_JWT_SECRET_MIN);
    return -1;
  }

  char host[256];
  if (gethostname(host, sizeof host) != 0 || host[0] == '\0')
    snprintf(host, sizeof host, "gateway");
  host[sizeof host - 1] = '\0';

  if (cfg->gateway_id == NULL || cfg->gateway_id[0] == '\0') {
    uint32_t r = 0;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r) {
      snprintf(err, errlen, "getrandom: %s", strerror(errno));
      return -1;
    }
    /* Keep the id within the envelope's bound however long the hostname is. */
    char id[WSG_MAX_GATEWAY_LEN + 1];
    snprintf(id, sizeof id, "%.*s-%08x", WSG_MAX_GATEWAY_LEN - 9, host, r);
    free(cfg->gateway_id);
    cfg->gateway_id = strdup(id);
  }
  uint64_t boot = 0;
  if (getrandom(&boot, sizeof boot, 0) != (ssize_t)sizeof boot) {
    snprintf(err, errlen, "getrandom: %s", strerror(errno));
    return -1;
  }
  snprintf(cfg->gateway_boot, sizeof cfg->gateway_boot, "%016llx", (unsigned long long)boot);
  if (cfg->advertise_addr == NULL || cfg->advertise_addr[0] == '\0') {
    char addr[320];
    snprintf(addr, sizeof addr, "%s:%lld", host, (long long)cfg->listen_port);
    free(cfg->advertise_addr);
    cfg->advertise_addr = strdup(addr);
  }
  if (!cfg->gateway_id || !cfg->advertise_addr) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  if (derive_direct(cfg, err, errlen) != 0)
    return -1;
  if (parse_origins(cfg, err, errlen))
    return -1;
  if (wsg_log_options_resolve(&cfg->log, err, errlen) != 0)
    return -1;
  cfg->rate_action_kind = strcmp(cfg->rate_action, "close") == 0 ? GW_RATE_CLOSE : GW_RATE_PAUSE;
  return 0;
}

wsg_config_result gw_config_load(gw_config *cfg, int argc, char **argv, char **envp, char *err,
                                 size_t errlen) {
  wsg_config_result r = wsg_config_parse(&gw_spec, cfg, argc, argv, envp, err, errlen);
  if (r != WSG_CONFIG_OK)
    return r;
  if (gw_config_validate(cfg, err, errlen) != 0)
    return WSG_CONFIG_ERROR;
  if (derive(cfg, err, errlen) != 0)
    return WSG_CONFIG_ERROR;
  return WSG_CONFIG_OK;
}

void gw_config_log(const gw_config *cfg) {
  wsg_config_log(&gw_spec, cfg);
  WSG_INFO("config", "gateway id %s, advertised as %s", cfg->gateway_id, cfg->advertise_addr);
}

void gw_config_finish(gw_config *cfg) {
  if (!cfg)
    return;
  wsg_config_finish(&gw_spec, cfg);
  if (cfg->jwt_key) {
    explicit_bzero(cfg->jwt_key, cfg->jwt_key_len);
    free(cfg->jwt_key);
    cfg->jwt_key = NULL;
  }
  cfg->jwt_key_len = 0;
  if (cfg->direct_secret) {
    explicit_bzero(cfg->direct_secret, cfg->direct_secret_len);
    free(cfg->direct_secret);
    cfg->direct_secret = NULL;
  }
  cfg->direct_secret_len = 0;
  for (size_t i = 0; i < cfg->norigins; i++) {
    free(cfg->origins[i]);
    cfg->origins[i] = NULL;
  }
  cfg->norigins = 0;
}
