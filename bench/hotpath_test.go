//go:build bench

package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// hotPath runs the Go benchmarks of the decode, fold and apply steps on one
// core (-cpu 1) and reports their medians.
func hotPath(t *testing.T, tab *table, s settings) {
	count := strconv.Itoa(s.BenchCount)
	decode := goBench(t, ".", "^BenchmarkDecodeRecords(SDK)?$", count, "1s")
	read := goBench(t, "./consumer", "^BenchmarkReadPage(SDK)?$", count, "1s")
	fold := goBench(t, "./publish", "^BenchmarkFoldApply$", count, "2s")

	sec := tab.section("1. Hot path, one core (go test -bench, -cpu 1)")
	perPage := func(name string) float64 { return 1000 / median(decode[name]["ns/op"]) * 1e9 }
	dec := perPage("BenchmarkDecodeRecords")
	sec.add("decode, the codec alone (DecodeRecords on a page of 1000, wall)", rate(dec))
	sec.add("the same through the SDK's client and deserializer, for comparison (wall)",
		fmt.Sprintf("%s (%.1fx slower)", rate(perPage("BenchmarkDecodeRecordsSDK")), dec/perPage("BenchmarkDecodeRecordsSDK")))
	rp, rpSDK := median(read["BenchmarkReadPage"]["records/s"]), median(read["BenchmarkReadPageSDK"]["records/s"])
	rpCPU, rpSDKCPU := median(read["BenchmarkReadPage"]["records/cpu-s"]), median(read["BenchmarkReadPageSDK"]["records/cpu-s"])
	sec.check(fmt.Sprintf("decode as the reader runs it: GetRecords through the SDK client with the codec's middleware, to the fold's input (allocs %.0f per 1000 records)", median(read["BenchmarkReadPage"]["allocs/op"])),
		fmt.Sprintf("%s per CPU second (%s wall)", rate(rpCPU), rate(rp)), ">= 100 000 rec/s", rpCPU >= 100_000)
	sec.add(fmt.Sprintf("the reader before: the SDK's deserializer, then conversion (allocs %.0f per 1000 records)", median(read["BenchmarkReadPageSDK"]["allocs/op"])),
		fmt.Sprintf("%s per CPU second (%s wall); %.1fx slower", rate(rpSDKCPU), rate(rpSDK), rpCPU/rpSDKCPU))
	for _, g := range []string{"3", "100", "10000", "1000000"} {
		m := fold["BenchmarkFoldApply/groups="+g]
		r, rc := median(m["records/s"]), median(m["records/cpu-s"])
		what := fmt.Sprintf("fold + apply, %s groups (allocs %.0f, %.0f B per 1000 records)", thousands(mustAtoi(g)), median(m["allocs/op"]), median(m["B/op"]))
		value := fmt.Sprintf("%s per CPU second (%s wall); CPU per record: daemon %.2f µs, Redis %.2f µs",
			rate(rc), rate(r), median(m["client-cpu-ns/record"])/1000, median(m["redis-cpu-ns/record"])/1000)
		if g == "100" {
			sec.check(what, value, ">= 200 000 rec/s", rc >= 200_000)
		} else {
			sec.add(what, value)
		}
	}
	sec.note("decode as the reader runs it is the daemon's decode step: a GetRecords response body (1000 records as DynamoDB Streams sends them) through the SDK client's middleware stack to []streamtally.Record, the fold's input.")
	sec.note("fold + apply: aggregate.Tally.HandleBatch on pages of 1000 records (60%% inserts, 30%% updates, 10%% deletes; a count and a decimal sum), applied by publish.Redis to a redis-server on loopback, which executes the script on the other core.")
	sec.note("Per CPU second counts the CPU time the benchmark process (and, for fold + apply, redis-server) used, so that it does not depend on how busy the machine is; wall is records per elapsed second of one goroutine. The targets are per core, so they are held to the CPU figure. Each figure is the median of %d runs.", s.BenchCount)
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+(.*)$`)

// goBench runs go test -bench in pkg and returns, per benchmark, every
// reported metric's values over the runs.
func goBench(t *testing.T, pkg, pattern, count, benchtime string) map[string]map[string][]float64 {
	t.Helper()
	cmd := exec.Command("go", "test", "-run", "^$", "-bench", pattern, "-cpu", "1", "-count", count, "-benchtime", benchtime, "-benchmem", pkg)
	cmd.Dir = repoRoot(t)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t.Logf("running %s", strings.Join(cmd.Args, " "))
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out.String())
	}
	res := map[string]map[string][]float64{}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		f := strings.Fields(m[2])
		if res[m[1]] == nil {
			res[m[1]] = map[string][]float64{}
		}
		for i := 0; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				res[m[1]][f[i+1]] = append(res[m[1]][f[i+1]], v)
			}
		}
	}
	if len(res) == 0 {
		t.Fatalf("%s printed no benchmark results:\n%s", strings.Join(cmd.Args, " "), out.String())
	}
	return res
}

func mustAtoi(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}
