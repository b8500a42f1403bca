#!/usr/bin/env bash
# Runs DynamoDB Local and redis-server in the background for local
# development (the Go integration tests start their own private instances,
# see internal/testenv).
#
# Usage: scripts/services.sh start|stop|status|restart
#
# Environment:
#   STREAMTALLY_CACHE       cache directory (default: <repo root>/.cache)
#   STREAMTALLY_DDB_PORT    DynamoDB Local port (default 8000)
#   STREAMTALLY_REDIS_PORT  redis-server port (default 6379)
#
# State (pid, port, log) lives in $STREAMTALLY_CACHE/run/.
# `status` exits 0 when both services are up, 3 otherwise.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${STREAMTALLY_CACHE:-$repo_root/.cache}"
run="$cache/run"
ddb_port="${STREAMTALLY_DDB_PORT:-8000}"
redis_port="${STREAMTALLY_REDIS_PORT:-6379}"
wait_secs=30

die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

# Prints the pid from $run/NAME.pid if that process is alive and is really
# our service (a stale pid file may point at a recycled pid).
live_pid() {
  local name=$1 match=$2 pid cmdline
  pid="$(cat "$run/$name.pid" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmdline" == *"$match"* ]] || return 1
  echo "$pid"
}

recorded_port() { cat "$run/$1.port" 2>/dev/null || true; }

redis_answers() {
  [[ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" == "PONG" ]]
}

# Any HTTP response (DynamoDB Local answers GET / with 400) means it is up.
ddb_answers() {
  if command -v curl >/dev/null 2>&1; then
    curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$1/"
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
  fi
}

port_busy() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# wait_up NAME MATCH PORT CHECKFN: waits until CHECKFN PORT succeeds while our
# process is still alive, so another program on the port cannot fool us.
wait_up() {
  local name=$1 match=$2 port=$3 check=$4 i
  local pid
  pid="$(cat "$run/$name.pid" 2>/dev/null)"
  for ((i = 0; i < wait_secs * 5; i++)); do
    # Liveness by pid alone: until the starting subshell has exec'd the
    # server, its command line does not match yet.
    if ! kill -0 "$pid" 2>/dev/null; then
      die "$name exited during startup; see $run/$name.log"
    fi
    if "$check" "$port"; then
      return 0
    fi
    sleep 0.2
  done
  die "$name did not answer on 127.0.0.1:$port within ${wait_secs}s; see $run/$name.log"
}

# start_one NAME MATCH PORT CHECKFN DIR CMD...: starts CMD in its own session
# (so a Ctrl-C in the calling terminal does not reach it) unless it is
# already running.
start_one() {
  local name=$1 match=$2 port=$3 check=$4 dir=$5
  shift 5
  local pid
  if pid="$(live_pid "$name" "$match")"; then
    local old_port
    old_port="$(recorded_port "$name")"
    if [[ -n "$old_port" && "$old_port" != "$port" ]]; then
      die "$name already running (pid $pid) on port $old_port, not $port; run '$0 stop' first"
    fi
    wait_up "$name" "$match" "$port" "$check"
    echo "$name: already running (pid $pid, port $port)"
    return 0
  fi
  if port_busy "$port"; then
    die "port $port is already used by another program; stop it or pick another port with STREAMTALLY_DDB_PORT / STREAMTALLY_REDIS_PORT"
  fi
  local starter=()
  command -v setsid >/dev/null 2>&1 && starter=(setsid)
  (cd "$dir" && exec nohup "${starter[@]}" "$@" </dev/null >"$run/$name.log" 2>&1) &
  echo $! >"$run/$name.pid"
  echo "$port" >"$run/$name.port"
  wait_up "$name" "$match" "$port" "$check"
  echo "$name: started (pid $(cat "$run/$name.pid"), port $port, log $run/$name.log)"
}

stop_one() {
  local name=$1 match=$2 pid i
  if ! pid="$(live_pid "$name" "$match")"; then
    rm -f "$run/$name.pid" "$run/$name.port"
    echo "$name: not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$run/$name.pid" "$run/$name.port"
  echo "$name: stopped (pid $pid)"
}

status_one() {
  local name=$1 match=$2 check=$3 pid port
  if ! pid="$(live_pid "$name" "$match")"; then
    echo "$name: stopped"
    return 1
  fi
  port="$(recorded_port "$name")"
  if [[ -n "$port" ]] && "$check" "$port"; then
    echo "$name: running (pid $pid, port $port)"
    return 0
  fi
  echo "$name: running but not answering (pid $pid, port ${port:-?}); see $run/$name.log"
  return 1
}

ddb_dir="$cache/dynamodb-local"

cmd_start() {
  STREAMTALLY_CACHE="$cache" "$repo_root/scripts/deps.sh"
  mkdir -p "$run"
  start_one redis redis-server "$redis_port" redis_answers "$run" \
    redis-server --port "$redis_port" --bind 127.0.0.1 \
    --save "" --appendonly no --dir "$run"
  # DynamoDB Local has no bind-address option (Jetty listens on all
  # interfaces); telemetry is off because it would try to reach the internet.
  export DDB_LOCAL_TELEMETRY=0
  start_one dynamodb DynamoDBLocal.jar "$ddb_port" ddb_answers "$ddb_dir" \
    java -Djava.library.path=DynamoDBLocal_lib -jar DynamoDBLocal.jar \
    -inMemory -sharedDb -disableTelemetry -port "$ddb_port"
}

cmd_stop() {
  stop_one dynamodb DynamoDBLocal.jar
  stop_one redis redis-server
}

cmd_status() {
  local rc=0
  status_one dynamodb DynamoDBLocal.jar ddb_answers || rc=3
  status_one redis redis-server redis_answers || rc=3
  return "$rc"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  restart) cmd_stop && cmd_start ;;
  status) cmd_status ;;
  *)
    echo "usage: $0 start|stop|status|restart" >&2
    exit 2
    ;;
esac
