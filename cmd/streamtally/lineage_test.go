package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/internal/streamstest"
	"github.com/streamtally/streamtally/internal/testenv"
)

// TestShardSplitsFoldInOrder runs the daemon over a stream whose shards
// split twice (DynamoDB Local never splits, so a protocol server plays the
// stream): items inserted in a parent shard are moved, changed and deleted
// in its children and grandchild. Counters must end exact, and every shard
// must end checkpointed.
func TestShardSplitsFoldInOrder(t *testing.T) {
	srv := streamstest.NewServer(t)
	srv.SetDescribePageSize(2)
	r := rand.New(rand.NewPCG(11, 12))
	platforms := []string{"Web", "Phone", "Mail"}
	type item struct {
		platform string
		cents    int64
	}
	table := map[int]item{}
	img := func(k int, it item) streamstest.Image {
		return streamstest.Item("pk", strconv.Itoa(k), "platform", it.platform,
			"amount", streamstest.N(fmt.Sprintf("%d.%02d", it.cents/100, it.cents%100)))
	}
	change := func(shard string, k int) {
		old, exists := table[k]
		switch {
		case !exists:
			it := item{platforms[r.IntN(3)], r.Int64N(100000)}
			table[k] = it
			srv.Append(shard, streamstest.Record{NewImage: img(k, it)})
		case r.IntN(4) == 0:
			delete(table, k)
			srv.Append(shard, streamstest.Record{OldImage: img(k, old)})
		default:
			it := item{platforms[r.IntN(3)], r.Int64N(100000)}
			table[k] = it
			srv.Append(shard, streamstest.Record{OldImage: img(k, old), NewImage: img(k, it)})
		}
	}
	// Child shard IDs sort before their parent's, so reading in ID order
	// alone would fold a MODIFY before its INSERT.
	const parent, c1, c2, g1, other = "shardId-9-parent", "shardId-5-c1", "shardId-6-c2", "shardId-1-g1", "shardId-7-other"
	srv.AddShard(parent, "")
	srv.AddShard(other, "")
	for k := 0; k < 200; k++ {
		change(parent, k)
		change(other, 1000+k)
	}
	srv.CloseShard(parent)
	srv.AddShard(c1, parent)
	srv.AddShard(c2, parent)
	for i := 0; i < 600; i++ {
		k := r.IntN(200)
		if k%2 == 0 {
			change(c1, k)
		} else {
			change(c2, k)
		}
	}
	srv.CloseShard(c1)
	srv.AddShard(g1, c1)
	for i := 0; i < 300; i++ {
		change(g1, 2*r.IntN(100))
	}

	e := newEnv(t)
	cfg := fmt.Sprintf(`
source:
  stream_arn: %s
  endpoint: %s
  region: us-east-1
  poll_interval: 50ms
  batch_size: 37
checkpoint:
  app: %s
  endpoint: %s
  worker_id: w1
  lease_duration: 3s
  sync_interval: 200ms
redis:
  addr: %s
  prefix: %s
metrics:
  addr: 127.0.0.1:0
`, srv.StreamARN, srv.URL, e.app, testenv.DynamoDB(t), e.redisAddr, e.prefix) + viewsYAML
	path := filepath.Join(e.dir, "lineage.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	d := e.startWith("w1", path)

	want := map[string]map[string]string{"donations": {}, "amount": {}}
	sums := map[string]aggregate.Decimal{}
	counts := map[string]int64{}
	for _, it := range table {
		counts[it.platform]++
		sums[it.platform] = sums[it.platform].Add(aggregate.MustDecimal(fmt.Sprintf("%d.%02d", it.cents/100, it.cents%100)))
	}
	for p, n := range counts {
		want["donations"][p] = strconv.FormatInt(n, 10)
		want["amount"][p] = sums[p].String()
	}
	var view *aggregate.View
	for _, v := range e.views {
		if v.Name == "by_platform" {
			view = v
		}
	}
	waitFor(t, 60*time.Second, "the counters to equal the table", func() bool {
		snap, err := e.store.Snapshot(context.Background(), view)
		return err == nil && fmt.Sprint(snap.Measures) == fmt.Sprint(want)
	})
	waitFor(t, 30*time.Second, "every closed shard to be checkpointed as ended", func() bool {
		out := e.checkpoints()
		return out[parent] == "SHARD_END" && out[c1] == "SHARD_END"
	})
	if code, _ := d.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	t.Logf("%d items over 5 shards in 3 generations: exact; checkpoints %v", len(table), e.checkpoints())
}
