package publish

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/internal/testenv"
)

// BenchmarkFoldApply measures the daemon's work per batch after decoding:
// Tally.HandleBatch folds a page of 1000 stream records (60% inserts, 30%
// updates that move an item or change its amount, 10% deletes) into a view
// with a count and a decimal sum, and applies it with one script call to a
// real redis-server. The sub-benchmarks vary how many distinct groups the
// view has. records/s is wall time, records/cpu-s counts the CPU time of
// this process and of redis-server (run with -cpu 1 for one core).
func BenchmarkFoldApply(b *testing.B) {
	for _, groups := range []int{3, 100, 10_000, 1_000_000} {
		b.Run(fmt.Sprintf("groups=%d", groups), func(b *testing.B) {
			benchFoldApply(b, groups)
		})
	}
}

const benchPage = 1000

func benchFoldApply(b *testing.B, groups int) {
	c := newBenchClient(b)
	prefix := fmt.Sprintf("bench.%d.%d", time.Now().UnixNano(), prefixSeq.Add(1))
	view := aggregate.NewView(aggregate.Spec{
		Name:    "by_group",
		GroupBy: []string{"group"},
		Measures: []aggregate.MeasureSpec{
			{Name: "amount", Func: "sum", Attr: "amount"},
			{Name: "items", Func: "count"},
		},
	})
	views := []*aggregate.View{view}
	tally := aggregate.NewTally(views, NewRedis(c, prefix, views), slog.New(slog.NewTextHandler(io.Discard, nil)))
	b.Cleanup(func() { dropPrefix(b, c, prefix) })

	ctx := context.Background()
	gen := newHistory(groups)
	after := ""
	recs := make([]streamtally.Record, benchPage)
	redisCPU := serverCPU(b, c)
	var cpu time.Duration // this process's CPU time while the timer runs
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		gen.page(recs)
		b.StartTimer()
		start := processCPU()
		if err := tally.HandleBatch(ctx, "shard-0", streamtally.Seq(after), recs); err != nil {
			b.Fatal(err)
		}
		cpu += processCPU() - start
		after = string(recs[len(recs)-1].SequenceNumber)
	}
	b.StopTimer()
	redisCPU = serverCPU(b, c) - redisCPU
	n := float64(b.N * benchPage)
	b.ReportMetric(n/b.Elapsed().Seconds(), "records/s")
	// Per core: records per CPU second, the daemon's and Redis's together.
	// On a busy machine wall time also counts waiting for a CPU; this
	// does not.
	b.ReportMetric(n/(cpu+redisCPU).Seconds(), "records/cpu-s")
	b.ReportMetric(float64(cpu.Nanoseconds())/n, "client-cpu-ns/record")
	b.ReportMetric(float64(redisCPU.Nanoseconds())/n, "redis-cpu-ns/record")
}

// processCPU is the CPU time (user and system) this process used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// serverCPU is the CPU time the redis-server used so far (INFO cpu).
func serverCPU(b *testing.B, c *redis.Client) time.Duration {
	info, err := c.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(info, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
		if k == "used_cpu_user" || k == "used_cpu_sys" {
			f, _ := strconv.ParseFloat(v, 64)
			total += f
		}
	}
	return time.Duration(total * float64(time.Second))
}

func newBenchClient(b *testing.B) *redis.Client {
	b.Helper()
	c := redis.NewClient(&redis.Options{Addr: testenv.Redis(b)})
	b.Cleanup(func() { c.Close() })
	return c
}

// dropPrefix deletes the benchmark's keys, so that a million groups do not
// stay in the shared server for the next sub-benchmark.
func dropPrefix(b *testing.B, c *redis.Client, prefix string) {
	ctx := context.Background()
	iter := c.Scan(ctx, 0, prefix+":*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		b.Logf("scan %s: %v", prefix, err)
	}
	for _, k := range keys {
		c.Unlink(ctx, k)
	}
}

// history generates a consistent change history of items spread over a
// number of groups: updates and deletes carry the item's current image as
// their old image, as DynamoDB Streams does.
type history struct {
	rnd    *rand.Rand
	groups int
	seq    uint64
	items  []streamtally.Image // live items; an update or delete picks one
	next   int
}

func newHistory(groups int) *history {
	return &history{rnd: rand.New(rand.NewPCG(1, uint64(groups))), groups: groups, seq: 1e18}
}

func (h *history) image(pk string) streamtally.Image {
	return streamtally.Image{
		"pk":     &streamtally.S{Value: pk},
		"group":  &streamtally.S{Value: "g" + strconv.Itoa(h.rnd.IntN(h.groups))},
		"amount": &streamtally.N{Value: strconv.Itoa(h.rnd.IntN(100000)/100) + "." + strconv.Itoa(10+h.rnd.IntN(90))},
	}
}

// page fills recs with the next records of the history.
func (h *history) page(recs []streamtally.Record) {
	for i := range recs {
		h.seq++
		r := streamtally.Record{Shard: "shard-0", SequenceNumber: streamtally.Seq(strconv.FormatUint(h.seq, 10)), Created: time.Now()}
		p := h.rnd.IntN(10)
		switch {
		case p < 6 || len(h.items) < 100:
			h.next++
			pk := "item-" + strconv.Itoa(h.next)
			r.Event, r.New = streamtally.Insert, h.image(pk)
			h.items = append(h.items, r.New)
		case p < 9:
			j := h.rnd.IntN(len(h.items))
			old := h.items[j]
			r.Event, r.Old, r.New = streamtally.Modify, old, h.image(old["pk"].(*streamtally.S).Value)
			h.items[j] = r.New
		default:
			j := h.rnd.IntN(len(h.items))
			r.Event, r.Old = streamtally.Remove, h.items[j]
			h.items[j] = h.items[len(h.items)-1]
			h.items = h.items[:len(h.items)-1]
		}
		r.Keys = streamtally.Image{"pk": (r.New)["pk"]}
		if r.New == nil {
			r.Keys = streamtally.Image{"pk": r.Old["pk"]}
		}
		recs[i] = r
	}
}
