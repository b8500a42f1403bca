package recount

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/aggregate"
)

var testKeys = []string{"id"}

func img(id, platform, amount string) streamtally.Image {
	return streamtally.Image{
		"id":       &streamtally.S{Value: id},
		"platform": &streamtally.S{Value: platform},
		"amount":   &streamtally.N{Value: amount},
	}
}

func testView() *aggregate.View {
	return aggregate.NewView(aggregate.Spec{Name: "by_platform", GroupBy: []string{"platform"}, Measures: []aggregate.MeasureSpec{
		{Name: "amount", Func: "sum", Attr: "amount"}, {Name: "n", Func: "count"},
	}})
}

// rec is one stream record of a test: shard, event, images.
type rec struct {
	shard    string
	event    streamtally.Event
	old, new streamtally.Image
}

func ins(shard string, n streamtally.Image) rec    { return rec{shard, streamtally.Insert, nil, n} }
func mod(shard string, o, n streamtally.Image) rec { return rec{shard, streamtally.Modify, o, n} }
func del(shard string, o streamtally.Image) rec    { return rec{shard, streamtally.Remove, o, nil} }
func keysOf(i streamtally.Image) streamtally.Image { return streamtally.Image{"id": i["id"]} }
func render(groups map[string]*aggregate.Counters) string {
	var b strings.Builder
	for _, g := range slices.Sorted(maps.Keys(groups)) {
		gd := groups[g]
		if gd.Count == 0 && gd.Sums[0].IsZero() {
			continue
		}
		fmt.Fprintf(&b, "%s=%d/%s ", g, gd.Count, gd.Sums[0])
	}
	return strings.TrimSpace(b.String())
}

// The state at the cut: an item with records after the cut was the old
// image of its first one (nothing for an INSERT); any other item is what
// the scan read. Whatever the scan read of a changed item (before or after
// each change) must not matter, and the state at the cut plus every record
// after it must equal the table now.
func TestStateAtCutTakesTheFirstRecordsOldImageOverTheScan(t *testing.T) {
	cases := []struct {
		name    string
		scan    []streamtally.Image // what the scan read
		records []rec               // after the cut, in order per shard; shard "a" is the parent of "b"
		cut     string              // the view at the cut
		now     string              // the view now
	}{
		{name: "untouched",
			scan: []streamtally.Image{img("1", "Web", "5")},
			cut:  "Web=1/5", now: "Web=1/5"},
		{name: "modified before the scan read it",
			scan:    []streamtally.Image{img("1", "Phone", "7")},
			records: []rec{mod("a", img("1", "Web", "5"), img("1", "Phone", "7"))},
			cut:     "Web=1/5", now: "Phone=1/7"},
		{name: "modified after the scan read it",
			scan:    []streamtally.Image{img("1", "Web", "5")},
			records: []rec{mod("a", img("1", "Web", "5"), img("1", "Phone", "7"))},
			cut:     "Web=1/5", now: "Phone=1/7"},
		{name: "amount changed twice, the scan between",
			scan:    []streamtally.Image{img("1", "Web", "6")},
			records: []rec{mod("a", img("1", "Web", "5"), img("1", "Web", "6")), mod("a", img("1", "Web", "6"), img("1", "Web", "9.25"))},
			cut:     "Web=1/5", now: "Web=1/9.25"},
		{name: "inserted before the scan read it",
			scan:    []streamtally.Image{img("1", "Web", "3")},
			records: []rec{ins("a", img("1", "Web", "3"))},
			cut:     "", now: "Web=1/3"},
		{name: "inserted after the scan passed",
			records: []rec{ins("a", img("1", "Web", "3"))},
			cut:     "", now: "Web=1/3"},
		{name: "deleted before the scan",
			records: []rec{del("a", img("1", "Mail", "2"))},
			cut:     "Mail=1/2", now: ""},
		{name: "deleted after the scan read it",
			scan:    []streamtally.Image{img("1", "Mail", "2")},
			records: []rec{del("a", img("1", "Mail", "2"))},
			cut:     "Mail=1/2", now: ""},
		{name: "deleted and inserted again, the scan between",
			records: []rec{del("a", img("1", "Mail", "2")), ins("a", img("1", "Web", "4"))},
			cut:     "Mail=1/2", now: "Web=1/4"},
		{name: "moved between groups twice",
			scan:    []streamtally.Image{img("1", "Phone", "5")},
			records: []rec{mod("a", img("1", "Web", "5"), img("1", "Phone", "5")), mod("a", img("1", "Phone", "5"), img("1", "Mail", "5"))},
			cut:     "Web=1/5", now: "Mail=1/5"},
		{name: "moved in the parent shard, then in the child",
			scan:    []streamtally.Image{img("1", "Mail", "5")},
			records: []rec{mod("b", img("1", "Phone", "5"), img("1", "Mail", "5")), mod("a", img("1", "Web", "5"), img("1", "Phone", "5"))},
			cut:     "Web=1/5", now: "Mail=1/5"},
		{name: "several items, one changed",
			scan:    []streamtally.Image{img("1", "Web", "1"), img("2", "Web", "2"), img("3", "Phone", "0.5")},
			records: []rec{mod("a", img("2", "Web", "2"), img("2", "Phone", "2"))},
			cut:     "Phone=1/0.5 Web=2/3", now: "Phone=2/2.5 Web=1/1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := testView()
			sc := newScanned([]*aggregate.View{v})
			for _, i := range c.scan {
				k, ok := itemKey(testKeys, i)
				if !ok {
					t.Fatal("no key")
				}
				sc.add(k, i)
			}
			tl := &tail{shards: map[string]*tailShard{
				"a": {id: "a"},
				"b": {id: "b", parent: "a"},
			}}
			seq := 0
			for _, r := range c.records {
				seq++
				s := tl.shards[r.shard]
				k := r.old
				if k == nil {
					k = r.new
				}
				s.recs = append(s.recs, streamtally.Record{Shard: r.shard, SequenceNumber: streamtally.Seq(fmt.Sprint(seq)), Event: r.event, Keys: keysOf(k), Old: r.old, New: r.new})
			}
			first, err := tl.first(testKeys)
			if err != nil {
				t.Fatal(err)
			}
			cut := sc.atCut(first)[0]
			if got := render(cut); got != c.cut {
				t.Errorf("at the cut: %q, want %q", got, c.cut)
			}
			now := map[string]*aggregate.Counters{}
			changed := map[string]bool{}
			merge(now, v, cut, changed)
			for _, id := range []string{"a", "b"} {
				merge(now, v, v.Fold(id, "", tl.shards[id].recs, nil).Groups, changed)
			}
			if got := render(now); got != c.now {
				t.Errorf("cut plus the records: %q, want the table now, %q", got, c.now)
			}
		})
	}
}

func TestItemKeyIsTheSameForEqualKeysAndDistinctOtherwise(t *testing.T) {
	names := []string{"pk", "sk"}
	k := func(pk, sk streamtally.Value) string {
		s, ok := itemKey(names, streamtally.Image{"pk": pk, "sk": sk, "other": &streamtally.S{Value: "x"}})
		if !ok {
			t.Fatal("no key")
		}
		return s
	}
	S := func(s string) streamtally.Value { return &streamtally.S{Value: s} }
	N := func(s string) streamtally.Value { return &streamtally.N{Value: s} }
	if k(S("a"), N("10.50")) != k(S("a"), N("10.5")) {
		t.Error("equal numbers give different keys")
	}
	for _, pair := range [][2]string{
		{k(S("a"), S("bc")), k(S("ab"), S("c"))},
		{k(S("a"), S("1")), k(S("a"), N("1"))},
	} {
		if pair[0] == pair[1] {
			t.Errorf("distinct keys collide: %q", pair[0])
		}
	}
	if _, ok := itemKey(names, streamtally.Image{"pk": S("a")}); ok {
		t.Error("a missing key attribute gave a key")
	}
}
