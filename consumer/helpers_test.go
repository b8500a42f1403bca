package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"regexp"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/consumer"
	"github.com/streamtally/streamtally/internal/streamstest"
	"github.com/streamtally/streamtally/internal/testenv"
	"github.com/streamtally/streamtally/lease"
	"github.com/streamtally/streamtally/source/ddbstreams"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// ---- clients and names ----

func awsConfig(t *testing.T) aws.Config {
	t.Helper()
	cfg, err := awsconfig.LoadDefaultConfig(t.Context(),
		awsconfig.WithRegion("us-east-1"),
		awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("x", "x", "")))
	if err != nil {
		t.Fatalf("load AWS config: %v", err)
	}
	return cfg
}

// newDynamo returns a client of the test binary's DynamoDB Local.
func newDynamo(t *testing.T) *dynamodb.Client {
	t.Helper()
	endpoint := testenv.DynamoDB(t)
	return dynamodb.NewFromConfig(awsConfig(t), func(o *dynamodb.Options) {
		o.BaseEndpoint = aws.String(endpoint)
		// DynamoDB Local sends no X-Amz-Crc32 on error responses, and the
		// SDK then logs a spurious "failed to close HTTP response body"
		// for every failed condition (aws/aws-sdk-go-v2#3545).
		o.DisableValidateResponseChecksum = true
	})
}

// newStreams returns a client of the fake stream. The SDK's own retries are
// off so that injected errors reach the consumer, whose retries are under
// test.
func newStreams(t *testing.T, srv *streamstest.Server) *dynamodbstreams.Client {
	t.Helper()
	return dynamodbstreams.NewFromConfig(awsConfig(t), func(o *dynamodbstreams.Options) {
		o.BaseEndpoint = aws.String(srv.URL)
		o.Retryer = aws.NopRetryer{}
	})
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// tableName is a lease table name of its own for the running test.
func tableName(t *testing.T) string {
	name := unsafeName.ReplaceAllString(t.Name(), "_")
	if len(name) > 200 {
		name = name[:200]
	}
	return fmt.Sprintf("%s-%08x", name, rand.Uint32())
}

// testLogger writes to the test's output, which go test shows only for
// failed tests or with -v.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// waitFor is testenv.WaitFor, short for the many waits here.
var waitFor = testenv.WaitFor

// ---- recording handler ----

var errInjected = errors.New("handler failure injected by the test")

// stamp orders handler calls across every recorder of the test binary.
var stamp atomic.Int64

// call is one HandleBatch call.
type call struct {
	shard string
	after string // the checkpoint the batch follows
	seqs  []string
	err   error // what HandleBatch returned
	at    int64 // global order
}

// recorder is a consumer.Handler that remembers every call in order.
type recorder struct {
	mu       sync.Mutex
	calls    []call
	fail     int // fail this many of the next calls
	released []string
	badShard []string // records whose Shard field disagreed with the call's shard
	// hook, if set, runs at the start of every call; an error from it
	// fails the call.
	hook func(ctx context.Context, shard string, seqs []string) error
	// holds, if set, says how far the views hold a shard: OpenShard's
	// answer. Without, they hold nothing.
	holds  func(shard string) (nearest string, all bool)
	opened []opening
	losses []loss
}

// opening is one OpenShard call.
type opening struct {
	shard, checkpoint string
	takeover          bool
}

// loss is one RecordsLost call.
type loss struct{ shard, reason string }

func (r *recorder) OpenShard(ctx context.Context, shard string, checkpoint streamtally.Seq, takeover bool) (streamtally.Seq, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.opened = append(r.opened, opening{shard, string(checkpoint), takeover})
	if r.holds != nil {
		nearest, all := r.holds(shard)
		return streamtally.Seq(nearest), all, nil
	}
	return "", false, nil
}

func (r *recorder) RecordsLost(ctx context.Context, shard, reason string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.losses = append(r.losses, loss{shard, reason})
	return nil
}

func (r *recorder) allLosses() []loss {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.losses)
}

func (r *recorder) allOpenings() []opening {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.opened)
}

var _ consumer.Handler = (*recorder)(nil)

func (r *recorder) HandleBatch(ctx context.Context, shard string, after streamtally.Seq, recs []streamtally.Record) error {
	seqs := make([]string, len(recs))
	var bad []string
	for i, rec := range recs {
		seqs[i] = string(rec.SequenceNumber)
		if rec.Shard != shard {
			bad = append(bad, string(rec.SequenceNumber))
		}
	}
	r.mu.Lock()
	hook := r.hook
	r.mu.Unlock()
	var err error
	if hook != nil {
		err = hook(ctx, shard, seqs)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.badShard = append(r.badShard, bad...)
	if err == nil && r.fail > 0 {
		r.fail--
		err = errInjected
	}
	r.calls = append(r.calls, call{shard: shard, after: string(after), seqs: seqs, err: err, at: stamp.Add(1)})
	return err
}

func (r *recorder) ShardReleased(shard string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.released = append(r.released, shard)
}

// failNext makes the next n calls fail.
func (r *recorder) failNext(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fail = n
}

func (r *recorder) setHook(h func(ctx context.Context, shard string, seqs []string) error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hook = h
}

func (r *recorder) allCalls() []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

func (r *recorder) releasedShards() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.released)
}

// handled returns the successful calls of all recorders in the order they
// happened.
func handled(rs ...*recorder) []call {
	var out []call
	for _, r := range rs {
		for _, c := range r.allCalls() {
			if c.err == nil {
				out = append(out, c)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].at < out[j].at })
	return out
}

// handledSeqs returns the sequence numbers handled per shard, in order.
func handledSeqs(rs ...*recorder) map[string][]string {
	out := map[string][]string{}
	for _, c := range handled(rs...) {
		out[c.shard] = append(out[c.shard], c.seqs...)
	}
	return out
}

func handledCount(rs ...*recorder) int {
	n := 0
	for _, c := range handled(rs...) {
		n += len(c.seqs)
	}
	return n
}

// checkHandled fails unless every shard's records were handled exactly once
// and in order, and nothing else was handled.
func checkHandled(t *testing.T, want map[string][]string, rs ...*recorder) {
	t.Helper()
	got := handledSeqs(rs...)
	for shard, seqs := range want {
		if len(seqs) == 0 {
			seqs = nil
		}
		if !slices.Equal(got[shard], seqs) {
			t.Errorf("shard %s: handled %v, want exactly %v", shard, got[shard], seqs)
		}
	}
	for shard, seqs := range got {
		if _, ok := want[shard]; !ok {
			t.Errorf("shard %s: handled %v, want nothing", shard, seqs)
		}
	}
	for _, r := range rs {
		r.mu.Lock()
		if len(r.badShard) > 0 {
			t.Errorf("records %v carried a Shard other than the batch's", r.badShard)
		}
		r.mu.Unlock()
	}
}

// ---- fixture: fake stream + real lease table ----

type fixture struct {
	t       *testing.T
	srv     *streamstest.Server
	ddb     *dynamodb.Client
	streams *dynamodbstreams.Client
	app     string
	table   string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	srv := streamstest.NewServer(t)
	return &fixture{
		t:       t,
		srv:     srv,
		ddb:     newDynamo(t),
		streams: newStreams(t, srv),
		app:     "app-" + tableName(t),
		table:   tableName(t),
	}
}

const testLease = 2 * time.Second

func options(worker string) consumer.Options {
	return consumer.Options{
		WorkerID:      worker,
		PollInterval:  20 * time.Millisecond,
		BatchSize:     2,
		SyncInterval:  200 * time.Millisecond,
		LeaseDuration: testLease,
		ShutdownGrace: 5 * time.Second,
	}
}

// leaseTable returns the fixture's lease table as seen by worker.
func (f *fixture) leaseTable(worker string, d time.Duration) *lease.Table {
	return lease.NewTable(f.ddb, f.app, f.table, worker, d, testLogger(f.t))
}

// initTable creates the lease table ahead of any worker and returns a
// handle for reading it.
func (f *fixture) initTable() *lease.Table {
	f.t.Helper()
	lt := f.leaseTable("observer", testLease)
	if err := lt.Init(f.t.Context()); err != nil {
		f.t.Fatalf("Init: %v", err)
	}
	return lt
}

func (f *fixture) leases() map[string]lease.Lease {
	f.t.Helper()
	leases, _, err := f.leaseTable("observer", testLease).List(f.t.Context())
	if err != nil {
		f.t.Fatalf("List: %v", err)
	}
	return leases
}

// appendN appends n INSERT records to shard and returns their sequence
// numbers.
func (f *fixture) appendN(shard string, n int) []string {
	f.t.Helper()
	recs := make([]streamstest.Record, n)
	for i := range recs {
		recs[i] = streamstest.Record{NewImage: streamstest.Item("pk", fmt.Sprintf("%s-%d", shard, rand.Uint64()), "n", i)}
	}
	return f.srv.Append(shard, recs...)
}

type runningWorker struct {
	*consumer.Worker
	cancel  context.CancelFunc
	done    chan error
	stopped bool
}

// start runs a Worker until stop, or until the test ends.
func (f *fixture) start(opt consumer.Options, h consumer.Handler) *runningWorker {
	f.t.Helper()
	w := consumer.NewWorker(ddbstreams.New(f.streams, f.srv.StreamARN), f.leaseTable(opt.WorkerID, opt.LeaseDuration), h, opt, testLogger(f.t))
	ctx, cancel := context.WithCancel(context.Background())
	rw := &runningWorker{Worker: w, cancel: cancel, done: make(chan error, 1)}
	go func() { rw.done <- w.Run(ctx) }()
	t := f.t
	t.Cleanup(func() { rw.stop(t) })
	return rw
}

// stop cancels Run and waits for it to return nil.
func (rw *runningWorker) stop(t *testing.T) {
	t.Helper()
	if rw.stopped {
		return
	}
	rw.stopped = true
	rw.cancel()
	select {
	case err := <-rw.done:
		if err != nil {
			t.Errorf("Run returned %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("Run did not return within 30s of cancelling its context")
	}
}
