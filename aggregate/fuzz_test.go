package aggregate

import (
	"maps"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/internal/ddbjson"
)

// fuzzViews read the attributes of the seed records (captured from
// DynamoDB Local by the root package's TestCaptureFromDynamoDBLocal):
// strings, numbers, booleans, nested maps, several group_by attributes at
// once, counts and sums.
func fuzzViews() []*View {
	return []*View{
		newView("by_platform", []string{"platform"}, "n=count", "amount=sum(amount)"),
		newView("by_tier", []string{"tier"}, "amount=sum(amount)"),
		newView("by_vip_platform", []string{"vip", "platform"}, "n=count", "score=sum(meta.score)"),
		newView("by_country", []string{"meta.country"}, "n=count", "amount=sum(amount)", "tier=sum(tier)"),
		newView("by_key", []string{"pk", "sk"}, "n=count"),
	}
}

// FuzzFold decodes a stream record and folds it into views of every kind.
// Whatever the record holds, the fold must not panic; the record must
// either contribute to a view or be rejected with a reason; and folding it
// followed by its inverse must leave nothing behind.
func FuzzFold(f *testing.F) {
	donation := func(platform, amount string) streamtally.Image {
		return streamtally.Image{
			"pk": attrS("d1"), "sk": attrN("1"), "platform": attrS(platform), "amount": attrN(amount), "tier": attrN("2"),
			"vip":  &streamtally.Bool{Value: true},
			"meta": attrM(streamtally.Image{"country": attrS("DE"), "score": attrN("7.25")}),
		}
	}
	for _, r := range []streamtally.Record{
		{Event: streamtally.Insert, New: donation("Web", "10.50")},
		{Event: streamtally.Modify, Old: donation("Web", "10.50"), New: donation(`Pipe|Back\slash`, "-0.01")},
		{Event: streamtally.Remove, Old: donation("Phone", "99999999999999999999999999999999999999")},
		{Event: streamtally.Insert, New: streamtally.Image{"platform": &streamtally.Null{Value: true}, "amount": attrS("n/a")}},
	} {
		r.SequenceNumber, r.Created = "1", time.Unix(1_700_000_000, 0)
		b, err := ddbjson.EncodeRecord(&r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	views := fuzzViews()
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ddbjson.DecodeRecord(data, "shard")
		if err != nil {
			return
		}
		for _, v := range views {
			checkFold(t, v, r)
		}
	})
}

func checkFold(t *testing.T, v *View, r streamtally.Record) {
	t.Helper()
	var rejected []Rejection
	d := v.Fold("shard", "", []streamtally.Record{r}, func(x Rejection) { rejected = append(rejected, x) })
	if len(rejected) > 1 {
		t.Fatalf("view %s: %d rejections for one record: %+v", v.Name, len(rejected), rejected)
	}
	for _, x := range rejected {
		if x.Reason.Text == "" || !slices.Contains([]string{MissingGroupBy, MissingSum, BadGroupBy, BadSum, BadNumber, BadRecord}, x.Reason.Kind) {
			t.Fatalf("view %s: rejection without a known kind and a text: %+v", v.Name, x.Reason)
		}
	}

	// Every record contributes or is rejected: a new image that cannot
	// contribute says why, and so does a record lacking an image its
	// event needs.
	noOld := r.Event != streamtally.Insert && r.Old == nil
	switch {
	case r.Event == streamtally.Remove:
		if noOld != (len(rejected) == 1) {
			t.Fatalf("view %s: REMOVE with old image %v rejected %d times", v.Name, r.Old != nil, len(rejected))
		}
	case r.New == nil:
		if len(rejected) != 1 {
			t.Fatalf("view %s: %s without a new image was not rejected", v.Name, r.Event)
		}
	default:
		c, reason, ok := v.Contribute(r.New)
		switch {
		case ok && noOld != (len(rejected) == 1):
			t.Fatalf("view %s: a contributing image (old image present: %v) was rejected %d times: %+v", v.Name, !noOld, len(rejected), rejected)
		case !ok && (len(rejected) != 1 || rejected[0].Reason != reason):
			t.Fatalf("view %s: image rejected with %+v, fold reported %+v", v.Name, reason, rejected)
		case ok:
			checkContribution(t, v, c)
		}
	}
	if r.Event == streamtally.Insert && len(rejected) == 0 && (len(d.Groups) != 1 || d.Groups[mustGroup(t, v, r.New)].Count != 1) {
		t.Fatalf("view %s: an accepted insert folded to %v", v.Name, d.Groups)
	}

	// The record and its inverse cancel out.
	back := inverse(r)
	r.SequenceNumber, back.SequenceNumber = "1", "2"
	if both := v.Fold("shard", "", []streamtally.Record{r, back}, nil); !both.Empty() {
		t.Fatalf("view %s: a record and its inverse left %v", v.Name, groupsText(v, both.Groups))
	}
	// So do a new image and its REMOVE: what is left is the old image gone.
	if r.New != nil && r.Event != streamtally.Remove {
		gone := streamtally.Record{Event: streamtally.Remove, Old: r.New, SequenceNumber: "2"}
		got := v.Fold("shard", "", []streamtally.Record{r, gone}, nil)
		want := v.Fold("shard", "", []streamtally.Record{{Event: streamtally.Remove, Old: r.Old, SequenceNumber: "1"}}, nil)
		if r.Old == nil || r.Event == streamtally.Insert {
			want.Groups = map[string]*Counters{}
		}
		if g, w := groupsText(v, got.Groups), groupsText(v, want.Groups); !maps.EqualFunc(g, w, slices.Equal[[]string]) {
			t.Fatalf("view %s: record then REMOVE of its new image left %v, want %v", v.Name, g, w)
		}
	}
}

// inverse is the record that undoes r.
func inverse(r streamtally.Record) streamtally.Record {
	switch r.Event {
	case streamtally.Insert:
		return streamtally.Record{Event: streamtally.Remove, Old: r.New}
	case streamtally.Remove:
		return streamtally.Record{Event: streamtally.Insert, New: r.Old}
	}
	return streamtally.Record{Event: streamtally.Modify, Old: r.New, New: r.Old}
}

func mustGroup(t *testing.T, v *View, img streamtally.Image) string {
	c, reason, ok := v.Contribute(img)
	if !ok {
		t.Fatalf("view %s: %+v", v.Name, reason)
	}
	return c.Group
}

// checkContribution checks what an accepted image adds: one value per
// group_by attribute in the key, and sums that DynamoDB could store, in
// canonical form.
func checkContribution(t *testing.T, v *View, c Contribution) {
	t.Helper()
	if n := len(SplitGroup(c.Group)); n != len(v.groupBy) {
		t.Fatalf("view %s: group key %q splits into %d values, want %d", v.Name, c.Group, n, len(v.groupBy))
	}
	for _, s := range c.Sums {
		back, err := ParseNumber(s.String())
		if err != nil || back.Cmp(s) != 0 || back.String() != s.String() {
			t.Fatalf("view %s: sum %s does not read back as itself: %v", v.Name, s, err)
		}
	}
}

// groupsText renders groups for comparison: count and canonical sums.
func groupsText(v *View, gs map[string]*Counters) map[string][]string {
	out := map[string][]string{}
	for k, g := range gs {
		row := []string{strconv.FormatInt(g.Count, 10)}
		for _, s := range g.Sums {
			row = append(row, s.String())
		}
		out[k] = row
	}
	return out
}
