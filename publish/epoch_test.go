package publish

import (
	"context"
	"encoding/json"
	"testing"
	"time"
)

// A reader that cannot prove it continues what subscribers saw (it took a
// shard over from a reader that crashed, after a failover that may have
// lost the last writes) asks for a new epoch; versions issued from then
// on can never be taken for the ones Redis forgot.
func TestApplyStartsANewEpochOnceWhenAsked(t *testing.T) {
	v := platformView("by_platform")
	f := newFixture(t, v)
	sub := subscribe(t, f.c, f.keys(v.Name).Channel())
	f.apply(mkDelta(v, "A", "", "3", map[string]gd{"Web": {1, []string{"2"}}}))
	first := parseMessage(t, sub.next())
	if first.Epoch != f.meta(v.Name)["epoch"] {
		t.Fatalf("message epoch %q, _meta epoch %q: want the same", first.Epoch, f.meta(v.Name)["epoch"])
	}
	f.apply(mkDelta(v, "A", "3", "4", map[string]gd{"Web": {1, []string{"2"}}}))
	if m := parseMessage(t, sub.next()); m.Epoch != first.Epoch {
		t.Fatalf("an ordinary apply moved the epoch from %s to %s", first.Epoch, m.Epoch)
	}

	// Two shards taken over at once both ask, having seen the same epoch:
	// the first starts a new epoch, the second finds it moved on already.
	d := mkDelta(v, "A", "4", "5", map[string]gd{"Web": {1, []string{"2"}}})
	d.NewEpoch, d.EpochSeen = true, first.Epoch
	f.apply(d)
	renewed := parseMessage(t, sub.next())
	if renewed.Epoch == first.Epoch || renewed.Version != 3 {
		t.Fatalf("after asking for a new epoch: epoch %s version %d, want a new epoch at version 3", renewed.Epoch, renewed.Version)
	}
	d = mkDelta(v, "B", "", "7", map[string]gd{"Mail": {1, []string{"1"}}})
	d.NewEpoch, d.EpochSeen = true, first.Epoch
	f.apply(d)
	if m := parseMessage(t, sub.next()); m.Epoch != renewed.Epoch {
		t.Fatalf("a second reader that saw the old epoch moved it again, to %s", m.Epoch)
	}
	s, err := f.store.Snapshot(context.Background(), v)
	if err != nil {
		t.Fatal(err)
	}
	if s.Epoch != renewed.Epoch || s.Version != 4 {
		t.Errorf("snapshot at epoch %s version %d, want %s 4", s.Epoch, s.Version, renewed.Epoch)
	}

	// Asking with a delta that changes no group still starts the epoch:
	// the next message carries it.
	d = mkDelta(v, "A", "5", "6", nil)
	d.NewEpoch, d.EpochSeen = true, renewed.Epoch
	f.apply(d)
	sub.expectNone()
	if e := f.meta(v.Name)["epoch"]; e == renewed.Epoch {
		t.Errorf("a fence-only apply that asked for a new epoch kept %s", e)
	}
}

// A bucket that Redis has expired (the daemon's clock is behind Redis's,
// so its fold still took the bucket for live) is neither brought back nor
// announced: the message carries only the buckets the script applied, so
// that the deltas summed still equal the hashes.
func TestApplyLeavesOutBucketsRedisExpired(t *testing.T) {
	v := hourlyView("per_hour", "t", 48*time.Hour)
	f := newBucketFixture(t, v)
	k := f.keys(v.Name)
	sub := subscribe(t, f.c, k.Channel())
	f.apply(mkBucketDelta(v, "s", "", "1", map[string]map[string]gd{
		hour(-1):  {"Web": {2, []string{"10.5"}}},
		hour(-60): {"Web": {1, []string{"4"}}}, // ended 59 hours ago: expired
	}))
	var m struct {
		Version int64                                   `json:"version"`
		Buckets map[string]map[string]map[string]string `json:"buckets"`
	}
	if err := json.Unmarshal([]byte(sub.next()), &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.Buckets[hour(-60)]; ok || len(m.Buckets) != 1 {
		t.Errorf("message buckets = %v, want only %s", m.Buckets, hour(-1))
	}
	if n := f.c.Exists(context.Background(), k.BucketItems(hour(-60)), k.BucketMeasure(hour(-60), "amount")).Val(); n != 0 {
		t.Errorf("the expired bucket was written back (%d keys)", n)
	}
	if _, ok := f.index(v.Name)[hour(-60)]; ok {
		t.Error("the expired bucket is in the index")
	}

	// A delta of expired buckets only moves the fence: no version, no message.
	f.apply(mkBucketDelta(v, "s", "1", "2", map[string]map[string]gd{hour(-60): {"Web": {1, []string{"4"}}}}))
	sub.expectNone()
	meta := f.meta(v.Name)
	if meta["version"] != "1" || meta["fence:s"] != "2" {
		t.Errorf("meta = %v, want version 1 and the fence at 2", meta)
	}
}
