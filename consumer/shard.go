package consumer

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"

	"github.com/streamtally/streamtally"
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

// shardReader reads one leased shard from its checkpoint on.
type shardReader struct {
	w       *Worker
	shard   Shard
	last    string                  // last sequence number every view holds
	initial types.ShardIteratorType // where to start without a checkpoint
	log     *slog.Logger
	prog    *progress

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
	iter, ok := r.iterator(readCtx)
	if !ok {
		if readCtx.Err() != nil {
			return stopped
		}
		return r.finish(workCtx)
	}
	failures := 0
	for {
		page := decodedPage{shard: r.shard.ID}
		out, err := r.w.streams.GetRecords(withPage(readCtx, &page), &dynamodbstreams.GetRecordsInput{
			ShardIterator: aws.String(iter),
			Limit:         aws.Int32(int32(r.w.opt.BatchSize)),
		}, fastDecode)
		if readCtx.Err() != nil {
			return stopped
		}
		if err != nil {
			var expired *types.ExpiredIteratorException
			var trimmed *types.TrimmedDataAccessException
			if errors.As(err, &expired) || errors.As(err, &trimmed) {
				// A new iterator starts from what is checkpointed.
				if o, ok := r.flush(workCtx); !ok {
					return o
				}
			}
			switch {
			case errors.As(err, &expired):
				r.w.stats.ExpiredIterators.Add(1)
				r.log.Info("shard iterator expired; resuming from the checkpoint", "after", r.last)
			case errors.As(err, &trimmed):
				r.trimmed(err)
			default:
				r.w.stats.ReadErrors.Add(1)
				r.log.Warn("get records failed; retrying", "err", err, "attempt", failures+1)
				if backoff(readCtx, failures, rand.Int64N) != nil {
					return stopped
				}
				failures++
				continue
			}
			if iter, ok = r.iterator(readCtx); !ok {
				if readCtx.Err() != nil {
					return stopped
				}
				return r.finish(workCtx)
			}
			continue
		}
		failures = 0
		recs := page.recs
		if !page.done {
			recs = toRecords(r.shard.ID, out.Records)
		}
		r.prog.read(recs)
		if len(recs) > 0 {
			if o, ok := r.apply(workCtx, recs); !ok {
				return o
			}
		}
		// A full page says more is waiting; anything less, the tip.
		full := len(recs) >= r.w.opt.BatchSize && out.NextShardIterator != nil
		if r.pending > 0 && (!full || time.Since(r.checkpointedAt) >= catchUpCheckpointEvery) {
			if o, ok := r.flush(workCtx); !ok {
				return o
			}
		}
		if out.NextShardIterator == nil {
			return r.finish(workCtx)
		}
		iter = *out.NextShardIterator
		if len(recs) == 0 {
			t := time.NewTimer(r.w.opt.PollInterval)
			select {
			case <-readCtx.Done():
				t.Stop()
				return stopped
			case <-t.C:
			}
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
		if backoff(ctx, attempt, rand.Int64N) != nil {
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
	if o, ok := r.checkpoint(ctx, r.last); !ok {
		return o, false
	}
	r.prog.checkpointed(r.pendingCreated, r.pending)
	r.pending = 0
	r.checkpointedAt = time.Now()
	return 0, true
}

// finish marks the shard as read to its end, which lets its children start.
func (r *shardReader) finish(ctx context.Context) outcome {
	if o, ok := r.checkpoint(ctx, ShardEnd); !ok {
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
		case errors.Is(err, ErrLeaseLost):
			r.log.Warn("lease lost while checkpointing; another worker continues the shard", "seq", seq)
			return lost, false
		}
		r.log.Warn("checkpoint failed; retrying", "err", err, "attempt", attempt+1)
		if backoff(ctx, attempt, rand.Int64N) != nil {
			return stopped, false
		}
	}
}

func (r *shardReader) trimmed(err error) {
	r.w.stats.Trimmed.Add(1)
	r.log.Error("records past the checkpoint were trimmed from the stream before they were read; resuming at the trim horizon", "after", r.last, "err", err)
	r.last = ""
	r.initial = types.ShardIteratorTypeTrimHorizon
}

// iterator returns an iterator after the last checkpoint, or at the initial
// position. ok is false when the context ended or the shard is gone.
func (r *shardReader) iterator(ctx context.Context) (string, bool) {
	for attempt := 0; ; attempt++ {
		in := &dynamodbstreams.GetShardIteratorInput{StreamArn: aws.String(r.w.arn), ShardId: aws.String(r.shard.ID)}
		if r.last != "" {
			in.ShardIteratorType = types.ShardIteratorTypeAfterSequenceNumber
			in.SequenceNumber = aws.String(r.last)
		} else {
			in.ShardIteratorType = r.initial
		}
		out, err := r.w.streams.GetShardIterator(ctx, in)
		if ctx.Err() != nil {
			return "", false
		}
		var trimmed *types.TrimmedDataAccessException
		var gone *types.ResourceNotFoundException
		switch {
		case err == nil && out.ShardIterator != nil:
			return *out.ShardIterator, true
		case err == nil:
			return "", false // a closed shard with nothing after the position
		case errors.As(err, &trimmed):
			r.trimmed(err)
			continue
		case errors.As(err, &gone):
			r.log.Warn("shard is no longer in the stream", "err", err)
			return "", false
		}
		r.w.stats.ReadErrors.Add(1)
		r.log.Warn("get shard iterator failed; retrying", "err", err, "attempt", attempt+1)
		if backoff(ctx, attempt, rand.Int64N) != nil {
			return "", false
		}
	}
}
