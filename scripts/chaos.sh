#!/usr/bin/env bash
# Runs the chaos suite's long form (docs/RELIABILITY.md): the daemon under
# SIGKILLs, lease races, Redis restarts and a faulty DynamoDB Streams
# endpoint, each case ending with every view compared with a full scan of
# the table. Installs what is missing first, as scripts/test.sh does, and
# ends with every case's figures line. Extra arguments go to `go test`.
#
# The cases run one at a time, so that each one's figures (took=...) are
# its own; `scripts/chaos.sh -parallel 2` runs two at once.
#
# Environment:
#   STREAMTALLY_CHAOS       long (the default here) or short
#   STREAMTALLY_CHAOS_SEED  replay a run's random choices (default 1)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/deps.sh
export STREAMTALLY_CHAOS="${STREAMTALLY_CHAOS:-long}"

out="$(mktemp)"
trap 'rm -f "$out"' EXIT
set +e
go test -race -count=1 -v -timeout 60m -parallel 1 -run '^TestChaos' "$@" ./cmd/streamtally/ | tee "$out"
status=${PIPESTATUS[0]}
set -e

echo
echo "figures ($STREAMTALLY_CHAOS form, $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GB memory):"
grep '^chaos:' "$out" || echo "(no case printed figures)"
exit "$status"
