package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/internal/retry"
	"github.com/streamtally/streamtally/lease"
)

// outcome is how a shard reader stopped.
type outcome int

const (
	stopped outcome = iota // asked to stop; the lease may be released
	ended                  // read to its end and checkpointed as such
	lost                   // another worker owns the lease now
)

func (o outcome) String() string {
	return [...]string{"stopped", "ended", "lost"}[o]
}

// catchUpCheckpointEvery spaces checkpoints while a reader is behind and
// reads full pages back to back. A checkpoint is a conditional write to
// the lease table, a round trip that would otherwise come with every page;
// the per-view fences make the replay it saves (at most this much reading
// after a crash) harmless. A reader at the tip checkpoints every batch.
const catchUpCheckpointEvery = time.Second

// latestStartSlack is how long before a shard's recorded LATEST start the
// records are taken that a later owner reads from the trim horizon: the
// start is the daemon's clock, a record's creation time DynamoDB's, and
// creation times are rounded down (to the second by DynamoDB Streams, to
// the minute by DynamoDB Local), so a record written just after the start
// may carry an earlier time. The records of about a minute before the
// start count too; none after it is skipped.
const latestStartSlack = 70 * time.Second

// streamRetention is how long DynamoDB Streams keeps a record.
const streamRetention = 24 * time.Hour

// shardReader reads one leased shard from its checkpoint on.
type shardReader struct {
	w      *Worker
	shard  streamtally.Shard
	taken  lease.Taken
	last   streamtally.Seq // last sequence number every view holds
	latest bool            // without a position, start at the tip, not the oldest record
	// skipBefore, while not zero, drops records created before it: the
	// reader is finding, from the trim horizon, where an earlier owner
	// started the shard at LATEST.
	skipBefore time.Time
	// guardTrim says the recorded start is about as old as the stream's
	// retention: unless the first record read is older than the start,
	// records after the start may have been trimmed unread.
	guardTrim bool
	log       *slog.Logger
	prog      *progress

	// Applied but not yet checkpointed: always a suffix of what last
	// covers, written at the next checkpoint.
	pending        int
	pendingCreated time.Time
	checkpointedAt time.Time
}

// run reads until readCtx ends, the shard ends, or the lease is lost.
// workCtx bounds the batch in flight: on shutdown reading stops at once
// but the batch already read is applied and checkpointed, unless the grace
// period runs out first.
func (r *shardReader) run(readCtx, workCtx context.Context) outcome {
	if !r.position(readCtx, workCtx) {
		return stopped
	}
	o := r.read(readCtx, workCtx)
	if o == stopped {
		// Hand the lease over with everything applied checkpointed, so
		// that the next owner starts where this one stopped.
		if lo, ok := r.flush(workCtx); !ok {
			return lo
		}
	}
	return o
}

func (r *shardReader) read(readCtx, workCtx context.Context) outcome {
	iter, o, ok := r.iterator(readCtx, workCtx)
	if !ok {
		return o
	}
	failures := 0
	for {
		page, err := r.w.source.Read(readCtx, r.shard.ID, iter, r.w.opt.BatchSize)
		if readCtx.Err() != nil {
			return stopped
		}
		if err != nil {
			expired, trimmed, gone := errors.Is(err, streamtally.ErrIteratorExpired), errors.Is(err, streamtally.ErrTrimmed), errors.Is(err, streamtally.ErrShardGone)
			if expired || trimmed || gone {
				// A new iterator starts from what is checkpointed.
				if o, ok := r.flush(workCtx); !ok {
					return o
				}
			}
			switch {
			case expired:
				r.w.stats.ExpiredIterators.Add(1)
				r.log.Info("shard iterator expired; resuming from the checkpoint", "after", r.last)
			case trimmed:
				if !r.trimmed(readCtx, workCtx, err) {
					return stopped
				}
			case gone:
				return r.gone(readCtx, workCtx, err)
			default:
				r.w.stats.ReadErrors.Add(1)
				r.log.Warn("get records failed; retrying", "err", err, "attempt", failures+1)
				if retry.Wait(readCtx, failures) != nil {
					return stopped
				}
				failures++
				continue
			}
			if iter, o, ok = r.iterator(readCtx, workCtx); !ok {
				return o
			}
			continue
		}
		failures = 0
		recs := page.Records
		n := len(recs)
		if recs, ok = r.skip(readCtx, workCtx, recs); !ok {
			return stopped
		}
		r.prog.read(recs)
		if len(recs) > 0 {
			if o, ok := r.apply(workCtx, recs); !ok {
				return o
			}
		}
		// A full page says more is waiting; anything less, the tip.
		full := n >= r.w.opt.BatchSize && page.Next != ""
		if r.pending > 0 && (!full || time.Since(r.checkpointedAt) >= catchUpCheckpointEvery) {
			if o, ok := r.flush(workCtx); !ok {
				return o
			}
		}
		if page.Next == "" {
			return r.finish(workCtx)
		}
		iter = page.Next
		if n == 0 && !retry.Sleep(readCtx, r.w.opt.PollInterval) {
			return stopped
		}
	}
}

// skip drops the records created before skipBefore, until the first one
// that is not: from there on every record is the shard's after its start.
// It reports false when the reader was stopped first.
func (r *shardReader) skip(readCtx, workCtx context.Context, recs []streamtally.Record) ([]streamtally.Record, bool) {
	if r.skipBefore.IsZero() || len(recs) == 0 {
		return recs, true
	}
	if r.guardTrim {
		r.guardTrim = false
		if !recs[0].Created.Before(r.skipBefore) {
			reason := fmt.Sprintf("shard %s was started at LATEST at %s and nothing of it was checkpointed; the oldest record the stream still holds is from %s, so records after the start may have been trimmed unread",
				r.shard.ID, r.taken.StartedAt.UTC().Format(time.RFC3339), recs[0].Created.UTC().Format(time.RFC3339))
			if !r.lose(readCtx, workCtx, reason) {
				return nil, false
			}
		}
	}
	for i, rec := range recs {
		if !rec.Created.Before(r.skipBefore) {
			r.skipBefore = time.Time{}
			return recs[i:], true
		}
	}
	return nil, true
}

// position decides where the reader starts: after the checkpoint; else,
// for a shard somebody started, after the views' fences or from the start
// time recorded with the lease; LATEST only for a shard nobody started.
// It reports false when the reader was stopped first.
func (r *shardReader) position(readCtx, workCtx context.Context) bool {
	tk := r.taken
	var nearest streamtally.Seq
	var all bool
	err := r.retry(readCtx, "opening the shard", func() error {
		var err error
		nearest, all, err = r.w.handler.OpenShard(workCtx, r.shard.ID, startCheckpoint(tk.Checkpoint), tk.From != "")
		return err
	})
	if err != nil {
		return false
	}
	r.latest = false
	switch {
	case tk.Checkpoint == lease.ShardEnd:
	case tk.Checkpoint != "":
		r.last = streamtally.Seq(tk.Checkpoint)
	case all && nearest != "":
		// A recount swapped the views in, or a reader applied a batch
		// and stopped before its checkpoint: every view holds the shard
		// through a fence.
		r.last = nearest
	case !tk.StartedAt.IsZero() && tk.Existed:
		// Started at LATEST by an owner that checkpointed nothing: its
		// LATEST was a moment, not a position, so find the moment again.
		r.skipBefore = tk.StartedAt.Add(-latestStartSlack)
		r.log.Info("resuming a shard started at LATEST from the time it started", "started_at", tk.StartedAt)
		if time.Since(tk.StartedAt) > streamRetention-latestStartSlack {
			r.guardTrim = true
		}
	case nearest != "":
		r.last = nearest
	case tk.Existed:
		// Somebody started the shard and left no trace of where: reading
		// it all loses nothing.
	case !tk.StartedAt.IsZero():
		r.latest = true
	}
	at := "TRIM_HORIZON"
	if r.latest {
		at = "LATEST"
	}
	r.log.Info("starting shard", "after", r.last, "at", at, "views_nearest", nearest, "every_view", all)
	return true
}

// startCheckpoint is the checkpoint as the handler knows it: a shard read
// to its end is not one whose records are all handled by every view.
func startCheckpoint(cp string) streamtally.Seq {
	if cp == lease.ShardEnd {
		return ""
	}
	return streamtally.Seq(cp)
}

// retry calls fn until it succeeds, with backoff, or ctx ends.
func (r *shardReader) retry(ctx context.Context, what string, fn func() error) error {
	for attempt := 0; ; attempt++ {
		err := fn()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.w.stats.ApplyErrors.Add(1)
		r.log.Warn(what+" failed; retrying", "err", err, "attempt", attempt+1)
		if err := retry.Wait(ctx, attempt); err != nil {
			return err
		}
	}
}

// apply hands a batch to the handler until it holds, then checkpoints.
func (r *shardReader) apply(ctx context.Context, recs []streamtally.Record) (outcome, bool) {
	start := time.Now()
	for attempt := 0; ; attempt++ {
		err := r.w.handler.HandleBatch(ctx, r.shard.ID, r.last, recs)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return stopped, false
		}
		r.w.stats.ApplyErrors.Add(1)
		r.log.Warn("applying batch failed; retrying, nothing is checkpointed meanwhile", "err", err, "attempt", attempt+1)
		if retry.Wait(ctx, attempt) != nil {
			return stopped, false
		}
	}
	r.w.stats.Batches.Add(1)
	r.w.stats.Records.Add(int64(len(recs)))
	if r.w.opt.Observer != nil {
		r.w.opt.Observer.BatchApplied(r.shard.ID, len(recs), time.Since(start))
	}
	r.last = recs[len(recs)-1].SequenceNumber
	r.pending += len(recs)
	r.pendingCreated = recs[len(recs)-1].Created
	return 0, true
}

// flush checkpoints what was applied since the last checkpoint.
func (r *shardReader) flush(ctx context.Context) (outcome, bool) {
	if r.pending == 0 {
		return 0, true
	}
	if o, ok := r.checkpoint(ctx, string(r.last)); !ok {
		return o, false
	}
	r.prog.checkpointed(r.pendingCreated, r.pending)
	r.pending = 0
	r.checkpointedAt = time.Now()
	return 0, true
}

// finish marks the shard as read to its end, which lets its children start.
func (r *shardReader) finish(ctx context.Context) outcome {
	if o, ok := r.checkpoint(ctx, lease.ShardEnd); !ok {
		return o
	}
	if r.pending > 0 {
		r.prog.checkpointed(r.pendingCreated, r.pending)
		r.pending = 0
	}
	r.log.Info("shard ended")
	return ended
}

func (r *shardReader) checkpoint(ctx context.Context, seq string) (outcome, bool) {
	for attempt := 0; ; attempt++ {
		err := r.w.leases.Checkpoint(ctx, r.shard.ID, seq)
		switch {
		case err == nil:
			return 0, true
		case errors.Is(err, lease.ErrLeaseLost):
			r.log.Warn("lease lost while checkpointing; another worker continues the shard", "seq", seq)
			return lost, false
		}
		r.log.Warn("checkpoint failed; retrying", "err", err, "attempt", attempt+1)
		if retry.Wait(ctx, attempt) != nil {
			return stopped, false
		}
	}
}

// trimmed handles TrimmedDataAccessException. With a position, records
// after it were trimmed before they were read: a loss, which every view
// reports, and the reader goes on from the trim horizon. Without one
// (reading from the trim horizon or LATEST) nothing was skipped: the trim
// horizon moved while the reader got there, and it simply asks again. It
// reports false when the reader was stopped first.
func (r *shardReader) trimmed(readCtx, workCtx context.Context, err error) bool {
	if r.last == "" {
		r.log.Info("the trim horizon moved before the first record was read; reading from it again", "err", err)
		return retry.Sleep(readCtx, r.w.opt.PollInterval)
	}
	r.w.stats.Trimmed.Add(1)
	r.log.Error("records past the checkpoint were trimmed from the stream before they were read; the views are marked lost and the shard resumes at the trim horizon", "after", r.last, "err", err)
	reason := fmt.Sprintf("records of shard %s after %s were trimmed from the stream before they were read", r.shard.ID, r.last)
	if !r.lose(readCtx, workCtx, reason) {
		return false
	}
	r.last = ""
	r.latest = false
	r.skipBefore = time.Time{}
	return true
}

// gone ends a shard that left the stream while the reader still had
// records of it to read: a loss, which every view reports.
func (r *shardReader) gone(readCtx, workCtx context.Context, err error) outcome {
	r.w.stats.Gone.Add(1)
	r.log.Error("shard left the stream before it was read to its end; the views are marked lost", "after", r.last, "err", err)
	reason := fmt.Sprintf("shard %s left the stream before it was read to its end: the records after %s were never read", r.shard.ID, describeSeq(string(r.last)))
	if !r.lose(readCtx, workCtx, reason) {
		return stopped
	}
	return r.finish(workCtx)
}

// lose tells the handler that records were lost, until it has heard it.
func (r *shardReader) lose(readCtx, workCtx context.Context, reason string) bool {
	return r.retry(readCtx, "reporting lost records", func() error {
		return r.w.handler.RecordsLost(workCtx, r.shard.ID, reason)
	}) == nil
}

// iterator returns an iterator after the last position, or at the initial
// one. ok is false when the reader stopped (outcome stopped) or the shard
// ended (it was closed with nothing after the position, or is gone).
func (r *shardReader) iterator(readCtx, workCtx context.Context) (string, outcome, bool) {
	for attempt := 0; ; attempt++ {
		iter, err := r.w.source.Iterator(readCtx, r.shard.ID, streamtally.Position{After: r.last, Latest: r.latest})
		if readCtx.Err() != nil {
			return "", stopped, false
		}
		switch {
		case err == nil && iter != "":
			return iter, 0, true
		case err == nil:
			return "", r.finish(workCtx), false // a closed shard with nothing after the position
		case errors.Is(err, streamtally.ErrTrimmed):
			if !r.trimmed(readCtx, workCtx, err) {
				return "", stopped, false
			}
			continue
		case errors.Is(err, streamtally.ErrShardGone):
			return "", r.gone(readCtx, workCtx, err), false
		}
		r.w.stats.ReadErrors.Add(1)
		r.log.Warn("get shard iterator failed; retrying", "err", err, "attempt", attempt+1)
		if retry.Wait(readCtx, attempt) != nil {
			return "", stopped, false
		}
	}
}
