//go:build bench

package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// gatewayLoad runs the gateway's own load benchmark, BenchmarkSSEClients1000
// (gateway/load_test.go: 1 000 SSE clients on one `streamtally serve`
// process, at 10 and 100 messages a second), as a `go test` of its package,
// and turns the metrics it reports into rows. Running the benchmark rather
// than a copy of it keeps one load client, the one the gateway's package
// owns and keeps in step with its protocol.
func gatewayLoad(t *testing.T, tab *table, s settings) {
	sec := tab.section(fmt.Sprintf("5. Gateway load: 1 000 SSE clients on one `streamtally serve`, %d messages per rate; PUBLISH -> event read by each client", s.GatewayMessages))
	args := []string{"test", "./gateway", "-run", "^$", "-bench", "^BenchmarkSSEClients1000$",
		"-benchtime", fmt.Sprintf("%dx", s.GatewayMessages), "-count", "1", "-timeout", "15m"}
	t.Logf("gateway load: go %s", strings.Join(args, " "))
	cmd := exec.Command("go", args...)
	cmd.Dir = repoRoot(t)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("gateway load benchmark: %v\n%s%s", err, out, stderr.Bytes())
	}
	runs := parseBenchMetrics(out, "BenchmarkSSEClients1000/msgs_per_s=")
	if len(runs) == 0 {
		t.Fatalf("gateway load benchmark printed no results:\n%s", out)
	}
	t.Logf("gateway load: done in %s", time.Since(start).Round(time.Second))
	for _, r := range runs {
		m := r.metrics
		sec.add(fmt.Sprintf("%s msg/s: delay to each client", r.name),
			fmt.Sprintf("p50 %.1f ms, p99 %.1f ms, max %.1f ms", m["p50-ms"], m["p99-ms"], m["max-ms"]))
		sec.check(fmt.Sprintf("%s msg/s: clients dropped / events missing (of %s)", r.name, thousands(int64(1000*s.GatewayMessages))),
			fmt.Sprintf("%.0f / %.0f", m["dropped"], m["missing"]), "none", m["dropped"] == 0 && m["missing"] == 0)
		sec.add(fmt.Sprintf("%s msg/s: gateway resident memory per connected client", r.name),
			fmt.Sprintf("%.1f KB", m["rss-bytes/client"]/1024))
	}
	sec.note("The gateway runs as its own process on a private redis-server; 1 000 clients in the benchmark's process read one view's event stream over loopback, on the same two cores as the gateway and Redis. Each message is one version published by the daemon's apply script; the delay runs from just before that script call to the client's read of the event's data line, so it includes Redis, the gateway's subscription, its fan-out to 1 000 sockets, the kernel and the client's read.")
	sec.note("Memory per client is the growth of the gateway's VmRSS from before the clients connect to after every client has its snapshot, divided by 1 000.")
	sec.note("Command: `go %s`", shellJoin(args))
}

type benchRun struct {
	name    string // what follows the prefix, without the -GOMAXPROCS suffix
	metrics map[string]float64
}

// parseBenchMetrics reads `go test -bench` output: for each result line
// whose benchmark name starts with prefix, the value of every unit it
// reports ("14.5 p50-ms" gives metrics["p50-ms"] = 14.5).
func parseBenchMetrics(out []byte, prefix string) []benchRun {
	var runs []benchRun
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], prefix) {
			continue
		}
		name := strings.TrimPrefix(f[0], prefix)
		if i := strings.LastIndex(name, "-"); i > 0 {
			name = name[:i]
		}
		r := benchRun{name: name, metrics: map[string]float64{}}
		// f[1] is the iteration count; then value-unit pairs.
		for i := 2; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				r.metrics[f[i+1]] = v
			}
		}
		runs = append(runs, r)
	}
	return runs
}

// shellJoin quotes the arguments that a shell would otherwise expand, so a
// command printed in the table can be pasted.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = a
		if strings.ContainsAny(a, "^$*?[]{}()|&;<>'\" \t") {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(q, " ")
}
