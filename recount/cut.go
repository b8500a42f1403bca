package recount

import (
	"context"
	"errors"
	"fmt"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/lease"
	"github.com/streamtally/streamtally/publish"
)

// cut is a position in every shard, read before the scan starts, so that
// every record at or before it happened before the scan read anything.
type cut struct {
	from  map[string]string // shard -> last record before the cut ("" = the shard's start)
	ended map[string]bool   // shards read to their end before the cut: nothing of them is after it
}

func (c *cut) String() string {
	return fmt.Sprintf("%d shards to read from the cut, %d read to their end before it", len(c.from), len(c.ended))
}

// checkpoints reads the lease table: shard -> checkpoint. No lease table
// (no daemon ever ran) is no checkpoint.
func (s *Recounter) checkpoints(ctx context.Context) (map[string]string, error) {
	out := map[string]string{}
	if s.Leases == nil {
		return out, nil
	}
	rows, _, err := s.Leases.List(ctx)
	if errors.Is(err, lease.ErrNoTable) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the lease table: %w", err)
	}
	for id, l := range rows {
		if l.Checkpoint != "" {
			out[id] = l.Checkpoint
		}
	}
	return out, nil
}

// rebuildCut is the cut for rebuilding views: per shard the furthest of
// the views' fences and the checkpoint. Reading the stream from there
// keeps the tail short, and a rebuilt view's fences can start there.
func (s *Recounter) rebuildCut(ctx context.Context, views []*aggregate.View) (*cut, map[string]*publish.Meta, error) {
	return s.makeCut(ctx, views, maxSeq)
}

// verifyCut is the cut for verifying views: per shard the nearest of the
// fences of the views that are not lost. Every snapshot taken later holds
// its view at or after the cut, so the records between can be folded onto
// the state at the cut to compare.
func (s *Recounter) verifyCut(ctx context.Context, views []*aggregate.View) (*cut, map[string]*publish.Meta, error) {
	return s.makeCut(ctx, views, nil)
}

func (s *Recounter) makeCut(ctx context.Context, views []*aggregate.View, pick func(a, b string) string) (*cut, map[string]*publish.Meta, error) {
	metas := map[string]*publish.Meta{}
	for _, v := range views {
		m, err := s.Store.Meta(ctx, v.Name)
		if err != nil {
			return nil, nil, err
		}
		metas[v.Name] = m
	}
	cps, err := s.checkpoints(ctx)
	if err != nil {
		return nil, nil, err
	}
	shards, err := s.Stream.Shards(ctx)
	if err != nil {
		return nil, nil, err
	}
	c := &cut{from: map[string]string{}, ended: map[string]bool{}}
	for _, sh := range shards {
		if cps[sh.ID] == lease.ShardEnd {
			c.ended[sh.ID] = true
			continue
		}
		if pick != nil {
			p := cps[sh.ID]
			for _, v := range views {
				p = pick(p, metas[v.Name].Fences[sh.ID])
			}
			c.from[sh.ID] = p
			continue
		}
		// Verify: the nearest fence of the views that are whole. A view
		// without a fence for the shard holds none of it.
		first := true
		var p string
		for _, v := range views {
			m := metas[v.Name]
			if m.Lost != "" || !m.Exists {
				continue
			}
			f := m.Fences[sh.ID]
			if first || streamtally.Seq(f).Less(streamtally.Seq(p)) {
				p, first = f, false
			}
		}
		c.from[sh.ID] = p
	}
	return c, metas, nil
}

// maxSeq returns the later of two sequence numbers, "" being the earliest.
// The recount keeps positions as the lease table writes them, where a
// checkpoint may also be lease.ShardEnd, so they are strings here.
func maxSeq(a, b string) string {
	if seqAfter(b, a) {
		return b
	}
	return a
}

// seqAfter is streamtally.Seq.After for positions kept as strings.
func seqAfter(a, b string) bool { return streamtally.Seq(a).After(streamtally.Seq(b)) }
