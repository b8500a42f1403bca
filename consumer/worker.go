package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/lease"
)

// Handler receives each shard's batches in order. The consumer checkpoints
// past a batch only after HandleBatch returns nil, and hands the same
// batch again after an error. Every call that returns an error is retried
// with backoff until it succeeds or the shard stops.
type Handler interface {
	// OpenShard is told that this worker took the lease of shard, whose
	// checkpoint is checkpoint ("" for none), from an owner that did not
	// release it (takeover): one that crashed or stalled. It returns the
	// nearest position any view holds of the shard ("" for none) and
	// whether every view holds one, so that the reader starts where the
	// views need it to.
	OpenShard(ctx context.Context, shard string, checkpoint streamtally.Seq, takeover bool) (nearest streamtally.Seq, all bool, err error)
	// HandleBatch handles recs, which follow after: the last record
	// handled before ("" when none was). Everything up to after was
	// handled before, so a store that holds less has lost data.
	HandleBatch(ctx context.Context, shard string, after streamtally.Seq, recs []streamtally.Record) error
	// RecordsLost says records of shard were lost before they could be
	// read, for the reason given: trimmed from the stream, or a shard
	// gone with records unread.
	RecordsLost(ctx context.Context, shard, reason string) error
	// ShardReleased says this worker no longer reads shard.
	ShardReleased(shard string)
}

// Options tune a Worker.
type Options struct {
	WorkerID      string
	StartLatest   bool          // start shards nobody started before at LATEST instead of TRIM_HORIZON
	PollInterval  time.Duration // wait after an empty read
	BatchSize     int           // records per read, at most 1000
	SyncInterval  time.Duration // how often shards and leases are listed
	LeaseDuration time.Duration
	ShutdownGrace time.Duration // how long the batches in flight may take after a stop
	Observer      Observer      // optional
}

// Observer hears of every applied batch, for latency metrics.
type Observer interface {
	BatchApplied(shard string, records int, took time.Duration)
}

// Stats counts what the consumer did.
type Stats struct {
	Batches, Records          atomic.Int64
	ReadErrors, ApplyErrors   atomic.Int64
	ExpiredIterators, Trimmed atomic.Int64
	// Gone counts shards that left the stream before they were read to
	// their end.
	Gone                                    atomic.Int64
	LeasesTaken, LeasesLost, LeasesReleased atomic.Int64
	LeasesHeld                              atomic.Int64
}

// Worker reads the shards of one stream that it holds leases for.
type Worker struct {
	source  ShardSource
	leases  Leases
	handler Handler
	opt     Options
	log     *slog.Logger
	stats   Stats

	lastHeartbeat atomic.Int64 // unix nanos of the last successful heartbeat

	mu   sync.Mutex
	runs map[string]*shardRun
	wg   sync.WaitGroup
	wake chan struct{}
}

type shardRun struct {
	shard              streamtally.Shard
	prog               *progress
	stopRead, stopWork context.CancelFunc
	stopping           bool
	lost               atomic.Bool // renewLoop found another worker owns the lease
}

// NewWorker returns a worker reading the shards of source.
func NewWorker(source ShardSource, leases Leases, h Handler, opt Options, log *slog.Logger) *Worker {
	return &Worker{
		source: source, leases: leases, handler: h, opt: opt,
		log:  log.With("worker", opt.WorkerID),
		runs: map[string]*shardRun{}, wake: make(chan struct{}, 1),
	}
}

// Stats returns the live counters.
func (w *Worker) Stats() *Stats { return &w.stats }

// Run works until ctx ends, then stops reading, lets the batches in flight
// finish and checkpoint, releases its leases and returns.
func (w *Worker) Run(ctx context.Context) error {
	if err := w.leases.Init(ctx); err != nil {
		if ctx.Err() != nil { // asked to stop before it started: nothing to drain
			return nil
		}
		return err
	}
	// Leases are renewed until every shard has stopped, shutdown included,
	// so a slow final batch does not let the lease lapse under it.
	renewCtx, stopRenew := context.WithCancel(context.WithoutCancel(ctx))
	renewDone := make(chan struct{})
	go func() {
		defer close(renewDone)
		w.renewLoop(renewCtx)
	}()
	defer func() {
		stopRenew()
		<-renewDone
		leaveCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := w.leases.Leave(leaveCtx); err != nil {
			w.log.Warn("could not remove worker row", "err", err)
		}
	}()

	w.heartbeat(ctx)
	t := time.NewTicker(w.opt.SyncInterval)
	defer t.Stop()
	for {
		if err := w.sync(ctx); err != nil && ctx.Err() == nil {
			w.log.Warn("shard sync failed; will retry", "err", err)
		}
		select {
		case <-ctx.Done():
			w.shutdown()
			return nil
		case <-t.C:
		case <-w.wake:
		}
	}
}

func (w *Worker) heartbeat(ctx context.Context) {
	// A write cancelled on the client may still land on the server, after
	// Leave removed the row; so the write is waited for, not cancelled.
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.opt.LeaseDuration)
	defer cancel()
	if err := w.leases.Heartbeat(hctx); err != nil {
		if ctx.Err() == nil {
			w.log.Warn("heartbeat failed", "err", err)
		}
		return
	}
	w.lastHeartbeat.Store(time.Now().UnixNano())
}

// LastHeartbeat is when this worker last wrote to the lease table
// successfully; zero before the first time.
func (w *Worker) LastHeartbeat() time.Time {
	n := w.lastHeartbeat.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// Shards reports the progress of every shard this worker reads.
func (w *Worker) Shards(now time.Time) []ShardProgress {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]ShardProgress, 0, len(w.runs))
	for id, r := range w.runs {
		out = append(out, r.prog.snapshot(id, now))
	}
	return out
}

func (w *Worker) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// sync lists shards and leases, sheds leases above this worker's share and
// takes free or expired leases of shards whose parent is finished.
func (w *Worker) sync(ctx context.Context) error {
	shards, err := w.source.Shards(ctx)
	if err != nil {
		return err
	}
	leases, workers, err := w.leases.List(ctx)
	if err != nil {
		return err
	}
	w.endGone(ctx, shards, leases)
	workers[w.opt.WorkerID] = true
	ready := w.readyShards(shards, leases)
	target := (len(ready) + len(workers) - 1) / len(workers)

	// Only this goroutine starts runs, so the runs seen here can only
	// shrink meanwhile; the lock is not held across DynamoDB calls, which
	// would hold up lease renewals.
	w.mu.Lock()
	held := 0
	for _, r := range w.runs {
		if !r.stopping {
			held++
		}
	}
	for id, r := range w.runs {
		if held <= target {
			break
		}
		if !r.stopping {
			w.log.Info("releasing lease to share shards with other workers", "shard", id, "workers", len(workers), "target", target)
			r.stopping = true
			r.stopRead()
			held--
		}
	}
	now := time.Now()
	var free []streamtally.Shard
	for _, s := range ready {
		l := leases[s.ID]
		_, mine := w.runs[s.ID]
		if !mine && (l.Owner == "" || l.Owner == w.opt.WorkerID || !now.Before(l.Timeout)) {
			free = append(free, s)
		}
	}
	w.mu.Unlock()

	for _, s := range free {
		if held >= target || ctx.Err() != nil {
			break
		}
		var seen *lease.Lease
		if l, ok := leases[s.ID]; ok {
			seen = &l
		}
		// A shard nobody started begins at LATEST if so configured,
		// unless it descends from a shard that was read; its start time
		// is recorded with the lease, in the same write.
		var startedAt time.Time
		if _, lineage := leases[s.Parent]; w.opt.StartLatest && !(s.Parent != "" && lineage) {
			startedAt = time.Now()
		}
		tk, err := w.leases.Take(ctx, s, seen, startedAt)
		if err != nil {
			w.log.Debug("lease not taken", "shard", s.ID, "err", err)
			continue
		}
		w.mu.Lock()
		w.start(s, tk)
		w.mu.Unlock()
		held++
	}
	return nil
}

// endGone ends the lease rows of shards that have left the stream without
// being read to their end (an outage longer than the stream's retention):
// nothing more can be read from them, their children must not wait for
// them, and what was never read of them is a loss the views must report.
// A row held by a live lease is left to its owner, whose reader finds the
// shard gone itself.
func (w *Worker) endGone(ctx context.Context, shards []streamtally.Shard, leases map[string]lease.Lease) {
	listed := make(map[string]bool, len(shards))
	for _, s := range shards {
		listed[s.ID] = true
	}
	now := time.Now()
	for id, l := range leases {
		if listed[id] || l.Checkpoint == lease.ShardEnd || (l.Owner != "" && l.Owner != w.opt.WorkerID && now.Before(l.Timeout)) {
			continue
		}
		w.mu.Lock()
		_, mine := w.runs[id]
		w.mu.Unlock()
		if mine {
			continue
		}
		// A listing can lag; the shard itself must say it is gone.
		if _, err := w.source.Iterator(ctx, id, streamtally.Position{}); !errors.Is(err, streamtally.ErrShardGone) {
			continue
		}
		reason := fmt.Sprintf("shard %s left the stream before it was read to its end: the records after %s were never read", id, describeSeq(l.Checkpoint))
		w.log.Error("shard gone with records unread; its children are read, the views are marked lost", "shard", id, "checkpoint", l.Checkpoint)
		if err := w.handler.RecordsLost(ctx, id, reason); err != nil {
			w.log.Warn("could not mark the views lost; will retry", "shard", id, "err", err)
			continue
		}
		if err := w.leases.MarkEnded(ctx, l); err != nil {
			w.log.Warn("could not end the lease row of a gone shard; will retry", "shard", id, "err", err)
			continue
		}
		w.stats.Gone.Add(1)
	}
}

// describeSeq names a checkpoint in a message.
func describeSeq(seq string) string {
	if seq == "" {
		return "its start"
	}
	return seq
}

// readyShards are the shards that can be read now: not finished, and whose
// parent is finished, so that an item's changes are folded in order even
// when they span a shard split.
func (w *Worker) readyShards(shards []streamtally.Shard, leases map[string]lease.Lease) []streamtally.Shard {
	byID := make(map[string]streamtally.Shard, len(shards))
	for _, s := range shards {
		byID[s.ID] = s
	}
	finished := func(id string) bool {
		s, ok := byID[id]
		if !ok {
			// Gone from the stream: nothing of it can be read any more,
			// whatever its row says (endGone reports what was lost).
			return true
		}
		if l, ok := leases[id]; ok {
			return l.Checkpoint == lease.ShardEnd
		}
		// Starting at LATEST, a shard that was already closed holds nothing
		// new, unless it descends from a shard we have read.
		_, lineage := leases[s.Parent]
		return w.opt.StartLatest && s.Closed && !(s.Parent != "" && lineage)
	}
	var ready []streamtally.Shard
	for _, s := range shards {
		if finished(s.ID) || (s.Parent != "" && !finished(s.Parent)) {
			continue
		}
		ready = append(ready, s)
	}
	return ready
}

// start runs a reader for a shard whose lease this worker just took.
// Called with w.mu held.
func (w *Worker) start(s streamtally.Shard, tk lease.Taken) {
	log := w.log.With("shard", s.ID)
	w.stats.LeasesTaken.Add(1)
	w.stats.LeasesHeld.Add(1)
	log.Info("lease taken", "checkpoint", tk.Checkpoint, "previous_owner", tk.From)
	r := &shardReader{w: w, shard: s, taken: tk, log: log, prog: &progress{}}
	readCtx, stopRead := context.WithCancel(context.Background())
	workCtx, stopWork := context.WithCancel(context.Background())
	run := &shardRun{shard: s, prog: r.prog, stopRead: stopRead, stopWork: stopWork}
	w.runs[s.ID] = run
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer stopWork()
		defer stopRead()
		o := r.run(readCtx, workCtx)
		if run.lost.Load() {
			// The reader saw only its context end; the lease is
			// another worker's, not ours to release.
			o = lost
		}
		switch {
		case o == lost:
			w.stats.LeasesLost.Add(1)
		case r.pending > 0:
			// Records applied but not checkpointed: the next owner
			// must take the lease over, not receive it, so that it
			// knows what it continues may be unknown to the lease table.
			log.Warn("lease left to expire: applied records could not be checkpointed", "pending", r.pending)
		default:
			if err := w.leases.Release(s.ID); err != nil {
				log.Warn("lease not released; it will expire", "err", err)
			} else {
				w.stats.LeasesReleased.Add(1)
			}
		}
		log.Info("shard reader stopped", "outcome", o.String())
		w.handler.ShardReleased(s.ID)
		w.mu.Lock()
		delete(w.runs, s.ID)
		w.mu.Unlock()
		w.stats.LeasesHeld.Add(-1)
		w.poke()
	}()
}

// renewLoop renews held leases and the worker's heartbeat well before they
// expire. A lease that cannot be renewed because another worker took it
// stops its reader at once.
func (w *Worker) renewLoop(ctx context.Context) {
	t := time.NewTicker(w.opt.LeaseDuration / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		w.heartbeat(ctx)
		w.mu.Lock()
		runs := make([]*shardRun, 0, len(w.runs))
		for _, r := range w.runs {
			runs = append(runs, r)
		}
		w.mu.Unlock()
		for _, r := range runs {
			err := w.leases.Renew(ctx, r.shard.ID)
			switch {
			case err == nil:
			case errors.Is(err, lease.ErrLeaseLost):
				w.log.Warn("lease lost to another worker; stopping shard", "shard", r.shard.ID)
				r.lost.Store(true)
				r.stopRead()
				r.stopWork()
			case ctx.Err() == nil:
				w.log.Warn("lease renewal failed; will retry", "shard", r.shard.ID, "err", err)
			}
		}
	}
}

// shutdown stops every reader, gives the batches in flight the grace
// period, and waits for all of them.
func (w *Worker) shutdown() {
	w.mu.Lock()
	for _, r := range w.runs {
		r.stopRead()
	}
	w.mu.Unlock()
	done := make(chan struct{})
	go func() {
		w.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return
	case <-time.After(w.opt.ShutdownGrace):
	}
	w.log.Warn("shutdown grace period over; abandoning batches in flight, they will be read again", "grace", w.opt.ShutdownGrace)
	w.mu.Lock()
	for _, r := range w.runs {
		r.stopWork()
	}
	w.mu.Unlock()
	<-done
}
