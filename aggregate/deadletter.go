package aggregate

import (
	"context"
	"fmt"
	"sync"

	"github.com/streamtally/streamtally"
)

// DeadLetters keeps the records a view rejects as bad data, so that none
// is lost silently. It is what aggregate needs from the publish step's
// dead-letter stream.
type DeadLetters interface {
	// Add keeps every rejection, or fails; keeping one twice is allowed.
	Add(ctx context.Context, letters []Rejection) error
}

// SetDeadLetters makes the Tally keep the records its views reject as bad
// data in dl. Without it they are only logged and counted. Call it before
// the first batch.
func (t *Tally) SetDeadLetters(dl DeadLetters) { t.letters.dl = dl }

// letters is the Tally's dead-letter bookkeeping.
type letters struct {
	dl DeadLetters

	mu sync.Mutex
	// reported holds, per shard and view, the last sequence number whose
	// rejections were reported. A batch whose apply failed is handed over
	// again; its records must not be reported again.
	reported map[string]map[string]streamtally.Seq
}

// report handles the rejections from folding a view's records of shard
// through seq. Dead letters are kept before the batch is applied, so a
// crash can keep one twice but never lose one; only then are rejections
// counted and logged, so a failed attempt counts nothing.
func (t *Tally) report(ctx context.Context, view, shard string, through streamtally.Seq, rejected []Rejection) error {
	l := &t.letters
	l.mu.Lock()
	done := l.reported[shard][view]
	l.mu.Unlock()
	if done != "" {
		fresh := rejected[:0:0]
		for _, r := range rejected {
			if r.Record.SequenceNumber.After(done) {
				fresh = append(fresh, r)
			}
		}
		rejected = fresh
	}
	if len(rejected) == 0 {
		return nil
	}
	if l.dl != nil {
		var dead []Rejection
		for _, r := range rejected {
			if IsDeadLetter(r.Reason.Kind) {
				dead = append(dead, r)
			}
		}
		if len(dead) > 0 {
			if err := l.dl.Add(ctx, dead); err != nil {
				return fmt.Errorf("keep %d dead letters of view %s shard %s: %w", len(dead), view, shard, err)
			}
		}
	}
	for _, r := range rejected {
		t.reject(r)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.reported == nil {
		l.reported = map[string]map[string]streamtally.Seq{}
	}
	if l.reported[shard] == nil {
		l.reported[shard] = map[string]streamtally.Seq{}
	}
	if through.After(l.reported[shard][view]) {
		l.reported[shard][view] = through
	}
	return nil
}

// forget drops the bookkeeping of a shard this process no longer reads.
func (l *letters) forget(shard string) {
	l.mu.Lock()
	delete(l.reported, shard)
	l.mu.Unlock()
}
