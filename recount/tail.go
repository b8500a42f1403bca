package recount

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/internal/retry"
	"github.com/streamtally/streamtally/lease"
)

// pageLimit is the most records one read returns.
const pageLimit = 1000

// readAttempts is how often a read of a shard is tried before the recount
// gives up: a recount that cannot read the stream is run again.
const readAttempts = 5

// emptyPages is how many empty pages in a row say a shard is read to its
// tip: DynamoDB Streams can answer empty pages before records that exist.
const emptyPages = 3

// tail reads every shard of the stream from the cut on and keeps the
// records: the first record of an item after the cut gives the item's
// image at the cut, and the records up to the final fences are folded onto
// the state at the cut.
type tail struct {
	src    *Recounter
	cut    *cut
	poll   time.Duration
	shards map[string]*tailShard
	read   int64
	listed time.Time // when the shards were last listed
}

type tailShard struct {
	id, parent string
	from       string // last record before the cut
	iter       string // "": ask for one after last (or from)
	last       string // last sequence number read
	recs       []streamtally.Record
	ended      bool // read to its end, or gone from the stream
	empties    int  // empty pages in a row
	caughtAt   time.Time
}

func newTail(src *Recounter, c *cut, poll time.Duration) *tail {
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
	list, err := t.src.Stream.Shards(ctx)
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
		after := maxSeq(s.from, s.last)
		if s.iter == "" {
			iter, err := t.src.Stream.Iterator(ctx, s.id, streamtally.Position{After: streamtally.Seq(after)})
			switch {
			case errors.Is(err, streamtally.ErrShardGone):
				s.ended = true
				return nil
			case errors.Is(err, streamtally.ErrTrimmed):
				return fmt.Errorf("shard %s: records after the cut (%q) were trimmed from the stream before they were read; run again", s.id, after)
			case err != nil:
				if attempt++; attempt > readAttempts || ctx.Err() != nil {
					return err
				}
				if retry.Wait(ctx, attempt) != nil {
					return ctx.Err()
				}
				continue
			case iter == "":
				s.ended = true
				return nil
			}
			s.iter = iter
		}
		start := time.Now()
		page, err := t.src.Stream.Read(ctx, s.id, s.iter, pageLimit)
		switch {
		case errors.Is(err, streamtally.ErrIteratorExpired):
			s.iter = ""
			continue
		case errors.Is(err, streamtally.ErrTrimmed) && after == "" && attempt < readAttempts:
			// Reading from the trim horizon, nothing can be lost before
			// the first record read: DynamoDB Local answers this to a
			// TRIM_HORIZON iterator of a young stream now and then.
			attempt++
			s.iter = ""
			if retry.Wait(ctx, attempt) != nil {
				return ctx.Err()
			}
			continue
		case errors.Is(err, streamtally.ErrTrimmed):
			return fmt.Errorf("shard %s: records after %q were trimmed from the stream before they were read; run again", s.id, after)
		case err != nil:
			if attempt++; attempt > readAttempts || ctx.Err() != nil {
				return err
			}
			if retry.Wait(ctx, attempt) != nil {
				return ctx.Err()
			}
			continue
		}
		attempt = 0
		for _, r := range page.Records {
			// An iterator after s.last never returns s.last again, but
			// keep the list strictly growing whatever happens.
			if seqAfter(string(r.SequenceNumber), maxSeq(s.from, s.last)) {
				s.recs = append(s.recs, r)
				s.last = string(r.SequenceNumber)
				t.read++
			}
		}
		s.iter = page.Next
		if s.iter == "" {
			s.ended = true
			return nil
		}
		if len(page.Records) == 0 {
			s.empties++
		} else {
			s.empties = 0
		}
		if len(page.Records) < pageLimit {
			if len(page.Records) > 0 || s.empties >= emptyPages {
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
		if !retry.Sleep(ctx, t.poll) {
			return ctx.Err()
		}
	}
}

// readThrough reads until every shard with a target has been read through
// it, or to its end for the target lease.ShardEnd. Every target is a
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
			if f != lease.ShardEnd && !seqAfter(f, maxSeq(s.from, s.last)) {
				continue
			}
			done = false
		}
		if done {
			return nil
		}
		if !retry.Sleep(ctx, t.poll) {
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
	n := sort.Search(len(s.recs), func(i int) bool { return seqAfter(string(s.recs[i].SequenceNumber), seq) })
	return s.recs[:n]
}
