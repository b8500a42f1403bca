//go:build bench

package bench

import (
	"reflect"
	"testing"
)

func TestParseBenchMetricsReadsEveryUnitOfTheNamedBenchmarks(t *testing.T) {
	out := []byte(`goos: linux
BenchmarkSSEClients1000/msgs_per_s=10-2         	     300	 100012345 ns/op	        12.80 p50-ms	        24.00 p99-ms	        44.20 max-ms	         0 dropped	         0 missing	     31846 rss-bytes/client
BenchmarkOther-2   10   5 ns/op   1.0 p50-ms
BenchmarkSSEClients1000/msgs_per_s=100-2        	     300	  10001234 ns/op	         5.000 p50-ms	        29.60 p99-ms	        57.50 max-ms	         1 dropped	         3 missing	     31641 rss-bytes/client
--- FAIL: BenchmarkSSEClients1000/msgs_per_s=100
PASS
`)
	got := parseBenchMetrics(out, "BenchmarkSSEClients1000/msgs_per_s=")
	want := []benchRun{
		{"10", map[string]float64{"ns/op": 100012345, "p50-ms": 12.8, "p99-ms": 24, "max-ms": 44.2, "dropped": 0, "missing": 0, "rss-bytes/client": 31846}},
		{"100", map[string]float64{"ns/op": 10001234, "p50-ms": 5, "p99-ms": 29.6, "max-ms": 57.5, "dropped": 1, "missing": 3, "rss-bytes/client": 31641}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseBenchMetrics:\n got %+v\nwant %+v", got, want)
	}
}
