package aggregate

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/streamtally/streamtally"
)

// --- helpers shared by the package's tests ---

func attrS(v string) streamtally.Value { return &streamtally.S{Value: v} }
func attrN(v string) streamtally.Value { return &streamtally.N{Value: v} }
func attrM(m streamtally.Image) streamtally.Value {
	return &streamtally.M{Value: m}
}

// item is a donation image: platform and amount; "" leaves an attribute out.
func item(email, platform, amount string) streamtally.Image {
	img := streamtally.Image{"email": attrS(email)}
	if platform != "" {
		img["platform"] = attrS(platform)
	}
	if amount != "" {
		img["amount"] = attrN(amount)
	}
	return img
}

func insert(img streamtally.Image) streamtally.Record {
	return streamtally.Record{Event: streamtally.Insert, New: img, Keys: keysOf(img)}
}

func modify(old, new streamtally.Image) streamtally.Record {
	return streamtally.Record{Event: streamtally.Modify, Old: old, New: new, Keys: keysOf(new)}
}

func remove(old streamtally.Image) streamtally.Record {
	return streamtally.Record{Event: streamtally.Remove, Old: old, Keys: keysOf(old)}
}

// malformed marks r as DecodeRecords marks a record it could not decode
// whole.
func malformed(r streamtally.Record) streamtally.Record {
	r.Malformed = &streamtally.Malformed{Err: errors.New("NewImage.amount: unknown attribute type"), Raw: []byte(`{}`)}
	return r
}

func keysOf(img streamtally.Image) streamtally.Image {
	if e, ok := img["email"]; ok {
		return streamtally.Image{"email": e}
	}
	return nil
}

// numbered gives records the sequence numbers first, first+1, ... on shard.
func numbered(shard string, first int, recs ...streamtally.Record) []streamtally.Record {
	out := slices.Clone(recs)
	for i := range out {
		out[i].Shard = shard
		out[i].SequenceNumber = streamtally.Seq(strconv.Itoa(first + i))
	}
	return out
}

// newView compiles a view; measures are "name=count" or "name=sum(attr)".
func newView(name string, groupBy []string, measures ...string) *View {
	c := Spec{Name: name, GroupBy: groupBy}
	for _, m := range measures {
		n, fn, _ := strings.Cut(m, "=")
		if attr, ok := strings.CutPrefix(fn, "sum("); ok {
			c.Measures = append(c.Measures, MeasureSpec{Name: n, Func: Sum, Attr: strings.TrimSuffix(attr, ")")})
		} else {
			c.Measures = append(c.Measures, MeasureSpec{Name: n, Func: Count})
		}
	}
	slices.SortFunc(c.Measures, func(a, b MeasureSpec) int { return strings.Compare(a.Name, b.Name) })
	return NewView(c)
}

// want is the expected state of one group: count and sums by measure name.
type want struct {
	count int64
	sums  map[string]string
}

// checkGroups compares groups with w exactly: same group keys, counts and
// canonical sums.
func checkGroups(t *testing.T, v *View, got map[string]*Counters, w map[string]want) {
	t.Helper()
	if gk, wk := slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(w)); !slices.Equal(gk, wk) {
		t.Errorf("groups = %q, want %q", gk, wk)
	}
	for k, wg := range w {
		g := got[k]
		if g == nil {
			continue
		}
		if g.Count != wg.count {
			t.Errorf("group %q count = %d, want %d", k, g.Count, wg.count)
		}
		if len(g.Sums) != v.SumCount() {
			t.Errorf("group %q has %d sums, want %d", k, len(g.Sums), v.SumCount())
			continue
		}
		for i, m := range v.Measures {
			si := v.SumIndex(i)
			if si < 0 {
				continue
			}
			ws, ok := wg.sums[m.Name]
			if !ok {
				ws = "0"
			}
			if gs := g.Sums[si].String(); gs != ws {
				t.Errorf("group %q %s = %s, want %s", k, m.Name, gs, ws)
			}
		}
	}
}

// --- Fold ---

func TestFoldEventSemantics(t *testing.T) {
	byPlatform := newView("by_platform", []string{"platform"}, "n=count", "amount=sum(amount)")
	phone5, web5, phone7 := item("a", "Phone", "5"), item("a", "Web", "5"), item("a", "Phone", "7.5")
	cases := []struct {
		name    string
		recs    []streamtally.Record
		want    map[string]want
		rejects []string
	}{
		{
			name: "insert adds one item and its amount",
			recs: []streamtally.Record{insert(item("a", "Phone", "10.50"))},
			want: map[string]want{"Phone": {1, map[string]string{"amount": "10.5"}}},
		},
		{
			name: "remove subtracts the old image",
			recs: []streamtally.Record{remove(phone5)},
			want: map[string]want{"Phone": {-1, map[string]string{"amount": "-5"}}},
		},
		{
			name: "modify moving platform moves count and amount",
			recs: []streamtally.Record{modify(phone5, web5)},
			want: map[string]want{
				"Phone": {-1, map[string]string{"amount": "-5"}},
				"Web":   {1, map[string]string{"amount": "5"}},
			},
		},
		{
			name: "modify changing only the amount changes only the sum",
			recs: []streamtally.Record{modify(phone5, phone7)},
			want: map[string]want{"Phone": {0, map[string]string{"amount": "2.5"}}},
		},
		{
			name: "modify from a bad old image adds only the new",
			recs: []streamtally.Record{modify(item("a", "", "5"), web5)},
			want: map[string]want{"Web": {1, map[string]string{"amount": "5"}}},
		},
		{
			name:    "modify to a bad new image subtracts the old and rejects once",
			recs:    []streamtally.Record{modify(phone5, item("a", "", "5"))},
			want:    map[string]want{"Phone": {-1, map[string]string{"amount": "-5"}}},
			rejects: []string{"missing_group_by"},
		},
		{
			name:    "modify leaving a bad image bad changes nothing and rejects the new",
			recs:    []streamtally.Record{modify(item("a", "", "5"), item("a", "", "6"))},
			want:    map[string]want{},
			rejects: []string{"missing_group_by"},
		},
		{
			name: "remove of a bad image subtracts nothing and rejects nothing",
			recs: []streamtally.Record{remove(item("a", "Phone", ""))},
			want: map[string]want{},
		},
		{
			name:    "insert whose new image could not be decoded is set aside",
			recs:    []streamtally.Record{malformed(insert(nil))},
			want:    map[string]want{},
			rejects: []string{"bad_record"},
		},
		{
			name:    "modify to an undecodable new image subtracts the old and sets the record aside",
			recs:    []streamtally.Record{malformed(modify(phone5, nil))},
			want:    map[string]want{"Phone": {-1, map[string]string{"amount": "-5"}}},
			rejects: []string{"bad_record"},
		},
		{
			name: "remove of an undecodable old image subtracts nothing and rejects nothing",
			recs: []streamtally.Record{malformed(remove(nil))},
			want: map[string]want{},
		},
		{
			name:    "insert without a new image is set aside",
			recs:    []streamtally.Record{insert(nil)},
			want:    map[string]want{},
			rejects: []string{"bad_record"},
		},
		{
			name:    "modify without an old image adds the new and is set aside",
			recs:    []streamtally.Record{modify(nil, web5)},
			want:    map[string]want{"Web": {1, map[string]string{"amount": "5"}}},
			rejects: []string{"bad_record"},
		},
		{
			name:    "remove without an old image is set aside",
			recs:    []streamtally.Record{remove(nil)},
			want:    map[string]want{},
			rejects: []string{"bad_record"},
		},
		{
			name:    "modify to a bad new image without an old image is set aside once",
			recs:    []streamtally.Record{modify(nil, item("a", "Web", "x"))},
			want:    map[string]want{},
			rejects: []string{"bad_number"},
		},
		{
			name:    "an unknown event contributes nothing and is set aside",
			recs:    []streamtally.Record{{Event: 0, Old: phone5, New: web5}},
			want:    map[string]want{},
			rejects: []string{"bad_record"},
		},
		{
			name: "insert then delete in one batch leaves no group",
			recs: []streamtally.Record{insert(phone5), modify(phone5, web5), remove(web5)},
			want: map[string]want{},
		},
		{
			name: "moves that come back leave no group",
			recs: []streamtally.Record{modify(phone5, web5), modify(web5, phone5)},
			want: map[string]want{},
		},
		{
			name: "several items aggregate per group",
			recs: []streamtally.Record{
				insert(item("a", "Phone", "0.10")),
				insert(item("b", "Phone", "0.20")),
				insert(item("c", "Web", "1E+2")),
				insert(item("d", "Phone", "-0.30")),
			},
			want: map[string]want{
				"Phone": {3, map[string]string{"amount": "0"}}, // kept: count moved
				"Web":   {1, map[string]string{"amount": "100"}},
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var rejects []string
			d := byPlatform.Fold("s1", "", numbered("s1", 1, c.recs...), func(r Rejection) {
				if r.View != "by_platform" || r.Record == nil {
					t.Errorf("rejection %+v lacks its view or record", r)
				}
				rejects = append(rejects, r.Reason.Kind)
			})
			checkGroups(t, byPlatform, d.Groups, c.want)
			if d.Empty() != (len(c.want) == 0) {
				t.Errorf("Empty() = %v with groups %v", d.Empty(), slices.Collect(maps.Keys(d.Groups)))
			}
			if !slices.Equal(rejects, c.rejects) {
				t.Errorf("rejections = %q, want %q", rejects, c.rejects)
			}
			if d.Records != len(c.recs) || d.Through != streamtally.Seq(strconv.Itoa(len(c.recs))) || d.Shard != "s1" || d.View != byPlatform {
				t.Errorf("delta bookkeeping: records %d through %q shard %q", d.Records, d.Through, d.Shard)
			}
		})
	}
}

func TestFoldWithSeveralSumMeasures(t *testing.T) {
	// Measure names sort opposite to their attributes, so a mix-up between
	// measure order and sum slots shows.
	v := newView("v", []string{"platform"}, "a_fee=sum(fee)", "b_amount=sum(amount)", "c_n=count")
	img := func(p, amount, fee string) streamtally.Image {
		m := item("x", p, amount)
		m["fee"] = attrN(fee)
		return m
	}
	var rejects []string
	d := v.Fold("s", "", numbered("s", 1,
		insert(img("Web", "10", "0.25")),
		insert(img("Web", "20.5", "0.5")),
		modify(img("Web", "20.5", "0.5"), img("Phone", "3", "0.01")),
		insert(item("y", "Web", "1")), // no fee: missing_sum
	), func(r Rejection) { rejects = append(rejects, r.Reason.Kind) })
	checkGroups(t, v, d.Groups, map[string]want{
		"Web":   {1, map[string]string{"a_fee": "0.25", "b_amount": "10"}},
		"Phone": {1, map[string]string{"a_fee": "0.01", "b_amount": "3"}},
	})
	if !slices.Equal(rejects, []string{"missing_sum"}) {
		t.Errorf("rejections = %q, want [missing_sum]", rejects)
	}
}

func TestFoldSkipsRecordsAtOrBeforeTheFence(t *testing.T) {
	v := newView("v", []string{"platform"}, "n=count")
	// Sequence numbers 8..11 straddle a change of width: as strings "9" > "10".
	recs := numbered("s", 8,
		insert(item("a", "P8", "")),
		insert(item("b", "P9", "")),
		insert(item("c", "P10", "")),
		insert(item("d", "P11", "")),
	)

	cases := []struct {
		after   streamtally.Seq
		groups  []string
		records int
		through streamtally.Seq
	}{
		{after: "", groups: []string{"P10", "P11", "P8", "P9"}, records: 4, through: "11"},
		{after: "7", groups: []string{"P10", "P11", "P8", "P9"}, records: 4, through: "11"},
		{after: "8", groups: []string{"P10", "P11", "P9"}, records: 3, through: "11"},
		{after: "9", groups: []string{"P10", "P11"}, records: 2, through: "11"},
		{after: "10", groups: []string{"P11"}, records: 1, through: "11"},
		{after: "11", groups: nil, records: 0, through: "11"},
		{after: "100", groups: nil, records: 0, through: "100"},
		{after: "0009", groups: []string{"P10", "P11"}, records: 2, through: "11"},
	}
	for _, c := range cases {
		t.Run("after="+string(c.after), func(t *testing.T) {
			d := v.Fold("s", c.after, recs, nil)
			if got := slices.Sorted(maps.Keys(d.Groups)); !slices.Equal(got, c.groups) {
				t.Errorf("groups = %q, want %q", got, c.groups)
			}
			if d.Records != c.records {
				t.Errorf("Records = %d, want %d", d.Records, c.records)
			}
			if d.Through != c.through {
				t.Errorf("Through = %q, want %q", d.Through, c.through)
			}
			if d.After != c.after {
				t.Errorf("After = %q, want %q", d.After, c.after)
			}
		})
	}
}

func TestFoldDoesNotReportRejectionsBeforeTheFence(t *testing.T) {
	v := newView("v", []string{"platform"}, "n=count")
	recs := numbered("s", 1, insert(item("a", "", "")), insert(item("b", "", "")), insert(item("c", "", "")))
	var seqs []streamtally.Seq
	v.Fold("s", "2", recs, func(r Rejection) { seqs = append(seqs, r.Record.SequenceNumber) })
	if !slices.Equal(seqs, []streamtally.Seq{"3"}) {
		t.Errorf("rejected seqs = %q, want only [3]", seqs)
	}
}

// --- Totals against a random history ---

// TestTotalsEqualsFoldOfRandomHistory is the invariant the whole design
// rests on: summing the deltas of every change equals a full scan of the
// table as it ends up, whatever the batch boundaries and replays.
func TestTotalsEqualsFoldOfRandomHistory(t *testing.T) {
	views := []*View{
		newView("by_platform", []string{"platform"}, "n=count", "amount=sum(amount)"),
		newView("by_platform_region", []string{"platform", "meta.region"}, "amount=sum(amount)", "fee=sum(fee)"),
		newView("count_only", []string{"platform"}, "n=count"),
	}
	for seed := uint64(1); seed <= 12; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, seed*7919))
			recs, table := randomHistory(r, 400)
			items := slices.Collect(maps.Values(table))
			for _, v := range views {
				got := foldInRandomBatches(r, v, recs)
				checkSameGroups(t, v, got, v.Totals(items))
			}
		})
	}
}

func randomAmount(r *rand.Rand) string {
	switch r.IntN(6) {
	case 0: // beyond int64: the big path
		var b strings.Builder
		b.WriteByte(byte('1' + r.IntN(9)))
		for i := 0; i < 30; i++ {
			b.WriteByte(byte('0' + r.IntN(10)))
		}
		return b.String() + ".01"
	case 1:
		return fmt.Sprintf("%dE-%d", r.IntN(100000), r.IntN(6))
	case 2:
		return fmt.Sprintf("-%d.%02d", r.IntN(50), r.IntN(100))
	}
	return fmt.Sprintf("%d.%02d", r.IntN(1000), r.IntN(100))
}

func randomImage(r *rand.Rand, key string) streamtally.Image {
	platforms := []string{"Phone", "Web", "Kiosk", "a|b", `c\d`}
	img := streamtally.Image{"email": attrS(key)}
	if r.IntN(12) > 0 { // sometimes no platform: rejected
		img["platform"] = attrS(platforms[r.IntN(len(platforms))])
	}
	switch r.IntN(15) {
	case 0: // a string amount: rejected
		img["amount"] = attrS("12")
	case 1: // no amount
	default:
		img["amount"] = attrN(randomAmount(r))
	}
	if r.IntN(4) > 0 {
		img["fee"] = attrN(fmt.Sprintf("0.%03d", r.IntN(1000)))
	}
	if r.IntN(5) > 0 {
		img["meta"] = attrM(streamtally.Image{"region": attrS([]string{"eu", "us"}[r.IntN(2)])})
	}
	return img
}

// randomHistory returns n changes over a small key space and the table
// they leave behind.
func randomHistory(r *rand.Rand, n int) ([]streamtally.Record, map[string]streamtally.Image) {
	table := map[string]streamtally.Image{}
	var recs []streamtally.Record
	for i := 0; i < n; i++ {
		key := fmt.Sprintf("user%d", r.IntN(8))
		old, exists := table[key]
		var rec streamtally.Record
		switch {
		case !exists:
			img := randomImage(r, key)
			table[key] = img
			rec = insert(img)
		case r.IntN(5) == 0:
			delete(table, key)
			rec = remove(old)
		default:
			img := maps.Clone(old)
			switch r.IntN(4) {
			case 0: // move
				img["platform"] = attrS([]string{"Phone", "Web", "Kiosk"}[r.IntN(3)])
			case 1: // amount only
				img["amount"] = attrN(randomAmount(r))
			default: // anything
				img = randomImage(r, key)
			}
			table[key] = img
			rec = modify(old, img)
		}
		recs = append(recs, rec)
	}
	return numbered("shard-1", 1, recs...), table
}

// foldInRandomBatches folds recs in random batch sizes, sometimes
// re-reading records already folded (as a replay after a crash would), and
// sums the deltas.
func foldInRandomBatches(r *rand.Rand, v *View, recs []streamtally.Record) map[string]*Counters {
	total := map[string]*Counters{}
	fence, next := streamtally.Seq(""), 0
	for next < len(recs) {
		start := next
		if start > 0 && r.IntN(4) == 0 {
			start = max(0, start-1-r.IntN(5)) // replay some
		}
		end := min(len(recs), next+1+r.IntN(40))
		d := v.Fold("shard-1", fence, recs[start:end], nil)
		if d.Records != end-next {
			panic(fmt.Sprintf("folded %d records of %d new", d.Records, end-next))
		}
		for k, g := range d.Groups {
			acc := total[k]
			if acc == nil {
				acc = &Counters{Sums: make([]Decimal, v.SumCount())}
				total[k] = acc
			}
			acc.Count += g.Count
			for i := range g.Sums {
				acc.Sums[i] = acc.Sums[i].Add(g.Sums[i])
			}
		}
		fence, next = d.Through, end
	}
	for k, g := range total {
		if g.isZero() {
			delete(total, k)
		}
	}
	return total
}

func checkSameGroups(t *testing.T, v *View, got, want map[string]*Counters) {
	t.Helper()
	if gk, wk := slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)); !slices.Equal(gk, wk) {
		t.Fatalf("view %s: folded groups %q, full scan %q", v.Name, gk, wk)
	}
	for k, w := range want {
		g := got[k]
		if g.Count != w.Count {
			t.Errorf("view %s group %q: folded count %d, full scan %d", v.Name, k, g.Count, w.Count)
		}
		for i := range w.Sums {
			if g.Sums[i].Cmp(w.Sums[i]) != 0 || g.Sums[i].String() != w.Sums[i].String() {
				t.Errorf("view %s group %q sum %d: folded %s, full scan %s", v.Name, k, i, g.Sums[i], w.Sums[i])
			}
		}
	}
}
