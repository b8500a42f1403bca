// Package testenv starts private DynamoDB Local and redis-server instances
// for integration tests, on free loopback ports, so test binaries running in
// parallel (go test ./...) never share state with each other or with a
// developer's long-running services.
//
// The programs are installed by scripts/deps.sh. A missing program fails the
// test instead of skipping it: a silently skipped integration suite looks
// exactly like a passing one.
//
// Use it from a TestMain so the shared instances are stopped when the tests
// end:
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
//
// Linux only (children are tied to the test binary with Pdeathsig).
package testenv

import (
	"bufio"
	"errors"
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
)

const (
	// DynamoDB Local is a JVM: a cold start on a busy 2-core CI machine can
	// take tens of seconds.
	dynamoStartTimeout = 60 * time.Second
	redisStartTimeout  = 30 * time.Second
)

// shared holds the per-process instances; Main stops them.
var shared struct {
	mu    sync.Mutex
	procs []*proc
	dirs  []string

	dynamoOnce sync.Once
	dynamoURL  string
	dynamoErr  error

	redisOnce sync.Once
	redisAddr string
	redisErr  error
}

// Main runs the tests and then stops the shared instances started by
// DynamoDB and Redis. Call it as os.Exit(testenv.Main(m)) from TestMain.
func Main(m *testing.M) int {
	code := m.Run()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	for _, p := range shared.procs {
		p.stop()
		// Logs are only interesting when something went wrong.
		if code == 0 {
			os.Remove(p.logPath)
		}
	}
	for _, d := range shared.dirs {
		os.RemoveAll(d)
	}
	shared.procs, shared.dirs = nil, nil
	return code
}

// DynamoDB returns the endpoint URL (http://127.0.0.1:PORT) of a DynamoDB
// Local instance shared by all tests of this test binary, starting it on
// first use. It runs in memory with -sharedDb, so every region and access
// key sees the same tables.
func DynamoDB(tb testing.TB) string {
	tb.Helper()
	Needs(tb, "DynamoDB Local (java)")
	shared.dynamoOnce.Do(func() {
		shared.dynamoURL, shared.dynamoErr = startDynamoDB(register)
	})
	if shared.dynamoErr != nil {
		tb.Fatalf("testenv: %v", shared.dynamoErr)
	}
	return shared.dynamoURL
}

// Needs marks tb as an integration test that runs against service: under
// go test -short, which runs the unit tests alone on a machine without the
// services, it is skipped. scripts/test.sh runs everything.
func Needs(tb testing.TB, service string) {
	tb.Helper()
	if testing.Short() {
		tb.Skipf("integration test: needs %s; skipped under -short (scripts/test.sh installs and runs it)", service)
	}
}

// Redis returns the address (127.0.0.1:PORT) of a redis-server shared by all
// tests of this test binary, starting it on first use. Tests sharing it
// should use distinct keys; use NewRedis for an instance of your own.
func Redis(tb testing.TB) string {
	tb.Helper()
	Needs(tb, "redis-server")
	shared.redisOnce.Do(func() {
		dir, err := os.MkdirTemp("", "testenv-redis-")
		if err != nil {
			shared.redisErr = err
			return
		}
		shared.mu.Lock()
		shared.dirs = append(shared.dirs, dir)
		shared.mu.Unlock()
		var p *proc
		p, shared.redisAddr, shared.redisErr = startRedis(dir, 0)
		if p != nil {
			register(p)
		}
	})
	if shared.redisErr != nil {
		tb.Fatalf("testenv: %v", shared.redisErr)
	}
	return shared.redisAddr
}

// RedisServer is a redis-server owned by one test, for tests that need to
// stop and restart Redis (outages, reconnects).
type RedisServer struct {
	tb   testing.TB
	dir  string
	port int
	args []string // beyond startRedis's own
	mu   sync.Mutex
	p    *proc // nil while stopped
	logs []string
}

// RedisOption configures a RedisServer.
type RedisOption func(*RedisServer)

// AppendOnly makes the server persist every write to its append-only file
// before acknowledging it, so a crash and Start lose nothing acknowledged.
func AppendOnly() RedisOption {
	return func(r *RedisServer) { r.args = append(r.args, "--appendonly", "yes", "--appendfsync", "always") }
}

// NewRedis starts a fresh redis-server for tb alone. It is stopped when the
// test ends.
func NewRedis(tb testing.TB, opts ...RedisOption) *RedisServer {
	tb.Helper()
	Needs(tb, "redis-server")
	r := &RedisServer{tb: tb, dir: tb.TempDir()}
	for _, o := range opts {
		o(r)
	}
	tb.Cleanup(func() {
		r.Stop()
		if !tb.Failed() {
			for _, l := range r.logs {
				os.Remove(l)
			}
		}
	})
	r.Start()
	return r
}

// Addr returns 127.0.0.1:PORT; it stays the same across Stop and Start.
func (r *RedisServer) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port))
}

// Stop kills the server abruptly, like a crash. Clients see connection
// errors until Start. Stopping a stopped server does nothing.
func (r *RedisServer) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.p != nil {
		r.p.stop()
		r.p = nil
	}
}

// Start starts the server again on the same port and waits until it answers
// PING. The data set is empty unless the server is AppendOnly. It must be
// called from the test's goroutine, as it fails the test on error. Starting a
// running server does nothing.
func (r *RedisServer) Start() {
	r.tb.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.p != nil {
		return
	}
	p, _, err := startRedis(r.dir, r.port, r.args...)
	if p != nil {
		r.logs = append(r.logs, p.logPath)
	}
	if err != nil {
		r.tb.Fatalf("testenv: %v", err)
	}
	r.p, r.port = p, p.port
}

// NewDynamoDB starts a DynamoDB Local for tb alone and returns its endpoint
// URL; it is stopped when the test ends. Every write to DynamoDB Local costs
// time in proportion to the stream records the instance holds, tables
// deleted or not (on two cores, a fresh instance takes about 480 writes a
// second, one that has taken 21 000 writes about 115), so a test that
// writes tens of thousands of items runs on its own instance rather than
// slow down every test after it.
func NewDynamoDB(tb testing.TB) string {
	tb.Helper()
	Needs(tb, "DynamoDB Local (java)")
	var p *proc
	url, err := startDynamoDB(func(started *proc) { p = started })
	if p != nil {
		tb.Cleanup(func() {
			p.stop()
			if !tb.Failed() {
				os.Remove(p.logPath)
			}
		})
	}
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	return url
}

// startDynamoDB starts DynamoDB Local and hands its process to own, which
// stops it in the end, as soon as it runs.
func startDynamoDB(own func(*proc)) (string, error) {
	dir, err := dynamoDir()
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(dir, "DynamoDBLocal.jar")); err != nil {
		return "", fmt.Errorf("DynamoDB Local not found in %s (%v); run scripts/deps.sh to install it", dir, err)
	}
	port, err := freePort()
	if err != nil {
		return "", err
	}
	p, err := startProc("dynamodb", dir, port,
		"java", "-Djava.library.path=DynamoDBLocal_lib", "-jar", "DynamoDBLocal.jar",
		// Telemetry would try to reach the internet on every start.
		"-inMemory", "-sharedDb", "-disableTelemetry", "-port", strconv.Itoa(port))
	if err != nil {
		return "", err
	}
	own(p)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	client := &http.Client{Timeout: 2 * time.Second}
	err = p.waitReady(dynamoStartTimeout, func() bool {
		// Any HTTP answer (GET / is a 400) means the server is up.
		resp, err := client.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	if err != nil {
		return "", err
	}
	return url, nil
}

// startRedis starts redis-server with its working files in dir, on port or a
// free port if port is 0, and extra arguments, which override its own. The
// returned proc is non-nil once a process was started, even on error, so
// that callers can keep track of its log.
func startRedis(dir string, port int, extra ...string) (*proc, string, error) {
	if port == 0 {
		var err error
		if port, err = freePort(); err != nil {
			return nil, "", err
		}
	}
	args := append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir}, extra...)
	p, err := startProc("redis", dir, port, "redis-server", args...)
	if err != nil {
		return nil, "", err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if err := p.waitReady(redisStartTimeout, func() bool { return ping(addr) == nil }); err != nil {
		p.stop()
		return p, "", err
	}
	return p, addr, nil
}

// ping sends an inline PING, which needs no RESP client.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("PING %s: unexpected reply %q", addr, line)
	}
	return nil
}

func register(p *proc) {
	shared.mu.Lock()
	shared.procs = append(shared.procs, p)
	shared.mu.Unlock()
}

type proc struct {
	name    string
	port    int
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{} // closed once the process has been reaped
}

func startProc(name, dir string, port int, prog string, args ...string) (*proc, error) {
	path, err := exec.LookPath(prog)
	if err != nil {
		return nil, fmt.Errorf("%s: %v; run scripts/deps.sh to install it", name, err)
	}
	logFile, err := os.CreateTemp("", "testenv-"+name+"-*.log")
	if err != nil {
		return nil, err
	}
	defer logFile.Close()

	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Own process group, so stop can kill anything the server forks.
		Setpgid: true,
		// Dies with the test binary even when it is killed (timeout panic,
		// Ctrl-C, SIGKILL) and Main never gets to clean up.
		Pdeathsig: syscall.SIGKILL,
	}
	p := &proc{name: name, port: port, cmd: cmd, logPath: logFile.Name(), exited: make(chan struct{})}

	// Pdeathsig fires when the forking OS thread exits, not the process. A
	// thread only exits if a goroutine locked to it ends, which a caller's
	// test goroutine might do; a fresh goroutine never runs on such a thread.
	errc := make(chan error, 1)
	go func() { errc <- cmd.Start() }()
	if err := <-errc; err != nil {
		return nil, fmt.Errorf("start %s: %v (log: %s)", name, err, p.logPath)
	}
	go func() {
		cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// waitReady polls ready until it succeeds, the process exits or timeout
// passes. On failure it kills the process and reports the log.
func (p *proc) waitReady(timeout time.Duration, ready func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-p.exited:
			return p.failure(fmt.Sprintf("exited during startup (%v)", p.cmd.ProcessState))
		default:
		}
		if ready() {
			// The port may have been taken by someone else between freePort
			// and the child's bind; then the answer came from them.
			select {
			case <-p.exited:
				return p.failure("exited during startup (port taken?)")
			default:
				return nil
			}
		}
		if time.Now().After(deadline) {
			p.stop()
			return p.failure(fmt.Sprintf("did not answer on 127.0.0.1:%d within %v", p.port, timeout))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *proc) failure(what string) error {
	msg := fmt.Sprintf("%s %s; log: %s", p.name, what, p.logPath)
	if b, err := os.ReadFile(p.logPath); err == nil && len(b) > 0 {
		const tail = 2000
		if len(b) > tail {
			b = b[len(b)-tail:]
		}
		msg += "\n--- end of log ---\n" + string(b)
	}
	return errors.New(msg)
}

func (p *proc) stop() {
	select {
	case <-p.exited:
		return // reaped: its pid may already belong to someone else
	default:
	}
	// The negative pid addresses the whole process group.
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
	}
}

// freePort asks the kernel for an unused port. Another process could take it
// before the child binds it; waitReady notices when the child then exits.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// dynamoDir finds the DynamoDB Local install the same way scripts/deps.sh
// places it.
func dynamoDir() (string, error) {
	if d := os.Getenv("STREAMTALLY_DYNAMODB_LOCAL_DIR"); d != "" {
		return d, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	cache := os.Getenv("STREAMTALLY_CACHE")
	switch {
	case cache == "":
		cache = filepath.Join(root, ".cache")
	case !filepath.IsAbs(cache):
		cache = filepath.Join(root, cache)
	}
	return filepath.Join(cache, "dynamodb-local"), nil
}

// repoRoot walks up from the working directory (the package directory under
// go test) to the directory holding go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory; cannot locate .cache/dynamodb-local (set STREAMTALLY_DYNAMODB_LOCAL_DIR)")
		}
		dir = parent
	}
}

// WaitFor polls cond until it holds, failing the test with what it waited
// for once timeout has passed. Tests wait on eventual outcomes this way
// rather than sleeping a guessed time.
func WaitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
