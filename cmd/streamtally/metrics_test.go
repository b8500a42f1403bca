package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally/internal/testenv"
)

// scrape reads a daemon's /metrics into name{labels} -> value.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad metrics line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// metric returns the value of the first series of name (any labels).
func metric(m map[string]float64, name string) (float64, bool) {
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			return v, true
		}
	}
	return 0, false
}

func httpStatus(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestMetricsLagGrowsWhilePausedAndReturnsToZero pauses the daemon by
// cutting it off from Redis while writes go on: the shard's iterator age
// and checkpoint lag must grow, /readyz must say why it is not ready, and
// after Redis returns and the daemon catches up both must be back at 0.
func TestMetricsLagGrowsWhilePausedAndReturnsToZero(t *testing.T) {
	e := newEnv(t)
	e.createTable()
	p := newProxy(t, e.redisAddr)
	d := e.startWith("w1", e.config("w1", p.addr()))
	addr := e.metricsAddr("w1")
	waitFor(t, 30*time.Second, "the metrics endpoint and a lease", func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		resp.Body.Close()
		v, _ := metric(scrape(t, addr), "streamtally_leases_held")
		return v == 1
	})
	if code, body := httpStatus(t, "http://"+addr+"/healthz"); code != 200 {
		t.Fatalf("/healthz: %d %s", code, body)
	}
	waitFor(t, 30*time.Second, "/readyz to answer 200", func() bool {
		code, _ := httpStatus(t, "http://"+addr+"/readyz")
		return code == 200
	})
	if out, code := runBinary(t, "healthcheck", "--addr", addr); code != 0 {
		t.Fatalf("healthcheck of a ready daemon: exit %d: %s", code, out)
	}

	wait := e.load(2500, 2, 250, 21)
	time.Sleep(2 * time.Second)
	p.setDown(true)
	time.Sleep(3 * time.Second)
	m1 := scrape(t, addr)
	time.Sleep(1500 * time.Millisecond)
	m2 := scrape(t, addr)
	lag1, ok1 := metric(m1, "streamtally_shard_checkpoint_lag_milliseconds")
	lag2, ok2 := metric(m2, "streamtally_shard_checkpoint_lag_milliseconds")
	age2, _ := metric(m2, "streamtally_shard_iterator_age_milliseconds")
	if !ok1 || !ok2 {
		t.Fatal("no checkpoint lag series while paused")
	}
	t.Logf("paused: checkpoint lag %.0f ms then %.0f ms, iterator age %.0f ms", lag1, lag2, age2)
	if lag1 < 1000 || lag2 <= lag1 || age2 < 1000 {
		t.Fatalf("lag does not grow while paused: checkpoint lag %.0f then %.0f ms, iterator age %.0f ms", lag1, lag2, age2)
	}
	code, body := httpStatus(t, "http://"+addr+"/readyz")
	if code != 503 || !strings.Contains(body, "redis") {
		t.Fatalf("/readyz while Redis is cut off: %d %s", code, body)
	}
	if _, code := runBinary(t, "healthcheck", "--addr", addr); code != 1 {
		t.Fatalf("healthcheck of an unready daemon: exit %d, want 1", code)
	}

	p.setDown(false)
	wait()
	e.waitExact(60 * time.Second)
	var m map[string]float64
	waitFor(t, 15*time.Second, "lag back at 0", func() bool {
		m = scrape(t, addr)
		lag, _ := metric(m, "streamtally_shard_checkpoint_lag_milliseconds")
		age, _ := metric(m, "streamtally_shard_iterator_age_milliseconds")
		return lag == 0 && age == 0
	})
	for _, name := range []string{
		"streamtally_shard_records_total", "streamtally_shard_batches_total",
		"streamtally_records_total", "streamtally_batches_total",
		"streamtally_apply_duration_seconds_bucket", "streamtally_apply_duration_seconds_count",
		"streamtally_bad_records_total", "streamtally_redis_errors_total",
		"streamtally_leases_taken_total", "streamtally_leases_lost_total", "streamtally_leases_released_total",
		"streamtally_stream_errors_total", "streamtally_trimmed_total", "streamtally_fence_conflicts_total",
		"go_goroutines", "process_resident_memory_bytes",
	} {
		if _, ok := metric(m, name); !ok {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if v, _ := metric(m, "streamtally_redis_errors_total"); v == 0 {
		t.Error("the Redis outage left streamtally_redis_errors_total at 0")
	}
	if v, _ := metric(m, "streamtally_bad_records_total"); v == 0 {
		t.Error("bad records were written but streamtally_bad_records_total is 0")
	}
	if code, _ := d.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// TestSecretsNeverLeak runs the daemon with a Redis password that the
// server rejects, so the password is in play on every retry, and checks
// it appears neither in the log nor on /metrics nor in error output.
func TestSecretsNeverLeak(t *testing.T) {
	const secret = "s3cr3t-Pa55word-do-not-log"
	e := newEnv(t)
	e.createTable()
	r := testenv.NewRedis(t)
	ctx := context.Background()
	admin := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer admin.Close()
	if err := admin.ConfigSet(ctx, "requirepass", secret).Err(); err != nil {
		t.Fatal(err)
	}
	t.Setenv("STREAMTALLY_REDIS_PASSWORD", secret)
	d := e.startWith("w1", e.config("w1", r.Addr()))
	// Until its shard is open the daemon fails earlier, reading fences,
	// and never reaches an apply: rotate only once it reads the shard.
	waitFor(t, 30*time.Second, "the daemon to open its shard", func() bool { return len(logLines(d.logText(), "starting shard")) > 0 })
	// The password changes under the running daemon (a rotation gone
	// wrong): every reconnect now fails with the secret in hand.
	admin = redis.NewClient(&redis.Options{Addr: r.Addr(), Password: secret})
	defer admin.Close()
	if err := admin.ConfigSet(ctx, "requirepass", "another-password").Err(); err != nil {
		t.Fatal(err)
	}
	if err := admin.ClientKillByFilter(ctx, "TYPE", "normal").Err(); err != nil {
		t.Fatal(err)
	}
	e.load(200, 1, 0, 31)()
	waitFor(t, 30*time.Second, "a failed apply", func() bool {
		return len(logLines(d.logText(), "applying batch failed")) > 0
	})
	body := ""
	if resp, err := http.Get("http://" + e.metricsAddr("w1") + "/metrics"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = string(b)
	}
	_, ready := httpStatus(t, "http://"+e.metricsAddr("w1")+"/readyz")
	out, _ := runBinary(t, "healthcheck", "--addr", e.metricsAddr("w1"))
	d.stop()
	for what, text := range map[string]string{"log": d.logText(), "/metrics": body, "/readyz": ready, "healthcheck": out} {
		if strings.Contains(text, secret) {
			t.Errorf("the Redis password appears in the %s", what)
		}
	}
	if !strings.Contains(ready, "redis") {
		t.Errorf("/readyz does not name the failing Redis check: %s", ready)
	}
}
