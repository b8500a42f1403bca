package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/config"
)

// seriesNow is the clock of the bucket tests: half past the current hour.
// Bucket keys expire by Redis's own clock, so the tests' buckets must lie
// around the real time.
var seriesNow = time.Now().UTC().Truncate(time.Hour).Add(30 * time.Minute)

// hour names the bucket h hours from the current one.
func hour(h int) string { return hourStart(h).Format(time.RFC3339) }

func hourStart(h int) time.Time {
	return seriesNow.Truncate(time.Hour).Add(time.Duration(h) * time.Hour)
}

// hourlyView is the fundraiser view per hour of timeAttr, kept for
// retention after each hour ends.
func hourlyView(name, timeAttr string, retention time.Duration) *aggregate.View {
	v := aggregate.NewView(aggregate.Spec{
		Name:    name,
		GroupBy: []string{"platform"},
		Measures: []aggregate.MeasureSpec{
			{Name: "amount", Func: "sum", Attr: "amount"},
			{Name: "donations", Func: "count"},
		},
		Bucket: &aggregate.BucketSpec{Size: time.Hour, Retention: retention, Time: timeAttr},
	})
	v.SetClock(func() time.Time { return seriesNow })
	return v
}

// mkBucketDelta is mkDelta for a bucketed view: groups per bucket name.
func mkBucketDelta(v *aggregate.View, shard, after, through string, buckets map[string]map[string]gd) *aggregate.Delta {
	d := mkDelta(v, shard, after, through, nil)
	d.Buckets = map[int64]map[string]*aggregate.Counters{}
	for name, groups := range buckets {
		t, err := time.Parse(time.RFC3339, name)
		if err != nil {
			panic(err)
		}
		d.Buckets[t.Unix()] = mkDelta(v, shard, after, through, groups).Groups
	}
	return d
}

func newBucketFixture(t *testing.T, v *aggregate.View) *fixture {
	f := newFixture(t, v)
	f.store.now = func() time.Time { return seriesNow }
	return f
}

// index returns the bucket index as name -> score.
func (f *fixture) index(view string) map[string]float64 {
	f.t.Helper()
	zs, err := f.c.ZRangeWithScores(context.Background(), f.keys(view).Buckets(), 0, -1).Result()
	if err != nil {
		f.t.Fatal(err)
	}
	out := map[string]float64{}
	for _, z := range zs {
		out[z.Member.(string)] = z.Score
	}
	return out
}

func TestBucketedApplyWritesBucketKeysIndexExpiryAndMessage(t *testing.T) {
	v := hourlyView("per_hour", "t", 48*time.Hour)
	f := newBucketFixture(t, v)
	sub := subscribe(t, f.c, f.keys(v.Name).Channel())
	f.apply(mkBucketDelta(v, "s", "", "1", map[string]map[string]gd{
		hour(-1):  {"Web": {2, []string{"10.5"}}, "Phone": {1, []string{"0"}}},
		hour(-41): {"Web": {1, []string{"-1.25"}}},
	}))
	want := `{"view":"per_hour","epoch":"` + f.meta(v.Name)["epoch"] + `","version":1,"buckets":{` +
		`"` + hour(-41) + `":{"amount":{"Web":"-1.25"},"donations":{"Web":"1"}},` +
		`"` + hour(-1) + `":{"amount":{"Web":"10.5"},"donations":{"Phone":"1","Web":"2"}}},"ts_ms":` +
		fmt.Sprint(seriesNow.UnixMilli()) + `}`
	if got := sub.next(); got != want {
		t.Errorf("message\n%s\nwant\n%s", got, want)
	}
	k := f.keys(v.Name)
	if got := k.BucketMeasure(hour(-1), "amount"); got != f.prefix+":{per_hour}:"+hour(-1)+":amount" {
		t.Errorf("bucket key %s", got)
	}
	checks := map[string]map[string]string{
		k.BucketMeasure(hour(-1), "amount"):     {"Web": "10.5", "Phone": "0"},
		k.BucketMeasure(hour(-1), "donations"):  {"Web": "2", "Phone": "1"},
		k.BucketItems(hour(-1)):                 {"Web": "2", "Phone": "1"},
		k.BucketMeasure(hour(-41), "amount"):    {"Web": "-1.25"},
		k.BucketMeasure(hour(-41), "donations"): {"Web": "1"},
	}
	for key, w := range checks {
		if got := f.hash(key); !maps.Equal(got, w) {
			t.Errorf("%s = %v, want %v", key, got, w)
		}
	}
	for _, unbucketed := range []string{k.Measure("amount"), k.Measure("donations"), k.Items()} {
		if n := f.c.Exists(context.Background(), unbucketed).Val(); n != 0 {
			t.Errorf("a bucketed view wrote %s", unbucketed)
		}
	}
	wantIndex := map[string]float64{
		hour(-1):  float64(hourStart(-1).Unix()),
		hour(-41): float64(hourStart(-41).Unix()),
	}
	if got := f.index(v.Name); !maps.Equal(got, wantIndex) {
		t.Errorf("index %v, want %v", got, wantIndex)
	}
	// Each bucket key expires at the bucket's end plus the retention.
	for key := range checks {
		b := key[len(k.Channel())+1 : len(k.Channel())+1+len(hour(-1))]
		start, _ := time.Parse(time.RFC3339, b)
		at, err := f.c.Do(context.Background(), "PEXPIRETIME", key).Int64()
		if err != nil {
			t.Fatal(err)
		}
		if want := start.Add(time.Hour + 48*time.Hour).UnixMilli(); at != want {
			t.Errorf("%s expires at %d, want %d", key, at, want)
		}
	}
	if ttl := f.c.PTTL(context.Background(), k.Meta()).Val(); ttl != -1 {
		t.Errorf("_meta has a TTL %v; it must live as long as the view", ttl)
	}
	if f.version(v.Name) != "1" {
		t.Errorf("version %s, want 1", f.version(v.Name))
	}

	// The bucket's last items leave: its keys go, and so does its entry
	// in the index.
	f.apply(mkBucketDelta(v, "s", "1", "2", map[string]map[string]gd{
		hour(-41): {"Web": {-1, []string{"1.25"}}},
	}))
	if n := f.c.Exists(context.Background(), k.BucketItems(hour(-41)), k.BucketMeasure(hour(-41), "amount")).Val(); n != 0 {
		t.Errorf("an emptied bucket left %d keys", n)
	}
	if _, ok := f.index(v.Name)[hour(-41)]; ok {
		t.Error("an emptied bucket stayed in the index")
	}
	want = `{"view":"per_hour","epoch":"` + f.meta(v.Name)["epoch"] + `","version":2,"buckets":{"` + hour(-41) + `":{"amount":{"Web":"1.25"},"donations":{"Web":"-1"}}},"ts_ms":` +
		fmt.Sprint(seriesNow.UnixMilli()) + `}`
	if got := sub.next(); got != want {
		t.Errorf("message\n%s\nwant\n%s", got, want)
	}

	// A replay changes nothing and publishes nothing.
	var moved *aggregate.FenceMovedError
	err := f.store.Apply(context.Background(), mkBucketDelta(v, "s", "1", "2", map[string]map[string]gd{
		hour(-41): {"Web": {-1, []string{"1.25"}}},
	}))
	if !errors.As(err, &moved) || moved.Current != "2" {
		t.Fatalf("replay: %v, want the fence moved to 2", err)
	}
	sub.expectNone()
}

func TestBucketedApplyNeverRevivesAnExpiredBucket(t *testing.T) {
	v := hourlyView("per_hour", "t", 2*time.Hour)
	f := newBucketFixture(t, v)
	k := f.keys(v.Name)
	// Four hours ago ended three hours ago and expired an hour ago; the
	// last hour expires in two.
	f.apply(mkBucketDelta(v, "s", "", "1", map[string]map[string]gd{
		hour(-1): {"Web": {1, []string{"1"}}},
	}))
	// Written earlier, when it was live; still in the index.
	f.c.ZAdd(context.Background(), k.Buckets(), redis.Z{Score: float64(hourStart(-4).Unix()), Member: hour(-4)})
	// A delta folded while that bucket was live reaches Redis after it expired.
	f.apply(mkBucketDelta(v, "s", "1", "2", map[string]map[string]gd{
		hour(-4): {"Web": {-1, []string{"-1"}}},
		hour(-1): {"Web": {1, []string{"2"}}},
	}))
	if n := f.c.Exists(context.Background(), k.BucketItems(hour(-4)), k.BucketMeasure(hour(-4), "amount"), k.BucketMeasure(hour(-4), "donations")).Val(); n != 0 {
		t.Errorf("an expired bucket came back with %d keys", n)
	}
	if got, want := slices.Sorted(maps.Keys(f.index(v.Name))), []string{hour(-1)}; !slices.Equal(got, want) {
		t.Errorf("index %v, want %v: expired buckets are pruned", got, want)
	}
	if got := f.hash(k.BucketMeasure(hour(-1), "amount")); got["Web"] != "3" {
		t.Errorf("live bucket amount %v, want Web=3", got)
	}
}

func TestSeriesReadsARangeWithItsVersion(t *testing.T) {
	v := hourlyView("per_hour", "t", 30*24*time.Hour)
	f := newBucketFixture(t, v)
	f.apply(mkBucketDelta(v, "s", "", "1", map[string]map[string]gd{
		hour(-4): {"Web": {1, []string{"1"}}},
		hour(-3): {"Web": {2, []string{"2.5"}}, "Phone": {1, []string{"7"}}},
		hour(-1): {"Kiosk": {1, []string{"0.01"}}},
	}))
	f.apply(mkBucketDelta(v, "s", "1", "2", map[string]map[string]gd{
		hour(-3): {"Phone": {-1, []string{"-7"}}},
	}))
	ctx := context.Background()
	s, err := f.store.Series(ctx, v, hourStart(-3), hourStart(0))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(s)
	want := `{"view":"per_hour","epoch":"` + f.meta(v.Name)["epoch"] + `","version":2,"updated_ms":` + fmt.Sprint(seriesNow.UnixMilli()) +
		`,"from":"` + hour(-3) + `","to":"` + hour(0) + `","buckets":{` +
		`"` + hour(-3) + `":{"amount":{"Web":"2.5"},"donations":{"Web":"2"}},` +
		`"` + hour(-1) + `":{"amount":{"Kiosk":"0.01"},"donations":{"Kiosk":"1"}}}}`
	if string(b) != want {
		t.Errorf("series\n%s\nwant\n%s", b, want)
	}
	// The end is exclusive; an empty range is empty.
	for _, c := range []struct {
		from, to time.Time
		want     []string
	}{
		{hourStart(-4), hourStart(-3), []string{hour(-4)}},
		{hourStart(-4).Add(time.Minute), hourStart(-1), []string{hour(-3)}},
		{hourStart(-4).Add(time.Nanosecond), hourStart(-1).Add(time.Nanosecond), []string{hour(-3), hour(-1)}},
		{hourStart(-5), hourStart(1), []string{hour(-1), hour(-3), hour(-4)}},
		{hourStart(0), hourStart(-5), nil},
	} {
		s, err := f.store.Series(ctx, v, c.from, c.to)
		if err != nil {
			t.Fatal(err)
		}
		if got := slices.Sorted(maps.Keys(s.Buckets)); !slices.Equal(got, slices.Sorted(slices.Values(c.want))) {
			t.Errorf("[%s, %s): buckets %v, want %v", c.from, c.to, got, c.want)
		}
	}
	if _, err := f.store.Series(ctx, platformView("totals"), seriesNow, seriesNow); err == nil {
		t.Error("a series of a view without buckets")
	}
}

// TestSeriesMatchesTheFoldOfRandomHistory applies random histories with
// times going back and forth and checks every bucket against a full scan.
func TestSeriesMatchesTheFoldOfRandomHistory(t *testing.T) {
	v := hourlyView("per_hour", "t", 72*time.Hour)
	f := newBucketFixture(t, v)
	ctx := context.Background()
	tally := aggregate.NewTally([]*aggregate.View{v}, f.store, discardLog())
	table := map[string]streamtally.Image{}
	var recs []streamtally.Record
	for i := 0; i < 300; i++ {
		id := fmt.Sprintf("d%d", i%23)
		img := item(id, []string{"Web", "Phone", "Kiosk"}[i%3], "", fmt.Sprintf("%d.%02d", i%17, i%100))
		// Hours from 100 back to 0, in an order that jumps around.
		img["t"] = &streamtally.S{Value: seriesNow.Add(-time.Duration((i*37)%100) * time.Hour).Format(time.RFC3339)}
		old, had := table[id]
		switch {
		case had && i%7 == 0:
			recs = append(recs, streamtally.Record{Event: streamtally.Remove, Old: old, Keys: keyOf(old)})
			delete(table, id)
		case had:
			recs = append(recs, streamtally.Record{Event: streamtally.Modify, Old: old, New: img, Keys: keyOf(img)})
			table[id] = img
		default:
			recs = append(recs, streamtally.Record{Event: streamtally.Insert, New: img, Keys: keyOf(img)})
			table[id] = img
		}
	}
	for i := range recs {
		recs[i].Shard, recs[i].SequenceNumber = "s", streamtally.Seq(fmt.Sprintf("%05d", i+1))
	}
	for i := 0; i < len(recs); i += 40 {
		if err := tally.HandleBatch(ctx, "s", "", recs[i:min(i+40, len(recs))]); err != nil {
			t.Fatal(err)
		}
	}
	s, err := f.store.Series(ctx, v, seriesNow.Add(-200*time.Hour), seriesNow.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]map[string]string{}
	for b, groups := range v.BucketTotals(slices.Collect(maps.Values(table))) {
		ms := map[string]map[string]string{"amount": {}, "donations": {}}
		for g, gd := range groups {
			ms["donations"][g] = fmt.Sprint(gd.Count)
			ms["amount"][g] = gd.Sums[0].String()
		}
		want[aggregate.BucketName(b)] = ms
	}
	if len(want) < 10 {
		t.Fatalf("only %d buckets: the test covers too little", len(want))
	}
	got, _ := json.Marshal(s.Buckets)
	exp, _ := json.Marshal(want)
	if string(got) != string(exp) {
		t.Errorf("series\n%s\nfull scan\n%s", got, exp)
	}
}

func TestBucketedViewOnACluster(t *testing.T) {
	c := newClusterClient(t, config.Redis{})
	prefix := testPrefix(t)
	v := hourlyView("per_hour", "t", 24*time.Hour)
	store := NewRedis(c, prefix, []*aggregate.View{v})
	store.now = func() time.Time { return seriesNow }
	ctx := context.Background()
	ps := c.SSubscribe(ctx, KeysFor(prefix, v.Name).Channel())
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	buckets := map[string]map[string]gd{}
	for h := 0; h < 12; h++ {
		buckets[seriesNow.Truncate(time.Hour).Add(-time.Duration(h)*time.Hour).Format(time.RFC3339)] = map[string]gd{"Web": {1, []string{fmt.Sprint(h)}}}
	}
	// Twelve buckets' keys in one script: only one slot makes that work.
	if err := store.Apply(ctx, mkBucketDelta(v, "s", "", "1", buckets)); err != nil {
		t.Fatal(err)
	}
	msg, err := ps.ReceiveMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Version int                                     `json:"version"`
		Buckets map[string]map[string]map[string]string `json:"buckets"`
	}
	if err := json.Unmarshal([]byte(msg.Payload), &m); err != nil || m.Version != 1 || len(m.Buckets) != 12 {
		t.Fatalf("message %s (%v), want version 1 with 12 buckets", msg.Payload, err)
	}
	s, err := store.Series(ctx, v, seriesNow.Add(-24*time.Hour), seriesNow.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if s.Version != 1 || len(s.Buckets) != 12 {
		t.Fatalf("series version %d with %d buckets, want 1 and 12", s.Version, len(s.Buckets))
	}
	k := KeysFor(prefix, v.Name)
	want, err := c.ClusterKeySlot(ctx, k.Meta()).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{k.Buckets(), k.BucketItems(hour(-1)), k.BucketMeasure(hour(-1), "amount")} {
		if got := c.ClusterKeySlot(ctx, key).Val(); got != want {
			t.Errorf("%s is in slot %d, the view in %d", key, got, want)
		}
	}
}

// TestStreamTimeBucketsKeepNetChanges: in a stream-time bucket a MODIFY of
// an amount is a group whose count does not change but whose sum does; it
// must show, and leave only once its values are all 0 again.
func TestStreamTimeBucketsKeepNetChanges(t *testing.T) {
	v := hourlyView("changes_per_hour", aggregate.StreamTime, 24*time.Hour)
	f := newBucketFixture(t, v)
	k := f.keys(v.Name)
	f.apply(mkBucketDelta(v, "s", "", "1", map[string]map[string]gd{
		hour(0): {"Web": {0, []string{"2"}}, "Phone": {-1, []string{"-3"}}},
	}))
	if got, want := f.hash(k.BucketMeasure(hour(0), "amount")), map[string]string{"Web": "2", "Phone": "-3"}; !maps.Equal(got, want) {
		t.Errorf("amount %v, want %v", got, want)
	}
	if got, want := f.hash(k.BucketMeasure(hour(0), "donations")), map[string]string{"Web": "0", "Phone": "-1"}; !maps.Equal(got, want) {
		t.Errorf("donations %v, want %v", got, want)
	}
	f.apply(mkBucketDelta(v, "s", "1", "2", map[string]map[string]gd{
		hour(0): {"Phone": {1, []string{"3"}}},
	}))
	if _, ok := f.index(v.Name)[hour(0)]; !ok {
		t.Error("a bucket holding only a net sum left the index")
	}
	if got := f.hash(k.BucketMeasure(hour(0), "amount")); !maps.Equal(got, map[string]string{"Web": "2"}) {
		t.Errorf("amount %v, want only Web=2 once Phone netted out", got)
	}
	f.apply(mkBucketDelta(v, "s", "2", "3", map[string]map[string]gd{
		hour(0): {"Web": {0, []string{"-2"}}},
	}))
	if n := f.c.Exists(context.Background(), k.BucketItems(hour(0)), k.BucketMeasure(hour(0), "amount"), k.BucketMeasure(hour(0), "donations")).Val(); n != 0 {
		t.Errorf("a bucket whose net changes are all 0 kept %d keys", n)
	}
	if _, ok := f.index(v.Name)[hour(0)]; ok {
		t.Error("an empty bucket stayed in the index")
	}
}
