package publish

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/aggregate"
)

// tallyRecords is a shard's history: 15 records on items a..f.
// Sequence numbers cross a width boundary (90 -> 100), so they must be
// compared as numbers.
func tallyRecords() []streamtally.Record {
	var recs []streamtally.Record
	add := func(ev streamtally.Event, old, new streamtally.Image) {
		img := new
		if img == nil {
			img = old
		}
		recs = append(recs, streamtally.Record{
			Shard: "shard-0", SequenceNumber: streamtally.Seq(strconv.Itoa(10 * (len(recs) + 1))),
			Event: ev, Keys: keyOf(img), Old: old, New: new,
		})
	}
	ins := func(img streamtally.Image) { add(streamtally.Insert, nil, img) }
	mod := func(old, new streamtally.Image) { add(streamtally.Modify, old, new) }
	rem := func(img streamtally.Image) { add(streamtally.Remove, img, nil) }

	a := item("a", "Web", "US", "10.50")
	b := item("b", "Phone", "FR", "20")
	c := item("c", "Web", "FR", "0.25")
	d := item("d", "Mail", "DE", "1E+2")
	ins(a)                                  // 1
	ins(b)                                  // 2
	ins(c)                                  // 3
	mod(a, item("a", "Web", "US", "11.75")) // 4
	a = item("a", "Web", "US", "11.75")
	ins(d)                                          // 5
	mod(b, item("b", "Web", "FR", "20"))            // 6: Phone empties
	b = item("b", "Web", "FR", "20")                //
	rem(c)                                          // 7
	ins(item("e", "Phone", "DE", "-5.125"))         // 8
	mod(d, item("d", "Mail", "DE", "99.99"))        // 9
	d = item("d", "Mail", "DE", "99.99")            //
	ins(item("f", "Phone", "US", "3"))              // 10
	rem(item("e", "Phone", "DE", "-5.125"))         // 11
	mod(a, item("a", "Phone", "US", "11.75"))       // 12
	ins(item("g", "Web", "JP", "0.0001"))           // 13
	rem(d)                                          // 14: Mail and DE empty
	mod(b, item("b", "Web", "FR", "-19.999999999")) // 15
	return recs
}

// replayItems applies records to a table of items, as DynamoDB did.
func replayItems(recs []streamtally.Record) map[string]streamtally.Image {
	items := map[string]streamtally.Image{}
	for _, r := range recs {
		id := r.Keys["id"].(*stringAttr).Value
		if r.New != nil {
			items[id] = r.New
		} else {
			delete(items, id)
		}
	}
	return items
}

// diff is what a message must announce between two states of a view:
// per measure the groups whose value changed, with the change.
func diff(before, after map[string]map[string]string) map[string]map[string]string {
	out := map[string]map[string]string{}
	for m := range after {
		if m == "_items" {
			continue
		}
		groups := map[string]bool{}
		for g := range before[m] {
			groups[g] = true
		}
		for g := range after[m] {
			groups[g] = true
		}
		for g := range groups {
			x, y := new(big.Rat), new(big.Rat)
			if s, ok := before[m][g]; ok {
				x = mustRat(s)
			}
			if s, ok := after[m][g]; ok {
				y = mustRat(s)
			}
			if d := y.Sub(y, x); d.Sign() != 0 {
				if out[m] == nil {
					out[m] = map[string]string{}
				}
				out[m][g] = ratString(d)
			}
		}
	}
	return out
}

// recordingStore passes applies to the Redis store and remembers them. It
// refuses to go on after too many, so a refold loop fails instead of
// hanging.
type recordingStore struct {
	*Redis
	mu      sync.Mutex
	applies []string
}

func (s *recordingStore) Apply(ctx context.Context, d *aggregate.Delta) error {
	s.mu.Lock()
	n := len(s.applies)
	s.mu.Unlock()
	if n >= 100 {
		return errors.New("recordingStore: more than 100 applies, is Tally looping?")
	}
	err := s.Redis.Apply(ctx, d)
	res := "ok"
	var moved *aggregate.FenceMovedError
	switch {
	case errors.As(err, &moved):
		res = string("moved:" + moved.Current)
	case err != nil:
		res = "error"
	}
	s.mu.Lock()
	s.applies = append(s.applies, fmt.Sprintf("%s %s..%s %s", d.View.Name, d.After, d.Through, res))
	s.mu.Unlock()
	return err
}

// take returns the applies recorded since the last call.
func (s *recordingStore) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.applies
	s.applies = nil
	return out
}

// TestTallyExactlyOnce runs Tally against the Redis store: replays change
// nothing, and a batch overlapping records another reader already applied
// applies only the new ones, through the fence-moved refold.
func TestTallyExactlyOnce(t *testing.T) {
	ctx := context.Background()
	byPlatform, byCountry := platformView("by_platform"), sumOnlyView("by_country", "country")
	views := []*aggregate.View{byPlatform, byCountry}
	groupAttr := map[string]string{byPlatform.Name: "platform", byCountry.Name: "country"}
	f := newFixture(t, views...)
	subs := map[string]*subscription{}
	for _, v := range views {
		subs[v.Name] = subscribe(t, f.c, f.keys(v.Name).Channel())
	}
	recs := tallyRecords()
	const shard = "shard-0"
	store := &recordingStore{Redis: f.store}
	expectApplies := func(when string, want ...string) {
		t.Helper()
		if got := store.take(); !slices.Equal(got, want) {
			t.Fatalf("%s: applies\n got %q\nwant %q", when, got, want)
		}
	}

	expect := func(when string, n int) map[string]map[string]map[string]string {
		t.Helper()
		items := replayItems(recs[:n])
		states := map[string]map[string]map[string]string{}
		for _, v := range views {
			want := scan(v, items, groupAttr[v.Name])
			got := f.state(v)
			if !maps.EqualFunc(got, want, maps.Equal) {
				t.Fatalf("%s: view %s\n got %v\nwant %v (full scan of records 1..%d)", when, v.Name, got, want, n)
			}
			states[v.Name] = got
		}
		return states
	}
	expectVersion := func(when string, want int) {
		t.Helper()
		for _, v := range views {
			if got := f.version(v.Name); got != fmt.Sprint(want) {
				t.Fatalf("%s: view %s version = %s, want %d", when, v.Name, got, want)
			}
		}
	}
	expectMessage := func(when string, version int64, before, after map[string]map[string]map[string]string) {
		t.Helper()
		for _, v := range views {
			m := parseMessage(t, subs[v.Name].next())
			if m.Version != version {
				t.Fatalf("%s: view %s message version %d, want %d", when, v.Name, m.Version, version)
			}
			if want := diff(before[v.Name], after[v.Name]); !maps.EqualFunc(m.Deltas, want, maps.Equal) {
				t.Fatalf("%s: view %s message deltas\n got %v\nwant %v", when, v.Name, m.Deltas, want)
			}
		}
	}
	expectNoMessage := func() {
		t.Helper()
		for _, v := range views {
			subs[v.Name].expectNone()
		}
	}

	// A reader takes the shard and applies records 1..4, then stalls: its
	// cached fences stay at record 4.
	stale := aggregate.NewTally(views, store, discardLog())
	if err := stale.HandleBatch(ctx, shard, "", recs[0:4]); err != nil {
		t.Fatal(err)
	}
	expectApplies("after 1..4", "by_platform ..40 ok", "by_country ..40 ok")
	s4 := expect("after 1..4", 4)
	expectVersion("after 1..4", 1)
	expectMessage("after 1..4", 1, map[string]map[string]map[string]string{}, s4)

	// Another reader (the lease moved) applies batch 1..10: it reads the
	// fences from Redis and applies only 5..10.
	fresh := aggregate.NewTally(views, store, discardLog())
	if err := fresh.HandleBatch(ctx, shard, "", recs[0:10]); err != nil {
		t.Fatal(err)
	}
	expectApplies("after 1..10", "by_platform 40..100 ok", "by_country 40..100 ok")
	s10 := expect("after 1..10", 10)
	expectVersion("after 1..10", 2)
	expectMessage("after 1..10", 2, s4, s10)
	if got, want := fresh.Stats().Replayed.Load(), int64(4*len(views)); got != want {
		t.Errorf("fresh Tally replayed %d view records, want %d", got, want)
	}

	// A crash and a replay of the same batch by a new process: nothing.
	replay := aggregate.NewTally(views, store, discardLog())
	if err := replay.HandleBatch(ctx, shard, "", recs[0:10]); err != nil {
		t.Fatal(err)
	}
	expectApplies("after replaying 1..10")
	expect("after replaying 1..10", 10)
	expectVersion("after replaying 1..10", 2)
	expectNoMessage()
	if got := replay.Stats().Applied.Load(); got != 0 {
		t.Errorf("replay applied %d deltas, want 0", got)
	}
	if got, want := replay.Stats().Replayed.Load(), int64(10*len(views)); got != want {
		t.Errorf("replay skipped %d view records, want %d", got, want)
	}

	// The stalled reader wakes up with batch 5..15. Its fence (4) is stale:
	// Apply fails with FenceMovedError, it refolds after 10 and applies
	// 11..15 only, once per view.
	if err := stale.HandleBatch(ctx, shard, "", recs[4:15]); err != nil {
		t.Fatal(err)
	}
	expectApplies("after 5..15 on a stale fence",
		"by_platform 40..150 moved:100", "by_platform 100..150 ok",
		"by_country 40..150 moved:100", "by_country 100..150 ok")
	s15 := expect("after 5..15 on a stale fence", 15)
	expectVersion("after 5..15 on a stale fence", 3)
	expectMessage("after 5..15 on a stale fence", 3, s10, s15)
	expectNoMessage()
	if got, want := stale.Stats().Applied.Load(), int64(2*len(views)); got != want {
		t.Errorf("stale Tally applied %d deltas in all, want %d", got, want)
	}
	fences, err := f.store.Fences(ctx, shard)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range views {
		if fences[v.Name].Seq != recs[14].SequenceNumber {
			t.Errorf("fence of %s = %q, want %q", v.Name, fences[v.Name].Seq, recs[14].SequenceNumber)
		}
	}

	// And the whole history replayed once more, in one batch: nothing.
	if err := aggregate.NewTally(views, store, discardLog()).HandleBatch(ctx, shard, "", recs); err != nil {
		t.Fatal(err)
	}
	expectApplies("after replaying 1..15")
	expect("after replaying 1..15", 15)
	expectVersion("after replaying 1..15", 3)
	expectNoMessage()
}
