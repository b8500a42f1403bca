package recount

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/consumer"
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
	states []map[string]*aggregate.GroupDelta // per view
	items  int64
}

// count reads the cut (verify's or a rebuild's), runs the scan while
// reading the stream to past its end, and computes every view's state at
// the cut.
func (s *Source) count(ctx context.Context, views []*aggregate.View, o Options, verify bool) (*counted, error) {
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
// every view.
func (s *Source) Rebuild(ctx context.Context, views []*aggregate.View, o Options) ([]Rebuilt, error) {
	for _, v := range views {
		// Fresh keys left by a rebuild that stopped before its swap.
		if err := s.Store.ClearNext(ctx, v); err != nil {
			return nil, err
		}
	}
	c, err := s.count(ctx, views, o, false)
	if err != nil {
		return nil, err
	}
	var out []Rebuilt
	for i, v := range views {
		if err := s.writeNext(ctx, v, c.states[i]); err != nil {
			return out, err
		}
		s.progress("view %s: %d groups at the cut written to fresh keys", v.Name, len(c.states[i]))
		r, err := s.swap(ctx, v, c, c.states[i], o)
		if err != nil {
			return out, err
		}
		out = append(out, *r)
		s.progress("view %s: swapped in as version %d, %d groups, %d records caught up", v.Name, r.Version, r.Groups, r.CaughtUp)
	}
	return out, nil
}

// swap holds v, catches its fresh keys up with the stream to the fences
// the hold froze, and swaps them in.
func (s *Source) swap(ctx context.Context, v *aggregate.View, c *counted, state map[string]*aggregate.GroupDelta, o Options) (*Rebuilt, error) {
	patched := map[string]bool{} // groups rewritten by an earlier attempt
	for attempt := 1; ; attempt++ {
		token := newToken()
		meta, err := s.Store.Hold(ctx, v.Name, token, o.Hold)
		if err != nil {
			return nil, err
		}
		r, err := s.catchUpAndSwap(ctx, v, c, state, meta, token, patched)
		if err == nil {
			return r, nil
		}
		// Leave nothing held: the daemons go on at once.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_ = s.Store.Release(rctx, v.Name, token)
		cancel()
		var refused *publish.SwapRefusedError
		if !errors.As(err, &refused) || attempt == swapAttempts {
			return nil, err
		}
		s.progress("view %s: %v; holding it again", v.Name, err)
	}
}

func (s *Source) catchUpAndSwap(ctx context.Context, v *aggregate.View, c *counted, state map[string]*aggregate.GroupDelta, meta *publish.Meta, token string, patched map[string]bool) (*Rebuilt, error) {
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
		if cp := cps[id]; cp == consumer.ShardEnd {
			f = consumer.ShardEnd
		} else {
			f = maxSeq(f, cp)
		}
		target[id] = f
	}
	if err := c.tail.readThrough(ctx, target); err != nil {
		return nil, err
	}
	final := map[string]string{}
	catch := map[string]*aggregate.GroupDelta{}
	changed := maps.Clone(patched)
	folded := 0
	for id, f := range target {
		sh := c.tail.shards[id]
		if f == consumer.ShardEnd {
			f = maxSeq(sh.from, sh.last)
		}
		final[id] = f
		recs := c.tail.through(id, f)
		folded += len(recs)
		merge(catch, v, cells(v.Fold(id, sh.from, recs, nil)), changed)
	}
	patch := map[string]*aggregate.GroupDelta{}
	for g := range changed {
		gd := &aggregate.GroupDelta{Sums: make([]aggregate.Decimal, v.SumCount())}
		for _, part := range []*aggregate.GroupDelta{state[g], catch[g]} {
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
	if err := s.writeNext(ctx, v, patch); err != nil {
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
	version, err := s.Store.Swap(ctx, v, token, moves)
	if err != nil {
		return nil, err
	}
	groups := 0
	for g, gd := range state {
		if !changed[g] && gd.Count != 0 {
			groups++
		}
	}
	for _, gd := range patch {
		if gd.Count != 0 {
			groups++
		}
	}
	return &Rebuilt{View: v.Name, Version: version, Groups: groups, CaughtUp: folded}, nil
}

// writeNext writes groups (cells, for a bucketed view) as whole values
// into v's fresh keys.
func (s *Source) writeNext(ctx context.Context, v *aggregate.View, groups map[string]*aggregate.GroupDelta) error {
	if v.Bucketed() {
		return s.Store.WriteNextBuckets(ctx, v, byBucket(groups))
	}
	return s.Store.WriteNext(ctx, v, groups)
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

func newToken() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}
