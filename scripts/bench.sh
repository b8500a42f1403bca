#!/usr/bin/env bash
# Runs the benchmark harness (bench/, docs/BENCHMARKS.md): the hot path's Go
# benchmarks, catch-up of a stream full of changes against a naive
# per-record consumer and a bare GetRecords reader, freshness under steady
# writes, and the daemon's resources, on loopback and through a delay line
# that gives Redis a same-zone round trip, and the gateway under 1 000 SSE
# clients. Prints one table on stdout (progress goes to stderr) and writes
# it into docs/BENCHMARKS.md between its markers: a full run replaces the
# table, a BENCH_ONLY run only the sections it ran. About 12 minutes on 2
# cores.
#
# Environment (defaults in bench/bench_test.go):
#   BENCH_RECORDS             catch-up stream records (200000)
#   BENCH_RUNS                runs per catch-up measurement, medians (3)
#   BENCH_NAIVE_SLOW_RECORDS  records the naive consumer reads through the delay line (10000)
#   BENCH_FRESH_RATE          freshness writes per second (500)
#   BENCH_FRESH_FOR           freshness duration (60s)
#   BENCH_ONE_WAY_DELAY       delay line, each way (250us)
#   BENCH_COUNT               -count of the Go benchmarks (5)
#   BENCH_GATEWAY_MESSAGES    gateway load: messages at each rate (300)
#   BENCH_ONLY                sections to run: hotpath,catchup,freshness,gateway (all)
#   BENCH_DOC                 0 leaves docs/BENCHMARKS.md alone (1)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/deps.sh

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
table="$tmp/table.md"

# -v shows the harness's progress (on stderr); the table is its result.
if ! BENCH_OUT="$table" go test -tags bench -run '^TestBench$' -count=1 -timeout 45m -v ./bench/ >&2; then
  echo "bench: the harness failed (output above)" >&2
  exit 1
fi
cat "$table"

doc=docs/BENCHMARKS.md
if [[ "${BENCH_DOC:-1}" == 0 || ! -f "$doc" ]]; then
  exit 0
fi
if [[ -z "${BENCH_ONLY:-}" ]]; then
  # A full run replaces the whole block.
  {
    sed '/<!-- bench:begin -->/q' "$doc"
    printf '\nCommand: `make bench` (scripts/bench.sh)'
    env | grep -E '^BENCH_(RECORDS|RUNS|NAIVE_SLOW_RECORDS|FRESH_RATE|FRESH_FOR|ONE_WAY_DELAY|COUNT|GATEWAY_MESSAGES)=' | sort | sed 's/^/ /' | tr -d '\n' || true
    printf '\n\n'
    cat "$table"
    printf '\n'
    sed -n '/<!-- bench:end -->/,$p' "$doc"
  } >"$tmp/doc.md"
  echo "bench: wrote the table into $doc" >&2
else
  # A partial run replaces only the sections it ran (matched by their
  # number, "### 5. ..."), each noting when it ran, and keeps the rest of
  # the last full run's table, so the page never loses figures.
  awk -v new="$table" '
    function key(l,  a) { split(l, a, /[ .]/); return a[2] + 0 }
    function emit(k) { sub(/\n+$/, "", sec[k]); print sec[k]; print ""; done[k] = 1 }
    function emit_before(k,  i) { for (i = 1; i <= n; i++) if (!(order[i] in done) && order[i] < k) emit(order[i]) }
    BEGIN {
      while ((getline l < new) > 0) {
        if (l ~ /^### /) { cur = key(l); order[++n] = cur }
        if (cur != "") sec[cur] = sec[cur] l "\n"
      }
    }
    /<!-- bench:begin -->/ { inblock = 1; print; next }
    /<!-- bench:end -->/ { emit_before(1e9); inblock = 0; skip = 0; print; next }
    inblock && /^### / {
      k = key($0); emit_before(k)
      if (k in sec) { emit(k); skip = 1; next }
      skip = 0
    }
    !skip { print }
  ' "$doc" >"$tmp/doc.md"
  echo "bench: replaced the sections of this run (BENCH_ONLY=$BENCH_ONLY) in $doc, kept the others" >&2
fi
cp "$tmp/doc.md" "$doc"
