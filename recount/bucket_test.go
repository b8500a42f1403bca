package recount

import (
	"strings"
	"testing"
	"time"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/publish"
)

func hourlyView(stream bool) *aggregate.View {
	b := &aggregate.BucketSpec{Size: time.Hour, Retention: 24 * time.Hour, Time: "at"}
	if stream {
		b.Time = "stream"
	}
	c := aggregate.Spec{Name: "per_hour", GroupBy: []string{"platform"}, Bucket: b, Measures: []aggregate.MeasureSpec{
		{Name: "amount", Func: "sum", Attr: "amount"}, {Name: "n", Func: "count"},
	}}
	return aggregate.NewView(c)
}

func timed(id, platform, amount string, at time.Time) streamtally.Image {
	i := img(id, platform, amount)
	i["at"] = &streamtally.S{Value: at.UTC().Format(time.RFC3339)}
	return i
}

func TestRecountableRefusesOnlyStreamTime(t *testing.T) {
	if err := Recountable(testView()); err != nil {
		t.Errorf("a view without buckets: %v", err)
	}
	if err := Recountable(hourlyView(false)); err != nil {
		t.Errorf("a view bucketed by item time: %v", err)
	}
	err := Recountable(hourlyView(true))
	if err == nil || !strings.Contains(err.Error(), "stream time") || strings.Contains(err.Error(), "\n") {
		t.Errorf("a view bucketed by stream time: %v, want one line about stream time", err)
	}
}

// The state at the cut of a bucketed view holds every (bucket, group) the
// scan and the records give, and nothing of a bucket past its retention.
func TestStateAtTheCutIsPerBucketAndGroup(t *testing.T) {
	v := hourlyView(false)
	now := time.Now().UTC().Truncate(time.Hour)
	s := newScanned([]*aggregate.View{v})
	s.add("id=1", timed("1", "Web", "2", now.Add(-time.Hour)))
	s.add("id=2", timed("2", "Web", "3", now))
	s.add("id=3", timed("3", "Mail", "4", now))
	s.add("id=4", timed("4", "Mail", "5", now.Add(-72*time.Hour))) // expired
	// Item 2 moved to the previous hour after the cut: at the cut it was
	// in this hour.
	first := map[string]*streamtally.Record{"id=2": {Event: streamtally.Modify,
		Old: timed("2", "Web", "3", now), New: timed("2", "Web", "3", now.Add(-time.Hour))}}
	got := byBucket(s.atCut(first)[0])
	h0, h1 := now.Unix(), now.Add(-time.Hour).Unix()
	if len(got) != 2 || render(got[h1]) != "Web=1/2" || render(got[h0]) != "Mail=1/4 Web=1/3" {
		t.Errorf("state = %v", got)
	}
}

// compareBuckets names the bucket of every difference, and leaves buckets
// about to expire out on both sides.
func TestCompareBucketsNamesTheBucketAndSkipsExpiring(t *testing.T) {
	v := hourlyView(false)
	now := time.Now().UTC().Truncate(time.Hour)
	h0, h1 := now.Unix(), now.Add(-time.Hour).Unix()
	dying := now.Add(-25 * time.Hour).Unix() // expires within a minute of clock below
	clock := v.BucketExpiry(dying).Add(-30 * time.Second)
	want := map[string]*aggregate.Counters{
		cellKey(h0, "Web"):    {Count: 2, Sums: []aggregate.Decimal{aggregate.MustDecimal("5")}},
		cellKey(h1, "Mail"):   {Count: 1, Sums: []aggregate.Decimal{aggregate.MustDecimal("1")}},
		cellKey(dying, "Web"): {Count: 1, Sums: []aggregate.Decimal{aggregate.MustDecimal("1")}},
	}
	got := &publish.Series{Buckets: map[string]map[string]map[string]string{
		aggregate.BucketName(h0):                        {"amount": {"Web": "5"}, "n": {"Web": "3"}},
		aggregate.BucketName(now.Add(time.Hour).Unix()): {"amount": {"Phone": "1"}, "n": {"Phone": "1"}},
	}}
	groups, drift := compareBuckets(v, want, got, clock)
	var lines []string
	for _, d := range drift {
		lines = append(lines, d.String())
	}
	wantLines := []string{
		`view per_hour bucket ` + aggregate.BucketName(h1) + ` measure amount group "Mail": table 1, redis (none)`,
		`view per_hour bucket ` + aggregate.BucketName(h1) + ` measure n group "Mail": table 1, redis (none)`,
		`view per_hour bucket ` + aggregate.BucketName(h0) + ` measure n group "Web": table 2, redis 3`,
		`view per_hour bucket ` + aggregate.BucketName(now.Add(time.Hour).Unix()) + ` measure amount group "Phone": table (none), redis 1`,
		`view per_hour bucket ` + aggregate.BucketName(now.Add(time.Hour).Unix()) + ` measure n group "Phone": table (none), redis 1`,
	}
	if strings.Join(lines, "\n") != strings.Join(wantLines, "\n") {
		t.Errorf("drift:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(wantLines, "\n"))
	}
	if groups != 2 {
		t.Errorf("groups compared = %d, want 2", groups)
	}
}
