package aggregate

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/streamtally/streamtally"
)

func opS(s string) Operand { return Operand{Type: "S", Text: s} }
func opN(s string) Operand { return Operand{Type: "N", Text: s} }
func opB(b bool) Operand   { return Operand{Type: "BOOL", Text: fmt.Sprint(b)} }

func cond(attr, op string, ops ...Operand) Condition {
	return Condition{Attr: attr, Op: op, Operands: ops}
}

func TestFilterSemantics(t *testing.T) {
	img := streamtally.Image{
		"status": attrS("paid"),
		"amount": attrN("10.50"),
		"vip":    &streamtally.Bool{Value: true},
		"note":   &streamtally.Null{Value: true},
		"meta":   attrM(streamtally.Image{"country": attrS("DE")}),
		"huge":   attrN("1E+200"), // not a number DynamoDB stores
		"code":   attrS("10"),
		"émoji":  attrS("é"),
	}
	cases := []struct {
		name string
		c    Condition
		want bool
	}{
		{"string equal", cond("status", OpEq, opS("paid")), true},
		{"string not equal", cond("status", OpEq, opS("Paid")), false},
		{"number equal at another scale", cond("amount", OpEq, opN("10.5")), true},
		{"number equal with exponent", cond("amount", OpEq, opN("1.05E+1")), true},
		{"number is not its string", cond("amount", OpEq, opS("10.50")), false},
		{"string is not a number", cond("code", OpEq, opN("10")), false},
		{"bool equal", cond("vip", OpEq, opB(true)), true},
		{"bool not equal", cond("vip", OpEq, opB(false)), false},
		{"ne on another value", cond("status", OpNe, opS("refunded")), true},
		{"ne on the same value", cond("status", OpNe, opS("paid")), false},
		{"ne on another type holds", cond("amount", OpNe, opS("paid")), true},
		{"ne on a missing attribute fails", cond("gone", OpNe, opS("paid")), false},
		{"in hits", cond("status", OpIn, opS("new"), opS("paid")), true},
		{"in misses", cond("status", OpIn, opS("new"), opS("void")), false},
		{"in of mixed types", cond("amount", OpIn, opS("10.5"), opN("10.500")), true},
		{"exists true", cond("status", OpExists), false}, // Exists set below
		{"gt exact decimal", cond("amount", OpGt, opN("10.49999999999999999999999999")), true},
		{"gt equal fails", cond("amount", OpGt, opN("10.5")), false},
		{"gte equal holds", cond("amount", OpGte, opN("10.5")), true},
		{"lt", cond("amount", OpLt, opN("10.500000000000000000000000001")), true},
		{"lte", cond("amount", OpLte, opN("-3")), false},
		{"string order is bytewise", cond("status", OpLt, opS("paie")), true},
		{"string order is bytewise, upper before lower", cond("status", OpGt, opS("Zebra")), true},
		{"string order of multibyte", cond("émoji", OpGt, opS("z")), true},
		{"a number against a string bound fails", cond("amount", OpGt, opS("1")), false},
		{"a string against a number bound fails", cond("code", OpGt, opN("1")), false},
		{"missing fails gt", cond("gone", OpGt, opN("0")), false},
		{"missing fails eq", cond("gone", OpEq, opS("")), false},
		{"dotted path", cond("meta.country", OpEq, opS("DE")), true},
		{"dotted path through a non-map", cond("status.country", OpEq, opS("DE")), false},
		{"unstorable number compares with nothing", cond("huge", OpGt, opN("0")), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := compileFilter([]Condition{c.c})
			if got := matches(f, img); got != c.want {
				t.Errorf("%+v on the image = %v, want %v", c.c, got, c.want)
			}
		})
	}
	exists := []struct {
		attr      string
		exists    bool
		want      bool
		attribute string
	}{
		{"status", true, true, "present"},
		{"status", false, false, "present"},
		{"gone", false, true, "missing"},
		{"gone", true, false, "missing"},
		{"note", true, true, "NULL counts as present"},
		{"meta.country", true, true, "nested"},
		{"meta.city", false, true, "nested missing"},
	}
	for _, e := range exists {
		f := compileFilter([]Condition{{Attr: e.attr, Op: OpExists, Exists: e.exists}})
		if got := matches(f, img); got != e.want {
			t.Errorf("%s exists: %v (%s) = %v, want %v", e.attr, e.exists, e.attribute, got, e.want)
		}
	}
	all := compileFilter([]Condition{cond("status", OpEq, opS("paid")), cond("amount", OpGte, opN("11"))})
	if matches(all, img) {
		t.Error("conditions are not all required")
	}
}

func TestBucketArithmetic(t *testing.T) {
	cases := []struct {
		size string
		at   string
		want string
	}{
		{"1h", "2026-11-29T19:59:59.999Z", "2026-11-29T19:00:00Z"},
		{"1h", "2026-11-29T20:00:00Z", "2026-11-29T20:00:00Z"},
		{"1h", "2026-11-29T20:30:00+01:00", "2026-11-29T19:00:00Z"},
		{"1m", "2026-11-29T19:07:31Z", "2026-11-29T19:07:00Z"},
		{"15m", "2026-11-29T19:44:59Z", "2026-11-29T19:30:00Z"},
		{"1d", "2026-11-29T23:59:59Z", "2026-11-29T00:00:00Z"},
		{"1d", "2026-11-29T23:30:00-02:00", "2026-11-30T00:00:00Z"},
		{"7d", "1970-01-08T00:00:00Z", "1970-01-08T00:00:00Z"},
		{"1h", "1969-12-31T23:59:59.999Z", "1969-12-31T23:00:00Z"},
		{"1d", "1901-03-04T05:06:07Z", "1901-03-04T00:00:00Z"},
	}
	for _, c := range cases {
		size := testDuration(t, c.size)
		v := bucketView(t, size, time.Hour, "t", nil)
		at, err := time.Parse(time.RFC3339Nano, c.at)
		if err != nil {
			t.Fatal(err)
		}
		if got := BucketName(v.BucketOf(at)); got != c.want {
			t.Errorf("size %s, time %s: bucket %s, want %s", c.size, c.at, got, c.want)
		}
	}
	v := bucketView(t, time.Hour, 48*time.Hour, "t", nil)
	start := v.BucketOf(time.Date(2026, 11, 29, 19, 0, 0, 0, time.UTC))
	if got, want := v.BucketExpiry(start), time.Date(2026, 12, 1, 20, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("expiry %s, want %s", got, want)
	}
	if v.expired(start, time.Date(2026, 12, 1, 19, 59, 59, 999e6, time.UTC).UnixMilli()) {
		t.Error("expired a millisecond before its end plus retention")
	}
	if !v.expired(start, time.Date(2026, 12, 1, 20, 0, 0, 0, time.UTC).UnixMilli()) {
		t.Error("not expired at its end plus retention")
	}
}

func TestParseTime(t *testing.T) {
	ok := []struct {
		av   streamtally.Value
		want string
	}{
		{attrS("2026-11-29T19:07:31Z"), "2026-11-29T19:07:31Z"},
		{attrS("2026-11-29T19:07:31.25+02:00"), "2026-11-29T17:07:31.25Z"},
		{attrS("2019-08-07T07:26:56"), "2019-08-07T07:26:56Z"},
		{attrS("2019-08-07T07:26:56.123456"), "2019-08-07T07:26:56.123Z"},
		{attrS("2019-08-07T07:26"), "2019-08-07T07:26:00Z"},
		{attrS("2019-08-07"), "2019-08-07T00:00:00Z"},
		{attrN("1795300229"), "2026-11-21T22:30:29Z"},
		{attrN("1795300229.5"), "2026-11-21T22:30:29.5Z"},
		{attrN("1795300229634"), "2026-11-21T22:30:29.634Z"},
		{attrN("1.795300229634E+12"), "2026-11-21T22:30:29.634Z"},
		{attrN("99999999999"), "5138-11-16T09:46:39Z"},
		{attrN("100000000000"), "1973-03-03T09:46:40Z"},
		{attrN("-1.5"), "1969-12-31T23:59:58.5Z"},
		{attrN("0"), "1970-01-01T00:00:00Z"},
	}
	for _, c := range ok {
		ms, err := parseTime(c.av)
		if err != nil {
			t.Errorf("parseTime(%v): %v", c.av, err)
			continue
		}
		if got := time.UnixMilli(ms).UTC().Format(time.RFC3339Nano); got != c.want {
			t.Errorf("parseTime(%v) = %s, want %s", c.av, got, c.want)
		}
	}
	bad := []streamtally.Value{
		attrS("yesterday"), attrS("2026-13-01T00:00:00Z"), attrS("29/11/2026"), attrS(""),
		attrN("1E+120"), attrN("-1E+20"), attrN("12a"),
		&streamtally.Bool{Value: true}, attrM(streamtally.Image{}),
	}
	for _, av := range bad {
		if ms, err := parseTime(av); err == nil {
			t.Errorf("parseTime(%v) = %d, want an error", av, ms)
		}
	}
}

// bucketView is a view by platform with a count and sum(amount), bucketed
// by timeAttr (or stream time) and filtered by where; its clock stands at
// 2026-11-29T20:00Z.
func bucketView(t testing.TB, size, retention time.Duration, timeAttr string, where []Condition) *View {
	t.Helper()
	v := NewView(Spec{
		Name: "per_bucket", GroupBy: []string{"platform"},
		Measures: []MeasureSpec{{Name: "amount", Func: Sum, Attr: "amount"}, {Name: "n", Func: Count}},
		Bucket:   &BucketSpec{Size: size, Retention: retention, Time: timeAttr},
		Filter:   where,
	})
	v.SetClock(func() time.Time { return testNow })
	return v
}

var testNow = time.Date(2026, 11, 29, 20, 0, 0, 0, time.UTC)

// at is an image with a time attribute and a status.
func at(email, platform, amount, when, status string) streamtally.Image {
	img := item(email, platform, amount)
	if when != "" {
		img["t"] = attrS(when)
	}
	if status != "" {
		img["status"] = attrS(status)
	}
	return img
}

type bucketWant map[string]map[string]want // bucket name -> group -> want

func checkBuckets(t *testing.T, v *View, got map[int64]map[string]*Counters, w bucketWant) {
	t.Helper()
	names := map[string]map[string]*Counters{}
	for b, gs := range got {
		names[BucketName(b)] = gs
	}
	if gk, wk := slices.Sorted(maps.Keys(names)), slices.Sorted(maps.Keys(w)); !slices.Equal(gk, wk) {
		t.Fatalf("buckets = %q, want %q", gk, wk)
	}
	for b, wg := range w {
		t.Run(b, func(t *testing.T) { checkGroups(t, v, names[b], wg) })
	}
}

func TestFoldBucketsByItemTime(t *testing.T) {
	paid := []Condition{cond("status", OpEq, opS("paid"))}
	a0 := at("a", "Web", "10", "2026-11-29T19:10:00Z", "paid")
	a1 := at("a", "Web", "12.5", "2026-11-29T17:59:59Z", "paid") // time moved two buckets back
	late := at("b", "Phone", "3", "2026-11-28T01:00:00Z", "paid")
	unpaid := at("c", "Web", "7", "2026-11-29T19:20:00Z", "pending")
	nowPaid := at("c", "Web", "7", "2026-11-29T19:20:00Z", "paid")
	ancient := at("d", "Web", "5", "2026-11-26T18:59:59Z", "paid") // ended 3 days ago, retention 72h
	cases := []struct {
		name     string
		recs     []streamtally.Record
		want     bucketWant
		rejected []string
	}{
		{"insert lands in its own bucket", []streamtally.Record{insert(a0)},
			bucketWant{"2026-11-29T19:00:00Z": {"Web": {1, map[string]string{"amount": "10"}}}}, nil},
		{"a late item lands in its old bucket", []streamtally.Record{insert(a0), insert(late)}, bucketWant{
			"2026-11-29T19:00:00Z": {"Web": {1, map[string]string{"amount": "10"}}},
			"2026-11-28T01:00:00Z": {"Phone": {1, map[string]string{"amount": "3"}}},
		}, nil},
		{"a time change moves the item between buckets", []streamtally.Record{modify(a0, a1)}, bucketWant{
			"2026-11-29T19:00:00Z": {"Web": {-1, map[string]string{"amount": "-10"}}},
			"2026-11-29T17:00:00Z": {"Web": {1, map[string]string{"amount": "12.5"}}},
		}, nil},
		{"insert then move nets out of the first bucket", []streamtally.Record{insert(a0), modify(a0, a1)}, bucketWant{
			"2026-11-29T17:00:00Z": {"Web": {1, map[string]string{"amount": "12.5"}}},
		}, nil},
		{"remove subtracts from the item's bucket", []streamtally.Record{remove(a1)}, bucketWant{
			"2026-11-29T17:00:00Z": {"Web": {-1, map[string]string{"amount": "-12.5"}}},
		}, nil},
		{"an item outside the filter counts nowhere and is not reported", []streamtally.Record{insert(unpaid)}, bucketWant{}, nil},
		{"a modify into the filter adds", []streamtally.Record{modify(unpaid, nowPaid)}, bucketWant{
			"2026-11-29T19:00:00Z": {"Web": {1, map[string]string{"amount": "7"}}},
		}, nil},
		{"a modify out of the filter subtracts", []streamtally.Record{modify(nowPaid, unpaid)}, bucketWant{
			"2026-11-29T19:00:00Z": {"Web": {-1, map[string]string{"amount": "-7"}}},
		}, nil},
		{"a bucket past its retention is left alone", []streamtally.Record{insert(ancient), modify(ancient, at("d", "Web", "6", "2026-11-26T18:00:00Z", "paid"))}, bucketWant{}, nil},
		{"moving out of an expired bucket adds to the live one only", []streamtally.Record{modify(ancient, at("d", "Web", "5", "2026-11-29T19:00:00Z", "paid"))}, bucketWant{
			"2026-11-29T19:00:00Z": {"Web": {1, map[string]string{"amount": "5"}}},
		}, nil},
		{"a missing time is outside the view", []streamtally.Record{insert(at("e", "Web", "1", "", "paid"))}, bucketWant{}, []string{MissingTime}},
		{"a bad time is a dead letter", []streamtally.Record{insert(at("e", "Web", "1", "soon", "paid"))}, bucketWant{}, []string{BadTime}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := bucketView(t, time.Hour, 72*time.Hour, "t", paid)
			var rejected []string
			d := v.Fold("s", "", numbered("s", 1, c.recs...), func(r Rejection) { rejected = append(rejected, r.Reason.Kind) })
			if len(d.Groups) != 0 {
				t.Errorf("a bucketed view's delta has Groups %v", d.Groups)
			}
			checkBuckets(t, v, d.Buckets, c.want)
			if !slices.Equal(rejected, c.rejected) {
				t.Errorf("rejections %q, want %q", rejected, c.rejected)
			}
			if d.Empty() != (len(c.want) == 0) {
				t.Errorf("Empty() = %v with %d buckets", d.Empty(), len(d.Buckets))
			}
		})
	}
	if IsDeadLetter(MissingTime) || IsDeadLetter(Filtered) || !IsDeadLetter(BadTime) {
		t.Error("missing_time and filtered must be outside the view, bad_time a dead letter")
	}
}

func TestFoldFilterWithoutBuckets(t *testing.T) {
	v := NewView(Spec{
		Name: "paid", GroupBy: []string{"platform"},
		Measures: []MeasureSpec{{Name: "n", Func: Count}},
		Filter:   []Condition{cond("status", OpIn, opS("paid"), opS("settled")), {Attr: "refund", Op: OpExists}},
	})
	in := at("a", "Web", "1", "", "paid")
	out := at("a", "Web", "1", "", "open")
	refunded := maps.Clone(in)
	refunded["refund"] = attrN("1")
	var rejected []Rejection
	d := v.Fold("s", "", numbered("s", 1, insert(out), modify(out, in), insert(at("b", "Kiosk", "", "", "settled")), modify(in, refunded)),
		func(r Rejection) { rejected = append(rejected, r) })
	checkGroups(t, v, d.Groups, map[string]want{"Kiosk": {count: 1}})
	if len(rejected) > 0 || d.Buckets != nil {
		t.Errorf("rejections %+v, buckets %v", rejected, d.Buckets)
	}
}

func TestFoldStreamTime(t *testing.T) {
	v := bucketView(t, time.Hour, 72*time.Hour, StreamTime, nil)
	if v.Recomputable() || !v.StreamTimed() {
		t.Fatal("a stream-time view claims a scan can recompute it")
	}
	if bucketView(t, time.Hour, time.Hour, "t", nil).StreamTimed() {
		t.Fatal("an attribute-time view claims stream time")
	}
	a0, a1 := item("a", "Web", "10"), item("a", "Phone", "4")
	recs := numbered("s", 1, insert(a0), modify(a0, a1), remove(a1), insert(a0))
	recs[0].Created = time.Date(2026, 11, 29, 17, 5, 0, 0, time.UTC)
	recs[1].Created = time.Date(2026, 11, 29, 18, 5, 0, 0, time.UTC)
	recs[2].Created = time.Date(2026, 11, 29, 19, 5, 0, 0, time.UTC)
	var rejected []string
	d := v.Fold("s", "", recs, func(r Rejection) { rejected = append(rejected, r.Reason.Kind) })
	checkBuckets(t, v, d.Buckets, bucketWant{
		"2026-11-29T17:00:00Z": {"Web": {1, map[string]string{"amount": "10"}}},
		"2026-11-29T18:00:00Z": {"Web": {-1, map[string]string{"amount": "-10"}}, "Phone": {1, map[string]string{"amount": "4"}}},
		"2026-11-29T19:00:00Z": {"Phone": {-1, map[string]string{"amount": "-4"}}},
	})
	if !slices.Equal(rejected, []string{BadTime}) {
		t.Errorf("a record without a creation time: rejections %q, want bad_time", rejected)
	}
}

// TestBucketTotalsEqualsFoldOfRandomHistory is the exactness invariant for
// bucketed and filtered views: times that go back and forth, items that
// move in and out of the filter, whatever the batches and replays.
func TestBucketTotalsEqualsFoldOfRandomHistory(t *testing.T) {
	where := []Condition{cond("status", OpNe, opS("void")), cond("amount", OpGte, opN("-20"))}
	views := []*View{
		bucketView(t, time.Hour, 72*time.Hour, "t", where),
		bucketView(t, 24*time.Hour, 24*time.Hour, "t", nil),
	}
	covered := 0
	for seed := uint64(1); seed <= 12; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, seed*104729))
			recs, table := randomHistory(r, 400)
			// Give every image a time within the last five days, some of
			// them past the retention, and a status; the history's
			// modifies then change times and statuses at random.
			stamp := map[string]streamtally.Image{}
			re := func(img streamtally.Image) streamtally.Image {
				if img == nil {
					return nil
				}
				if s, ok := stamp[fmt.Sprintf("%p", img)]; ok {
					return s
				}
				out := maps.Clone(img)
				if r.IntN(20) > 0 {
					out["t"] = attrN(fmt.Sprint(testNow.Add(-time.Duration(r.Int64N(int64(120 * time.Hour)))).UnixMilli()))
				}
				out["status"] = attrS([]string{"paid", "void", "open"}[r.IntN(3)])
				stamp[fmt.Sprintf("%p", img)] = out
				return out
			}
			for i := range recs {
				recs[i].Old, recs[i].New = re(recs[i].Old), re(recs[i].New)
			}
			var items []streamtally.Image
			for _, img := range table {
				items = append(items, re(img))
			}
			for _, v := range views {
				got := map[int64]map[string]*Counters{}
				fence, next := streamtally.Seq(""), 0
				for next < len(recs) {
					start := next
					if start > 0 && r.IntN(4) == 0 {
						start = max(0, start-1-r.IntN(5))
					}
					end := min(len(recs), next+1+r.IntN(40))
					d := v.Fold("shard-1", fence, recs[start:end], nil)
					for b, gs := range d.Buckets {
						if got[b] == nil {
							got[b] = map[string]*Counters{}
						}
						for k, g := range gs {
							acc := got[b][k]
							if acc == nil {
								acc = &Counters{Sums: make([]Decimal, v.SumCount())}
								got[b][k] = acc
							}
							acc.Count += g.Count
							for i := range g.Sums {
								acc.Sums[i] = acc.Sums[i].Add(g.Sums[i])
							}
						}
					}
					fence, next = d.Through, end
				}
				want := v.BucketTotals(items)
				covered += len(want)
				for b, gs := range got {
					for k, g := range gs {
						if g.isZero() {
							delete(gs, k)
						}
					}
					if len(gs) == 0 {
						delete(got, b)
					}
				}
				if gk, wk := slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)); !slices.Equal(gk, wk) {
					t.Fatalf("view %s: folded buckets %v, full scan %v", v.Name, gk, wk)
				}
				for b := range want {
					checkSameGroups(t, v, got[b], want[b])
				}
			}
		})
	}
	if covered < 30 {
		t.Fatalf("the full scans held %d buckets in all; the test covers too little", covered)
	}
}

// testDuration reads "7d" as seven days, anything else as a Go duration.
func testDuration(t *testing.T, s string) time.Duration {
	t.Helper()
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil {
			t.Fatal(err)
		}
		return time.Duration(n) * 24 * time.Hour
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
