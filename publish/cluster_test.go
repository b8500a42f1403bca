package publish

import (
	"context"
	"fmt"
	"maps"
	"math/big"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/config"
	"github.com/streamtally/streamtally/internal/testenv"
)

// newClusterClient connects to the test cluster through one seed, as a
// deployment does through a configuration endpoint.
func newClusterClient(t *testing.T, rc config.Redis) *redis.ClusterClient {
	t.Helper()
	rc.Addrs, rc.Cluster = testenv.RedisCluster(t)[:1], true
	rc.Addr = rc.Addrs[0]
	u, err := NewClient(rc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	c, ok := u.(*redis.ClusterClient)
	if !ok {
		t.Fatalf("NewClient with cluster set returned %T, want *redis.ClusterClient", u)
	}
	return c
}

// viewsOnDistinctMasters returns n platform views whose keys live on n
// different masters, and those masters' addresses. Only the view name
// decides the slot: it is the hash tag.
func viewsOnDistinctMasters(t *testing.T, c *redis.ClusterClient, prefix string, n int) ([]*aggregate.View, []string) {
	t.Helper()
	ctx := context.Background()
	var views []*aggregate.View
	var masters []string
	taken := map[string]bool{}
	for i := 0; len(views) < n; i++ {
		if i == 100 {
			t.Fatalf("100 view names cover only masters %v", masters)
		}
		v := platformView(fmt.Sprintf("by_platform_%d", i))
		m, err := c.MasterForKey(ctx, KeysFor(prefix, v.Name).Meta())
		if err != nil {
			t.Fatal(err)
		}
		if addr := m.Options().Addr; !taken[addr] {
			taken[addr] = true
			views, masters = append(views, v), append(masters, addr)
		}
	}
	return views, masters
}

// TestClusterStoreAcrossMasters runs the store on a three-master cluster
// with one view per master: every key and the channel of a view share its
// slot, applies and fences work through a pipeline spanning nodes, the
// snapshot is one transaction on the view's node, and the deltas reach a
// sharded subscriber (SSUBSCRIBE receives nothing a plain PUBLISH sends, so
// this also shows the store uses SPUBLISH), versions 1..n with no gap.
func TestClusterStoreAcrossMasters(t *testing.T) {
	ctx := context.Background()
	c := newClusterClient(t, config.Redis{})
	prefix := testPrefix(t)
	views, masters := viewsOnDistinctMasters(t, c, prefix, 3)
	store := NewRedis(c, prefix, views)

	subs := map[string]<-chan *redis.Message{}
	for i, v := range views {
		k := KeysFor(prefix, v.Name)
		slot, err := c.ClusterKeySlot(ctx, k.Channel()).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, key := range []string{k.Meta(), k.Items(), k.Measure("amount"), k.Measure("donations")} {
			if s, err := c.ClusterKeySlot(ctx, key).Result(); err != nil || s != slot {
				t.Fatalf("CLUSTER KEYSLOT %s = %d (%v), channel %s has %d", key, s, err, k.Channel(), slot)
			}
		}
		t.Logf("view %s: slot %d on master %s", v.Name, slot, masters[i])

		ps := c.SSubscribe(ctx, k.Channel())
		t.Cleanup(func() { ps.Close() })
		if _, err := ps.ReceiveTimeout(ctx, 5*time.Second); err != nil {
			t.Fatalf("SSUBSCRIBE %s: %v", k.Channel(), err)
		}
		subs[v.Name] = ps.Channel(redis.WithChannelSize(1000))
	}

	// Random deltas, applied round-robin over the views; want follows the
	// exact totals independently of the store.
	r := rand.New(rand.NewPCG(7, 11))
	type totals struct {
		count map[string]int64
		sum   map[string]*big.Rat
	}
	want := map[string]*totals{}
	fences := map[string]string{}
	const perView = 15
	for i := 1; i <= perView; i++ {
		for _, v := range views {
			w := want[v.Name]
			if w == nil {
				w = &totals{map[string]int64{}, map[string]*big.Rat{}}
				want[v.Name] = w
			}
			g := []string{"Web", "Phone", "Mail"}[r.IntN(3)]
			amount := fmt.Sprintf("%d.%02d", r.IntN(2000)-1000, r.IntN(100))
			w.count[g]++
			if w.sum[g] == nil {
				w.sum[g] = new(big.Rat)
			}
			w.sum[g].Add(w.sum[g], mustRat(amount))
			through := fmt.Sprint(i)
			if err := store.Apply(ctx, mkDelta(v, "shard-1", fences[v.Name], through, map[string]gd{g: {1, []string{amount}}})); err != nil {
				t.Fatalf("Apply(view %s, through %s): %v", v.Name, through, err)
			}
			fences[v.Name] = through
		}
	}

	got, err := store.Fences(ctx, "shard-1")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range views {
		if string(got[v.Name].Seq) != fmt.Sprint(perView) {
			t.Errorf("fence of view %s = %+v, want %d", v.Name, got[v.Name], perView)
		}
	}

	for _, v := range views {
		snap, err := store.Snapshot(ctx, v)
		if err != nil {
			t.Fatal(err)
		}
		w := want[v.Name]
		wantMeasures := map[string]map[string]string{"amount": {}, "donations": {}}
		for g, n := range w.count {
			wantMeasures["donations"][g] = fmt.Sprint(n)
			wantMeasures["amount"][g] = ratString(w.sum[g])
		}
		if snap.Version != perView || !maps.EqualFunc(snap.Measures, wantMeasures, maps.Equal) {
			t.Errorf("snapshot of %s = version %d %v, want version %d %v", v.Name, snap.Version, snap.Measures, perView, wantMeasures)
		}

		// The deltas, summed, give the snapshot.
		sums := map[string]map[string]*big.Rat{"amount": {}, "donations": {}}
		for i := 1; i <= perView; i++ {
			var m pubMessage
			select {
			case msg := <-subs[v.Name]:
				m = parseMessage(t, msg.Payload)
			case <-time.After(5 * time.Second):
				t.Fatalf("view %s: message %d did not arrive on the sharded channel", v.Name, i)
			}
			if m.View != v.Name || m.Version != int64(i) {
				t.Fatalf("view %s: message %d is view %s version %d", v.Name, i, m.View, m.Version)
			}
			for meas, groups := range m.Deltas {
				for g, d := range groups {
					if sums[meas][g] == nil {
						sums[meas][g] = new(big.Rat)
					}
					sums[meas][g].Add(sums[meas][g], mustRat(d))
				}
			}
		}
		summed := map[string]map[string]string{"amount": {}, "donations": {}}
		for meas, groups := range sums {
			for g, s := range groups {
				summed[meas][g] = ratString(s)
			}
		}
		if !maps.EqualFunc(summed, snap.Measures, maps.Equal) {
			t.Errorf("view %s: deltas sum to %v, hashes hold %v", v.Name, summed, snap.Measures)
		}
	}
}
