//go:build bench

// Package bench is streamtally's benchmark harness, run by `make bench`
// (scripts/bench.sh): it measures the hot path (decode, fold and apply),
// catch-up over a stream already full of changes, freshness under a steady
// write load, and the daemon's resources, each against a naive consumer or
// the physical limit measured in the same run, and the gateway under 1 000
// SSE clients, and prints one table.
//
// Everything runs against real services started by internal/testenv:
// private DynamoDB Local instances (one per phase, as DynamoDB Local slows
// down as its stream grows) and redis-server, and the daemon runs as the
// real binary built from cmd/streamtally.
package bench

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/streamtally/streamtally/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// settings are the harness's knobs, from the environment (BENCH_*), so the
// command stays the same and a run can be made shorter or longer.
type settings struct {
	Records         int           // stream records for catch-up
	Runs            int           // repetitions of each catch-up measurement; medians are reported
	NaiveSlow       int           // records the naive consumer reads through the slowed link
	FreshRate       int           // writes per second for freshness
	FreshFor        time.Duration // how long freshness writes
	OneWay          time.Duration // delay line, each direction
	BenchCount      int           // -count for the Go benchmarks
	PollInterval    time.Duration // the daemon's source.poll_interval
	GatewayMessages int           // messages published at each rate in the gateway load
	Out             string        // file to write the table to, besides stdout
	Only            string        // comma-separated sections to run (hotpath, catchup, freshness, gateway); empty: all
}

func loadSettings() settings {
	return settings{
		Records:         envInt("BENCH_RECORDS", 200_000),
		Runs:            envInt("BENCH_RUNS", 3),
		NaiveSlow:       envInt("BENCH_NAIVE_SLOW_RECORDS", 10_000),
		FreshRate:       envInt("BENCH_FRESH_RATE", 500),
		FreshFor:        envDuration("BENCH_FRESH_FOR", 60*time.Second),
		OneWay:          envDuration("BENCH_ONE_WAY_DELAY", 250*time.Microsecond),
		BenchCount:      envInt("BENCH_COUNT", 5),
		PollInterval:    250 * time.Millisecond,
		GatewayMessages: envInt("BENCH_GATEWAY_MESSAGES", 300),
		Out:             os.Getenv("BENCH_OUT"),
		Only:            os.Getenv("BENCH_ONLY"),
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// sections are the names BENCH_ONLY takes.
var sections = []string{"hotpath", "catchup", "freshness", "gateway"}

func (s settings) runs(section string) bool {
	if s.Only == "" {
		return true
	}
	for _, p := range splitComma(s.Only) {
		if p == section {
			return true
		}
	}
	return false
}

// TestBench runs every section and prints the table. It asserts nothing
// about speed: the figures and their targets are in the table.
func TestBench(t *testing.T) {
	s := loadSettings()
	for _, p := range splitComma(s.Only) {
		if !slices.Contains(sections, p) {
			t.Fatalf("BENCH_ONLY: unknown section %q (sections: %s)", p, strings.Join(sections, ", "))
		}
	}
	tab := &table{}
	machine(t, tab, s)
	started, load := time.Now(), loadAverage()
	if s.runs("hotpath") {
		hotPath(t, tab, s)
	}
	var bin string
	if s.runs("catchup") || s.runs("freshness") {
		bin = buildDaemon(t)
	}
	if s.runs("catchup") {
		// A subtest, so that its DynamoDB Local and redis-servers are
		// stopped before freshness starts.
		t.Run("catch-up", func(t *testing.T) { catchUp(t, tab, s, bin) })
	}
	if s.runs("freshness") {
		freshness(t, tab, s, bin)
	}
	if s.runs("gateway") {
		gatewayLoad(t, tab, s)
	}
	if s.Only != "" {
		// scripts/bench.sh puts the sections of a partial run in place of
		// the same sections of the last full one; each says when it ran.
		for _, sec := range tab.sections {
			sec.note("From a run of BENCH_ONLY=%s at %s, load average at start %s.", s.Only, started.UTC().Format("2006-01-02 15:04 UTC"), load)
		}
	}
	out := tab.String()
	if s.Out == "" {
		os.Stdout.WriteString("\n" + out)
	} else {
		if err := os.WriteFile(s.Out, []byte(out), 0o644); err != nil {
			t.Fatalf("write %s: %v", s.Out, err)
		}
	}
}
