package recount

import (
	"encoding/base64"
	"strconv"
	"strings"
	"sync"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/aggregate"
)

// itemKey renders an item's key attributes as one string that is equal for
// equal keys, whether read by the scan or from a stream record. ok is false
// when an attribute is missing or not a key type.
func itemKey(names []string, img streamtally.Image) (string, bool) {
	var b strings.Builder
	for _, n := range names {
		b.WriteString(n)
		switch v := img[n].(type) {
		case *streamtally.S:
			b.WriteString("=S:")
			b.WriteString(v.Value)
		case *streamtally.N:
			d, err := aggregate.ParseNumber(v.Value)
			if err != nil {
				return "", false
			}
			b.WriteString("=N:")
			b.WriteString(d.String())
		case *streamtally.B:
			b.WriteString("=B:")
			b.WriteString(base64.StdEncoding.EncodeToString(v.Value))
		default:
			return "", false
		}
		// A NUL cannot end an attribute name; it keeps "a=S:x" + "b"
		// apart from "a=S:xb".
		b.WriteByte(0)
	}
	return b.String(), true
}

// share is one group's part of an item's contribution to a view.
type share struct {
	group int32 // index into scanned.groups
	count int64
	sums  []aggregate.Decimal
}

// scanned keeps, per item the scan read, its contribution to every view,
// until the records after the cut say which items changed. It costs the
// key (about its length plus 50 bytes of map entry) and, per view, about
// 70 bytes plus 25 per sum measure.
type scanned struct {
	views []*aggregate.View

	mu     sync.Mutex
	slot   map[string]int32   // item key -> slot
	shares [][][]share        // view -> slot -> shares
	groups []map[string]int32 // view -> interned group keys
	names  [][]string         // view -> group index -> key
	items  int64
	bad    int64 // items whose key could not be read
}

func newScanned(views []*aggregate.View) *scanned {
	s := &scanned{views: views, slot: map[string]int32{}, shares: make([][][]share, len(views)),
		groups: make([]map[string]int32, len(views)), names: make([][]string, len(views))}
	for i := range views {
		s.groups[i] = map[string]int32{}
	}
	return s
}

// contribution folds one image into v as an INSERT, through the same fold
// the daemon uses, so that whatever a view makes of an image, a recount
// makes of it too.
func contribution(v *aggregate.View, img streamtally.Image) map[string]*aggregate.Counters {
	if img == nil {
		return nil
	}
	return cells(v.Fold("", "", []streamtally.Record{{Event: streamtally.Insert, New: img}}, nil))
}

// cells returns a delta's groups keyed so that one map holds any view: a
// bucketed view's groups are keyed by cellKey(bucket, group), so that
// everything the recount adds up works per bucket and group alike.
func cells(d *aggregate.Delta) map[string]*aggregate.Counters {
	if !d.View.Bucketed() {
		return d.Groups
	}
	out := map[string]*aggregate.Counters{}
	for b, gs := range d.Buckets {
		for g, gd := range gs {
			out[cellKey(b, g)] = gd
		}
	}
	return out
}

// cellKey names a group of one bucket. The bucket start holds no NUL, so
// the first NUL splits the two apart whatever the group key holds.
func cellKey(bucket int64, group string) string {
	return strconv.FormatInt(bucket, 10) + "\x00" + group
}

// byBucket splits cells of a bucketed view back into buckets and groups.
func byBucket(c map[string]*aggregate.Counters) map[int64]map[string]*aggregate.Counters {
	out := map[int64]map[string]*aggregate.Counters{}
	for k, gd := range c {
		i := strings.IndexByte(k, 0)
		b, _ := strconv.ParseInt(k[:i], 10, 64)
		if out[b] == nil {
			out[b] = map[string]*aggregate.Counters{}
		}
		out[b][k[i+1:]] = gd
	}
	return out
}

// add records the image the scan read for the item key.
func (s *scanned) add(key string, img streamtally.Image) {
	per := make([]map[string]*aggregate.Counters, len(s.views))
	for i, v := range s.views {
		per[i] = contribution(v, img)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.items++
	slot, seen := s.slot[key]
	if !seen {
		slot = int32(len(s.slot))
		s.slot[key] = slot
	}
	for i := range s.views {
		var sh []share
		for g, gd := range per[i] {
			id, ok := s.groups[i][g]
			if !ok {
				id = int32(len(s.names[i]))
				s.groups[i][g] = id
				s.names[i] = append(s.names[i], g)
			}
			sh = append(sh, share{group: id, count: gd.Count, sums: gd.Sums})
		}
		if seen {
			// A parallel scan reads every item once; should a page be
			// read twice, the item still counts once.
			s.shares[i][slot] = sh
		} else {
			s.shares[i] = append(s.shares[i], sh)
		}
	}
}

// atCut returns every view's groups as they were at the cut. first maps
// each item key that has a record after the cut to its first such record
// (in shard lineage order): such an item was, at the cut, that record's
// old image, or absent if the record is an INSERT. Every other item did not
// change between the cut and the scan's read of it.
func (s *scanned) atCut(first map[string]*streamtally.Record) []map[string]*aggregate.Counters {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]map[string]*aggregate.Counters, len(s.views))
	touched := make([]bool, len(s.slot))
	for k := range first {
		if slot, ok := s.slot[k]; ok {
			touched[slot] = true
		}
	}
	for i, v := range s.views {
		groups := map[string]*aggregate.Counters{}
		for slot, shs := range s.shares[i] {
			if touched[slot] {
				continue
			}
			for _, sh := range shs {
				addTo(groups, v, s.names[i][sh.group], sh.count, sh.sums)
			}
		}
		for _, r := range first {
			if r.Event == streamtally.Insert {
				continue
			}
			for g, gd := range contribution(v, r.Old) {
				addTo(groups, v, g, gd.Count, gd.Sums)
			}
		}
		out[i] = groups
	}
	return out
}

func addTo(groups map[string]*aggregate.Counters, v *aggregate.View, g string, count int64, sums []aggregate.Decimal) {
	gd := groups[g]
	if gd == nil {
		gd = &aggregate.Counters{Sums: make([]aggregate.Decimal, v.SumCount())}
		if v.SumCount() == 0 {
			gd.Sums = nil
		}
		groups[g] = gd
	}
	gd.Count += count
	for j, x := range sums {
		gd.Sums[j] = gd.Sums[j].Add(x)
	}
}

// merge adds a delta's groups into groups and returns the names of the
// groups it changed.
func merge(groups map[string]*aggregate.Counters, v *aggregate.View, d map[string]*aggregate.Counters, changed map[string]bool) {
	for g, gd := range d {
		addTo(groups, v, g, gd.Count, gd.Sums)
		changed[g] = true
	}
}
