# shellcheck shell=bash
# The --cluster half of scripts/redis: a local Redis Cluster of 3 primaries and 3 replicas on
# 127.0.0.1, ports WSGATE_REDIS_CLUSTER_PORT..+5 (cluster bus +10000), nothing persisted. Sourced
# by scripts/redis after lib.sh; rc_main start|stop|status is its entry point.
#
# Formed with `redis-cli --cluster create ... --cluster-replicas 1`; start returns once every node
# reports cluster_state:ok and every replica's link to its primary is up (a replica that never
# synchronised cannot take over). A short cluster-node-timeout (2 s) makes a killed primary's
# replica take over quickly, and cluster-replica-validity-factor 0 lets it do so however long its
# link was down: a test cluster prefers availability to the freshest data.

RC_BASE="${WSGATE_REDIS_CLUSTER_PORT:-17001}"
wsg_require_port WSGATE_REDIS_CLUSTER_PORT "$RC_BASE"
((RC_BASE + 5 + 10000 <= 65535)) || wsg_die "WSGATE_REDIS_CLUSTER_PORT=${RC_BASE}: its bus ports (+10000) exceed 65535"
RC_NODES=6
RC_DIR="${WSGATE_RUN_DIR}/redis-cluster-${RC_BASE}"
RC_TIMEOUT="${WSGATE_REDIS_START_TIMEOUT:-20}"
RC_STOP_TIMEOUT=10
RC_SERVER="${WSGATE_REDIS_SERVER:-redis-server}"
RC_SPAWNED=() # the nodes this start spawned, confirmed (left running) once the cluster is formed

rc_ports() {
  local i
  for ((i = 0; i < RC_NODES; i++)); do printf '%s\n' "$((RC_BASE + i))"; done
}

rc_pid() {
  wsg_pidfile_live "${RC_DIR}/$1/redis.pid" redis-server
}

# How many of the nodes run (their pid file names a live redis-server).
rc_running_count() {
  local p n=0
  for p in $(rc_ports); do
    if rc_pid "$p" >/dev/null; then n=$((n + 1)); fi
  done
  printf '%s\n' "$n"
}

# 0 once every node answers and reports cluster_state:ok; 99 if a node's process is gone.
rc_state_ok() {
  local p
  for p in $(rc_ports); do
    rc_pid "$p" >/dev/null || return 99
    redis-cli -h 127.0.0.1 -p "$p" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || return 1
  done
}

# 0 once every replica reports master_link_status:up.
rc_replicas_synced() {
  local p info
  for p in $(rc_ports); do
    info="$(redis-cli -h 127.0.0.1 -p "$p" info replication 2>/dev/null)" || return 1
    if [[ "$info" == *role:slave* && "$info" != *master_link_status:up* ]]; then
      return 1
    fi
  done
}

# 0 once every node answers PING; 99 (give up) if a node this start spawned is gone (it could not
# bind its port, say; by pid: its command line is not redis-server's until it has exec'd).
rc_ping_all() {
  local i p
  for ((i = 0; i < RC_NODES; i++)); do
    p=$((RC_BASE + i))
    [[ "$(redis-cli -h 127.0.0.1 -p "$p" ping 2>/dev/null)" == "PONG" ]] && continue
    if ! wsg_spawn_alive "${RC_SPAWNED[$i]}"; then
      wsg_tail_log "${RC_DIR}/${p}/redis.log" 10
      return 99
    fi
    return 1
  done
}

rc_start() {
  wsg_require_cmd "$RC_SERVER" redis-cli
  local n p
  n="$(rc_running_count)"
  if ((n == RC_NODES)) && rc_state_ok; then
    wsg_log "redis cluster already running on 127.0.0.1:${RC_BASE}-$((RC_BASE + RC_NODES - 1))"
    return 0
  fi
  if ((n > 0)); then
    wsg_warn "redis cluster on ${RC_BASE}: only ${n} of ${RC_NODES} nodes run or it is not formed; starting it anew"
    rc_stop
  fi
  for p in $(rc_ports); do
    if wsg_port_open "$p" || wsg_port_open "$((p + 10000))"; then
      wsg_die "port ${p} or $((p + 10000)) is in use by a process this script did not start; pick another WSGATE_REDIS_CLUSTER_PORT"
    fi
  done
  rm -rf "$RC_DIR"
  for p in $(rc_ports); do
    mkdir -p "${RC_DIR}/${p}"
    # Loopback only, no persistence: test data must not survive a restart by accident. Not
    # daemonized: spawned like the single node, so a failed start stops what it spawned. The
    # pidfile line is for a node restarted by hand (redis_failover restarts a killed primary with
    # --daemonize yes), so that stop still finds it.
    cat >"${RC_DIR}/${p}/redis.conf" <<CONF
bind 127.0.0.1
port ${p}
daemonize no
pidfile ${RC_DIR}/${p}/redis.pid
logfile ${RC_DIR}/${p}/redis.log
dir ${RC_DIR}/${p}
save ""
appendonly no
cluster-enabled yes
cluster-config-file nodes.conf
cluster-node-timeout 2000
cluster-replica-validity-factor 0
CONF
    wsg_spawn "${RC_DIR}/${p}/redis.log" "$RC_SERVER" "${RC_DIR}/${p}/redis.conf"
    printf '%s\n' "$WSG_SPAWN_PID" >"${RC_DIR}/${p}/redis.pid"
    RC_SPAWNED+=("$WSG_SPAWN_PID")
  done
  if ! wsg_wait_until "$RC_TIMEOUT" "the cluster's nodes to answer PING" rc_ping_all; then
    rc_stop
    wsg_die "the redis cluster's nodes did not come up"
  fi
  local addrs=()
  for p in $(rc_ports); do addrs+=("127.0.0.1:${p}"); done
  if ! redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"${RC_DIR}/create.log" 2>&1; then
    wsg_tail_log "${RC_DIR}/create.log"
    rc_stop
    wsg_die "redis-cli --cluster create failed"
  fi
  local rc=0
  wsg_wait_until "$RC_TIMEOUT" "cluster_state:ok on every node" rc_state_ok || rc=$?
  ((rc != 0)) || wsg_wait_until "$RC_TIMEOUT" "every replica to sync with its primary" rc_replicas_synced || rc=$?
  if ((rc != 0)); then
    wsg_tail_log "${RC_DIR}/${RC_BASE}/redis.log"
    rc_stop
    wsg_die "the redis cluster on ${RC_BASE} did not reach cluster_state:ok"
  fi
  for p in "${RC_SPAWNED[@]}"; do wsg_spawn_confirm "$p"; done
  wsg_log "redis cluster running on 127.0.0.1:${RC_BASE}-$((RC_BASE + RC_NODES - 1)) (3 primaries, 3 replicas, state ${RC_DIR})"
}

rc_stop() {
  local p pid stopped=0
  for p in $(rc_ports); do
    pid="$(rc_pid "$p")" || continue
    redis-cli -h 127.0.0.1 -p "$p" shutdown nosave >/dev/null 2>&1 || true
    if ! wsg_wait_until "$RC_STOP_TIMEOUT" "redis (pid ${pid}) to exit" wsg_pid_gone "$pid" 2>/dev/null; then
      wsg_stop_pid "$pid" "$RC_STOP_TIMEOUT" || wsg_die "could not stop redis-server pid ${pid}"
    fi
    stopped=$((stopped + 1))
  done
  rm -rf "$RC_DIR"
  wsg_log "redis cluster on ${RC_BASE}: ${stopped} nodes stopped"
}

rc_status() {
  local n
  n="$(rc_running_count)"
  if ((n == RC_NODES)) && rc_state_ok; then
    printf 'redis cluster running ports %s-%s\n' "$RC_BASE" "$((RC_BASE + RC_NODES - 1))"
    return 0
  fi
  if ((n > 0)); then
    printf 'redis cluster degraded (%s of %s nodes) ports %s-%s\n' "$n" "$RC_NODES" "$RC_BASE" "$((RC_BASE + RC_NODES - 1))"
    return 3
  fi
  printf 'redis cluster stopped ports %s-%s\n' "$RC_BASE" "$((RC_BASE + RC_NODES - 1))"
  return 3
}

rc_main() {
  case "${1:-}" in
  start) rc_start ;;
  stop) rc_stop ;;
  status) rc_status ;;
  *)
    printf 'usage: scripts/redis start|stop|status [--cluster]\n' >&2
    return 2
    ;;
  esac
}
