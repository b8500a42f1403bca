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
	sec.check("decode, stream record JSON to the fold's input (DecodeRecords, a page of 1000)", rate(dec), ">= 100 000 rec/s", dec >= 100_000)
	sec.add("the same through the SDK's client and deserializer, for comparison",
		fmt.Sprintf("%s (%.1fx slower)", rate(perPage("BenchmarkDecodeRecordsSDK")), dec/perPage("BenchmarkDecodeRecordsSDK")))
	rp, rpSDK := median(read["BenchmarkReadPage"]["records/s"]), median(read["BenchmarkReadPageSDK"]["records/s"])
	sec.check(fmt.Sprintf("decode as the reader runs it: GetRecords through the SDK client with the codec's middleware, to the fold's input (allocs %.0f per 1000 records)", median(read["BenchmarkReadPage"]["allocs/op"])),
		rate(rp), ">= 100 000 rec/s", rp >= 100_000)
	sec.add(fmt.Sprintf("the reader before: the SDK's deserializer, then conversion (allocs %.0f per 1000 records)", median(read["BenchmarkReadPageSDK"]["allocs/op"])),
		fmt.Sprintf("%s (%.1fx slower)", rate(rpSDK), rp/rpSDK))
	for _, g := range []string{"3", "100", "10000", "1000000"} {
		m := fold["BenchmarkFoldApply/groups="+g]
		r := median(m["records/s"])
		what := fmt.Sprintf("fold + apply, %s groups (allocs %.0f, %.0f B per 1000 records)", thousands(mustAtoi(g)), median(m["allocs/op"]), median(m["B/op"]))
		if g == "100" {
			sec.check(what, rate(r), ">= 200 000 rec/s", r >= 200_000)
		} else {
			sec.add(what, rate(r))
		}
	}
	sec.note("fold + apply: aggregate.Tally.HandleBatch on pages of 1000 records (60%% inserts, 30%% updates, 10%% deletes; a count and a decimal sum), applied by publish.Redis to a redis-server on loopback; the rate is wall time of one goroutine, with Redis executing the script on the other core.")
	sec.note("Each figure is the median of %d runs.", s.BenchCount)
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
