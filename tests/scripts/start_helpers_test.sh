#!/usr/bin/env bash
# The start helpers of scripts/ (scripts/lib.sh's wsg_spawn, used by scripts/kafka, scripts/redis
# and scripts/cluster) against the two failures of issue 16 item 10, with fake servers so that
# each case is deterministic and takes seconds:
#   - a server whose command line does not name it yet (as between the fork and the exec of
#     setsid and java, which under load outlasts the first liveness checks) is alive, and its
#     start succeeds: it used to be reported "exited during start-up" and left running;
#   - a start that fails (server exits, never gets ready, topics fail, the script is killed)
#     leaves no process behind.
# Plus a real redis-server start/stop on a port of its own (47379). Prints TAP.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=scripts/lib.sh
. "${ROOT}/scripts/lib.sh"

T="$(mktemp -d /tmp/wsgate-start-test.XXXXXX)"
KAFKA_PORT=47092
KAFKA_CONTROLLER_PORT=47093
REDIS_PORT=47379
N=0
FAILED=0

ok() {
  N=$((N + 1))
  printf 'ok %d - %s\n' "$N" "$1"
}
not_ok() {
  N=$((N + 1))
  FAILED=$((FAILED + 1))
  printf 'not ok %d - %s\n' "$N" "$1"
}
check() {
  local what="$1"
  shift
  if "$@"; then ok "$what"; else not_ok "$what"; fi
}
# Every fake server names $T in its command line once started; the helpers' own pids too.
leftovers() { pgrep -f -- "$T" || true; }
# After a start helper has returned, nothing of this test may still run (given 1 s to exit).
nothing_left() {
  local i
  for ((i = 0; i < 10; i++)); do
    [[ -z "$(leftovers)" ]] && return 0
    sleep 0.1
  done
  printf '# left behind: %s\n' "$(leftovers | xargs -r ps -o pid=,args= -p)"
  return 1
}
cleanup() {
  local p
  for p in $(leftovers); do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$T"
}
trap cleanup EXIT

mkdir -p "${T}/bin" "${T}/cache/kafka-${WSG_KAFKA_VERSION}" "${T}/run"
: >"${T}/cache/kafka-${WSG_KAFKA_VERSION}/.complete"
mkfifo "${T}/fifo"
export WSGATE_CACHE="${T}/cache" WSGATE_RUN_DIR="${T}/run" FAKE_DIR="$T"
export WSGATE_KAFKA_PORT="$KAFKA_PORT" WSGATE_KAFKA_CONTROLLER_PORT="$KAFKA_CONTROLLER_PORT"
# Names the fakes take once "exec'd": what the helpers' pid-file checks look for.
export FAKE_KAFKA_NAME="java kafka.Kafka ${T}" FAKE_REDIS_NAME="redis-server ${T}"

# The fake JVM: the storage tool succeeds; the broker does what FAKE_JAVA_MODE says. Waits use
# read -t on a FIFO (no child process that could outlive it). The code handed to bash -c must
# not contain the main class, or the command line would name it before the "exec".
cat >"${T}/bin/fake-java" <<'FAKE'
#!/usr/bin/env bash
case " $* " in *" kafka.tools.StorageTool "*) exit 0 ;; esac
wait_s='exec 3<>"${FAKE_DIR}/fifo"; read -r -t "$1" -u 3 || true'
case "${FAKE_JAVA_MODE:-}" in
slow-exec)
  # 1.5 s alive under a name that is not the JVM's, then ready as the broker.
  # (bash -c CODE WAIT_CODE 1.5: $0 is the wait's code, run again once "exec'd".)
  exec -a "fake-pre-exec ${FAKE_DIR}" bash -c 'eval "$0"
    echo "[fake] INFO [KafkaRaftServer nodeId=1] Kafka Server started"
    exec -a "$FAKE_KAFKA_NAME" bash -c "$0" _ 300' "${wait_s}" 1.5 ;;
die)
  echo "fake JVM: Error: could not reserve the heap" >&2
  exit 1 ;;
never)
  exec -a "$FAKE_KAFKA_NAME" bash -c "${wait_s}" _ 300 ;;
esac
echo "fake-java: unknown FAKE_JAVA_MODE '${FAKE_JAVA_MODE:-}'" >&2
exit 2
FAKE
# A fake redis-server that never answers PING; daemonizes as the real one does when its
# configuration says so (so the old daemonized start is tested the same way).
cat >"${T}/bin/fake-redis" <<'FAKE'
#!/usr/bin/env bash
wait_s='exec 3<>"${FAKE_DIR}/fifo"; read -r -t "$1" -u 3 || true'
if grep -q '^daemonize yes' "$1"; then
  pidfile="$(sed -n 's/^pidfile //p' "$1")"
  setsid bash -c 'exec -a "$FAKE_REDIS_NAME" bash -c "$0" _ 300' "$wait_s" </dev/null >/dev/null 2>&1 &
  printf '%s\n' "$!" >"$pidfile"
  exit 0
fi
exec -a "$FAKE_REDIS_NAME" bash -c "${wait_s}" _ 300
FAKE
printf '#!/bin/sh\nexit 0\n' >"${T}/bin/admin-ok"
printf '#!/bin/sh\necho "fake admin: broker unreachable" >&2\nexit 1\n' >"${T}/bin/admin-fail"
chmod +x "${T}/bin/"*

kafka() { WSGATE_KAFKA_JAVA="${T}/bin/fake-java" "${ROOT}/scripts/kafka" "$@" >>"${T}/out" 2>&1; }
last_out() { sed 's/^/#   /' "${T}/out"; }
says() { grep -q -- "$1" "${T}/out"; }

# --- scripts/lib.sh ------------------------------------------------------------------------------
# The fake redis-server (foreground) stands for a process whose command line is not the JVM's.
(
  wsg_spawn "${T}/lib.log" "${T}/bin/fake-redis" /dev/null
  pid="$WSG_SPAWN_PID"
  printf '%s\n' "$pid" >"${T}/lib.pid"
  sleep 0.3
  rc=0
  wsg_spawn_alive "$pid" || rc=1
  ! wsg_pidfile_live "${T}/lib.pid" kafka.Kafka >/dev/null || rc=2
  exit "$rc"
) >/dev/null 2>&1
rc=$?
check "wsg_spawn_alive: a spawned process whose command line does not name it yet is alive (pid-file check: not)" [ "$rc" -eq 0 ]
check "a script that exits without wsg_spawn_confirm stops what it spawned" nothing_left

(
  wsg_spawn "${T}/lib.log" "${T}/bin/fake-redis" /dev/null
  wsg_spawn_confirm "$WSG_SPAWN_PID"
  printf '%s\n' "$WSG_SPAWN_PID" >"${T}/confirmed.pid"
  exit 1
) >/dev/null 2>&1
pid=""
read -r pid <"${T}/confirmed.pid" 2>/dev/null
check "a confirmed process outlives the script that spawned it" wsg_pid_alive "$pid"
[[ -z "$pid" ]] || kill -KILL "$pid" 2>/dev/null
not_spawned() { ! wsg_spawn_alive "$1"; }
check "wsg_spawn_alive is false for a process that is not this shell's child" not_spawned 1

# --- scripts/kafka ---------------------------------------------------------------------------------
: >"${T}/out"
rc=0
FAKE_JAVA_MODE=slow-exec WSGATE_ADMIN_BIN="${T}/bin/admin-ok" kafka start || rc=$?
if ((rc == 0)) && ! says "exited during start-up"; then
  ok "kafka start succeeds when the JVM's command line names it only 1.5 s after the spawn"
else
  not_ok "kafka start succeeds when the JVM's command line names it only 1.5 s after the spawn"
  last_out
fi
check "kafka status finds the broker it started" kafka status
kafka stop
check "kafka stop leaves nothing" nothing_left

: >"${T}/out"
rc=0
FAKE_JAVA_MODE=die WSGATE_ADMIN_BIN="${T}/bin/admin-ok" kafka start || rc=$?
check "kafka start fails, saying so, when the JVM exits" [ "$rc" -ne 0 ]
check "... with the reason from the JVM's log" says "could not reserve the heap"
check "... and leaves nothing" nothing_left

: >"${T}/out"
rc=0
FAKE_JAVA_MODE=never WSGATE_KAFKA_START_TIMEOUT=2 WSGATE_ADMIN_BIN="${T}/bin/admin-ok" kafka start || rc=$?
check "kafka start fails when the broker is never ready" [ "$rc" -ne 0 ]
check "... and leaves no JVM behind" nothing_left
check "... nor a pid file" [ ! -e "${T}/run/kafka-${KAFKA_PORT}/kafka.pid" ]

: >"${T}/out"
rc=0
FAKE_JAVA_MODE=slow-exec WSGATE_ADMIN_BIN="${T}/bin/admin-fail" kafka start || rc=$?
check "kafka start fails when the topics cannot be created" [ "$rc" -ne 0 ]
check "... and leaves no broker behind" nothing_left

: >"${T}/out"
FAKE_JAVA_MODE=never WSGATE_ADMIN_BIN="${T}/bin/admin-ok" WSGATE_KAFKA_JAVA="${T}/bin/fake-java" \
  "${ROOT}/scripts/kafka" start >>"${T}/out" 2>&1 &
starter=$!
wsg_wait_until 10 "the fake broker" test -s "${T}/run/kafka-${KAFKA_PORT}/kafka.pid" 2>/dev/null
sleep 0.3
kill -TERM "$starter"
wait "$starter"
rc=$?
check "kafka start killed (SIGTERM) while it waits exits non-zero" [ "$rc" -ne 0 ]
check "... and leaves no broker behind" nothing_left

# --- scripts/redis ----------------------------------------------------------------------------------
export WSGATE_REDIS_PORT="$REDIS_PORT"
: >"${T}/out"
rc=0
WSGATE_REDIS_SERVER="${T}/bin/fake-redis" WSGATE_REDIS_START_TIMEOUT=2 "${ROOT}/scripts/redis" start >>"${T}/out" 2>&1 || rc=$?
check "redis start fails when the server never answers PING" [ "$rc" -ne 0 ]
check "... and leaves no server behind" nothing_left

if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
  : >"${T}/out"
  rc=0
  "${ROOT}/scripts/redis" start >>"${T}/out" 2>&1 || rc=$?
  check "redis start (real redis-server on ${REDIS_PORT})" [ "$rc" -eq 0 ]
  check "redis answers PING" [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]
  redis_status() { "${ROOT}/scripts/redis" status >/dev/null; }
  check "redis status finds it" redis_status
  "${ROOT}/scripts/redis" stop >>"${T}/out" 2>&1
  port_closed() { ! wsg_port_open "$1"; }
  check "redis stop: nothing listens on ${REDIS_PORT}" port_closed "$REDIS_PORT"
else
  for what in "redis start (real)" "redis answers PING" "redis status" "redis stop"; do
    N=$((N + 1))
    printf 'ok %d - %s # SKIP redis-server not installed\n' "$N" "$what"
  done
fi

((FAILED == 0)) || printf '# scripts output (last case):\n%s\n' "$(last_out)"
printf '1..%d\n' "$N"
((FAILED == 0))
