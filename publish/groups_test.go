package publish

import (
	"fmt"
	"maps"
	"testing"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/aggregate"
)

// TestGroupRemoval: a group whose item count returns to zero leaves every
// hash of the view, with or without a count measure; a group whose sum
// returns to zero while it still holds items shows "0".
func TestGroupRemoval(t *testing.T) {
	type step struct {
		groups map[string]gd
		want   map[string]map[string]string // every hash of the view, _items included
	}
	withCount, sumOnly := platformView("with_count"), sumOnlyView("sum_only", "platform")
	cases := []struct {
		name  string
		view  *aggregate.View
		steps []step
	}{
		{"count and sum: item leaves", withCount, []step{
			{map[string]gd{"Web": {1, []string{"10.5"}}, "Phone": {1, []string{"2"}}},
				map[string]map[string]string{
					"amount": {"Web": "10.5", "Phone": "2"}, "donations": {"Web": "1", "Phone": "1"}, "_items": {"Web": "1", "Phone": "1"}}},
			{map[string]gd{"Web": {-1, []string{"-10.5"}}},
				map[string]map[string]string{
					"amount": {"Phone": "2"}, "donations": {"Phone": "1"}, "_items": {"Phone": "1"}}},
		}},
		{"count and sum: MODIFY moves the item", withCount, []step{
			{map[string]gd{"Web": {2, []string{"15"}}},
				map[string]map[string]string{
					"amount": {"Web": "15"}, "donations": {"Web": "2"}, "_items": {"Web": "2"}}},
			// One item moves from Web to Phone with its amount.
			{map[string]gd{"Web": {-1, []string{"-10.5"}}, "Phone": {1, []string{"10.5"}}},
				map[string]map[string]string{
					"amount": {"Web": "4.5", "Phone": "10.5"}, "donations": {"Web": "1", "Phone": "1"}, "_items": {"Web": "1", "Phone": "1"}}},
			// The other follows: Web empties and disappears.
			{map[string]gd{"Web": {-1, []string{"-4.5"}}, "Phone": {1, []string{"4.5"}}},
				map[string]map[string]string{
					"amount": {"Phone": "15"}, "donations": {"Phone": "2"}, "_items": {"Phone": "2"}}},
		}},
		{"count and sum: group leaves with a nonzero sum left over", withCount, []step{
			// Can only happen if the books were off, but the group must
			// still leave every hash rather than keep a stale sum.
			{map[string]gd{"Web": {1, []string{"3"}}},
				map[string]map[string]string{
					"amount": {"Web": "3"}, "donations": {"Web": "1"}, "_items": {"Web": "1"}}},
			{map[string]gd{"Web": {-1, []string{"-1"}}},
				map[string]map[string]string{
					"amount": {}, "donations": {}, "_items": {}}},
		}},
		{"count and sum: sum returns to zero, items remain", withCount, []step{
			{map[string]gd{"Web": {2, []string{"-0.10"}}},
				map[string]map[string]string{
					"amount": {"Web": "-0.1"}, "donations": {"Web": "2"}, "_items": {"Web": "2"}}},
			{map[string]gd{"Web": {0, []string{"0.10"}}},
				map[string]map[string]string{
					"amount": {"Web": "0"}, "donations": {"Web": "2"}, "_items": {"Web": "2"}}},
		}},
		{"count and sum: new group with a zero sum", withCount, []step{
			{map[string]gd{"Web": {1, []string{"0"}}},
				map[string]map[string]string{
					"amount": {"Web": "0"}, "donations": {"Web": "1"}, "_items": {"Web": "1"}}},
		}},
		{"sum only: item leaves", sumOnly, []step{
			{map[string]gd{"Web": {1, []string{"10.5"}}, "Phone": {1, []string{"2"}}},
				map[string]map[string]string{
					"amount": {"Web": "10.5", "Phone": "2"}, "_items": {"Web": "1", "Phone": "1"}}},
			{map[string]gd{"Web": {-1, []string{"-10.5"}}},
				map[string]map[string]string{
					"amount": {"Phone": "2"}, "_items": {"Phone": "1"}}},
		}},
		{"sum only: MODIFY moves the last item", sumOnly, []step{
			{map[string]gd{"Web": {1, []string{"7.25"}}},
				map[string]map[string]string{
					"amount": {"Web": "7.25"}, "_items": {"Web": "1"}}},
			{map[string]gd{"Web": {-1, []string{"-7.25"}}, "Phone": {1, []string{"7.25"}}},
				map[string]map[string]string{
					"amount": {"Phone": "7.25"}, "_items": {"Phone": "1"}}},
		}},
		{"sum only: zero-amount item leaves", sumOnly, []step{
			{map[string]gd{"Web": {1, []string{"0"}}, "Phone": {1, []string{"1"}}},
				map[string]map[string]string{
					"amount": {"Web": "0", "Phone": "1"}, "_items": {"Web": "1", "Phone": "1"}}},
			{map[string]gd{"Web": {-1, []string{"0"}}},
				map[string]map[string]string{
					"amount": {"Phone": "1"}, "_items": {"Phone": "1"}}},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, c.view)
			fence := ""
			for i, s := range c.steps {
				through := string(rune('a' + i)) // any text works as a fence
				f.apply(mkDelta(c.view, "s", fence, through, s.groups))
				fence = through
				if got := f.state(c.view); !maps.EqualFunc(got, s.want, maps.Equal) {
					t.Fatalf("after step %d:\n got %v\nwant %v", i+1, got, s.want)
				}
			}
		})
	}
}

// TestGroupRemovalThroughFold drives removal from real records: INSERT,
// MODIFY to another group, REMOVE, for a view with and one without a count.
func TestGroupRemovalThroughFold(t *testing.T) {
	withCount, sumOnly := platformView("with_count"), sumOnlyView("sum_only", "country")
	f := newFixture(t, withCount, sumOnly)
	items := map[string]streamtally.Image{}
	seq := 0
	run := func(recs ...streamtally.Record) {
		t.Helper()
		for i := range recs {
			seq++
			recs[i].SequenceNumber = streamtally.Seq(fmt.Sprint(seq))
			recs[i].Shard = "s"
			r := recs[i]
			if r.New != nil {
				items[r.New["id"].(*stringAttr).Value] = r.New
			} else {
				delete(items, r.Old["id"].(*stringAttr).Value)
			}
		}
		for _, v := range []*aggregate.View{withCount, sumOnly} {
			fences, err := f.store.Fences(t.Context(), "s")
			if err != nil {
				t.Fatal(err)
			}
			f.apply(v.Fold("s", fences[v.Name].Seq, recs, nil))
		}
		for _, c := range []struct {
			v    *aggregate.View
			attr string
		}{{withCount, "platform"}, {sumOnly, "country"}} {
			if got, want := f.state(c.v), scan(c.v, items, c.attr); !maps.EqualFunc(got, want, maps.Equal) {
				t.Fatalf("%s after %d records:\n got %v\nwant %v", c.v.Name, seq, got, want)
			}
		}
	}
	a := item("a", "Web", "US", "10.50")
	b := item("b", "Phone", "FR", "2")
	a2 := item("a", "Phone", "FR", "10.50")
	run(streamtally.Record{Event: streamtally.Insert, Keys: keyOf(a), New: a},
		streamtally.Record{Event: streamtally.Insert, Keys: keyOf(b), New: b})
	// MODIFY moves a from Web/US to Phone/FR: Web and US empty out.
	run(streamtally.Record{Event: streamtally.Modify, Keys: keyOf(a), Old: a, New: a2})
	if got := f.measure(withCount.Name, "amount"); !maps.Equal(got, map[string]string{"Phone": "12.5"}) {
		t.Errorf("amount = %v, want only Phone 12.5", got)
	}
	run(streamtally.Record{Event: streamtally.Remove, Keys: keyOf(b), Old: b},
		streamtally.Record{Event: streamtally.Remove, Keys: keyOf(a2), Old: a2})
	for _, v := range []*aggregate.View{withCount, sumOnly} {
		for name, h := range f.state(v) {
			if len(h) != 0 {
				t.Errorf("%s %s = %v after every item left, want empty", v.Name, name, h)
			}
		}
	}
}
