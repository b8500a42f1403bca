package aggregate

import (
	"context"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/streamtally/streamtally"
)

// A view whose store forgot applied records can never be made right from the
// stream again. These cases check that Tally notices every way that happens,
// marks the view lost instead of applying partial counts, and keeps the
// shard and the other views going.
func TestTallyMarksViewLostWhenStoreForgotAppliedRecords(t *testing.T) {
	cases := []struct {
		name    string
		first   bool              // records 1..3 were applied (and checkpointed) before
		damage  func(s *memStore) // what happens to the store then
		restart bool              // a new process reads on, with nothing cached
		lost    string            // "" if no view may be lost, else part of the reason
	}{
		{name: "fresh start on an empty store"},
		{name: "resume on a store that holds the checkpoint", first: true, restart: true},
		{name: "resume on an empty store", first: true, restart: true,
			damage: func(s *memStore) { s.forget("lossy") },
			lost:   "holds nothing of the view, but shard s1 was read through 3"},
		{name: "resume on a store behind the checkpoint", first: true, restart: true,
			damage: func(s *memStore) { s.rewind("s1", "lossy", "2") },
			lost:   `read through 3 but Redis holds it only through "2"`},
		{name: "store emptied while running", first: true,
			damage: func(s *memStore) { s.forget("lossy") },
			lost:   `applied through 3 but Redis holds it only through ""`},
		{name: "store rewound while running", first: true,
			damage: func(s *memStore) { s.rewind("s1", "lossy", "1") },
			lost:   `applied through 3 but Redis holds it only through "1"`},
		{name: "marked lost by another process while running", first: true,
			damage: func(s *memStore) { s.lost["lossy"] = "found by w2" },
			lost:   "found by w2"},
		{name: "marked lost by another process before a restart", first: true, restart: true,
			damage: func(s *memStore) { s.lost["lossy"] = "found by w2" },
			lost:   "found by w2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			views := []*View{
				newView("lossy", []string{"platform"}, "n=count", "amount=sum(amount)"),
				newView("kept", []string{"platform"}, "n=count"),
			}
			store := newMemStore()
			tally := NewTally(views, store, quietLog())
			var after streamtally.Seq
			if c.first {
				first := numbered("s1", 1, insert(item("a", "Web", "1")), insert(item("b", "Phone", "2")), insert(item("c", "Web", "3")))
				if err := tally.HandleBatch(ctx, "s1", "", first); err != nil {
					t.Fatal(err)
				}
				after = "3"
			}
			if c.damage != nil {
				c.damage(store)
			}
			if c.restart {
				tally = NewTally(views, store, quietLog())
			}

			next := numbered("s1", 4, insert(item("d", "Web", "4")), remove(item("a", "Web", "1")))
			if err := tally.HandleBatch(ctx, "s1", after, next); err != nil {
				t.Fatalf("HandleBatch: %v", err)
			}
			if got := store.fences["s1"]["kept"]; got != "5" {
				t.Errorf("kept's fence = %q, want 5: the other view goes on", got)
			}
			lost := tally.Lost()
			if c.lost == "" {
				if len(lost) != 0 {
					t.Fatalf("Lost() = %v, want none", lost)
				}
				if got := store.fences["s1"]["lossy"]; got != "5" {
					t.Errorf("lossy's fence = %q, want 5", got)
				}
				return
			}
			if len(lost) != 1 || !strings.Contains(lost["lossy"], c.lost) {
				t.Fatalf("Lost() = %v, want only lossy, with a reason holding %q", lost, c.lost)
			}
			if got := store.lost["lossy"]; got != lost["lossy"] {
				t.Errorf("the store's mark = %q, want the reason %q", got, lost["lossy"])
			}
			if got := store.totals["lossy"]["Web"]; got != nil && got.Count > 2 {
				t.Errorf("the batch was applied to the lost view: Web holds %d items", got.Count)
			}
			held := fmtTotals(store.totals["lossy"])

			// Later batches are still sent for the lost view (so that a
			// rebuild can bring it back), and the store refuses them.
			if err := tally.HandleBatch(ctx, "s1", "5", numbered("s1", 6, insert(item("e", "Web", "1")))); err != nil {
				t.Fatal(err)
			}
			if got := fmtTotals(store.totals["lossy"]); got != held {
				t.Errorf("lossy changed after it was found lost: %s, was %s", got, held)
			}
			if got := tally.Stats().Skipped.Load(); got == 0 {
				t.Errorf("Stats.Skipped = 0, want the skipped records counted")
			}
			if got := store.fences["s1"]["lossy"]; got != "6" {
				t.Errorf("lossy's fence = %q, want 6: a lost view's fence follows the stream", got)
			}

			// A rebuild swaps in the view as of record 7, and clears lost:
			// the daemon applies it again from there, not from its cache.
			store.rebuilt("lossy", "s1", "7", map[string]*Counters{"Web": {Count: 3, Sums: []Decimal{MustDecimal("8")}}})
			if err := tally.HandleBatch(ctx, "s1", "6", numbered("s1", 7, insert(item("f", "Web", "1")), insert(item("g", "Phone", "2")))); err != nil {
				t.Fatal(err)
			}
			if got := tally.Lost(); len(got) != 0 {
				t.Errorf("Lost() = %v after the rebuild, want none", got)
			}
			if got, want := fmtTotals(store.totals["lossy"]), "Phone=1/2 Web=3/8"; got != want {
				t.Errorf("lossy after the rebuild = %s, want %s: only record 8 on top of the rebuild", got, want)
			}
			if got := store.fences["s1"]["lossy"]; got != "8" {
				t.Errorf("lossy's fence = %q, want 8", got)
			}
		})
	}
}

// The fence must cover every record checkpointed, also when a batch changes
// nothing a reader can see; otherwise lost data could not be told apart.
func TestTallyMovesFenceForBatchWithoutGroups(t *testing.T) {
	v := newView("v", []string{"platform"}, "n=count")
	store := newMemStore()
	tally := NewTally([]*View{v}, store, quietLog())
	// No platform: the item is in no group of the view.
	if err := tally.HandleBatch(context.Background(), "s1", "", numbered("s1", 1, insert(item("a", "", "1")))); err != nil {
		t.Fatal(err)
	}
	if got := store.fences["s1"]["v"]; got != "1" {
		t.Errorf("fence = %q, want 1", got)
	}
	if ds := store.applies(); len(ds) != 1 || len(ds[0].Groups) != 0 {
		t.Errorf("applies = %v, want one without groups", ds)
	}
}

func fmtTotals(t map[string]*Counters) string {
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(k + "=" + strconv.FormatInt(t[k].Count, 10))
		for _, s := range t[k].Sums {
			b.WriteString("/" + s.String())
		}
	}
	return b.String()
}
