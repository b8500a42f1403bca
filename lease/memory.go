package lease

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/streamtally/streamtally"
)

// Memory is a lease table in this process, shared by every worker given
// one of its views: the consumer's unit tests run workers over it without
// DynamoDB. Its rows obey the conditions Table's writes carry, so a test
// that passes over Memory exercises the same handovers.
type Memory struct {
	mu   sync.Mutex
	rows map[string]Lease
	now  func() time.Time
}

// NewMemory returns an empty in-memory lease table.
func NewMemory() *Memory { return &Memory{rows: map[string]Lease{}, now: time.Now} }

// Worker returns the table as worker sees it, with leases of duration.
func (m *Memory) Worker(worker string, duration time.Duration) *MemoryWorker {
	return &MemoryWorker{m: m, worker: worker, duration: duration}
}

// MemoryWorker is one worker's handle on a Memory table.
type MemoryWorker struct {
	m        *Memory
	worker   string
	duration time.Duration
}

// Init does nothing: the table always exists.
func (w *MemoryWorker) Init(context.Context) error { return nil }

// List reads every shard lease and the set of live workers.
func (w *MemoryWorker) List(context.Context) (map[string]Lease, map[string]bool, error) {
	w.m.mu.Lock()
	defer w.m.mu.Unlock()
	now := w.m.now()
	leases, workers := map[string]Lease{}, map[string]bool{}
	for id, l := range w.m.rows {
		if strings.HasPrefix(id, workerRowPrefix) {
			if now.Before(l.Timeout) {
				workers[l.Owner] = true
			}
			continue
		}
		leases[id] = l
	}
	return leases, workers, nil
}

// Take takes the lease of s as seen, under the conditions of Table.Take.
func (w *MemoryWorker) Take(_ context.Context, s streamtally.Shard, seen *Lease, startedAt time.Time) (Taken, error) {
	w.m.mu.Lock()
	defer w.m.mu.Unlock()
	now := w.m.now()
	row, existed := w.m.rows[s.ID]
	switch {
	case seen == nil && existed,
		seen != nil && (!existed || row.Owner != seen.Owner || row.timeout != seen.timeout):
		return Taken{}, fmt.Errorf("take lease of shard %s: %w (its row changed)", s.ID, ErrLeaseHeld)
	case seen != nil && seen.Owner != "" && seen.Owner != w.worker && now.Before(seen.Timeout):
		return Taken{}, fmt.Errorf("take lease of shard %s: %w until %s", s.ID, ErrLeaseHeld, seen.Timeout.Format(time.RFC3339))
	}
	tk := Taken{Checkpoint: row.Checkpoint, StartedAt: row.StartedAt, Existed: existed, From: row.Owner}
	if !existed {
		row = Lease{Shard: s.ID, StartedAt: startedAt.UTC()}
		tk.StartedAt = row.StartedAt
	}
	row.Owner = w.worker
	row.Timeout, row.timeout = w.expiry(now)
	if s.Parent != "" {
		row.Parent = s.Parent
	}
	w.m.rows[s.ID] = row
	return tk, nil
}

// Renew extends this worker's lease of shard.
func (w *MemoryWorker) Renew(_ context.Context, shard string) error {
	return w.owned(shard, func(l *Lease) { l.Timeout, l.timeout = w.expiry(w.m.now()) })
}

// Checkpoint records that everything up to seq (or ShardEnd) is applied.
func (w *MemoryWorker) Checkpoint(_ context.Context, shard, seq string) error {
	return w.owned(shard, func(l *Lease) { l.Checkpoint = seq })
}

func (w *MemoryWorker) owned(shard string, update func(*Lease)) error {
	w.m.mu.Lock()
	defer w.m.mu.Unlock()
	l, ok := w.m.rows[shard]
	if !ok || l.Owner != w.worker {
		return fmt.Errorf("shard %s: %w", shard, ErrLeaseLost)
	}
	update(&l)
	w.m.rows[shard] = l
	return nil
}

// Release gives up this worker's lease of shard.
func (w *MemoryWorker) Release(shard string) error {
	w.m.mu.Lock()
	defer w.m.mu.Unlock()
	if l, ok := w.m.rows[shard]; ok && l.Owner == w.worker {
		l.Owner, l.Timeout, l.timeout = "", time.Time{}, ""
		w.m.rows[shard] = l
	}
	return nil
}

// MarkEnded checkpoints ShardEnd for a shard whose row is as seen.
func (w *MemoryWorker) MarkEnded(_ context.Context, seen Lease) error {
	w.m.mu.Lock()
	defer w.m.mu.Unlock()
	l, ok := w.m.rows[seen.Shard]
	if !ok || l.Owner != seen.Owner || (seen.Owner != "" && l.timeout != seen.timeout) {
		return fmt.Errorf("end shard %s: %w (its row changed)", seen.Shard, ErrLeaseHeld)
	}
	l.Checkpoint = ShardEnd
	w.m.rows[seen.Shard] = l
	return nil
}

// Heartbeat announces that this worker is alive until now + duration.
func (w *MemoryWorker) Heartbeat(context.Context) error {
	w.m.mu.Lock()
	defer w.m.mu.Unlock()
	l := Lease{Shard: workerRowPrefix + w.worker, Owner: w.worker}
	l.Timeout, l.timeout = w.expiry(w.m.now())
	w.m.rows[l.Shard] = l
	return nil
}

// Leave removes this worker's heartbeat row.
func (w *MemoryWorker) Leave(context.Context) error {
	w.m.mu.Lock()
	defer w.m.mu.Unlock()
	delete(w.m.rows, workerRowPrefix+w.worker)
	return nil
}

func (w *MemoryWorker) expiry(now time.Time) (time.Time, string) {
	t := now.Add(w.duration).UTC()
	return t, t.Format(time.RFC3339Nano)
}
