package aggregate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"

	"github.com/streamtally/streamtally"
)

// Store keeps views and applies deltas. It is what aggregate needs from the
// publish step.
type Store interface {
	// Fences returns, per view name, what the store holds of the view for
	// shard.
	Fences(ctx context.Context, shard string) (map[string]Fence, error)
	// Apply applies d atomically, provided the view's fence for d.Shard is
	// still d.After; otherwise it changes nothing and returns a
	// *FenceMovedError, a *ViewLostError if the view is marked lost
	// (the store then still moves a fence that is behind d.Through), or a
	// *ViewHeldError while a rebuild holds the view. A delta without groups
	// only moves the fence.
	Apply(ctx context.Context, d *Delta) error
	// MarkLost records in the store that a view's data is incomplete, so
	// that its readers and every other process learn it too.
	MarkLost(ctx context.Context, view, reason string) error
}

// Fence is what a store holds of one view for one shard.
type Fence struct {
	Seq   streamtally.Seq // the last sequence number applied; "" for none
	Held  bool            // the store holds the view at all
	Lost  string          // why the view was marked lost; "" while it is not
	Epoch string          // the view's epoch; "" before its first apply
}

// ViewLostError means a view's data in the store is incomplete: it can no
// longer be brought up to date from the stream, only rebuilt.
type ViewLostError struct {
	View, Reason string
}

func (e *ViewLostError) Error() string {
	return fmt.Sprintf("view %s is lost: %s", e.View, e.Reason)
}

// ViewHeldError means a rebuild of the view is catching up and swapping
// in its recount: the batch fails and is retried, so that nothing is
// checkpointed past the fences the rebuild read. The hold is short, and a
// store ignores one past its deadline.
type ViewHeldError struct {
	View string
}

func (e *ViewHeldError) Error() string {
	return fmt.Sprintf("view %s is held by a rebuild; retrying", e.View)
}

// FenceMovedError means another reader of the shard (an earlier owner of its
// lease, or a replay) applied records this delta assumed were not applied.
type FenceMovedError struct {
	View, Shard string
	Current     streamtally.Seq // the fence the store holds
}

func (e *FenceMovedError) Error() string {
	return fmt.Sprintf("view %s shard %s: fence moved to %q", e.View, e.Shard, e.Current)
}

// Tally folds batches of records into every view and applies them to the
// store exactly once per record, whoever reads the shard.
type Tally struct {
	views []*View
	store Store
	log   *slog.Logger
	stats Stats

	letters letters // records set aside: deadletter.go

	mu     sync.Mutex
	fences map[string]map[string]streamtally.Seq // shard -> view -> fence
	// renew holds, per shard, the views whose next apply starts a new
	// epoch, with the epoch they had when the shard was opened.
	renew map[string]map[string]string
	lost  map[string]string // view -> why it is lost
}

// Stats counts what the fold has seen.
type Stats struct {
	Records  atomic.Int64 // records folded
	Applied  atomic.Int64 // view deltas applied
	Replayed atomic.Int64 // records skipped because the store already held them, counted per view
	Rejected atomic.Int64 // images that contributed nothing to a view
	Moved    atomic.Int64 // applies refused because another reader moved the fence
	Skipped  atomic.Int64 // records not applied to a lost view, counted per view

	mu       sync.Mutex
	byReason map[string]int64
}

// RejectedBy returns the rejection count per view and reason kind.
func (s *Stats) RejectedBy() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int64, len(s.byReason))
	for k, v := range s.byReason {
		out[k] = v
	}
	return out
}

// NewTally returns a Tally over views that applies to store.
func NewTally(views []*View, store Store, log *slog.Logger) *Tally {
	return &Tally{views: views, store: store, log: log, fences: map[string]map[string]streamtally.Seq{}, renew: map[string]map[string]string{}, lost: map[string]string{}}
}

// ViewNames returns the names of the views, in configuration order.
func (t *Tally) ViewNames() []string {
	names := make([]string, len(t.views))
	for i, v := range t.views {
		names[i] = v.Name
	}
	return names
}

// Lost returns the views found lost, and why.
func (t *Tally) Lost() map[string]string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return maps.Clone(t.lost)
}

// Stats returns the live counters.
func (t *Tally) Stats() *Stats { return &t.stats }

// OpenShard is told that this process now reads shard, whose checkpoint
// is checkpoint ("" for none); takeover says the lease was taken from a
// reader that did not release it. It reads what the store holds of the
// shard and returns the nearest fence of the views that hold one ("" for
// none) and whether every view holds one, so that the reader starts where
// every view needs it to.
//
// Every view applied at least through the checkpoint, so a view whose
// fence is behind it lost data. A view whose fence is ahead of it, or any
// view after a takeover, may have versions that subscribers saw and Redis
// no longer holds (a failover that lost the last writes, with the reader
// that wrote them gone): its next apply starts a new epoch, so that no
// version is ever issued twice with different contents.
func (t *Tally) OpenShard(ctx context.Context, shard string, checkpoint streamtally.Seq, takeover bool) (nearest streamtally.Seq, all bool, err error) {
	f, err := t.open(ctx, shard, checkpoint, takeover)
	if err != nil {
		return "", false, err
	}
	all = true
	first := true
	for _, v := range t.views {
		seq, ok := f[v.Name]
		if !ok {
			all = false
			continue
		}
		if first || seq.Less(nearest) {
			nearest, first = seq, false
		}
	}
	return nearest, all, nil
}

// RecordsLost is told that records of shard were lost before they were
// read (trimmed from the stream, or a shard gone with records unread):
// no view can be brought up to date from the stream any more, so every
// one is marked lost.
func (t *Tally) RecordsLost(ctx context.Context, shard, reason string) error {
	for _, v := range t.views {
		if err := t.markLost(ctx, v.Name, reason+"; run streamtally backfill"); err != nil {
			return err
		}
	}
	return nil
}

// HandleBatch folds one shard's batch, which follows the shard's checkpoint
// after, into every view and applies it. It returns nil only once every
// view holds the batch, or is lost, so the caller may then checkpoint past
// it.
func (t *Tally) HandleBatch(ctx context.Context, shard string, after streamtally.Seq, recs []streamtally.Record) error {
	fences, err := t.shardFences(ctx, shard, after)
	if err != nil {
		return err
	}
	t.stats.Records.Add(int64(len(recs)))
	// A lost view is folded and sent to the store like the others: the
	// store refuses it cheaply while it is lost, and takes it again, from
	// the fences the rebuild wrote, once a rebuild made it whole.
	for _, v := range t.views {
		if err := t.applyView(ctx, v, shard, recs, fences); err != nil {
			return err
		}
	}
	return nil
}

func (t *Tally) applyView(ctx context.Context, v *View, shard string, recs []streamtally.Record, fences map[string]streamtally.Seq) error {
	var rejected []Rejection
	reject := func(r Rejection) { rejected = append(rejected, r) }
	for {
		d := v.Fold(shard, fences[v.Name], recs, reject)
		t.stats.Replayed.Add(int64(len(recs) - d.Records))
		if d.Records == 0 {
			return nil
		}
		if reject != nil {
			if err := t.report(ctx, v.Name, shard, d.Through, rejected); err != nil {
				return err
			}
			reject = nil
		}
		d.EpochSeen, d.NewEpoch = t.renewal(shard, v.Name)
		// A delta without groups is applied all the same: the fence must
		// reach every record checkpointed, or a store that lost data could
		// not be told from one that had nothing to do.
		err := t.store.Apply(ctx, d)
		var moved *FenceMovedError
		var lost *ViewLostError
		switch {
		case err == nil:
			t.stats.Applied.Add(1)
			t.setFence(shard, v.Name, d.Through)
			t.renewed(shard, v.Name)
			t.noteWhole(v.Name)
			return nil
		case errors.As(err, &moved) && d.After.After(moved.Current):
			// Fences only move forward. One that moved back means the
			// store forgot applied records: a restart without
			// persistence, a restore, a failover to a lagging replica.
			return t.markLost(ctx, v.Name, fmt.Sprintf(
				"shard %s had been applied through %s but Redis holds it only through %q: Redis lost writes", shard, d.After, moved.Current))
		case errors.As(err, &moved):
			t.stats.Moved.Add(1)
			// Someone else applied part of this shard: fold again from
			// where the store says it is. Rejections were reported on the
			// first fold already.
			t.log.Info("fence moved, refolding", "shard", shard, "view", v.Name, "fence", moved.Current)
			fences[v.Name] = moved.Current
			t.setFence(shard, v.Name, moved.Current)
			reject = nil
		case errors.As(err, &lost):
			t.stats.Skipped.Add(int64(d.Records))
			t.noteLost(lost.View, lost.Reason)
			return nil
		default:
			return fmt.Errorf("apply view %s shard %s: %w", v.Name, shard, err)
		}
	}
}

// markLost marks view lost in the store, then here. Until the store has the
// mark the batch fails, so the next attempt finds the loss again.
func (t *Tally) markLost(ctx context.Context, view, reason string) error {
	if err := t.store.MarkLost(ctx, view, reason); err != nil {
		return fmt.Errorf("mark view %s lost: %w", view, err)
	}
	t.noteLost(view, reason)
	return nil
}

func (t *Tally) noteLost(view, reason string) {
	t.mu.Lock()
	_, known := t.lost[view]
	t.lost[view] = reason
	t.mu.Unlock()
	if !known {
		t.log.Error("view lost: its counters are incomplete and are no longer updated; rebuild it",
			"view", view, "reason", reason)
	}
}

// noteWhole forgets that view was lost: the store took a delta for it, so
// a rebuild has swapped in a recount and cleared the mark.
func (t *Tally) noteWhole(view string) {
	t.mu.Lock()
	_, known := t.lost[view]
	delete(t.lost, view)
	t.mu.Unlock()
	if known {
		t.log.Info("view is whole again: a rebuild replaced its counters; applying it from the rebuild's fences", "view", view)
	}
}

func (t *Tally) reject(r Rejection) {
	t.stats.Rejected.Add(1)
	t.stats.mu.Lock()
	if t.stats.byReason == nil {
		t.stats.byReason = map[string]int64{}
	}
	t.stats.byReason[r.View+"/"+r.Reason.Kind]++
	t.stats.mu.Unlock()
	// An item outside a view is no news; bad data is.
	level := slog.LevelDebug
	if IsDeadLetter(r.Reason.Kind) {
		level = slog.LevelWarn
	}
	t.log.Log(context.Background(), level, "record contributes nothing to view",
		"view", r.View, "shard", r.Record.Shard, "seq", r.Record.SequenceNumber,
		"event", r.Record.Event.String(), "key", KeyString(r.Record.Keys), "kind", r.Reason.Kind, "reason", r.Reason.Text)
}

// shardFences returns the fences of shard, opening it first when the
// shard is new to this process (a caller that did not call OpenShard).
func (t *Tally) shardFences(ctx context.Context, shard string, after streamtally.Seq) (map[string]streamtally.Seq, error) {
	t.mu.Lock()
	f, ok := t.fences[shard]
	t.mu.Unlock()
	if ok {
		return maps.Clone(f), nil
	}
	f, err := t.open(ctx, shard, after, false)
	if err != nil {
		return nil, err
	}
	return maps.Clone(f), nil
}

// open reads the fences of shard from the store, marks lost the views
// that hold less than checkpoint, notes the views whose next apply starts
// a new epoch, and caches the fences.
func (t *Tally) open(ctx context.Context, shard string, checkpoint streamtally.Seq, takeover bool) (map[string]streamtally.Seq, error) {
	held, err := t.store.Fences(ctx, shard)
	if err != nil {
		return nil, fmt.Errorf("read fences of shard %s: %w", shard, err)
	}
	f := make(map[string]streamtally.Seq, len(held))
	renew := map[string]string{}
	for _, v := range t.views {
		h := held[v.Name]
		switch {
		case h.Lost != "":
			t.noteLost(v.Name, h.Lost)
		case !h.Held && checkpoint != "":
			err = t.markLost(ctx, v.Name, fmt.Sprintf(
				"Redis holds nothing of the view, but shard %s was read through %s: a new view, or Redis lost its data; run streamtally backfill", shard, checkpoint))
		case checkpoint.After(h.Seq):
			err = t.markLost(ctx, v.Name, fmt.Sprintf(
				"shard %s was read through %s but Redis holds it only through %q: Redis lost writes", shard, checkpoint, h.Seq))
		case takeover || h.Seq != checkpoint:
			renew[v.Name] = h.Epoch
		}
		if err != nil {
			return nil, err
		}
		if h.Seq != "" {
			f[v.Name] = h.Seq
		}
	}
	t.mu.Lock()
	t.fences[shard] = f
	t.renew[shard] = renew
	t.mu.Unlock()
	return f, nil
}

// renewal says whether view's next apply on shard starts a new epoch, and
// the epoch the view had when the shard was opened.
func (t *Tally) renewal(shard, view string) (seen string, renew bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	seen, renew = t.renew[shard][view]
	return seen, renew
}

func (t *Tally) renewed(shard, view string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.renew[shard], view)
}

func (t *Tally) setFence(shard, view string, seq streamtally.Seq) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f := t.fences[shard]; f != nil {
		f[view] = seq
	}
}

// ShardReleased drops what Tally cached for a shard this process no longer
// reads; the fences are read again should it come back.
func (t *Tally) ShardReleased(shard string) {
	t.mu.Lock()
	delete(t.fences, shard)
	delete(t.renew, shard)
	t.mu.Unlock()
	t.letters.forget(shard)
}
