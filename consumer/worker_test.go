package consumer_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/lease"
)

const patience = 20 * time.Second

// shardSpec is a shard to create, in order, on the fake stream.
type shardSpec struct {
	id, parent string
	records    int
	closed     bool
}

// build creates the shards and returns the records appended to each.
func (f *fixture) build(specs []shardSpec) map[string][]string {
	f.t.Helper()
	seqs := map[string][]string{}
	for _, s := range specs {
		f.srv.AddShard(s.id, s.parent)
		seqs[s.id] = []string{}
		if s.records > 0 {
			seqs[s.id] = f.appendN(s.id, s.records)
		}
		if s.closed {
			f.srv.CloseShard(s.id)
		}
	}
	return seqs
}

func total(seqs map[string][]string) int {
	n := 0
	for _, s := range seqs {
		n += len(s)
	}
	return n
}

func last(seqs []string) string {
	if len(seqs) == 0 {
		return ""
	}
	return seqs[len(seqs)-1]
}

// checkpointsAre reports whether every shard's lease row holds the given
// checkpoint.
func (f *fixture) checkpointsAre(want map[string]string) bool {
	leases := f.leases()
	for shard, cp := range want {
		if leases[shard].Checkpoint != cp {
			return false
		}
	}
	return true
}

func TestWorkerReadsParentsBeforeChildren(t *testing.T) {
	for _, tc := range []struct {
		name   string
		shards []shardSpec
	}{
		{
			// Children's IDs sort before their parent's, so only the lineage
			// can put the parent first.
			name: "split into two children beside an unrelated root",
			shards: []shardSpec{
				{id: "shardId-3-parent", records: 5, closed: true},
				{id: "shardId-1-child", parent: "shardId-3-parent", records: 3},
				{id: "shardId-2-child", parent: "shardId-3-parent", records: 4},
				{id: "shardId-0-root", records: 3},
			},
		},
		{
			name: "grandchild chain",
			shards: []shardSpec{
				{id: "shardId-c-parent", records: 3, closed: true},
				{id: "shardId-b-child", parent: "shardId-c-parent", records: 3, closed: true},
				{id: "shardId-a-grandchild", parent: "shardId-b-child", records: 3},
			},
		},
		{
			name: "empty closed parent",
			shards: []shardSpec{
				{id: "shardId-1-parent", closed: true},
				{id: "shardId-0-child", parent: "shardId-1-parent", records: 2},
			},
		},
		{
			// Real streams list children whose parent was trimmed away.
			name: "parent no longer in the stream",
			shards: []shardSpec{
				{id: "shardId-0-orphan", parent: "shardId-gone", records: 2},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			want := f.build(tc.shards)
			wantCP := map[string]string{}
			for _, s := range tc.shards {
				wantCP[s.id] = last(want[s.id])
				if s.closed {
					wantCP[s.id] = lease.ShardEnd
				}
			}
			h := &recorder{}
			w := f.start(options("w1"), h)
			waitFor(t, patience, "every record handled and checkpointed", func() bool {
				return handledCount(h) >= total(want) && f.checkpointsAre(wantCP)
			})
			w.stop(t)

			checkHandled(t, want, h)
			if !f.checkpointsAre(wantCP) {
				t.Errorf("lease rows %+v, want checkpoints %v", f.leases(), wantCP)
			}
			// Every record of a parent comes before any record of its
			// children.
			calls := handled(h)
			for _, s := range tc.shards {
				lastParent, firstChild := -1, -1
				for i, c := range calls {
					if c.shard == s.parent {
						lastParent = i
					}
					if c.shard == s.id && firstChild < 0 {
						firstChild = i
					}
				}
				if lastParent >= 0 && firstChild >= 0 && lastParent > firstChild {
					t.Errorf("shard %s was handled before its parent %s was finished: %v", s.id, s.parent, calls)
				}
			}
			for shard, l := range f.leases() {
				if l.Owner != "" {
					t.Errorf("after Run returned, shard %s is still leased to %q", shard, l.Owner)
				}
			}
		})
	}
}

func TestWorkerRestartResumesFromCheckpoint(t *testing.T) {
	for _, second := range []string{"w1", "w2"} {
		t.Run("second worker "+second, func(t *testing.T) {
			f := newFixture(t)
			first := f.build([]shardSpec{{id: "s1", records: 5}, {id: "s2", records: 3}})
			h1 := &recorder{}
			w1 := f.start(options("w1"), h1)
			waitFor(t, patience, "first run to handle every record", func() bool { return handledCount(h1) >= total(first) })
			w1.stop(t)
			checkHandled(t, first, h1)
			checkAfters(t, h1, map[string]string{})
			if cp := map[string]string{"s1": last(first["s1"]), "s2": last(first["s2"])}; !f.checkpointsAre(cp) {
				t.Fatalf("after the first run, leases = %+v, want checkpoints %v", f.leases(), cp)
			}

			more := map[string][]string{"s1": f.appendN("s1", 3), "s2": f.appendN("s2", 2)}
			h2 := &recorder{}
			w2 := f.start(options(second), h2)
			waitFor(t, patience, "second run to handle the new records", func() bool { return handledCount(h2) >= total(more) })
			w2.stop(t)
			checkHandled(t, more, h2)
			checkAfters(t, h2, map[string]string{"s1": last(first["s1"]), "s2": last(first["s2"])})
		})
	}
}

func TestWorkerRedeliversFailedBatchWithoutCheckpointing(t *testing.T) {
	f := newFixture(t)
	want := f.build([]shardSpec{{id: "s1", records: 5}})
	lt := f.initTable()
	h := &recorder{}
	h.failNext(3)
	// What the lease row says when each call begins.
	var mu sync.Mutex
	var seen []string
	h.setHook(func(ctx context.Context, shard string, _ []string) error {
		leases, _, err := lt.List(ctx)
		if err != nil {
			return err
		}
		mu.Lock()
		seen = append(seen, leases[shard].Checkpoint)
		mu.Unlock()
		return nil
	})
	w := f.start(options("w1"), h)
	waitFor(t, patience, "every record handled", func() bool { return handledCount(h) >= 5 })
	waitFor(t, patience, "the last checkpoint", func() bool { return f.checkpointsAre(map[string]string{"s1": last(want["s1"])}) })
	w.stop(t)

	calls := h.allCalls()
	if len(calls) < 4 {
		t.Fatalf("calls = %v, want 3 failures and then successes", calls)
	}
	firstBatch := want["s1"][:2]
	for i, c := range calls[:4] {
		if !slices.Equal(c.seqs, firstBatch) {
			t.Errorf("call %d got %v, want the first batch %v again", i, c.seqs, firstBatch)
		}
		if failed := c.err != nil; failed != (i < 3) {
			t.Errorf("call %d: err = %v, want failure only for the first 3 calls", i, c.err)
		}
	}
	mu.Lock()
	for i, cp := range seen[:4] {
		if cp != "" {
			t.Errorf("call %d saw checkpoint %q: something was checkpointed before the first batch succeeded", i, cp)
		}
	}
	mu.Unlock()
	checkHandled(t, want, h)
	if got := w.Stats().ApplyErrors.Load(); got != 3 {
		t.Errorf("Stats().ApplyErrors = %d, want 3", got)
	}
}

func TestWorkerSurvivesStreamErrors(t *testing.T) {
	for _, tc := range []struct {
		name         string
		fault        func(f *fixture)
		readErrors   int64
		expiredIters bool
	}{
		{"throttled", func(f *fixture) { f.srv.InjectErrors("GetRecords", 3, "LimitExceededException") }, 3, false},
		{"internal server error", func(f *fixture) { f.srv.InjectErrors("GetRecords", 3, "InternalServerError") }, 3, false},
		{"iterator expired", func(f *fixture) { f.srv.ExpireIterators() }, 0, true},
		{"all of them", func(f *fixture) {
			f.srv.InjectErrors("GetRecords", 2, "LimitExceededException")
			f.srv.InjectErrors("GetRecords", 2, "InternalServerError")
			f.srv.ExpireIterators()
		}, 4, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			want := f.build([]shardSpec{{id: "s1", records: 6}})
			// The handler holds the first batch while the fault is set up,
			// so it strikes in the middle of the shard, with records
			// left to read behind an iterator that is already issued.
			h := &recorder{}
			inFirst, release := make(chan struct{}), make(chan struct{})
			var once sync.Once
			h.setHook(func(ctx context.Context, _ string, _ []string) error {
				once.Do(func() {
					close(inFirst)
					select {
					case <-release:
					case <-ctx.Done():
					}
				})
				return nil
			})
			w := f.start(options("w1"), h)
			t.Cleanup(func() {
				select {
				case <-release:
				default:
					close(release)
				}
			})
			select {
			case <-inFirst:
			case <-time.After(patience):
				t.Fatal("the first batch never reached the handler")
			}
			tc.fault(f)
			close(release)
			waitFor(t, patience, "the records before and during the fault", func() bool { return handledCount(h) >= 6 })
			want["s1"] = append(want["s1"], f.appendN("s1", 3)...)
			waitFor(t, patience, "the records after the fault", func() bool { return handledCount(h) >= 9 })
			w.stop(t)

			checkHandled(t, want, h)
			st := w.Stats()
			if got := st.ReadErrors.Load(); got != tc.readErrors {
				t.Errorf("Stats().ReadErrors = %d, want %d", got, tc.readErrors)
			}
			if got := st.ExpiredIterators.Load(); (got > 0) != tc.expiredIters {
				t.Errorf("Stats().ExpiredIterators = %d, want >0: %v", got, tc.expiredIters)
			}
		})
	}
}

func TestWorkerResumesAtTrimHorizonWhenTrimmed(t *testing.T) {
	t.Run("GetRecords", func(t *testing.T) {
		f := newFixture(t)
		before := f.build([]shardSpec{{id: "s1", records: 3}})
		h := &recorder{}
		w := f.start(options("w1"), h)
		waitFor(t, patience, "the first records and their checkpoint", func() bool {
			return handledCount(h) >= 3 && f.checkpointsAre(map[string]string{"s1": last(before["s1"])})
		})
		callsBefore := len(handled(h))
		f.srv.InjectErrors("GetRecords", 1, "TrimmedDataAccessException")
		waitFor(t, patience, "the trim to be noticed", func() bool { return w.Stats().Trimmed.Load() > 0 })
		after := f.appendN("s1", 2)
		waitFor(t, patience, "the records after the trim", func() bool {
			return slices.Contains(handledSeqs(h)["s1"], last(after))
		})
		w.stop(t)

		if got := w.Stats().Trimmed.Load(); got != 1 {
			t.Errorf("Stats().Trimmed = %d, want 1", got)
		}
		calls := handled(h)
		// The fake trims nothing, so TRIM_HORIZON is the shard's first
		// record: reading from there proves where the reader went.
		if c := calls[callsBefore]; c.seqs[0] != before["s1"][0] || c.after != "" {
			t.Errorf("first batch after the trim starts at %s after %q, want the trim horizon %s after \"\"", c.seqs[0], c.after, before["s1"][0])
		}
		var got []string
		for _, c := range calls[callsBefore:] {
			got = append(got, c.seqs...)
		}
		if want := append(slices.Clone(before["s1"]), after...); !slices.Equal(got, want) {
			t.Errorf("after the trim handled %v, want %v", got, want)
		}
		if !f.checkpointsAre(map[string]string{"s1": last(after)}) {
			t.Errorf("leases = %+v, want checkpoint %s", f.leases(), last(after))
		}
	})

	t.Run("GetShardIterator at a stale checkpoint", func(t *testing.T) {
		f := newFixture(t)
		want := f.build([]shardSpec{{id: "s1", records: 5}})
		f.initTable()
		// A previous run checkpointed the third record long ago.
		prev := f.leaseTable("previous", testLease)
		if _, err := prev.Acquire(streamtally.Shard{ID: "s1"}); err != nil {
			t.Fatal(err)
		}
		if err := prev.Checkpoint(t.Context(), "s1", want["s1"][2]); err != nil {
			t.Fatal(err)
		}
		if err := prev.Release("s1"); err != nil {
			t.Fatal(err)
		}
		f.srv.InjectErrors("GetShardIterator", 1, "TrimmedDataAccessException")
		h := &recorder{}
		w := f.start(options("w1"), h)
		waitFor(t, patience, "every record from the trim horizon", func() bool { return handledCount(h) >= 5 })
		w.stop(t)
		checkHandled(t, want, h)
		if got := w.Stats().Trimmed.Load(); got != 1 {
			t.Errorf("Stats().Trimmed = %d, want 1", got)
		}
	})
}

func TestWorkersShareShards(t *testing.T) {
	for _, tc := range []struct {
		name string
		// secondJoinsLate starts b only once a holds every shard, so a
		// has to hand two of them over.
		secondJoinsLate bool
	}{
		{"started together", false},
		{"second joins late", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			var specs []shardSpec
			for i := range 4 {
				specs = append(specs, shardSpec{id: fmt.Sprintf("shardId-%d", i), records: 3})
			}
			want := f.build(specs)
			f.initTable()
			appendAll := func(n int) {
				for _, s := range specs {
					want[s.id] = append(want[s.id], f.appendN(s.id, n)...)
				}
			}
			ha, hb := &recorder{}, &recorder{}
			wa := f.start(options("a"), ha)
			if tc.secondJoinsLate {
				waitFor(t, patience, "a to hold every shard", func() bool { return wa.Stats().LeasesHeld.Load() == 4 })
			}
			wb := f.start(options("b"), hb)
			appendAll(3) // while the shards are shared out
			waitFor(t, patience, "each worker to hold 2 leases", func() bool {
				return wa.Stats().LeasesHeld.Load() == 2 && wb.Stats().LeasesHeld.Load() == 2
			})
			owners := map[string]int{}
			for _, l := range f.leases() {
				owners[l.Owner]++
			}
			if owners["a"] != 2 || owners["b"] != 2 {
				t.Errorf("lease owners %v, want 2 shards each for a and b", owners)
			}
			appendAll(3)
			waitFor(t, patience, "every record handled", func() bool { return handledCount(ha, hb) >= total(want) })
			for name, h := range map[string]*recorder{"a": ha, "b": hb} {
				if len(handled(h)) == 0 {
					t.Errorf("worker %s handled nothing", name)
				}
			}
			// Stop one; the other picks up its shards and reads what
			// follows.
			wa.stop(t)
			appendAll(2)
			waitFor(t, patience, "b to take over every shard", func() bool { return wb.Stats().LeasesHeld.Load() == 4 })
			waitFor(t, patience, "every record handled", func() bool { return handledCount(ha, hb) >= total(want) })
			wb.stop(t)

			checkHandled(t, want, ha, hb)
		})
	}
}

func TestWorkerTakesOverExpiredLeaseOfDeadWorker(t *testing.T) {
	f := newFixture(t)
	want := f.build([]shardSpec{{id: "s1", records: 4}})
	f.initTable()
	// A worker took the shard, applied two records, and died.
	dead := f.leaseTable("dead", testLease)
	if _, err := dead.Acquire(streamtally.Shard{ID: "s1"}); err != nil {
		t.Fatal(err)
	}
	if err := dead.Checkpoint(t.Context(), "s1", want["s1"][1]); err != nil {
		t.Fatal(err)
	}
	expiry := f.leases()["s1"].Timeout

	h := &recorder{}
	var early []time.Time
	var mu sync.Mutex
	h.setHook(func(context.Context, string, []string) error {
		if now := time.Now(); now.Before(expiry) {
			mu.Lock()
			early = append(early, now)
			mu.Unlock()
		}
		return nil
	})
	w := f.start(options("w1"), h)
	waitFor(t, patience, "the takeover", func() bool { return handledCount(h) >= 2 })
	more := f.appendN("s1", 2)
	waitFor(t, patience, "the records after the takeover", func() bool { return handledCount(h) >= 4 })
	w.stop(t)

	checkHandled(t, map[string][]string{"s1": append(want["s1"][2:], more...)}, h)
	mu.Lock()
	if len(early) > 0 {
		t.Errorf("handled a batch at %v, before the dead worker's lease expired at %v", early, expiry)
	}
	mu.Unlock()
	if got := w.Stats().LeasesTaken.Load(); got != 1 {
		t.Errorf("Stats().LeasesTaken = %d, want 1", got)
	}
}

func TestWorkerStopsShardWhoseLeaseWasTaken(t *testing.T) {
	f := newFixture(t)
	want := f.build([]shardSpec{{id: "s1", records: 3}})
	h := &recorder{}
	w := f.start(options("w1"), h)
	waitFor(t, patience, "the first records and their checkpoint", func() bool {
		return handledCount(h) >= 3 && f.checkpointsAre(map[string]string{"s1": last(want["s1"])})
	})

	// Another worker takes the lease, as if w1 had stalled past its
	// expiry (the row is written directly: through Acquire it would have
	// to wait for an expiry that w1's renewals prevent). The lease is long
	// enough that it cannot lapse before the thief is done.
	_, err := f.ddb.PutItem(t.Context(), &dynamodb.PutItemInput{
		TableName: aws.String(f.table),
		Item: map[string]ddbtypes.AttributeValue{
			"ShardID":      &ddbtypes.AttributeValueMemberS{Value: "s1"},
			"AssignedTo":   &ddbtypes.AttributeValueMemberS{Value: "thief"},
			"LeaseTimeout": &ddbtypes.AttributeValueMemberS{Value: time.Now().Add(patience).UTC().Format(time.RFC3339Nano)},
			"Checkpoint":   &ddbtypes.AttributeValueMemberS{Value: last(want["s1"])},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, patience, "w1 to let go of the shard", func() bool { return slices.Contains(h.releasedShards(), "s1") })
	if got := w.Stats().LeasesLost.Load(); got != 1 {
		t.Errorf("Stats().LeasesLost = %d, want 1", got)
	}
	if got := w.Stats().LeasesReleased.Load(); got != 0 {
		t.Errorf("Stats().LeasesReleased = %d, want 0: the lease was lost, not released", got)
	}
	if l := f.leases()["s1"]; l.Owner != "thief" {
		t.Errorf("after w1 stopped the shard, owner = %q, want thief", l.Owner)
	}

	// The thief applies one record, checkpoints it and lets go; w1 takes
	// the shard back and reads only what the thief did not.
	thief := f.leaseTable("thief", testLease)
	stolen := f.appendN("s1", 1)
	if err := thief.Checkpoint(t.Context(), "s1", stolen[0]); err != nil {
		t.Fatalf("thief's checkpoint: %v", err)
	}
	after := f.appendN("s1", 2)
	if err := thief.Release("s1"); err != nil {
		t.Fatalf("thief's release: %v", err)
	}
	waitFor(t, patience, "w1 to take the shard back", func() bool { return handledCount(h) >= 5 })
	w.stop(t)
	checkHandled(t, map[string][]string{"s1": append(want["s1"], after...)}, h)
}

func TestWorkerStopReleasesLeases(t *testing.T) {
	f := newFixture(t)
	want := f.build([]shardSpec{{id: "s1", records: 3}, {id: "s2", records: 2}})
	h := &recorder{}
	w := f.start(options("w1"), h)
	waitFor(t, patience, "every record handled", func() bool { return handledCount(h) >= total(want) })
	w.stop(t)

	leases, workers, err := f.leaseTable("observer", testLease).List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"s1", "s2"} {
		l, ok := leases[id]
		if !ok || l.Owner != "" || l.Checkpoint != last(want[id]) {
			t.Errorf("after stop, lease %s = %+v (present %v), want no owner and checkpoint %s", id, l, ok, last(want[id]))
		}
	}
	if workers["w1"] {
		t.Errorf("after stop, w1 still announces itself as a worker")
	}
	released := h.releasedShards()
	slices.Sort(released)
	if !slices.Equal(released, []string{"s1", "s2"}) {
		t.Errorf("ShardReleased called for %v, want s1 and s2", released)
	}
	st := w.Stats()
	if st.LeasesHeld.Load() != 0 || st.LeasesReleased.Load() != 2 {
		t.Errorf("Stats() LeasesHeld = %d, LeasesReleased = %d; want 0 and 2", st.LeasesHeld.Load(), st.LeasesReleased.Load())
	}
	// Another worker need not wait for an expiry.
	other := f.leaseTable("other", testLease)
	for _, id := range []string{"s1", "s2"} {
		cp, err := other.Acquire(streamtally.Shard{ID: id})
		if err != nil {
			t.Errorf("Acquire(%s) right after stop: %v", id, err)
		} else if cp != last(want[id]) {
			t.Errorf("Acquire(%s) returned checkpoint %q, want %q", id, cp, last(want[id]))
		}
	}
}

func TestWorkerStopWaitsForBatchInFlight(t *testing.T) {
	for _, tc := range []struct {
		name    string
		grace   time.Duration
		release bool // whether the held batch is let through after the stop
	}{
		{"batch finishes within the grace period and is checkpointed", patience, true},
		{"grace period runs out: batch abandoned, not checkpointed", 300 * time.Millisecond, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			want := f.build([]shardSpec{{id: "s1", records: 6}})
			seqs := want["s1"]
			// The second batch (records 3 and 4) is held until it is
			// released or its context ends.
			h := &recorder{}
			inSecond, release := make(chan struct{}), make(chan struct{})
			var once sync.Once
			h.setHook(func(ctx context.Context, _ string, batch []string) error {
				if batch[0] != seqs[2] {
					return nil
				}
				once.Do(func() { close(inSecond) })
				select {
				case <-release:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
			opt := options("w1")
			opt.ShutdownGrace = tc.grace
			w := f.start(opt, h)
			select {
			case <-inSecond:
			case <-time.After(patience):
				t.Fatal("the second batch never reached the handler")
			}
			w.stopped = true // stopped here, not by the cleanup
			w.cancel()
			if tc.release {
				// Let the stop begin first; whether it has or not, the
				// assertions below hold.
				time.Sleep(200 * time.Millisecond)
				close(release)
			}
			select {
			case err := <-w.done:
				if err != nil {
					t.Errorf("Run returned %v, want nil", err)
				}
			case <-time.After(patience):
				t.Fatal("Run did not return")
			}

			calls := handled(h)
			lastHandled := last(calls[len(calls)-1].seqs)
			if l := f.leases()["s1"]; l.Checkpoint != lastHandled || l.Owner != "" {
				t.Errorf("after stop, lease = %+v, want the last handled record %s checkpointed and no owner", l, lastHandled)
			}
			heldBatchDone := slices.ContainsFunc(calls, func(c call) bool { return slices.Contains(c.seqs, seqs[3]) })
			if heldBatchDone != tc.release {
				t.Errorf("held batch handled: %v, want %v; handled %v", heldBatchDone, tc.release, calls)
			}
			if !tc.release && lastHandled != seqs[1] {
				t.Errorf("after an abandoned batch, the last handled record is %s, want %s", lastHandled, seqs[1])
			}
		})
	}
}

func TestWorkerStartLatestSkipsOlderRecords(t *testing.T) {
	f := newFixture(t)
	f.build([]shardSpec{
		{id: "shardId-0-closed", records: 3, closed: true},
		{id: "shardId-1-child", parent: "shardId-0-closed", records: 2},
		{id: "shardId-2-root", records: 3},
	})
	opt := options("w1")
	opt.StartLatest = true
	h := &recorder{}
	w := f.start(opt, h)
	// An iterator is positioned when GetShardIterator answers: once both
	// open shards have one, whatever is appended comes after LATEST.
	waitFor(t, patience, "both open shards to be positioned", func() bool {
		return w.Stats().LeasesHeld.Load() == 2 && f.srv.Calls("GetShardIterator") >= 2
	})
	want := map[string][]string{
		"shardId-1-child": f.appendN("shardId-1-child", 2),
		"shardId-2-root":  f.appendN("shardId-2-root", 3),
	}
	waitFor(t, patience, "the new records", func() bool { return handledCount(h) >= total(want) })
	w.stop(t)
	checkHandled(t, want, h)
	if _, ok := f.leases()["shardId-0-closed"]; ok {
		t.Errorf("the closed shard, all older than the start, was leased: %+v", f.leases())
	}
}

func TestWorkerListsShardsAcrossDescribeStreamPages(t *testing.T) {
	f := newFixture(t)
	f.srv.SetDescribePageSize(2)
	var specs []shardSpec
	for i := range 5 {
		specs = append(specs, shardSpec{id: fmt.Sprintf("shardId-%d", i), records: 1})
	}
	// The parent is listed on the last page, after its child.
	specs = append(specs,
		shardSpec{id: "shardId-6-parent", records: 1, closed: true},
		shardSpec{id: "shardId-5-child", parent: "shardId-6-parent", records: 1})
	want := f.build(specs)
	h := &recorder{}
	w := f.start(options("w1"), h)
	waitFor(t, patience, "a record from every shard", func() bool { return handledCount(h) >= total(want) })
	w.stop(t)
	checkHandled(t, want, h)
}

// checkAfters checks that every batch names as its predecessor the shard's
// checkpoint at that moment: start for the first batch of a shard, then the
// last record of the batch handled before it.
func checkAfters(t *testing.T, h *recorder, start map[string]string) {
	t.Helper()
	prev := maps.Clone(start)
	for _, c := range h.allCalls() {
		if c.after != prev[c.shard] {
			t.Errorf("batch %v of shard %s follows %q, want %q", c.seqs, c.shard, c.after, prev[c.shard])
		}
		if c.err == nil {
			prev[c.shard] = last(c.seqs)
		}
	}
}
