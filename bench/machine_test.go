//go:build bench

package bench

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// machine notes what the figures were measured on.
func machine(t *testing.T, tab *table, s settings) {
	cpu := "unknown CPU"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	mem := "unknown"
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && k == "MemTotal" {
				var kb int64
				for _, c := range strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")) {
					kb = kb*10 + int64(c-'0')
				}
				mem = strings.TrimSpace(thousands(kb/1024)) + " MB"
			}
		}
		f.Close()
	}
	redis := "redis-server ?"
	if out, err := exec.Command("redis-server", "--version").Output(); err == nil {
		redis = strings.TrimSpace(string(out))
		if i := strings.Index(redis, " sha="); i > 0 {
			redis = redis[:i]
		}
	}
	ddbl := "DynamoDB Local ?"
	if b, err := os.ReadFile(filepath.Join(dynamoDir(t), ".npm-package")); err == nil {
		ddbl = "DynamoDB Local from " + strings.TrimSpace(string(b))
	}
	load := loadAverage()
	tab.note("Machine: %d cores (%s), %s memory, %s/%s, %s; %s; %s.", runtime.NumCPU(), cpu, mem, runtime.GOOS, runtime.GOARCH, runtime.Version(), redis, ddbl)
	tab.note("Run at %s, load average at start %s. Settings: %d catch-up records, %d runs per catch-up measurement (medians), go benchmarks -count %d, freshness %d writes/s for %s, delay line %s each way, poll interval %s.",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), load, s.Records, s.Runs, s.BenchCount, s.FreshRate, s.FreshFor, s.OneWay, s.PollInterval)
}

// loadAverage is the 1, 5 and 15 minute load averages, as /proc/loadavg
// gives them.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// repoRoot is the module root, the parent of this package's directory.
func repoRoot(t *testing.T) string {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(wd)
}

// dynamoDir is where DynamoDB Local is installed, found as internal/testenv
// finds it.
func dynamoDir(t *testing.T) string {
	if d := os.Getenv("STREAMTALLY_DYNAMODB_LOCAL_DIR"); d != "" {
		return d
	}
	cache := os.Getenv("STREAMTALLY_CACHE")
	switch {
	case cache == "":
		cache = filepath.Join(repoRoot(t), ".cache")
	case !filepath.IsAbs(cache):
		cache = filepath.Join(repoRoot(t), cache)
	}
	return filepath.Join(cache, "dynamodb-local")
}
