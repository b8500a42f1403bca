package publish

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/streamtally/streamtally/aggregate"
)

func TestHoldRefusesDeltasUntilItExpires(t *testing.T) {
	ctx := context.Background()
	v := platformView("by_platform")
	f := newFixture(t, v)
	f.apply(mkDelta(v, "A", "", "3", map[string]gd{"Web": {1, []string{"2"}}}))
	meta, err := f.store.Hold(ctx, v.Name, "tok", 1500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if meta.Fences["A"] != "3" || !meta.Exists {
		t.Fatalf("Hold returned %+v, want fence A at 3", meta)
	}
	err = f.store.Apply(ctx, mkDelta(v, "A", "3", "5", map[string]gd{"Web": {1, []string{"1"}}}))
	var held *aggregate.ViewHeldError
	if !errors.As(err, &held) {
		t.Fatalf("Apply while held: %v, want a ViewHeldError", err)
	}
	if got := f.meta(v.Name)["fence:A"]; got != "3" {
		t.Errorf("fence moved to %q while held", got)
	}
	// A hold past its deadline blocks nothing: a crashed rebuild costs the
	// daemons at most the hold.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err = f.store.Apply(ctx, mkDelta(v, "A", "3", "5", map[string]gd{"Web": {1, []string{"1"}}}))
		if !errors.As(err, &held) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("Apply after the hold's deadline: %v", err)
	}
	if got := f.measure(v.Name, "amount")["Web"]; got != "3" {
		t.Errorf("amount = %q after the hold expired, want 3", got)
	}
}

func TestReleaseDropsOnlyItsOwnHold(t *testing.T) {
	ctx := context.Background()
	v := platformView("by_platform")
	f := newFixture(t, v)
	if _, err := f.store.Hold(ctx, v.Name, "mine", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := f.store.Release(ctx, v.Name, "other"); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(f.meta(v.Name)["hold"], "mine:") {
		t.Fatalf("hold = %q, want mine's kept", f.meta(v.Name)["hold"])
	}
	if err := f.store.Release(ctx, v.Name, "mine"); err != nil {
		t.Fatal(err)
	}
	if h, ok := f.meta(v.Name)["hold"]; ok {
		t.Fatalf("hold = %q after release", h)
	}
}

func TestSwapReplacesTheViewAtomicallyAndAnnouncesAReset(t *testing.T) {
	ctx := context.Background()
	v := platformView("by_platform")
	f := newFixture(t, v)
	sub := subscribe(t, f.c, f.keys(v.Name).Channel())
	f.apply(mkDelta(v, "A", "", "3", map[string]gd{"Web": {2, []string{"2"}}, "Mail": {1, []string{"7"}}}))
	sub.next()
	if err := f.store.MarkLost(ctx, v.Name, "test"); err != nil {
		t.Fatal(err)
	}
	if err := f.store.WriteNext(ctx, v, map[string]*aggregate.GroupDelta{
		"Web":   {Count: 5, Sums: []aggregate.Decimal{aggregate.MustDecimal("10.5")}},
		"Phone": {Count: 1, Sums: []aggregate.Decimal{aggregate.MustDecimal("0")}},
		"Gone":  {Count: 0, Sums: []aggregate.Decimal{aggregate.MustDecimal("0")}},
	}); err != nil {
		t.Fatal(err)
	}
	meta, err := f.store.Hold(ctx, v.Name, "tok", time.Minute)
	if err != nil {
		t.Fatal(err)
	}

	// A fence that moved since the hold refuses the swap, changing nothing.
	_, err = f.store.Swap(ctx, v, "tok", []FenceMove{{Shard: "A", Expect: "2", New: "9"}})
	var refused *SwapRefusedError
	if !errors.As(err, &refused) {
		t.Fatalf("Swap with a stale fence: %v, want SwapRefusedError", err)
	}
	if _, err := f.store.Swap(ctx, v, "other", []FenceMove{{Shard: "A", Expect: meta.Fences["A"], New: "9"}}); !errors.As(err, &refused) {
		t.Fatalf("Swap with another token: %v, want SwapRefusedError", err)
	}
	if got := f.measure(v.Name, "amount")["Mail"]; got != "7" {
		t.Fatalf("a refused swap changed the view: Mail = %q", got)
	}

	version, err := f.store.Swap(ctx, v, "tok", []FenceMove{{Shard: "A", Expect: meta.Fences["A"], New: "9"}, {Shard: "B", Expect: "", New: "4"}})
	if err != nil {
		t.Fatal(err)
	}
	if version != 2 {
		t.Errorf("version = %d, want 2", version)
	}
	want := map[string]map[string]string{
		"amount":    {"Web": "10.5", "Phone": "0"},
		"donations": {"Web": "5", "Phone": "1"},
	}
	for m, groups := range want {
		got := f.measure(v.Name, m)
		if len(got) != len(groups) {
			t.Errorf("%s = %v, want %v", m, got, groups)
		}
		for g, x := range groups {
			if got[g] != x {
				t.Errorf("%s[%s] = %q, want %q", m, g, got[g], x)
			}
		}
	}
	meta2 := f.meta(v.Name)
	if meta2["fence:A"] != "9" || meta2["fence:B"] != "4" {
		t.Errorf("fences = %v, want A 9, B 4", meta2)
	}
	if _, ok := meta2["lost"]; ok {
		t.Errorf("lost still set after the swap")
	}
	if _, ok := meta2["hold"]; ok {
		t.Errorf("hold still set after the swap")
	}
	msg := sub.next()
	if !strings.HasPrefix(msg, `{"view":"by_platform","version":2,"reset":true,"ts_ms":`) {
		t.Errorf("message = %s, want a reset for version 2", msg)
	}
	if n, _ := f.c.Exists(ctx, f.keys(v.Name).Next("amount"), f.keys(v.Name).Next("_items")).Result(); n != 0 {
		t.Errorf("%d fresh keys left after the swap", n)
	}
	// The daemon goes on from the swap's fences.
	f.apply(mkDelta(v, "A", "9", "10", map[string]gd{"Web": {1, []string{"1"}}}))
	if got := f.measure(v.Name, "amount")["Web"]; got != "11.5" {
		t.Errorf("amount[Web] = %q after the next delta, want 11.5", got)
	}
}
