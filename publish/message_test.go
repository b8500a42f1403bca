package publish

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/aggregate"
)

// TestMessageExample is the documented example message, byte for byte.
func TestMessageExample(t *testing.T) {
	v := platformView("by_platform")
	f := newFixture(t, v)
	f.store.now = func() time.Time { return time.UnixMilli(1700000000000) }
	sub := subscribe(t, f.c, f.keys(v.Name).Channel())
	f.apply(mkDelta(v, "s", "", "1", map[string]gd{"Web": {1, []string{"0"}}, "Phone": {1, []string{"0"}}}))
	sub.next()
	if err := f.c.HSet(context.Background(), f.keys(v.Name).Meta(), "version", 41).Err(); err != nil {
		t.Fatal(err)
	}
	f.apply(mkDelta(v, "s", "1", "2", map[string]gd{"Web": {1, []string{"10.5"}}, "Phone": {-1, []string{"-10.5"}}}))
	// Groups are in sorted order, measures by name.
	want := `{"view":"by_platform","epoch":"` + f.meta(v.Name)["epoch"] + `","version":42,"deltas":{"amount":{"Phone":"-10.5","Web":"10.5"},"donations":{"Phone":"-1","Web":"1"}},"ts_ms":1700000000000}`
	if got := sub.next(); got != want {
		t.Errorf("message\n got %s\nwant %s", got, want)
	}
	if got := f.meta(v.Name)["updated_ms"]; got != "1700000000000" {
		t.Errorf("updated_ms = %q, want 1700000000000", got)
	}
}

// TestVersionsAndMessages: N applies give versions 1..N and exactly N
// messages, in order, each describing its delta: only changed groups, only
// measures with changes, canonical values, JSON-escaped group names.
func TestVersionsAndMessages(t *testing.T) {
	v := platformView("by_platform")
	f := newFixture(t, v)
	var clock int64 = 1700000000000
	f.store.now = func() time.Time { clock += 7; return time.UnixMilli(clock) }
	sub := subscribe(t, f.c, f.keys(v.Name).Channel())

	r := rand.New(rand.NewPCG(4, 2))
	names := []string{"Web", "Phone", `Mail "order"`, `back\slash|pipe`, "Ünïcode ✓", ""}
	counts := map[string]int64{}
	const n = 60
	type sent struct {
		ts     int64
		deltas map[string]map[string]string
	}
	var sents []sent
	fence := ""
	for i := 1; i <= n; i++ {
		groups := map[string]gd{}
		want := map[string]map[string]string{}
		put := func(measure, g, val string) {
			if want[measure] == nil {
				want[measure] = map[string]string{}
			}
			want[measure][g] = val
		}
		for _, gi := range r.Perm(len(names))[:1+r.IntN(3)] {
			g := names[gi]
			var count int64
			switch {
			case counts[g] == 0:
				count = 1 + int64(r.IntN(2))
			case i%5 == 0:
				count = 0 // sum-only change, e.g. a MODIFY of the amount
			default:
				count = int64(r.IntN(3)) - 1
				if counts[g]+count == 0 {
					count = 1
				}
			}
			counts[g] += count
			amount := "0"
			if i%7 != 0 || count == 0 { // every 7th: a count-only change
				amount = fmt.Sprintf("%d.%02d0", r.IntN(200)-100, 1+r.IntN(99))
				put("amount", g, strings.TrimSuffix(strings.TrimSuffix(amount, "0"), "0"))
			}
			if count != 0 {
				put("donations", g, fmt.Sprint(count))
			}
			groups[g] = gd{count, []string{amount}}
		}
		through := fmt.Sprint(i)
		f.apply(mkDelta(v, "s", fence, through, groups))
		fence = through
		sents = append(sents, sent{clock, want})
	}
	for i := 1; i <= n; i++ {
		m := parseMessage(t, sub.next())
		if m.View != v.Name {
			t.Errorf("message %d: view = %q, want %q", i, m.View, v.Name)
		}
		if m.Version != int64(i) {
			t.Fatalf("message %d: version = %d, want %d (messages out of order or lost)", i, m.Version, i)
		}
		if *m.TSMS != sents[i-1].ts {
			t.Errorf("message %d: ts_ms = %d, want %d", i, *m.TSMS, sents[i-1].ts)
		}
		if !maps.EqualFunc(m.Deltas, sents[i-1].deltas, maps.Equal) {
			t.Errorf("message %d: deltas\n got %v\nwant %v", i, m.Deltas, sents[i-1].deltas)
		}
	}
	sub.expectNone()
	if got := f.version(v.Name); got != fmt.Sprint(n) {
		t.Errorf("version = %s, want %d", got, n)
	}
	if got := f.meta(v.Name)["updated_ms"]; got != fmt.Sprint(clock) {
		t.Errorf("updated_ms = %s, want %d", got, clock)
	}
}

// TestTallyEmptyDeltaPublishesNothing: a batch whose records cancel out
// within the batch produces no version and no message; only the fence moves.
func TestTallyEmptyDeltaPublishesNothing(t *testing.T) {
	ctx := context.Background()
	v := platformView("by_platform")
	f := newFixture(t, v)
	sub := subscribe(t, f.c, f.keys(v.Name).Channel())
	tally := aggregate.NewTally([]*aggregate.View{v}, f.store, discardLog())

	a := item("a", "Web", "US", "10.5")
	if err := tally.HandleBatch(ctx, "s", "", []streamtally.Record{
		{Shard: "s", SequenceNumber: "1", Event: streamtally.Insert, Keys: keyOf(a), New: a},
	}); err != nil {
		t.Fatal(err)
	}
	parseMessage(t, sub.next())
	before, metaBefore := f.state(v), f.meta(v.Name)

	b := item("b", "Phone", "FR", "3")
	a2 := item("a", "Web", "US", "99")
	for _, batch := range [][]streamtally.Record{
		// Inserted and removed within the batch.
		{
			{Shard: "s", SequenceNumber: "2", Event: streamtally.Insert, Keys: keyOf(b), New: b},
			{Shard: "s", SequenceNumber: "3", Event: streamtally.Remove, Keys: keyOf(b), Old: b},
		},
		// Modified and modified back.
		{
			{Shard: "s", SequenceNumber: "4", Event: streamtally.Modify, Keys: keyOf(a), Old: a, New: a2},
			{Shard: "s", SequenceNumber: "5", Event: streamtally.Modify, Keys: keyOf(a), Old: a2, New: a},
		},
		// A MODIFY that touches no attribute the view reads.
		{
			{Shard: "s", SequenceNumber: "6", Event: streamtally.Modify, Keys: keyOf(a), Old: a, New: a},
		},
	} {
		if err := tally.HandleBatch(ctx, "s", "", batch); err != nil {
			t.Fatal(err)
		}
	}
	if after := f.state(v); !maps.EqualFunc(before, after, maps.Equal) {
		t.Errorf("cancelling batches changed the hashes:\nbefore %v\nafter  %v", before, after)
	}
	// Only the fence moves, so that it keeps covering the checkpoint.
	metaBefore["fence:s"] = "6"
	if after := f.meta(v.Name); !maps.Equal(metaBefore, after) {
		t.Errorf("cancelling batches changed _meta beyond the fence:\nbefore %v\nafter  %v", metaBefore, after)
	}
	sub.expectNone()
}
