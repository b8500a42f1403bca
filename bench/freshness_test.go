//go:build bench

package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally/internal/loadgen"
	"github.com/streamtally/streamtally/internal/testenv"
)

// Every write gets a group of its own in the "fresh" view, so that the
// delta announcing it can be told apart from every other.
const freshViewYAML = `  - name: fresh
    group_by: [w]
    measures:
      n: count
`

var freshNaive = naiveView{name: "fresh", group: "w", measures: []naiveMeasure{{name: "n"}}}

// arrivals records when each write's delta reached a subscriber.
type arrivals struct {
	mu sync.Mutex
	at map[int]time.Time
}

func (a *arrivals) seen(id int, t time.Time) {
	a.mu.Lock()
	if _, ok := a.at[id]; !ok {
		a.at[id] = t
	}
	a.mu.Unlock()
}

func (a *arrivals) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.at)
}

// subscribe listens on channel and calls parse on each message at the
// moment it arrives.
func subscribe(t *testing.T, ctx context.Context, addr, channel string, parse func(payload string, at time.Time)) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	ps := rdb.Subscribe(ctx, channel)
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatalf("subscribe %s: %v", channel, err)
	}
	go func() {
		defer rdb.Close()
		defer ps.Close()
		for {
			msg, err := ps.ReceiveMessage(ctx)
			if err != nil {
				return
			}
			parse(msg.Payload, time.Now())
		}
	}()
}

func writeID(w string) (int, bool) {
	id, err := strconv.Atoi(strings.TrimPrefix(w, "w"))
	return id, err == nil && strings.HasPrefix(w, "w")
}

// paced writes total inserts at rate per second through a pool of
// writers, and returns when each PutItem returned.
func paced(t *testing.T, ddb *dynamodb.Client, total, rate int) ([]time.Time, time.Duration) {
	t.Helper()
	ctx := context.Background()
	returned := make([]time.Time, total)
	jobs := make(chan int)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 48 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				_, err := ddb.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(tableName), Item: map[string]types.AttributeValue{
					"email":     &types.AttributeValueMemberS{Value: fmt.Sprintf("fresh%d@bench.example", i)},
					"donatedAt": &types.AttributeValueMemberS{Value: "2026-01-01T00:00:00"},
					"platform":  &types.AttributeValueMemberS{Value: loadgen.Platforms[i%len(loadgen.Platforms)]},
					"amount":    &types.AttributeValueMemberN{Value: strconv.Itoa(i%1000) + ".25"},
					"w":         &types.AttributeValueMemberS{Value: "w" + strconv.Itoa(i)},
				}})
				if err != nil {
					select {
					case errs <- err:
					default:
					}
					continue
				}
				returned[i] = time.Now()
			}
		}()
	}
	start := time.Now()
	for i := range total {
		due := start.Add(time.Duration(i) * time.Second / time.Duration(rate))
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	took := time.Since(start)
	close(errs)
	for err := range errs {
		t.Errorf("PutItem: %v", err)
	}
	return returned, took
}

// latencies returns, for every write that returned, the time from its
// PutItem returning to its delta's arrival, and how many never arrived.
func latencies(returned []time.Time, a *arrivals) ([]time.Duration, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var ls []time.Duration
	missing := 0
	for i, r := range returned {
		if r.IsZero() {
			continue
		}
		at, ok := a.at[i]
		if !ok {
			missing++
			continue
		}
		ls = append(ls, at.Sub(r))
	}
	sort.Slice(ls, func(i, j int) bool { return ls[i] < ls[j] })
	return ls, missing
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// freshness writes at a steady rate for a while, once with Redis on
// loopback and once through the delay line, and measures how long each
// write takes to reach a subscriber, through the daemon and through the
// naive consumer reading the same stream at the same time.
func freshness(t *testing.T, tab *table, s settings, bin string) {
	sec := tab.section(fmt.Sprintf("3. Freshness: %d writes/s for %s; PutItem returned -> delta at a subscriber", s.FreshRate, s.FreshFor))
	target := s.PollInterval + 50*time.Millisecond
	total := int(float64(s.FreshRate) * s.FreshFor.Seconds())
	for _, slowed := range []bool{false, true} {
		link := "loopback"
		if slowed {
			link = "delay line"
		}
		t.Run(link, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			endpoint := testenv.NewDynamoDB(t) // fresh, so that writes are not slowed by an earlier stream
			ddb := dynamoClient(t, endpoint)
			if err := loadgen.CreateTable(ctx, ddb, tableName); err != nil {
				t.Fatal(err)
			}
			server := newRedis(t)
			addr := server
			if slowed {
				addr = newDelayLine(t, server, s.OneWay).Addr()
			}
			d := startDaemon(t, bin, daemonConfig{Endpoint: endpoint, Table: tableName, App: "bench-fresh", Redis: addr, Poll: s.PollInterval,
				Views: platformViewYAML + freshViewYAML})
			deadline := time.Now().Add(time.Minute)
			for m := d.scrape(); m == nil || m["streamtally_leases_held"] < 1; m = d.scrape() {
				if time.Now().After(deadline) {
					t.Fatalf("streamtally took no lease within a minute\n%s", d.log.String())
				}
				time.Sleep(20 * time.Millisecond)
			}

			daemonSeen := &arrivals{at: map[int]time.Time{}}
			subscribe(t, ctx, addr, "tally:{fresh}", func(payload string, at time.Time) {
				var msg struct {
					Deltas map[string]map[string]string `json:"deltas"`
				}
				if json.Unmarshal([]byte(payload), &msg) != nil {
					return
				}
				for w := range msg.Deltas["n"] {
					if id, ok := writeID(w); ok {
						daemonSeen.seen(id, at)
					}
				}
			})
			naiveSeen := &arrivals{at: map[int]time.Time{}}
			subscribe(t, ctx, addr, "naive:fresh", func(payload string, at time.Time) {
				// "n w123 1"
				if f := strings.Fields(payload); len(f) == 3 {
					if id, ok := writeID(f[1]); ok {
						naiveSeen.seen(id, at)
					}
				}
			})
			naiveRedis := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 1})
			defer naiveRedis.Close()
			naive := &naiveConsumer{streams: streamsClient(t, endpoint), rdb: naiveRedis, views: []naiveView{platformNaive, freshNaive}}
			naiveCtx, stopNaive := context.WithCancel(ctx)
			naiveDone := make(chan struct{})
			go func() {
				defer close(naiveDone)
				if _, err := naive.run(naiveCtx, streamARN(t, ddb), 0, s.PollInterval); err != nil && naiveCtx.Err() == nil {
					t.Errorf("naive consumer: %v", err)
				}
			}()

			returned, took := paced(t, ddb, total, s.FreshRate)
			written := 0
			for _, r := range returned {
				if !r.IsZero() {
					written++
				}
			}
			// Give the last writes time to arrive: ten poll intervals is
			// far beyond what the daemon needs.
			grace := time.Now().Add(10 * s.PollInterval)
			for time.Now().Before(grace) && daemonSeen.count() < written {
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(time.Until(grace))
			stopNaive()
			<-naiveDone
			use := d.usage()
			d.stop()

			achieved := float64(written) / took.Seconds()
			sec.add(fmt.Sprintf("%s: writes", link), fmt.Sprintf("%s written in %s (%.0f/s)", thousands(int64(written)), secs(took), achieved))
			for _, who := range []struct {
				name string
				seen *arrivals
			}{{"streamtally", daemonSeen}, {"naive consumer", naiveSeen}} {
				ls, missing := latencies(returned, who.seen)
				p50, p99, mx := percentile(ls, 0.5), percentile(ls, 0.99), percentile(ls, 1)
				value := fmt.Sprintf("p50 %s, p99 %s, max %s; never arrived: %s", millis(p50), millis(p99), millis(mx), thousands(int64(missing)))
				what := fmt.Sprintf("%s: %s", link, who.name)
				if who.name == "streamtally" {
					sec.check(what, value, fmt.Sprintf("p99 <= %s, none lost", millis(target)), p99 <= target && missing == 0 && len(ls) > 0)
				} else {
					sec.add(what, value)
				}
			}
			sec.add(fmt.Sprintf("%s: streamtally peak RSS / CPU", link), fmt.Sprintf("%.1f MB / %.1f s", float64(use.PeakRSS)/(1<<20), use.CPU.Seconds()))
		})
	}
	sec.note("Writes are PutItems from 48 writers paced to the rate, each item a group of its own in a view `fresh`, so each delta names the writes it carries; the daemon polls every %s. The naive consumer reads the same stream at the same time, polling as often, and publishes per record; \"never arrived\" counts deltas not seen %s after the last write.", s.PollInterval, 10*s.PollInterval)
}
