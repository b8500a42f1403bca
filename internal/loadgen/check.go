package loadgen

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/publish"
	"github.com/streamtally/streamtally/recount"
)

// Diff is one counter that differs from the full-scan recomputation.
type Diff = recount.Drift

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
			diffs = append(diffs, recount.Compare(v.Name, v.Values(v.Totals(items)), snap.Measures)...)
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
				for m, vals := range v.Values(groups) {
					want[aggregate.BucketName(b)+" "+m] = vals
				}
			}
		} else {
			if got, err = sumBuckets(s); err != nil {
				return nil, fmt.Errorf("view %s: %w", v.Name, err)
			}
			want = v.Values(v.Unbucketed().Totals(items))
		}
		for _, sides := range []map[string]map[string]string{got, want} {
			for m, groups := range sides {
				if len(groups) == 0 {
					delete(sides, m)
				}
			}
		}
		diffs = append(diffs, recount.Compare(v.Name, want, got)...)
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

func asErr[T error](err error, target *T) bool { return errors.As(err, target) }
