package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/config"
	"github.com/streamtally/streamtally/internal/loadgen"
	"github.com/streamtally/streamtally/internal/testenv"
	"github.com/streamtally/streamtally/publish"
	"github.com/streamtally/streamtally/recount"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "streamtally-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "streamtally")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build streamtally: %v\n%s", err, out)
		os.Exit(1)
	}
	code := testenv.Main(m)
	// >>> IAM check (iam_test.go): after a passing run, compare the AWS
	// operations the binary called with deploy/ecs's policies. Under
	// -short nothing called AWS.
	if code == 0 && !testing.Short() {
		code = checkIAM(os.Stdout, os.Stderr)
	}
	// <<< IAM check
	os.RemoveAll(dir)
	os.Exit(code)
}

const viewsYAML = `
views:
  - name: by_platform
    group_by: [platform]
    measures:
      donations: count
      amount: sum(amount)
  - name: amount_only
    group_by: [platform, email]
    measures:
      amount: sum(amount)
`

// env is one isolated deployment: its own table, lease table and Redis
// prefix on the shared DynamoDB Local and redis-server.
type env struct {
	t         *testing.T
	dir       string
	endpoint  string
	redisAddr string
	table     string
	app       string
	prefix    string
	ddb       *dynamodb.Client
	rdb       *redis.Client
	views     []*aggregate.View
	store     *publish.Redis
	metrics   map[string]string // worker -> metrics.addr
	// Set by useRedisDeployment (redis_test.go) for a Redis other than
	// the shared server: the daemon's redis section instead of its addr
	// line, and the tests' client when that Redis is a cluster.
	redisConf string
	cluster   *redis.ClusterClient
	viewsYAML string // the views section of every configuration
}

var envSeq struct {
	sync.Mutex
	n int
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvWithViews(t, viewsYAML)
}

// newEnvWithViews is newEnv with views of the test's own.
func newEnvWithViews(t *testing.T, views string) *env {
	t.Helper()
	envSeq.Lock()
	envSeq.n++
	n := envSeq.n
	envSeq.Unlock()
	name := fmt.Sprintf("%s%d%d", strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()), n, time.Now().UnixNano()%100000)
	e := &env{
		t: t, dir: t.TempDir(),
		endpoint:  testenv.DynamoDB(t),
		redisAddr: testenv.Redis(t),
		table:     "Donations_" + name,
		app:       "app_" + name,
		prefix:    "t" + name,
		viewsYAML: views,
	}
	e.ddb = ddbClient(t, e.endpoint)
	// >>> IAM check (iam_test.go): the daemon reaches DynamoDB through a
	// recording proxy; e.ddb, the tests' own client, stays direct.
	e.endpoint = recordingEndpoint(t, e.endpoint)
	// <<< IAM check
	e.rdb = redis.NewClient(&redis.Options{Addr: e.redisAddr})
	t.Cleanup(func() { e.rdb.Close() })
	cfg, err := config.Load(e.config("check", ""))
	if err != nil {
		t.Fatal(err)
	}
	e.views = aggregate.NewViews(cfg.Specs())
	e.store = publish.NewRedis(e.rdb, e.prefix, e.views)
	return e
}

func ddbClient(t *testing.T, endpoint string) *dynamodb.Client {
	c, err := awsconfig.LoadDefaultConfig(context.Background(), awsconfig.WithRegion("us-east-1"),
		awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("local", "local", "")))
	if err != nil {
		t.Fatal(err)
	}
	return dynamodb.NewFromConfig(c, func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(endpoint) })
}

func (e *env) createTable() {
	e.t.Helper()
	if err := loadgen.CreateTable(context.Background(), e.ddb, e.table); err != nil {
		e.t.Fatal(err)
	}
}

// config writes a configuration for worker and returns its path. redisAddr
// overrides the Redis address when not empty.
func (e *env) config(worker, redisAddr string) string {
	redisLines := "  addr: " + redisAddr
	switch {
	case redisAddr == "" && e.redisConf != "":
		redisLines = e.redisConf
	case redisAddr == "":
		redisLines = "  addr: " + e.redisAddr
	}
	y := fmt.Sprintf(`
source:
  table: %s
  endpoint: %s
  region: us-east-1
  poll_interval: 50ms
checkpoint:
  app: %s
  worker_id: %s
  lease_duration: 3s
  sync_interval: 300ms
  shutdown_grace: 10s
redis:
%s
  prefix: %s
log:
  level: debug
metrics:
  addr: %s
`, e.table, e.endpoint, e.app, worker, redisLines, e.prefix, e.metricsAddr(worker)) + e.viewsYAML
	p := filepath.Join(e.dir, worker+".yaml")
	if err := os.WriteFile(p, []byte(y), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// metricsAddr gives each worker of the test its own free loopback port.
func (e *env) metricsAddr(worker string) string {
	if e.metrics == nil {
		e.metrics = map[string]string{}
	}
	if a, ok := e.metrics[worker]; ok {
		return a
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	e.metrics[worker] = a
	return a
}

// daemon is one running streamtally process.
type daemon struct {
	t      *testing.T
	worker string
	cmd    *exec.Cmd
	log    string
	done   chan struct{}
	err    error
}

func (e *env) start(worker string) *daemon { return e.startWith(worker, e.config(worker, "")) }

func (e *env) startWith(worker, cfg string) *daemon {
	e.t.Helper()
	logPath := filepath.Join(e.dir, fmt.Sprintf("%s-%d.log", worker, time.Now().UnixNano()))
	f, err := os.Create(logPath)
	if err != nil {
		e.t.Fatal(err)
	}
	cmd := exec.Command(binary, "run", "--config", cfg)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	d := &daemon{t: e.t, worker: worker, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		d.err = cmd.Wait()
		f.Close()
		close(d.done)
	}()
	e.t.Cleanup(func() {
		d.kill()
		if e.t.Failed() {
			b, _ := os.ReadFile(logPath)
			e.t.Logf("log of %s (last 3000 bytes):\n%s", worker, tail(string(b), 3000))
		}
	})
	return d
}

func (d *daemon) kill() {
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.done
}

// stop sends SIGTERM and returns the exit code and how long the exit took.
func (d *daemon) stop() (int, time.Duration) {
	start := time.Now()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(60 * time.Second):
		d.t.Fatalf("%s did not exit within 60 s of SIGTERM", d.worker)
	}
	return d.cmd.ProcessState.ExitCode(), time.Since(start)
}

func (d *daemon) logText() string {
	b, _ := os.ReadFile(d.log)
	return string(b)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// load writes ops random changes in the background; wait returns its error.
func (e *env) load(ops, writers, rate int, seed uint64) (wait func() *loadgen.Counts) {
	ch := make(chan *loadgen.Counts, 1)
	go func() {
		c, err := loadgen.Run(context.Background(), e.ddb, e.table, loadgen.Options{Ops: ops, Writers: writers, Rate: rate, Seed: seed, BadRate: 0.01, Huge: true})
		if err != nil {
			e.t.Errorf("load: %v", err)
		}
		ch <- c
	}()
	return func() *loadgen.Counts { return <-ch }
}

// waitExact waits until every view equals a recomputation from a full scan
// of the table, and fails with the differences if that does not happen.
func (e *env) waitExact(timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	var diffs []loadgen.Diff
	for {
		var err error
		diffs, err = loadgen.Check(context.Background(), e.ddb, e.table, e.store, e.views)
		if err != nil {
			e.t.Fatal(err)
		}
		if len(diffs) == 0 {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	for i, d := range diffs {
		if i == 20 {
			e.t.Errorf("... and %d more", len(diffs)-20)
			break
		}
		e.t.Errorf("drift: %s", d)
	}
	e.t.FailNow()
}

// subscriber records every message published on the views' channels.
type subscriber struct {
	mu   sync.Mutex
	msgs map[string][]deltaMsg
	ps   *redis.PubSub
}

type deltaMsg struct {
	View    string                       `json:"view"`
	Version int64                        `json:"version"`
	Deltas  map[string]map[string]string `json:"deltas"`
	Reset   bool                         `json:"reset"` // take a fresh snapshot: a rebuild swapped the view
	TsMS    int64                        `json:"ts_ms"`
	// Buckets replaces Deltas for a bucketed view: bucket -> measure ->
	// group -> delta.
	Buckets map[string]map[string]map[string]string `json:"buckets"`
}

func (e *env) subscribe() *subscriber {
	e.t.Helper()
	s := &subscriber{msgs: map[string][]deltaMsg{}}
	var chans []string
	for _, v := range e.views {
		chans = append(chans, publish.KeysFor(e.prefix, v.Name).Channel())
	}
	if e.cluster != nil {
		e.ssubscribe(s, chans)
		return s
	}
	s.ps = e.rdb.Subscribe(context.Background(), chans...)
	if _, err := s.ps.Receive(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	go s.collect(e.t, s.ps)
	e.t.Cleanup(func() { s.ps.Close() })
	return s
}

// collect records ps's messages until ps is closed.
func (s *subscriber) collect(t *testing.T, ps *redis.PubSub) {
	for m := range ps.Channel(redis.WithChannelSize(100000)) {
		var d deltaMsg
		if err := json.Unmarshal([]byte(m.Payload), &d); err != nil {
			t.Errorf("bad message %q: %v", m.Payload, err)
			continue
		}
		s.mu.Lock()
		s.msgs[d.View] = append(s.msgs[d.View], d)
		s.mu.Unlock()
	}
}

// checkDeltas checks that each view's messages carry versions 1, 2, 3...
// with no gap or repeat, and that the deltas summed per group equal the
// hashes in Redis.
func (e *env) checkDeltas(s *subscriber) {
	e.t.Helper()
	for _, v := range e.views {
		snap, err := e.store.Snapshot(context.Background(), v)
		if err != nil {
			e.t.Fatal(err)
		}
		var msgs []deltaMsg
		deadline := time.Now().Add(10 * time.Second)
		for {
			s.mu.Lock()
			msgs = append([]deltaMsg(nil), s.msgs[v.Name]...)
			s.mu.Unlock()
			if int64(len(msgs)) >= snap.Version || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if int64(len(msgs)) != snap.Version {
			e.t.Fatalf("view %s: %d messages, version %d", v.Name, len(msgs), snap.Version)
		}
		sums := map[string]map[string]aggregate.Decimal{}
		for i, m := range msgs {
			if m.Version != int64(i+1) {
				e.t.Fatalf("view %s: message %d has version %d, want %d", v.Name, i, m.Version, i+1)
			}
			if m.TsMS == 0 {
				e.t.Fatalf("view %s: message %d has no ts_ms", v.Name, i)
			}
			deltas := m.Deltas
			if v.Bucketed() {
				// One measure per bucket and measure, "<bucket> <measure>".
				deltas = map[string]map[string]string{}
				for b, ms := range m.Buckets {
					for meas, groups := range ms {
						deltas[b+" "+meas] = groups
					}
				}
			}
			for meas, groups := range deltas {
				if sums[meas] == nil {
					sums[meas] = map[string]aggregate.Decimal{}
				}
				for g, d := range groups {
					sums[meas][g] = sums[meas][g].Add(aggregate.MustDecimal(d))
				}
			}
		}
		got := map[string]map[string]string{}
		for meas, groups := range sums {
			got[meas] = map[string]string{}
			for g, d := range groups {
				if !d.IsZero() {
					got[meas][g] = d.String()
				}
			}
		}
		for _, m := range v.Measures {
			if got[m.Name] == nil && !v.Bucketed() {
				got[m.Name] = map[string]string{}
			}
		}
		want := snap.Measures
		if v.Bucketed() {
			want = e.seriesMeasures(v)
			for meas, groups := range got {
				if len(groups) == 0 && want[meas] == nil {
					delete(got, meas)
				}
			}
		}
		if diffs := recount.Compare(v.Name, want, got); len(diffs) > 0 {
			e.t.Fatalf("view %s: deltas summed differ from the hashes: %v", v.Name, diffs[:min(5, len(diffs))])
		}
		e.t.Logf("view %s: %d versions, deltas sum to the hashes exactly", v.Name, snap.Version)
	}
}

// leaseOwners returns shard -> owner from the lease table.
func (e *env) leaseOwners() map[string]string { return e.leaseAttr("AssignedTo") }

// checkpoints returns shard -> checkpoint from the lease table.
func (e *env) checkpoints() map[string]string { return e.leaseAttr("Checkpoint") }

func (e *env) leaseAttr(attr string) map[string]string {
	e.t.Helper()
	out, err := e.ddb.Scan(context.Background(), &dynamodb.ScanInput{TableName: aws.String(e.app), ConsistentRead: aws.Bool(true)})
	var missing *ddbtypes.ResourceNotFoundException
	if errors.As(err, &missing) {
		return nil // no daemon has created the lease table yet
	}
	if err != nil {
		e.t.Fatal(err)
	}
	owners := map[string]string{}
	for _, it := range out.Items {
		id := it["ShardID"].(*ddbtypes.AttributeValueMemberS).Value
		if strings.HasPrefix(id, "_worker:") {
			continue
		}
		owners[id] = ""
		if o, ok := it[attr].(*ddbtypes.AttributeValueMemberS); ok {
			owners[id] = o.Value
		}
	}
	return owners
}

// waitFor is testenv.WaitFor, short for the many waits here.
var waitFor = testenv.WaitFor

// proxy is a TCP proxy the tests can cut, to make Redis unreachable
// without losing its data.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.setDown(true) })
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			c.Close()
			continue
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		go func() { io.Copy(u, c); u.Close() }()
		go func() { io.Copy(c, u); c.Close() }()
	}
}

// setDown cuts every connection and refuses new ones, or lets them in again.
func (p *proxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}

// logLines returns the JSON log lines of a daemon whose msg contains s.
func logLines(text, s string) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && strings.Contains(fmt.Sprint(m["msg"]), s) {
			out = append(out, m)
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

var _ = strconv.Itoa
