package recount

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/lease"
	"github.com/streamtally/streamtally/publish"
)

// swapAttempts bounds how often a rebuild holds a view again after a swap
// was refused (the hold ran out while the catch-up read the stream).
const swapAttempts = 5

// Rebuilt says what a rebuild of one view did.
type Rebuilt struct {
	View     string
	Version  int64 // the version the swap published
	Groups   int   // groups the view holds now; for a bucketed view, summed over its buckets
	CaughtUp int   // stream records folded in between the cut and the swap
}

// counted is the outcome of the scan and the tail: each view's state at
// the cut, and the stream records after it.
type counted struct {
	cut    *cut
	metas  map[string]*publish.Meta
	tail   *tail
	states []map[string]*aggregate.Counters // per view
	items  int64
}

// count reads the cut (verify's or a rebuild's), runs the scan while
// reading the stream to past its end, and computes every view's state at
// the cut.
func (s *Recounter) count(ctx context.Context, views []*aggregate.View, o Options, verify bool) (*counted, error) {
	for _, v := range views {
		if err := Recountable(v); err != nil {
			return nil, err
		}
	}
	keys, err := s.keySchema(ctx)
	if err != nil {
		return nil, err
	}
	var c *cut
	var metas map[string]*publish.Meta
	if verify {
		c, metas, err = s.verifyCut(ctx, views)
	} else {
		c, metas, err = s.rebuildCut(ctx, views)
	}
	if err != nil {
		return nil, err
	}
	s.progress("cut: %s", c)

	sc := newScanned(views)
	tl := newTail(s, c, o.Poll)
	scanEnd := make(chan time.Time, 1)
	tctx, stopTail := context.WithCancel(ctx)
	defer stopTail()
	sctx, stopScan := context.WithCancel(ctx)
	defer stopScan()
	followed := make(chan error, 1)
	go func() {
		err := tl.follow(tctx, scanEnd, o.Settle)
		if err != nil {
			stopScan() // the count cannot be completed: stop reading the table
		}
		followed <- err
	}()

	items, err := s.scanTable(sctx, keys, o, sc.add)
	if err != nil {
		stopTail()
		if terr := <-followed; terr != nil && ctx.Err() == nil && !errors.Is(terr, context.Canceled) {
			return nil, fmt.Errorf("read the stream after the cut: %w", terr)
		}
		return nil, err
	}
	scanEnd <- time.Now()
	if err := <-followed; err != nil {
		return nil, fmt.Errorf("read the stream after the cut: %w", err)
	}
	s.progress("stream: %d records after the cut read, to past the end of the scan", tl.read)
	first, err := tl.first(keys)
	if err != nil {
		return nil, err
	}
	s.progress("state at the cut: %d items scanned, %d of them changed after the cut", items, len(first))
	return &counted{cut: c, metas: metas, tail: tl, states: sc.atCut(first), items: items}, nil
}

// Rebuild recounts views from the table into fresh keys and swaps each in
// for readers, at fences every daemon then continues from. One scan feeds
// every view. The run owns every view it recounts for its whole length:
// it takes each view's recount lease first, renews them while it runs,
// and stops, changing nothing more, the moment one is lost.
func (s *Recounter) Rebuild(ctx context.Context, views []*aggregate.View, o Options) ([]Rebuilt, error) {
	for _, v := range views {
		if err := Recountable(v); err != nil {
			return nil, err
		}
	}
	claims, err := s.claim(ctx, views, o)
	if err != nil {
		return nil, err
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		for _, c := range claims {
			_ = c.Release(rctx) // what is left lapses with the lease
		}
	}()
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		s.renew(ctx, claims, o.Lease, stop)
	}()
	defer func() {
		stop(nil)
		<-renewed
	}()
	out, err := s.rebuild(ctx, views, claims, o)
	if cause := context.Cause(ctx); err != nil && errors.Is(cause, publish.ErrRecountLeaseLost) {
		err = cause
	}
	return out, err
}

func (s *Recounter) rebuild(ctx context.Context, views []*aggregate.View, claims []*publish.Claim, o Options) ([]Rebuilt, error) {
	c, err := s.count(ctx, views, o, false)
	if err != nil {
		return nil, err
	}
	var out []Rebuilt
	for i, v := range views {
		if err := writeNext(ctx, claims[i], v, c.states[i]); err != nil {
			return out, err
		}
		s.progress("view %s: %d groups at the cut written to fresh keys", v.Name, len(c.states[i]))
		r, err := s.swap(ctx, v, claims[i], c, c.states[i], o)
		if err != nil {
			return out, err
		}
		out = append(out, *r)
		s.progress("view %s: swapped in as version %d, %d groups, %d records caught up", v.Name, r.Version, r.Groups, r.CaughtUp)
	}
	return out, nil
}

// claim takes the recount lease of every view, or of none: it gives back
// those it took when one is held by another run.
func (s *Recounter) claim(ctx context.Context, views []*aggregate.View, o Options) ([]*publish.Claim, error) {
	var claims []*publish.Claim
	for _, v := range views {
		c, err := s.Store.ClaimRecount(ctx, v, o.Holder, o.Lease)
		if err != nil {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			for _, c := range claims {
				_ = c.Release(rctx)
			}
			cancel()
			return nil, err
		}
		claims = append(claims, c)
	}
	return claims, nil
}

// renew renews every lease a third of its TTL apart until ctx ends, and
// stops the run with ErrRecountLeaseLost when one is no longer the run's.
// A renewal that fails for another reason (Redis briefly unreachable) is
// tried again at the next tick; if they keep failing the lease lapses and
// the next one that reaches Redis finds it lost.
func (s *Recounter) renew(ctx context.Context, claims []*publish.Claim, ttl time.Duration, stop context.CancelCauseFunc) {
	t := time.NewTicker(ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, c := range claims {
			if err := c.Renew(ctx); errors.Is(err, publish.ErrRecountLeaseLost) {
				stop(err)
				return
			} else if err != nil && ctx.Err() == nil {
				s.progress("renewing the recount lease failed, retrying: %v", err)
			}
		}
	}
}

// swap holds v, catches its fresh keys up with the stream to the fences
// the hold froze, and swaps them in.
func (s *Recounter) swap(ctx context.Context, v *aggregate.View, claim *publish.Claim, c *counted, state map[string]*aggregate.Counters, o Options) (*Rebuilt, error) {
	patched := map[string]bool{} // groups rewritten by an earlier attempt
	for attempt := 1; ; attempt++ {
		meta, err := claim.Hold(ctx, o.Hold)
		if err != nil {
			return nil, err
		}
		r, err := s.catchUpAndSwap(ctx, v, claim, c, state, meta, patched)
		if err == nil {
			return r, nil
		}
		// Leave nothing held: the daemons go on at once.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_ = claim.ReleaseHold(rctx)
		cancel()
		var refused *publish.SwapRefusedError
		if !errors.As(err, &refused) || attempt == swapAttempts {
			return nil, err
		}
		s.progress("view %s: %v; holding it again", v.Name, err)
	}
}

func (s *Recounter) catchUpAndSwap(ctx context.Context, v *aggregate.View, claim *publish.Claim, c *counted, state map[string]*aggregate.Counters, meta *publish.Meta, patched map[string]bool) (*Rebuilt, error) {
	cps, err := s.checkpoints(ctx)
	if err != nil {
		return nil, err
	}
	// Learn the shards born since the tail last looked: a daemon may have
	// applied records of one before the hold.
	c.tail.listed = time.Time{}
	if _, err := c.tail.round(ctx, time.Time{}); err != nil {
		return nil, err
	}
	// Final fences: what the daemons applied or checkpointed, and never
	// before the cut, which the state already covers.
	target := map[string]string{}
	for id := range c.tail.shards {
		f := maxSeq(meta.Fences[id], c.cut.from[id])
		if cp := cps[id]; cp == lease.ShardEnd {
			f = lease.ShardEnd
		} else {
			f = maxSeq(f, cp)
		}
		target[id] = f
	}
	if err := c.tail.readThrough(ctx, target); err != nil {
		return nil, err
	}
	final := map[string]string{}
	catch := map[string]*aggregate.Counters{}
	changed := maps.Clone(patched)
	folded := 0
	for id, f := range target {
		sh := c.tail.shards[id]
		// Past the daemons' fences the recount folds what it read too: a
		// shard no daemon has read yet then gets a fence all the same, so
		// that a daemon starting later (at LATEST, say) resumes after the
		// records the recount counted instead of skipping some.
		if f == lease.ShardEnd || seqAfter(sh.last, f) {
			f = maxSeq(sh.from, sh.last)
		}
		final[id] = f
		recs := c.tail.through(id, f)
		folded += len(recs)
		merge(catch, v, cells(v.Fold(id, streamtally.Seq(sh.from), recs, nil)), changed)
	}
	patch := map[string]*aggregate.Counters{}
	for g := range changed {
		gd := &aggregate.Counters{Sums: make([]aggregate.Decimal, v.SumCount())}
		for _, part := range []*aggregate.Counters{state[g], catch[g]} {
			if part == nil {
				continue
			}
			gd.Count += part.Count
			for j, x := range part.Sums {
				gd.Sums[j] = gd.Sums[j].Add(x)
			}
		}
		patch[g] = gd
		patched[g] = true
	}
	if err := writeNext(ctx, claim, v, patch); err != nil {
		return nil, err
	}
	var moves []publish.FenceMove
	for _, id := range slices.Sorted(maps.Keys(unionKeys(final, meta.Fences))) {
		m := publish.FenceMove{Shard: id, Expect: meta.Fences[id], New: meta.Fences[id]}
		if f := final[id]; f != "" {
			m.New = f
		}
		if m.New == "" {
			continue
		}
		moves = append(moves, m)
	}
	groups := claim.Groups()
	version, err := claim.Swap(ctx, moves)
	if err != nil {
		return nil, err
	}
	return &Rebuilt{View: v.Name, Version: version, Groups: groups, CaughtUp: folded}, nil
}

// writeNext writes groups (cells, for a bucketed view) as whole values
// into v's fresh keys.
func writeNext(ctx context.Context, claim *publish.Claim, v *aggregate.View, groups map[string]*aggregate.Counters) error {
	if v.Bucketed() {
		return claim.WriteNextBuckets(ctx, byBucket(groups))
	}
	return claim.WriteNext(ctx, groups)
}

func unionKeys(a, b map[string]string) map[string]bool {
	out := make(map[string]bool, len(a)+len(b))
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}
