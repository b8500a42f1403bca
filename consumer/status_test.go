package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/vmware/vmware-go-kcl-v2/clientlibrary/checkpoint"

	"github.com/streamtally/streamtally/consumer"
	"github.com/streamtally/streamtally/internal/streamstest"
	"github.com/streamtally/streamtally/lease"
	"github.com/streamtally/streamtally/source/ddbstreams"
)

// statusNow is the fixed "now" the status tests measure against. Record
// creation times and lease timeouts are set relative to it, to the
// millisecond, which is what the stream's timestamps carry.
func statusNow() time.Time { return time.Now().Truncate(time.Millisecond) }

// leaseRow is a lease table row written as the daemon would leave it.
type leaseRow struct {
	shard, parent, owner, checkpoint string
	timeout, startedAt               time.Time
}

func (f *fixture) putLease(r leaseRow) {
	f.t.Helper()
	item := map[string]ddbtypes.AttributeValue{checkpoint.LeaseKeyKey: &ddbtypes.AttributeValueMemberS{Value: r.shard}}
	set := func(k, v string) {
		if v != "" {
			item[k] = &ddbtypes.AttributeValueMemberS{Value: v}
		}
	}
	set(checkpoint.ParentShardIdKey, r.parent)
	set(checkpoint.LeaseOwnerKey, r.owner)
	set(checkpoint.SequenceNumberKey, r.checkpoint)
	if !r.timeout.IsZero() {
		set(checkpoint.LeaseTimeoutKey, r.timeout.UTC().Format(time.RFC3339Nano))
	}
	if !r.startedAt.IsZero() {
		set("StartedAt", r.startedAt.UTC().Format(time.RFC3339Nano))
	}
	if _, err := f.ddb.PutItem(f.t.Context(), &dynamodb.PutItemInput{TableName: aws.String(f.table), Item: item}); err != nil {
		f.t.Fatalf("put lease row %s: %v", r.shard, err)
	}
}

// appendAt appends one record per creation time and returns their sequence
// numbers.
func (f *fixture) appendAt(shard string, created ...time.Time) []string {
	f.t.Helper()
	recs := make([]streamstest.Record, len(created))
	for i, c := range created {
		recs[i] = streamstest.Record{NewImage: streamstest.Item("pk", fmt.Sprintf("%s-%d", shard, i)), ApproximateCreation: c}
	}
	return f.srv.Append(shard, recs...)
}

func (f *fixture) status(streams ddbstreams.API, now time.Time) ([]consumer.ShardStatus, map[string]bool) {
	f.t.Helper()
	st, workers, err := consumer.Status(f.t.Context(), ddbstreams.New(streams, f.srv.StreamARN), f.leaseTable("status", testLease), now)
	if err != nil {
		f.t.Fatalf("Status: %v", err)
	}
	return st, workers
}

func byShard(st []consumer.ShardStatus) map[string]consumer.ShardStatus {
	m := map[string]consumer.ShardStatus{}
	for _, s := range st {
		m[s.Shard] = s
	}
	return m
}

// near allows for the stream's timestamps being float seconds on the wire.
func near(a, b time.Duration) bool { return (a - b).Abs() <= 2*time.Millisecond }

func TestStatusReportsOwnersCheckpointsAndLag(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.srv.SetDescribePageSize(2) // the listing must follow DescribeStream's pages
	f.initTable()
	now := statusNow()
	ago := func(d time.Duration) time.Time { return now.Add(-d) }

	// shard-1: closed and read to its end; its lease was released.
	f.srv.AddShard("shard-1", "shard-0")
	f.appendAt("shard-1", ago(time.Hour), ago(50*time.Minute))
	f.srv.CloseShard("shard-1")
	f.putLease(leaseRow{shard: "shard-1", parent: "shard-0", checkpoint: lease.ShardEnd, timeout: ago(40 * time.Minute)})

	// shard-2: open, held by w1, two of five records checkpointed: the
	// third has waited 3 minutes.
	f.srv.AddShard("shard-2", "shard-1")
	s2 := f.appendAt("shard-2", ago(5*time.Minute), ago(4*time.Minute), ago(3*time.Minute), ago(2*time.Minute), ago(time.Minute))
	f.putLease(leaseRow{shard: "shard-2", parent: "shard-1", owner: "w1", checkpoint: s2[1], timeout: now.Add(7200 * time.Millisecond)})

	// shard-3: open, caught up, but its owner stopped renewing 3 minutes ago.
	f.srv.AddShard("shard-3", "")
	s3 := f.appendAt("shard-3", ago(10*time.Minute), ago(9*time.Minute))
	f.putLease(leaseRow{shard: "shard-3", owner: "w2", checkpoint: s3[1], timeout: ago(3 * time.Minute)})

	// shard-4: open, never leased: everything from the trim horizon waits.
	f.srv.AddShard("shard-4", "")
	f.appendAt("shard-4", ago(10*time.Minute), ago(time.Minute))

	// shard-5: open, never leased, empty.
	f.srv.AddShard("shard-5", "")

	// shard-6: closed; its last record is checkpointed but SHARD_END is
	// not written yet.
	f.srv.AddShard("shard-6", "")
	s6 := f.appendAt("shard-6", ago(20*time.Minute))
	f.srv.CloseShard("shard-6")
	f.putLease(leaseRow{shard: "shard-6", owner: "w1", checkpoint: s6[0], timeout: now.Add(90 * time.Second)})

	// shard-0 and shard-00: trimmed from the stream, lease rows left.
	f.putLease(leaseRow{shard: "shard-0", checkpoint: lease.ShardEnd, timeout: ago(2 * time.Hour)})
	f.putLease(leaseRow{shard: "shard-00", parent: "shard-x", owner: "w9", checkpoint: "000000000000000000042", timeout: ago(26 * time.Hour)})

	// Heartbeats: w1 is alive, w2 stopped.
	if err := f.leaseTable("w1", time.Minute).Heartbeat(t.Context()); err != nil {
		t.Fatal(err)
	}
	f.putLease(leaseRow{shard: "_worker:w2", owner: "w2", timeout: time.Now().Add(-time.Minute)})

	st, workers := f.status(f.streams, now)

	var ids []string
	for _, s := range st {
		ids = append(ids, s.Shard)
	}
	if got, want := strings.Join(ids, " "), "shard-0 shard-00 shard-1 shard-2 shard-3 shard-4 shard-5 shard-6"; got != want {
		t.Fatalf("shards %q, want %q (every shard of the stream and every lease row, sorted, no worker rows)", got, want)
	}
	if want := map[string]bool{"w1": true}; !maps.Equal(workers, want) {
		t.Errorf("workers = %v, want %v", workers, want)
	}

	type want struct {
		parent     string
		state      consumer.ShardState
		leased     bool
		owner      string
		checkpoint string
		timeout    time.Time
		measured   bool
		oldest     time.Time // zero: nothing waits
	}
	wants := map[string]want{
		"shard-0":  {"", consumer.ShardGone, true, "", lease.ShardEnd, time.Time{}, false, time.Time{}},
		"shard-00": {"shard-x", consumer.ShardGone, true, "w9", "000000000000000000042", ago(26 * time.Hour), false, time.Time{}},
		"shard-1":  {"shard-0", consumer.ShardClosed, true, "", lease.ShardEnd, time.Time{}, false, time.Time{}},
		"shard-2":  {"shard-1", consumer.ShardOpen, true, "w1", s2[1], now.Add(7200 * time.Millisecond), true, ago(3 * time.Minute)},
		"shard-3":  {"", consumer.ShardOpen, true, "w2", s3[1], ago(3 * time.Minute), true, time.Time{}},
		"shard-4":  {"", consumer.ShardOpen, false, "", "", time.Time{}, true, ago(10 * time.Minute)},
		"shard-5":  {"", consumer.ShardOpen, false, "", "", time.Time{}, true, time.Time{}},
		"shard-6":  {"", consumer.ShardClosed, true, "w1", s6[0], now.Add(90 * time.Second), true, time.Time{}},
	}
	for id, s := range byShard(st) {
		w := wants[id]
		if s.LagErr != nil {
			t.Errorf("%s: LagErr %v", id, s.LagErr)
		}
		if s.Parent != w.parent || s.State != w.state || s.Leased != w.leased || s.Owner != w.owner || s.Checkpoint != w.checkpoint {
			t.Errorf("%s: parent %q state %s leased %v owner %q checkpoint %q; want %q %s %v %q %q",
				id, s.Parent, s.State, s.Leased, s.Owner, s.Checkpoint, w.parent, w.state, w.leased, w.owner, w.checkpoint)
		}
		if !s.LeaseTimeout.Equal(w.timeout) {
			t.Errorf("%s: lease timeout %v, want %v", id, s.LeaseTimeout, w.timeout)
		}
		if s.Measured != w.measured {
			t.Errorf("%s: Measured %v, want %v", id, s.Measured, w.measured)
			continue
		}
		if w.oldest.IsZero() {
			if s.Waiting() || s.Lag != 0 {
				t.Errorf("%s: lag %v (oldest waiting %v), want 0: nothing is unprocessed", id, s.Lag, s.Oldest)
			}
			continue
		}
		if !s.Waiting() || !near(s.Oldest.Sub(w.oldest), 0) || !near(s.Lag, now.Sub(w.oldest)) {
			t.Errorf("%s: oldest waiting %v lag %v, want %v and %v", id, s.Oldest, s.Lag, w.oldest, now.Sub(w.oldest))
		}
	}
}

// emptyPages answers the first n GetRecords calls with an empty page that
// leads on to the same position, as DynamoDB Streams sometimes does.
type emptyPages struct {
	ddbstreams.API
	n     int32
	calls atomic.Int32
}

func (e *emptyPages) GetRecords(ctx context.Context, in *dynamodbstreams.GetRecordsInput, opts ...func(*dynamodbstreams.Options)) (*dynamodbstreams.GetRecordsOutput, error) {
	if e.calls.Add(1) <= e.n {
		return &dynamodbstreams.GetRecordsOutput{NextShardIterator: in.ShardIterator}, nil
	}
	return e.API.GetRecords(ctx, in, opts...)
}

func TestStatusFollowsEmptyPages(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.initTable()
	now := statusNow()
	f.srv.AddShard("shard-1", "")
	seqs := f.appendAt("shard-1", now.Add(-time.Hour), now.Add(-time.Minute))
	f.putLease(leaseRow{shard: "shard-1", owner: "w1", checkpoint: seqs[0], timeout: now.Add(time.Second)})

	t.Run("record after 3 empty pages", func(t *testing.T) {
		s := &emptyPages{API: f.streams, n: 3}
		st, _ := f.status(s, now)
		if len(st) != 1 || !st[0].Waiting() || !near(st[0].Lag, time.Minute) {
			t.Fatalf("status %+v, want lag 1m", st)
		}
		if got := s.calls.Load(); got != 4 {
			t.Errorf("%d GetRecords calls, want 4", got)
		}
	})
	t.Run("gives up after 3 empty pages more", func(t *testing.T) {
		s := &emptyPages{API: f.streams, n: 4}
		st, _ := f.status(s, now)
		if len(st) != 1 || !st[0].Measured || st[0].Waiting() || st[0].Lag != 0 {
			t.Fatalf("status %+v, want measured lag 0", st)
		}
		if got := s.calls.Load(); got != 4 {
			t.Errorf("%d GetRecords calls, want 4 (the first page and 3 more)", got)
		}
	})
}

func TestStatusTrimmedCheckpointMeasuresFromTrimHorizon(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.initTable()
	now := statusNow()
	f.srv.AddShard("shard-1", "")
	seqs := f.appendAt("shard-1", now.Add(-time.Hour), now.Add(-time.Minute))
	f.putLease(leaseRow{shard: "shard-1", owner: "w1", checkpoint: seqs[1], timeout: now.Add(time.Second)})
	f.srv.InjectErrors("GetShardIterator", 1, "TrimmedDataAccessException")

	st, _ := f.status(f.streams, now)
	if len(st) != 1 || st[0].LagErr != nil || !near(st[0].Lag, time.Hour) {
		t.Fatalf("status %+v, want lag 1h measured from the trim horizon", st)
	}
}

func TestStatusReportsLagErrorPerShard(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.initTable()
	now := statusNow()
	f.srv.AddShard("shard-1", "")
	f.srv.CloseShard("shard-1")
	f.putLease(leaseRow{shard: "shard-1", checkpoint: lease.ShardEnd})
	f.srv.AddShard("shard-2", "shard-1")
	f.appendAt("shard-2", now.Add(-time.Minute))
	f.srv.InjectErrors("GetRecords", 1, "InternalServerError")

	st, _ := f.status(f.streams, now) // newStreams does not retry
	m := byShard(st)
	if s := m["shard-2"]; s.LagErr == nil || s.Measured || !strings.Contains(s.LagErr.Error(), "shard-2") {
		t.Errorf("shard-2: %+v, want a LagErr naming the shard and no measurement", s)
	}
	if s := m["shard-1"]; s.LagErr != nil || s.State != consumer.ShardClosed {
		t.Errorf("shard-1: %+v, want closed and no error", s)
	}
}

func TestStatusDoesNotCreateLeaseTable(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.srv.AddShard("shard-1", "")
	_, _, err := consumer.Status(t.Context(), ddbstreams.New(f.streams, f.srv.StreamARN), f.leaseTable("status", testLease), statusNow())
	if !errors.Is(err, lease.ErrNoTable) || !strings.Contains(err.Error(), f.table) {
		t.Fatalf("Status without a lease table: %v, want ErrNoLeaseTable naming %s", err, f.table)
	}
	_, err = f.ddb.DescribeTable(t.Context(), &dynamodb.DescribeTableInput{TableName: aws.String(f.table)})
	var missing *ddbtypes.ResourceNotFoundException
	if !errors.As(err, &missing) {
		t.Fatalf("after Status, DescribeTable %s: %v, want ResourceNotFoundException", f.table, err)
	}
}

// A shard started at LATEST has no checkpoint until its first batch; its
// lag counts from the first record after the start, not from the history
// before it that the worker never reads.
func TestStatusMeasuresALatestStartFromItsStartTime(t *testing.T) {
	f := newFixture(t)
	now := statusNow()
	f.srv.AddShard("s1", "")
	f.appendAt("s1", now.Add(-2*time.Hour), now.Add(-time.Hour))
	f.initTable()
	f.putLease(leaseRow{shard: "s1", owner: "w", timeout: now.Add(time.Minute), startedAt: now.Add(-10 * time.Minute)})
	rows, _ := f.status(f.streams, now)
	st := byShard(rows)["s1"]
	if !st.Measured || st.Waiting() || st.Lag != 0 {
		t.Fatalf("status before any record after the start = %+v, want measured, nothing waiting", st)
	}
	f.appendAt("s1", now.Add(-3*time.Minute))
	rows, _ = f.status(f.streams, now)
	st = byShard(rows)["s1"]
	if !st.Waiting() || !near(st.Lag, 3*time.Minute) {
		t.Fatalf("lag = %v (waiting %v), want 3m: the first record after the start", st.Lag, st.Waiting())
	}
	if !st.StartedAt.Equal(now.Add(-10 * time.Minute)) {
		t.Errorf("StartedAt = %v, want the row's", st.StartedAt)
	}
}
