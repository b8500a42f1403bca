package publish

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally/aggregate"
)

// claim takes view's recount lease for the test, failing it otherwise.
func (f *fixture) claim(v *aggregate.View, ttl time.Duration) *Claim {
	f.t.Helper()
	c, err := f.store.ClaimRecount(context.Background(), v, "test run", ttl)
	if err != nil {
		f.t.Fatalf("ClaimRecount(%s): %v", v.Name, err)
	}
	return c
}

func cells(groups map[string]gd) map[string]*aggregate.Counters {
	out := map[string]*aggregate.Counters{}
	for g, x := range groups {
		gdl := &aggregate.Counters{Count: x.count}
		for _, s := range x.sums {
			gdl.Sums = append(gdl.Sums, aggregate.MustDecimal(s))
		}
		out[g] = gdl
	}
	return out
}

func TestHoldRefusesDeltasUntilItExpires(t *testing.T) {
	ctx := context.Background()
	v := platformView("by_platform")
	f := newFixture(t, v)
	f.apply(mkDelta(v, "A", "", "3", map[string]gd{"Web": {1, []string{"2"}}}))
	c := f.claim(v, time.Minute)
	meta, err := c.Hold(ctx, 1500*time.Millisecond)
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

// The hold's deadline is set on Redis's clock and must be judged by it: a
// daemon whose clock runs an hour ahead would otherwise ignore every hold,
// and one an hour behind would wait out a dead run's hold for an hour.
func TestHoldIsJudgedByRedisClockNotTheDaemons(t *testing.T) {
	ctx := context.Background()
	v := platformView("by_platform")
	f := newFixture(t, v)
	f.apply(mkDelta(v, "A", "", "3", map[string]gd{"Web": {1, []string{"2"}}}))

	ahead := NewRedis(f.c, f.prefix, []*aggregate.View{v})
	ahead.now = func() time.Time { return time.Now().Add(time.Hour) }
	c := f.claim(v, time.Minute)
	if _, err := c.Hold(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	err := ahead.Apply(ctx, mkDelta(v, "A", "3", "5", map[string]gd{"Web": {1, []string{"1"}}}))
	var held *aggregate.ViewHeldError
	if !errors.As(err, &held) {
		t.Fatalf("Apply by a daemon an hour ahead, while held: %v, want a ViewHeldError", err)
	}
	if err := c.ReleaseHold(ctx); err != nil {
		t.Fatal(err)
	}

	behind := NewRedis(f.c, f.prefix, []*aggregate.View{v})
	behind.now = func() time.Time { return time.Now().Add(-time.Hour) }
	if _, err := c.Hold(ctx, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if err := behind.Apply(ctx, mkDelta(v, "A", "3", "5", map[string]gd{"Web": {1, []string{"1"}}})); err != nil {
		t.Fatalf("Apply by a daemon an hour behind, after the hold's deadline: %v, want it applied", err)
	}
}

func TestReleaseHoldDropsOnlyItsOwnHold(t *testing.T) {
	ctx := context.Background()
	v := platformView("by_platform")
	f := newFixture(t, v)
	c := f.claim(v, time.Minute)
	if _, err := c.Hold(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	// Another run's release (one whose lease lapsed) leaves the hold.
	other := &Claim{r: f.store, view: v, keys: f.keys(v.Name), token: "other"}
	if err := other.ReleaseHold(ctx); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(f.meta(v.Name)["hold"], c.Token()+":") {
		t.Fatalf("hold = %q, want the run's own kept", f.meta(v.Name)["hold"])
	}
	if err := c.ReleaseHold(ctx); err != nil {
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
	epochBefore := f.meta(v.Name)["epoch"]
	if err := f.store.MarkLost(ctx, v.Name, "test"); err != nil {
		t.Fatal(err)
	}
	c := f.claim(v, time.Minute)
	if err := c.WriteNext(ctx, cells(map[string]gd{
		"Web":   {5, []string{"10.5"}},
		"Phone": {1, []string{"0"}},
		"Gone":  {0, []string{"0"}},
	})); err != nil {
		t.Fatal(err)
	}
	meta, err := c.Hold(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}

	// A fence that moved since the hold refuses the swap, changing nothing.
	_, err = c.Swap(ctx, []FenceMove{{Shard: "A", Expect: "2", New: "9"}})
	var refused *SwapRefusedError
	if !errors.As(err, &refused) {
		t.Fatalf("Swap with a stale fence: %v, want SwapRefusedError", err)
	}
	if got := f.measure(v.Name, "amount")["Mail"]; got != "7" {
		t.Fatalf("a refused swap changed the view: Mail = %q", got)
	}

	version, err := c.Swap(ctx, []FenceMove{{Shard: "A", Expect: meta.Fences["A"], New: "9"}, {Shard: "B", Expect: "", New: "4"}})
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
	epoch := meta2["epoch"]
	if epoch == "" || epoch == epochBefore {
		t.Errorf("epoch after the swap = %q, before %q: want a new one", epoch, epochBefore)
	}
	msg := sub.next()
	if want := `{"view":"by_platform","epoch":"` + epoch + `","version":2,"reset":true,"ts_ms":`; !strings.HasPrefix(msg, want) {
		t.Errorf("message = %s, want a reset for version 2 starting %s", msg, want)
	}
	k := f.keys(v.Name)
	if n, _ := f.c.Exists(ctx, k.Fresh(c.Token(), "amount"), k.Fresh(c.Token(), "_items"), k.FreshList(c.Token())).Result(); n != 0 {
		t.Errorf("%d fresh keys left after the swap", n)
	}
	if runs, _ := f.c.SMembers(ctx, k.Runs()).Result(); len(runs) != 0 {
		t.Errorf("runs with fresh keys after the swap = %v, want none", runs)
	}
	// The daemon goes on from the swap's fences.
	f.apply(mkDelta(v, "A", "9", "10", map[string]gd{"Web": {1, []string{"1"}}}))
	if got := f.measure(v.Name, "amount")["Web"]; got != "11.5" {
		t.Errorf("amount[Web] = %q after the next delta, want 11.5", got)
	}
}

// Two recounts of one view at once used to empty it: each cleared the
// other's fresh keys, and the swap took a missing fresh key for "no
// groups". Now the second refuses, naming the first, until the first's
// lease ends.
func TestSecondRecountOfAViewIsRefusedNamingTheFirst(t *testing.T) {
	ctx := context.Background()
	v := platformView("by_platform")
	f := newFixture(t, v)
	first, err := f.store.ClaimRecount(ctx, v, "backfill (pid 1 on a)", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.store.ClaimRecount(ctx, v, "rebuild (pid 2 on b)", 30*time.Second)
	var busy *RecountBusyError
	if !errors.As(err, &busy) {
		t.Fatalf("second ClaimRecount: %v, want a RecountBusyError", err)
	}
	if busy.Holder != "backfill (pid 1 on a)" {
		t.Errorf("holder = %q, want the first run's description", busy.Holder)
	}
	if left := time.Until(busy.Until); left < 20*time.Second || left > 31*time.Second {
		t.Errorf("the first run's lease ends in %v, want about 30s", left)
	}
	if msg := err.Error(); !strings.Contains(msg, "by_platform") || !strings.Contains(msg, "backfill (pid 1 on a)") || !strings.Contains(msg, busy.Until.UTC().Format(time.RFC3339)) {
		t.Errorf("error = %q, want the view, the holder and when its lease ends", msg)
	}
	if err := first.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.ClaimRecount(ctx, v, "rebuild (pid 2 on b)", 30*time.Second); err != nil {
		t.Fatalf("ClaimRecount after the first released: %v", err)
	}
}

// A run that dies frees the view once its lease lapses, and the next run
// clears the dead run's fresh keys; the dead run, should it wake up, can
// neither write fresh keys, hold, nor swap.
func TestDeadRecountLapsesAndCannotComeBack(t *testing.T) {
	ctx := context.Background()
	v := platformView("by_platform")
	f := newFixture(t, v)
	f.apply(mkDelta(v, "A", "", "3", map[string]gd{"Web": {2, []string{"2"}}}))
	dead := f.claim(v, 400*time.Millisecond)
	if err := dead.WriteNext(ctx, cells(map[string]gd{"Zombie": {9, []string{"9"}}})); err != nil {
		t.Fatal(err)
	}
	deadKey := f.keys(v.Name).Fresh(dead.Token(), "amount")
	if n, _ := f.c.Exists(ctx, deadKey).Result(); n != 1 {
		t.Fatalf("the first run's fresh key %s was not written", deadKey)
	}
	time.Sleep(600 * time.Millisecond)

	next := f.claim(v, time.Minute)
	if n, _ := f.c.Exists(ctx, deadKey).Result(); n != 0 {
		t.Errorf("the dead run's fresh key %s survived the next run's start", deadKey)
	}
	if err := dead.Renew(ctx); !errors.Is(err, ErrRecountLeaseLost) {
		t.Errorf("dead run's Renew: %v, want ErrRecountLeaseLost", err)
	}
	if err := dead.WriteNext(ctx, cells(map[string]gd{"Zombie": {9, []string{"9"}}})); !errors.Is(err, ErrRecountLeaseLost) {
		t.Errorf("dead run's WriteNext: %v, want ErrRecountLeaseLost", err)
	}
	if n, _ := f.c.Exists(ctx, deadKey).Result(); n != 0 {
		t.Errorf("the dead run wrote %s after losing its lease", deadKey)
	}
	if _, err := dead.Hold(ctx, time.Minute); !errors.Is(err, ErrRecountLeaseLost) {
		t.Errorf("dead run's Hold: %v, want ErrRecountLeaseLost", err)
	}

	if err := next.WriteNext(ctx, cells(map[string]gd{"Web": {1, []string{"5"}}})); err != nil {
		t.Fatal(err)
	}
	meta, err := next.Hold(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// The dead run's swap finds the lease another's and changes nothing.
	if _, err := dead.Swap(ctx, []FenceMove{{Shard: "A", Expect: meta.Fences["A"], New: "9"}}); !isRefused(err) || !strings.Contains(err.Error(), "test run") {
		t.Fatalf("dead run's Swap: %v, want SwapRefusedError naming the holder", err)
	}
	if got := f.measure(v.Name, "amount")["Web"]; got != "2" {
		t.Fatalf("a refused swap changed the view: Web = %q", got)
	}
	if _, err := next.Swap(ctx, []FenceMove{{Shard: "A", Expect: meta.Fences["A"], New: "9"}}); err != nil {
		t.Fatal(err)
	}
	if got := f.measure(v.Name, "amount"); len(got) != 1 || got["Web"] != "5" {
		t.Errorf("amount after the live run's swap = %v, want Web 5", got)
	}
}

// The swap takes a view with no groups only when the recount wrote it as
// such. Fresh keys that vanish (Redis lost them) refuse the swap, where
// "no fresh key, so delete the live one" once emptied the view.
func TestSwapRefusesFreshKeysRedisLostAndEmptiesOnlyOnPurpose(t *testing.T) {
	ctx := context.Background()
	v := platformView("by_platform")
	f := newFixture(t, v)
	f.apply(mkDelta(v, "A", "", "3", map[string]gd{"Web": {2, []string{"2"}}}))
	c := f.claim(v, time.Minute)
	if err := c.WriteNext(ctx, cells(map[string]gd{"Web": {3, []string{"4"}}, "Mail": {1, []string{"1"}}})); err != nil {
		t.Fatal(err)
	}
	k := f.keys(v.Name)
	if err := f.c.Del(ctx, k.Fresh(c.Token(), "amount")).Err(); err != nil {
		t.Fatal(err)
	}
	meta, err := c.Hold(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	moves := []FenceMove{{Shard: "A", Expect: meta.Fences["A"], New: "9"}}
	if _, err := c.Swap(ctx, moves); !isRefused(err) || !strings.Contains(err.Error(), "lost writes") {
		t.Fatalf("Swap with a fresh hash gone: %v, want SwapRefusedError saying Redis lost writes", err)
	}
	if got := f.measure(v.Name, "amount"); got["Web"] != "2" {
		t.Fatalf("a refused swap changed the view: %v", got)
	}
	// Each group counted out explicitly: now the view is empty on purpose.
	if err := c.WriteNext(ctx, cells(map[string]gd{"Web": {0, []string{"0"}}, "Mail": {0, []string{"0"}}})); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Swap(ctx, moves); err != nil {
		t.Fatalf("Swap of a view recounted empty: %v", err)
	}
	for _, m := range []string{"amount", "donations", "_items"} {
		if n, _ := f.c.Exists(ctx, k.Measure(m)).Result(); n != 0 {
			t.Errorf("%s still exists after swapping in a view with no groups", m)
		}
	}
	if got := f.meta(v.Name)["fence:A"]; got != "9" {
		t.Errorf("fence = %q, want 9", got)
	}
}

func TestClaimReleaseLeavesNothingBehind(t *testing.T) {
	ctx := context.Background()
	v := platformView("by_platform")
	f := newFixture(t, v)
	c := f.claim(v, time.Minute)
	if err := c.WriteNext(ctx, cells(map[string]gd{"Web": {3, []string{"4"}}})); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Hold(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := c.Release(ctx); err != nil {
		t.Fatal(err)
	}
	keys, err := f.c.Keys(ctx, f.prefix+":*").Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		t.Fatal(err)
	}
	for _, key := range keys {
		if key != f.keys(v.Name).Meta() {
			t.Errorf("key %s left after Release", key)
		}
	}
	if h := f.meta(v.Name)["hold"]; h != "" {
		t.Errorf("hold %q left after Release", h)
	}
}
