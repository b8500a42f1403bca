package aggregate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/streamtally/streamtally"
)

// Store keeps views and applies deltas. It is what aggregate needs from the
// publish step.
type Store interface {
	// Fences returns, per view name, the last sequence number of shard
	// whose effect the store holds.
	Fences(ctx context.Context, shard string) (map[string]string, error)
	// Apply applies d atomically, provided the view's fence for d.Shard is
	// still d.After; otherwise it changes nothing and returns a
	// *FenceMovedError.
	Apply(ctx context.Context, d *Delta) error
}

// FenceMovedError means another reader of the shard (an earlier owner of its
// lease, or a replay) applied records this delta assumed were not applied.
type FenceMovedError struct {
	View, Shard string
	Current     string // the fence the store holds
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

	mu     sync.Mutex
	fences map[string]map[string]string // shard -> view -> fence
}

// Stats counts what the fold has seen.
type Stats struct {
	Records  atomic.Int64 // records folded
	Applied  atomic.Int64 // view deltas applied
	Replayed atomic.Int64 // records skipped because the store already held them, counted per view
	Rejected atomic.Int64 // images that contributed nothing to a view
	Moved    atomic.Int64 // applies refused because another reader moved the fence

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
	return &Tally{views: views, store: store, log: log, fences: map[string]map[string]string{}}
}

// Stats returns the live counters.
func (t *Tally) Stats() *Stats { return &t.stats }

// HandleBatch folds one shard's batch into every view and applies it. It
// returns nil only once every view holds the batch, so the caller may then
// checkpoint past it.
func (t *Tally) HandleBatch(ctx context.Context, shard string, recs []streamtally.Record) error {
	fences, err := t.shardFences(ctx, shard)
	if err != nil {
		return err
	}
	t.stats.Records.Add(int64(len(recs)))
	for _, v := range t.views {
		if err := t.applyView(ctx, v, shard, recs, fences); err != nil {
			return err
		}
	}
	return nil
}

func (t *Tally) applyView(ctx context.Context, v *View, shard string, recs []streamtally.Record, fences map[string]string) error {
	reject := t.reject
	for {
		d := v.Fold(shard, fences[v.Name], recs, reject)
		t.stats.Replayed.Add(int64(len(recs) - d.Records))
		if d.Empty() {
			return nil
		}
		err := t.store.Apply(ctx, d)
		var moved *FenceMovedError
		switch {
		case err == nil:
			t.stats.Applied.Add(1)
			t.setFence(shard, v.Name, d.Through)
			return nil
		case errors.As(err, &moved):
			t.stats.Moved.Add(1)
			// Someone else applied part of this shard: fold again from
			// where the store says it is. Rejections were reported on the
			// first fold already.
			t.log.Info("fence moved, refolding", "shard", shard, "view", v.Name, "fence", moved.Current)
			fences[v.Name] = moved.Current
			t.setFence(shard, v.Name, moved.Current)
			reject = nil
		default:
			return fmt.Errorf("apply view %s shard %s: %w", v.Name, shard, err)
		}
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
	t.log.Warn("record contributes nothing to view",
		"view", r.View, "shard", r.Record.Shard, "seq", r.Record.SequenceNumber,
		"event", r.Record.Event.String(), "key", KeyString(r.Record.Keys), "reason", r.Reason.Text)
}

func (t *Tally) shardFences(ctx context.Context, shard string) (map[string]string, error) {
	t.mu.Lock()
	f, ok := t.fences[shard]
	t.mu.Unlock()
	if ok {
		return copyMap(f), nil
	}
	f, err := t.store.Fences(ctx, shard)
	if err != nil {
		return nil, fmt.Errorf("read fences of shard %s: %w", shard, err)
	}
	if f == nil {
		f = map[string]string{} // setFence needs a map to record into
	}
	t.mu.Lock()
	t.fences[shard] = f
	t.mu.Unlock()
	return copyMap(f), nil
}

func (t *Tally) setFence(shard, view, seq string) {
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
	t.mu.Unlock()
}

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
