package recount

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/publish"
)

// Drift is one value Redis holds that differs from the table, or a view
// that cannot be compared at all (Measure and Group empty, Why set).
type Drift struct {
	View, Bucket, Measure, Group string // Bucket only for a bucketed view
	Want, Got                    string // "" when absent
	Why                          string
}

func (d Drift) String() string {
	if d.Why != "" {
		return fmt.Sprintf("view %s: %s", d.View, d.Why)
	}
	if d.Bucket != "" {
		return fmt.Sprintf("view %s bucket %s measure %s group %q: table %s, redis %s", d.View, d.Bucket, d.Measure, d.Group, show(d.Want), show(d.Got))
	}
	return fmt.Sprintf("view %s measure %s group %q: table %s, redis %s", d.View, d.Measure, d.Group, show(d.Want), show(d.Got))
}

func show(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// Verified says what verify compared for one view.
type Verified struct {
	View    string
	Version int64
	Groups  int // for a bucketed view, groups summed over the buckets compared
	Drift   []Drift
}

// Verify recomputes views from the table and compares them exactly with
// Redis, while the table may take writes and the daemons apply them: each
// view's snapshot is read with its fences in one MULTI/EXEC, and the
// records between the cut and those fences are folded onto the state at
// the cut, so both sides stand at the same point of the stream. A lost
// view is drift.
func (s *Recounter) Verify(ctx context.Context, views []*aggregate.View, o Options) ([]Verified, error) {
	c, err := s.count(ctx, views, o, true)
	if err != nil {
		return nil, err
	}
	var out []Verified
	for i, v := range views {
		res := Verified{View: v.Name}
		var snap *publish.Snapshot
		var series *publish.Series
		var meta *publish.Meta
		var now time.Time
		lost := ""
		if v.Bucketed() {
			series, meta, now, err = s.Store.SeriesWithFences(ctx, v)
			if series != nil {
				res.Version, lost = series.Version, series.Lost
			}
		} else {
			snap, meta, err = s.Store.SnapshotWithFences(ctx, v)
			if snap != nil {
				res.Version, lost = snap.Version, snap.Lost
			}
		}
		if err != nil {
			return out, err
		}
		switch {
		case lost != "":
			res.Drift = append(res.Drift, Drift{View: v.Name, Why: "lost: " + lost})
		case !meta.Exists:
			res.Drift = append(res.Drift, Drift{View: v.Name, Why: "Redis holds nothing of it; run streamtally backfill"})
		}
		if len(res.Drift) > 0 {
			out = append(out, res)
			continue
		}
		// Shards born since the tail last looked may be applied already.
		c.tail.listed = time.Time{}
		if _, err := c.tail.round(ctx, time.Time{}); err != nil {
			return out, err
		}
		target := map[string]string{}
		for id, sh := range c.tail.shards {
			f := meta.Fences[id]
			if seqAfter(sh.from, f) {
				res.Drift = append(res.Drift, Drift{View: v.Name, Why: fmt.Sprintf("shard %s: Redis holds it only through %q, before the cut %s", id, f, sh.from)})
				continue
			}
			target[id] = f
		}
		if len(res.Drift) > 0 {
			out = append(out, res)
			continue
		}
		if err := c.tail.readThrough(ctx, target); err != nil {
			return out, err
		}
		want := map[string]*aggregate.Counters{}
		changed := map[string]bool{}
		merge(want, v, c.states[i], changed)
		for id, f := range target {
			merge(want, v, cells(v.Fold(id, streamtally.Seq(c.tail.shards[id].from), c.tail.through(id, f), nil)), changed)
		}
		if v.Bucketed() {
			res.Groups, res.Drift = compareBuckets(v, want, series, now)
			out = append(out, res)
			continue
		}
		exp := v.Values(want)
		res.Groups = len(exp[v.Measures[0].Name])
		res.Drift = Compare(v.Name, exp, snap.Measures)
		out = append(out, res)
	}
	return out, nil
}

// expiryGuard keeps buckets that expire this close to the snapshot out of
// the comparison: Redis drops a bucket by its own clock, the daemons stop
// changing it by theirs, and the recount by its own, so near its expiry
// the sides may disagree about whether it still counts.
const expiryGuard = time.Minute

// compareBuckets compares a bucketed view bucket by bucket. Buckets past
// their retention are out of scope on both sides: the fold drops them and
// Redis has expired them; so are those about to be (expiryGuard), judged
// by Redis's clock at the snapshot.
func compareBuckets(v *aggregate.View, want map[string]*aggregate.Counters, got *publish.Series, now time.Time) (int, []Drift) {
	live := func(start int64) bool { return v.BucketExpiry(start).After(now.Add(expiryGuard)) }
	exp := map[string]map[string]map[string]string{}
	groups := 0
	for start, gs := range byBucket(want) {
		if !live(start) {
			continue
		}
		e := v.Values(gs)
		if len(e[v.Measures[0].Name]) == 0 {
			continue
		}
		groups += len(e[v.Measures[0].Name])
		exp[aggregate.BucketName(start)] = e
	}
	var out []Drift
	for b, e := range exp {
		for _, d := range Compare(v.Name, e, got.Buckets[b]) {
			d.Bucket = b
			out = append(out, d)
		}
	}
	for b, ms := range got.Buckets {
		if _, ok := exp[b]; ok {
			continue
		}
		// A name that is no bucket start is drift like any other.
		if t, err := time.Parse(time.RFC3339, b); err == nil && !live(t.Unix()) {
			continue
		}
		none := map[string]map[string]string{}
		for _, m := range v.Measures {
			none[m.Name] = nil
		}
		for _, d := range Compare(v.Name, none, ms) {
			d.Bucket = b
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Bucket != out[j].Bucket {
			return out[i].Bucket < out[j].Bucket
		}
		if out[i].Measure != out[j].Measure {
			return out[i].Measure < out[j].Measure
		}
		return out[i].Group < out[j].Group
	})
	return groups, out
}

// Compare lists, per measure and group, where got (what a store holds)
// differs from want (what the table gives, in View.Values form), exactly,
// as text. A measure only got has differs in every group.
func Compare(view string, want, got map[string]map[string]string) []Drift {
	var out []Drift
	for m, wv := range want {
		gv := got[m]
		for g, w := range wv {
			if gv[g] != w {
				out = append(out, Drift{View: view, Measure: m, Group: g, Want: w, Got: gv[g]})
			}
		}
		for g, x := range gv {
			if _, ok := wv[g]; !ok {
				out = append(out, Drift{View: view, Measure: m, Group: g, Got: x})
			}
		}
	}
	for m, gv := range got {
		if _, ok := want[m]; ok {
			continue
		}
		for g, x := range gv {
			out = append(out, Drift{View: view, Measure: m, Group: g, Got: x})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Measure != out[j].Measure {
			return out[i].Measure < out[j].Measure
		}
		return out[i].Group < out[j].Group
	})
	return out
}
