package publish

import (
	"context"
	"errors"
	"maps"
	"testing"

	"github.com/streamtally/streamtally/aggregate"
)

func wantFenceMoved(t *testing.T, err error, current string) {
	t.Helper()
	var moved *aggregate.FenceMovedError
	if !errors.As(err, &moved) {
		t.Fatalf("Apply error = %v, want *aggregate.FenceMovedError", err)
	}
	if string(moved.Current) != current {
		t.Fatalf("FenceMovedError.Current = %q, want %q", moved.Current, current)
	}
}

// TestApplyFence: a delta applies only on the fence it was folded after, so
// a replay changes nothing at all: no value, no version, no message.
func TestApplyFence(t *testing.T) {
	ctx := context.Background()
	v := platformView("by_platform")
	f := newFixture(t, v)
	k := f.keys(v.Name)
	sub := subscribe(t, f.c, k.Channel())

	d := mkDelta(v, "shard-1", "", "100", map[string]gd{
		"Web":   {1, []string{"10.5"}},
		"Phone": {2, []string{"3"}},
	})
	f.apply(d)
	if m := parseMessage(t, sub.next()); m.Version != 1 {
		t.Fatalf("first message version = %d, want 1", m.Version)
	}
	meta := f.meta(v.Name)
	if meta["fence:shard-1"] != "100" || meta["version"] != "1" {
		t.Fatalf("meta after first apply = %v, want fence:shard-1=100 version=1", meta)
	}
	before := f.state(v)
	metaBefore := f.meta(v.Name)

	// The same delta again, as a replay would send it.
	wantFenceMoved(t, f.store.Apply(ctx, d), "100")
	// A delta folded after a fence the store never held.
	wantFenceMoved(t, f.store.Apply(ctx, mkDelta(v, "shard-1", "99", "120", map[string]gd{"Web": {1, []string{"1"}}})), "100")
	// And one folded after a later fence.
	wantFenceMoved(t, f.store.Apply(ctx, mkDelta(v, "shard-1", "101", "120", map[string]gd{"Web": {1, []string{"1"}}})), "100")

	if after := f.state(v); !maps.EqualFunc(before, after, maps.Equal) {
		t.Errorf("a rejected apply changed the hashes:\nbefore %v\nafter  %v", before, after)
	}
	if after := f.meta(v.Name); !maps.Equal(metaBefore, after) {
		t.Errorf("a rejected apply changed _meta:\nbefore %v\nafter  %v", metaBefore, after)
	}
	sub.expectNone()

	// The delta folded after the right fence goes through.
	f.apply(mkDelta(v, "shard-1", "100", "130", map[string]gd{"Web": {1, []string{"1"}}}))
	if m := parseMessage(t, sub.next()); m.Version != 2 {
		t.Fatalf("second message version = %d, want 2", m.Version)
	}
	if got := f.measure(v.Name, "amount")["Web"]; got != "11.5" {
		t.Errorf("amount[Web] = %q, want 11.5", got)
	}
	if got := f.meta(v.Name)["fence:shard-1"]; got != "130" {
		t.Errorf("fence = %q, want 130", got)
	}
}

// TestFencesPerShardAndView: each (view, shard) pair has its own fence, and
// Fences reports a shard's fences for every view that has one.
func TestFencesPerShardAndView(t *testing.T) {
	ctx := context.Background()
	v1, v2 := platformView("by_platform"), sumOnlyView("by_country", "country")
	f := newFixture(t, v1, v2)

	fences := func(shard string) map[string]string {
		t.Helper()
		got, err := f.store.Fences(ctx, shard)
		if err != nil {
			t.Fatalf("Fences(%s): %v", shard, err)
		}
		seqs := map[string]string{}
		for view, fence := range got {
			if fence.Seq != "" {
				seqs[view] = string(fence.Seq)
			}
		}
		return seqs
	}
	if got := fences("A"); len(got) != 0 {
		t.Fatalf("Fences on an empty store = %v, want none", got)
	}

	f.apply(mkDelta(v1, "A", "", "10", map[string]gd{"Web": {1, []string{"1"}}}))
	if got, want := fences("A"), map[string]string{"by_platform": "10"}; !maps.Equal(got, want) {
		t.Fatalf("Fences(A) = %v, want %v", got, want)
	}
	if got := fences("B"); len(got) != 0 {
		t.Fatalf("Fences(B) = %v, want none: fences are per shard", got)
	}

	// Shard B of the same view starts from no fence, whatever shard A holds.
	f.apply(mkDelta(v1, "B", "", "7", map[string]gd{"Web": {1, []string{"2"}}}))
	// View 2 of shard A starts from no fence too: fences are per view.
	wantFenceMoved(t, f.store.Apply(ctx, mkDelta(v2, "A", "10", "20", map[string]gd{"US": {1, []string{"5"}}})), "")
	f.apply(mkDelta(v2, "A", "", "20", map[string]gd{"US": {1, []string{"5"}}}))
	f.apply(mkDelta(v1, "A", "10", "30", map[string]gd{"Web": {1, []string{"4"}}}))

	if got, want := fences("A"), map[string]string{"by_platform": "30", "by_country": "20"}; !maps.Equal(got, want) {
		t.Errorf("Fences(A) = %v, want %v", got, want)
	}
	if got, want := fences("B"), map[string]string{"by_platform": "7"}; !maps.Equal(got, want) {
		t.Errorf("Fences(B) = %v, want %v", got, want)
	}
	// A stale fence of one shard is refused without touching the other.
	wantFenceMoved(t, f.store.Apply(ctx, mkDelta(v1, "B", "", "8", map[string]gd{"Web": {1, []string{"2"}}})), "7")
	if got := f.measure(v1.Name, "amount")["Web"]; got != "7" {
		t.Errorf("amount[Web] = %q, want 7 (1 + 2 + 4)", got)
	}
	if got := f.version(v1.Name); got != "3" {
		t.Errorf("by_platform version = %s, want 3", got)
	}
	if got := f.version(v2.Name); got != "1" {
		t.Errorf("by_country version = %s, want 1", got)
	}
}
