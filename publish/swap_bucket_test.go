package publish

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamtally/streamtally/aggregate"
)

// cellsAt builds fresh bucket contents: groups per bucket start.
func cellsAt(v *aggregate.View, buckets map[string]map[string]gd) map[int64]map[string]*aggregate.Counters {
	return mkBucketDelta(v, "", "", "", buckets).Buckets
}

func TestBucketedSwapReplacesBucketsKeepsExpiryAndRebuildsTheIndex(t *testing.T) {
	ctx := context.Background()
	v := hourlyView("per_hour", "paidAt", 48*time.Hour)
	f := newBucketFixture(t, v)
	k := f.keys(v.Name)
	sub := subscribe(t, f.c, k.Channel())
	f.apply(mkBucketDelta(v, "A", "", "3", map[string]map[string]gd{
		hour(-1): {"Web": {2, []string{"2"}}},
		hour(-2): {"Mail": {1, []string{"7"}}},
	}))
	sub.next()

	// Fresh keys a dead run left behind go first.
	dead := f.claim(v, 300*time.Millisecond)
	if err := dead.WriteNextBuckets(ctx, cellsAt(v, map[string]map[string]gd{hour(-4): {"Old": {1, []string{"1"}}}})); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	c := f.claim(v, time.Minute)
	if n, _ := f.c.Exists(ctx, k.Fresh(dead.Token(), hour(-4)+":amount"), k.Fresh(dead.Token(), hour(-4)+":_items"), k.FreshList(dead.Token())).Result(); n != 0 {
		t.Fatalf("%d stale fresh keys left after the next run started", n)
	}

	if err := c.WriteNextBuckets(ctx, cellsAt(v, map[string]map[string]gd{
		hour(-1):  {"Web": {5, []string{"10.5"}}, "Phone": {1, []string{"0"}}},
		hour(0):   {"Phone": {1, []string{"3"}}},
		hour(-3):  {"Gone": {0, []string{"0"}}}, // no items: no bucket
		hour(-60): {"Web": {1, []string{"1"}}},  // past its retention
	})); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{hour(-1), hour(0)} {
		for _, m := range []string{"amount", "donations", "_items"} {
			if ms, _ := f.c.PTTL(ctx, k.Fresh(c.Token(), b+":"+m)).Result(); ms <= 0 {
				t.Fatalf("fresh %s of %s has TTL %v, want the bucket's expiry", m, b, ms)
			}
		}
	}
	if n, _ := f.c.Exists(ctx, k.Fresh(c.Token(), hour(-60)+":amount")).Result(); n != 0 {
		t.Fatalf("a fresh bucket past its retention was kept")
	}
	meta, err := c.Hold(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	moves := []FenceMove{{Shard: "A", Expect: meta.Fences["A"], New: "9"}}

	// A fresh bucket hash Redis lost refuses the swap, changing nothing.
	if err := f.c.Del(ctx, k.Fresh(c.Token(), hour(0)+":donations")).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Swap(ctx, moves); !isRefused(err) {
		t.Fatalf("swap with a fresh bucket hash gone: %v, want SwapRefusedError", err)
	}
	if got := f.hash(k.BucketMeasure(hour(-2), "amount"))["Mail"]; got != "7" {
		t.Fatalf("a refused swap changed the view: Mail = %q", got)
	}
	if err := c.WriteNextBuckets(ctx, cellsAt(v, map[string]map[string]gd{hour(0): {"Phone": {1, []string{"3"}}}})); err != nil {
		t.Fatal(err)
	}

	version, err := c.Swap(ctx, moves)
	if err != nil {
		t.Fatal(err)
	}
	if version != 2 {
		t.Errorf("version = %d, want 2", version)
	}
	want := map[string]map[string]map[string]string{
		hour(-1): {"amount": {"Web": "10.5", "Phone": "0"}, "donations": {"Web": "5", "Phone": "1"}},
		hour(0):  {"amount": {"Phone": "3"}, "donations": {"Phone": "1"}},
	}
	s, err := f.store.Series(ctx, v, hourStart(-100), hourStart(10))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(s.Buckets) != fmt.Sprint(want) {
		t.Errorf("buckets after the swap = %v, want %v", s.Buckets, want)
	}
	idx := f.index(v.Name)
	if len(idx) != 2 || idx[hour(-1)] != float64(hourStart(-1).Unix()) || idx[hour(0)] != float64(hourStart(0).Unix()) {
		t.Errorf("index = %v, want the hours -1 and 0", idx)
	}
	for _, b := range []string{hour(-1), hour(0)} {
		start, _ := time.Parse(time.RFC3339, b)
		for _, m := range []string{"amount", "donations", "_items"} {
			ms, _ := f.c.PTTL(ctx, k.BucketMeasure(b, m)).Result()
			left := time.Until(v.BucketExpiry(start.Unix()))
			if ms <= 0 || ms > left+time.Second || ms < left-time.Minute {
				t.Errorf("%s of %s expires in %v, want about %v", m, b, ms, left)
			}
		}
	}
	if n, _ := f.c.Exists(ctx, k.BucketMeasure(hour(-2), "amount"), k.BucketItems(hour(-2)), k.FreshList(c.Token()),
		k.Fresh(c.Token(), hour(-1)+":amount"), k.Fresh(c.Token(), hour(0)+":_items")).Result(); n != 0 {
		t.Errorf("%d keys left of the old bucket or the fresh ones", n)
	}
	m := f.meta(v.Name)
	if m["fence:A"] != "9" || m["hold"] != "" || m["lost"] != "" {
		t.Errorf("meta after the swap = %v", m)
	}
	if msg := sub.next(); !strings.HasPrefix(msg, `{"view":"per_hour","epoch":"`+m["epoch"]+`","version":2,"reset":true,"ts_ms":`) {
		t.Errorf("message = %s, want a reset for version 2", msg)
	}
	// The daemon goes on from the swap's fences.
	f.apply(mkBucketDelta(v, "A", "9", "10", map[string]map[string]gd{hour(0): {"Phone": {1, []string{"1"}}}}))
	if got := f.hash(k.BucketMeasure(hour(0), "amount"))["Phone"]; got != "4" {
		t.Errorf("amount of hour 0 = %q after the next delta, want 4", got)
	}
}

// TestBucketedSwapNeverShowsAMix swaps bucket sets in and out, each round
// writing the round's number into every value of its own set of buckets,
// while a reader reads series: every read must be one round whole.
func TestBucketedSwapNeverShowsAMix(t *testing.T) {
	ctx := context.Background()
	v := hourlyView("mix", "paidAt", 48*time.Hour)
	f := newBucketFixture(t, v)
	round := func(r int) map[string]map[string]gd {
		out := map[string]map[string]gd{}
		for h := -(r % 3); h < 3-(r%3); h++ {
			out[hour(-h)] = map[string]gd{"Web": {int64(r + 1), []string{fmt.Sprint(r)}}, "Mail": {1, []string{fmt.Sprint(r)}}}
		}
		return out
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	var bad []string
	reads := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			s, err := f.store.Series(ctx, v, hourStart(-10), hourStart(10))
			if err != nil {
				bad = append(bad, err.Error())
				return
			}
			reads++
			if len(s.Buckets) == 0 {
				continue
			}
			var r string
			for _, ms := range s.Buckets {
				r = ms["amount"]["Mail"]
				break
			}
			var n int
			fmt.Sscan(r, &n)
			if fmt.Sprint(s.Buckets) != fmt.Sprint(seriesOf(v, round(n))) {
				bad = append(bad, fmt.Sprintf("read %v, not one round", s.Buckets))
				return
			}
		}
	}()
	for r := 0; r < 30; r++ {
		c := f.claim(v, time.Minute)
		if err := c.WriteNextBuckets(ctx, cellsAt(v, round(r))); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Hold(ctx, time.Minute); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Swap(ctx, nil); err != nil {
			t.Fatal(err)
		}
		if err := c.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	wg.Wait()
	if len(bad) > 0 {
		t.Fatal(bad[0])
	}
	if reads == 0 {
		t.Fatal("the reader read nothing")
	}
}

// seriesOf renders fresh contents as Series shows them.
func seriesOf(v *aggregate.View, buckets map[string]map[string]gd) map[string]map[string]map[string]string {
	out := map[string]map[string]map[string]string{}
	for b, groups := range buckets {
		ms := map[string]map[string]string{"amount": {}, "donations": {}}
		for g, x := range groups {
			ms["amount"][g] = x.sums[0]
			ms["donations"][g] = fmt.Sprint(x.count)
		}
		out[b] = ms
	}
	return out
}

func isRefused(err error) bool {
	var refused *SwapRefusedError
	return errors.As(err, &refused)
}
