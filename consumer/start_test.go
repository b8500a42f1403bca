package consumer_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/consumer"
	"github.com/streamtally/streamtally/lease"
)

// oldRecords appends n records created an hour ago: history a worker
// started at LATEST must never count.
func (f *fixture) oldRecords(shard string, n int) []string {
	f.t.Helper()
	at := make([]time.Time, n)
	for i := range at {
		at[i] = time.Now().Add(-time.Hour)
	}
	return f.appendAt(shard, at...)
}

// waitPositioned waits until w holds n shards and has asked for their
// iterators: records appended from then on come after LATEST.
func (f *fixture) waitPositioned(w *runningWorker, n int, calls int) {
	f.t.Helper()
	waitFor(f.t, patience, "the shards to be positioned", func() bool {
		return w.Stats().LeasesHeld.Load() == int64(n) && f.srv.Calls("GetShardIterator") >= calls
	})
}

func latest(worker string) consumer.Options {
	o := options(worker)
	o.StartLatest = true
	return o
}

// A worker that leased a quiet shard at LATEST and read nothing leaves no
// checkpoint. Handing the shard over, by a graceful stop or by a crash,
// used to start the next owner at LATEST again, losing every record
// written in between. The first start is recorded with the lease, and the
// next owner resumes from it.
func TestStartLatestHandoverBeforeAnyCheckpointLosesNothing(t *testing.T) {
	for _, tc := range []struct {
		name     string
		crash    bool // kill the first owner instead of stopping it
		takeover bool
	}{
		{name: "graceful stop"},
		{name: "crash", crash: true, takeover: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.srv.AddShard("s1", "")
			f.oldRecords("s1", 3)
			ha := &recorder{}
			if tc.crash {
				// The first owner took the lease at LATEST and was killed:
				// its lease is left to expire.
				f.initTable()
				if _, err := f.leaseTable("a", testLease).Take(t.Context(), streamtally.Shard{ID: "s1"}, nil, time.Now()); err != nil {
					t.Fatal(err)
				}
			} else {
				a := f.start(latest("a"), ha)
				f.waitPositioned(a, 1, 1)
				a.stop(t)
			}
			if got := f.leases()["s1"]; got.Checkpoint != "" || got.StartedAt.IsZero() {
				t.Fatalf("lease row after the first owner = %+v, want no checkpoint and its LATEST start recorded", got)
			}
			written := f.appendN("s1", 4)

			hb := &recorder{}
			b := f.start(latest("b"), hb)
			waitFor(t, patience, "the records written between the owners", func() bool { return handledCount(hb) >= 4 })
			more := f.appendN("s1", 2)
			waitFor(t, patience, "the records after", func() bool { return handledCount(hb) >= 6 })
			b.stop(t)
			checkHandled(t, map[string][]string{"s1": append(written, more...)}, ha, hb)
			if op := hb.allOpenings(); len(op) != 1 || op[0].takeover != tc.takeover {
				t.Errorf("second owner's OpenShard calls = %+v, want one with takeover %v", op, tc.takeover)
			}
		})
	}
}

// After a recount swapped fences in (or a reader applied a batch and died
// before its checkpoint), a shard without a checkpoint is one the views
// hold through their fences: a worker started at LATEST resumes after them.
func TestStartLatestResumesAfterTheViewsFences(t *testing.T) {
	f := newFixture(t)
	f.srv.AddShard("s1", "")
	old := f.oldRecords("s1", 3)
	h := &recorder{holds: func(string) (string, bool) { return old[1], true }}
	w := f.start(latest("w"), h)
	waitFor(t, patience, "the record after the fences", func() bool { return handledCount(h) >= 1 })
	more := f.appendN("s1", 2)
	waitFor(t, patience, "the new records", func() bool { return handledCount(h) >= 3 })
	w.stop(t)
	checkHandled(t, map[string][]string{"s1": append(old[2:], more...)}, h)
	if c := handled(h)[0]; c.after != old[1] {
		t.Errorf("first batch follows %q, want the views' fence %s", c.after, old[1])
	}
}

// A parent whose lease row stopped mid-shard and which then left the
// stream (an outage longer than the retention) used to block its children
// for good. It is finished: its row is ended, the views hear that its
// unread tail is lost, and the child is read.
func TestGoneParentWithAMidShardCheckpointLetsItsChildBeReadAndReportsTheLoss(t *testing.T) {
	f := newFixture(t)
	want := f.build([]shardSpec{
		{id: "shardId-1-parent", records: 4, closed: true},
		{id: "shardId-2-child", parent: "shardId-1-parent", records: 3},
	})
	f.initTable()
	prev := f.leaseTable("previous", testLease)
	if _, err := prev.Acquire(streamtally.Shard{ID: "shardId-1-parent"}); err != nil {
		t.Fatal(err)
	}
	if err := prev.Checkpoint(t.Context(), "shardId-1-parent", want["shardId-1-parent"][1]); err != nil {
		t.Fatal(err)
	}
	if err := prev.Release("shardId-1-parent"); err != nil {
		t.Fatal(err)
	}
	f.srv.RemoveShard("shardId-1-parent")

	h := &recorder{}
	w := f.start(options("w"), h)
	waitFor(t, patience, "the child's records", func() bool { return handledCount(h) >= 3 })
	w.stop(t)
	checkHandled(t, map[string][]string{"shardId-2-child": want["shardId-2-child"]}, h)
	if got := f.leases()["shardId-1-parent"].Checkpoint; got != lease.ShardEnd {
		t.Errorf("gone parent's checkpoint = %q, want %s", got, lease.ShardEnd)
	}
	losses := h.allLosses()
	if len(losses) == 0 || losses[0].shard != "shardId-1-parent" || !strings.Contains(losses[0].reason, want["shardId-1-parent"][1]) {
		t.Errorf("losses = %+v, want the parent's, naming its checkpoint", losses)
	}
	if got := w.Stats().Gone.Load(); got != 1 {
		t.Errorf("Stats().Gone = %d, want 1", got)
	}
}

// A trim past the checkpoint lost records before they were read: every
// view must hear it, naming the shard and the gap. A trim met while
// reading from the trim horizon, before any record, lost nothing.
func TestTrimIsALossOnlyPastAPosition(t *testing.T) {
	t.Run("past the checkpoint", func(t *testing.T) {
		f := newFixture(t)
		first := f.build([]shardSpec{{id: "s1", records: 2}})["s1"]
		f.initTable()
		h := &recorder{}
		w := f.start(options("w"), h)
		waitFor(t, patience, "the first records checkpointed", func() bool {
			return f.checkpointsAre(map[string]string{"s1": last(first)})
		})
		w.stop(t)
		unread := f.appendN("s1", 3)
		f.srv.Trim("s1", unread[1])
		h2 := &recorder{}
		w2 := f.start(options("w"), h2)
		waitFor(t, patience, "the record after the trim", func() bool { return handledCount(h2) >= 1 })
		w2.stop(t)
		checkHandled(t, map[string][]string{"s1": slices.Concat(first, unread[2:])}, h, h2)
		losses := h2.allLosses()
		if len(losses) != 1 || losses[0].shard != "s1" || !strings.Contains(losses[0].reason, last(first)) || !strings.Contains(losses[0].reason, "trimmed") {
			t.Errorf("losses = %+v, want one for s1 naming the checkpoint %s and the trim", losses, last(first))
		}
		if got := w2.Stats().Trimmed.Load(); got != 1 {
			t.Errorf("Stats().Trimmed = %d, want 1", got)
		}
	})
	t.Run("at the trim horizon", func(t *testing.T) {
		f := newFixture(t)
		want := f.build([]shardSpec{{id: "s1", records: 3}})
		f.srv.InjectErrors("GetRecords", 2, "TrimmedDataAccessException")
		h := &recorder{}
		w := f.start(options("w"), h)
		waitFor(t, patience, "every record", func() bool { return handledCount(h) >= 3 })
		w.stop(t)
		checkHandled(t, want, h)
		if l := h.allLosses(); len(l) != 0 {
			t.Errorf("losses = %+v, want none: nothing was skipped", l)
		}
		if got := w.Stats().Trimmed.Load(); got != 0 {
			t.Errorf("Stats().Trimmed = %d, want 0", got)
		}
	})
}

// A shard that leaves the stream while its reader is behind is a loss
// too, not a quiet end.
func TestShardGoneUnderItsReaderIsALoss(t *testing.T) {
	f := newFixture(t)
	want := f.build([]shardSpec{{id: "s1", records: 2}})
	h := &recorder{}
	gate := make(chan struct{})
	h.setHook(func(ctx context.Context, shard string, seqs []string) error {
		select {
		case <-gate:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	w := f.start(options("w"), h)
	waitFor(t, patience, "the first batch to arrive", func() bool { return f.srv.Calls("GetRecords") >= 1 })
	f.srv.RemoveShard("s1")
	close(gate)
	waitFor(t, patience, "the loss to be reported", func() bool { return len(h.allLosses()) > 0 })
	waitFor(t, patience, "the shard to be ended", func() bool { return f.checkpointsAre(map[string]string{"s1": lease.ShardEnd}) })
	w.stop(t)
	checkHandled(t, want, h)
	if l := h.allLosses(); l[0].shard != "s1" || !strings.Contains(l[0].reason, "left the stream") {
		t.Errorf("loss = %+v, want s1 leaving the stream", l[0])
	}
}
