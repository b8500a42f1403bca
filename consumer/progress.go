package consumer

import (
	"sync"
	"time"

	"github.com/streamtally/streamtally"
)

// ShardProgress says how far behind one shard's reader is.
type ShardProgress struct {
	Shard string
	// IteratorAge is the time since the newest record read was written to
	// the stream; 0 when the last read found nothing new (at the tip).
	IteratorAge time.Duration
	// CheckpointLag is the same for the newest checkpointed record: how
	// much would be read again after a crash.
	CheckpointLag time.Duration
	Records       int64 // records checkpointed since the lease was taken
	Batches       int64
}

// progress is updated by a shard's reader and read by metrics.
type progress struct {
	mu         sync.Mutex
	atTip      bool
	newestRead time.Time
	newestDone time.Time
	doneAll    bool // everything read is checkpointed
	records    int64
	batches    int64
}

func (p *progress) read(recs []streamtally.Record) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.atTip = len(recs) == 0
	if len(recs) > 0 {
		p.newestRead = recs[len(recs)-1].Created
		p.doneAll = false
	}
}

func (p *progress) checkpointed(created time.Time, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.newestDone = created
	p.doneAll = true
	p.records += int64(n)
	p.batches++
}

func (p *progress) snapshot(shard string, now time.Time) ShardProgress {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := ShardProgress{Shard: shard, Records: p.records, Batches: p.batches}
	age := func(t time.Time) time.Duration {
		if t.IsZero() || now.Before(t) {
			return 0
		}
		return now.Sub(t)
	}
	if !p.atTip {
		s.IteratorAge = age(p.newestRead)
	}
	switch {
	case p.atTip && p.doneAll:
	case p.newestDone.IsZero():
		s.CheckpointLag = age(p.newestRead)
	default:
		s.CheckpointLag = age(p.newestDone)
	}
	return s
}
