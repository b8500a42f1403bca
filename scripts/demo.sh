#!/usr/bin/env bash
# The fundraiser demo, end to end on this machine: installs what is
# missing, starts fresh DynamoDB Local and redis-server, creates the
# Donations table, runs streamtally, writes donations (inserts, platform
# moves, amount changes, deletes), shows the deltas as they arrive and the
# final snapshot, and checks it against a full scan of the table. The live
# dashboard (streamtally serve) runs alongside: open the URL it prints.
#
# Environment: DEMO_OPS (default 2000), DEMO_RATE writes/s (default 200),
# STREAMTALLY_DDB_PORT (8000), STREAMTALLY_REDIS_PORT (6379),
# STREAMTALLY_SERVE_PORT (8080), STREAMTALLY_SERVE_METRICS_PORT (9091), DEMO_KEEP (1 keeps the dashboard up at the
# end until Ctrl-C; default when the demo runs in a terminal).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
ops="${DEMO_OPS:-2000}"
rate="${DEMO_RATE:-200}"
ddb_port="${STREAMTALLY_DDB_PORT:-8000}"
redis_port="${STREAMTALLY_REDIS_PORT:-6379}"
serve_port="${STREAMTALLY_SERVE_PORT:-8080}"
keep="${DEMO_KEEP:-$([ -t 0 ] && [ -t 1 ] && echo 1 || echo 0)}"
run="${STREAMTALLY_CACHE:-$root/.cache}/run"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "installing what is missing and starting fresh DynamoDB Local and redis-server"
scripts/deps.sh
scripts/services.sh stop >/dev/null 2>&1 || true
scripts/services.sh start

say "building"
go build -o bin/ ./cmd/streamtally ./cmd/loadgen

export STREAMTALLY_SOURCE_ENDPOINT="http://127.0.0.1:$ddb_port"
export STREAMTALLY_REDIS_ADDR="127.0.0.1:$redis_port"
bin/loadgen create --endpoint "$STREAMTALLY_SOURCE_ENDPOINT" --table Donations

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

say "subscribing to tally:{by_platform}; deltas print as they arrive"
# Not a pipeline: $! must be redis-cli itself so that cleanup can stop it.
redis-cli -p "$redis_port" SUBSCRIBE 'tally:{by_platform}' > >(awk '/^\{/ { print "delta " $0; fflush() }') &
pids+=($!)

say "starting streamtally (log: $run/streamtally.log)"
bin/streamtally run --config streamtally.yaml >"$run/streamtally.log" 2>&1 &
daemon=$!
pids+=($daemon)

say "starting the live dashboard: streamtally serve (log: $run/serve.log)"
# The demo's dashboard is open to anyone who reaches the port, which is
# bound to loopback; a real deployment sets serve.tokens instead.
# Its metrics go next to the daemon's (metrics.addr, 9090 by default).
STREAMTALLY_SERVE_ADDR="127.0.0.1:$serve_port" STREAMTALLY_SERVE_PUBLIC=true \
  STREAMTALLY_METRICS_ADDR="127.0.0.1:${STREAMTALLY_SERVE_METRICS_PORT:-9091}" \
  bin/streamtally serve --config streamtally.yaml >"$run/serve.log" 2>&1 &
gateway=$!
pids+=($gateway)
# healthcheck asks /readyz, which the gateway answers too: no curl needed.
for _ in $(seq 1 50); do
  if bin/streamtally healthcheck --addr "127.0.0.1:$serve_port" >/dev/null 2>&1; then break; fi
  sleep 0.2
done
bin/streamtally healthcheck --addr "127.0.0.1:$serve_port" || { cat "$run/serve.log"; echo "streamtally serve did not start" >&2; exit 1; }
printf '\n  live dashboard: \033[1mhttp://127.0.0.1:%s/\033[0m  (open it now; it updates as the donations arrive)\n' "$serve_port"
sleep "${DEMO_PAUSE:-2}"

say "writing $ops donations at $rate/s"
bin/loadgen write --endpoint "$STREAMTALLY_SOURCE_ENDPOINT" --table Donations --ops "$ops" --rate "$rate" --bad-rate 0.005

say "waiting for streamtally to catch up"
for _ in $(seq 1 60); do
  if bin/loadgen check --config streamtally.yaml >/dev/null 2>&1; then break; fi
  sleep 0.5
done
sleep 0.5
kill "${pids[0]}" 2>/dev/null || true # the subscriber: its lines would mix with what follows
sleep 0.2

say "final snapshot: streamtally snapshot --config streamtally.yaml --view by_platform"
bin/streamtally snapshot --config streamtally.yaml --view by_platform

say "checking every view against a full scan of the table"
bin/loadgen check --config streamtally.yaml

say "checking the dashboard's API serves the same version"
want="$(bin/streamtally snapshot --config streamtally.yaml --view by_platform | grep -o '"version": *[0-9]*' | grep -o '[0-9]*$')"
exec 3<>"/dev/tcp/127.0.0.1/$serve_port"
printf 'GET /v1/views/by_platform HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
got="$(cat <&3 | grep -o '"version":[0-9]*' | grep -o '[0-9]*$')"
exec 3<&-
if [[ "$got" != "$want" ]]; then
  echo "the gateway serves version $got, Redis holds $want" >&2
  exit 1
fi
echo "GET /v1/views/by_platform: version $got, as in Redis"

say "stopping streamtally (SIGTERM)"
kill -TERM "$daemon"
wait "$daemon" && echo "streamtally exited 0"
echo "records that contributed nothing (logged with key and reason): $(grep -c 'contributes nothing' "$run/streamtally.log" || true)"
if [[ "$keep" == 1 ]]; then
  printf '\nthe dashboard stays up at http://127.0.0.1:%s/ ; press Ctrl-C to stop it\n' "$serve_port"
  wait "$gateway" || true
fi
kill -TERM "$gateway" 2>/dev/null && wait "$gateway" 2>/dev/null && echo "streamtally serve exited 0" || true
echo "DynamoDB Local and redis-server keep running; stop them with: scripts/services.sh stop"
