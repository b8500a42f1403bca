//go:build bench

package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/streamtally/streamtally/internal/testenv"
)

// buildDaemon builds cmd/streamtally, so that what is measured is the
// product's binary and wiring.
func buildDaemon(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "streamtally")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/streamtally")
	cmd.Dir = repoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/streamtally: %v\n%s", err, out)
	}
	return bin
}

// daemonConfig is what a daemon run reads and writes.
type daemonConfig struct {
	Endpoint, Table, App, Redis string
	Poll                        time.Duration
	Views                       string // the YAML list under views:
}

// daemon is a running streamtally process.
type daemon struct {
	t       *testing.T
	cmd     *exec.Cmd
	metrics string
	started time.Time
	log     testenv.SyncBuffer // the daemon's stdout and stderr, shown when it fails
	exited  chan struct{}      // closed when the process has exited
	waitErr error              // how it exited, once exited is closed
	stopped sync.Once
}

func startDaemon(t *testing.T, bin string, c daemonConfig) *daemon {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf(`source:
  table: %s
  endpoint: %s
  region: us-east-1
  start: trim_horizon
  poll_interval: %s
checkpoint:
  app: %s
redis:
  addr: %s
  prefix: tally
metrics:
  addr: 127.0.0.1:%d
log:
  level: warn
views:
%s`, c.Table, c.Endpoint, c.Poll, c.App, c.Redis, port, c.Views)
	path := filepath.Join(dir, "streamtally.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	d := &daemon{t: t, metrics: fmt.Sprintf("http://127.0.0.1:%d/metrics", port), exited: make(chan struct{})}
	d.cmd = exec.Command(bin, "run", "--config", path)
	d.cmd.Stdout, d.cmd.Stderr = &d.log, &d.log
	d.cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY=")
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	d.started = time.Now()
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start streamtally: %v", err)
	}
	go func() {
		d.waitErr = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() { d.stop() })
	return d
}

// scrape returns the daemon's unlabelled metrics; nil while it does not
// answer yet.
func (d *daemon) scrape() map[string]float64 {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(d.metrics)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(val, 64); err == nil {
			out[name] = v
		}
	}
	return out
}

// waitRecords waits until the daemon has applied and checkpointed n
// records, polling its metrics every 50 ms, and returns when
// it saw that, measured from the process start, and when it first held a
// lease (start-up: configuration, lease table, stream description).
func (d *daemon) waitRecords(n int, timeout time.Duration) (took, startup time.Duration) {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-d.exited:
			d.t.Fatalf("streamtally exited early: %v\n%s", d.waitErr, d.log.String())
		default:
		}
		m := d.scrape()
		if startup == 0 && m != nil && (m["streamtally_leases_held"] >= 1 || m["streamtally_records_total"] > 0) {
			startup = time.Since(d.started)
		}
		if m != nil && m["streamtally_records_total"] >= float64(n) {
			return time.Since(d.started), startup
		}
		// A scrape costs the daemon CPU (every collector runs); polled
		// every 10 ms it took a noticeable share of a catch-up of a few
		// seconds. 50 ms is a 1% resolution on those.
		time.Sleep(50 * time.Millisecond)
	}
	m := d.scrape()
	d.t.Fatalf("streamtally applied %v of %d records within %s\n%s", m["streamtally_records_total"], n, timeout, d.log.String())
	return 0, 0
}

// usage is what the kernel says the process used so far.
type usage struct {
	PeakRSS int64 // bytes (VmHWM)
	CPU     time.Duration
}

func (d *daemon) usage() usage { return procUsage(d.t, d.cmd.Process.Pid) }

func procUsage(t *testing.T, pid int) usage {
	t.Helper()
	var u usage
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read /proc status: %v", err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == "VmHWM" {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			u.PeakRSS = kb * 1024
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("read /proc stat: %v", err)
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14 and stime 15.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	u.CPU = time.Duration(ut+st) * time.Second / clockTicks
	return u
}

// clockTicks is USER_HZ, 100 on every Linux this runs on.
const clockTicks = 100

// stop sends SIGTERM and waits for the daemon to exit; it is a no-op
// after the first call.
func (d *daemon) stop() {
	d.stopped.Do(func() {
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(30 * time.Second):
			d.cmd.Process.Kill()
			<-d.exited
		}
	})
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
