package main

// Chaos cases for ownership: recounts that race for one view, and daemons
// started at LATEST that hand a shard over before they checkpointed it.

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally/publish"
)

// TestChaosConcurrentRecounts runs two rebuilds of one view at once, round
// after round, while two daemons apply a steady load. A recount owns the
// view for its whole run: the second is refused with one line naming the
// first, never left to interleave with it (which once emptied the view
// while both reported success). The view ends equal to the table, and
// its messages stay gapless within each epoch.
func TestChaosConcurrentRecounts(t *testing.T) {
	p := chaosPlan(t)
	f := newFigures(t, "concurrent-recounts", p)
	defer f.report()
	e := newRecountEnv(t)
	e.createTable()
	versions := e.watchEpochs("by_platform")
	daemons := []*daemon{e.start("w1"), e.start("w2")}
	wait := e.load(p.n(1500, 6000), 2, 150, p.seed)
	time.Sleep(2 * time.Second) // items for the recounts to scan

	rounds := p.n(3, 8)
	var refused, both int
	for round := range rounds {
		type result struct {
			code     int
			out, err string
		}
		var wg sync.WaitGroup
		res := make([]result, 2)
		for i := range res {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// The second starts while the first runs, at another
				// point of it each round: scanning, reading the stream
				// after the scan, writing, holding, swapping.
				time.Sleep(time.Duration(i) * (300*time.Millisecond + time.Duration(round)*700*time.Millisecond))
				code, out, errOut := e.streamtally("rebuild", "--view", "by_platform", "--rate", "400", "--page-size", "100")
				res[i] = result{code, out, errOut}
			}()
		}
		wg.Wait()
		f.faults++
		ok := 0
		for i, r := range res {
			switch {
			case r.code == 0:
				ok++
			case strings.Contains(r.err, "is being recounted by rebuild (pid"):
				refused++
				if lines := strings.Count(strings.TrimSpace(lastLine(r.err)), "\n"); lines != 0 || !strings.Contains(lastLine(r.err), "lease ends at") {
					t.Errorf("round %d: refusal is not one line naming when the lease ends: %q", round, lastLine(r.err))
				}
			default:
				t.Fatalf("round %d: rebuild %d exit %d\nstdout:\n%s\nstderr:\n%s", round, i, r.code, r.out, tail(r.err, 2000))
			}
		}
		if ok == 0 {
			t.Fatalf("round %d: neither rebuild succeeded: %+v", round, res)
		}
		if ok == 2 {
			both++ // they did not overlap
		}
		if out := e.mustRun("verify", "--view", "by_platform"); !strings.Contains(out, "equals the table") {
			t.Fatalf("round %d: verify after the rebuilds:\n%s", round, out)
		}
	}
	counts := wait()
	f.records = total(counts)
	f.add("rounds", rounds)
	f.add("refused", refused)
	f.add("not_overlapping", both)
	f.settle(e, 2*time.Minute, e.views)
	resets := versions.check(t)
	f.add("epochs", resets)
	if refused == 0 {
		t.Errorf("no rebuild was refused in %d rounds: the two never overlapped", rounds)
	}
	for _, d := range daemons {
		if code, _ := d.stop(); code != 0 {
			t.Errorf("%s: exit %d", d.worker, code)
		}
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// epochWatch records one view's messages: epoch and version.
type epochWatch struct {
	view string
	mu   sync.Mutex
	msgs []deltaMsgEpoch
}

type deltaMsgEpoch struct {
	Epoch   string `json:"epoch"`
	Version int64  `json:"version"`
	Reset   bool   `json:"reset"`
}

func (e *env) watchEpochs(view string) *epochWatch {
	e.t.Helper()
	w := &epochWatch{view: view}
	ps := e.rdb.Subscribe(context.Background(), publish.KeysFor(e.prefix, view).Channel())
	if _, err := ps.Receive(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { ps.Close() })
	go func() {
		for m := range ps.Channel(redis.WithChannelSize(100000)) {
			var d deltaMsgEpoch
			if err := json.Unmarshal([]byte(m.Payload), &d); err == nil {
				w.mu.Lock()
				w.msgs = append(w.msgs, d)
				w.mu.Unlock()
			}
		}
	}()
	return w
}

// check fails unless versions are 1, 2, 3... with no gap or repeat, and a
// new epoch begins only with a reset (a swap) or a fresh view; it returns
// how many epochs the view went through.
func (w *epochWatch) check(t *testing.T) int {
	t.Helper()
	time.Sleep(500 * time.Millisecond) // the last messages in flight
	w.mu.Lock()
	defer w.mu.Unlock()
	epochs := 0
	var epoch string
	for i, m := range w.msgs {
		if m.Version != int64(i+1) {
			t.Fatalf("view %s: message %d has version %d, want %d", w.view, i, m.Version, i+1)
		}
		if m.Epoch != epoch {
			if epoch != "" && !m.Reset {
				t.Errorf("view %s: version %d begins epoch %s without a reset", w.view, m.Version, m.Epoch)
			}
			epoch = m.Epoch
			epochs++
		} else if m.Reset {
			t.Errorf("view %s: reset at version %d kept epoch %s", w.view, m.Version, epoch)
		}
	}
	return epochs
}

// TestChaosRollingLatestStart runs three daemons started at LATEST on an
// empty table and rolls them, one SIGTERM after the other, while writes
// go on, starting with a handover before anything was checkpointed: the
// shard's next owner must resume where the first one started, not at
// LATEST again, which lost every record written in between.
func TestChaosRollingLatestStart(t *testing.T) {
	p := chaosPlan(t)
	f := newFigures(t, "rolling-latest", p)
	defer f.report()
	e := newChaosEnv(t)
	e.createTable()
	sub := e.subscribe()
	ids := []string{"w1", "w2", "w3"}
	cfgs := map[string]string{}
	daemons := map[string]*daemon{}
	for _, w := range ids {
		cfgs[w] = e.configEdit(w, "", "  poll_interval: 50ms", "  poll_interval: 50ms\n  start: latest")
		daemons[w] = e.startWith(w, cfgs[w])
	}
	holder := func() string {
		var owner string
		waitFor(t, 60*time.Second, "a daemon reading the shard", func() bool {
			for _, o := range e.leaseOwners() {
				if d := daemons[o]; d != nil && strings.Contains(d.logText(), `"msg":"starting shard"`) {
					owner = o
					return true
				}
			}
			return false
		})
		return owner
	}
	// The first holder goes before the first write: the shard has no
	// checkpoint when it changes hands.
	first := holder()
	if code, _ := daemons[first].stop(); code != 0 {
		t.Fatalf("%s: exit %d after SIGTERM", first, code)
	}
	f.faults++
	wait := e.load(p.n(2500, 9000), 4, 300, p.seed)
	daemons[first] = e.startWith(first, cfgs[first])
	r := p.rand(3)
	rolls := p.n(5, 15)
	for range rolls {
		time.Sleep(around(r, 700*time.Millisecond))
		w := holder()
		if code, _ := daemons[w].stop(); code != 0 {
			t.Fatalf("%s: exit %d after SIGTERM", w, code)
		}
		f.faults++
		daemons[w] = e.startWith(w, cfgs[w])
	}
	counts := wait()
	f.records = total(counts)
	f.add("rolls", rolls+1)
	f.settle(e, 2*time.Minute, e.views)
	e.checkDeltas(sub)
}
