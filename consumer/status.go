package consumer

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/lease"
)

// ShardState says whether a shard is still in the stream.
type ShardState string

const (
	ShardOpen   ShardState = "open"   // in the stream, records may still be added
	ShardClosed ShardState = "closed" // in the stream, has an ending sequence number
	ShardGone   ShardState = "gone"   // only a lease row is left: trimmed from the stream
)

// ShardStatus is what an operator needs to know about one shard: who reads
// it and how far behind that is.
type ShardStatus struct {
	Shard  string
	Parent string // "" for a root shard
	State  ShardState

	Leased       bool      // the shard has a row in the lease table
	Owner        string    // the worker holding the lease; "" when nobody does
	Checkpoint   string    // a sequence number, lease.ShardEnd, or "" (not started)
	LeaseTimeout time.Time // when Owner's lease expires; zero without an owner
	// StartedAt is when a worker started the shard at LATEST
	// (source.start: latest); zero otherwise.
	StartedAt time.Time

	// Measured says Lag was measured. It is false for shards read to their
	// end (nothing waits), gone shards (nothing can be read) and when the
	// measurement failed (LagErr).
	Measured bool
	// Lag is how long the oldest record not yet checkpointed has waited:
	// now minus its ApproximateCreationDateTime. 0 when nothing waits.
	Lag time.Duration
	// Oldest is the ApproximateCreationDateTime of that record; zero when
	// nothing waits. A record can wait with Lag 0 if the clocks disagree.
	Oldest time.Time
	LagErr error
}

// Waiting says whether a record past the checkpoint is waiting to be read.
func (s ShardStatus) Waiting() bool { return s.Measured && !s.Oldest.IsZero() }

// statusProbes bounds the lag measurements in flight: each costs one
// GetShardIterator and a few GetRecords on a shard a worker also reads.
const statusProbes = 8

// emptyPagesFollowed is how many empty GetRecords pages a lag measurement
// follows before it concludes the shard has nothing waiting. DynamoDB
// Streams can answer empty pages before records that exist.
const emptyPagesFollowed = 3

// Status reports every shard of the stream and every shard that still
// has a lease row, sorted by shard ID, with the set of live workers (whose
// heartbeat row has not expired by the local clock). It only reads: a
// missing lease table is lease.ErrNoTable, not created.
//
// Lag is measured at now from the checkpoint read from the lease table: the
// first record after it (or at the trim horizon for a shard without
// checkpoint) is the oldest one not yet applied. A shard that a worker
// started at LATEST (source.start: latest) has no checkpoint until its
// first batch; its lag is measured from the first record created at or
// after that start, which the row records.
// Errors measuring one shard's lag are reported in its LagErr; the error
// returned is for what makes the whole report impossible.
func Status(ctx context.Context, source ShardSource, leases Leases, now time.Time) ([]ShardStatus, map[string]bool, error) {
	rows, workers, err := leases.List(ctx)
	if err != nil {
		return nil, nil, err
	}
	shards, err := source.Shards(ctx)
	if err != nil {
		return nil, nil, err
	}

	out := make([]ShardStatus, 0, len(shards)+len(rows))
	for _, s := range shards {
		st := ShardStatus{Shard: s.ID, Parent: s.Parent, State: ShardOpen}
		if s.Closed {
			st.State = ShardClosed
		}
		if l, ok := rows[s.ID]; ok {
			st.setLease(l)
			delete(rows, s.ID)
		}
		out = append(out, st)
	}
	for _, l := range rows {
		st := ShardStatus{Shard: l.Shard, Parent: l.Parent, State: ShardGone}
		st.setLease(l)
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Shard < out[j].Shard })

	var wg sync.WaitGroup
	sem := make(chan struct{}, statusProbes)
	for i := range out {
		st := &out[i]
		if st.State == ShardGone || st.Checkpoint == lease.ShardEnd {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			var from time.Time
			if st.Checkpoint == "" && !st.StartedAt.IsZero() {
				from = st.StartedAt.Add(-latestStartSlack)
			}
			oldest, err := oldestWaiting(ctx, source, st.Shard, streamtally.Seq(st.Checkpoint), from)
			if err != nil {
				st.LagErr = err
				return
			}
			st.Measured, st.Oldest = true, oldest
			if !oldest.IsZero() && now.After(oldest) {
				st.Lag = now.Sub(oldest)
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	return out, workers, nil
}

func (s *ShardStatus) setLease(l lease.Lease) {
	s.Leased = true
	s.Owner = l.Owner
	s.Checkpoint = l.Checkpoint
	if s.Parent == "" {
		s.Parent = l.Parent
	}
	if l.Owner != "" {
		s.LeaseTimeout = l.Timeout
	}
	s.StartedAt = l.StartedAt
}

// maxPage is the most records one read of DynamoDB Streams returns.
const maxPage = 1000

// skipPages bounds the pages a lag measurement reads to find the first
// record after a LATEST start, among the records before it.
const skipPages = 100

// oldestWaiting returns the creation time of the first record after
// checkpoint ("" reads from the trim horizon) created at or after from,
// or zero if there is none.
func oldestWaiting(ctx context.Context, source ShardSource, shard string, checkpoint streamtally.Seq, from time.Time) (time.Time, error) {
	iter, err := source.Iterator(ctx, shard, streamtally.Position{After: checkpoint})
	if errors.Is(err, streamtally.ErrTrimmed) && checkpoint != "" {
		// Records after the checkpoint were trimmed unread; the worker
		// resumes at the trim horizon, so that is what waits.
		iter, err = source.Iterator(ctx, shard, streamtally.Position{})
	}
	if err != nil {
		return time.Time{}, err
	}
	limit := 1
	if !from.IsZero() {
		limit = maxPage
	}
	empty, pages := 0, 0
	for iter != "" && empty <= emptyPagesFollowed && pages < skipPages {
		pages++
		page, err := source.Read(ctx, shard, iter, limit)
		if err != nil {
			return time.Time{}, err
		}
		if len(page.Records) == 0 {
			empty++
		}
		for _, r := range page.Records {
			if r.Created.IsZero() {
				return time.Time{}, fmt.Errorf("shard %s: record %s without a creation time", shard, r.SequenceNumber)
			}
			if !r.Created.Before(from) {
				return r.Created, nil
			}
			empty = 0
		}
		iter = page.Next
	}
	return time.Time{}, nil // nothing waits, or the shard is read to its end
}
