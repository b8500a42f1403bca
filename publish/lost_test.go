package publish

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/aggregate"
)

func TestFencesTellHeldAndLostViews(t *testing.T) {
	ctx := context.Background()
	v := platformView("by_platform")
	f := newFixture(t, v)
	fence := func() aggregate.Fence {
		t.Helper()
		got, err := f.store.Fences(ctx, "A")
		if err != nil {
			t.Fatal(err)
		}
		return got[v.Name]
	}
	if got := fence(); got != (aggregate.Fence{}) {
		t.Fatalf("fence on an empty store = %+v, want zero", got)
	}
	f.apply(mkDelta(v, "B", "", "5", map[string]gd{"Web": {1, []string{"1"}}}))
	if got := fence(); got != (aggregate.Fence{Held: true, Epoch: f.meta(v.Name)["epoch"]}) || got.Epoch == "" {
		t.Fatalf("fence of a shard never applied to a held view = %+v, want Held and the epoch", got)
	}
	f.apply(mkDelta(v, "A", "", "9", map[string]gd{"Web": {1, []string{"1"}}}))
	whole := f.meta(v.Name)["epoch"]
	if err := f.store.MarkLost(ctx, v.Name, "test says so"); err != nil {
		t.Fatal(err)
	}
	got := fence()
	if want := (aggregate.Fence{Seq: "9", Held: true, Lost: "test says so", Epoch: got.Epoch}); got != want {
		t.Fatalf("fence = %+v, want %+v", got, want)
	}
	// Losing data ends the epoch: what is counted next does not continue
	// what subscribers saw.
	if got.Epoch == whole || got.Epoch == "" {
		t.Errorf("epoch after the loss = %q, before %q: want a new one", got.Epoch, whole)
	}
	// A second mark keeps the first reason and epoch: that is the loss.
	if err := f.store.MarkLost(ctx, v.Name, "a later symptom"); err != nil {
		t.Fatal(err)
	}
	if again := fence(); again != got {
		t.Errorf("fence after a second mark = %+v, want %+v unchanged", again, got)
	}
	if got := f.meta(v.Name)["lost"]; got != "test says so" {
		t.Errorf("_meta lost = %q, want the reason, for readers", got)
	}
}

func TestApplyRefusesLostViewAndChangesNothing(t *testing.T) {
	ctx := context.Background()
	v := platformView("by_platform")
	f := newFixture(t, v)
	f.apply(mkDelta(v, "A", "", "9", map[string]gd{"Web": {1, []string{"1"}}}))
	if err := f.store.MarkLost(ctx, v.Name, "gone"); err != nil {
		t.Fatal(err)
	}
	before := f.state(v)
	err := f.store.Apply(ctx, mkDelta(v, "A", "9", "12", map[string]gd{"Web": {1, []string{"1"}}}))
	var lost *aggregate.ViewLostError
	if !errors.As(err, &lost) || lost.View != v.Name || lost.Reason != "gone" {
		t.Fatalf("Apply to a lost view: %v, want a ViewLostError for %s with the reason", err, v.Name)
	}
	if got := f.version(v.Name); got != "1" {
		t.Errorf("version = %s, want 1", got)
	}
	// The counters stay, but the fence follows the stream, so that it
	// never trails a checkpoint and a rebuild's hold freezes it.
	if got := f.meta(v.Name)["fence:A"]; got != "12" {
		t.Errorf("fence = %q, want 12", got)
	}
	// A replay of older records never moves it back.
	if err := f.store.Apply(ctx, mkDelta(v, "A", "", "10", map[string]gd{"Web": {1, []string{"1"}}})); !errors.As(err, &lost) {
		t.Fatalf("Apply to a lost view: %v, want a ViewLostError", err)
	}
	if got := f.meta(v.Name)["fence:A"]; got != "12" {
		t.Errorf("fence after a replay = %q, want 12", got)
	}
	if after := f.state(v); after["amount"]["Web"] != before["amount"]["Web"] {
		t.Errorf("amount changed from %v to %v", before, after)
	}
}

func TestApplyWithoutGroupsMovesOnlyTheFence(t *testing.T) {
	v := platformView("by_platform")
	f := newFixture(t, v)
	sub := subscribe(t, f.c, f.keys(v.Name).Channel())
	f.apply(mkDelta(v, "A", "", "3", map[string]gd{"Web": {1, []string{"2"}}}))
	sub.next()
	f.apply(mkDelta(v, "A", "3", "8", nil))
	meta := f.meta(v.Name)
	if meta["fence:A"] != "8" || meta["version"] != "1" {
		t.Errorf("meta = %v, want fence 8 and version still 1", meta)
	}
	sub.expectNone()
}

// A Redis that lost a view's keys while the daemon ran: the next batch must
// find it, mark it lost in Redis, and leave its keys alone, while another
// view goes on.
func TestTallyMarksViewLostWhenItsKeysVanish(t *testing.T) {
	ctx := context.Background()
	lossy, kept := platformView("lossy"), sumOnlyView("kept", "country")
	f := newFixture(t, lossy, kept)
	tally := aggregate.NewTally([]*aggregate.View{lossy, kept}, f.store, discardLog())
	batch := func(first int, imgs ...streamtally.Image) []streamtally.Record {
		recs := make([]streamtally.Record, len(imgs))
		for i, img := range imgs {
			recs[i] = streamtally.Record{Shard: "A", SequenceNumber: streamtally.Seq(fmt.Sprint(first + i)), Event: streamtally.Insert, Keys: keyOf(img), New: img}
		}
		return recs
	}
	if err := tally.HandleBatch(ctx, "A", "", batch(1, item("a", "Web", "US", "1"), item("b", "Web", "DE", "2"))); err != nil {
		t.Fatal(err)
	}
	keys := f.c.Keys(ctx, f.keys(lossy.Name).Channel()+"*").Val()
	if len(keys) == 0 {
		t.Fatal("lossy has no keys to lose")
	}
	f.c.Del(ctx, keys...)

	if err := tally.HandleBatch(ctx, "A", "2", batch(3, item("c", "Phone", "US", "4"))); err != nil {
		t.Fatal(err)
	}
	if why := tally.Lost()[lossy.Name]; !strings.Contains(why, "Redis lost writes") {
		t.Fatalf("Lost() = %v, want lossy lost", tally.Lost())
	}
	if got := f.meta(lossy.Name); got["lost"] == "" || got["version"] != "" || len(f.hash(f.keys(lossy.Name).Measure("amount"))) != 0 {
		t.Errorf("lossy in Redis: meta %v: want only the lost mark, no partial counters", got)
	}
	if got := f.measure(kept.Name, "amount"); got["US"] != "5" || got["DE"] != "2" {
		t.Errorf("kept amount = %v, want US 5 and DE 2", got)
	}
}
