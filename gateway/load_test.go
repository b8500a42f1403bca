package gateway_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally/internal/testenv"
	"github.com/streamtally/streamtally/publish"
)

// BenchmarkSSEClients1000 runs `streamtally serve` as its own process on a
// private redis-server, connects 1 000 SSE clients to one view over
// loopback and publishes b.N messages at a steady rate (each one version,
// as the daemon publishes them): 10 a second, a busy view, and 100 a
// second, far more than one view gets. It reports the delay from PUBLISH
// to each client's receipt of the event (p50, p99, max) and the gateway's
// resident memory per connected client. The clients run in this process,
// on the same cores as the gateway and Redis.
//
//	go test ./gateway -run '^$' -bench SSEClients1000 -benchtime 300x
func BenchmarkSSEClients1000(b *testing.B) {
	for _, interval := range []time.Duration{100 * time.Millisecond, 10 * time.Millisecond} {
		b.Run(fmt.Sprintf("msgs_per_s=%d", time.Second/interval), func(b *testing.B) { benchSSE(b, 1000, interval) })
	}
}

func benchSSE(b *testing.B, clients int, interval time.Duration) {
	rs := testenv.NewRedis(b)
	bin := buildBinary(b)
	addr := freeAddr(b)
	prefix := "load"
	cfg := filepath.Join(b.TempDir(), "streamtally.yaml")
	err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
source: {table: unused}
redis: {addr: %s, prefix: %s}
log: {level: warn}
metrics: {addr: ""}
serve: {addr: %s, public: true}
views:
  - {name: a, group_by: [g], measures: {n: count}}
`, rs.Addr(), prefix, addr)), 0o600)
	if err != nil {
		b.Fatal(err)
	}
	gwProc := startProcess(b, "serve", bin, "serve", "--config", cfg)
	testenv.WaitFor(b, 30*time.Second, "streamtally serve to be ready", func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer rdb.Close()
	g := &gw{t: nil, rdb: rdb, prefix: prefix}

	rss0 := rss(b, gwProc.Process.Pid)
	n := b.N
	sent := make([]atomic.Int64, n+1) // version -> UnixNano of PUBLISH
	recv := make([][]int64, clients)  // per client, per version: UnixNano of receipt
	var ready, done, ended atomic.Int64
	var wg sync.WaitGroup
	for c := range clients {
		recv[c] = make([]int64, n+1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				b.Error(err)
				return
			}
			defer conn.Close()
			fmt.Fprintf(conn, "GET /v1/views/a/events HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
			r := bufio.NewReaderSize(conn, 16<<10)
			var v int64
			for {
				line, err := r.ReadSlice('\n')
				if err != nil {
					ended.Add(1)
					return
				}
				switch {
				case len(line) > 4 && string(line[:4]) == "id: ":
					v, _ = strconv.ParseInt(strings.TrimSpace(string(line[4:])), 10, 64)
				case len(line) > 6 && string(line[:6]) == "data: ":
					if v == 0 {
						ready.Add(1) // the snapshot
						continue
					}
					if v <= int64(n) {
						recv[c][v] = time.Now().UnixNano()
					}
					if v == int64(n) {
						done.Add(1)
						return
					}
				}
			}
		}()
	}
	testenv.WaitFor(b, time.Minute, "every client's snapshot", func() bool { return ready.Load() == int64(clients) })
	time.Sleep(time.Second) // let the gateway's memory settle before reading it
	rss1 := rss(b, gwProc.Process.Pid)

	b.ResetTimer()
	tick := time.NewTicker(interval)
	for v := 1; v <= n; v++ {
		<-tick.C
		sent[v].Store(time.Now().UnixNano())
		g.applyB(b, "a", "x", 1)
	}
	tick.Stop()
	testenv.WaitFor(b, time.Minute, "every client to receive every message", func() bool { return done.Load()+ended.Load() == int64(clients) })
	b.StopTimer()
	wg.Wait()

	var delays []float64
	missing := 0
	for c := range clients {
		for v := 1; v <= n; v++ {
			if recv[c][v] == 0 {
				missing++
				continue
			}
			delays = append(delays, float64(recv[c][v]-sent[v].Load())/1e6)
		}
	}
	slices.Sort(delays)
	q := func(p float64) float64 { return delays[min(len(delays)-1, int(p*float64(len(delays))))] }
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(delays[len(delays)-1], "max-ms")
	b.ReportMetric(float64(rss1-rss0)/float64(clients), "rss-bytes/client")
	b.ReportMetric(float64(missing), "missing")
	b.ReportMetric(float64(ended.Load()), "dropped")
}

// applyB is apply for a benchmark.
func (g *gw) applyB(b *testing.B, view, group string, delta int) {
	k := publish.KeysFor(g.prefix, view)
	err := applyScript.Run(context.Background(), g.rdb, []string{k.Meta(), k.Measure("n"), k.Channel()},
		group, delta, time.Now().UnixMilli(), view, "1", "PUBLISH").Err()
	if err != nil {
		b.Fatal(err)
	}
}

// rss reads a process's resident set size in bytes.
func rss(b *testing.B, pid int) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	b.Fatal("no VmRSS")
	return 0
}
