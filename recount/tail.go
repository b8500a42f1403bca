package recount

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/consumer"
)

// pageLimit is the most records GetRecords returns.
const pageLimit = 1000

// emptyPages is how many empty pages in a row say a shard is read to its
// tip: DynamoDB Streams can answer empty pages before records that exist.
const emptyPages = 3

// tail reads every shard of the stream from the cut on and keeps the
// records: the first record of an item after the cut gives the item's
// image at the cut, and the records up to the final fences are folded onto
// the state at the cut.
type tail struct {
	src    *Source
	cut    *cut
	poll   time.Duration
	shards map[string]*tailShard
	read   int64
	listed time.Time // when the shards were last listed
}

type tailShard struct {
	id, parent string
	from       string  // last record before the cut
	iter       *string // nil: ask for one after last (or from)
	last       string  // last sequence number read
	recs       []streamtally.Record
	ended      bool // read to its end, or gone from the stream
	empties    int  // empty pages in a row
	caughtAt   time.Time
}

func newTail(src *Source, c *cut, poll time.Duration) *tail {
	return &tail{src: src, cut: c, poll: poll, shards: map[string]*tailShard{}}
}

// order returns the shards parents first: shard IDs grow with creation
// time, and a child is created after its parent.
func (t *tail) order() []*tailShard {
	out := make([]*tailShard, 0, len(t.shards))
	for _, s := range t.shards {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

// round lists the shards and reads each readable one until a page is
// short. It reports whether every shard is read to its end or was, at a
// read that started at or after since, read to its tip. A zero since
// never reports true.
func (t *tail) round(ctx context.Context, since time.Time) (bool, error) {
	if err := t.listShards(ctx); err != nil {
		return false, err
	}
	all := true
	for _, s := range t.order() {
		if s.ended {
			continue
		}
		if p := t.shards[s.parent]; p != nil && !p.ended {
			// An item's records in a child come after those in its
			// parent: read the child only once the parent is done.
			all = false
			continue
		}
		if err := t.readShard(ctx, s); err != nil {
			return false, err
		}
		if s.ended {
			// Its children may be readable now.
			t.listed = time.Time{}
			all = false
			continue
		}
		if since.IsZero() || s.caughtAt.IsZero() || s.caughtAt.Before(since) {
			all = false
		}
	}
	return all, nil
}

// listEvery is how often the tail looks for new shards while none of its
// shards ends: DescribeStream is rate-limited per account.
const listEvery = 5 * time.Second

// listShards adds the shards born since the last listing.
func (t *tail) listShards(ctx context.Context) error {
	if !t.listed.IsZero() && time.Since(t.listed) < listEvery {
		return nil
	}
	list, err := consumer.ListShards(ctx, t.src.Streams, t.src.ARN)
	if err != nil {
		return err
	}
	t.listed = time.Now()
	for _, sh := range list {
		if t.cut.ended[sh.ID] || t.shards[sh.ID] != nil {
			continue
		}
		// A shard born after the cut holds only records after it.
		t.shards[sh.ID] = &tailShard{id: sh.ID, parent: sh.Parent, from: t.cut.from[sh.ID]}
	}
	return nil
}

// readShard reads pages of s until one is short of a full page, noting
// when s was last seen at its tip.
func (t *tail) readShard(ctx context.Context, s *tailShard) error {
	for attempt := 0; ; {
		if s.iter == nil {
			in := &dynamodbstreams.GetShardIteratorInput{StreamArn: aws.String(t.src.ARN), ShardId: aws.String(s.id)}
			if after := maxSeq(s.from, s.last); after != "" {
				in.ShardIteratorType, in.SequenceNumber = types.ShardIteratorTypeAfterSequenceNumber, aws.String(after)
			} else {
				in.ShardIteratorType = types.ShardIteratorTypeTrimHorizon
			}
			out, err := t.src.Streams.GetShardIterator(ctx, in)
			var gone *types.ResourceNotFoundException
			var trimmed *types.TrimmedDataAccessException
			switch {
			case errors.As(err, &gone):
				s.ended = true
				return nil
			case errors.As(err, &trimmed):
				return fmt.Errorf("shard %s: records after the cut (%q) were trimmed from the stream before they were read; run again", s.id, maxSeq(s.from, s.last))
			case err != nil:
				if attempt++; attempt > 5 || ctx.Err() != nil {
					return fmt.Errorf("get shard iterator of shard %s: %w", s.id, err)
				}
				sleep(ctx, time.Duration(attempt)*200*time.Millisecond)
				continue
			case out.ShardIterator == nil:
				s.ended = true
				return nil
			}
			s.iter = out.ShardIterator
		}
		start := time.Now()
		out, err := t.src.Streams.GetRecords(ctx, &dynamodbstreams.GetRecordsInput{ShardIterator: s.iter, Limit: aws.Int32(pageLimit)})
		var expired *types.ExpiredIteratorException
		var trimmed *types.TrimmedDataAccessException
		switch {
		case errors.As(err, &expired):
			s.iter = nil
			continue
		case errors.As(err, &trimmed) && maxSeq(s.from, s.last) == "" && attempt < 5:
			// Reading from the trim horizon, nothing can be lost before
			// the first record read: DynamoDB Local answers this to a
			// TRIM_HORIZON iterator of a young stream now and then.
			attempt++
			s.iter = nil
			sleep(ctx, time.Duration(attempt)*200*time.Millisecond)
			continue
		case errors.As(err, &trimmed):
			return fmt.Errorf("shard %s: records after %q were trimmed from the stream before they were read; run again", s.id, maxSeq(s.from, s.last))
		case err != nil:
			if attempt++; attempt > 5 || ctx.Err() != nil {
				return fmt.Errorf("get records of shard %s: %w", s.id, err)
			}
			sleep(ctx, time.Duration(attempt)*200*time.Millisecond)
			continue
		}
		attempt = 0
		recs := consumer.ToRecords(s.id, out.Records)
		for _, r := range recs {
			// An iterator after s.last never returns s.last again, but
			// keep the list strictly growing whatever happens.
			if seqAfter(r.SequenceNumber, maxSeq(s.from, s.last)) {
				s.recs = append(s.recs, r)
				s.last = r.SequenceNumber
				t.read++
			}
		}
		s.iter = out.NextShardIterator
		if s.iter == nil {
			s.ended = true
			return nil
		}
		if len(recs) == 0 {
			s.empties++
		} else {
			s.empties = 0
		}
		if len(recs) < pageLimit {
			if len(recs) > 0 || s.empties >= emptyPages {
				s.caughtAt = start
			}
			return nil
		}
	}
}

// follow reads rounds until scanEnd says when the scan finished and, at
// least settle after it, every shard was read to its tip: by then every
// write the scan could have seen is in the records.
func (t *tail) follow(ctx context.Context, scanEnd <-chan time.Time, settle time.Duration) error {
	var since time.Time
	for {
		select {
		case end, ok := <-scanEnd:
			if ok {
				since = end.Add(settle)
			}
			scanEnd = nil
		default:
		}
		all, err := t.round(ctx, since)
		if err != nil {
			return err
		}
		if all && !since.IsZero() && !time.Now().Before(since) {
			return nil
		}
		if !sleep(ctx, t.poll) {
			return ctx.Err()
		}
	}
}

// readThrough reads until every shard with a target has been read through
// it, or to its end for the target consumer.ShardEnd. Every target is a
// record a daemon applied, so it is in the stream.
func (t *tail) readThrough(ctx context.Context, target map[string]string) error {
	for {
		if _, err := t.round(ctx, time.Time{}); err != nil {
			return err
		}
		done := true
		for id, f := range target {
			s := t.shards[id]
			if s == nil || s.ended || f == "" {
				continue
			}
			if f != consumer.ShardEnd && !seqAfter(f, maxSeq(s.from, s.last)) {
				continue
			}
			done = false
		}
		if done {
			return nil
		}
		if !sleep(ctx, t.poll) {
			return ctx.Err()
		}
	}
}

// first returns, per item key, its first record after the cut, shards in
// lineage order.
func (t *tail) first(keys []string) (map[string]*streamtally.Record, error) {
	out := map[string]*streamtally.Record{}
	for _, s := range t.order() {
		for i := range s.recs {
			r := &s.recs[i]
			if r.Event != streamtally.Insert && r.Event != streamtally.Modify && r.Event != streamtally.Remove {
				// The fold counts nothing for a record it cannot read, so
				// it does not stand between the cut and the scan either.
				continue
			}
			img := r.Keys
			if len(img) == 0 {
				img = r.New
			}
			if len(img) == 0 {
				img = r.Old
			}
			k, ok := itemKey(keys, img)
			if !ok {
				return nil, fmt.Errorf("shard %s record %s: no readable item key", s.id, r.SequenceNumber)
			}
			if _, seen := out[k]; !seen {
				out[k] = r
			}
		}
	}
	return out, nil
}

// through returns the records of shard after the cut up to and including
// seq ("" = none).
func (t *tail) through(shard, seq string) []streamtally.Record {
	s := t.shards[shard]
	if s == nil || seq == "" {
		return nil
	}
	n := sort.Search(len(s.recs), func(i int) bool { return seqAfter(s.recs[i].SequenceNumber, seq) })
	return s.recs[:n]
}

// sleep waits d; false if ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
