//go:build bench

package bench

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally/internal/testenv"
)

// newRedis starts a redis-server of the run's own, so that its command
// statistics count that run alone.
func newRedis(t *testing.T) string {
	t.Helper()
	return testenv.NewRedis(t).Addr()
}

// cmdStat is one command's line of INFO commandstats.
type cmdStat struct{ calls, failed int64 }

// commandStats returns the calls per command since the server started
// (INFO commandstats).
func commandStats(t *testing.T, addr string) map[string]cmdStat {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatalf("INFO commandstats: %v", err)
	}
	out := map[string]cmdStat{}
	for _, line := range strings.Split(info, "\n") {
		// cmdstat_evalsha:calls=200,usec=...
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		var st cmdStat
		for _, kv := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(kv, "=")
			n, _ := strconv.ParseInt(v, 10, 64)
			switch k {
			case "calls":
				st.calls = n
			case "failed_calls":
				st.failed = n
			}
		}
		out[strings.TrimPrefix(name, "cmdstat_")] = st
	}
	return out
}

// workCommands sums the calls of every command but the ones the harness
// itself sends to look (INFO) or that only open connections.
func workCommands(stats map[string]cmdStat) int64 {
	var n int64
	for cmd, st := range stats {
		switch cmd {
		case "info", "ping", "hello", "client|setinfo", "client|setname", "subscribe", "select":
			continue
		}
		n += st.calls
	}
	return n
}

// pingRTT is the median round trip of a PING to addr, over n tries.
func pingRTT(t *testing.T, addr string, n int) time.Duration {
	t.Helper()
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 1})
	defer c.Close()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING %s: %v", addr, err)
	}
	ds := make([]time.Duration, n)
	for i := range ds {
		start := time.Now()
		if err := c.Ping(ctx).Err(); err != nil {
			t.Fatalf("PING %s: %v", addr, err)
		}
		ds[i] = time.Since(start)
	}
	return medianDuration(ds)
}

// daemonSends are the commands the daemon itself sends to Redis; INFO
// commandstats also counts the commands its script runs inside Redis
// (HINCRBY, HSET, PUBLISH...), which cost no round trip.
var daemonSends = map[string]bool{"evalsha": true, "eval": true, "hmget": true, "exists": true, "xadd": true, "ping": true}

// sentCommands sums the calls of the commands in sends.
func sentCommands(stats map[string]cmdStat, sends map[string]bool) int64 {
	var n int64
	for cmd, st := range stats {
		if sends[cmd] {
			n += st.calls
		}
	}
	return n
}
