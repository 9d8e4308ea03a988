# shellcheck shell=bash disable=SC2034 # variables here are read by the scripts that source it
# Shared helpers of scripts/setup, scripts/kafka, scripts/redis and scripts/test: logging, deadlines,
# pid files, and the locations every script agrees on. Sourced, never run:
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# Callers run under `set -euo pipefail`; every function here is safe under it.

# --- locations --------------------------------------------------------------------------------

WSG_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WSG_SCRIPT_NAME="$(basename "$0")"
# Downloads and tools kept between runs (Kafka's jars, the Python venv). Maven keeps its own
# cache in ~/.m2 as usual.
WSGATE_CACHE="${WSGATE_CACHE:-${HOME}/.cache/wsgate}"
# Data, pid files and logs of the servers the scripts start.
WSGATE_RUN_DIR="${WSGATE_RUN_DIR:-/tmp/wsgate-run}"
WSGATE_BUILD_DIR="${WSGATE_BUILD_DIR:-${WSG_REPO_ROOT}/build}"
export WSGATE_CACHE WSGATE_RUN_DIR WSGATE_BUILD_DIR

# The Kafka broker the tests and the local cluster run: one pinned version, 3.9.x, on purpose.
# Kafka 4.0 removed the old protocol versions (KIP-896). librdkafka before the fix for its issue
# #4948 (Debian 12 ships 2.0.2) then negotiates as if the broker lacked idempotence support and
# the gateway would lose its idempotent producer. 3.9.2 is the newest 3.9.x on Maven Central.
# Revisit when Debian ships a librdkafka with that fix.
WSG_KAFKA_VERSION="3.9.2"
WSG_KAFKA_SCALA="2.13"
WSG_KAFKA_HOME="${WSGATE_CACHE}/kafka-${WSG_KAFKA_VERSION}"
WSG_KAFKA_LIBS="${WSG_KAFKA_HOME}/libs"
WSG_VENV="${WSGATE_CACHE}/venv"

# --- logging ----------------------------------------------------------------------------------

wsg_log() { printf '%s: %s\n' "$WSG_SCRIPT_NAME" "$*" >&2; }
wsg_warn() { printf '%s: warning: %s\n' "$WSG_SCRIPT_NAME" "$*" >&2; }
wsg_die() {
  printf '%s: error: %s\n' "$WSG_SCRIPT_NAME" "$*" >&2
  exit 1
}

# Milliseconds on a monotonic-enough clock (bash 5's EPOCHREALTIME, no fork).
wsg_now_ms() {
  local t="${EPOCHREALTIME/./}"
  printf '%s\n' "$((t / 1000))"
}

# --- waiting ----------------------------------------------------------------------------------

# wsg_wait_until TIMEOUT_S DESCRIPTION CMD [ARGS...]
# Runs CMD until it succeeds, every 100 ms, for at most TIMEOUT_S seconds. Returns 0 when it
# succeeded, 1 on timeout (after a message naming DESCRIPTION). A CMD that can tell it will never
# succeed (a server that died) returns 99, which stops the wait at once with status 2.
wsg_wait_until() {
  local timeout_s="$1" what="$2"
  shift 2
  local deadline=$(($(wsg_now_ms) + timeout_s * 1000)) rc
  while :; do
    rc=0
    "$@" || rc=$?
    if [[ $rc -eq 0 ]]; then
      return 0
    fi
    if [[ $rc -eq 99 ]]; then
      return 2
    fi
    if (($(wsg_now_ms) >= deadline)); then
      wsg_warn "timed out after ${timeout_s}s waiting for ${what}"
      return 1
    fi
    sleep 0.1
  done
}

# --- processes --------------------------------------------------------------------------------

wsg_pid_alive() {
  [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null
}

# Prints the pid stored in FILE if that process is alive and its command line contains PATTERN
# (so a recycled pid of an unrelated process is never signalled). Returns 1 otherwise.
wsg_pidfile_live() {
  local file="$1" pattern="$2" pid cmdline
  [[ -r "$file" ]] || return 1
  read -r pid <"$file" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  wsg_pid_alive "$pid" || return 1
  cmdline="$(tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null)" || return 1
  [[ "$cmdline" == *"$pattern"* ]] || return 1
  printf '%s\n' "$pid"
}

# wsg_stop_pid PID TIMEOUT_S: SIGTERM, wait up to TIMEOUT_S for it to exit, then SIGKILL and wait
# up to 5 s more. Returns 0 once the process is gone, 1 if even SIGKILL did not end it.
wsg_stop_pid() {
  local pid="$1" timeout_s="$2"
  wsg_pid_alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  if wsg_wait_until "$timeout_s" "pid ${pid} to exit after SIGTERM" wsg_pid_gone "$pid" 2>/dev/null; then
    return 0
  fi
  wsg_warn "pid ${pid} still running ${timeout_s}s after SIGTERM; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  wsg_wait_until 5 "pid ${pid} to exit after SIGKILL" wsg_pid_gone "$pid"
}

# True once PID is gone. A zombie counts as gone: a daemonized server's parent is init, which
# reaps it, but a server started by this shell stays a zombie until the shell waits for it.
wsg_pid_gone() {
  local state
  wsg_pid_alive "$1" || return 0
  state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 0
  [[ "$state" == "Z" ]]
}

# --- starting servers -------------------------------------------------------------------------
# Every start helper (scripts/kafka, scripts/redis, scripts/cluster) starts its servers with
# wsg_spawn and hands each over with wsg_spawn_confirm once it is ready. Until then a server is the
# start's to clean up: when the script exits for any reason (a failed wait, wsg_die, Ctrl-C, TERM)
# the EXIT trap stops every server it spawned and did not confirm, so a failed start never leaves a
# process behind (and the next start does not find the port held by an orphan).
WSG_SPAWNED=()
WSG_SPAWN_PID=""
# The shell that spawned them ($BASHPID: a subshell may spawn too): their parent until they exit.
WSG_SPAWN_PARENT=""
# How long an unconfirmed server gets to stop after SIGTERM before SIGKILL.
WSG_SPAWN_STOP_TIMEOUT="${WSG_SPAWN_STOP_TIMEOUT:-15}"

# wsg_spawn LOG CMD [ARGS...]: starts CMD in a session of its own (it outlives this script and a
# Ctrl-C meant for a later foreground command), stdin /dev/null, stdout+stderr appended to LOG;
# sets WSG_SPAWN_PID. A background child of a non-interactive shell is not a group leader, so
# setsid execs in place and the pid is the server's own, but only once the forked shell and then
# setsid have exec'd: until then /proc/<pid>/cmdline is this script's, or empty. So the start's
# liveness check is wsg_spawn_alive (by pid and parent), never a command-line match.
# The EXIT, INT, TERM and HUP traps are set here: a script that spawns must not set its own.
wsg_spawn() {
  local log="$1"
  shift
  trap wsg_spawn_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  trap 'exit 129' HUP
  WSG_SPAWN_PARENT="$BASHPID"
  setsid "$@" </dev/null >>"$log" 2>&1 &
  WSG_SPAWN_PID=$!
  WSG_SPAWNED+=("$WSG_SPAWN_PID")
}

# True while PID, a server this script spawned, has not exited: it exists, is not a zombie, and is
# still the spawning shell's child (so a pid recycled after it exited is never taken for it).
wsg_spawn_alive() {
  local stat rest
  [[ "${1:-}" =~ ^[0-9]+$ ]] || return 1
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  # Fields after the command name, which is in parentheses and may hold spaces: state, ppid, ...
  rest="${stat##*) }"
  read -r -a stat <<<"$rest"
  [[ "${stat[0]}" != Z && "${stat[1]}" == "${WSG_SPAWN_PARENT:-$$}" ]]
}

# The server PID is ready: a later exit of this script leaves it running.
wsg_spawn_confirm() {
  local kept=() p
  for p in "${WSG_SPAWNED[@]}"; do
    [[ "$p" == "$1" ]] || kept+=("$p")
  done
  WSG_SPAWNED=("${kept[@]}")
}

# The EXIT trap of a script that spawned: stops every unconfirmed server (SIGTERM to it and its
# process group, then SIGKILL), keeping the script's exit status.
wsg_spawn_cleanup() {
  local rc=$? p
  for p in "${WSG_SPAWNED[@]}"; do
    wsg_spawn_alive "$p" || continue
    wsg_warn "start failed: stopping pid ${p}, which it started"
    kill -TERM -- "-${p}" 2>/dev/null || true
    wsg_stop_pid "$p" "$WSG_SPAWN_STOP_TIMEOUT" || true
    kill -KILL -- "-${p}" 2>/dev/null || true
  done
  WSG_SPAWNED=()
  exit "$rc"
}

# Is something listening on 127.0.0.1:PORT? (bash's /dev/tcp, no extra tools.)
wsg_port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wsg_require_port() {
  local name="$1" value="$2"
  if [[ ! "$value" =~ ^[0-9]+$ ]] || ((value < 1 || value > 65535)); then
    wsg_die "${name}=${value} is not a TCP port (1..65535)"
  fi
}

wsg_require_cmd() {
  local cmd
  for cmd in "$@"; do
    command -v "$cmd" >/dev/null 2>&1 || wsg_die "'${cmd}' not found on PATH: run scripts/setup"
  done
}

# Prints the last lines of a log file to stderr, indented, to explain a failed start.
wsg_tail_log() {
  local file="$1" lines="${2:-30}"
  [[ -r "$file" ]] || return 0
  printf '%s: last %s lines of %s:\n' "$WSG_SCRIPT_NAME" "$lines" "$file" >&2
  tail -n "$lines" "$file" | sed 's/^/    /' >&2
}

# Runs a command as root: directly when we are root, through sudo otherwise.
wsg_as_root() {
  if [[ "$(id -u)" -eq 0 ]]; then
    "$@"
  else
    command -v sudo >/dev/null 2>&1 || wsg_die "not root and no sudo: cannot run $*"
    sudo "$@"
  fi
}
