package consumer_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/streamtally/streamtally/consumer"
	"github.com/streamtally/streamtally/internal/streamstest"
	"github.com/streamtally/streamtally/lease"
	"github.com/streamtally/streamtally/source/ddbstreams"
)

// TestWorkersOverMemoryLeasesShareShardsAndHandOverWithoutLoss is the
// worker's logic with no service: the stream is the project's Streams
// protocol server, the leases live in lease.Memory. Two workers share
// three shards, one of them a child that may start only after its
// parent ends; the first worker stops and hands its shards over while
// writes go on. Every record is handled exactly once, each shard's in
// order, and the child's after all of its parent's.
func TestWorkersOverMemoryLeasesShareShardsAndHandOverWithoutLoss(t *testing.T) {
	t.Parallel()
	srv := streamstest.NewServer(t)
	src := ddbstreams.New(newStreams(t, srv), srv.StreamARN)
	mem := lease.NewMemory()
	put := func(shard string, n int) []string {
		recs := make([]streamstest.Record, n)
		for i := range recs {
			recs[i] = streamstest.Record{NewImage: streamstest.Item("pk", fmt.Sprintf("%s-%d", shard, rand.Uint64()), "n", i)}
		}
		return srv.Append(shard, recs...)
	}
	want := map[string][]string{}
	srv.AddShard("shardId-1-parent", "")
	want["shardId-1-parent"] = put("shardId-1-parent", 5)
	srv.CloseShard("shardId-1-parent")
	srv.AddShard("shardId-2-child", "shardId-1-parent")
	srv.AddShard("shardId-3-other", "")
	want["shardId-2-child"] = put("shardId-2-child", 4)
	want["shardId-3-other"] = put("shardId-3-other", 4)

	h := &recorder{}
	start := func(id string) (stop func()) {
		w := consumer.NewWorker(src, mem.Worker(id, testLease), h, options(id), testLogger(t))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		stopped := false
		stop = func() {
			if !stopped {
				stopped = true
				cancel()
				if err := <-done; err != nil {
					t.Errorf("worker %s: %v", id, err)
				}
			}
		}
		t.Cleanup(stop)
		return stop
	}
	handled := func() map[string][]string {
		out := map[string][]string{}
		for _, c := range h.allCalls() {
			if c.err == nil {
				out[c.shard] = append(out[c.shard], c.seqs...)
			}
		}
		return out
	}
	complete := func() bool {
		got := handled()
		for shard, seqs := range want {
			if len(got[shard]) < len(seqs) {
				return false
			}
		}
		return true
	}

	stopA := start("a")
	start("b")
	waitFor(t, 10*time.Second, "both workers read every shard", complete)
	stopA()
	want["shardId-2-child"] = append(want["shardId-2-child"], put("shardId-2-child", 3)...)
	want["shardId-3-other"] = append(want["shardId-3-other"], put("shardId-3-other", 3)...)
	waitFor(t, 10*time.Second, "b reads what a left", complete)

	got := handled()
	for shard, seqs := range want {
		if !slices.Equal(got[shard], seqs) {
			t.Errorf("shard %s handled %q, want each of %q once, in order", shard, got[shard], seqs)
		}
	}
	var parentLast, childFirst int64
	for _, c := range h.allCalls() {
		switch {
		case c.shard == "shardId-1-parent" && c.err == nil:
			parentLast = max(parentLast, c.at)
		case c.shard == "shardId-2-child" && childFirst == 0:
			childFirst = c.at
		}
	}
	if childFirst < parentLast {
		t.Errorf("the child was handled (call %d) before its parent was done (call %d)", childFirst, parentLast)
	}
	leases, _, _ := mem.Worker("observer", testLease).List(t.Context())
	if cp := leases["shardId-1-parent"].Checkpoint; cp != lease.ShardEnd {
		t.Errorf("parent checkpoint %q, want %s", cp, lease.ShardEnd)
	}
}

// slowTable is a lease table that is still being created: Init waits
// until it is cancelled, as the SDK's table waiter does.
type slowTable struct{ *lease.MemoryWorker }

func (slowTable) Init(ctx context.Context) error {
	<-ctx.Done()
	return fmt.Errorf("wait for lease table: %w", ctx.Err())
}

// A SIGTERM that arrives while the lease table is still being created
// (an ECS task stopped seconds after it started) is a clean stop with
// nothing to drain, not a failure: exit status 1 would make the
// scheduler and the operator treat an ordinary deploy as a crash.
func TestWorkerStoppedBeforeTheLeaseTableIsReadyStopsCleanly(t *testing.T) {
	t.Parallel()
	srv := streamstest.NewServer(t)
	src := ddbstreams.New(newStreams(t, srv), srv.StreamARN)
	leases := slowTable{lease.NewMemory().Worker("w1", testLease)}
	w := consumer.NewWorker(src, leases, &recorder{}, options("w1"), testLogger(t))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := w.Run(ctx); err != nil {
		t.Fatalf("Run stopped while waiting for the lease table: %v, want a clean stop", err)
	}
}
