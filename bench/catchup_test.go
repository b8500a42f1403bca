//go:build bench

package bench

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/internal/loadgen"
	"github.com/streamtally/streamtally/internal/testenv"
	"github.com/streamtally/streamtally/publish"
)

// The fundraiser view, for the daemon and, measure for measure, for the
// naive consumer.
const platformViewYAML = `  - name: by_platform
    group_by: [platform]
    measures:
      donations: count
      amount: sum(amount)
`

var platformNaive = naiveView{name: "by_platform", group: "platform",
	measures: []naiveMeasure{{name: "donations"}, {name: "amount", sumAttr: "amount"}}}

func platformViews() []*aggregate.View {
	return aggregate.NewViews([]aggregate.Spec{{Name: "by_platform", GroupBy: []string{"platform"},
		Measures: []aggregate.MeasureSpec{{Name: "amount", Func: "sum", Attr: "amount"}, {Name: "donations", Func: "count"}}}})
}

// daemonRun is one catch-up of the daemon.
type daemonRun struct {
	took     time.Duration
	startup  time.Duration // of took, until the first lease was held
	use      usage
	commands int64 // Redis commands of the run, those run by scripts included
	sent     int64 // commands the daemon sent
	byCmd    map[string]cmdStat
	scripts  int64 // of which script calls
	batches  float64
}

// catchUpDaemon runs the daemon over the whole stream with its Redis at
// redisAddr (served by the redis-server at serverAddr), and checks, on
// the first run, that every counter equals a full scan of the table.
func catchUpDaemon(t *testing.T, bin, endpoint, app, serverAddr, redisAddr string, n int, s settings, verify bool) daemonRun {
	t.Helper()
	d := startDaemon(t, bin, daemonConfig{Endpoint: endpoint, Table: tableName, App: app, Redis: redisAddr, Poll: s.PollInterval, Views: platformViewYAML})
	var r daemonRun
	r.took, r.startup = d.waitRecords(n, 15*time.Minute)
	m := d.scrape()
	r.batches = m["streamtally_batches_total"]
	r.use = d.usage()
	stats := commandStats(t, serverAddr)
	r.commands = workCommands(stats)
	r.sent = sentCommands(stats, daemonSends)
	r.byCmd = stats
	// The first call of a script is an EVALSHA that fails (NOSCRIPT) and
	// an EVAL; a script call is one that ran.
	r.scripts = stats["evalsha"].calls - stats["evalsha"].failed + stats["eval"].calls - stats["eval"].failed
	d.stop()
	if verify {
		ctx := context.Background()
		rdb := redis.NewClient(&redis.Options{Addr: serverAddr})
		defer rdb.Close()
		views := platformViews()
		diffs, err := loadgen.Check(ctx, dynamoClient(t, endpoint), tableName, publish.NewRedis(rdb, "tally", views), views)
		if err != nil {
			t.Fatalf("compare with a full scan: %v", err)
		}
		for _, d := range diffs {
			t.Errorf("after catch-up, Redis differs from a full scan: %s", d)
		}
	}
	return r
}

// catchUp fills a private DynamoDB Local with change records and measures
// how long the bare reader, the daemon and the naive consumer take to
// drain them, on loopback and through the delay line.
func catchUp(t *testing.T, tab *table, s settings, bin string) {
	ctx := context.Background()
	endpoint := testenv.NewDynamoDB(t)
	ddb := dynamoClient(t, endpoint)
	if err := loadgen.CreateTable(ctx, ddb, tableName); err != nil {
		t.Fatal(err)
	}
	f := fill(t, ddb, s.Records, 16)
	t.Logf("filled %d records in %s", f.Records, f.Took)
	arn := streamARN(t, ddb)
	streams := streamsClient(t, endpoint)
	shards, err := shardsInOrder(ctx, streams, arn)
	if err != nil {
		t.Fatal(err)
	}
	n := f.Records

	sec := tab.section(fmt.Sprintf("2. Catch-up: %s change records already in the stream", thousands(int64(n))))
	sec.add("stream", fmt.Sprintf("%s inserts, %s updates, %s deletes in %d shard(s); written by 16 parallel BatchWriteItem writers in %s (%s)",
		thousands(int64(f.Inserts)), thousands(int64(f.Updates)), thousands(int64(f.Deletes)), len(shards), secs(f.Took), rate(float64(n)/f.Took.Seconds())))

	// The physical limit: GetRecords alone.
	var bare []time.Duration
	for range s.Runs {
		start := time.Now()
		got, err := bareReader(ctx, streams, arn, n)
		if err != nil || got != n {
			t.Fatalf("bare reader read %d of %d records: %v", got, n, err)
		}
		bare = append(bare, time.Since(start))
	}
	bareT := medianDuration(bare)
	sec.add("bare reader (GetRecords only, records thrown away): the physical limit", fmt.Sprintf("%s (%s)", secs(bareT), rate(float64(n)/bareT.Seconds())))

	// The daemon on loopback.
	var loop []daemonRun
	for i := range s.Runs {
		addr := newRedis(t)
		loop = append(loop, catchUpDaemon(t, bin, endpoint, fmt.Sprintf("bench-loopback-%d", i), addr, addr, n, s, i == 0))
	}
	loopT := medianDuration(pick(loop, func(r daemonRun) time.Duration { return r.took }))
	loopStart := medianDuration(pick(loop, func(r daemonRun) time.Duration { return r.startup }))
	sec.check("streamtally, Redis on loopback (process start to last record checkpointed)",
		fmt.Sprintf("%s (%s; start-up to the first lease %s of it), %.2fx the bare reader", secs(loopT), rate(float64(n)/loopT.Seconds()), secs(loopStart), loopT.Seconds()/bareT.Seconds()),
		"<= 1.5x the bare reader", loopT.Seconds() <= 1.5*bareT.Seconds())

	// The naive consumer on loopback, over every record.
	naiveAddr := newRedis(t)
	naiveLoop := runNaive(t, streams, arn, naiveAddr, n)
	naiveStats := commandStats(t, naiveAddr)
	sec.add("naive consumer, Redis on loopback",
		fmt.Sprintf("%s (%s); streamtally is %.1fx faster", secs(naiveLoop), rate(float64(n)/naiveLoop.Seconds()), naiveLoop.Seconds()/loopT.Seconds()))

	// Through the delay line.
	direct := newRedis(t)
	line := newDelayLine(t, direct, s.OneWay)
	rttDirect, rttLine := pingRTT(t, direct, 2000), pingRTT(t, line.Addr(), 2000)
	sec.add("round trip of a Redis PING (median of 2000)", fmt.Sprintf("loopback %s; through the delay line %s (asked: %s each way)", micros(rttDirect), micros(rttLine), s.OneWay))
	var slow []daemonRun
	for i := range s.Runs {
		addr := newRedis(t)
		l := newDelayLine(t, addr, s.OneWay)
		slow = append(slow, catchUpDaemon(t, bin, endpoint, fmt.Sprintf("bench-slowed-%d", i), addr, l.Addr(), n, s, false))
	}
	slowT := medianDuration(pick(slow, func(r daemonRun) time.Duration { return r.took }))
	sec.add("streamtally, Redis through the delay line", fmt.Sprintf("%s (%s)", secs(slowT), rate(float64(n)/slowT.Seconds())))

	naiveN := min(s.NaiveSlow, n)
	naiveSlowAddr := newRedis(t)
	nl := newDelayLine(t, naiveSlowAddr, s.OneWay)
	naiveSlow := runNaive(t, streams, arn, nl.Addr(), naiveN)
	naiveRate := float64(naiveN) / naiveSlow.Seconds()
	extrapolated := time.Duration(float64(n) / naiveRate * float64(time.Second))
	ratio := extrapolated.Seconds() / slowT.Seconds()
	what := "naive consumer, Redis through the delay line"
	if naiveN < n {
		what += fmt.Sprintf(" (measured over the first %s records, time for all extrapolated)", thousands(int64(naiveN)))
	}
	sec.add(what, fmt.Sprintf("%s for %s records (%s); all %s: %s", secs(naiveSlow), thousands(int64(naiveN)), rate(naiveRate), thousands(int64(n)), secs(extrapolated)))
	sec.check("streamtally vs naive through the delay line", fmt.Sprintf("%.0fx faster", ratio), ">= 50x", ratio >= 50)
	const awsShardLimit = 5 * 1000 // GetRecords: 5 calls a second a shard, 1000 records a call
	sec.add("DynamoDB Streams' own limit per shard on AWS (5 GetRecords a second, 1 000 records each)",
		fmt.Sprintf("%s; streamtally drains %.1fx that on loopback and %.1fx through the delay line, so on AWS the stream is the bottleneck, not the daemon",
			rate(awsShardLimit), float64(n)/loopT.Seconds()/awsShardLimit, float64(n)/slowT.Seconds()/awsShardLimit))
	sec.note("Each streamtally and bare-reader figure is the median of %d runs over the same stream; every daemon run has its own lease table and redis-server. The first loopback run is checked against a full scan of the table.", s.Runs)
	sec.note("The naive consumer sends %.1f Redis commands per record here (HINCRBY/HINCRBYFLOAT and PUBLISH per measure, for the old and the new image), each waiting for its reply.",
		float64(workCommands(naiveStats))/float64(n))

	resources(tab, s, n, loop, slow, workCommands(naiveStats))
}

func pick[T, U any](xs []T, f func(T) U) []U {
	out := make([]U, len(xs))
	for i, x := range xs {
		out[i] = f(x)
	}
	return out
}

func runNaive(t *testing.T, streams *dynamodbstreams.Client, arn, redisAddr string, n int) time.Duration {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr, PoolSize: 1})
	defer rdb.Close()
	c := &naiveConsumer{streams: streams, rdb: rdb, views: []naiveView{platformNaive}}
	start := time.Now()
	got, err := c.run(context.Background(), arn, n, 0)
	if err != nil || got != n {
		t.Fatalf("naive consumer handled %d of %d records: %v", got, n, err)
	}
	return time.Since(start)
}

// resources reports what the daemon used during the loopback catch-up.
func resources(tab *table, s settings, n int, loop, slow []daemonRun, naiveCommands int64) {
	sec := tab.section("4. Resources of the daemon during catch-up")
	var peak int64
	for _, r := range append(append([]daemonRun(nil), loop...), slow...) {
		peak = max(peak, r.use.PeakRSS)
	}
	sec.check("peak RSS (VmHWM, highest of all catch-up runs)", fmt.Sprintf("%.1f MB", float64(peak)/(1<<20)), "<= 64 MB", peak <= 64<<20)
	cpu := median(pick(loop, func(r daemonRun) float64 { return r.use.CPU.Seconds() }))
	sec.add("CPU seconds per 100 000 records (user + system, loopback, start-up included)", fmt.Sprintf("%.2f s", cpu/float64(n)*100_000))
	cmds := median(pick(loop, func(r daemonRun) float64 { return float64(r.commands) }))
	sent := median(pick(loop, func(r daemonRun) float64 { return float64(r.sent) }))
	sec.add("Redis commands per 1 000 records (INFO commandstats)", fmt.Sprintf("streamtally %.2f sent (%.1f counting those its script runs inside Redis); naive consumer %.0f, all sent",
		sent/float64(n)*1000, cmds/float64(n)*1000, float64(naiveCommands)/float64(n)*1000))
	r := loop[0]
	perViewBatch := float64(r.scripts) / r.batches
	sec.note("streamtally's Redis commands in the first loopback run: %s.", commandList(r.byCmd))
	sec.check("script calls per view per batch", fmt.Sprintf("%.2f (%d script calls, %.0f batches, 1 view)", perViewBatch, r.scripts, r.batches), "1", perViewBatch <= 1.0001)
	_ = s
}

// commandList names the commands of a run with their calls, most first.
func commandList(stats map[string]cmdStat) string {
	names := make([]string, 0, len(stats))
	for n := range stats {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return stats[names[i]].calls > stats[names[j]].calls })
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s %d", strings.ToUpper(n), stats[n].calls)
		if f := stats[n].failed; f > 0 {
			parts[i] += fmt.Sprintf(" (%d failed)", f)
		}
	}
	return strings.Join(parts, ", ")
}
