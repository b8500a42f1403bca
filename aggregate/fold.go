package aggregate

import (
	"strconv"

	"github.com/streamtally/streamtally"
)

// Counters are one group's item count and sums: in a Delta the net change
// a batch makes, in Totals the whole value a scan gives.
type Counters struct {
	Count int64     // items (in a Delta: entering minus leaving)
	Sums  []Decimal // one per sum measure, in View.SumIndex order
}

func (g *Counters) isZero() bool {
	if g.Count != 0 {
		return false
	}
	for _, s := range g.Sums {
		if !s.IsZero() {
			return false
		}
	}
	return true
}

// Delta is one view's net change over a run of one shard's records. It is
// applied to the store only if the view's fence for the shard still equals
// After, and moves the fence to Through.
type Delta struct {
	View    *View
	Shard   string
	After   streamtally.Seq // records up to and including this sequence number were applied before ("" if none)
	Through streamtally.Seq // the last sequence number folded in
	Records int             // records folded in (after the fence)
	// Groups holds the net change per group of a view without buckets.
	Groups map[string]*Counters
	// Buckets holds, for a bucketed view, the net change per bucket (its
	// start in Unix seconds) and group; Groups is then empty.
	Buckets map[int64]map[string]*Counters
	// NewEpoch asks the store to start a new epoch of the view with this
	// delta, unless the view's epoch is no longer EpochSeen: another
	// reader started one since, and versions after it are new already.
	NewEpoch  bool
	EpochSeen string
}

// Empty reports whether applying d would change nothing a reader can see.
func (d *Delta) Empty() bool { return len(d.Groups) == 0 && len(d.Buckets) == 0 }

// Rejection says why an image contributes nothing to a view.
type Rejection struct {
	View   string
	Record *streamtally.Record
	Reason Reason
}

// Fold pre-aggregates the records of one shard that come after the fence
// into one delta, so that the store's work grows with the groups a batch
// touches, not with its records. reject, if not nil, hears of every new
// image that contributes nothing.
func (v *View) Fold(shard string, after streamtally.Seq, recs []streamtally.Record, reject func(Rejection)) *Delta {
	d := &Delta{View: v, Shard: shard, After: after, Through: after, Groups: map[string]*Counters{}}
	var nowMS int64
	if v.bucket != nil {
		d.Buckets = map[int64]map[string]*Counters{}
		nowMS = v.now().UnixMilli()
	}
	for i := range recs {
		r := &recs[i]
		if after != "" && !r.SequenceNumber.After(after) {
			continue
		}
		d.Records++
		d.Through = r.SequenceNumber
		if r.Event != streamtally.Insert && r.Event != streamtally.Modify && r.Event != streamtally.Remove {
			if reject != nil {
				reject(Rejection{View: v.Name, Record: r, Reason: badRecord(r, "unknown event")})
			}
			continue
		}
		// An old image that was bad contributed nothing when it arrived, so
		// subtracting nothing for it keeps the books balanced. Only new
		// images are reported, so each bad image is reported once. An image
		// that could not be decoded is bad the same way, old or new.
		var reason Reason
		if r.Old != nil && (r.Event == streamtally.Modify || r.Event == streamtally.Remove) {
			if c, _, ok := v.Contribute(r.Old); ok {
				if why, ok := v.place(r, &c); ok {
					d.add(c, -1, nowMS)
				} else {
					reason = why
				}
			}
		}
		switch {
		case r.Event == streamtally.Remove:
		case r.New != nil:
			c, why, ok := v.Contribute(r.New)
			if ok {
				why, ok = v.place(r, &c)
			}
			switch {
			case ok:
				d.add(c, +1, nowMS)
			case why.Kind != Filtered:
				reason = why
			}
		default:
			reason = badRecord(r, r.Event.String()+" without a new image")
		}
		// Without the old image nothing can be subtracted; unless it failed
		// to decode (and was set aside when it was new), the record is
		// broken and must not pass unnoticed.
		if reason.Kind == "" && r.Event != streamtally.Insert && r.Old == nil && r.Malformed == nil {
			reason = badRecord(r, r.Event.String()+" without an old image")
		}
		if reason.Kind != "" && reject != nil {
			reject(Rejection{View: v.Name, Record: r, Reason: reason})
		}
	}
	for k, g := range d.Groups {
		if g.isZero() {
			delete(d.Groups, k)
		}
	}
	for b, gs := range d.Buckets {
		for k, g := range gs {
			if g.isZero() {
				delete(gs, k)
			}
		}
		if len(gs) == 0 {
			delete(d.Buckets, b)
		}
	}
	return d
}

// place puts a contribution of a stream-time view into the bucket of its
// record's creation time: there a bucket holds the changes the stream
// recorded in its period, not the items whose time falls in it.
func (v *View) place(r *streamtally.Record, c *Contribution) (Reason, bool) {
	if !v.StreamTimed() {
		return Reason{}, true
	}
	if r.Created.IsZero() {
		return Reason{BadTime, "the record has no ApproximateCreationDateTime"}, false
	}
	c.Bucket = v.BucketOf(r.Created)
	return Reason{}, true
}

// badRecord is the reason for a record the fold cannot read: the
// decoder's own words where it has them.
func badRecord(r *streamtally.Record, text string) Reason {
	if r.Malformed != nil && r.Malformed.Err != nil {
		text = r.Malformed.Err.Error()
	}
	return Reason{BadRecord, text}
}

// add adds a contribution with sign. One whose bucket is past its
// retention is dropped: Redis has dropped (or is about to drop) that
// bucket, and any change to it would bring it back with partial numbers.
func (d *Delta) add(c Contribution, sign int64, nowMS int64) {
	groups := d.Groups
	if d.View.bucket != nil {
		if d.View.expired(c.Bucket, nowMS) {
			return
		}
		groups = d.Buckets[c.Bucket]
		if groups == nil {
			groups = map[string]*Counters{}
			d.Buckets[c.Bucket] = groups
		}
	}
	g := groups[c.Group]
	if g == nil {
		g = &Counters{}
		if n := d.View.SumCount(); n > 0 {
			g.Sums = make([]Decimal, n)
		}
		groups[c.Group] = g
	}
	g.Count += sign
	for i, s := range c.Sums {
		if sign < 0 {
			s = s.Neg()
		}
		g.Sums[i] = g.Sums[i].Add(s)
	}
}

// Values renders counters as a store holds them and a reader sees them:
// per measure, per group with items, the count or the exact decimal as
// text. A group with no items is absent from every measure. It is the one
// form in which computed and stored values are compared.
func (v *View) Values(groups map[string]*Counters) map[string]map[string]string {
	out := map[string]map[string]string{}
	for i, m := range v.Measures {
		vals := map[string]string{}
		si := v.SumIndex(i)
		for g, c := range groups {
			if c.Count == 0 {
				continue
			}
			if si < 0 {
				vals[g] = strconv.FormatInt(c.Count, 10)
			} else {
				vals[g] = c.Sums[si].String()
			}
		}
		out[m.Name] = vals
	}
	return out
}

// Totals computes a view without buckets from scratch over a set of
// items, as a full scan would: the reference every incremental result must
// equal.
func (v *View) Totals(items []streamtally.Image) map[string]*Counters {
	return v.scan(items).Groups
}

// BucketTotals is Totals for a bucketed view: per bucket start (Unix
// seconds) and group, leaving out buckets past their retention. It is the
// reference only for a Recomputable view.
func (v *View) BucketTotals(items []streamtally.Image) map[int64]map[string]*Counters {
	return v.scan(items).Buckets
}

func (v *View) scan(items []streamtally.Image) *Delta {
	recs := make([]streamtally.Record, len(items))
	for i, it := range items {
		recs[i] = streamtally.Record{Event: streamtally.Insert, New: it}
	}
	return v.Fold("", "", recs, nil)
}
