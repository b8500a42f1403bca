package aggregate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"testing"

	"github.com/streamtally/streamtally"
)

// memStore is an in-memory Store with the same fence contract as the Redis
// one: a delta applies only if the view's fence for its shard equals After.
type memStore struct {
	mu       sync.Mutex
	fences   map[string]map[string]streamtally.Seq // shard -> view -> fence
	totals   map[string]map[string]*Counters       // view -> group -> totals
	held     map[string]bool                       // views ever applied
	lost     map[string]string                     // view -> why it was marked lost
	applied  []*Delta                              // every Apply call, in order
	fenceErr error                                 // returned by Fences
	applyErr error                                 // returned by Apply

	// beforeApply, if set, runs before each Apply under no lock: it stands
	// for another worker racing this one.
	beforeApply func(d *Delta)
}

func newMemStore() *memStore {
	return &memStore{fences: map[string]map[string]streamtally.Seq{}, totals: map[string]map[string]*Counters{},
		held: map[string]bool{}, lost: map[string]string{}}
}

func (s *memStore) Fences(_ context.Context, shard string) (map[string]Fence, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fenceErr != nil {
		return nil, s.fenceErr
	}
	out := map[string]Fence{}
	for v := range s.held {
		out[v] = Fence{Seq: s.fences[shard][v], Held: true, Lost: s.lost[v]}
	}
	for v, why := range s.lost {
		out[v] = Fence{Seq: s.fences[shard][v], Held: s.held[v], Lost: why}
	}
	return out, nil
}

func (s *memStore) MarkLost(_ context.Context, view, reason string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lost[view] = reason
	return nil
}

// forget drops everything the store holds of view, as a Redis restarted
// without persistence would.
func (s *memStore) forget(view string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.fences {
		delete(f, view)
	}
	delete(s.totals, view)
	delete(s.held, view)
}

// rewind sets view's fence for shard back, as a restore of an older
// snapshot would.
func (s *memStore) rewind(shard, view string, fence streamtally.Seq) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fences[shard][view] = fence
}

func (s *memStore) Apply(_ context.Context, d *Delta) error {
	if hook := s.beforeApply; hook != nil {
		hook(d)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applied = append(s.applied, d)
	if len(s.applied) > 1000 {
		return errors.New("memStore: more than 1000 applies; is Tally refolding forever?")
	}
	if s.applyErr != nil {
		return s.applyErr
	}
	return s.applyLocked(d)
}

func (s *memStore) applyLocked(d *Delta) error {
	f := s.fences[d.Shard]
	if f == nil {
		f = map[string]streamtally.Seq{}
		s.fences[d.Shard] = f
	}
	if why, ok := s.lost[d.View.Name]; ok {
		// As the apply script: the counters stay, the fence follows.
		if d.Through.After(f[d.View.Name]) {
			f[d.View.Name] = d.Through
		}
		return &ViewLostError{View: d.View.Name, Reason: why}
	}
	if cur := f[d.View.Name]; cur != d.After {
		return &FenceMovedError{View: d.View.Name, Shard: d.Shard, Current: cur}
	}
	f[d.View.Name] = d.Through
	s.held[d.View.Name] = true
	t := s.totals[d.View.Name]
	if t == nil {
		t = map[string]*Counters{}
		s.totals[d.View.Name] = t
	}
	for k, g := range d.Groups {
		acc := t[k]
		if acc == nil {
			acc = &Counters{Sums: make([]Decimal, d.View.SumCount())}
			t[k] = acc
		}
		acc.Count += g.Count
		for i := range g.Sums {
			acc.Sums[i] = acc.Sums[i].Add(g.Sums[i])
		}
		if acc.isZero() {
			delete(t, k)
		}
	}
	return nil
}

// otherWorker applies recs to s as another process reading the shard would.
func (s *memStore) otherWorker(v *View, shard string, recs []streamtally.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	after := s.fences[shard][v.Name]
	if err := s.applyLocked(v.Fold(shard, after, recs, nil)); err != nil {
		panic(err)
	}
}

// rebuilt stands for a rebuild's swap: view holds totals, its fence for
// shard is fence, and it is no longer lost.
func (s *memStore) rebuilt(view, shard string, fence streamtally.Seq, totals map[string]*Counters) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.lost, view)
	s.held[view] = true
	s.totals[view] = totals
	if s.fences[shard] == nil {
		s.fences[shard] = map[string]streamtally.Seq{}
	}
	s.fences[shard][view] = fence
}

func (s *memStore) applies() []*Delta {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Delta(nil), s.applied...)
}

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestTallyAppliesEachViewAndCachesTheFence(t *testing.T) {
	v1 := newView("by_platform", []string{"platform"}, "n=count", "amount=sum(amount)")
	v2 := newView("counts", []string{"platform"}, "n=count")
	store := newMemStore()
	tally := NewTally([]*View{v1, v2}, store, quietLog())
	ctx := context.Background()

	b1 := numbered("s1", 1, insert(item("a", "Web", "5")), insert(item("b", "Phone", "2")))
	b2 := numbered("s1", 3, modify(item("a", "Web", "5"), item("a", "Phone", "6")))
	for _, b := range [][]streamtally.Record{b1, b2} {
		if err := tally.HandleBatch(ctx, "s1", "", b); err != nil {
			t.Fatal(err)
		}
	}
	// A second batch applies after the fence of the first without another
	// round trip to the store: no FenceMovedError, so exactly 4 applies.
	if n := len(store.applies()); n != 4 {
		t.Errorf("%d applies, want 4 (2 batches x 2 views)", n)
	}
	for _, d := range store.applies()[2:] {
		if d.After != "2" || d.Through != "3" {
			t.Errorf("view %s second delta after %q through %q, want 2..3", d.View.Name, d.After, d.Through)
		}
	}
	checkGroups(t, v1, store.totals["by_platform"], map[string]want{
		"Phone": {2, map[string]string{"amount": "8"}},
	})
	if got := tally.Stats().Applied.Load(); got != 4 {
		t.Errorf("Stats.Applied = %d, want 4", got)
	}
	if got := tally.Stats().Records.Load(); got != 3 {
		t.Errorf("Stats.Records = %d, want 3", got)
	}
}

func TestTallyCountsRejectionsPerViewAndKind(t *testing.T) {
	v1 := newView("by_platform", []string{"platform"}, "n=count")
	v2 := newView("amounts", []string{"platform"}, "amount=sum(amount)")
	store := newMemStore()
	tally := NewTally([]*View{v1, v2}, store, quietLog())

	batch := numbered("s1", 1,
		insert(item("a", "Web", "5")), // fine for both
		insert(item("b", "", "5")),    // no platform: both views
		insert(item("c", "Web", "")),  // no amount: amounts only
		remove(item("d", "", "5")),    // a bad old image is not reported
		modify(item("e", "Web", "1"), streamtally.Image{"platform": attrS("Web"), "amount": attrS("x")}), // bad_sum for amounts
	)
	if err := tally.HandleBatch(context.Background(), "s1", "", batch); err != nil {
		t.Fatal(err)
	}
	if got := tally.Stats().Rejected.Load(); got != 4 {
		t.Errorf("Stats.Rejected = %d, want 4", got)
	}
	want := map[string]int64{
		"by_platform/missing_group_by": 1,
		"amounts/missing_group_by":     1,
		"amounts/missing_sum":          1,
		"amounts/bad_sum":              1,
	}
	if got := tally.Stats().RejectedBy(); !maps.Equal(got, want) {
		t.Errorf("RejectedBy = %v, want %v", got, want)
	}
	// The returned map is a copy.
	tally.Stats().RejectedBy()["amounts/bad_sum"] = 99
	if got := tally.Stats().RejectedBy()["amounts/bad_sum"]; got != 1 {
		t.Errorf("RejectedBy shares its map: %d", got)
	}
}

func TestTallyRefoldsFromTheFenceAnotherWorkerMoved(t *testing.T) {
	v := newView("by_platform", []string{"platform"}, "n=count", "amount=sum(amount)")
	store := newMemStore()
	tally := NewTally([]*View{v}, store, quietLog())
	ctx := context.Background()

	batch := numbered("s1", 1,
		insert(item("a", "Web", "5")),
		insert(item("b", "Phone", "2")),
		insert(item("c", "", "1")), // rejected, after the other worker's fence
		modify(item("a", "Web", "5"), item("a", "Phone", "5.5")),
	)
	// Tally reads the fences (none) first; then, before its apply lands,
	// another worker applies the first two records.
	var once sync.Once
	store.beforeApply = func(*Delta) {
		once.Do(func() { store.otherWorker(v, "s1", batch[:2]) })
	}
	if err := tally.HandleBatch(ctx, "s1", "", batch); err != nil {
		t.Fatalf("HandleBatch: %v", err)
	}
	ds := store.applies()
	if len(ds) != 2 {
		t.Fatalf("%d applies, want 2 (refused, then refolded)", len(ds))
	}
	if ds[0].After != "" || ds[0].Records != 4 {
		t.Errorf("first apply after %q with %d records, want after \"\" with 4", ds[0].After, ds[0].Records)
	}
	if ds[1].After != "2" || ds[1].Through != "4" || ds[1].Records != 2 {
		t.Errorf("retry after %q through %q with %d records, want 2..4 with 2", ds[1].After, ds[1].Through, ds[1].Records)
	}
	// Every record counted once: the store equals a full scan of the final table.
	final := []streamtally.Image{item("a", "Phone", "5.5"), item("b", "Phone", "2"), item("c", "", "1")}
	checkSameGroups(t, v, store.totals["by_platform"], v.Totals(final))
	if got := store.fences["s1"]["by_platform"]; got != "4" {
		t.Errorf("store fence = %q, want 4", got)
	}
	if got := tally.Stats().Rejected.Load(); got != 1 {
		t.Errorf("Stats.Rejected = %d, want 1: the refold must not report again", got)
	}

	// The refold's fence is cached: the next batch applies at once.
	store.beforeApply = nil
	next := numbered("s1", 5, remove(item("b", "Phone", "2")))
	if err := tally.HandleBatch(ctx, "s1", "", next); err != nil {
		t.Fatal(err)
	}
	if ds := store.applies(); len(ds) != 3 || ds[2].After != "4" {
		t.Errorf("next batch: %d applies, last after %q; want 3, after 4", len(ds), ds[len(ds)-1].After)
	}
}

func TestTallyWhenAnotherWorkerAppliedTheWholeBatch(t *testing.T) {
	v := newView("v", []string{"platform"}, "n=count")
	store := newMemStore()
	tally := NewTally([]*View{v}, store, quietLog())
	batch := numbered("s1", 1, insert(item("a", "Web", "")), insert(item("b", "Web", "")))
	store.beforeApply = func(*Delta) {
		if len(store.applies()) == 0 {
			store.otherWorker(v, "s1", batch)
		}
	}
	if err := tally.HandleBatch(context.Background(), "s1", "", batch); err != nil {
		t.Fatal(err)
	}
	if n := len(store.applies()); n != 1 {
		t.Errorf("%d applies, want 1: after the refusal nothing is left to apply", n)
	}
	checkGroups(t, v, store.totals["v"], map[string]want{"Web": {count: 2}})

	// The fence the refusal reported is cached although nothing was applied.
	store.beforeApply = nil
	if err := tally.HandleBatch(context.Background(), "s1", "", numbered("s1", 3, insert(item("c", "Web", "")))); err != nil {
		t.Fatal(err)
	}
	if ds := store.applies(); len(ds) != 2 || ds[1].After != "2" {
		t.Errorf("next batch: %d applies, last after %q; want 2, after 2", len(ds), ds[len(ds)-1].After)
	}
}

func TestTallyWrapsStoreErrorsWithViewAndShard(t *testing.T) {
	v := newView("by_platform", []string{"platform"}, "n=count")
	batch := numbered("shard-0042", 1, insert(item("a", "Web", "")))
	down := errors.New("redis: connection refused")

	t.Run("apply", func(t *testing.T) {
		store := newMemStore()
		store.applyErr = down
		err := NewTally([]*View{v}, store, quietLog()).HandleBatch(context.Background(), "shard-0042", "", batch)
		if !errors.Is(err, down) {
			t.Fatalf("err = %v, want it to wrap %v", err, down)
		}
		for _, w := range []string{"by_platform", "shard-0042"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not name %s", err, w)
			}
		}
	})
	t.Run("fences", func(t *testing.T) {
		store := newMemStore()
		store.fenceErr = down
		tally := NewTally([]*View{v}, store, quietLog())
		err := tally.HandleBatch(context.Background(), "shard-0042", "", batch)
		if !errors.Is(err, down) || !strings.Contains(err.Error(), "shard-0042") {
			t.Fatalf("err = %v, want it to wrap %v and name the shard", err, down)
		}
		if len(store.applies()) != 0 || tally.Stats().Records.Load() != 0 {
			t.Errorf("applied or counted records without fences")
		}
	})
}

func TestTallyReplayOfAppliedBatchCallsNoApply(t *testing.T) {
	v := newView("v", []string{"platform"}, "n=count")
	store := newMemStore()
	store.fences["s1"] = map[string]streamtally.Seq{"v": "10"}
	store.held["v"] = true
	tally := NewTally([]*View{v}, store, quietLog())

	batch := numbered("s1", 5, insert(item("a", "Web", "")), insert(item("b", "", "")))
	batch = append(batch, numbered("s1", 9, insert(item("c", "Web", "")), insert(item("d", "Web", "")))...)
	if err := tally.HandleBatch(context.Background(), "s1", "", batch); err != nil {
		t.Fatal(err)
	}
	if n := len(store.applies()); n != 0 {
		t.Errorf("%d applies of an already applied batch, want 0", n)
	}
	if got := tally.Stats().Replayed.Load(); got != 4 {
		t.Errorf("Stats.Replayed = %d, want 4", got)
	}
	if got := tally.Stats().Rejected.Load(); got != 0 {
		t.Errorf("Stats.Rejected = %d, want 0: replayed records were reported the first time", got)
	}
}

func TestTallyShardReleasedRereadsFences(t *testing.T) {
	v := newView("v", []string{"platform"}, "n=count")
	store := newMemStore()
	tally := NewTally([]*View{v}, store, quietLog())
	ctx := context.Background()
	if err := tally.HandleBatch(ctx, "s1", "", numbered("s1", 1, insert(item("a", "Web", "")))); err != nil {
		t.Fatal(err)
	}
	// While this process did not own the shard, another applied seq 2..3.
	tally.ShardReleased("s1")
	later := numbered("s1", 2, insert(item("b", "Web", "")), insert(item("c", "Web", "")))
	store.otherWorker(v, "s1", later)
	if err := tally.HandleBatch(ctx, "s1", "", append(later, numbered("s1", 4, insert(item("d", "Web", "")))...)); err != nil {
		t.Fatal(err)
	}
	ds := store.applies()
	if last := ds[len(ds)-1]; last.After != "3" || last.Records != 1 {
		t.Errorf("after release: apply after %q with %d records, want after 3 with 1", last.After, last.Records)
	}
	if len(ds) != 2 {
		t.Errorf("%d applies, want 2: fences should have been reread, not discovered by a refusal", len(ds))
	}
	checkGroups(t, v, store.totals["v"], map[string]want{"Web": {count: 4}})
}

// TestTallyShardsConcurrently runs shards in parallel, as the consumer does,
// for the race detector, and checks each shard keeps its own fence.
func TestTallyShardsConcurrently(t *testing.T) {
	v := newView("v", []string{"platform"}, "n=count", "amount=sum(amount)")
	store := newMemStore()
	tally := NewTally([]*View{v}, store, quietLog())
	const shards, batches = 4, 25
	var wg sync.WaitGroup
	errs := make(chan error, shards)
	for s := 0; s < shards; s++ {
		wg.Go(func() {
			shard := fmt.Sprintf("s%d", s)
			for b := 0; b < batches; b++ {
				recs := numbered(shard, 1+2*b,
					insert(item(fmt.Sprintf("%s-%d", shard, b), "Web", "0.01")),
					insert(item(fmt.Sprintf("%s-%d-x", shard, b), "", "1")),
				)
				if err := tally.HandleBatch(context.Background(), shard, "", recs); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	checkGroups(t, v, store.totals["v"], map[string]want{"Web": {shards * batches, map[string]string{"amount": "1"}}})
	for s := 0; s < shards; s++ {
		if got := store.fences[fmt.Sprintf("s%d", s)]["v"]; string(got) != fmt.Sprint(2*batches) {
			t.Errorf("shard s%d fence = %q, want %d", s, got, 2*batches)
		}
	}
	if got := tally.Stats().Rejected.Load(); got != shards*batches {
		t.Errorf("Stats.Rejected = %d, want %d", got, shards*batches)
	}
}
