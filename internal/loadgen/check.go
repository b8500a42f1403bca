package loadgen

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/publish"
)

// Diff is one counter that differs from the full-scan recomputation.
type Diff struct {
	View, Measure, Group string
	Want, Got            string // "" when absent
}

func (d Diff) String() string {
	return fmt.Sprintf("%s.%s[%q]: redis %q, scan %q", d.View, d.Measure, d.Group, d.Got, d.Want)
}

// Expected computes what every measure of v should hold for items.
func Expected(v *aggregate.View, totals map[string]*aggregate.Counters) map[string]map[string]string {
	out := map[string]map[string]string{}
	for i, m := range v.Measures {
		vals := map[string]string{}
		si := v.SumIndex(i)
		for g, t := range totals {
			if t.Count == 0 {
				continue
			}
			if si < 0 {
				vals[g] = strconv.FormatInt(t.Count, 10)
			} else {
				vals[g] = t.Sums[si].String()
			}
		}
		out[m.Name] = vals
	}
	return out
}

// Check scans table, recomputes every view and compares it with the
// snapshot in Redis, exactly, as strings. A bucketed view is compared
// bucket by bucket (measures named "<bucket> <measure>" in a Diff), every
// bucket Redis holds against every bucket the scan gives; a view bucketed
// by stream time, which no scan can recompute per bucket, by its buckets
// summed, which equal the totals only while none of them has expired.
func Check(ctx context.Context, ddb *dynamodb.Client, table string, store *publish.Redis, views []*aggregate.View) ([]Diff, error) {
	items, err := Scan(ctx, ddb, table)
	if err != nil {
		return nil, err
	}
	var diffs []Diff
	for _, v := range views {
		if !v.Bucketed() {
			snap, err := store.Snapshot(ctx, v)
			if err != nil {
				return nil, err
			}
			diffs = append(diffs, Compare(v.Name, Expected(v, v.Totals(items)), snap.Measures)...)
			continue
		}
		s, err := store.Series(ctx, v, allTime[0], allTime[1])
		if err != nil {
			return nil, err
		}
		got := map[string]map[string]string{}
		want := map[string]map[string]string{}
		if v.Recomputable() {
			for b, ms := range s.Buckets {
				for m, groups := range ms {
					got[b+" "+m] = groups
				}
			}
			for b, groups := range v.BucketTotals(items) {
				for m, vals := range Expected(v, groups) {
					want[aggregate.BucketName(b)+" "+m] = vals
				}
			}
		} else {
			if got, err = sumBuckets(s); err != nil {
				return nil, fmt.Errorf("view %s: %w", v.Name, err)
			}
			want = Expected(v, v.Unbucketed().Totals(items))
		}
		for _, sides := range []map[string]map[string]string{got, want} {
			for m, groups := range sides {
				if len(groups) == 0 {
					delete(sides, m)
				}
			}
		}
		diffs = append(diffs, Compare(v.Name, want, got)...)
	}
	return diffs, nil
}

// allTime spans every bucket start a view can have: item times are read
// for years 0001 to 9999.
var allTime = [2]time.Time{time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}

// sumBuckets adds a series' buckets up per measure and group; groups that
// sum to 0 are left out, as a view without buckets leaves out a group
// without items.
func sumBuckets(s *publish.Series) (map[string]map[string]string, error) {
	sums := map[string]map[string]aggregate.Decimal{}
	for _, ms := range s.Buckets {
		for m, groups := range ms {
			if sums[m] == nil {
				sums[m] = map[string]aggregate.Decimal{}
			}
			for g, val := range groups {
				d, err := aggregate.ParseDecimal(val)
				if err != nil {
					return nil, fmt.Errorf("measure %s group %q: %w", m, g, err)
				}
				sums[m][g] = sums[m][g].Add(d)
			}
		}
	}
	out := map[string]map[string]string{}
	for m, groups := range sums {
		out[m] = map[string]string{}
		for g, d := range groups {
			if !d.IsZero() {
				out[m][g] = d.String()
			}
		}
	}
	return out, nil
}

// Compare lists the differences between two sets of measures.
func Compare(view string, want, got map[string]map[string]string) []Diff {
	var diffs []Diff
	for m, wv := range want {
		gv := got[m]
		for g, w := range wv {
			if gv[g] != w {
				diffs = append(diffs, Diff{view, m, g, w, gv[g]})
			}
		}
		for g, x := range gv {
			if _, ok := wv[g]; !ok {
				diffs = append(diffs, Diff{view, m, g, "", x})
			}
		}
	}
	// A measure only Redis has (a bucket the scan does not know) differs
	// in every group.
	for m, gv := range got {
		if _, ok := want[m]; ok {
			continue
		}
		for g, x := range gv {
			diffs = append(diffs, Diff{view, m, g, "", x})
		}
	}
	sort.Slice(diffs, func(i, j int) bool { return diffs[i].String() < diffs[j].String() })
	return diffs
}

func asErr[T error](err error, target *T) bool { return errors.As(err, target) }
