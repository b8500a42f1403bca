// Package metrics serves streamtally's Prometheus metrics and health
// checks over HTTP: /metrics, /healthz (the process is alive) and /readyz
// (it can do its job: lease table and Redis reachable, leases renewed).
package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/consumer"
)

// Metrics owns the registry. It is a consumer.Observer, so the consumer
// reports apply latency to it; everything else is read at scrape time from
// the stats the consumer and the fold keep anyway.
type Metrics struct {
	reg   *prometheus.Registry
	apply prometheus.Histogram
}

// New returns metrics with the Go runtime and process collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		apply: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "streamtally_apply_duration_seconds",
			Help:    "Time from a batch read to every view holding it in Redis, retries included.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
	}
	m.reg.MustRegister(m.apply, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// BatchApplied implements consumer.Observer.
func (m *Metrics) BatchApplied(_ string, _ int, took time.Duration) {
	m.apply.Observe(took.Seconds())
}

// Watch adds the worker's and the fold's figures to the registry.
func (m *Metrics) Watch(w *consumer.Worker, t *aggregate.Tally) {
	m.reg.MustRegister(&collector{w: w, t: t})
}

// Check is one readiness condition.
type Check struct {
	Name string
	Fn   func(context.Context) error
}

// Handler serves /metrics, /healthz and /readyz.
func (m *Metrics) Handler(checks []Check) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		status, code := "ok", http.StatusOK
		results := map[string]string{}
		for _, c := range checks {
			if err := c.Fn(ctx); err != nil {
				results[c.Name] = err.Error()
				status, code = "unavailable", http.StatusServiceUnavailable
			} else {
				results[c.Name] = "ok"
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]any{"status": status, "checks": results})
	})
	return mux
}

// Serve serves h on ln until ctx ends.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("serving metrics and health", "addr", ln.Addr().String())
	err := srv.Serve(ln)
	<-done
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// LeaseCheck is ready while the worker's heartbeat in the lease table is
// younger than the lease duration: the table is reachable and leases are
// being renewed.
func LeaseCheck(w *consumer.Worker, leaseDuration time.Duration) Check {
	return Check{Name: "leases", Fn: func(context.Context) error {
		last := w.LastHeartbeat()
		switch {
		case last.IsZero():
			return errors.New("no heartbeat written to the lease table yet")
		case time.Since(last) > leaseDuration:
			return errors.New("last heartbeat in the lease table " + time.Since(last).Round(time.Second).String() + " ago")
		}
		return nil
	}}
}

// ViewsCheck is ready while no view is lost: a lost view's counters are
// incomplete, and serving it as if it were whole would be wrong.
func ViewsCheck(t *aggregate.Tally) Check {
	return Check{Name: "views", Fn: func(context.Context) error {
		lost := t.Lost()
		if len(lost) == 0 {
			return nil
		}
		var b strings.Builder
		for i, v := range slices.Sorted(maps.Keys(lost)) {
			if i > 0 {
				b.WriteString("; ")
			}
			fmt.Fprintf(&b, "view %s lost: %s", v, lost[v])
		}
		return errors.New(b.String())
	}}
}

type collector struct {
	w *consumer.Worker
	t *aggregate.Tally
}

var (
	descIteratorAge = prometheus.NewDesc("streamtally_shard_iterator_age_milliseconds",
		"Time since the newest record read from the shard was written; 0 when the shard is read to its tip.", []string{"shard"}, nil)
	descCheckpointLag = prometheus.NewDesc("streamtally_shard_checkpoint_lag_milliseconds",
		"Time since the newest checkpointed record of the shard was written; 0 when everything read is checkpointed at the tip.", []string{"shard"}, nil)
	descShardRecords = prometheus.NewDesc("streamtally_shard_records_total",
		"Records applied and checkpointed on the shard since this process took its lease.", []string{"shard"}, nil)
	descShardBatches = prometheus.NewDesc("streamtally_shard_batches_total",
		"Batches applied and checkpointed on the shard since this process took its lease.", []string{"shard"}, nil)
	descRecords     = counter("records_total", "Records applied and checkpointed.")
	descBatches     = counter("batches_total", "Batches applied and checkpointed.")
	descBad         = prometheus.NewDesc("streamtally_bad_records_total", "New images that contribute nothing to a view, by reason.", []string{"view", "reason"}, nil)
	descReplayed    = counter("replayed_records_total", "Records skipped because Redis already held them (counted per view).")
	descMoved       = counter("fence_conflicts_total", "View applies refused because another reader of the shard moved the fence.")
	descApplyErrors = counter("redis_errors_total", "Failed batch applies to Redis; each is retried with backoff.")
	descReadErrors  = counter("stream_errors_total", "Failed DynamoDB Streams calls after the SDK's own retries; each is retried with backoff.")
	descExpired     = counter("expired_iterators_total", "Shard iterators that expired and were fetched again from the checkpoint.")
	descTrimmed     = counter("trimmed_total", "Times records were trimmed from the stream before they were read; the views are marked lost.")
	descGone        = counter("shards_gone_total", "Shards that left the stream before they were read to their end; the views are marked lost.")
	descLeasesHeld  = prometheus.NewDesc("streamtally_leases_held", "Shard leases this process holds.", nil, nil)
	descViewLost    = prometheus.NewDesc("streamtally_view_lost",
		"1 while the view is lost: Redis lost data the stream can no longer replay, so its counters are incomplete and no longer updated.", []string{"view"}, nil)
	descLeasesTaken    = counter("leases_taken_total", "Shard leases taken.")
	descLeasesLost     = counter("leases_lost_total", "Shard leases lost to another worker.")
	descLeasesReleased = counter("leases_released_total", "Shard leases released (shutdown, shard end, or sharing).")
)

// descDeadLetters counts the rejections that are bad data, as distinct
// from items outside a view: the subset of streamtally_bad_records_total
// worth an alarm, counted at the same moment, so the two always agree.
var descDeadLetters = prometheus.NewDesc("streamtally_dead_letters_total",
	"Records set aside as bad data for a view (kept in the <prefix>:dlq stream unless dlq.max_len is 0), by reason.", []string{"view", "reason"}, nil)

func counter(name, help string) *prometheus.Desc {
	return prometheus.NewDesc("streamtally_"+name, help, nil, nil)
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descIteratorAge, descCheckpointLag, descShardRecords, descShardBatches,
		descRecords, descBatches, descBad, descReplayed, descMoved, descApplyErrors, descReadErrors, descExpired,
		descTrimmed, descGone, descLeasesHeld, descLeasesTaken, descLeasesLost, descLeasesReleased, descViewLost} {
		ch <- d
	}
	ch <- descDeadLetters
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.w.Shards(time.Now()) {
		ch <- prometheus.MustNewConstMetric(descIteratorAge, prometheus.GaugeValue, float64(s.IteratorAge.Milliseconds()), s.Shard)
		ch <- prometheus.MustNewConstMetric(descCheckpointLag, prometheus.GaugeValue, float64(s.CheckpointLag.Milliseconds()), s.Shard)
		ch <- prometheus.MustNewConstMetric(descShardRecords, prometheus.CounterValue, float64(s.Records), s.Shard)
		ch <- prometheus.MustNewConstMetric(descShardBatches, prometheus.CounterValue, float64(s.Batches), s.Shard)
	}
	ws, ts := c.w.Stats(), c.t.Stats()
	for k, n := range ts.RejectedBy() {
		view, reason, _ := strings.Cut(k, "/")
		ch <- prometheus.MustNewConstMetric(descBad, prometheus.CounterValue, float64(n), view, reason)
		if aggregate.IsDeadLetter(reason) {
			ch <- prometheus.MustNewConstMetric(descDeadLetters, prometheus.CounterValue, float64(n), view, reason)
		}
	}
	for d, v := range map[*prometheus.Desc]int64{
		descRecords: ws.Records.Load(), descBatches: ws.Batches.Load(),
		descReplayed: ts.Replayed.Load(), descMoved: ts.Moved.Load(),
		descApplyErrors: ws.ApplyErrors.Load(), descReadErrors: ws.ReadErrors.Load(),
		descExpired: ws.ExpiredIterators.Load(), descTrimmed: ws.Trimmed.Load(), descGone: ws.Gone.Load(),
		descLeasesTaken: ws.LeasesTaken.Load(), descLeasesLost: ws.LeasesLost.Load(), descLeasesReleased: ws.LeasesReleased.Load(),
	} {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	ch <- prometheus.MustNewConstMetric(descLeasesHeld, prometheus.GaugeValue, float64(ws.LeasesHeld.Load()))
	lost := c.t.Lost()
	for _, v := range c.t.ViewNames() {
		n := 0.0
		if _, ok := lost[v]; ok {
			n = 1
		}
		ch <- prometheus.MustNewConstMetric(descViewLost, prometheus.GaugeValue, n, v)
	}
}
