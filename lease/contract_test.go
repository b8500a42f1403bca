package lease_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/lease"
)

// store is what the consumer's Worker asks of a lease table.
type store interface {
	Init(ctx context.Context) error
	List(ctx context.Context) (map[string]lease.Lease, map[string]bool, error)
	Take(ctx context.Context, s streamtally.Shard, seen *lease.Lease, startedAt time.Time) (lease.Taken, error)
	Renew(ctx context.Context, shard string) error
	Checkpoint(ctx context.Context, shard, seq string) error
	Release(shard string) error
	MarkEnded(ctx context.Context, seen lease.Lease) error
	Heartbeat(ctx context.Context) error
	Leave(ctx context.Context) error
}

var (
	_ store = (*lease.Table)(nil)
	_ store = (*lease.MemoryWorker)(nil)
)

// contractLease is short so that expiries are quick to wait for.
const contractLease = 700 * time.Millisecond

// TestMemoryKeepsTheTablesContract runs the same handovers over the
// in-memory table and the DynamoDB one, so that unit tests of the worker
// over Memory mean what they would over DynamoDB.
func TestMemoryKeepsTheTablesContract(t *testing.T) {
	impls := map[string]func(t *testing.T) func(worker string) store{
		"memory": func(*testing.T) func(string) store {
			m := lease.NewMemory()
			return func(w string) store { return m.Worker(w, contractLease) }
		},
		"dynamodb": func(t *testing.T) func(string) store {
			ddb := newDynamo(t)
			app, table := "app-"+tableName(t), tableName(t)
			return func(w string) store { return lease.NewTable(ddb, app, table, w, contractLease, testLogger(t)) }
		},
	}
	for name, impl := range impls {
		t.Run(name, func(t *testing.T) { contract(t, impl(t)) })
	}
}

func contract(t *testing.T, open func(worker string) store) {
	ctx := t.Context()
	a, b := open("a"), open("b")
	for _, s := range []store{a, b} {
		if err := s.Init(ctx); err != nil {
			t.Fatalf("Init: %v", err)
		}
	}
	row := func(s store, shard string) *lease.Lease {
		t.Helper()
		leases, _, err := s.List(ctx)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		if l, ok := leases[shard]; ok {
			return &l
		}
		return nil
	}
	started := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

	// A new shard: its row records owner, parent and the LATEST start.
	tk, err := a.Take(ctx, streamtally.Shard{ID: "s1", Parent: "p"}, nil, started)
	if err != nil || tk.Existed || !tk.StartedAt.Equal(started) || tk.From != "" {
		t.Fatalf("take a new shard = %+v, %v", tk, err)
	}
	seen := row(b, "s1")
	if seen == nil || seen.Owner != "a" || seen.Parent != "p" || !seen.StartedAt.Equal(started) {
		t.Fatalf("row after take = %+v", seen)
	}
	// Held: nobody else takes it, and a stale view of "no row" fails.
	if _, err := b.Take(ctx, streamtally.Shard{ID: "s1"}, seen, time.Time{}); !errors.Is(err, lease.ErrLeaseHeld) {
		t.Fatalf("take a held lease: %v, want ErrLeaseHeld", err)
	}
	if _, err := b.Take(ctx, streamtally.Shard{ID: "s1"}, nil, time.Time{}); !errors.Is(err, lease.ErrLeaseHeld) {
		t.Fatalf("take a shard believed new that has a row: %v, want ErrLeaseHeld", err)
	}
	if err := a.Checkpoint(ctx, "s1", "100"); err != nil {
		t.Fatalf("owner checkpoints: %v", err)
	}
	if err := a.Renew(ctx, "s1"); err != nil {
		t.Fatalf("owner renews: %v", err)
	}
	// Expired: another worker takes it, learns the checkpoint and the
	// start, and the old owner can neither renew nor checkpoint.
	time.Sleep(contractLease + 200*time.Millisecond)
	tk, err = b.Take(ctx, streamtally.Shard{ID: "s1"}, row(b, "s1"), time.Time{})
	if err != nil || tk.Checkpoint != "100" || !tk.Existed || tk.From != "a" || !tk.StartedAt.Equal(started) {
		t.Fatalf("take an expired lease = %+v, %v", tk, err)
	}
	if err := a.Checkpoint(ctx, "s1", "150"); !errors.Is(err, lease.ErrLeaseLost) {
		t.Fatalf("old owner checkpoints: %v, want ErrLeaseLost", err)
	}
	if err := a.Renew(ctx, "s1"); !errors.Is(err, lease.ErrLeaseLost) {
		t.Fatalf("old owner renews: %v, want ErrLeaseLost", err)
	}
	// Released: free at once, checkpoint kept, the taker hears of no
	// owner it took the lease from.
	if err := b.Release("s1"); err != nil {
		t.Fatalf("release: %v", err)
	}
	tk, err = a.Take(ctx, streamtally.Shard{ID: "s1"}, row(a, "s1"), time.Time{})
	if err != nil || tk.Checkpoint != "100" || tk.From != "" {
		t.Fatalf("take a released lease = %+v, %v", tk, err)
	}
	if err := b.Release("s1"); err != nil {
		t.Fatalf("releasing a lease held by another is a no-op, got %v", err)
	}
	if l := row(b, "s1"); l.Owner != "a" {
		t.Fatalf("a release by a non-owner freed the lease: %+v", l)
	}
	// A gone shard's row is ended only as seen.
	stale := *row(b, "s1")
	if err := a.Renew(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if err := b.MarkEnded(ctx, stale); !errors.Is(err, lease.ErrLeaseHeld) {
		t.Fatalf("end a row that changed since: %v, want ErrLeaseHeld", err)
	}
	if err := b.MarkEnded(ctx, *row(b, "s1")); err != nil {
		t.Fatalf("end a row as seen: %v", err)
	}
	if l := row(b, "s1"); l.Checkpoint != lease.ShardEnd {
		t.Fatalf("checkpoint after MarkEnded = %q", l.Checkpoint)
	}
	// Heartbeats list workers, not leases; leaving drops one.
	for _, s := range []store{a, b} {
		if err := s.Heartbeat(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	leases, workers, err := a.List(ctx)
	if err != nil || len(leases) != 1 || !workers["a"] || workers["b"] {
		t.Fatalf("List = %v leases, workers %v, %v; want s1 only and worker a", len(leases), workers, err)
	}
}
