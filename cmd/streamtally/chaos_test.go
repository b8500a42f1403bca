package main

// The chaos suite: the real binary under crashes, lease races, Redis
// restarts and a faulty DynamoDB Streams endpoint, each case ending with
// every view compared, cell by cell, with a recomputation from a full scan
// of the table. docs/RELIABILITY.md describes the cases and the fault
// model.
//
// The short form runs with every `go test`. STREAMTALLY_CHAOS=long selects
// the long form (`make chaos`). STREAMTALLY_CHAOS_SEED replays a run's
// random choices (kill times, faults, load) as far as timing allows.
//
// Each case prints one line of figures, also on stdout under -v:
//
//	chaos: case=sigkill form=long seed=1 records=12000 faults=20 drift=0 took=41s ...

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/internal/faultproxy"
	"github.com/streamtally/streamtally/internal/loadgen"
	"github.com/streamtally/streamtally/internal/testenv"
	"github.com/streamtally/streamtally/publish"
)

// plan is the size of a chaos run.
type plan struct {
	long bool
	seed uint64
}

func chaosPlan(t *testing.T) plan {
	t.Helper()
	var p plan
	switch v := os.Getenv("STREAMTALLY_CHAOS"); v {
	case "", "short":
	case "long":
		p.long = true
	default:
		t.Fatalf("STREAMTALLY_CHAOS=%q: want short or long", v)
	}
	p.seed = 1
	if s := os.Getenv("STREAMTALLY_CHAOS_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("STREAMTALLY_CHAOS_SEED=%q: %v", s, err)
		}
		p.seed = n
	}
	return p
}

// n picks the short or the long figure.
func (p plan) n(short, long int) int {
	if p.long {
		return long
	}
	return short
}

func (p plan) form() string {
	if p.long {
		return "long"
	}
	return "short"
}

// rand returns a generator for one purpose of the case, so that adding a
// draw for one purpose leaves the others' sequences alone.
func (p plan) rand(purpose uint64) *rand.Rand { return rand.New(rand.NewPCG(p.seed, purpose)) }

// around returns a duration uniformly within ±80% of mean.
func around(r *rand.Rand, mean time.Duration) time.Duration {
	return mean/5 + time.Duration(r.Int64N(int64(mean)*8/5+1))
}

// figures is a case's one line of results.
type figures struct {
	t       *testing.T
	name    string
	p       plan
	start   time.Time
	records int64
	faults  int64
	drift   int // -1 until compared
	extra   []string
	hooks   []func()
	once    sync.Once
}

func newFigures(t *testing.T, name string, p plan) *figures {
	return &figures{t: t, name: name, p: p, start: time.Now(), drift: -1}
}

// add appends key=value to the line, in call order.
func (f *figures) add(key string, value any) {
	f.extra = append(f.extra, fmt.Sprintf("%s=%v", key, value))
}

// atReport runs fn just before the line is printed, for figures that
// keep changing until the end, such as faults still being injected.
func (f *figures) atReport(fn func()) { f.hooks = append(f.hooks, fn) }

func (f *figures) line() string {
	drift := "n/a"
	if f.drift >= 0 {
		drift = strconv.Itoa(f.drift)
	}
	s := fmt.Sprintf("chaos: case=%s form=%s seed=%d records=%d faults=%d drift=%s took=%s",
		f.name, f.p.form(), f.p.seed, f.records, f.faults, drift, time.Since(f.start).Round(time.Second))
	if len(f.extra) > 0 {
		s += " " + strings.Join(f.extra, " ")
	}
	if f.t.Failed() {
		s += " result=FAIL"
	}
	return s
}

// report prints the line once: through t.Log and, in -v runs, bare on
// stdout, where `grep '^chaos:'` finds it.
func (f *figures) report() {
	f.once.Do(func() {
		for _, h := range f.hooks {
			h()
		}
		l := f.line()
		f.t.Log(l)
		if testing.Verbose() {
			fmt.Println(l)
		}
	})
}

// settle waits until views equal a recomputation from a full scan of the
// table, or timeout passes. It records the differing cells as the drift
// and, if there are any, prints the figures and fails with them.
func (f *figures) settle(e *env, timeout time.Duration, views []*aggregate.View) {
	f.t.Helper()
	deadline := time.Now().Add(timeout)
	var diffs []loadgen.Diff
	for {
		var err error
		diffs, err = loadgen.Check(context.Background(), e.ddb, e.table, e.store, views)
		if err != nil {
			f.t.Fatal(err)
		}
		if len(diffs) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	f.drift = len(diffs)
	if f.drift == 0 {
		return
	}
	f.report()
	for i, d := range diffs {
		if i == 20 {
			f.t.Errorf("... and %d more", len(diffs)-20)
			break
		}
		f.t.Errorf("drift: %s", d)
	}
	f.t.FailNow()
}

func total(c *loadgen.Counts) int64 {
	return c.Inserts.Load() + c.Moves.Load() + c.Amounts.Load() + c.Deletes.Load()
}

// newChaosEnv is newEnv on a DynamoDB Local of the test's own: a case
// writes thousands of items, and DynamoDB Local slows down with every
// stream record it holds (see testenv.NewDynamoDB). The daemon reaches it
// through a proxy that records its calls for the IAM check, as it reaches
// the shared instance.
func newChaosEnv(t *testing.T) *env {
	t.Helper()
	e := newEnv(t)
	direct := testenv.NewDynamoDB(t)
	e.ddb = ddbClient(t, direct)
	fwd, err := faultproxy.New(faultproxy.Config{Target: direct})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		record(r.Header.Get("X-Amz-Target"), body)
		fwd.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	e.endpoint = srv.URL
	return e
}

// configEdit writes worker's configuration with each old string replaced
// by the new one that follows it (first occurrence), and returns its path.
func (e *env) configEdit(worker, redisAddr string, oldNew ...string) string {
	e.t.Helper()
	b, err := os.ReadFile(e.config(worker, redisAddr))
	if err != nil {
		e.t.Fatal(err)
	}
	y := string(b)
	for i := 0; i+1 < len(oldNew); i += 2 {
		if !strings.Contains(y, oldNew[i]) {
			e.t.Fatalf("config of %s lacks %q:\n%s", worker, oldNew[i], y)
		}
		y = strings.Replace(y, oldNew[i], oldNew[i+1], 1)
	}
	p := filepath.Join(e.dir, worker+"-edited.yaml")
	if err := os.WriteFile(p, []byte(y), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// useRedis points the env (daemons started later, checks, subscribers)
// at the Redis at addr.
func (e *env) useRedis(addr string) {
	e.rdb.Close()
	e.redisAddr = addr
	e.rdb = redis.NewClient(&redis.Options{Addr: addr})
	e.store = publish.NewRedis(e.rdb, e.prefix, e.views)
}

// faultProxy serves a fault-injecting proxy to cfg.Target until the test
// ends and returns it with its URL.
func faultProxy(t *testing.T, cfg faultproxy.Config) (*faultproxy.Proxy, string) {
	t.Helper()
	p, err := faultproxy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return p, srv.URL
}

// metricsSum adds up the named series over the workers' /metrics, scraped
// now: counters start from 0 in each process, so scrape before a kill.
func metricsSum(t *testing.T, e *env, workers []string, names ...string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, w := range workers {
		m := scrape(t, e.metricsAddr(w))
		for _, n := range names {
			v, _ := metric(m, n)
			out[n] += v
		}
	}
	return out
}

func countLines(logs []string, msg string) int {
	n := 0
	for _, l := range logs {
		n += len(logLines(l, msg))
	}
	return n
}

// checkVersionsAcrossRestarts is what a subscriber can check when Redis
// restarted under it: messages published while its subscription was down
// are gone (pub/sub is fire-and-forget), but per view the versions
// received must only grow, never repeat, and end at the view's version.
// If none went missing, checkDeltas must hold too. It returns the number
// of messages missed.
func (e *env) checkVersionsAcrossRestarts(s *subscriber) int64 {
	e.t.Helper()
	var missed int64
	for _, v := range e.views {
		snap, err := e.store.Snapshot(context.Background(), v)
		if err != nil {
			e.t.Fatal(err)
		}
		// Pub/sub drops what is published while a subscriber reconnects,
		// and the last version may be among it; then it is counted as
		// missed below, like any other.
		var msgs []deltaMsg
		deadline := time.Now().Add(15 * time.Second)
		for {
			s.mu.Lock()
			msgs = append([]deltaMsg(nil), s.msgs[v.Name]...)
			s.mu.Unlock()
			if len(msgs) > 0 && msgs[len(msgs)-1].Version == snap.Version || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		for i := 1; i < len(msgs); i++ {
			if msgs[i].Version <= msgs[i-1].Version {
				e.t.Fatalf("view %s: version %d received after %d", v.Name, msgs[i].Version, msgs[i-1].Version)
			}
		}
		missed += snap.Version - int64(len(msgs))
	}
	if missed == 0 {
		e.checkDeltas(s)
	}
	return missed
}

// TestChaosSIGKILL kills the daemon while inserts, platform moves, amount
// changes and deletes land: every other kill at a random moment, the rest
// the instant a batch shows up on pub/sub, which is after Redis applied it
// and often before the checkpoint is written. Those kills leave Redis ahead
// of the checkpoint, so the restarted daemon reads applied records again
// and the fence must skip them. Lease-table writes take 0-40 ms, as they
// do across a network; DynamoDB Local on loopback would answer before the
// kill arrives. Most restarts reuse the worker id and take the lease back
// at once; every fourth comes up under a new id and waits for the dead
// worker's lease to expire.
func TestChaosSIGKILL(t *testing.T) {
	p := chaosPlan(t)
	f := newFigures(t, "sigkill", p)
	defer f.report()
	e := newChaosEnv(t)
	e.createTable()
	sub := e.subscribe()
	applied := e.rdb.Subscribe(context.Background(), publish.KeysFor(e.prefix, e.views[0].Name).Channel())
	defer applied.Close()
	batches := applied.Channel()

	_, leases := faultProxy(t, faultproxy.Config{
		Target: e.endpoint, Match: faultproxy.Writes, Seed: p.seed,
		Rates: faultproxy.Rates{faultproxy.Slow: 1}, MaxDelay: 40 * time.Millisecond,
	})
	start := func(worker string) *daemon {
		return e.startWith(worker, e.configEdit(worker, "", "checkpoint:\n", "checkpoint:\n  endpoint: "+leases+"\n"))
	}

	ops, kills, rate := p.n(3000, 12000), p.n(6, 20), 400
	wait := e.load(ops, 4, rate, p.seed)
	r := p.rand(1)
	mean := time.Duration(ops) * time.Second / time.Duration(rate*kills)
	id, d := 1, start("w1")
	var logs []string
	ahead := 0
	for i := range kills {
		time.Sleep(around(r, mean))
		if i%2 == 1 {
			drain(batches)
			select {
			case <-batches:
			case <-time.After(10 * time.Second): // the load is over
			}
		}
		d.kill()
		if e.redisAheadOfCheckpoint() {
			ahead++
		}
		logs = append(logs, d.logText())
		f.faults++
		if i%4 == 3 {
			id++
		}
		d = start("w" + strconv.Itoa(id))
	}
	counts := wait()
	f.records = total(counts)
	f.add("kills", kills)
	f.add("redis_ahead", ahead)
	f.add("workers", id)
	f.settle(e, 2*time.Minute, e.views)
	e.checkDeltas(sub)
	logs = append(logs, d.logText())
	f.add("leases_taken", countLines(logs, "lease taken"))
	if ahead == 0 {
		t.Error("no kill left Redis ahead of the checkpoint: no replay put the fence to the test")
	}
	if code, _ := d.stop(); code != 0 {
		t.Fatalf("last daemon: exit %d after SIGTERM", code)
	}
}

func drain[T any](c <-chan T) {
	for {
		select {
		case <-c:
		default:
			return
		}
	}
}

// redisAheadOfCheckpoint reports whether some view's fence is past its
// shard's checkpoint: records applied but not checkpointed, which the next
// reader of the shard reads again.
func (e *env) redisAheadOfCheckpoint() bool {
	e.t.Helper()
	for shard, cp := range e.checkpoints() {
		for _, v := range e.views {
			fence, err := e.rdb.HGet(context.Background(), publish.KeysFor(e.prefix, v.Name).Meta(), "fence:"+shard).Result()
			if err == redis.Nil {
				continue
			}
			if err != nil {
				e.t.Fatal(err)
			}
			if cp == "" || streamtally.Seq(cp).Less(streamtally.Seq(fence)) {
				return true
			}
		}
	}
	return false
}

// TestChaosLeaseHolders runs three daemons on one stream, kills whichever
// holds the lease, again and again (each comes back at once under its own
// id), then restarts all three in turn with SIGTERM.
func TestChaosLeaseHolders(t *testing.T) {
	p := chaosPlan(t)
	f := newFigures(t, "leaseholders", p)
	defer f.report()
	e := newChaosEnv(t)
	e.createTable()
	sub := e.subscribe()

	ops, kills := p.n(2500, 9000), p.n(2, 6)
	wait := e.load(ops, 4, 300, p.seed)
	r := p.rand(2)
	ids := []string{"w1", "w2", "w3"}
	daemons := map[string]*daemon{}
	for _, w := range ids {
		daemons[w] = e.start(w)
	}
	var logs []string
	// holder waits for a live daemon to hold a lease and returns the shard.
	holder := func(not string) (shard, owner string) {
		waitFor(t, 60*time.Second, "a lease held by a live daemon other than "+not, func() bool {
			owners := e.leaseOwners()
			for _, s := range sortedKeys(owners) {
				if o := owners[s]; o != "" && o != not && daemons[o] != nil {
					shard, owner = s, o
					return true
				}
			}
			return false
		})
		return shard, owner
	}
	var longest time.Duration
	for range kills {
		time.Sleep(around(r, time.Second))
		shard, victim := holder("")
		daemons[victim].kill()
		logs = append(logs, daemons[victim].logText())
		f.faults++
		killed := time.Now()
		delete(daemons, victim)
		holder(victim) // the shard moves once the lease expires
		longest = max(longest, time.Since(killed))
		t.Logf("killed %s holding %s; taken over after %s", victim, shard, time.Since(killed).Round(100*time.Millisecond))
		daemons[victim] = e.start(victim)
	}
	for _, w := range ids {
		time.Sleep(around(r, 700*time.Millisecond))
		code, took := daemons[w].stop()
		logs = append(logs, daemons[w].logText())
		if code != 0 {
			t.Fatalf("%s: exit %d after SIGTERM", w, code)
		}
		f.faults++
		t.Logf("rolling restart: %s stopped in %s", w, took.Round(time.Millisecond))
		daemons[w] = e.start(w)
	}
	counts := wait()
	f.records = total(counts)
	f.add("kills", kills)
	f.add("sigterms", len(ids))
	f.add("longest_takeover", longest.Round(100*time.Millisecond))
	f.settle(e, 2*time.Minute, e.views)
	e.checkDeltas(sub)
	for _, w := range ids {
		logs = append(logs, daemons[w].logText())
	}
	f.add("leases_taken", countLines(logs, "lease taken"))
}

// TestChaosRedisRestart restarts a Redis that persists every write before
// acknowledging it (appendfsync always), alternately by SIGKILL and by
// SHUTDOWN, while the daemon applies batches. The daemon must wait, resume,
// and apply every record once.
func TestChaosRedisRestart(t *testing.T) {
	p := chaosPlan(t)
	f := newFigures(t, "redis-restart", p)
	defer f.report()
	e := newChaosEnv(t)
	e.createTable()
	srv := testenv.NewRedis(t, testenv.AppendOnly())
	e.useRedis(srv.Addr())
	sub := e.subscribe()

	ops, restarts := p.n(3000, 10000), p.n(2, 6)
	wait := e.load(ops, 4, 400, p.seed)
	d := e.start("w1")
	r := p.rand(3)
	var down time.Duration
	for i := range restarts {
		time.Sleep(around(r, 2*time.Second))
		how := "SIGKILL"
		if i%2 == 1 {
			how = "SHUTDOWN"
			shutdownRedis(t, srv.Addr())
		}
		srv.Stop()
		pause := around(r, 1500*time.Millisecond)
		time.Sleep(pause)
		srv.Start()
		down += pause
		f.faults++
		t.Logf("Redis restarted after %s, down %s", how, pause.Round(10*time.Millisecond))
	}
	counts := wait()
	f.records = total(counts)
	f.add("restarts", restarts)
	f.add("down", down.Round(100*time.Millisecond))
	f.settle(e, 2*time.Minute, e.views)
	f.add("msgs_missed", e.checkVersionsAcrossRestarts(sub))
	failed := len(logLines(d.logText(), "applying batch failed"))
	f.add("failed_applies", failed)
	if failed == 0 {
		t.Fatal("no failed apply was logged: the restarts never hit the daemon")
	}
	if code, _ := d.stop(); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}
}

// shutdownRedis sends SHUTDOWN, which fsyncs the append-only file and
// exits, and waits until the server no longer accepts connections.
func shutdownRedis(t *testing.T, addr string) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	// The server exits before answering, so the error is the closed
	// connection.
	_ = c.Shutdown(context.Background()).Err()
	waitFor(t, 10*time.Second, "Redis to exit after SHUTDOWN", func() bool {
		conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return true
		}
		conn.Close()
		return false
	})
}

// TestChaosRedisEmpty takes the daemon's data away while it runs: a Redis
// restarted without persistence, a FLUSHALL, or one view's keys deleted.
// The daemon must notice that a view it had applied records to vanished,
// mark it lost instead of refilling it with partial counters, and say so
// in its log, its metrics, /readyz and the snapshot command, while the
// views that kept their data stay exact.
func TestChaosRedisEmpty(t *testing.T) {
	p := chaosPlan(t)
	cases := []struct {
		name string
		lose func(t *testing.T, e *env, srv *testenv.RedisServer)
		lost []string // views whose data goes
	}{
		{"restart", func(t *testing.T, e *env, srv *testenv.RedisServer) {
			srv.Stop()
			time.Sleep(500 * time.Millisecond)
			srv.Start()
		}, []string{"by_platform", "amount_only"}},
		{"flushall", func(t *testing.T, e *env, _ *testenv.RedisServer) {
			if err := e.rdb.FlushAll(context.Background()).Err(); err != nil {
				t.Fatal(err)
			}
		}, []string{"by_platform", "amount_only"}},
		{"one-view", func(t *testing.T, e *env, _ *testenv.RedisServer) {
			k := publish.KeysFor(e.prefix, "by_platform")
			keys := []string{k.Meta(), k.Items()}
			for _, v := range e.views {
				if v.Name == "by_platform" {
					for _, m := range v.Measures {
						keys = append(keys, k.Measure(m.Name))
					}
				}
			}
			if err := e.rdb.Del(context.Background(), keys...).Err(); err != nil {
				t.Fatal(err)
			}
		}, []string{"by_platform"}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFigures(t, "redis-empty/"+c.name, p)
			defer f.report()
			e := newChaosEnv(t)
			e.createTable()
			srv := testenv.NewRedis(t)
			e.useRedis(srv.Addr())
			d := e.start("w1")
			wait := e.load(p.n(1500, 5000), 2, 250, p.seed+uint64(i))
			waitFor(t, 30*time.Second, "the first applied batches", func() bool {
				v, _ := e.rdb.HGet(context.Background(), publish.KeysFor(e.prefix, "by_platform").Meta(), "version").Int64()
				return v >= 5
			})
			c.lose(t, e, srv)
			f.faults++
			counts := wait()
			f.records = total(counts)
			f.add("lost", len(c.lost))

			lost := map[string]bool{}
			for _, name := range c.lost {
				lost[name] = true
			}
			var kept []*aggregate.View
			for _, v := range e.views {
				if !lost[v.Name] {
					kept = append(kept, v)
				}
			}
			f.add("kept", len(kept))
			ctx := context.Background()
			for _, name := range c.lost {
				k := publish.KeysFor(e.prefix, name)
				waitFor(t, 60*time.Second, "view "+name+" marked lost in "+k.Meta(), func() bool {
					ok, err := e.rdb.HExists(ctx, k.Meta(), "lost").Result()
					return err == nil && ok
				})
			}
			f.settle(e, time.Minute, kept)

			for _, name := range c.lost {
				k := publish.KeysFor(e.prefix, name)
				for _, v := range e.views {
					if v.Name != name {
						continue
					}
					for _, m := range v.Measures {
						if n := e.rdb.HLen(ctx, k.Measure(m.Name)).Val(); n != 0 {
							t.Errorf("view %s: %s holds %d groups after the loss: partial counters served", name, k.Measure(m.Name), n)
						}
					}
				}
				if !hasErrorLine(d.logText(), name) {
					t.Errorf("no ERROR log line saying view %s is lost", name)
				}
				series := `streamtally_view_lost{view="` + name + `"}`
				if v, ok := scrape(t, e.metricsAddr("w1"))[series]; !ok || v != 1 {
					t.Errorf("%s = %v (present %v), want 1", series, v, ok)
				}
				code, body := httpStatus(t, "http://"+e.metricsAddr("w1")+"/readyz")
				if code != http.StatusServiceUnavailable || !strings.Contains(body, name) || !strings.Contains(body, "lost") {
					t.Errorf("/readyz: %d %s; want 503 naming view %s as lost", code, body, name)
				}
				out, code := runBinary(t, "snapshot", "--config", e.config("w1", ""), "--view", name)
				if code == 0 || !strings.Contains(out, name) {
					t.Errorf("snapshot of lost view %s: exit %d, output %q; want non-zero naming it", name, code, out)
				}
			}
			for _, v := range kept {
				if out, code := runBinary(t, "snapshot", "--config", e.config("w1", ""), "--view", v.Name); code != 0 {
					t.Errorf("snapshot of intact view %s: exit %d: %s", v.Name, code, out)
				}
			}
		})
	}
}

// hasErrorLine reports whether the log has an ERROR line about view that
// says it is lost.
func hasErrorLine(log, view string) bool {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, `"level":"ERROR"`) && strings.Contains(l, "lost") && strings.Contains(l, view) {
			return true
		}
	}
	return false
}

// TestChaosStreamsFaults puts a fault-injecting proxy between the daemon
// and DynamoDB Streams: server errors, throttling, slow answers,
// connection resets before and after the backend saw the request, expired
// iterators, and a few seconds in which every Streams call fails. The
// lease table stays direct, so that the faults test the reader alone (the
// lease-race case puts the lease table under stress). The daemon must
// count what reached it and lose nothing.
func TestChaosStreamsFaults(t *testing.T) {
	p := chaosPlan(t)
	f := newFigures(t, "streams-faults", p)
	defer f.report()
	e := newChaosEnv(t)
	e.createTable()
	sub := e.subscribe()
	fp, url := faultProxy(t, faultproxy.Config{Target: e.endpoint, Match: faultproxy.Streams, MaxDelay: 1500 * time.Millisecond, Seed: p.seed})
	cfg := e.configEdit("w1", "",
		"  endpoint: "+e.endpoint+"\n", "  endpoint: "+url+"\n",
		"checkpoint:\n", "checkpoint:\n  endpoint: "+e.endpoint+"\n")
	d := e.startWith("w1", cfg)
	// Faults start once the daemon reads: at start-up, a stream it cannot
	// describe is a reason to exit.
	waitFor(t, 30*time.Second, "w1 to hold a lease", func() bool {
		for _, o := range e.leaseOwners() {
			if o == "w1" {
				return true
			}
		}
		return false
	})
	rates := faultproxy.Rates{
		faultproxy.ServerError: 0.06, faultproxy.Throttle: 0.08, faultproxy.Slow: 0.06,
		faultproxy.ResetBefore: 0.05, faultproxy.ResetAfter: 0.05, faultproxy.ExpiredIterator: 0.06,
	}
	if err := fp.SetRates(rates); err != nil {
		t.Fatal(err)
	}
	f.atReport(func() {
		c := fp.Counts()
		f.faults = c.Total()
		f.add("streams_calls", fp.Matched())
		for _, k := range faultproxy.Kinds {
			f.add(k.String(), c[k])
		}
	})
	ops := p.n(2500, 10000)
	wait := e.load(ops, 4, 300, p.seed)
	// Then each kind alone, a few times over, so that every kind is
	// injected whatever the draws, and an outage that outlasts the SDK's
	// retries, so that errors reach the reader and its counters.
	time.Sleep(time.Duration(ops) * time.Second / 300 * 2 / 5)
	for _, k := range faultproxy.Kinds {
		want := fp.Counts()[k] + 3
		fp.SetRates(faultproxy.Rates{k: 1})
		waitFor(t, time.Minute, fmt.Sprintf("3 more faults of kind %s", k), func() bool { return fp.Counts()[k] >= want })
	}
	fp.SetRates(faultproxy.Rates{faultproxy.ServerError: 1})
	outage := time.Now()
	waitFor(t, time.Minute, "a Streams error to outlast the SDK's retries", func() bool {
		v, _ := metric(scrape(t, e.metricsAddr("w1")), "streamtally_stream_errors_total")
		return v > 0
	})
	f.add("outage", time.Since(outage).Round(100*time.Millisecond))
	fp.SetRates(rates)
	counts := wait()
	f.records = total(counts)
	// The faults go on while the daemon catches up.
	f.settle(e, 2*time.Minute, e.views)
	fp.SetRates(nil)
	c := fp.Counts()
	e.checkDeltas(sub)

	m := scrape(t, e.metricsAddr("w1"))
	streamErrors, _ := metric(m, "streamtally_stream_errors_total")
	expired, _ := metric(m, "streamtally_expired_iterators_total")
	f.add("stream_errors", streamErrors)
	f.add("expired_iterators", expired)
	log := d.logText()
	readFailed := len(logLines(log, "get records failed")) + len(logLines(log, "get shard iterator failed"))
	f.add("sync_failed", len(logLines(log, "shard sync failed")))
	if int64(expired) != c[faultproxy.ExpiredIterator] {
		t.Errorf("streamtally_expired_iterators_total = %v, the proxy answered ExpiredIteratorException %d times", expired, c[faultproxy.ExpiredIterator])
	}
	if n := len(logLines(log, "shard iterator expired")); int64(n) != c[faultproxy.ExpiredIterator] {
		t.Errorf("%d log lines about expired iterators, %d injected", n, c[faultproxy.ExpiredIterator])
	}
	// Each error that outlasted the SDK's retries took at least one
	// injected failure.
	failures := c[faultproxy.ServerError] + c[faultproxy.Throttle] + c[faultproxy.ResetBefore] + c[faultproxy.ResetAfter]
	if streamErrors < 1 || int64(streamErrors) > failures {
		t.Errorf("streamtally_stream_errors_total = %v, want between 1 and the %d failures injected", streamErrors, failures)
	}
	if float64(readFailed) != streamErrors {
		t.Errorf("%d read failures logged, streamtally_stream_errors_total = %v", readFailed, streamErrors)
	}
	if code, _ := d.stop(); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}
}

// TestChaosLeaseRace starts two daemons at the same instant on a fresh
// lease table, round after round, with a short lease, and delays the lease
// table's claims, renewals and heartbeats at random through a proxy, so
// that leases expire and are taken while their old holder still reads.
// Checkpoints go through at once: the old holder goes on applying batches
// until a checkpoint tells it the lease is gone. The fence must keep every
// record applied once.
func TestChaosLeaseRace(t *testing.T) {
	p := chaosPlan(t)
	f := newFigures(t, "lease-race", p)
	defer f.report()
	e := newChaosEnv(t)
	e.createTable()
	sub := e.subscribe()
	lp, url := faultProxy(t, faultproxy.Config{
		Target: e.endpoint, Seed: p.seed,
		Match: func(target string, body []byte) bool {
			return faultproxy.Writes(target, body) && bytes.Contains(body, []byte("LeaseTimeout"))
		},
		Rates: faultproxy.Rates{faultproxy.Slow: 0.3}, MaxDelay: 2500 * time.Millisecond,
	})
	rounds := p.n(2, 5)
	ops := p.n(3000, 10000)
	wait := e.load(ops, 4, 300, p.seed)
	roundTime := time.Duration(ops) * time.Second / 300 / time.Duration(rounds)
	base := e.app
	ids := []string{"w1", "w2"}
	names := []string{"leases_taken", "leases_lost", "fence_conflicts", "replayed_records"}
	sums := map[string]float64{}
	var logs []string
	f.atReport(func() {
		f.faults = lp.Counts()[faultproxy.Slow]
		f.add("rounds", rounds)
		f.add("lease_writes", lp.Matched())
		for _, n := range names {
			f.add(n, sums[n])
		}
		takeovers := 0
		for _, l := range logs {
			for _, m := range logLines(l, "lease taken") {
				if m["previous_owner"] != "" {
					takeovers++
				}
			}
		}
		f.add("takeovers", takeovers)
		f.add("lost_on_checkpoint", countLines(logs, "lease lost while checkpointing"))
	})
	var counts *loadgen.Counts
	for round := 1; round <= rounds; round++ {
		e.app = fmt.Sprintf("%s_r%d", base, round)
		var cfgs []string
		for _, w := range ids {
			cfgs = append(cfgs, e.configEdit(w, "",
				"checkpoint:\n", "checkpoint:\n  endpoint: "+url+"\n",
				"lease_duration: 3s", "lease_duration: 1s",
				"sync_interval: 300ms", "sync_interval: 100ms"))
		}
		var ds []*daemon
		for i, w := range ids {
			ds = append(ds, e.startWith(w, cfgs[i]))
		}
		if round < rounds {
			time.Sleep(roundTime)
		} else {
			counts = wait()
			f.records = total(counts)
			f.settle(e, 2*time.Minute, e.views)
		}
		waitFor(t, 30*time.Second, "both daemons' metrics", func() bool {
			for _, w := range ids {
				resp, err := http.Get("http://" + e.metricsAddr(w) + "/metrics")
				if err != nil {
					return false
				}
				resp.Body.Close()
			}
			return true
		})
		var series []string
		for _, n := range names {
			series = append(series, "streamtally_"+n+"_total")
		}
		got := metricsSum(t, e, ids, series...)
		for i, n := range names {
			sums[n] += got[series[i]]
		}
		for _, d := range ds {
			d.kill()
			logs = append(logs, d.logText())
		}
	}
	e.app = base
	e.checkDeltas(sub)
	if sums["leases_lost"]+sums["fence_conflicts"] == 0 {
		t.Error("no lease was lost and no fence conflicted: the delays raced nothing")
	}
}
